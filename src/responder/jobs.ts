/**
 * Running handlers: one job per request being handled, from its start (claimed or handed) to its outcome.
 * Handlers run outside any transaction; every job ends exactly once, with an outcome (handed to `finished`,
 * which writes it) or abandoned (its request is released with the session). Also the responder's counters.
 */
import { CancelledError, responderDeadlineCode, StreamClosedError, TimeoutError } from '../errors.ts'
import { decodePayload } from '../payload.ts'
import type { AddressedKind } from '../wire.ts'
import { RateWindow } from '../rate-window.ts'
import type { Logger } from '../logger.ts'
import type { HandlerObservation, Telemetry } from '../telemetry.ts'
import {
  deadlineOutcome,
  encodeReplyHeaders,
  failure,
  invalidPayload,
  invalidReplyHeaders,
  isThenable,
  success,
  type Handler,
  type HandlerContext,
  type Result,
} from './handler.ts'
import type { StreamSender } from './stream.ts'

/** A request as pgrr_claim and pgrr_handed return it, or as a handoff brings it: what a job starts from. */
export interface ClaimedRow {
  id: string
  payload: string
  payload_json: boolean
  headers: Record<string, string> | null
  attempt: number
  remaining_ms: number
  queued_ms: number
  /** Addressed to this responder (pgrr_handed, sql/protocol/15_scatter.sql); absent or null otherwise. */
  kind?: AddressedKind | null
}

/** One request being handled. */
export interface Job {
  readonly id: string
  /** 1 for the first attempt; more when the request was retried after its responder was gone. */
  readonly attempt: number
  /** The registration that claimed it (or was handed it): its outcome is written only while that lasts. */
  readonly generation: number
  /** Handed by pgrr_send rather than claimed. */
  readonly handed: boolean
  /**
   * Made when the handler first reads `ctx.signal` (most never do, and an AbortController costs more than
   * the rest of a request's bookkeeping); until then an abort only records its reason.
   */
  controller?: AbortController
  abortReason?: Error
  /** When its deadline passes (performance.now() milliseconds). */
  deadlineAt: number
  /** The time it had left when it started, as the request said. */
  remainingMs: number
  /** When it started (performance.now() milliseconds): its handler time is counted from here. */
  startedAt: number
  done: boolean
  observation?: HandlerObservation
  replyHeaders?: Record<string, string>
}

/** What the responder has handled since it started, for `pgrr status` (written with the lease renewal, pgrr_renew). */
export interface JobCounters {
  handledTotal: number
  failedTotal: number
  handledLastMinute: number
  failedLastMinute: number
  running: number
}

export interface JobsOptions {
  readonly channel: string
  readonly handler: Handler
  readonly telemetry: Telemetry
  /** Where a handler's failure and a reply past its deadline are told. */
  readonly logger: Logger
  /** A job ended with an outcome (once per job; it is no longer counted as running). */
  readonly finished: (job: Job, result: Result) => void
  /** Streamed replies (`ctx.send`, async generator handlers); without it a handler cannot send parts. */
  readonly streams?: StreamSender
}

/** Node's longest timer; setTimeout() fires a longer (or non-positive) delay after 1 ms, and so do deadlines. */
const maxTimerMs = 2_147_483_647

/** The handlers running for one responder, their deadlines and their counters. */
export class Jobs {
  readonly #channel: string
  readonly #handler: Handler
  readonly #telemetry: Telemetry
  readonly #logger: Logger
  readonly #finished: (job: Job, result: Result) => void
  readonly #streams: StreamSender | undefined
  readonly #jobs = new Map<string, Job>()
  /**
   * One timer for the deadlines of all running jobs, armed for the earliest one and left armed when that
   * job finishes first: a setTimeout() and a clearTimeout() per request cost more than the rest of its
   * bookkeeping. Unreferenced: the sessions keep the process alive while the server runs.
   */
  #deadlineTimer: NodeJS.Timeout | undefined
  /** When #deadlineTimer fires (performance.now() milliseconds), Infinity when not armed. */
  #deadlineTimerAt = Infinity
  /** The server closed: the timer is not armed again for the jobs left. */
  #stopped = false
  #handledTotal = 0
  #failedTotal = 0
  readonly #handledLastMinute = new RateWindow()
  readonly #failedLastMinute = new RateWindow()

  constructor(options: JobsOptions) {
    this.#channel = options.channel
    this.#handler = options.handler
    this.#telemetry = options.telemetry
    this.#logger = options.logger
    this.#finished = options.finished
    this.#streams = options.streams
  }

  /** Handlers running now. */
  get size(): number {
    return this.#jobs.size
  }

  /** Whether request `id` is being handled here. */
  has(id: string): boolean {
    return this.#jobs.has(id)
  }

  counters(): JobCounters {
    return {
      handledTotal: this.#handledTotal,
      failedTotal: this.#failedTotal,
      handledLastMinute: this.#handledLastMinute.total(),
      failedLastMinute: this.#failedLastMinute.total(),
      running: this.#jobs.size,
    }
  }

  /**
   * Runs the handler for a request claimed (or handed, `handed`) by registration `generation`. Never
   * throws: whatever goes wrong, the request gets an outcome and the requests started with it still run.
   */
  start(row: ClaimedRow, generation: number, handed: boolean): void {
    try {
      this.#run(row, generation, handed)
    } catch (error) {
      const job = this.#jobs.get(row.id)
      if (job !== undefined) this.#failed(job, error)
    }
  }

  /** Aborts the handlers of requests `ids` (their callers cancelled them); unknown ids are ignored. */
  cancel(ids: readonly string[]): void {
    for (const id of ids) {
      const job = this.#jobs.get(id)
      if (job !== undefined) abortJob(job, new CancelledError('the caller cancelled the request'))
    }
  }

  /**
   * The caller of request `id` pushed its deadline later (a streamed reply's idle timeout): it is now
   * `remainingMs` from now, unless that is earlier than it was.
   */
  extend(id: string, remainingMs: number): void {
    const job = this.#jobs.get(id)
    if (job === undefined || job.done) return
    job.deadlineAt = Math.max(job.deadlineAt, performance.now() + Math.min(remainingMs, maxTimerMs))
  }

  /** Ends every job without a reply (their requests are released with the session), aborting each. */
  abandonAll(reason: Error): void {
    for (const job of this.#jobs.values()) this.#abandon(job, reason)
  }

  /** The server closed: no deadline fires any more. */
  stopDeadlines(): void {
    this.#stopped = true
    clearTimeout(this.#deadlineTimer)
    this.#deadlineTimerAt = Infinity
  }

  #run(row: ClaimedRow, generation: number, handed: boolean): void {
    if (row.remaining_ms <= 0) {
      // Past its deadline before it could start (a handoff that arrived late, a request recovered late):
      // never started, answered as its deadline's timeout.
      const job: Job = { id: row.id, attempt: row.attempt, generation, handed, done: false, deadlineAt: 0, remainingMs: row.remaining_ms, startedAt: performance.now() }
      this.#jobs.set(row.id, job)
      return this.#finish(job, deadlineOutcome(row.remaining_ms))
    }
    const delayMs = row.remaining_ms >= 1 && row.remaining_ms <= maxTimerMs ? row.remaining_ms : 1
    const job: Job = {
      id: row.id,
      attempt: row.attempt,
      generation,
      handed,
      done: false,
      deadlineAt: performance.now() + delayMs,
      remainingMs: row.remaining_ms,
      startedAt: performance.now(),
    }
    this.#jobs.set(row.id, job)
    if (job.deadlineAt < this.#deadlineTimerAt) this.#armDeadlines(delayMs)
    let payload: unknown
    try {
      payload = decodePayload(row.payload, row.payload_json)
    } catch {
      return this.#finish(job, invalidPayload())
    }
    const context: HandlerContext = {
      id: row.id,
      channel: this.#channel,
      attempt: row.attempt,
      deadline: new Date(Date.now() + row.remaining_ms),
      headers: row.headers ?? {},
      replyHeaders: {},
      get signal() {
        return signalOf(job)
      },
      send: (part) => enqueue(part).then(({ written }) => written),
    }
    const enqueue = (part: unknown) => {
      if (job.done) return Promise.reject(new StreamClosedError('the final reply was already sent: no part may follow it'))
      if (this.#streams === undefined) return Promise.reject(new StreamClosedError('this responder cannot send parts'))
      return this.#streams.enqueue(job.id, job.generation, part, () => signalOf(job))
    }
    job.replyHeaders = context.replyHeaders
    job.observation = this.#telemetry.handlerStarted?.({
      channel: this.#channel,
      id: row.id,
      attempt: row.attempt,
      headers: context.headers,
      queuedMs: row.queued_ms,
    })
    let result: unknown
    try {
      result = job.observation === undefined ? this.#handler(payload, context) : job.observation.run(() => this.#handler(payload, context))
      // An async generator: its values are the parts, its return value the reply (src/responder/stream.ts).
      if (this.#streams !== undefined) result = this.#streams.drive(job.id, result, enqueue)
    } catch (error) {
      return this.#failed(job, error)
    }
    // A hostile result (a Proxy, a `then` or `then` getter that throws) must not escape #run(): reading
    // `then` happens inside try, and Promise.resolve() turns a throwing `then` into a rejection.
    let thenable: boolean
    try {
      thenable = isThenable(result)
    } catch (error) {
      return this.#failed(job, error)
    }
    if (!thenable) return this.#finish(job, success(result))
    try {
      Promise.resolve(result as PromiseLike<unknown>).then(
        (value) => this.#finish(job, success(value)),
        (error: unknown) => this.#failed(job, error),
      )
    } catch (error) {
      this.#failed(job, error)
    }
  }

  /** The handler threw (or its promise rejected): told at error level, and answered with an error reply. */
  #failed(job: Job, error: unknown): void {
    if (job.done) return
    this.#logger.error({ err: error, channel: this.#channel, id: job.id, attempt: job.attempt }, 'handler failed')
    this.#finish(job, failure(error))
  }

  /** Arms the deadline timer for `delayMs` from now, the earliest deadline of the running jobs. */
  #armDeadlines(delayMs: number): void {
    clearTimeout(this.#deadlineTimer)
    this.#deadlineTimerAt = performance.now() + delayMs
    this.#deadlineTimer = setTimeout(this.#expire, delayMs).unref()
  }

  /** Ends the jobs whose deadline has passed, and arms the timer for the next one. */
  readonly #expire = (): void => {
    // The timer fired, so its moment has come by the clock timers keep, which may lag performance.now().
    const now = Math.max(performance.now(), this.#deadlineTimerAt)
    this.#deadlineTimer = undefined
    this.#deadlineTimerAt = Infinity
    let next = Infinity
    for (const job of this.#jobs.values()) {
      if (job.deadlineAt > now) {
        next = Math.min(next, job.deadlineAt)
        continue
      }
      const outcome = deadlineOutcome(job.remainingMs)
      abortJob(job, new TimeoutError(job.remainingMs, outcome.body))
      this.#finish(job, outcome)
    }
    if (next !== Infinity && !this.#stopped) this.#armDeadlines(Math.max(1, next - performance.now()))
  }

  #finish(job: Job, handlerResult: Result): void {
    if (job.done) return
    // Parts the handler sent go before its reply (not when the deadline ends it: nothing more may go then).
    const parts = handlerResult.code === responderDeadlineCode ? undefined : this.#streams?.outstanding(job.id)
    if (parts !== undefined) return void parts.then(() => this.#finish(job, handlerResult))
    job.done = true
    this.#jobs.delete(job.id)
    this.#streams?.end(job.id, () => new StreamClosedError('the final reply was already sent: no part may follow it'))
    let result = handlerResult
    if (result.code !== responderDeadlineCode && performance.now() > job.deadlineAt) {
      // Finished after its deadline, which the timer could not tell: the event loop was blocked (a CPU-bound
      // handler) or the process stopped. The caller has timed out: that stays its outcome (the database
      // would refuse this reply too), and the handler's signal says so.
      result = deadlineOutcome(job.remainingMs)
      abortJob(job, new TimeoutError(job.remainingMs, result.body))
      this.#logger.warn(
        { channel: this.#channel, id: job.id, lateMs: Math.round(performance.now() - job.deadlineAt) },
        'the handler finished after the deadline: its reply is discarded, the caller saw a timeout',
      )
      this.#telemetry.repliedLate?.(this.#channel, 1)
    }
    const headers = encodeReplyHeaders(job.replyHeaders)
    if ('invalid' in headers) result = invalidReplyHeaders(headers.invalid)
    else result.headers = headers.json
    const observed = result.code === responderDeadlineCode ? 'TIMEOUT' : (result.code ?? 'HANDLER_ERROR')
    job.observation?.end(result.failed ? observed : 'ok', result.failed ? result.body : undefined)
    this.#handledTotal++
    this.#handledLastMinute.add()
    if (result.failed) {
      this.#failedTotal++
      this.#failedLastMinute.add()
    }
    this.#finished(job, result)
  }

  /** Ends a job without a reply: its request is released with the session. */
  #abandon(job: Job, reason: Error): void {
    if (job.done) return
    job.done = true
    this.#jobs.delete(job.id)
    this.#streams?.end(job.id, () => new StreamClosedError(`the responder stopped handling the request: ${reason.message}`))
    job.observation?.end((reason as { code?: string }).code ?? 'ERROR', reason)
    abortJob(job, reason)
  }
}

/** The handler's abort signal, made on first use: aborted already when its job was. */
function signalOf(job: Job): AbortSignal {
  if (job.controller === undefined) {
    job.controller = new AbortController()
    if (job.abortReason !== undefined) job.controller.abort(job.abortReason)
  }
  return job.controller.signal
}

/** Aborts a job's signal, or records why for when the handler reads it. The first reason stays. */
function abortJob(job: Job, reason: Error): void {
  if (job.controller !== undefined) job.controller.abort(reason)
  else job.abortReason ??= reason
}
