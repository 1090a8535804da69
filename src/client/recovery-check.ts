/**
 * The periodic check of a client's requests in flight: it re-reads requests that have waited long, which
 * catches lost notifications, and reaps those whose responder died holding them (lost, or back to pending
 * when retryable; see pgrr_reap). In polling mode (LISTEN does not deliver: a transaction pooler) it is how
 * every reply arrives. The timer runs only while requests are in flight.
 */
import type { PoolQuery } from '../database.ts'
import type { Logger } from '../logger.ts'
import type { Statements } from '../statements.ts'
import type { ReplyMux } from './reply-mux.ts'

export interface RecoveryCheckOptions {
  readonly statements: Statements
  readonly logger: Logger
  readonly query: PoolQuery
  readonly mux: ReplyMux
  readonly checkIntervalMs: number
  /** How often every request in flight is read in polling mode. */
  readonly pollIntervalMs: number
  /** Whether replies are polled for (LISTEN does not deliver). */
  readonly polling: () => boolean
  readonly closed: () => boolean
  /** Nothing in flight, nothing waiting to be sent: the timer may stop. */
  readonly idle: () => boolean
}

/** Requests younger than this are left to their NOTIFY by a check (see ensure()). */
const checkedAfterMs = 100

/** The recovery check of one client. */
export class RecoveryCheck {
  readonly #options: RecoveryCheckOptions
  #timer: NodeJS.Timeout | undefined
  #checking = false
  #reapedAt = 0

  constructor(options: RecoveryCheckOptions) {
    this.#options = options
  }

  /** How often every request in flight is read in polling mode. */
  get pollIntervalMs(): number {
    return this.#options.pollIntervalMs
  }

  /** A request is in flight: the check runs, if it does not already. */
  ensure(): void {
    if (this.#timer !== undefined) return
    const { polling } = this.#options
    // Polling mode reads every request in flight, often; otherwise, every interval, those that have waited
    // longer than a tenth of a second (or the interval, when shorter): a reply on its way is not read for
    // nothing, and a responder that died is found out at most an interval and a tenth of a second after it
    // died, whenever its requests were sent.
    const intervalMs = polling() ? this.#options.pollIntervalMs : this.#options.checkIntervalMs
    const minAgeMs = polling() ? 0 : Math.min(checkedAfterMs, intervalMs)
    this.#timer = setInterval(() => void this.run(minAgeMs), intervalMs)
    this.#timer.unref()
  }

  /** The client closed: no check runs any more. */
  stop(): void {
    clearInterval(this.#timer)
  }

  /**
   * Re-reads requests waiting longer than `minAgeMs`: replies whose NOTIFY was missed are taken, and
   * claims whose responder session is gone are reaped (lost, or back to pending when retryable).
   */
  async run(minAgeMs: number): Promise<void> {
    const { mux, statements, logger, query } = this.#options
    mux.purgeEarly()
    if (this.#checking || this.#options.closed()) return
    if (mux.size === 0) {
      if (this.#options.idle() && this.#timer !== undefined) {
        clearInterval(this.#timer)
        this.#timer = undefined
      }
      return
    }
    const now = performance.now()
    const ids = mux.waitingFor(minAgeMs, now)
    if (ids.length === 0) return
    this.#checking = true
    try {
      // Reaping tests a lock per claimed request: at most once per checkIntervalMs, even when polling.
      // Half the interval: a timer tick that lands a little early must not push detection a whole interval.
      if (now - this.#reapedAt >= this.#options.checkIntervalMs / 2) {
        this.#reapedAt = now
        await query(statements.reap, [ids])
      }
      await mux.fetch(ids, true)
    } catch (error) {
      logger.warn({ err: error }, 'checking requests in flight failed')
    } finally {
      this.#checking = false
    }
  }
}
