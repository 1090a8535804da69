/**
 * When a server whose registration ended registers again (server.ts): after a jittered wait (backoff.ts)
 * whose ceiling doubles with each failed attempt in a row and with each registration in a row released
 * because the database refused one of its statements, no claim having gone through since. A refusal that
 * comes back with every registration (a claim that always fails on one request, say) so waits longer each
 * time instead of registering again and again at once; a loss without refusals starts again within 50 ms.
 */
import { backoffCeilingMs } from '../backoff.ts'
import type { Logger } from '../logger.ts'

export interface RegisterAgainOptions {
  /** Registers; rejects when it failed. */
  attempt: () => Promise<void>
  /** Whether a registration is still wanted (the server has not closed or started to drain meanwhile). */
  wanted: () => boolean
  /** The server registered again. */
  registered: () => void
  logger: Logger
}

export class RegisterAgain {
  readonly #options: RegisterAgainOptions
  /** Attempts that failed in a row. */
  #failures = 0
  /** Registrations in a row released after a refusal, with no claim gone through since. */
  #refusals = 0
  #timer: NodeJS.Timeout | undefined

  constructor(options: RegisterAgainOptions) {
    this.#options = options
  }

  get refusals(): number {
    return this.#refusals
  }

  /** The longest wait before the next attempt: doubled by each failure and each refusal in a row. */
  get waitUpToMs(): number {
    return backoffCeilingMs(this.#failures + this.#refusals)
  }

  /** The registration is released because the database refused one of its statements. */
  refused(): void {
    this.#refusals++
  }

  /** A claim went through: the registration works. */
  claimed(): void {
    this.#refusals = 0
  }

  /** Registers again after the wait, and again after each failed attempt while one is wanted. */
  schedule(): void {
    this.#timer = setTimeout(async () => {
      if (!this.#options.wanted()) return
      try {
        await this.#options.attempt()
      } catch (error) {
        this.#failures++
        this.#options.logger.warn({ err: error, attempt: this.#failures }, 'responder registration failed')
        if (this.#options.wanted()) this.schedule()
        return
      }
      if (!this.#options.wanted()) return
      this.#failures = 0
      this.#options.registered()
    }, Math.random() * this.waitUpToMs)
  }

  /** No attempt after this (the server closed). */
  cancel(): void {
    clearTimeout(this.#timer)
  }
}
