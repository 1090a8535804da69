/**
 * The requests of a client, from the call to their outcome: admission under `maxInFlight` (waiting for a
 * slot, or `TooManyRequestsError` with overflow 'reject'), the one timeout and the abort signal of each,
 * settling each exactly once, and what settling frees (the slot, the id in the reply multiplexer, the
 * reply channel's LISTEN when nothing is left). Giving up (timeout, signal, close) settles at once and
 * cancels in the database once the id is known.
 */
import { ClosedError, TimeoutError, TooManyRequestsError, type PgrrError } from '../errors.ts'
import type { RequestOptions } from '../options.ts'
import type { PendingRequest, Settlement } from './pending-request.ts'
import { abortError, prepareRequest, type RequestDefaults } from './prepare.ts'

export interface AdmissionOptions extends RequestDefaults {
  readonly maxInFlight: number
  readonly overflow: 'wait' | 'reject'
  readonly closed: () => boolean
  /** An admitted request goes to be sent. */
  readonly send: (pending: PendingRequest) => void
  /** A request was given up after it got its id: cancel it in the database. */
  readonly cancel: (id: string) => void
  /** A request now waits for its outcome under this id (the reply multiplexer), or no longer. */
  readonly track: (id: string, pending: PendingRequest) => void
  readonly untrack: (id: string) => void
  /** Nothing is unsettled any more. */
  readonly quiet: () => void
}

export class Admission {
  readonly #options: AdmissionOptions
  #inFlight = 0
  /** Requests waiting for a slot (maxInFlight reached, overflow 'wait'), oldest first. */
  readonly #slotWaiters: PendingRequest[] = []
  /** Every request not yet settled: queued for a slot, being sent, or waiting for its outcome. */
  readonly #unsettled = new Set<PendingRequest>()

  constructor(options: AdmissionOptions) {
    this.#options = options
  }

  /** Requests admitted and not yet settled (counted against maxInFlight). */
  get inFlight(): number {
    return this.#inFlight
  }

  /** Requests not yet settled, of every kind. */
  get unsettled(): number {
    return this.#unsettled.size
  }

  /**
   * Starts a request: the request, or undefined when it ended at once (through `reject`). `setup` sees it
   * before anything else does.
   */
  begin(
    channel: string,
    payload: unknown,
    options: RequestOptions,
    resolve: (value: unknown) => void,
    reject: (error: Error) => void,
    setup: (pending: PendingRequest) => void,
  ): PendingRequest | undefined {
    if (this.#options.closed()) return void reject(new ClosedError('the client is closed'))
    let pending: PendingRequest
    try {
      pending = prepareRequest(this.#options, channel, payload, options, resolve, reject)
    } catch (error) {
      return void reject(error as Error)
    }
    setup(pending)
    // Refused before it started: through settle(), so that telemetry sees the end of what it saw begin.
    if (options.signal?.aborted) return void this.settle(pending, abortError(options.signal))
    const { maxInFlight, overflow } = this.#options
    if (this.#inFlight >= maxInFlight && overflow === 'reject') {
      return void this.settle(pending, new TooManyRequestsError(maxInFlight))
    }
    this.#arm(pending)
    this.#unsettled.add(pending)
    if (this.#inFlight < maxInFlight) this.#admit(pending)
    else this.#slotWaiters.push(pending)
    return pending
  }

  /** A request sent outside admission (scatter-gather), with its id: its outcome comes as any request's. */
  track(pending: PendingRequest): void {
    this.#unsettled.add(pending)
    this.#options.track(pending.id!, pending)
  }

  /** The caller stops waiting: settle now, cancel in the database once the id is known. */
  giveUp(pending: PendingRequest, error: PgrrError): void {
    if (pending.settled) return
    this.settle(pending, error)
    if (pending.id !== undefined) this.#options.cancel(pending.id)
  }

  /** Restarts a request's timeout (a stream's idle timeout, extended by each part). */
  rearm(pending: PendingRequest, timeoutMs: number, message: string): void {
    if (pending.settled) return
    clearTimeout(pending.timer)
    pending.timer = setTimeout(() => this.giveUp(pending, new TimeoutError(timeoutMs, message)), timeoutMs)
  }

  settle(pending: PendingRequest, outcome: Settlement): void {
    if (pending.settled) return
    pending.settled = true
    clearTimeout(pending.timer)
    if (pending.onAbort !== undefined) pending.signal?.removeEventListener('abort', pending.onAbort)
    this.#unsettled.delete(pending)
    if (this.#unsettled.size === 0) this.#options.quiet()
    if (pending.id !== undefined) this.#options.untrack(pending.id)
    if (pending.admitted) {
      this.#inFlight--
      // Hand the slot to the oldest waiter that is still waiting.
      let next: PendingRequest | undefined
      while ((next = this.#slotWaiters.shift()) !== undefined && next.settled);
      if (next !== undefined) this.#admit(next)
    }
    if (outcome instanceof Error) {
      pending.observation?.end((outcome as { code?: string }).code ?? 'ERROR', outcome)
      pending.reject(outcome)
    } else {
      pending.observation?.end('ok')
      pending.resolve(outcome.value)
    }
  }

  /** The client closes: every request not yet settled ends with `error` (and is cancelled). */
  giveUpAll(error: PgrrError): void {
    this.#slotWaiters.length = 0
    for (const pending of [...this.#unsettled]) this.giveUp(pending, error)
  }

  /** Starts the timeout and listens to the signal; both run from the call on, queueing included. */
  #arm(pending: PendingRequest): void {
    pending.timer = setTimeout(() => this.giveUp(pending, new TimeoutError(pending.timeoutMs)), pending.timeoutMs)
    if (pending.signal !== undefined) {
      const signal = pending.signal
      pending.onAbort = () => this.giveUp(pending, abortError(signal))
      signal.addEventListener('abort', pending.onAbort, { once: true })
    }
  }

  #admit(pending: PendingRequest): void {
    pending.admitted = true
    this.#inFlight++
    this.#options.send(pending)
  }
}
