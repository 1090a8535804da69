/**
 * The claim loop (07_claim.sql): takes pending requests from the queue, as many as there are free slots,
 * one claim at a time. A NOTIFY on the service channel, a finished handler while a backlog remains, a
 * reconnect, or the slow poll triggers the next claim.
 */
import { claimStoppedAtByteCap } from '../wire.ts'
import type { ClaimedRow, Jobs } from './jobs.ts'
import type { Registration, ResponderContext } from './registration.ts'

export interface ClaimLoopOptions extends ResponderContext {
  readonly concurrency: number
  readonly jobs: Jobs
  /** The registration to claim for while the server runs; undefined otherwise (no claim then). */
  readonly claimingFor: () => Registration | undefined
  /** A claim of `session` returned: what waited for it (handed requests) may go on. */
  readonly settled: (session: Registration) => void
  /**
   * A claim failed with `error`, on the session of `session`: it is ended (see below), and what was handed to
   * it meanwhile goes with it.
   */
  readonly failed: (session: Registration, error: unknown) => void
}

/** The claims of one responder. */
export class ClaimLoop {
  readonly #options: ClaimLoopOptions
  #claiming = false
  /** Slots the running claim may fill. */
  #claimingLimit = 0
  #claimAgain = false
  #backlog = false

  constructor(options: ClaimLoopOptions) {
    this.#options = options
  }

  /**
   * Slots the running claim may fill, 0 when no claim runs: a request handed over meanwhile waits for it
   * when it may fill every free slot.
   */
  get reserved(): number {
    return this.#claiming ? this.#claimingLimit : 0
  }


  /** A handler finished: its slot is free for the backlog, if there is one. */
  jobFinished(): void {
    if (this.#backlog) this.wake()
  }

  /** Claims as many requests as there are free slots; at most one claim at a time. */
  wake(): void {
    const session = this.#options.claimingFor()
    if (session === undefined) return
    if (this.#claiming) {
      this.#claimAgain = true
      return
    }
    const free = this.#options.concurrency - this.#options.jobs.size
    if (free <= 0) {
      this.#backlog = true
      return
    }
    void this.#claim(session, free)
  }

  async #claim(session: Registration, limit: number): Promise<void> {
    const { channel, concurrency, statements, jobs, telemetry } = this.#options
    this.#claiming = true
    this.#claimingLimit = limit
    this.#claimAgain = false
    try {
      const rows = await this.#options.query<ClaimedRow>(statements.claim, [session.responderId, session.channelId, limit])
      // Rows claimed by a session that has since died were released with it.
      if (session.generation !== this.#options.generation()) rows.length = 0
      if (rows.length > 0) telemetry.claimed?.(channel, rows.length)
      // start() never throws: each request gets an outcome, and the others run.
      for (const row of rows) jobs.start(row, session.generation, false)
      // A full batch means more may be pending; a short one, that nothing visible is (anything later is
      // announced, or found by the slow poll).
      this.#backlog = rows.length === limit || claimStoppedAtByteCap(rows)
    } catch (error) {
      this.#options.logger.warn({ err: error }, 'claim failed')
      this.#claiming = false
      // Never claim again straight away: on a broken session the next statement fails without yielding to
      // the event loop. And a claim that failed part-way may hold request locks of rows it did not claim
      // (session locks survive a rollback): releasing the registration gives them back (pgrr_release), or
      // ending the session. So: a new registration, and claims resume from there.
      this.#backlog = false
      this.#options.failed(session, error)
      return
    }
    this.#claiming = false
    this.#options.settled(session)
    if (this.#claimAgain || (this.#backlog && jobs.size < concurrency)) this.wake()
  }
}
