/**
 * Counts events over the last minute in one-second buckets: cheap to add to on every request, exact to
 * within a second when read.
 */
export class RateWindow {
  readonly #buckets = new Uint32Array(60)
  #second = Math.floor(Date.now() / 1000)

  add(count = 1): void {
    this.#advance()
    this.#buckets[this.#second % 60]! += count
  }

  /** Events in the last 60 seconds. */
  total(): number {
    this.#advance()
    let sum = 0
    for (const count of this.#buckets) sum += count
    return sum
  }

  #advance(): void {
    const now = Math.floor(Date.now() / 1000)
    if (now === this.#second) return
    // Clear the buckets of the seconds that passed without events (at most all of them).
    for (let second = this.#second + 1; second <= Math.min(now, this.#second + 60); second++) this.#buckets[second % 60] = 0
    this.#second = now
  }
}
