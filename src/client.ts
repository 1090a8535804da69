/**
 * The caller side. `request()` queues the request; one statement (pgrr_send) inserts everything queued in
 * a turn of the event loop and NOTIFYs the responders. Replies come back as NOTIFYs on this client's own
 * channel, on the one LISTEN connection, usually with the reply inside; larger ones are fetched. Every
 * outcome read is acknowledged (deleted) in a later batch. A periodic check re-reads requests that have
 * waited long, which catches lost notifications and responders that died holding a request.
 */
import { randomBytes } from 'node:crypto'
import { hostname } from 'node:os'
import { BatchQueue } from './batch-queue.ts'
import { assertChannelName } from './channel-name.ts'
import { createPool, endPool, query, type Pool } from './database.ts'
import {
  CancelledError,
  ClosedError,
  ConnectionError,
  InvalidOptionError,
  InvalidChannelError,
  InvalidPayloadError,
  NoRespondersError,
  PayloadTooLargeError,
  PgrrError,
  RemoteError,
  responderDeadlineCode,
  ResponderLostError,
  TimeoutError,
  TooManyRequestsError,
} from './errors.ts'
import { Listener } from './listener.ts'
import { silentLogger, type Logger } from './logger.ts'
import { assertMigrated } from './schema-version.ts'
import type { ClientOptions, RequestOptions, ServeOptions } from './options.ts'
import { choiceOption, durationOption, integerOption } from './option-values.ts'
import { decodePayload, encodePayload } from './payload.ts'
import type { ClientContext } from './client/context.ts'
import type { Handler } from './responder/handler.ts'
import { Server } from './responder/server.ts'
import { renderStatements, type Statements } from './statements.ts'
import { toPgrrError } from './database-error.ts'
import { combineTelemetry, type RequestObservation, type Telemetry } from './telemetry.ts'
import { decodeReplies, isReplyEntry, type Headers, type ReplyEntry } from './wire.ts'

interface PendingRequest {
  channel: string
  payload: string
  json: boolean
  headers: string | null
  maxAttempts: number | null
  timeoutMs: number
  /** Set once pgrr_send returned it. */
  id?: string
  /** When request() was called, by performance.now(): a clock no adjustment of the system's moves. */
  startedAt: number
  /** Counted in the client's in-flight requests. */
  admitted: boolean
  settled: boolean
  resolve: (value: unknown) => void
  reject: (error: Error) => void
  timer?: NodeJS.Timeout
  signal?: AbortSignal
  onAbort?: () => void
  observation?: RequestObservation
  /** Resolve with `{ reply, headers }` rather than the reply alone. */
  withHeaders?: boolean
}

interface SendRow {
  ord: number
  id: string | null
  status: string
}

interface FetchedRow {
  id: string
  state: string
  reply: string | null
  reply_json: boolean | null
  reply_headers: Headers | null
  error_code: string | null
  error_message: string | null
}

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
  readonly #maxInFlight: number
  readonly #overflow: 'wait' | 'reject'
  readonly #checkIntervalMs: number
  readonly #fallbackPollIntervalMs: number
  readonly #replyChannelSuffix = randomBytes(8).toString('hex')
  #replyChannel = ''
  #closed = false
  #inFlight = 0
  /** Requests waiting for a slot (maxInFlight reached, overflow 'wait'), oldest first. */
  readonly #slotWaiters: PendingRequest[] = []
  /** Every request not yet settled: queued for a slot, being sent, or waiting for its outcome. */
  readonly #unsettled = new Set<PendingRequest>()
  /** Requests with an id, by id. */
  readonly #byId = new Map<string, PendingRequest>()
  /** Replies that arrived before pgrr_send returned their id (the two travel on different sessions). */
  readonly #early = new Map<string, { entry: ReplyEntry; at: number }>()
  readonly #servers = new Set<Server>()
  readonly #sends: BatchQueue<PendingRequest>
  readonly #acks: BatchQueue<string>
  readonly #cancels: BatchQueue<string>
  readonly #fetches: BatchQueue<string>
  #checkTimer: NodeJS.Timeout | undefined
  #checking = false
  #polling = false
  #reapedAt = 0

  /** Use {@link connect}. */
  constructor(options: ClientOptions) {
    this.#options = options
    this.#schema = options.schema ?? 'public'
    this.#logger = options.logger ?? silentLogger
    this.#telemetry = combineTelemetry([options.telemetry ?? []].flat())
    this.#defaultTimeoutMs = durationOption(options.defaultTimeoutMs ?? 30000, 'defaultTimeoutMs')
    this.#maxInFlight = integerOption(options.maxInFlight ?? 10000, 'maxInFlight')
    this.#overflow = choiceOption(options.overflow ?? 'wait', 'overflow', ['wait', 'reject'])
    this.#checkIntervalMs = durationOption(options.checkIntervalMs ?? 1000, 'checkIntervalMs')
    this.#fallbackPollIntervalMs = durationOption(options.fallbackPollIntervalMs ?? 50, 'fallbackPollIntervalMs')
    this.#statements = renderStatements(this.#schema)
    this.#pool = createPool(options, integerOption(options.poolSize ?? 4, 'poolSize', 1000))
    this.#prepareStatements = options.prepare ?? true
    this.#listener = new Listener(options)
    this.#sends = new BatchQueue((batch) => this.#flushSends(batch), { maxBatch: 500, maxConcurrent: 2 })
    // Acknowledgements ride along with a send once they have gathered for a while (each send that carries
    // some runs one more statement, so one in many does); otherwise they go on their own.
    this.#acks = new BatchQueue((ids) => this.#runQuietly(this.#statements.ack, [ids]), { maxBatch: 5000, delayMs: ackFlushMs })
    this.#cancels = new BatchQueue((ids) => this.#runQuietly(this.#statements.cancel, [ids]), { maxBatch: 2000 })
    this.#fetches = new BatchQueue((ids) => this.#flushFetches(ids), { maxBatch: 500 })
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
    if (await this.#listenDelivers()) {
      await this.#listener.listen(this.#replyChannel, (payload) => this.#onReplies(payload))
    } else {
      // No LISTEN on the reply channel then: through a transaction pooler it would stay registered on
      // whichever server connection ran it, and every reply NOTIFY would reach a connection nobody reads.
      this.#polling = true
      this.#logger.warn(
        { pollIntervalMs: this.#pollIntervalMs() },
        'LISTEN does not deliver notifications (a transaction pooler?): polling for replies; set sessionConnectionString to a direct URL',
      )
    }
    this.#listener.onReconnect(() => {
      this.#telemetry.reconnected?.('listener')
      void this.#check(0)
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
      poolQuery: (text, values) => this.#query(text, values),
      logger: this.#logger,
      telemetry: this.#telemetry,
      host: hostname(),
      polling: this.#polling,
    }
  }

  /** Requests waiting for their outcome. */
  get inFlight(): number {
    return this.#inFlight
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
      if (this.#closed) return reject(new ClosedError('the client is closed'))
      let pending: PendingRequest
      try {
        pending = this.#prepare(channel, payload, options, resolve as (value: unknown) => void, reject)
      } catch (error) {
        return reject(error)
      }
      pending.withHeaders = withHeaders
      // Refused before it started: through #settle, so that telemetry sees the end of what it saw begin.
      if (options.signal?.aborted) return this.#settle(pending, abortError(options.signal))
      if (this.#inFlight >= this.#maxInFlight && this.#overflow === 'reject') {
        return this.#settle(pending, new TooManyRequestsError(this.#maxInFlight))
      }
      this.#arm(pending)
      this.#unsettled.add(pending)
      if (this.#inFlight < this.#maxInFlight) this.#admit(pending)
      else this.#slotWaiters.push(pending)
    })
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
    clearInterval(this.#checkTimer)
    await Promise.all([...this.#servers].map((server) => server.close()))
    const error = new ClosedError('the client was closed before the reply arrived')
    this.#slotWaiters.length = 0
    for (const pending of [...this.#unsettled]) this.#giveUp(pending, error)
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

  #prepare(
    channel: string,
    payload: unknown,
    options: RequestOptions,
    resolve: (value: unknown) => void,
    reject: (error: Error) => void,
  ): PendingRequest {
    assertChannelName(channel)
    const timeoutMs = durationOption(options.timeoutMs ?? this.#defaultTimeoutMs, 'timeoutMs')
    const maxAttempts = options.maxAttempts === undefined ? null : integerOption(options.maxAttempts, 'maxAttempts', 100)
    const encoded = encodePayload(payload)
    let headers = options.headers
    let observation: RequestObservation | undefined
    if (this.#telemetry.requestStarted !== undefined) {
      headers = { ...headers }
      observation = this.#telemetry.requestStarted({ channel, headers })
    }
    return {
      channel,
      payload: encoded.text,
      json: encoded.json,
      headers: encodeHeaders(headers),
      observation,
      maxAttempts,
      timeoutMs,
      startedAt: performance.now(),
      admitted: false,
      settled: false,
      resolve,
      reject,
      signal: options.signal,
    }
  }

  /** Starts the timeout and listens to the signal; both run from the call on, queueing included. */
  #arm(pending: PendingRequest): void {
    pending.timer = setTimeout(() => this.#giveUp(pending, new TimeoutError(pending.timeoutMs)), pending.timeoutMs)
    if (pending.signal !== undefined) {
      const signal = pending.signal
      pending.onAbort = () => this.#giveUp(pending, abortError(signal))
      signal.addEventListener('abort', pending.onAbort, { once: true })
    }
  }

  #admit(pending: PendingRequest): void {
    pending.admitted = true
    this.#inFlight++
    this.#sends.push(pending)
    this.#ensureChecking()
  }

  /** The caller stops waiting: settle now, cancel in the database once the id is known. */
  #giveUp(pending: PendingRequest, error: PgrrError): void {
    if (pending.settled) return
    this.#settle(pending, error)
    if (pending.id !== undefined) this.#cancels.push(pending.id)
  }

  #settle(pending: PendingRequest, outcome: Error | { value: unknown }): void {
    if (pending.settled) return
    pending.settled = true
    clearTimeout(pending.timer)
    if (pending.onAbort !== undefined) pending.signal?.removeEventListener('abort', pending.onAbort)
    this.#unsettled.delete(pending)
    if (pending.id !== undefined) this.#byId.delete(pending.id)
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

  async #flushSends(batch: PendingRequest[]): Promise<void> {
    const live = batch.filter((pending) => !pending.settled)
    if (live.length === 0) return
    const acks = this.#acks.take(undefined, ackRideAfterMs)
    let rows: SendRow[]
    try {
      if (live.length === 1) {
        // One request: the scalar statement, cheaper than the batch for it (see pgrr_send_one).
        const [pending] = live as [PendingRequest]
        const [row] = await this.#query<Omit<SendRow, 'ord'>>(this.#statements.sendOne, [
          this.#replyChannel,
          pending.channel,
          pending.payload,
          pending.json,
          remainingMs(pending),
          pending.headers,
          pending.maxAttempts,
          acks,
        ])
        rows = row === undefined ? [] : [{ ...row, ord: 1 }]
      } else {
        rows = await this.#query<SendRow>(this.#statements.send, [
          this.#replyChannel,
          live.map((p) => p.channel),
          live.map((p) => p.payload),
          live.map((p) => p.json),
          live.map(remainingMs),
          live.map((p) => p.headers),
          live.map((p) => p.maxAttempts),
          acks,
        ])
      }
    } catch (error) {
      // The outcome of the insert is unknown: each request ends here, with a typed error. The
      // acknowledgements it carried were rolled back with it: they go out again.
      for (const id of acks) this.#acks.push(id)
      const typed = toPgrrError(error)
      for (const pending of live) this.#settle(pending, typed)
      return
    }
    this.#telemetry.sent?.(live.length)
    for (const row of rows) {
      const pending = live[row.ord - 1]
      if (pending === undefined) continue
      if (row.status !== 'ok' || row.id === null) {
        this.#settle(pending, sendStatusError(row.status, pending.channel))
        continue
      }
      pending.id = row.id
      if (pending.settled) {
        // It timed out or was aborted while being inserted.
        this.#cancels.push(row.id)
        continue
      }
      this.#byId.set(row.id, pending)
      const early = this.#early.get(row.id)
      if (early !== undefined) {
        this.#early.delete(row.id)
        this.#applyEntry(early.entry)
      }
    }
  }

  #onReplies(payload: string): void {
    const entries = decodeReplies(payload)
    if (entries === undefined) {
      this.#logger.error({ bytes: payload.length }, 'unreadable reply notification')
      return
    }
    let malformed = 0
    for (const entry of entries) {
      // Skipped: its request is read from the table at the next check, like one whose NOTIFY was lost.
      if (!isReplyEntry(entry)) malformed++
      else if (this.#byId.has(entry[0])) this.#applyEntry(entry)
      else this.#early.set(entry[0], { entry, at: Date.now() })
    }
    if (malformed > 0) this.#logger.error({ malformed }, 'ignored malformed reply entries')
  }

  #applyEntry(entry: ReplyEntry): void {
    const pending = this.#byId.get(entry[0])
    if (pending === undefined) return
    switch (entry[1]) {
      case 'r':
        if (entry.length < 4) return this.#fetches.push(entry[0])
        this.#acks.push(entry[0])
        return this.#settleDecoded(pending, entry[3] as string, entry[2], entry[4])
      case 'f':
        if (entry.length < 4) return this.#fetches.push(entry[0])
        this.#acks.push(entry[0])
        return this.#settle(pending, remoteError(entry[2], entry[3] as string, pending.timeoutMs, entry[4]))
      case 'l':
        this.#acks.push(entry[0])
        return this.#settle(pending, new ResponderLostError())
    }
  }

  #settleDecoded(pending: PendingRequest, text: string, json: boolean | null, headers: Headers | null | undefined): void {
    let value: unknown
    try {
      value = decodePayload(text, json)
    } catch (error) {
      return this.#settle(pending, new InvalidPayloadError('the reply is not valid JSON', { cause: error }))
    }
    this.#settle(pending, { value: pending.withHeaders ? { reply: value, headers: headers ?? {} } : value })
  }

  async #flushFetches(ids: string[]): Promise<void> {
    try {
      const rows = await this.#query<FetchedRow>(this.#statements.fetch, [ids])
      this.#applyRows(ids, rows, false)
    } catch (error) {
      this.#logger.warn({ err: error }, 'fetching replies failed; the periodic check retries')
    }
  }

  /** Settles requests from rows read from the table. `missingIsLost`: ids without a row failed. */
  #applyRows(ids: string[], rows: FetchedRow[], missingIsLost: boolean): void {
    const seen = new Set<string>()
    for (const row of rows) {
      seen.add(row.id)
      const pending = this.#byId.get(row.id)
      if (pending === undefined) continue
      if (row.state === 'replied') {
        this.#acks.push(row.id)
        this.#settleDecoded(pending, row.reply ?? '', row.reply_json, row.reply_headers)
      } else if (row.state === 'failed') {
        this.#acks.push(row.id)
        this.#settle(pending, remoteError(row.error_code, row.error_message ?? '', pending.timeoutMs, row.reply_headers))
      } else if (row.state === 'lost') {
        this.#acks.push(row.id)
        this.#settle(pending, new ResponderLostError())
      }
    }
    if (!missingIsLost) return
    for (const id of ids) {
      const pending = this.#byId.get(id)
      if (pending !== undefined && !seen.has(id)) {
        this.#settle(pending, new ConnectionError('the request no longer exists in the database (was the server restarted?)'))
      }
    }
  }

  /** NOTIFYs itself through the pool and reports whether the LISTEN connection received it. */
  async #listenDelivers(): Promise<boolean> {
    const channel = `${this.#replyChannel}p`
    let received!: () => void
    const arrived = new Promise<boolean>((resolve) => (received = () => resolve(true)))
    const unlisten = await this.#listener.listen(channel, () => received())
    let timer: NodeJS.Timeout | undefined
    try {
      await this.#query('select pg_notify($1, $2)', [channel, 'probe'])
      // Generous: a busy database must not pass for a pooler (polling mode cannot serve and is slower).
      return await Promise.race([arrived, new Promise<boolean>((resolve) => (timer = setTimeout(resolve, 3000, false)))])
    } catch (error) {
      throw toPgrrError(error)
    } finally {
      clearTimeout(timer)
      await unlisten()
    }
  }

  #pollIntervalMs(): number {
    return this.#fallbackPollIntervalMs
  }

  #ensureChecking(): void {
    if (this.#checkTimer !== undefined) return
    // Polling mode reads every request in flight, often; otherwise only those waiting longer than the interval.
    const intervalMs = this.#polling ? this.#pollIntervalMs() : this.#checkIntervalMs
    this.#checkTimer = setInterval(() => void this.#check(this.#polling ? 0 : intervalMs), intervalMs)
    this.#checkTimer.unref()
  }

  /**
   * Re-reads requests waiting longer than `minAgeMs`: replies whose NOTIFY was missed are taken, and
   * claims whose responder session is gone are reaped (lost, or back to pending when retryable).
   */
  async #check(minAgeMs: number): Promise<void> {
    this.#purgeEarly()
    if (this.#checking || this.#closed) return
    if (this.#byId.size === 0) {
      if (this.#inFlight === 0 && this.#sends.size === 0 && this.#checkTimer !== undefined) {
        clearInterval(this.#checkTimer)
        this.#checkTimer = undefined
      }
      return
    }
    const now = performance.now()
    const ids = [...this.#byId.values()].filter((p) => now - p.startedAt >= minAgeMs).map((p) => p.id as string)
    if (ids.length === 0) return
    this.#checking = true
    try {
      // Reaping tests a lock per claimed request: at most once per checkIntervalMs, even when polling.
      // Half the interval: a timer tick that lands a little early must not push detection a whole interval.
      if (now - this.#reapedAt >= this.#checkIntervalMs / 2) {
        this.#reapedAt = now
        await this.#query(this.#statements.reap, [ids])
      }
      const rows = await this.#query<FetchedRow>(this.#statements.fetch, [ids])
      this.#applyRows(ids, rows, true)
    } catch (error) {
      this.#logger.warn({ err: error }, 'checking requests in flight failed')
    } finally {
      this.#checking = false
    }
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

  #purgeEarly(): void {
    const limit = Date.now() - 60_000
    for (const [id, early] of this.#early) if (early.at < limit) this.#early.delete(id)
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

/**
 * What is left of a request's timeout as it is sent: the time it waited for a slot or a send counts, so
 * that the responder's deadline (`ctx.deadline`, and the row's) is the caller's own.
 */
function remainingMs(pending: PendingRequest): number {
  return Math.min(pending.timeoutMs, Math.max(1, Math.ceil(pending.timeoutMs - (performance.now() - pending.startedAt))))
}

/** Acknowledgements older than this ride along with the next send. */
const ackRideAfterMs = 10
/** Acknowledgements that no send took by then are sent on their own. */
const ackFlushMs = 25

function encodeHeaders(headers: Record<string, string> | undefined): string | null {
  if (headers === undefined) return null
  for (const [key, value] of Object.entries(headers)) {
    if (typeof value !== 'string') throw new InvalidOptionError(`header ${JSON.stringify(key)} must be a string`)
  }
  return encodePayload(headers, 'headers').text
}

/** A failure written by a responder; its deadline code means the request reached its deadline there. */
function remoteError(code: string | null, message: string, timeoutMs: number, headers?: Headers | null): PgrrError {
  if (code === responderDeadlineCode) return new TimeoutError(timeoutMs)
  return new RemoteError(code ?? 'HANDLER_ERROR', message, headers ?? {})
}

function abortError(signal: AbortSignal): CancelledError {
  return new CancelledError('the request was cancelled', { cause: signal.reason })
}

function sendStatusError(status: string, channel: string): PgrrError {
  switch (status) {
    case 'no_responders':
      return new NoRespondersError(channel)
    case 'too_large':
      return new PayloadTooLargeError(channel)
    case 'invalid_channel':
      return new InvalidChannelError(channel)
    case 'invalid_headers':
      // jsonb cannot hold \u0000 or a lone surrogate, in keys or values.
      return new InvalidOptionError('headers must be strings PostgreSQL can store: no NUL character, no lone UTF-16 surrogate')
    default:
      return new InvalidPayloadError(`the request was refused (${status})`)
  }
}
