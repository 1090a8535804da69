/**
 * The reply multiplexer: a client's requests in flight by id, and their outcomes applied to them as they
 * come, from reply NOTIFYs on the client's channel (usually with the reply inside; larger ones are fetched)
 * or from rows read from the table. Every outcome read is acknowledged (deleted) in a later batch.
 */
import { BatchQueue } from '../batch-queue.ts'
import type { PoolQuery } from '../database.ts'
import { ConnectionError, InvalidPayloadError, RemoteError, responderDeadlineCode, ResponderLostError, TimeoutError, type PgrrError } from '../errors.ts'
import type { Logger } from '../logger.ts'
import { decodePayload } from '../payload.ts'
import type { Statements } from '../statements.ts'
import { decodeReplies, isReplyEntry, type Headers, type ReplyEntry } from '../wire.ts'
import type { PendingRequest, Settle } from './pending-request.ts'

/** A request as pgrr_fetch returns it. */
interface FetchedRow {
  id: string
  state: string
  reply: string | null
  reply_json: boolean | null
  reply_headers: Headers | null
  error_code: string | null
  error_message: string | null
}

/** How long a reply that arrived before its request's id is kept (see #early). */
const earlyMemoryMs = 60_000

export interface ReplyMuxOptions {
  readonly statements: Statements
  readonly logger: Logger
  readonly query: PoolQuery
  /** Ids whose outcome was read, to delete. */
  /** Where the ids of outcomes read go, to be acknowledged (deleted) in a later statement. */
  readonly acks: Pick<BatchQueue<string>, 'push'>
  readonly settle: Settle
}

/** The requests of one client waiting for their outcome, by id. */
export class ReplyMux {
  readonly #options: ReplyMuxOptions
  /** Requests with an id, by id. */
  readonly #byId = new Map<string, PendingRequest>()
  /** Replies that arrived before pgrr_send returned their id (the two travel on different sessions). */
  readonly #early = new Map<string, { entry: ReplyEntry; at: number }>()
  /** Replies too large for a NOTIFY, to read from the table. */
  readonly #fetches: BatchQueue<string>

  constructor(options: ReplyMuxOptions) {
    this.#options = options
    this.#fetches = new BatchQueue((ids) => this.#flushFetches(ids), { maxBatch: 500 })
  }

  /** Requests with an id that wait for their outcome. */
  get size(): number {
    return this.#byId.size
  }

  /** pgrr_send returned the id of `pending`: from now on its outcome applies (it may have come already). */
  add(id: string, pending: PendingRequest): void {
    this.#byId.set(id, pending)
    const early = this.#early.get(id)
    if (early !== undefined) {
      this.#early.delete(id)
      this.#applyEntry(early.entry)
    }
  }

  /** The request with this id is settled: nothing applies to it any more. */
  delete(id: string): void {
    this.#byId.delete(id)
  }

  /** The ids of the requests that have waited at least `minAgeMs` by `now` (performance.now()). */
  waitingFor(minAgeMs: number, now: number): string[] {
    return [...this.#byId.values()].filter((p) => now - p.startedAt >= minAgeMs).map((p) => p.id as string)
  }

  /** A NOTIFY on the client's reply channel: a JSON array of reply entries (see wire.ts). */
  onReplies(payload: string): void {
    const entries = decodeReplies(payload)
    if (entries === undefined) {
      this.#options.logger.error({ bytes: payload.length }, 'unreadable reply notification')
      return
    }
    let malformed = 0
    for (const entry of entries) {
      // Skipped: its request is read from the table at the next check, like one whose NOTIFY was lost.
      if (!isReplyEntry(entry)) malformed++
      else if (this.#byId.has(entry[0])) this.#applyEntry(entry)
      else this.#early.set(entry[0], { entry, at: Date.now() })
    }
    if (malformed > 0) this.#options.logger.error({ malformed }, 'ignored malformed reply entries')
  }

  /**
   * Reads requests `ids` from the table and settles those that have an outcome. `missingIsLost`: ids
   * without a row failed. Rejects when the read fails.
   */
  async fetch(ids: string[], missingIsLost: boolean): Promise<void> {
    const rows = await this.#options.query<FetchedRow>(this.#options.statements.fetch, [ids])
    this.#applyRows(ids, rows, missingIsLost)
  }

  /** Forgets replies that arrived long ago for requests this client never had (or no longer has). */
  purgeEarly(): void {
    const limit = Date.now() - earlyMemoryMs
    for (const [id, early] of this.#early) if (early.at < limit) this.#early.delete(id)
  }

  #applyEntry(entry: ReplyEntry): void {
    const pending = this.#byId.get(entry[0])
    if (pending === undefined) return
    const { acks, settle } = this.#options
    switch (entry[1]) {
      case 'r':
        if (entry.length < 4) return this.#fetches.push(entry[0])
        acks.push(entry[0])
        return this.#settleDecoded(pending, entry[3] as string, entry[2], entry[4])
      case 'f':
        if (entry.length < 4) return this.#fetches.push(entry[0])
        acks.push(entry[0])
        return settle(pending, remoteError(entry[2], entry[3] as string, pending.timeoutMs, entry[4]))
      case 'l':
        acks.push(entry[0])
        return settle(pending, new ResponderLostError())
    }
  }

  #settleDecoded(pending: PendingRequest, text: string, json: boolean | null, headers: Headers | null | undefined): void {
    let value: unknown
    try {
      value = decodePayload(text, json)
    } catch (error) {
      return this.#options.settle(pending, new InvalidPayloadError('the reply is not valid JSON', { cause: error }))
    }
    this.#options.settle(pending, { value: pending.withHeaders ? { reply: value, headers: headers ?? {} } : value })
  }

  async #flushFetches(ids: string[]): Promise<void> {
    try {
      await this.fetch(ids, false)
    } catch (error) {
      this.#options.logger.warn({ err: error }, 'fetching replies failed; the periodic check retries')
    }
  }

  /** Settles requests from rows read from the table. `missingIsLost`: ids without a row failed. */
  #applyRows(ids: string[], rows: FetchedRow[], missingIsLost: boolean): void {
    const { acks, settle } = this.#options
    const seen = new Set<string>()
    for (const row of rows) {
      seen.add(row.id)
      const pending = this.#byId.get(row.id)
      if (pending === undefined) continue
      if (row.state === 'replied') {
        acks.push(row.id)
        this.#settleDecoded(pending, row.reply ?? '', row.reply_json, row.reply_headers)
      } else if (row.state === 'failed') {
        acks.push(row.id)
        settle(pending, remoteError(row.error_code, row.error_message ?? '', pending.timeoutMs, row.reply_headers))
      } else if (row.state === 'lost') {
        acks.push(row.id)
        settle(pending, new ResponderLostError())
      }
    }
    if (!missingIsLost) return
    for (const id of ids) {
      const pending = this.#byId.get(id)
      if (pending !== undefined && !seen.has(id)) {
        settle(pending, new ConnectionError('the request no longer exists in the database (was the server restarted?)'))
      }
    }
  }
}

/** A failure written by a responder; its deadline code means the request reached its deadline there. */
function remoteError(code: string | null, message: string, timeoutMs: number, headers?: Headers | null): PgrrError {
  if (code === responderDeadlineCode) return new TimeoutError(timeoutMs)
  return new RemoteError(code ?? 'HANDLER_ERROR', message, headers ?? {})
}
