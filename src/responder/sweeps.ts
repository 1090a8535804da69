/**
 * The sweeps of one client's responders (04_liveness.sql): reap what gone responders held, delete what
 * nobody waits for, and vacuum the request table. Each of these covers the whole table, whatever the
 * channel, so a client runs them once per interval for all its responders, not once per channel: a process
 * serving 100 channels ran 20 sweeps and vacuums a second, which took more server CPU than the requests
 * themselves (docs/benchmarks.md, "One channel or a hundred").
 */
import type { Pool, PoolQuery } from '../database.ts'
import type { Logger } from '../logger.ts'
import type { Statements } from '../statements.ts'

const vacuumEveryRequests = 20_000

export interface SweepsOptions {
  /** The client's pool, and a statement on it: never a work session for these (see #sweep). */
  readonly pool: Pool
  readonly poolQuery: PoolQuery
  readonly statements: Statements
  readonly logger: Logger
}

/** The sweeps of the responders of one client. */
export class Sweeps {
  readonly #options: SweepsOptions
  /** The sweep interval of each running responder. */
  readonly #members = new Map<symbol, number>()
  #timer: NodeJS.Timeout | undefined
  #intervalMs: number | undefined
  /** When the last sweep started (or, before the first, when the first responder joined). */
  #lastSweepAt: number | undefined
  #sweeping = false
  #handledSinceVacuum = 0
  #vacuuming = false

  constructor(options: SweepsOptions) {
    this.#options = options
  }

  /**
   * A responder starts: sweeps run every `intervalMs` (the shortest of the running responders') until
   * every responder that joined has left. Returns its leave().
   */
  join(intervalMs: number): () => void {
    this.#lastSweepAt ??= Date.now()
    const member = Symbol('responder')
    this.#members.set(member, intervalMs)
    this.#arm()
    return () => {
      if (this.#members.delete(member)) this.#arm()
    }
  }

  /** A request was handled: every `vacuumEveryRequests` of them, a vacuum. */
  handled(): void {
    if (++this.#handledSinceVacuum >= vacuumEveryRequests) void this.#vacuum()
  }

  /**
   * The interval changed (a responder joined or left): the next sweep comes one new interval after the last
   * one, so that responders coming and going never keep pushing it away.
   */
  #arm(): void {
    const intervalMs = this.#members.size === 0 ? undefined : Math.min(...this.#members.values())
    if (intervalMs === this.#intervalMs) return
    clearTimeout(this.#timer)
    this.#timer = undefined
    this.#intervalMs = intervalMs
    if (intervalMs !== undefined) this.#next(Math.max(0, (this.#lastSweepAt ?? Date.now()) + intervalMs - Date.now()))
  }

  #next(ms: number): void {
    this.#timer = setTimeout(() => {
      this.#lastSweepAt = Date.now()
      if (this.#intervalMs !== undefined) this.#next(this.#intervalMs)
      void this.#sweep()
    }, ms)
    this.#timer.unref()
  }

  async #sweep(): Promise<void> {
    // One at a time: a sweep that waits (on a row lock, a slow server) must not be joined by the next one
    // every interval, each holding a connection of the pool.
    if (this.#members.size === 0 || this.#sweeping) return
    this.#sweeping = true
    const { poolQuery, statements, logger } = this.#options
    try {
      // On the pool, never on a work session: that session holds locks, and a session always gets its own
      // locks, so from there every request it holds would look abandoned.
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
    if (this.#vacuuming || this.#members.size === 0) return
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
}
