/**
 * The caller side. `request()` queues the request; one statement (pgrr_send) inserts everything queued in
 * a turn of the event loop and NOTIFYs the responders. Replies come back as NOTIFYs on this client's own
 * channel, on the one LISTEN connection, usually with the reply inside; larger ones are fetched. Every
 * outcome read is acknowledged (deleted) in a later batch. A periodic check re-reads requests that have
 * waited long, which catches lost notifications and responders that died holding a request.
 *
 * This file is the client's lifecycle and its public methods; admission.ts admits, times out and settles
 * requests (prepare.ts checks their options), send.ts sends, reply-mux.ts applies outcomes to requests,
 * recovery-check.ts runs the periodic check, reply-listen.ts holds the reply channel's LISTEN while
 * requests are in flight; scatter.ts, services.ts and stream.ts are requestAll/ping/services and streams.
 */
import { randomBytes } from 'node:crypto'
import { hostname } from 'node:os'
import { BatchQueue } from '../batch-queue.ts'
import { assertChannelName } from '../channel-name.ts'
import { createPool, endPool, query, type Pool, type PoolQuery } from '../database.ts'
import { toPgrrError } from '../database-error.ts'
import { ClosedError } from '../errors.ts'
import { Listener } from '../listener.ts'
import { silentLogger, type Logger } from '../logger.ts'
import { choiceOption, durationOption, integerOption } from '../option-values.ts'
import type { ClientOptions, RequestOptions, ServeOptions } from '../options.ts'
import type { Handler } from '../responder/handler.ts'
import { Server } from '../responder/server.ts'
import { ClientResponders } from '../responder/client-responders.ts'
import { assertMigrated } from '../schema-version.ts'
import { renderStatements, type Statements } from '../statements.ts'
import { combineTelemetry, type Telemetry } from '../telemetry.ts'
import type { Headers } from '../wire.ts'
import { Admission } from './admission.ts'
import type { ClientContext } from './context.ts'
import type { PendingRequest, Settlement } from './pending-request.ts'
import { RecoveryCheck } from './recovery-check.ts'
import { listenDelivers, ReplyListen } from './reply-listen.ts'
import { ReplyMux } from './reply-mux.ts'
import { requestAll, type RequestAllOptions, type RequestAllResult, type ScatterContext } from './scatter.ts'
import { Sends } from './send.ts'
import { ping, readServices, type PingOptions, type PingResult, type ServiceResponder } from './services.ts'
import { RequestStream, type RequestStreamOptions, type StreamHost } from './stream.ts'
import { StreamParts } from './stream-parts.ts'
import { renderStreamStatements } from '../stream-statements.ts'

/**
 * Opens a client: verifies the schema is migrated and opens the LISTEN connection.
 * Throws `ConnectionError` if the database is unreachable, `SchemaVersionError` if not migrated.
 */
export async function connect(options: ClientOptions = {}): Promise<Client> {
  const client = new Client(options)
  try {
    await client.start()
  } catch (error) {
    await client.close()
    throw error
  }
  return client
}

/** A caller (and the home of responders started with {@link Client.serve}). Create it with {@link connect}. */
export class Client {
  readonly #options: ClientOptions
  readonly #schema: string
  readonly #logger: Logger
  readonly #telemetry: Telemetry
  readonly #pool: Pool
  #prepareStatements: boolean
  readonly #listener: Listener
  readonly #statements: Statements
  readonly #defaultTimeoutMs: number
  readonly #replyChannelSuffix = randomBytes(8).toString('hex')
  #replyChannel = ''
  #closed = false
  /** Every request from its call to its outcome. */
  readonly #requests: Admission
  readonly #servers = new Set<Server>()
  readonly #sends: Sends
  readonly #acks: BatchQueue<string>
  readonly #cancels: BatchQueue<string>
  readonly #mux: ReplyMux
  readonly #check: RecoveryCheck
  /** What this client's responders share: their session, reply queue, leases, polls and sweeps. */
  readonly #responders: ClientResponders
  #polling = false
  /** What streamed requests use of this client, made at the first one. */
  #streamHost: StreamHost | undefined
  readonly #replyListenIdleMs: number
  /** The LISTEN on the reply channel, held while requests are in flight; none in polling mode. */
  #replyListen: ReplyListen | undefined

  /** Use {@link connect}. */
  constructor(options: ClientOptions) {
    this.#options = options
    this.#schema = options.schema ?? 'public'
    this.#logger = options.logger ?? silentLogger
    this.#telemetry = combineTelemetry([options.telemetry ?? []].flat())
    this.#defaultTimeoutMs = durationOption(options.defaultTimeoutMs ?? 30000, 'defaultTimeoutMs')
    this.#requests = new Admission({
      defaultTimeoutMs: this.#defaultTimeoutMs,
      telemetry: this.#telemetry,
      maxInFlight: integerOption(options.maxInFlight ?? 10000, 'maxInFlight'),
      overflow: choiceOption(options.overflow ?? 'wait', 'overflow', ['wait', 'reject']),
      closed: () => this.#closed,
      send: (pending) => {
        this.#sends.push(pending)
        this.#check.ensure()
      },
      cancel: (id) => this.#cancels.push(id),
      track: (id, pending) => {
        this.#mux.add(id, pending)
        this.#check.ensure()
      },
      untrack: (id) => this.#mux.delete(id),
      quiet: () => this.#replyListen?.quiet(),
    })
    const checkIntervalMs = durationOption(options.checkIntervalMs ?? 1000, 'checkIntervalMs')
    const pollIntervalMs = durationOption(options.fallbackPollIntervalMs ?? 50, 'fallbackPollIntervalMs')
    this.#replyListenIdleMs = durationOption(options.replyListenIdleMs ?? 5000, 'replyListenIdleMs')
    this.#statements = renderStatements(this.#schema)
    this.#pool = createPool(options, integerOption(options.poolSize ?? 4, 'poolSize', 1000))
    this.#prepareStatements = options.prepare ?? true
    this.#listener = new Listener(options)
    // Acknowledgements gather for a while and go in one statement: nothing waits on them.
    this.#acks = new BatchQueue((ids) => this.#runQuietly(this.#statements.ack, [ids]), { maxBatch: 5000, delayMs: ackFlushMs })
    this.#cancels = new BatchQueue((ids) => this.#runQuietly(this.#statements.cancel, [ids]), { maxBatch: 2000 })
    const statements = this.#statements
    const logger = this.#logger
    const query: PoolQuery = (text, values) => this.#query(text, values)
    const settle = (pending: PendingRequest, outcome: Settlement) => this.#requests.settle(pending, outcome)
    this.#mux = new ReplyMux({ statements, logger, query, acks: this.#acks, settle })
    const mux = this.#mux
    this.#sends = new Sends({
      statements,
      telemetry: this.#telemetry,
      query,
      replyChannel: () => this.#replyChannel,
      listening: () => this.#replyListen?.ready(),
      cancels: this.#cancels,
      mux,
      settle,
    })
    this.#responders = new ClientResponders({ connection: this.#options, pool: this.#pool, poolQuery: query, statements, logger })
    this.#check = new RecoveryCheck({
      statements,
      logger,
      query,
      mux,
      checkIntervalMs,
      pollIntervalMs,
      polling: () => this.#polling,
      closed: () => this.#closed,
      idle: () => this.#idle(),
    })
  }

  /** @internal Opens the connections; {@link connect} calls it. */
  async start(): Promise<void> {
    try {
      // Unprepared: it runs once, and must work whatever the pool turns out to be.
      await assertMigrated(this.#pool, this.#schema, false)
      const [row] = await this.#query(this.#statements.notifyPrefix)
      this.#replyChannel = `${row?.prefix as string}.c${this.#replyChannelSuffix}`
      await this.#listener.start()
    } catch (error) {
      throw toPgrrError(error)
    }
    if (await listenDelivers(this.#listener, (text, values) => this.#query(text, values), `${this.#replyChannel}p`)) {
      // LISTEN comes with the first request, and goes once the client is idle (see reply-listen.ts).
      this.#replyListen = new ReplyListen({
        listener: this.#listener,
        channel: this.#replyChannel,
        onReplies: (payload) => this.#mux.onReplies(payload),
        idleMs: this.#replyListenIdleMs,
        idle: () => this.#idle(),
        logger: this.#logger,
      })
    } else {
      // No LISTEN on the reply channel then: through a transaction pooler it would stay registered on
      // whichever server connection ran it, and every reply NOTIFY would reach a connection nobody reads.
      this.#polling = true
      this.#logger.warn(
        { pollIntervalMs: this.#check.pollIntervalMs },
        'LISTEN does not deliver notifications (a transaction pooler?): polling for replies; set sessionConnectionString to a direct URL',
      )
    }
    this.#listener.onReconnect(() => {
      this.#telemetry.reconnected?.('listener')
      void this.#check.run(0)
    })
  }

  /** @internal What servers of this client share. */
  get context(): ClientContext {
    return {
      options: this.#options,
      schema: this.#schema,
      statements: this.#statements,
      listener: this.#listener,
      pool: this.#pool,
      logger: this.#logger,
      telemetry: this.#telemetry,
      host: hostname(),
      polling: this.#polling,
      responders: this.#responders,
    }
  }

  /** Requests waiting for their outcome. */
  get inFlight(): number {
    return this.#requests.inFlight
  }

  /**
   * Sends `payload` to one responder of `channel` and resolves with its reply. A string travels as text,
   * anything else as JSON; the reply comes back as the handler returned it.
   *
   * Rejects with `NoRespondersError` (nobody serves the channel; nothing stored), `TimeoutError`,
   * `RemoteError` (the handler threw), `ResponderLostError` (its session ended mid-request),
   * `CancelledError` (the signal fired), `ConnectionError`, `InvalidChannelError`, `InvalidPayloadError`,
   * `PayloadTooLargeError`, `TooManyRequestsError`, `ClosedError`.
   */
  request<Reply = unknown>(channel: string, payload: unknown, options: RequestOptions = {}): Promise<Reply> {
    return this.#request<Reply>(channel, payload, options, false)
  }

  /**
   * {@link request}, resolving with the reply and the headers its handler set (`ctx.replyHeaders`). A
   * `RemoteError` carries them too, as `headers`.
   */
  requestWithHeaders<Reply = unknown>(
    channel: string,
    payload: unknown,
    options: RequestOptions = {},
  ): Promise<{ reply: Reply; headers: Readonly<Headers> }> {
    return this.#request(channel, payload, options, true)
  }

  #request<Result>(channel: string, payload: unknown, options: RequestOptions, withHeaders: boolean): Promise<Result> {
    return new Promise<Result>((resolve, reject) => {
      this.#requests.begin(channel, payload, options, resolve as (value: unknown) => void, reject, (pending) => {
        pending.withHeaders = withHeaders
      })
    })
  }

  /**
   * Scatter-gather: sends `payload` to every live responder of `channel` (or to `options.max` of them), each
   * request addressed to its responder alone, and yields `{ responder, reply, headers }` or
   * `{ responder, error }` as each answers. The iteration ends when all have answered, or at the deadline
   * (`timeoutMs`, for all of them), when those that have not are yielded with a `TimeoutError`. The requests
   * are sent when the iteration starts. A responder that dies ends its own with `ResponderLostError`; none is
   * ever run by another responder. Breaking out of the loop cancels those not yet answered; aborting
   * `signal` does too, and the iteration then throws `CancelledError`. Throws `NoRespondersError` when no
   * responder is live, `InvalidOptionError` (a `max` out of 1 to 10,000), and what `request()` throws for a
   * bad channel or payload (`PayloadTooLargeError` above about 7,900 bytes with its headers: each request
   * travels inside its NOTIFY). Not counted in `maxInFlight`.
   */
  requestAll<Reply = unknown>(channel: string, payload: unknown, options: RequestAllOptions = {}): AsyncGenerator<RequestAllResult<Reply>, void, undefined> {
    return requestAll<Reply>(this.#scatterContext(), channel, payload, options)
  }

  /**
   * Pings every live responder of `channel`: each answers itself, without its handler and whatever its
   * handlers are doing. Resolves with each one's round trip (or error), in the order they answered.
   */
  ping(channel: string, options: PingOptions = {}): Promise<PingResult[]> {
    return ping(this.#scatterContext(), channel, options)
  }

  /**
   * The live responders of `channel` (of every channel when omitted) as they describe themselves:
   * description, version, JSON Schemas, host, pid, concurrency, start, and their handler statistics.
   */
  services(channel?: string): Promise<ServiceResponder[]> {
    if (this.#closed) return Promise.reject(new ClosedError('the client is closed'))
    return readServices((text, values) => this.#query(text, values), this.#statements, channel)
  }

  #scatterContext(): ScatterContext {
    return {
      statements: this.#statements,
      query: (text, values) => this.#query(text, values),
      replyChannel: () => this.#replyChannel,
      listening: () => this.#replyListen?.ready(),
      defaultTimeoutMs: this.#defaultTimeoutMs,
      closed: () => this.#closed,
      track: (pending) => this.#requests.track(pending),
      giveUp: (pending, error) => this.#requests.giveUp(pending, error),
    }
  }

  /**
   * Sends `payload` to one responder of `channel`, whose handler streams its reply (`ctx.send(part)`, or an
   * async generator): iterate the parts with `for await`, in order, each once; the final reply is the
   * stream's `reply`, and the iteration ends with it (or throws its error). Breaking out of the loop, or
   * the signal, cancels the handler. See {@link RequestStream} and docs/streams.md.
   */
  requestStream<Part = unknown, Reply = unknown>(channel: string, payload: unknown, options: RequestStreamOptions = {}): RequestStream<Part, Reply> {
    this.#streamHost ??= this.#makeStreamHost()
    return new RequestStream<Part, Reply>(this.#streamHost, channel, payload, options)
  }

  /** What streamed requests use of this client (src/client/stream.ts). */
  #makeStreamHost(): StreamHost {
    const statements = renderStreamStatements(this.#schema)
    const query: PoolQuery = (text, values) => this.#query(text, values)
    return {
      statements,
      query,
      logger: this.#logger,
      polling: this.#polling,
      parts: new StreamParts(this.#listener, this.#logger, () => this.#replyChannel, query, statements),
      begin: (channel, payload, options, resolve, reject, setup) => this.#requests.begin(channel, payload, options, resolve, reject, setup),
      giveUp: (pending, error) => this.#requests.giveUp(pending, error),
      rearm: (pending, timeoutMs) => this.#requests.rearm(pending, timeoutMs, `no part within ${timeoutMs} ms`),
    }
  }

  /** Starts a responder for `channel` sharing this client's LISTEN connection. See {@link Server}. */
  async serve<Payload = unknown, Reply = unknown>(
    channel: string,
    handler: Handler<Payload, Reply>,
    options: ServeOptions = {},
  ): Promise<Server> {
    if (this.#closed) throw new ClosedError('the client is closed')
    assertChannelName(channel)
    const server = new Server(this.context, channel, handler as Handler, options, () => this.#servers.delete(server))
    this.#servers.add(server)
    try {
      await server.start()
    } catch (error) {
      this.#servers.delete(server)
      await server.close()
      throw error
    }
    return server
  }

  /**
   * Closes the client: its servers close (use their `drain()` first for a graceful stop), requests still
   * waiting reject with `ClosedError` and are cancelled. Idempotent.
   */
  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    this.#check.stop()
    this.#replyListen?.close()
    this.#responders.session.close()
    await Promise.all([...this.#servers].map((server) => server.close()))
    const error = new ClosedError('the client was closed before the reply arrived')
    this.#requests.giveUpAll(error)
    // Cancellations and acknowledgements are best effort: a stuck database must not hold close() up.
    await Promise.race([
      Promise.all([this.#sends.idle(), this.#cancels.idle(), this.#acks.idle()]),
      new Promise((resolve) => setTimeout(resolve, 5000).unref()),
    ])
    await this.#listener.close()
    // Everything this client waits for is settled by now; a short timeout keeps a broken connection from
    // holding close() up (postgres.js waits out the whole timeout after a connection error).
    await endPool(this.#pool)
  }

  /** Nothing to wait for: no request of any kind unsettled (scatter-gather's and streams' included), none being sent. */
  #idle(): boolean {
    return this.#requests.unsettled === 0 && this.#sends.size === 0
  }

  async #query<Row = Record<string, unknown>>(text: string, values: unknown[] = []): Promise<Row[]> {
    if (!this.#prepareStatements) return query<Row>(this.#pool, text, values, false)
    try {
      return await query<Row>(this.#pool, text, values, true)
    } catch (error) {
      // duplicate_prepared_statement / invalid_sql_statement_name: the pool's sessions are shared behind
      // our back (a transaction pooler). Named statements cannot work there; carry on without them.
      const code = (error as { code?: string }).code
      if (code !== '42P05' && code !== '26000') throw error
      this.#prepareStatements = false
      this.#logger.warn({ code }, 'prepared statements do not survive on this connection (a transaction pooler?): continuing without them; set prepare: false')
      return query<Row>(this.#pool, text, values, false)
    }
  }

  async #runQuietly(statement: string, parameters: unknown[]): Promise<void> {
    try {
      await this.#query(statement, parameters)
    } catch (error) {
      // Left-over rows are swept at their deadline; nothing waits on this.
      this.#logger.warn({ err: error }, 'cleanup statement failed')
    }
  }
}

/** How long acknowledgements gather before they are sent, in one statement. */
const ackFlushMs = 25
