/**
 * The responder side. A server registers on its client's responders' session (its "work" session, one
 * for all the client's servers, responder-session.ts), which makes it live for request(); it claims
 * batches of pending requests there, which takes their request locks; and its replies are written there,
 * which releases them. That session's locks are what callers block on and what tells them the responder
 * died, so it is never pooled; when a statement of the server is refused, its registration is released
 * (its locks given back, what it held taken back) and it registers again; when the session breaks, the
 * requests it held are given up (callers see them lost, or retried) and every server of the client
 * registers anew on a fresh session.
 *
 * Handlers run outside any transaction, at most `concurrency` at once. A NOTIFY on the service channel, a
 * finished handler while a backlog remains, a reconnect, or the slow poll triggers the next claim.
 *
 * This file is the lifecycle (start, register, register again after a lost session, drain, close) and the
 * LISTENs; it owns the state the parts share (the state, the registration and its generation, the work
 * session) and wires them: jobs.ts runs the handlers, claim.ts claims, handoff.ts takes handed requests,
 * replies.ts writes outcomes, register-again.ts says when to register again, the client's sweeps.ts sweeps,
 * its polls.ts polls and its lease.ts renews the lease (with the counters and statistics).
 */
import type { ClientContext } from '../client/context.ts'
import { isConnectionLoss } from '../database-error.ts'
import { query, type Session } from '../database.ts'
import { ClosedError, ConnectionError } from '../errors.ts'
import { durationOption, integerOption } from '../option-values.ts'
import type { ServeOptions } from '../options.ts'
import { decodeCancelledIds } from '../wire.ts'
import { AddressedRequests } from './addressed.ts'
import { ClaimLoop } from './claim.ts'
import type { Handler, Result } from './handler.ts'
import { Handoffs } from './handoff.ts'
import { Jobs, type Job } from './jobs.ts'
import { RegisterAgain } from './register-again.ts'
import type { LeaseMember } from './lease.ts'
import {
  openRegistration,
  type Registration,
  type ResponderContext,
  type ServerState,
  type Unlisteners,
} from './registration.ts'
import { Replies } from './replies.ts'
import type { SessionMember } from './responder-session.ts'
import { encodeServiceInfo } from './service-info.ts'
import { ServiceStats } from './service-stats.ts'
import { StreamSender } from './stream.ts'
import { renderStreamStatements } from '../stream-statements.ts'

export type { ServerState } from './registration.ts'

/** How long close() waits for the responder's locks to be released (before cutting the connection, when
 * it was the last registration on it). */
const closeWaitMs = 5000

/** A responder for one channel. Start it with `client.serve()` or `serve()`. */
export class Server {
  readonly channel: string
  readonly #context: ClientContext
  readonly #concurrency: number
  readonly #pollIntervalMs: number
  readonly #sweepIntervalMs: number
  readonly #drainTimeoutMs: number
  readonly #onClosed: () => void
  readonly #closeHooks: (() => Promise<void>)[] = []
  readonly #jobs: Jobs
  readonly #claims: ClaimLoop
  readonly #handoffs: Handoffs
  readonly #replies: Replies
  readonly #lease: LeaseMember
  /** Requests addressed to this responder (scatter-gather, ping), and what it says of itself. */
  readonly #addressed: AddressedRequests
  readonly #info: string | null
  readonly #stats = new ServiceStats()
  readonly #streams: StreamSender
  /** The session it is registered on; undefined between a loss and the next registration. */
  #work: Session | undefined
  /** What the responders' session knows of this server: told when the session is lost. */
  readonly #member: SessionMember = {
    lost: (session) => {
      if (session === this.#work) this.#workLost()
    },
  }
  #state: ServerState = 'starting'
  #session: Registration | undefined
  #generation = 0
  readonly #registerAgain: RegisterAgain
  #unlisten: Unlisteners | undefined
  #draining: Promise<void> | undefined
  #removeReconnectHook: (() => void) | undefined
  #leavePolls: (() => void) | undefined
  #leaveSweeps: (() => void) | undefined
  #leaveLeases: (() => void) | undefined
  #idleWaiters: (() => void)[] = []
  readonly #closedPromise: Promise<void>
  #resolveClosed!: () => void

  /** @internal Use `client.serve()` or `serve()`. */
  constructor(context: ClientContext, channel: string, handler: Handler, options: ServeOptions, onClosed: () => void) {
    this.channel = channel
    this.#context = context
    this.#concurrency = integerOption(options.concurrency ?? 10, 'concurrency', 100_000)
    this.#pollIntervalMs = durationOption(options.pollIntervalMs ?? 2000, 'pollIntervalMs')
    this.#sweepIntervalMs = durationOption(options.sweepIntervalMs ?? 5000, 'sweepIntervalMs')
    this.#drainTimeoutMs = durationOption(options.drainTimeoutMs ?? 30000, 'drainTimeoutMs')
    this.#info = encodeServiceInfo(options)
    this.#onClosed = onClosed
    this.#closedPromise = new Promise((resolve) => (this.#resolveClosed = resolve))
    // What the parts are given of the state this server owns: read through these functions, never kept.
    const shared: ResponderContext = {
      channel,
      statements: context.statements,
      logger: context.logger,
      telemetry: context.telemetry,
      registration: () => this.#session,
      generation: () => this.#generation,
      query: (text, values) => this.#onWork(text, values),
    }
    const concurrency = this.#concurrency
    const recycle = () => this.#recycleWork()
    this.#streams = new StreamSender({
      ...shared,
      streamStatements: renderStreamStatements(context.schema),
      extend: (id, remainingMs) => this.#jobs.extend(id, remainingMs),
      cancelled: (id) => this.#jobs.cancel([id]),
    })
    const jobs = new Jobs({
      channel,
      handler,
      telemetry: context.telemetry,
      logger: context.logger,
      finished: (job, result) => this.#jobFinished(job, result),
      streams: this.#streams,
    })
    this.#jobs = jobs
    this.#claims = new ClaimLoop({
      ...shared,
      concurrency,
      jobs,
      claimingFor: () => (this.#state === 'running' ? this.#session : undefined),
      settled: (session) => {
        // A claim of the current registration went through: it works.
        if (session.generation === this.#generation) this.#registerAgain.claimed()
        this.#handoffs.claimSettled()
        this.#addressed.startNext()
      },
      failed: (session, error) => {
        this.#handoffs.claimFailed()
        // A lost connection is no refusal: it does not make the next registration wait longer.
        if (session.generation === this.#generation) this.#recycleWork(!isConnectionLoss(error))
      },
    })
    this.#addressed = new AddressedRequests({
      ...shared,
      concurrency,
      jobs,
      state: () => this.#state,
      claimReserved: () => this.#claims.reserved,
      reply: (job, result) => this.#replies.push(job, result),
    })
    this.#handoffs = new Handoffs({
      ...shared,
      concurrency,
      jobs,
      addressed: this.#addressed,
      recycle,
      state: () => this.#state,
      claimReserved: () => this.#claims.reserved,
    })
    this.#replies = new Replies({ ...shared, queue: context.responders.replies, recycle, written: (outcomes) => this.#handoffs.written(outcomes) })
    this.#lease = { ...shared, stats: this.#stats, counters: () => jobs.counters(), active: () => this.#state === 'running' || this.#state === 'draining' }
    this.#registerAgain = new RegisterAgain({
      attempt: () => this.#register(),
      wanted: () => this.#state === 'reconnecting',
      registered: () => this.#registeredAgain(),
      logger: context.logger,
    })
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
    void this.#handoffs.recover()
    this.#removeReconnectHook = this.#context.listener.onReconnect(() => {
      this.#claims.wake()
      // A request handed over while the LISTEN session was away: its NOTIFY is lost.
      void this.#handoffs.recover()
    })
    this.#leavePolls = this.#context.responders.polls.join(
      { channelId: () => this.#session?.channelId, wake: () => this.#claims.wake() },
      this.#pollIntervalMs,
    )
    this.#leaveSweeps = this.#context.responders.sweeps.join(this.#sweepIntervalMs)
    this.#leaveLeases = this.#context.responders.leases.join(this.#lease)
    this.#claims.wake()
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
    this.#leavePolls?.()
    let timer: NodeJS.Timeout | undefined
    const deadline = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, timeoutMs)
    })
    // Requests handed over meanwhile are declined (see Handoffs), until the unregister makes this responder
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
   * Immediate stop: aborts running handlers and releases the registration, which gives back the locks of
   * their requests (callers see them lost, or retried when retryable). Idempotent.
   */
  async close(): Promise<void> {
    if (this.#state === 'closed') return
    this.#state = 'closed'
    this.#leavePolls?.()
    this.#leaveSweeps?.()
    this.#leaveLeases?.()
    this.#streams.stop()
    this.#registerAgain.cancel()
    this.#jobs.stopDeadlines()
    this.#removeReconnectHook?.()
    await this.#stopListening()
    this.#jobs.abandonAll(new ClosedError('the responder closed'))
    this.#addressed.clear()
    const responderId = this.#session?.responderId
    this.#session = undefined
    const work = this.#work
    this.#work = undefined
    if (work !== undefined) await this.#context.responders.session.leave(this.#member, work, responderId, closeWaitMs)
    this.#notifyIdle()
    this.#onClosed()
    for (const hook of this.#closeHooks) await hook().catch(() => undefined)
    this.#resolveClosed()
  }

  async #register(): Promise<void> {
    const { statements, listener, host } = this.#context
    // The generation this registration gets once it is in place; handoffs before that are not its own yet.
    const mine = { generation: -1 }
    const { work, row, unlisten } = await openRegistration(
      this.#context.responders.session,
      this.#member,
      listener,
      statements,
      { channel: this.channel, host, concurrency: this.#concurrency, info: this.#info },
      {
        service: () => this.#claims.wake(),
        // Cancellations, and the credits of streamed replies (src/responder/stream.ts).
        control: (payload) => {
          if (this.#streams.credit(payload)) return
          const ids = decodeCancelledIds(payload)
          this.#jobs.cancel(ids)
          this.#addressed.cancel(ids)
        },
        inbox: (payload) => this.#handoffs.handedOff(payload, mine.generation),
      },
      closeWaitMs,
    )
    const lost = !this.#context.responders.session.isCurrent(work)
    if (lost || this.#state === 'closed' || this.#state === 'draining') {
      // Stopped while this registration was under way: nothing of it may outlive the stop. Or its session
      // was lost meanwhile (before this server was there to be told): register again.
      await Promise.all([unlisten.service(), unlisten.control(), unlisten.inbox()].map((done) => done.catch(() => undefined)))
      await this.#context.responders.session.leave(this.#member, work, row.responder_id, closeWaitMs)
      if (lost && this.#state !== 'closed' && this.#state !== 'draining') {
        throw new ConnectionError('the responders\' session ended while registering')
      }
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
    mine.generation = this.#generation
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

  /** A job ended with an outcome. */
  #jobFinished(job: Job, result: Result): void {
    this.#context.responders.sweeps.handled()
    this.#stats.record(performance.now() - job.startedAt, result)
    // Every claimed request gets an outcome written, even a cancelled one: that releases its lock.
    if (job.generation === this.#generation && this.#state !== 'closed') {
      if (job.handed) this.#handoffs.replying(job.id)
      this.#replies.push(job, result)
    }
    // Its slot goes first to a request addressed to this responder that waits for one (it has nowhere else to go).
    this.#addressed.startNext()
    this.#claims.jobFinished()
    // Someone (a drain) waits for the last handler and its reply.
    if (this.#jobs.size === 0 && this.#idleWaiters.length > 0) void this.#whenIdle().then(() => this.#notifyIdle())
  }

  /** Runs a statement on the work session; rejects with ConnectionError between sessions. */
  async #onWork<Row = Record<string, unknown>>(text: string, values: unknown[]): Promise<Row[]> {
    const work = this.#work
    if (work === undefined) throw new ConnectionError('the responder has no database session')
    return query<Row>(work, text, values)
  }

  /**
   * A statement was refused (`refused`; or failed with the connection, for a claim): what this registration
   * holds is in doubt. Releases it on purpose (its locks given back, with any a statement cut off part-way
   * left behind, its requests taken back) and carries on with a new registration on the same session; the
   * other servers of the client go on undisturbed.
   */
  #recycleWork(refused = true): void {
    const old = this.#work
    const responderId = this.#session?.responderId
    this.#work = undefined
    if (old !== undefined) void this.#context.responders.session.leave(this.#member, old, responderId, closeWaitMs)
    if (refused) this.#registerAgain.refused()
    this.#workLost()
  }

  /** The registration ended (its session lost, or released): its requests are no longer ours. Register anew. */
  #workLost(): void {
    // While reconnecting, a registration attempt is already scheduled or running (and retries on failure).
    if (this.#state === 'closed' || this.#state === 'starting' || this.#state === 'reconnecting') return
    const wasDraining = this.#state === 'draining'
    this.#generation++
    this.#session = undefined
    this.#work = undefined
    this.#jobs.abandonAll(new ConnectionError('the responder lost its database session'))
    this.#addressed.clear()
    if (wasDraining) {
      this.#notifyIdle()
      return
    }
    const { refusals, waitUpToMs } = this.#registerAgain
    this.#context.logger.warn({ refusals, waitUpToMs }, 'responder session lost; registering again')
    this.#state = 'reconnecting'
    void this.#stopListening()
    this.#registerAgain.schedule()
  }

  /** Registered again after a loss: serving resumes. */
  #registeredAgain(): void {
    this.#state = 'running'
    void this.#handoffs.recover()
    this.#context.telemetry.reconnected?.('responder', this.channel)
    this.#context.logger.info({ responderId: this.#session?.responderId }, 'responder registered again')
    this.#claims.wake()
  }

  #whenIdle(): Promise<void> {
    if (this.#jobs.size === 0) return Promise.all([this.#replies.idle(), this.#handoffs.idle()]).then(() => undefined)
    return new Promise((resolve) => this.#idleWaiters.push(resolve))
  }

  #notifyIdle(): void {
    if (this.#jobs.size > 0 && this.#state !== 'closed') return
    const waiters = this.#idleWaiters
    this.#idleWaiters = []
    for (const resolve of waiters) resolve()
  }
}
