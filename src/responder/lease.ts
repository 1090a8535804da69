/**
 * A responder's lease (04_liveness.sql, pgrr_renew in 05_registration.sql): renewed every half second while
 * the event loop turns. A loop blocked by a CPU-bound handler, or a process stopped, lets it run out
 * (pgrr_lease(), 1.5 s), and sends then prefer the responders that still turn; the session, which still
 * holds the responder lock, says it is not dead.
 */
import type { ResponderContext } from './registration.ts'
import type { ServiceStats } from './service-stats.ts'

/** How often the lease is renewed: a third of its length, so that a late timer or two never lets it lapse. */
const renewEveryMs = 500

export interface LeaseOptions extends ResponderContext {
  /** Whether there is work to keep the lease for (running or draining: retryable requests it holds are
   * taken back when its lease runs out). */
  readonly active: () => boolean
  /** Handler statistics to write with the renewal when they changed (16_services.sql). */
  readonly stats?: ServiceStats
}

export class Lease {
  readonly #options: LeaseOptions
  #timer: NodeJS.Timeout | undefined
  #renewing = false

  constructor(options: LeaseOptions) {
    this.#options = options
  }

  /** Renews the lease from now on; unreferenced: the sessions keep the process alive. */
  start(): void {
    this.#timer ??= setInterval(() => void this.#renew(), renewEveryMs)
    this.#timer.unref()
  }

  stop(): void {
    clearInterval(this.#timer)
    this.#timer = undefined
  }

  /** One renewal, unless the last one is still on its way (a slow work session must not pile them up). */
  async #renew(): Promise<void> {
    const registration = this.#options.registration()
    if (this.#renewing || registration === undefined || !this.#options.active()) return
    this.#renewing = true
    try {
      // Statistics ride on the renewal, in the same statement, when they changed since the last one.
      const stats = this.#options.stats?.unwritten()
      if (stats === undefined) {
        await this.#options.query(this.#options.statements.renew, [registration.responderId])
      } else {
        await this.#options.query(this.#options.statements.renewWithStats, [registration.responderId, stats.json])
        this.#options.stats?.written(stats.version)
      }
    } catch (error) {
      this.#options.logger.debug({ err: error }, 'lease renewal failed')
    } finally {
      this.#renewing = false
    }
  }
}
