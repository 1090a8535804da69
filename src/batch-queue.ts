/**
 * Group commit: items pushed while a flush is running are flushed together by the next one, so under load
 * one statement carries many requests (or replies, or acknowledgements), and at low load an item waits for
 * no timer: the flush starts as soon as the current task and its microtasks are done (everything pushed
 * synchronously, or in the same burst of promise reactions, goes in one batch). Work that is not urgent
 * (acknowledgements) can ask for a delay instead, so that more of it goes in one statement.
 */
export class BatchQueue<T> {
  readonly #flush: (items: T[]) => Promise<void>
  readonly #maxBatch: number
  readonly #maxConcurrent: number
  readonly #delayMs: number
  #items: T[] = []
  /** When the oldest waiting item was pushed (performance.now()). */
  #oldestAt = 0
  #running = 0
  #scheduled = false
  #idleWaiters: (() => void)[] = []

  /**
   * @param flush writes one batch; it must not throw (it settles its items itself)
   * @param maxBatch most items in one flush
   * @param maxConcurrent most flushes running at once
   * @param delayMs wait this long before a flush (0: right after the current microtasks)
   */
  constructor(flush: (items: T[]) => Promise<void>, { maxBatch = 1000, maxConcurrent = 1, delayMs = 0 } = {}) {
    this.#flush = flush
    this.#maxBatch = maxBatch
    this.#maxConcurrent = maxConcurrent
    this.#delayMs = delayMs
  }

  /** Items waiting for a flush. */
  get size(): number {
    return this.#items.length
  }

  push(item: T): void {
    if (this.#items.length === 0) this.#oldestAt = performance.now()
    this.#items.push(item)
    this.#schedule()
  }

  /** Resolves once nothing is queued or being flushed. */
  idle(): Promise<void> {
    if (this.#items.length === 0 && this.#running === 0) return Promise.resolve()
    return new Promise((resolve) => this.#idleWaiters.push(resolve))
  }

  #schedule(): void {
    if (this.#scheduled || this.#running >= this.#maxConcurrent) return
    this.#scheduled = true
    if (this.#delayMs > 0) this.#arm(this.#delayMs)
    else {
      queueMicrotask(() => {
        this.#scheduled = false
        this.#run()
      })
    }
  }

  /** A delayed flush, once the oldest item has waited the delay. */
  #arm(ms: number): void {
    setTimeout(() => {
      const wait = this.#delayMs - (performance.now() - this.#oldestAt)
      if (this.#items.length > 0 && wait > 1) return this.#arm(wait)
      this.#scheduled = false
      this.#run()
    }, ms).unref()
  }

  #run(): void {
    while (this.#items.length > 0 && this.#running < this.#maxConcurrent) {
      const batch = this.#items.splice(0, this.#maxBatch)
      if (this.#items.length > 0) this.#oldestAt = performance.now()
      this.#running++
      void this.#flush(batch).finally(() => {
        this.#running--
        if (this.#items.length > 0) this.#schedule()
        else if (this.#running === 0) this.#notifyIdle()
      })
    }
    if (this.#items.length === 0 && this.#running === 0) this.#notifyIdle()
  }

  #notifyIdle(): void {
    const waiters = this.#idleWaiters
    this.#idleWaiters = []
    for (const resolve of waiters) resolve()
  }
}

/**
 * A request or reply body longer than this (in UTF-16 units) goes in a statement of its own rather than in
 * a batch's arrays, where every byte is escaped by the driver, parsed by array_in and copied through the
 * statement's steps (to temporary files once a batch passes work_mem). Measured with 64 in flight: at 64 KiB
 * alone 1.8-2.4x the requests/s of batched (server CPU per request 3.4-5.7 ms -> 2.2-2.7 ms), at 1 MiB 1.9x;
 * at 16 and 32 KiB the same requests/s either way, with a third more CPU alone (docs/benchmarks.md, "Payload
 * size").
 */
export const aloneOverChars = 32 * 1024

/** Splits a batch into the items that go together and those that go alone, each in its batch's order. */
export function splitAlone<T>(items: readonly T[], alone: (item: T) => boolean): { together: T[]; alone: T[] } {
  const split: { together: T[]; alone: T[] } = { together: [], alone: [] }
  for (const item of items) (alone(item) ? split.alone : split.together).push(item)
  return split
}
