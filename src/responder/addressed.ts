/**
 * Requests addressed to this responder (sql/protocol/15_scatter.sql): one of a scatter-gather ('all') runs
 * with the handler when a slot is free, and waits here for one otherwise: it is never given back, since no
 * other responder may run it. A ping ('ping') is answered at once, without the handler and without a
 * slot, so that it measures the responder's own latency even when every handler slot is busy.
 */
import { CancelledError } from '../errors.ts'
import type { AddressedKind } from '../wire.ts'
import { failure, success, type Result } from './handler.ts'
import type { ClaimedRow, Job, Jobs } from './jobs.ts'
import type { Registration, ResponderContext, ServerState } from './registration.ts'

/** What a ping replies: how busy the responder is as it answers. */
export interface PingReply {
  /** Handlers running. */
  running: number
  /** Most handlers it runs at once. */
  concurrency: number
}

export interface AddressedOptions extends ResponderContext {
  readonly concurrency: number
  readonly jobs: Jobs
  readonly state: () => ServerState
  /** Slots the running claim may fill, 0 when none runs. */
  readonly claimReserved: () => number
  /** Queues an outcome for writing (Replies.push). */
  readonly reply: (job: Pick<Job, 'id' | 'generation' | 'handed'>, result: Result) => void
}

interface Waiting {
  readonly row: ClaimedRow
  readonly generation: number
  /** When it arrived (performance.now()): the wait counts against its deadline. */
  readonly arrivedAt: number
}

/** The requests addressed to one responder that wait for a slot. */
export class AddressedRequests {
  readonly #options: AddressedOptions
  #waiting: Waiting[] = []

  constructor(options: AddressedOptions) {
    this.#options = options
  }

  /** Whether request `id` waits here for a slot. */
  has(id: string): boolean {
    return this.#waiting.some((waiting) => waiting.row.id === id)
  }

  /** A request addressed to this responder arrived (by its NOTIFY, or found by pgrr_handed). */
  take(row: ClaimedRow, kind: AddressedKind, session: Registration): void {
    if (kind === 'ping') {
      const { jobs, concurrency } = this.#options
      const reply: PingReply = { running: jobs.size, concurrency }
      this.#options.reply({ id: row.id, generation: session.generation, handed: true }, success(reply))
      return
    }
    this.#waiting.push({ row, generation: session.generation, arrivedAt: performance.now() })
    this.startNext()
  }

  /** Starts what waits, while slots are free (after a handler finished, or a claim returned). */
  startNext(): void {
    const { jobs, concurrency } = this.#options
    const state = this.#options.state()
    if (state !== 'running' && state !== 'draining') return
    const generation = this.#options.generation()
    while (this.#waiting.length > 0 && jobs.size + this.#options.claimReserved() < concurrency) {
      const waiting = this.#waiting.shift()!
      // Addressed to a registration that is gone: its request went with its session (reaped, lost).
      if (waiting.generation !== generation) continue
      const waitedMs = Math.floor(performance.now() - waiting.arrivedAt)
      jobs.start({ ...waiting.row, remaining_ms: waiting.row.remaining_ms - waitedMs, queued_ms: waitedMs }, waiting.generation, true)
    }
  }

  /** The callers of `ids` cancelled them: those waiting here get their outcome now (which deletes them). */
  cancel(ids: readonly string[]): void {
    const cancelled = new Set(ids)
    const kept: Waiting[] = []
    for (const waiting of this.#waiting) {
      if (!cancelled.has(waiting.row.id)) kept.push(waiting)
      else this.#options.reply({ id: waiting.row.id, generation: waiting.generation, handed: true }, failure(new CancelledError()))
    }
    this.#waiting = kept
  }

  /** The session ended: what waited went with it. */
  clear(): void {
    this.#waiting = []
  }
}
