/**
 * Requests handed to this responder by the send (06_send.sql, 08_handoff.sql): they arrive in a NOTIFY on
 * its inbox, already claimed for it, and run at once when a slot is free. Otherwise they are given back to
 * the queue (pgrr_decline), or wait for a running claim to return. Those handed while the LISTEN session was
 * away are found by pgrr_handed. A handed request must run once: the sets below say which ids have run or
 * are on their way back, against a NOTIFY and a recovery that both bring the same request.
 */
import { BatchQueue } from '../batch-queue.ts'
import { isConnectionLoss } from '../database-error.ts'
import { decodeHandoffs } from '../wire.ts'
import type { AddressedRequests } from './addressed.ts'
import type { ClaimedRow, Jobs } from './jobs.ts'
import type { Registration, ResponderContext, ServerState } from './registration.ts'

/** How long the id of a request found by pgrr_handed is remembered, against its NOTIFY arriving late. */
const recoveredMemoryMs = 60_000

export interface HandoffsOptions extends ResponderContext {
  readonly concurrency: number
  readonly jobs: Jobs
  /** Where requests addressed to this responder go (15_scatter.sql): never given back. */
  readonly addressed: AddressedRequests
  readonly state: () => ServerState
  /** Slots the running claim may fill, 0 when none runs. */
  readonly claimReserved: () => number
  /** Releases the registration on purpose, which gives back what was handed to it, and registers anew. */
  readonly recycle: () => void
}

/** The requests handed to one responder. */
export class Handoffs {
  readonly #options: HandoffsOptions
  /** Handed requests to give back (pgrr_decline). */
  readonly #declines: BatchQueue<string>
  /** Handed requests whose handler finished and whose reply is not yet written. */
  readonly #handedDone = new Set<string>()
  /**
   * Handed requests given back and not yet pending again (pgrr_decline not yet done): a recovery that reads
   * them meanwhile (pgrr_handed) must not run them, or they would run here and at their next claim too.
   */
  readonly #declining = new Set<string>()
  /** Handed requests started from pgrr_handed, with when to forget them (their NOTIFY may still come). */
  readonly #recovered = new Map<string, number>()
  /** Handed requests that arrived while a claim that may fill every free slot was running. */
  #deferred: { row: ClaimedRow; session: Registration; recovered: boolean }[] = []

  constructor(options: HandoffsOptions) {
    this.#options = options
    this.#declines = new BatchQueue((ids) => this.#flushDeclines(ids), { maxBatch: 1000 })
  }

  /**
   * A NOTIFY on the inbox of registration `generation` (a JSON array of pgrr_handoff_entry): runs each
   * request when a slot is free, else gives it back to the queue.
   */
  handedOff(message: string, generation: number): void {
    const entries = decodeHandoffs(message)
    if (entries === undefined) {
      this.#options.logger.warn({ message: message.slice(0, 200) }, 'ignored a malformed handoff')
      return
    }
    const session = this.#options.registration()
    // Handed to a registration that is gone: its requests went with its session (they are reaped).
    if (session === undefined || generation !== session.generation) return
    for (const [id, json, payload, headers, timeoutMs, kind] of entries) {
      this.#take({ id, payload, payload_json: json, headers, attempt: 1, remaining_ms: timeoutMs, queued_ms: 0, kind }, session)
    }
  }

  /** Runs the handed requests whose NOTIFY this responder missed (see pgrr_handed). */
  async recover(): Promise<void> {
    const session = this.#options.registration()
    const state = this.#options.state()
    if (session === undefined || (state !== 'running' && state !== 'draining')) return
    let rows: ClaimedRow[]
    try {
      rows = await this.#options.query<ClaimedRow>(this.#options.statements.handed, [session.responderId])
    } catch (error) {
      this.#options.logger.debug({ err: error }, 'looking for handed requests failed')
      return
    }
    if (session.generation !== this.#options.generation()) return
    const now = Date.now()
    for (const [id, until] of this.#recovered) if (until < now) this.#recovered.delete(id)
    for (const row of rows) this.#take(row, session, true)
  }

  /** The running claim returned: takes the handed requests that waited for it. */
  claimSettled(): void {
    const deferred = this.#deferred
    this.#deferred = []
    for (const handoff of deferred) {
      if (handoff.session.generation === this.#options.generation()) this.#take(handoff.row, handoff.session, handoff.recovered)
    }
  }

  /** The running claim failed: its registration is about to end, and what was handed to it with it (reaped: lost, or retried). */
  claimFailed(): void {
    this.#deferred = []
  }

  /** The handler of handed request `id` finished: it must not run again until its reply is written. */
  replying(id: string): void {
    this.#handedDone.add(id)
  }

  /** These outcomes were written (or lost with the session): pgrr_handed no longer returns them. */
  written(outcomes: readonly { readonly id: string }[]): void {
    for (const outcome of outcomes) this.#handedDone.delete(outcome.id)
  }

  /** Resolves once nothing is being given back. */
  idle(): Promise<void> {
    return this.#declines.idle()
  }

  /**
   * Runs a handed request unless it already runs or ran; gives it back without a free slot. `recovered`:
   * found by pgrr_handed rather than announced by its NOTIFY (which may still arrive: it is then ignored).
   */
  #take(row: ClaimedRow, session: Registration, recovered = false): void {
    const { jobs, concurrency } = this.#options
    if (jobs.has(row.id) || this.#handedDone.has(row.id) || this.#recovered.has(row.id) || this.#declining.has(row.id)) return
    if (row.kind === 'all' || row.kind === 'ping') {
      if (this.#options.addressed.has(row.id)) return
      if (recovered) this.#recovered.set(row.id, Date.now() + recoveredMemoryMs)
      this.#options.addressed.take(row, row.kind, session)
      return
    }
    const state = this.#options.state()
    const reserved = this.#options.claimReserved()
    if (state === 'running' && reserved > 0 && jobs.size + reserved >= concurrency) {
      // The running claim may fill every free slot: decide once it has returned (concurrency stays a bound).
      if (!this.#deferred.some((handoff) => handoff.row.id === row.id)) this.#deferred.push({ row, session, recovered })
      return
    }
    if (state !== 'running' || jobs.size >= concurrency) {
      this.#declining.add(row.id)
      this.#declines.push(row.id)
      return
    }
    if (recovered) this.#recovered.set(row.id, Date.now() + recoveredMemoryMs)
    this.#options.telemetry.claimed?.(this.#options.channel, 1)
    jobs.start(row, session.generation, true)
  }

  async #flushDeclines(ids: string[]): Promise<void> {
    const session = this.#options.registration()
    try {
      if (session === undefined) return
      await this.#options.query(this.#options.statements.decline, [session.responderId, ids])
    } catch (error) {
      if (session === undefined || session.generation !== this.#options.generation() || isConnectionLoss(error)) return
      // The requests stay handed to this responder: only ending the registration gives them back (reaped).
      this.#options.logger.error({ err: error }, 'declining handed requests failed; registering the responder again')
      this.#options.recycle()
    } finally {
      // Pending again, or gone with the session (a new registration's pgrr_handed does not return them).
      for (const id of ids) this.#declining.delete(id)
    }
  }
}
