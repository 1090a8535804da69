/**
 * The responder side. A server owns one dedicated session (its "work" connection): it registers there,
 * which makes it live for request(); it claims batches of pending requests there, which takes their
 * request locks; and it writes replies there, which releases them. That session's locks are what callers
 * block on and what tells them the responder died, so it is never pooled, never recycled, and when it
 * breaks, the requests it held are given up (callers see them lost, or retried) and the server registers
 * anew on a fresh session.
 *
 * Handlers run outside any transaction, at most `concurrency` at once. A NOTIFY on the service channel, a
 * finished handler while a backlog remains, a reconnect, or the slow poll triggers the next claim.
 */
import { BatchQueue } from './batch-queue.ts'
import type { ClientContext } from './client.ts'
import { createSession, endSession, query, type Session } from './database.ts'
import { isConnectionLoss, toPgrrError } from './database-error.ts'
import { CancelledError, ClosedError, ConnectionError, responderDeadlineCode, TimeoutError } from './errors.ts'
import { durationOption, integerOption } from './option-values.ts'
import type { ServeOptions } from './options.ts'
import { decodePayload, encodePayload } from './payload.ts'
import { RateWindow } from './rate-window.ts'
import type { HandlerObservation } from './telemetry.ts'
import { announcedCursor, claimStoppedAtByteCap, decodeCancelledIds, decodeHandoffs } from './wire.ts'

/** What a handler is told about the request it handles. */
export interface HandlerContext {
  /** Request id (a bigint, as a decimal string). */
  readonly id: string
  /** The channel (service) it was sent to. */
  readonly channel: string
  /** 1 for the first attempt; more when the request was retried after a responder died. */
  readonly attempt: number
  /** When the caller stops waiting. */
  readonly deadline: Date
  /** Headers the caller sent. */
  readonly headers: Readonly<Record<string, string>>
  /**
   * Headers to send back with the reply (or error reply): set string values on it. The caller reads them
   * with `client.requestWithHeaders()`, SQL callers with `await_reply_full()`.
   */
  readonly replyHeaders: Record<string, string>
  /** Fires when the caller cancels or gives up, the deadline passes, or the server closes. */
  readonly signal: AbortSignal
}

/**
 * Handles one request: returns (or resolves with) the reply, a string or any JSON value. Throwing sends an
 * error reply: the caller gets a `RemoteError` with the error's `message` and its `code` when that is a
 * string (else `'HANDLER_ERROR'`).
 */
export type Handler<Payload = unknown, Reply = unknown> = (
  payload: Payload,
  context: HandlerContext,
) => Reply | Promise<Reply>

/** Lifecycle of a server. */
export type ServerState = 'starting' | 'running' | 'reconnecting' | 'draining' | 'closed'

interface Registration {
  responderId: number
  channelId: number
  serviceChannel: string
  controlChannel: string
  generation: number
}

interface Unlisteners {
  service: () => Promise<void>
  control: () => Promise<void>
  inbox: () => Promise<void>
}

/** How long the id of a request found by pgrr_handed is remembered, against its NOTIFY arriving late. */
const recoveredMemoryMs = 60_000

interface Job {
  id: string
  generation: number
  /** Handed by pgrr_send rather than claimed. */
  handed: boolean
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
  done: boolean
  observation?: HandlerObservation
  replyHeaders?: Record<string, string>
}

interface Outcome {
  id: string
  generation: number
  /** Handed over by the send rather than claimed: no request lock to release (see pgrr_reply_one). */
  handed: boolean
  failed: boolean
  body: string
  json: boolean
  code: string | null
  /** The reply headers as JSON, or null. */
  headers?: string | null
}

interface ClaimedRow {
  id: string
  seq: string
  payload: string
  payload_json: boolean
  headers: Record<string, string> | null
  attempt: number
  remaining_ms: number
  queued_ms: number
}

const maxBackoffMs = 5000
const vacuumEveryRequests = 20_000
/** Node's longest timer; setTimeout() fires a longer (or non-positive) delay after 1 ms, and so do deadlines. */
const maxTimerMs = 2_147_483_647

/** A responder for one channel. Start it with `client.serve()` or `serve()`. */
export class Server {
  readonly channel: string
  readonly #context: ClientContext
  readonly #handler: Handler
  readonly #concurrency: number
  readonly #pollIntervalMs: number
  readonly #sweepIntervalMs: number
  readonly #drainTimeoutMs: number
  readonly #onClosed: () => void
  readonly #closeHooks: (() => Promise<void>)[] = []
  /** The dedicated session; undefined between a loss and the next registration. */
  #work: Session | undefined
  readonly #jobs = new Map<string, Job>()
  readonly #replies: BatchQueue<Outcome>
  /** Handed requests to give back (pgrr_decline). */
  readonly #declines: BatchQueue<string>
  /** Handed requests whose handler finished and whose reply is not yet written. */
  readonly #handedDone = new Set<string>()
  /**
   * Handed requests given back and not yet pending again (pgrr_decline not yet done): a recovery that reads
   * them meanwhile (pgrr_handed) must not run them, or they would run here and at their next claim too.
   */
  readonly #declining = new Set<string>()
  /** Handed requests started from pgrr_handed, with when to forget them (their NOTIFY may still come). */
  readonly #recovered = new Map<string, number>()
  #state: ServerState = 'starting'
  #session: Registration | undefined
  #generation = 0
  #claiming = false
  /** Slots the running claim may fill. */
  #claimingLimit = 0
  /** Handed requests that arrived while a claim that may fill every free slot was running. */
  #deferredHandoffs: { row: ClaimedRow; session: Registration; recovered: boolean }[] = []
  #claimAgain = false
  /** Claim cursor: claims look at pending requests with a seq above it (see pgrr_claim). */
  #afterSeq = 0
  #lowestAnnounced: number | undefined
  #backlog = false
  #failures = 0
  #unlisten: Unlisteners | undefined
  #draining: Promise<void> | undefined
  #removeReconnectHook: (() => void) | undefined
  #pollTimer: NodeJS.Timeout | undefined
  #sweepTimer: NodeJS.Timeout | undefined
  #retryTimer: NodeJS.Timeout | undefined
  /**
   * One timer for the deadlines of all running jobs, armed for the earliest one and left armed when that
   * job finishes first: a setTimeout() and a clearTimeout() per request cost more than the rest of its
   * bookkeeping. Unreferenced: the sessions keep the process alive while the server runs.
   */
  #deadlineTimer: NodeJS.Timeout | undefined
  /** When #deadlineTimer fires (performance.now() milliseconds), Infinity when not armed. */
  #deadlineTimerAt = Infinity
  #idleWaiters: (() => void)[] = []
  readonly #closedPromise: Promise<void>
  #resolveClosed!: () => void
  #sweeping = false
  #handledSinceVacuum = 0
  #vacuuming = false
  #handledTotal = 0
  #failedTotal = 0
  readonly #handledLastMinute = new RateWindow()
  readonly #failedLastMinute = new RateWindow()

  /** @internal Use `client.serve()` or `serve()`. */
  constructor(context: ClientContext, channel: string, handler: Handler, options: ServeOptions, onClosed: () => void) {
    this.channel = channel
    this.#context = context
    this.#handler = handler
    this.#concurrency = integerOption(options.concurrency ?? 10, 'concurrency', 100_000)
    this.#pollIntervalMs = durationOption(options.pollIntervalMs ?? 2000, 'pollIntervalMs')
    this.#sweepIntervalMs = durationOption(options.sweepIntervalMs ?? 5000, 'sweepIntervalMs')
    this.#drainTimeoutMs = durationOption(options.drainTimeoutMs ?? 30000, 'drainTimeoutMs')
    this.#onClosed = onClosed
    this.#closedPromise = new Promise((resolve) => (this.#resolveClosed = resolve))
    this.#replies = new BatchQueue((outcomes) => this.#flushReplies(outcomes), { maxBatch: 1000, maxConcurrent: 2 })
    this.#declines = new BatchQueue((ids) => this.#flushDeclines(ids), { maxBatch: 1000 })
  }

  /** Current lifecycle state. */
  get state(): ServerState {
    return this.#state
  }

  /** Resolves once the server is closed (by `close()`, `drain()`, or its client closing). */
  get closed(): Promise<void> {
    return this.#closedPromise
  }

  /** Handlers running now. */
  get running(): number {
    return this.#jobs.size
  }

  /** Responder id of the current registration (changes after a reconnect). */
  get responderId(): number | undefined {
    return this.#session?.responderId
  }

  /** @internal Registers and starts claiming. */
  async start(): Promise<void> {
    if (this.#context.polling) {
      throw new ConnectionError(
        'responders need a direct session (LISTEN and session advisory locks do not work through a transaction pooler): set sessionConnectionString',
      )
    }
    await this.#register()
    // Closed while registering: the registration ended with it, and nothing may start now.
    if (this.#state !== 'starting') throw new ClosedError('the responder was closed while it started')
    this.#state = 'running'
    // Requests may have been handed over between the registration's commit and the LISTEN on the inbox.
    void this.#recoverHanded()
    this.#removeReconnectHook = this.#context.listener.onReconnect(() => {
      this.#rescan()
      // A request handed over while the LISTEN session was away: its NOTIFY is lost.
      void this.#recoverHanded()
    })
    this.#pollTimer = setInterval(() => this.#rescan(), this.#pollIntervalMs)
    this.#pollTimer.unref()
    this.#sweepTimer = setInterval(() => {
      void this.#sweep()
      void this.#report()
    }, this.#sweepIntervalMs)
    this.#sweepTimer.unref()
    this.#wake()
  }

  /** @internal Runs `hook` when the server closes (a server from `serve()` closes its own client). */
  onClose(hook: () => Promise<void>): void {
    this.#closeHooks.push(hook)
  }

  /**
   * Graceful stop: stops claiming, stops being live (new requests go to other responders, or fail with
   * no responders), waits for running handlers and their replies up to `timeoutMs` (default
   * `drainTimeoutMs`), then closes. Requests still queued stay for the remaining responders; handlers still
   * running at the timeout are aborted and their requests end as lost (or retried, when retryable).
   */
  drain(timeoutMs = this.#drainTimeoutMs): Promise<void> {
    let checked: number
    try {
      checked = durationOption(timeoutMs, 'timeoutMs')
    } catch (error) {
      return Promise.reject(error)
    }
    // A second call while draining waits for the same drain.
    this.#draining ??= this.#drain(checked)
    return this.#draining
  }

  async #drain(timeoutMs: number): Promise<void> {
    if (this.#state === 'closed') return
    this.#state = 'draining'
    clearInterval(this.#pollTimer)
    let timer: NodeJS.Timeout | undefined
    const deadline = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, timeoutMs)
    })
    // Requests handed over meanwhile are declined (#handedOff), until the unregister makes this responder
    // invisible to pgrr_send.
    await this.#stopListening({ keepControl: true })
    const session = this.#session
    const unregister = async () => {
      if (session === undefined) return
      await this.#onWork(this.#context.statements.unregister, [session.responderId]).catch((error: unknown) => {
        this.#context.logger.warn({ err: error }, 'unregister failed')
      })
    }
    // Everything, the unregister included (it queues behind the session's statements), within the timeout.
    await Promise.race([unregister().then(() => this.#whenIdle()), deadline])
    clearTimeout(timer)
    await this.close()
  }

  /**
   * Immediate stop: aborts running handlers and ends the session, which releases the locks of their
   * requests (callers see them lost, or retried when retryable). Idempotent.
   */
  async close(): Promise<void> {
    if (this.#state === 'closed') return
    this.#state = 'closed'
    clearInterval(this.#pollTimer)
    clearInterval(this.#sweepTimer)
    clearTimeout(this.#retryTimer)
    clearTimeout(this.#deadlineTimer)
    this.#deadlineTimerAt = Infinity
    this.#removeReconnectHook?.()
    await this.#stopListening()
    const reason = new ClosedError('the responder closed')
    for (const job of this.#jobs.values()) this.#abandon(job, reason)
    this.#session = undefined
    const work = this.#work
    this.#work = undefined
    if (work !== undefined) await endSession(work)
    this.#notifyIdle()
    this.#onClosed()
    for (const hook of this.#closeHooks) await hook().catch(() => undefined)
    this.#resolveClosed()
  }

  async #register(): Promise<void> {
    const { statements, listener, host } = this.#context
    // A new session for every registration: its advisory locks are this registration's.
    const work: Session = createSession(this.#context.options, {
      onEnd: () => {
        if (work === this.#work) this.#workLost()
      },
      // Replies, claims and declines follow each other without a round trip in between.
      pipeline: true,
    })
    let rows
    try {
      await work.connect()
      rows = await query(work, statements.register, [this.channel, host, process.pid, this.#concurrency])
    } catch (error) {
      await endSession(work)
      throw toPgrrError(error)
    }
    const row = rows[0] as unknown as {
      responder_id: number
      channel_id: number
      service_channel: string
      control_channel: string
      inbox_channel: string
    }
    const generation = this.#generation + 1
    let unlisten: Unlisteners
    try {
      unlisten = {
        service: await listener.listen(row.service_channel, (payload) => this.#announced(payload)),
        control: await listener.listen(row.control_channel, (payload) => this.#cancel(payload)),
        inbox: await listener.listen(row.inbox_channel, (payload) => this.#handedOff(payload, generation)),
      }
    } catch (error) {
      await endSession(work)
      throw error
    }
    if (this.#state === 'closed' || this.#state === 'draining') {
      // Stopped while this registration was under way: nothing of it may outlive the stop.
      await Promise.all([unlisten.service(), unlisten.control(), unlisten.inbox()].map((done) => done.catch(() => undefined)))
      await endSession(work)
      return
    }
    this.#work = work
    this.#session = {
      responderId: row.responder_id,
      channelId: row.channel_id,
      serviceChannel: row.service_channel,
      controlChannel: row.control_channel,
      generation: ++this.#generation,
    }
    this.#afterSeq = 0
    this.#lowestAnnounced = undefined
    this.#unlisten = unlisten
  }

  /** Stops listening on the service channel (no more claims), and on the control channel too unless asked. */
  async #stopListening({ keepControl = false } = {}): Promise<void> {
    const unlisten = this.#unlisten
    if (unlisten === undefined) return
    const done = [unlisten.service()]
    if (keepControl) {
      // Cancellations still reach the handlers that run on, and requests still handed over are declined.
      this.#unlisten = { service: async () => undefined, control: unlisten.control, inbox: unlisten.inbox }
    } else {
      this.#unlisten = undefined
      done.push(unlisten.control(), unlisten.inbox())
    }
    await Promise.all(done.map((promise) => promise.catch(() => undefined)))
  }

  /** A NOTIFY announced pending requests from seq `payload` on: claim from there. */
  #announced(payload: string): void {
    this.#lowerCursor(announcedCursor(payload))
    this.#wake()
  }

  /** Claims from the start of the queue: for the poll and after a reconnect, when hints may be lost. */
  #rescan(): void {
    this.#lowerCursor(0)
    this.#wake()
  }

  /**
   * The claim cursor (see pgrr_claim): every pending request has a seq above it, or was announced. A
   * lowering that arrives while a claim runs is applied after that claim moved the cursor forward.
   */
  #lowerCursor(afterSeq: number): void {
    if (this.#claiming) this.#lowestAnnounced = Math.min(this.#lowestAnnounced ?? afterSeq, afterSeq)
    else this.#afterSeq = Math.min(this.#afterSeq, afterSeq)
  }

  /** Claims as many requests as there are free slots; at most one claim at a time. */
  #wake(): void {
    if (this.#state !== 'running' || this.#session === undefined) return
    if (this.#claiming) {
      this.#claimAgain = true
      return
    }
    const free = this.#concurrency - this.#jobs.size
    if (free <= 0) {
      this.#backlog = true
      return
    }
    void this.#claim(this.#session, free)
  }

  async #claim(session: Registration, limit: number): Promise<void> {
    this.#claiming = true
    this.#claimingLimit = limit
    this.#claimAgain = false
    try {
      const rows = await this.#onWork<ClaimedRow>(this.#context.statements.claim, [
        session.responderId,
        session.channelId,
        limit,
        this.#afterSeq,
      ])
      // Past the last claimed row; a full batch means more may follow it, a short one that nothing
      // visible does (anything later is announced, or found by the next rescan).
      for (const row of rows) this.#afterSeq = Math.max(this.#afterSeq, Number(row.seq))
      if (this.#lowestAnnounced !== undefined) this.#afterSeq = Math.min(this.#afterSeq, this.#lowestAnnounced)
      this.#lowestAnnounced = undefined
      // Rows claimed by a session that has since died were released with it.
      if (session.generation !== this.#generation) rows.length = 0
      if (rows.length > 0) this.#context.telemetry.claimed?.(this.channel, rows.length)
      for (const row of rows) {
        try {
          this.#run(row, session)
        } catch (error) {
          // #run() never throws on purpose; if it does, this request still gets an outcome and the others run.
          const job = this.#jobs.get(row.id)
          if (job !== undefined) this.#finish(job, failure(error))
        }
      }
      this.#backlog = rows.length === limit || claimStoppedAtByteCap(rows)
    } catch (error) {
      this.#context.logger.warn({ err: error }, 'claim failed')
      this.#claiming = false
      // The session is about to end, and what was handed to it with it (reaped: lost, or retried).
      this.#deferredHandoffs = []
      // Never claim again straight away: on a broken session the next statement fails without yielding to
      // the event loop. And a claim that failed part-way may hold request locks of rows it did not claim
      // (session locks survive a rollback): only ending the session releases them. So: a new session,
      // a new registration, and claims resume from there.
      this.#backlog = false
      if (session.generation === this.#generation) this.#recycleWork()
      return
    }
    this.#claiming = false
    const deferred = this.#deferredHandoffs
    this.#deferredHandoffs = []
    for (const handoff of deferred) {
      if (handoff.session.generation === this.#generation) this.#take(handoff.row, handoff.session, handoff.recovered)
    }
    if (this.#claimAgain || (this.#backlog && this.#jobs.size < this.#concurrency)) this.#wake()
  }

  #run(row: ClaimedRow, session: Registration, handed = false): void {
    if (row.remaining_ms <= 0) {
      // Past its deadline before it could start (a handoff that arrived late, a request recovered late):
      // never started, answered as its deadline's timeout.
      const job: Job = { id: row.id, generation: session.generation, handed, done: false, deadlineAt: 0, remainingMs: row.remaining_ms }
      this.#jobs.set(row.id, job)
      return this.#finish(job, deadlineOutcome(row.remaining_ms))
    }
    const delayMs = row.remaining_ms >= 1 && row.remaining_ms <= maxTimerMs ? row.remaining_ms : 1
    const job: Job = {
      id: row.id,
      generation: session.generation,
      handed,
      done: false,
      deadlineAt: performance.now() + delayMs,
      remainingMs: row.remaining_ms,
    }
    this.#jobs.set(row.id, job)
    if (job.deadlineAt < this.#deadlineTimerAt) this.#armDeadlines(delayMs)
    let payload: unknown
    try {
      payload = decodePayload(row.payload, row.payload_json)
    } catch {
      return this.#finish(job, { failed: true, body: 'the payload is not valid JSON', json: false, code: 'INVALID_PAYLOAD' })
    }
    const context: HandlerContext = {
      id: row.id,
      channel: this.channel,
      attempt: row.attempt,
      deadline: new Date(Date.now() + row.remaining_ms),
      headers: row.headers ?? {},
      replyHeaders: {},
      get signal() {
        return signalOf(job)
      },
    }
    job.replyHeaders = context.replyHeaders
    job.observation = this.#context.telemetry.handlerStarted?.({
      channel: this.channel,
      id: row.id,
      attempt: row.attempt,
      headers: context.headers,
      queuedMs: row.queued_ms,
    })
    let result: unknown
    try {
      result = job.observation === undefined ? this.#handler(payload, context) : job.observation.run(() => this.#handler(payload, context))
    } catch (error) {
      return this.#finish(job, failure(error))
    }
    // A hostile result (a Proxy, a `then` or `then` getter that throws) must not escape #run(): reading
    // `then` happens inside try, and Promise.resolve() turns a throwing `then` into a rejection.
    let thenable: boolean
    try {
      thenable = isThenable(result)
    } catch (error) {
      return this.#finish(job, failure(error))
    }
    if (!thenable) return this.#finish(job, success(result))
    try {
      Promise.resolve(result as PromiseLike<unknown>).then(
        (value) => this.#finish(job, success(value)),
        (error: unknown) => this.#finish(job, failure(error)),
      )
    } catch (error) {
      this.#finish(job, failure(error))
    }
  }

  /** Arms the deadline timer for `delayMs` from now, the earliest deadline of the running jobs. */
  #armDeadlines(delayMs: number): void {
    clearTimeout(this.#deadlineTimer)
    this.#deadlineTimerAt = performance.now() + delayMs
    this.#deadlineTimer = setTimeout(this.#expireJobs, delayMs).unref()
  }

  /** Ends the jobs whose deadline has passed, and arms the timer for the next one. */
  readonly #expireJobs = (): void => {
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
    if (next !== Infinity && this.#state !== 'closed') this.#armDeadlines(Math.max(1, next - performance.now()))
  }

  #finish(job: Job, outcome: Result): void {
    if (job.done) return
    job.done = true
    this.#jobs.delete(job.id)
    const observed = outcome.code === responderDeadlineCode ? 'TIMEOUT' : (outcome.code ?? 'HANDLER_ERROR')
    job.observation?.end(outcome.failed ? observed : 'ok', outcome.failed ? outcome.body : undefined)
    this.#handledTotal++
    this.#handledLastMinute.add()
    if (++this.#handledSinceVacuum >= vacuumEveryRequests) void this.#vacuum()
    if (outcome.failed) {
      this.#failedTotal++
      this.#failedLastMinute.add()
    }
    // Every claimed request gets an outcome written, even a cancelled one: that releases its lock.
    if (job.generation === this.#generation && this.#state !== 'closed') {
      if (job.handed) this.#handedDone.add(job.id)
      this.#replies.push({
        id: job.id,
        generation: job.generation,
        handed: job.handed,
        failed: outcome.failed,
        body: outcome.body,
        json: outcome.json,
        code: outcome.code,
        headers: encodeReplyHeaders(job.replyHeaders),
      })
    }
    if (this.#backlog) this.#wake()
    // Someone (a drain) waits for the last handler and its reply.
    if (this.#jobs.size === 0 && this.#idleWaiters.length > 0) void this.#whenIdle().then(() => this.#notifyIdle())
  }

  /** Ends a job without a reply: its request is released with the session. */
  #abandon(job: Job, reason: Error): void {
    if (job.done) return
    job.done = true
    this.#jobs.delete(job.id)
    job.observation?.end((reason as { code?: string }).code ?? 'ERROR', reason)
    abortJob(job, reason)
  }

  #cancel(payload: string): void {
    for (const id of decodeCancelledIds(payload)) {
      const job = this.#jobs.get(id)
      if (job !== undefined) abortJob(job, new CancelledError('the caller cancelled the request'))
    }
  }

  async #flushReplies(outcomes: Outcome[]): Promise<void> {
    const session = this.#session
    const current = outcomes.filter((outcome) => session !== undefined && outcome.generation === session.generation)
    try {
      await this.#writeReplies(session, current)
    } finally {
      // Written (or lost with the session): pgrr_handed no longer returns them.
      for (const outcome of outcomes) this.#handedDone.delete(outcome.id)
    }
  }

  async #writeReplies(session: Registration | undefined, current: Outcome[]): Promise<void> {
    if (session === undefined || current.length === 0) return
    try {
      const [only] = current
      if (current.length === 1 && only !== undefined) {
        // A lone reply: the scalar statement, cheaper than the batch for it.
        await this.#onWork(this.#context.statements.replyOne, [
          session.responderId,
          only.id,
          only.failed,
          only.body,
          only.json,
          only.code,
          only.headers ?? null,
        ])
        this.#context.telemetry.replied?.(this.channel, 1)
        return
      }
      await this.#onWork(this.#context.statements.reply, [
        session.responderId,
        current.map((o) => o.id),
        current.map((o) => o.failed),
        current.map((o) => o.body),
        current.map((o) => o.json),
        current.map((o) => o.code),
        current.map((o) => o.headers ?? null),
      ])
      this.#context.telemetry.replied?.(this.channel, current.length)
    } catch (error) {
      if (session.generation !== this.#generation || isConnectionLoss(error)) return
      // Not a connection problem: a reply the database refused. Ending the session releases every lock it
      // holds, so no caller waits on a reply that cannot be written.
      this.#context.logger.error({ err: error }, 'writing replies failed; restarting the responder session')
      this.#recycleWork()
    }
  }

  /**
   * Requests handed to this responder by pgrr_send_one or pgrr_send (a NOTIFY on its inbox: a JSON array of
   * entries, each an array of id, whether the payload is JSON, payload, headers, time left in ms). Runs each
   * when a slot is free, else gives it back to the queue. `generation`: the registration whose inbox it came to.
   */
  #handedOff(message: string, generation: number): void {
    const entries = decodeHandoffs(message)
    if (entries === undefined) {
      this.#context.logger.warn({ message: message.slice(0, 200) }, 'ignored a malformed handoff')
      return
    }
    const session = this.#session
    // Handed to a registration that is gone: its requests went with its session (they are reaped).
    if (session === undefined || generation !== session.generation) return
    for (const [id, json, payload, headers, timeoutMs] of entries) {
      this.#take({ id, seq: '0', payload, payload_json: json, headers, attempt: 1, remaining_ms: timeoutMs, queued_ms: 0 }, session)
    }
  }

  /**
   * Runs a handed request unless it already runs or ran; gives it back without a free slot. `recovered`:
   * found by pgrr_handed rather than announced by its NOTIFY (which may still arrive: it is then ignored).
   */
  #take(row: ClaimedRow, session: Registration, recovered = false): void {
    if (this.#jobs.has(row.id) || this.#handedDone.has(row.id) || this.#recovered.has(row.id) || this.#declining.has(row.id)) return
    if (this.#state === 'running' && this.#claiming && this.#jobs.size + this.#claimingLimit >= this.#concurrency) {
      // The running claim may fill every free slot: decide once it has returned (concurrency stays a bound).
      if (!this.#deferredHandoffs.some((handoff) => handoff.row.id === row.id)) this.#deferredHandoffs.push({ row, session, recovered })
      return
    }
    if (this.#state !== 'running' || this.#jobs.size >= this.#concurrency) {
      this.#declining.add(row.id)
      this.#declines.push(row.id)
      return
    }
    if (recovered) this.#recovered.set(row.id, Date.now() + recoveredMemoryMs)
    this.#context.telemetry.claimed?.(this.channel, 1)
    try {
      this.#run(row, session, true)
    } catch (error) {
      const job = this.#jobs.get(row.id)
      if (job !== undefined) this.#finish(job, failure(error))
    }
  }

  /** Runs the handed requests whose NOTIFY this responder missed (see pgrr_handed). */
  async #recoverHanded(): Promise<void> {
    const session = this.#session
    if (session === undefined || (this.#state !== 'running' && this.#state !== 'draining')) return
    let rows: ClaimedRow[]
    try {
      rows = await this.#onWork<ClaimedRow>(this.#context.statements.handed, [session.responderId])
    } catch (error) {
      this.#context.logger.debug({ err: error }, 'looking for handed requests failed')
      return
    }
    if (session.generation !== this.#generation) return
    const now = Date.now()
    for (const [id, until] of this.#recovered) if (until < now) this.#recovered.delete(id)
    for (const row of rows) this.#take(row, session, true)
  }

  async #flushDeclines(ids: string[]): Promise<void> {
    const session = this.#session
    try {
      if (session === undefined) return
      await this.#onWork(this.#context.statements.decline, [session.responderId, ids])
    } catch (error) {
      if (session === undefined || session.generation !== this.#generation || isConnectionLoss(error)) return
      // The requests stay handed to this responder: only ending the session gives them back (reaped).
      this.#context.logger.error({ err: error }, 'declining handed requests failed; restarting the responder session')
      this.#recycleWork()
    } finally {
      // Pending again, or gone with the session (a new registration's pgrr_handed does not return them).
      for (const id of ids) this.#declining.delete(id)
    }
  }

  /** Runs a statement on the work session; rejects with ConnectionError between sessions. */
  async #onWork<Row = Record<string, unknown>>(text: string, values: unknown[]): Promise<Row[]> {
    const work = this.#work
    if (work === undefined) throw new ConnectionError('the responder has no database session')
    return query<Row>(work, text, values)
  }

  /** Ends the work session on purpose (which releases its locks) and carries on with a fresh one. */
  #recycleWork(): void {
    const old = this.#work
    this.#work = undefined
    if (old !== undefined) void endSession(old)
    this.#workLost()
  }

  /** The work session ended: its locks are gone, so its requests are no longer ours. Register anew. */
  #workLost(): void {
    // While reconnecting, a registration attempt is already scheduled or running (and retries on failure).
    if (this.#state === 'closed' || this.#state === 'starting' || this.#state === 'reconnecting') return
    const wasDraining = this.#state === 'draining'
    this.#generation++
    this.#session = undefined
    this.#work = undefined
    const reason = new ConnectionError('the responder lost its database session')
    for (const job of this.#jobs.values()) this.#abandon(job, reason)
    if (wasDraining) {
      this.#notifyIdle()
      return
    }
    this.#context.logger.warn('responder session lost; registering again')
    this.#state = 'reconnecting'
    void this.#stopListening()
    this.#scheduleRegister()
  }

  #scheduleRegister(): void {
    const ceiling = Math.min(maxBackoffMs, 50 * 2 ** this.#failures)
    this.#retryTimer = setTimeout(async () => {
      if (this.#state !== 'reconnecting') return
      try {
        await this.#register()
      } catch (error) {
        this.#failures++
        this.#context.logger.warn({ err: error, attempt: this.#failures }, 'responder registration failed')
        if (this.#state === 'reconnecting') this.#scheduleRegister()
        return
      }
      if (this.#state !== 'reconnecting') return
      this.#failures = 0
      this.#state = 'running'
      void this.#recoverHanded()
      this.#context.telemetry.reconnected?.('responder', this.channel)
      this.#context.logger.info({ responderId: this.#session?.responderId }, 'responder registered again')
      this.#wake()
    }, Math.random() * ceiling)
  }

  async #sweep(): Promise<void> {
    // One at a time: a sweep that waits (on a row lock, a slow server) must not be joined by the next one
    // every interval, each holding a connection of the pool.
    if (this.#state !== 'running' || this.#sweeping) return
    this.#sweeping = true
    const { poolQuery, statements, logger } = this.#context
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
    if (this.#vacuuming || this.#state !== 'running') return
    this.#vacuuming = true
    this.#handledSinceVacuum = 0
    try {
      await this.#context.pool.query(this.#context.statements.vacuum)
    } catch (error) {
      this.#context.logger.debug({ err: error }, 'vacuum failed')
    } finally {
      this.#vacuuming = false
    }
  }

  /** Writes this responder's counters to its row, for `pgrr status`. */
  async #report(): Promise<void> {
    const session = this.#session
    if (this.#state !== 'running' || session === undefined) return
    try {
      await this.#onWork(this.#context.statements.report, [
        session.responderId,
        this.#handledTotal,
        this.#failedTotal,
        this.#handledLastMinute.total(),
        this.#failedLastMinute.total(),
        this.#jobs.size,
      ])
    } catch (error) {
      this.#context.logger.debug({ err: error }, 'report failed')
    }
  }

  #whenIdle(): Promise<void> {
    if (this.#jobs.size === 0) return Promise.all([this.#replies.idle(), this.#declines.idle()]).then(() => undefined)
    return new Promise((resolve) => this.#idleWaiters.push(resolve))
  }

  #notifyIdle(): void {
    if (this.#jobs.size > 0 && this.#state !== 'closed') return
    const waiters = this.#idleWaiters
    this.#idleWaiters = []
    for (const resolve of waiters) resolve()
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

/** Reply headers as JSON: the string-valued entries a handler set, or null when there are none. */
function encodeReplyHeaders(headers: Record<string, string> | undefined): string | null {
  if (headers === undefined) return null
  try {
    // The usual case, a handler that set none, without the copies below.
    let empty = true
    for (const key in headers) {
      if (Object.hasOwn(headers, key)) {
        empty = false
        break
      }
    }
    if (empty) return null
    const entries = Object.entries(headers).filter(([, value]) => typeof value === 'string')
    if (entries.length === 0) return null
    return sanitize(JSON.stringify(Object.fromEntries(entries)))
  } catch {
    // A handler may have put a Proxy or a getter that throws there: the reply goes without headers.
    return null
  }
}

/** What a handler's end says, before it is addressed to its request. */
type Result = Omit<Outcome, 'id' | 'generation' | 'handed'>

function success(value: unknown): Result {
  try {
    const encoded = encodePayload(value, 'reply')
    return { failed: false, body: encoded.text, json: encoded.json, code: null }
  } catch (error) {
    return { failed: true, body: describe(error), json: false, code: 'INVALID_REPLY' }
  }
}

function failure(error: unknown): Result {
  let code: unknown
  try {
    // A thrown value may be a Proxy or have a throwing getter.
    code = (error as { code?: unknown } | null)?.code
  } catch {
    code = undefined
  }
  return {
    failed: true,
    body: describe(error),
    json: false,
    // The responder's own deadline code is reserved: a handler cannot make its caller see a TimeoutError.
    code: typeof code === 'string' && code.length > 0 && code !== responderDeadlineCode ? sanitize(code).slice(0, 200) : 'HANDLER_ERROR',
  }
}

/** A message for any thrown value, never throwing itself (a thrown value may have a hostile toString). */
function describe(error: unknown): string {
  try {
    const message = error instanceof Error ? error.message : typeof error === 'string' ? error : JSON.stringify(error) ?? String(error)
    return sanitize(message)
  } catch {
    return 'the handler threw a value that cannot be described'
  }
}

/** PostgreSQL text cannot hold NUL, nor lone surrogates in UTF-8. */
function sanitize(text: string): string {
  return text.replaceAll("\u0000", '\uFFFD').toWellFormed()
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return typeof (value as { then?: unknown } | null)?.then === 'function'
}

/** The outcome a request gets when its deadline passes at the responder (callers report it as a timeout). */
function deadlineOutcome(timeoutMs: number): Result {
  // Callers report this code as their own timeout (TimeoutError, SQLSTATE PR002).
  return { failed: true, body: new TimeoutError(timeoutMs, 'the request reached its deadline').message, json: false, code: responderDeadlineCode }
}
