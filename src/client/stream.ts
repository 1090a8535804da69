/**
 * Streamed replies, the caller's side (sql/protocol/14_stream.sql): `client.requestStream()` is a request
 * (sent with pgrr_stream_open, settled by the client as any other: reply, error, timeout, cancellation,
 * responder lost) whose parts arrive before its outcome, on the client's part channel (one per client,
 * LISTENed on while a stream is open), small ones inside the NOTIFY and large ones read from the table.
 * The reader takes them in order, each once; what it consumed is acknowledged (pgrr_stream_ack) every
 * half window, which gives the handler room for more. Once the outcome is known, the parts not yet
 * received are read and the stream deleted (pgrr_stream_finish): then the iteration ends with the reply,
 * or throws the error, after the last part. The part channel is stream-parts.ts.
 */
import { toPgrrError } from '../database-error.ts'
import type { PoolQuery } from '../database.ts'
import { CancelledError, ClosedError, ConnectionError, InvalidPayloadError, type PgrrError } from '../errors.ts'
import type { Logger } from '../logger.ts'
import { durationOption, integerOption } from '../option-values.ts'
import type { RequestOptions } from '../options.ts'
import { decodePayload } from '../payload.ts'
import type { StreamStatements } from '../stream-statements.ts'
import type { PartEntry } from '../stream-wire.ts'
import type { PendingRequest, StreamSpec } from './pending-request.ts'
import type { StreamParts } from './stream-parts.ts'

/** Options of `client.requestStream()`. A stream is always at most once: a retry would repeat its parts. */
export interface RequestStreamOptions extends Omit<RequestOptions, 'maxAttempts'> {
  /**
   * Most parts the handler may have sent that this reader has not consumed yet: beyond, the handler's
   * `ctx.send()` waits. Bounds what a slow reader holds in memory. @default 64
   */
  maxPartsInFlight?: number
  /**
   * Each part the reader takes pushes the deadline to at least this long from then: a stream may run past
   * `timeoutMs` as long as parts keep coming. The extension is sent with the acknowledgements, at most
   * four times per `idleTimeoutMs`, so the deadline may come up to a quarter of it sooner. @default none:
   * `timeoutMs` covers the whole stream
   */
  idleTimeoutMs?: number
}

/** What a stream uses of its client (see Client.requestStream). */
export interface StreamHost {
  readonly statements: StreamStatements
  readonly query: PoolQuery
  readonly logger: Logger
  readonly parts: StreamParts
  /** LISTEN does not deliver (a transaction pooler): streams cannot run. */
  readonly polling: boolean
  begin(
    channel: string,
    payload: unknown,
    options: RequestOptions,
    resolve: (value: unknown) => void,
    reject: (error: Error) => void,
    setup: (pending: PendingRequest) => void,
  ): PendingRequest | undefined
  giveUp(pending: PendingRequest, error: PgrrError): void
  /** The client stops waiting `timeoutMs` from now (and no sooner). */
  rearm(pending: PendingRequest, timeoutMs: number): void
}

/** A part as stored: its text and whether it is JSON; null while only announced (read it from the table). */
type StoredPart = { text: string; json: boolean } | null

interface PartRow {
  n: number
  part: string
  part_json: boolean
}

/**
 * A streamed reply: an async iterable of its parts, in order, each once. The iteration ends with the final
 * reply (also `reply`), or throws its error (`RemoteError`, `ResponderLostError` after the parts the
 * responder wrote, `TimeoutError`, `CancelledError`, and the errors of `request()`). Breaking out of the
 * loop cancels the handler. Iterate it once.
 */
export class RequestStream<Part = unknown, Reply = unknown> implements AsyncIterableIterator<Part> {
  /** The final reply, once every part was received; rejects with the stream's error. */
  readonly reply: Promise<Reply>
  readonly #host: StreamHost
  readonly #maxPartsInFlight: number
  readonly #idleTimeoutMs: number | undefined
  #pending: PendingRequest | undefined
  #id: string | undefined
  readonly #parts = new Map<number, StoredPart>()
  /** Parts 1 to #contiguous have arrived with their text. */
  #contiguous = 0
  #highest = 0
  #yielded = 0
  #acked = 0
  /** Until when the deadline was last extended (performance.now()). */
  #extendedTo = 0
  /** The request's outcome is known: the stream is being finished. */
  #ending = false
  /** Finished: every part is in #parts, this is what follows them. */
  #outcome: { value: unknown } | { error: Error } | undefined
  /** The reader is done (broke out, or read the end). */
  #stopped = false
  /** Calls of next() waiting for a part or the end (one, unless next() is called again before it settles). */
  readonly #waiting = new Set<() => void>()
  #fetching = false
  #fetchAgain = false
  #listening = false
  #resolveReply!: (value: Reply) => void
  #rejectReply!: (error: Error) => void

  /** @internal Use `client.requestStream()`. */
  constructor(host: StreamHost, channel: string, payload: unknown, options: RequestStreamOptions) {
    this.#host = host
    this.reply = new Promise<Reply>((resolve, reject) => {
      this.#resolveReply = resolve
      this.#rejectReply = reject
    })
    // Read through the iteration too: unobserved here, it must not count as an unhandled rejection.
    this.reply.catch(() => undefined)
    let maxPartsInFlight = 64
    let idleTimeoutMs: number | undefined
    try {
      maxPartsInFlight = integerOption(options.maxPartsInFlight ?? 64, 'maxPartsInFlight', 100_000)
      idleTimeoutMs = options.idleTimeoutMs === undefined ? undefined : durationOption(options.idleTimeoutMs, 'idleTimeoutMs')
      if (host.polling) throw new ConnectionError('streamed replies need LISTEN (a transaction pooler does not deliver it): set sessionConnectionString')
    } catch (error) {
      this.#maxPartsInFlight = maxPartsInFlight
      this.#end({ error: toPgrrError(error) })
      return
    }
    this.#maxPartsInFlight = maxPartsInFlight
    this.#idleTimeoutMs = idleTimeoutMs
    const { maxPartsInFlight: _window, idleTimeoutMs: _idle, ...requestOptions } = options
    void this.#start(channel, payload, requestOptions)
  }

  [Symbol.asyncIterator](): this {
    return this
  }

  async next(): Promise<IteratorResult<Part, Reply>> {
    for (;;) {
      if (this.#stopped) return { done: true, value: undefined as Reply }
      const part = this.#parts.get(this.#yielded + 1)
      if (part != null) {
        this.#parts.delete(this.#yielded + 1)
        this.#yielded++
        this.#consumed()
        let value: unknown
        try {
          value = decodePayload(part.text, part.json)
        } catch (error) {
          throw new InvalidPayloadError('a part is not valid JSON', { cause: error })
        }
        return { done: false, value: value as Part }
      }
      const outcome = this.#outcome
      if (outcome !== undefined) {
        this.#stopped = true
        if ('error' in outcome) throw outcome.error
        return { done: true, value: outcome.value as Reply }
      }
      await new Promise<void>((resolve) => this.#waiting.add(resolve))
    }
  }

  /** The reader stops (a `break` out of `for await`): the handler is cancelled, the stream deleted. */
  async return(): Promise<IteratorResult<Part, Reply>> {
    this.#stop()
    return { done: true, value: undefined as Reply }
  }

  async throw(error?: unknown): Promise<IteratorResult<Part, Reply>> {
    this.#stop()
    throw error
  }

  /** @internal A part entry for this stream arrived on the part channel. */
  onEntry(entry: PartEntry): void {
    const n = entry[2]
    if (this.#ending || n <= this.#contiguous || this.#parts.get(n) != null) return
    this.#parts.set(n, entry.length === 5 ? { text: entry[4] as string, json: entry[3] as boolean } : null)
    this.#highest = Math.max(this.#highest, n)
    this.#advance()
    // A part too large for its NOTIFY, or a gap (a NOTIFY missed): read them from the table.
    if (this.#highest > this.#contiguous) this.fetch()
    this.#wake()
  }

  /** @internal Reads the parts after those received from the table (a reconnect may have lost NOTIFYs). */
  fetch(): void {
    const id = this.#id
    if (id === undefined || this.#ending) return
    if (this.#fetching) {
      this.#fetchAgain = true
      return
    }
    this.#fetching = true
    void this.#host
      .query<PartRow>(this.#host.statements.fetch, [id, this.#contiguous])
      .then((rows) => this.#merge(rows))
      .catch((error: unknown) => this.#host.logger.warn({ err: error, id }, 'reading stream parts failed; read again with the next part'))
      .finally(() => {
        this.#fetching = false
        if (this.#fetchAgain) {
          this.#fetchAgain = false
          this.fetch()
        }
      })
  }

  async #start(channel: string, payload: unknown, options: RequestOptions): Promise<void> {
    try {
      // Parts may come as soon as the request is sent: the part channel is listened on first.
      await this.#host.parts.acquire()
      this.#listening = true
    } catch (error) {
      return this.#end({ error: toPgrrError(error) })
    }
    if (this.#stopped) return this.#end({ error: new CancelledError('the stream was closed by its reader') })
    const spec: StreamSpec = {
      open: (pending, replyChannel, timeoutMs) => this.#open(pending, replyChannel, timeoutMs),
      opened: (id) => this.#opened(id),
    }
    this.#pending = this.#host.begin(
      channel,
      payload,
      options,
      (value) => void this.#settled({ value }),
      (error) => void this.#settled({ error: toPgrrError(error) }),
      (pending) => {
        pending.stream = spec
      },
    )
  }

  async #open(pending: PendingRequest, replyChannel: string, timeoutMs: number): Promise<{ id: string | null; status: string }> {
    const [row] = await this.#host.query<{ id: string | null; status: string }>(this.#host.statements.open, [
      replyChannel,
      this.#host.parts.channel,
      pending.channel,
      pending.payload,
      pending.json,
      timeoutMs,
      pending.headers,
      this.#maxPartsInFlight,
    ])
    return row ?? { id: null, status: 'unknown' }
  }

  #opened(id: string): void {
    this.#id = id
    // Given up on before its id was known: what was stored goes.
    if (this.#ending) return void this.#delete(id, true)
    this.#host.parts.register(id, this)
  }

  /** The request's outcome: after the parts the responder wrote, unless the reader gave up. */
  async #settled(outcome: { value: unknown } | { error: Error }): Promise<void> {
    if (this.#ending) return
    this.#ending = true
    const id = this.#id
    const givenUp = this.#stopped || ('error' in outcome && (outcome.error instanceof CancelledError || outcome.error instanceof ClosedError))
    if (id === undefined || givenUp) {
      this.#parts.clear()
      if (id !== undefined) void this.#delete(id, true)
      return this.#end(outcome)
    }
    try {
      const rows = await this.#host.query<PartRow>(this.#host.statements.finish, [id, this.#contiguous, false])
      this.#merge(rows)
    } catch (error) {
      // Parts may be missing: the reply cannot be given as the stream's end.
      return this.#end({ error: toPgrrError(error) })
    }
    this.#end(outcome)
  }

  #end(outcome: { value: unknown } | { error: Error }): void {
    if (this.#outcome !== undefined) return
    this.#ending = true
    this.#outcome = outcome
    if ('error' in outcome) this.#rejectReply(outcome.error)
    else this.#resolveReply(outcome.value as Reply)
    if (this.#id !== undefined) this.#host.parts.unregister(this.#id)
    if (this.#listening) {
      this.#listening = false
      this.#host.parts.release()
    }
    this.#wake()
  }

  #stop(): void {
    if (this.#stopped) return
    this.#stopped = true
    this.#parts.clear()
    const pending = this.#pending
    if (pending !== undefined && !pending.settled) this.#host.giveUp(pending, new CancelledError('the stream was closed by its reader'))
  }

  /** Deletes the stream (pgrr_stream_finish), cancelling its request when `cancel`. Best effort. */
  async #delete(id: string, cancel: boolean): Promise<void> {
    try {
      await this.#host.query(this.#host.statements.finish, [id, 0, cancel])
    } catch (error) {
      // Swept once its request is gone and its deadline past.
      this.#host.logger.debug({ err: error, id }, 'deleting a stream failed')
    }
  }

  #merge(rows: PartRow[]): void {
    for (const row of rows) {
      if (row.n > this.#contiguous && this.#parts.get(row.n) == null) this.#parts.set(row.n, { text: row.part, json: row.part_json })
      this.#highest = Math.max(this.#highest, row.n)
    }
    this.#advance()
    this.#wake()
  }

  #wake(): void {
    const waiting = [...this.#waiting]
    this.#waiting.clear()
    for (const resolve of waiting) resolve()
  }

  #advance(): void {
    while (this.#parts.get(this.#contiguous + 1) != null || this.#contiguous + 1 <= this.#yielded) this.#contiguous++
  }

  /** A part was taken: acknowledged every half window, and the deadline pushed on (idleTimeoutMs). */
  #consumed(): void {
    const id = this.#id
    const pending = this.#pending
    if (this.#ending || id === undefined || pending === undefined) return
    let extendMs: number | null = null
    const idle = this.#idleTimeoutMs
    if (idle !== undefined) {
      const now = performance.now()
      if (now + idle - this.#extendedTo >= idle / 4) {
        this.#extendedTo = now + idle
        extendMs = idle
        this.#host.rearm(pending, idle)
      }
    }
    if (extendMs !== null || this.#yielded - this.#acked >= Math.max(1, Math.floor(this.#maxPartsInFlight / 2))) {
      this.#acked = this.#yielded
      this.#host.parts.ack(id, this.#yielded, extendMs)
    }
  }
}
