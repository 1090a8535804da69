/**
 * The part channel of one client (sql/protocol/14_stream.sql): `<prefix>.t<64 random bits>`, LISTENed on
 * while a stream is open, whose NOTIFYs bring the parts of its streams (src/client/stream.ts), by id; and
 * the acknowledgements of what they consumed (pgrr_stream_ack), several streams' to a statement.
 */
import { randomBytes } from 'node:crypto'
import { BatchQueue } from '../batch-queue.ts'
import type { PoolQuery } from '../database.ts'
import type { Listener } from '../listener.ts'
import type { Logger } from '../logger.ts'
import type { StreamStatements } from '../stream-statements.ts'
import { decodeParts, type PartEntry } from '../stream-wire.ts'

/** A stream, as its part channel sees it. */
export interface PartReceiver {
  onEntry(entry: PartEntry): void
  fetch(): void
}

/** A stream's acknowledgement (pgrr_stream_ack). */
interface Ack {
  id: string
  consumed: number
  extendMs: number | null
}

/** How long parts that arrived before their stream's id are kept. */
const earlyMemoryMs = 60_000

/**
 * The part channel of one client: `<prefix>.t<64 random bits>`, LISTENed on while a stream is open; the
 * parts of each stream by id; and the acknowledgements, several streams' to a statement.
 */
export class StreamParts {
  readonly #listener: Listener
  readonly #logger: Logger
  readonly #replyChannel: () => string
  readonly #query: PoolQuery
  readonly #statements: StreamStatements
  readonly #streams = new Map<string, PartReceiver>()
  /** Parts that arrived before their stream's id (the send and the NOTIFY travel on different sessions). */
  readonly #early = new Map<string, { entries: PartEntry[]; at: number }>()
  readonly #acks: BatchQueue<Ack>
  #channel: string | undefined
  #users = 0
  #listening: Promise<() => Promise<void>> | undefined

  constructor(listener: Listener, logger: Logger, replyChannel: () => string, query: PoolQuery, statements: StreamStatements) {
    this.#listener = listener
    this.#logger = logger
    this.#replyChannel = replyChannel
    this.#query = query
    this.#statements = statements
    this.#acks = new BatchQueue((acks) => this.#flushAcks(acks), { maxBatch: 1000 })
    // NOTIFYs sent while the LISTEN session was away are lost: every open stream reads its parts again.
    listener.onReconnect(() => {
      for (const stream of this.#streams.values()) stream.fetch()
    })
  }

  /** The part channel: the reply channel's prefix (`<prefix>.c<random>`), `.t`, 64 random bits. */
  get channel(): string {
    if (this.#channel === undefined) {
      const reply = this.#replyChannel()
      this.#channel = `${reply.slice(0, reply.lastIndexOf('.'))}.t${randomBytes(8).toString('hex')}`
    }
    return this.#channel
  }

  /** A stream opens: the part channel is listened on once this resolves. */
  async acquire(): Promise<void> {
    this.#users++
    // A handler of its own each time: the listener keeps the channel while any is registered.
    const listening = (this.#listening ??= this.#listener.listen(this.channel, (payload) => this.#onParts(payload)))
    try {
      await listening
    } catch (error) {
      this.#users--
      if (this.#listening === listening) this.#listening = undefined
      throw error
    }
  }

  /** A stream closed: the last one stops the LISTEN. */
  release(): void {
    if (--this.#users > 0) return
    const listening = this.#listening
    this.#listening = undefined
    void listening?.then((unlisten) => unlisten()).catch(() => undefined)
  }

  register(id: string, stream: PartReceiver): void {
    this.#streams.set(id, stream)
    const early = this.#early.get(id)
    if (early === undefined) return
    this.#early.delete(id)
    for (const entry of early.entries) stream.onEntry(entry)
  }

  unregister(id: string): void {
    this.#streams.delete(id)
  }

  ack(id: string, consumed: number, extendMs: number | null): void {
    this.#acks.push({ id, consumed, extendMs })
  }

  #onParts(payload: string): void {
    const decoded = decodeParts(payload)
    if (decoded === undefined || decoded.malformed > 0) this.#logger.error({ bytes: payload.length }, 'ignored malformed stream parts')
    const now = Date.now()
    for (const [id, early] of this.#early) if (early.at < now - earlyMemoryMs) this.#early.delete(id)
    for (const entry of decoded?.entries ?? []) {
      const stream = this.#streams.get(entry[0])
      if (stream !== undefined) stream.onEntry(entry)
      else {
        const early = this.#early.get(entry[0]) ?? { entries: [], at: now }
        early.entries.push(entry)
        this.#early.set(entry[0], early)
      }
    }
  }

  async #flushAcks(acks: Ack[]): Promise<void> {
    const byId = new Map<string, Ack>()
    for (const ack of acks) {
      const seen = byId.get(ack.id)
      byId.set(ack.id, seen === undefined ? ack : { id: ack.id, consumed: Math.max(seen.consumed, ack.consumed), extendMs: ack.extendMs ?? seen.extendMs })
    }
    const merged = [...byId.values()]
    try {
      await this.#query(this.#statements.ack, [merged.map((ack) => ack.id), merged.map((ack) => ack.consumed), merged.map((ack) => ack.extendMs)])
    } catch (error) {
      // Without it the handler may wait for room forever: tried again while the stream is open.
      this.#logger.warn({ err: error }, 'acknowledging stream parts failed; trying again in a second')
      setTimeout(() => {
        for (const ack of merged) if (this.#streams.has(ack.id)) this.#acks.push(ack)
      }, 1000).unref()
    }
  }
}
