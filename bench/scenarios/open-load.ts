// An open-loop load: requests sent at a fixed rate whatever the replies do (as independent users would send
// them), at most `maxInFlight` outstanding; what it reached is measured between mark() and stop().
import { makePayload, transform } from '../payload.ts'
import { percentile, sortLatencies } from '../percentile.ts'

export interface OpenLoadStats {
  /** Successful replies per second between mark() and stop(). */
  requestsPerSec: number
  errors: number
  p50Us: number | null
  p99Us: number | null
}

const TICK_MS = 5

export class OpenLoad {
  readonly #call: (payload: string) => Promise<string>
  readonly #rate: number
  readonly #maxInFlight: number
  readonly #startedAt = performance.now()
  readonly #timer: NodeJS.Timeout
  #sent = 0
  #inFlight = 0
  #okSinceMark = 0
  #errorsSinceMark = 0
  #latenciesUs: number[] = []
  #markedAt = performance.now()
  readonly #settled = new Set<Promise<unknown>>()

  constructor(call: (payload: string) => Promise<string>, rate: number, maxInFlight = 512) {
    this.#call = call
    this.#rate = rate
    this.#maxInFlight = maxInFlight
    this.#timer = setInterval(() => this.#tick(), TICK_MS)
  }

  /** Starts the measured window (after a warm-up). */
  mark(): void {
    this.#markedAt = performance.now()
    this.#okSinceMark = 0
    this.#errorsSinceMark = 0
    this.#latenciesUs = []
  }

  /** Stops sending, waits for what is in flight, and reports the window since mark(). */
  async stop(): Promise<OpenLoadStats> {
    clearInterval(this.#timer)
    const seconds = (performance.now() - this.#markedAt) / 1000
    const ok = this.#okSinceMark
    const errors = this.#errorsSinceMark
    const sorted = sortLatencies(this.#latenciesUs)
    await Promise.allSettled([...this.#settled])
    return {
      requestsPerSec: Math.round(ok / seconds),
      errors,
      p50Us: sorted.length > 0 ? percentile(sorted, 50) : null,
      p99Us: sorted.length > 0 ? percentile(sorted, 99) : null,
    }
  }

  #tick(): void {
    const due = Math.floor(((performance.now() - this.#startedAt) / 1000) * this.#rate)
    // Behind and at the cap: the requests not sent are not sent later (the rate reached says so).
    while (this.#sent < due && this.#inFlight < this.#maxInFlight) this.#send()
    if (this.#sent < due) this.#sent = due
  }

  #send(): void {
    const payload = makePayload(this.#sent++)
    const startedAt = performance.now()
    this.#inFlight++
    const call = this.#call(payload).then(
      (reply) => {
        if (reply === transform(payload)) {
          this.#okSinceMark++
          this.#latenciesUs.push((performance.now() - startedAt) * 1000)
        } else this.#errorsSinceMark++
      },
      () => {
        this.#errorsSinceMark++
      },
    )
    this.#settled.add(call)
    void call.finally(() => {
      this.#inFlight--
      this.#settled.delete(call)
    })
  }
}
