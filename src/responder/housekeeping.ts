/**
 * What a responder does besides handling requests, every sweep interval: reap and sweep the request table
 * (04_liveness.sql), vacuum it, and write its counters for `pgrr status` (pgrr_report, 05_registration.sql).
 */
import type { ClientContext } from '../client/context.ts'
import type { JobCounters } from './jobs.ts'
import type { ResponderContext } from './registration.ts'

const vacuumEveryRequests = 20_000

export interface HousekeepingOptions extends ResponderContext {
  /** The client's pool, and a statement on it: never the work session for these (see below). */
  readonly pool: ClientContext['pool']
  readonly poolQuery: ClientContext['poolQuery']
  /** Whether the server runs (none of this happens otherwise). */
  readonly running: () => boolean
  readonly counters: () => JobCounters
}

/** One responder's sweeps, vacuums and reports. */
export class Housekeeping {
  readonly #options: HousekeepingOptions
  #sweeping = false
  #handledSinceVacuum = 0
  #vacuuming = false

  constructor(options: HousekeepingOptions) {
    this.#options = options
  }

  /** Every sweep interval: the sweep (and a vacuum when requests were handled since the last), the report. */
  tick(): void {
    void this.#sweep()
    void this.#report()
  }

  /** A request was handled: every `vacuumEveryRequests` of them, a vacuum. */
  handled(): void {
    if (++this.#handledSinceVacuum >= vacuumEveryRequests) void this.#vacuum()
  }

  async #sweep(): Promise<void> {
    // One at a time: a sweep that waits (on a row lock, a slow server) must not be joined by the next one
    // every interval, each holding a connection of the pool.
    if (!this.#options.running() || this.#sweeping) return
    this.#sweeping = true
    const { poolQuery, statements, logger } = this.#options
    try {
      // On the pool, never on the work session: that session holds locks, and a session always gets its
      // own locks, so from there every request it holds would look abandoned.
      await poolQuery(statements.reap, [null])
      await poolQuery(statements.sweep)
    } catch (error) {
      logger.debug({ err: error }, 'sweep failed')
    } finally {
      this.#sweeping = false
    }
    if (this.#handledSinceVacuum > 0) await this.#vacuum()
  }

  /**
   * Every request leaves a few dead row versions behind. Autovacuum may be slow or off, and until a VACUUM
   * the claim walks over their index entries, so responders vacuum the table themselves after every
   * `vacuumEveryRequests` requests and at each sweep. It needs ownership of the table: without it PostgreSQL
   * only warns and skips, and autovacuum must keep up alone.
   */
  async #vacuum(): Promise<void> {
    if (this.#vacuuming || !this.#options.running()) return
    this.#vacuuming = true
    this.#handledSinceVacuum = 0
    const { pool, statements, logger } = this.#options
    try {
      await pool.query(statements.vacuum)
    } catch (error) {
      logger.debug({ err: error }, 'vacuum failed')
    } finally {
      this.#vacuuming = false
    }
  }

  /** Writes this responder's counters to its row, for `pgrr status`. */
  async #report(): Promise<void> {
    const session = this.#options.registration()
    if (!this.#options.running() || session === undefined) return
    const counters = this.#options.counters()
    try {
      await this.#options.query(this.#options.statements.report, [
        session.responderId,
        counters.handledTotal,
        counters.failedTotal,
        counters.handledLastMinute,
        counters.failedLastMinute,
        counters.running,
      ])
    } catch (error) {
      this.#options.logger.debug({ err: error }, 'report failed')
    }
  }
}
