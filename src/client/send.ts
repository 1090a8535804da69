/**
 * Sending (06_send.sql): every request queued in a turn of the event loop goes in one statement
 * (pgrr_send, or pgrr_send_one for a lone one), which stores them and hands them to responders or announces
 * them; a streamed request, or a large one (batch-queue.ts, aloneOverChars), goes in a statement of its own.
 */
import { aloneOverChars, BatchQueue, splitAlone } from '../batch-queue.ts'
import { toPgrrError } from '../database-error.ts'
import type { PoolQuery } from '../database.ts'
import { InvalidChannelError, InvalidOptionError, InvalidPayloadError, NoRespondersError, PayloadTooLargeError, type PgrrError } from '../errors.ts'
import type { Statements } from '../statements.ts'
import type { Telemetry } from '../telemetry.ts'
import { remainingMs, type PendingRequest, type Settle } from './pending-request.ts'
import type { ReplyMux } from './reply-mux.ts'

interface SendRow {
  ord: number
  id: string | null
  status: string
}

export interface SendsOptions {
  readonly statements: Statements
  readonly telemetry: Telemetry
  readonly query: PoolQuery
  /** The client's reply channel, where the outcomes of its requests are NOTIFYed. */
  readonly replyChannel: () => string
  /** Resolves once the reply channel is LISTENed on (see reply-listen.ts): a send waits for it. */
  readonly listening: () => Promise<void> | undefined
  /** Requests to cancel: those that ended while being sent. */
  readonly cancels: BatchQueue<string>
  /** Where a request sent waits for its outcome. */
  readonly mux: ReplyMux
  readonly settle: Settle
}

/** The sends of one client. */
export class Sends {
  readonly #options: SendsOptions
  readonly #queue: BatchQueue<PendingRequest>

  constructor(options: SendsOptions) {
    this.#options = options
    this.#queue = new BatchQueue((batch) => this.#flush(batch), { maxBatch: 500, maxConcurrent: 2 })
  }

  /** Requests waiting for a send. */
  get size(): number {
    return this.#queue.size
  }

  push(pending: PendingRequest): void {
    this.#queue.push(pending)
  }

  /** Resolves once nothing is queued or being sent. */
  idle(): Promise<void> {
    return this.#queue.idle()
  }

  async #flush(batch: PendingRequest[]): Promise<void> {
    const { settle } = this.#options
    try {
      await this.#options.listening()
    } catch (error) {
      const typed = toPgrrError(error)
      for (const pending of batch) settle(pending, typed)
      return
    }
    const live = batch.filter((pending) => !pending.settled)
    if (live.length === 0) return
    // Streamed requests each go in a statement of their own (pgrr_stream_open, src/client/stream.ts), and
    // so do large ones (see aloneOverChars).
    const { together, alone } = splitAlone(live, (pending) => pending.stream !== undefined || pending.payload.length > aloneOverChars)
    await Promise.all([together.length === 0 ? undefined : this.#send(together), ...alone.map((pending) => this.#send([pending]))])
  }

  async #send(live: PendingRequest[]): Promise<void> {
    const { statements, query, settle } = this.#options
    const replyChannel = this.#options.replyChannel()
    let rows: SendRow[]
    try {
      const stream = live.length === 1 ? live[0]?.stream : undefined
      if (stream !== undefined) {
        const row = await stream.open(live[0]!, replyChannel, remainingMs(live[0]!))
        rows = [{ ...row, ord: 1 }]
      } else if (live.length === 1) {
        // One request: the scalar statement, cheaper than the batch for it (see pgrr_send_one).
        const [pending] = live as [PendingRequest]
        const [row] = await query<Omit<SendRow, 'ord'>>(statements.sendOne, [
          replyChannel,
          pending.channel,
          pending.payload,
          pending.json,
          remainingMs(pending),
          pending.headers,
          pending.maxAttempts,
        ])
        rows = row === undefined ? [] : [{ ...row, ord: 1 }]
      } else {
        rows = await query<SendRow>(statements.send, [
          replyChannel,
          live.map((p) => p.channel),
          live.map((p) => p.payload),
          live.map((p) => p.json),
          live.map(remainingMs),
          live.map((p) => p.headers),
          live.map((p) => p.maxAttempts),
        ])
      }
    } catch (error) {
      // The outcome of the insert is unknown: each request ends here, with a typed error.
      const typed = toPgrrError(error)
      for (const pending of live) settle(pending, typed)
      return
    }
    this.#options.telemetry.sent?.(live.length)
    for (const row of rows) {
      const pending = live[row.ord - 1]
      if (pending === undefined) continue
      if (row.status !== 'ok' || row.id === null) {
        settle(pending, sendStatusError(row.status, pending.channel))
        continue
      }
      pending.id = row.id
      pending.stream?.opened(row.id)
      if (pending.settled) {
        // It timed out or was aborted while being inserted.
        this.#options.cancels.push(row.id)
        continue
      }
      this.#options.mux.add(row.id, pending)
    }
  }
}

/** The error of a request pgrr_send refused, by the status it gave. */
export function sendStatusError(status: string, channel: string): PgrrError {
  switch (status) {
    case 'no_responders':
      return new NoRespondersError(channel)
    case 'too_large':
      return new PayloadTooLargeError(channel)
    case 'invalid_channel':
      return new InvalidChannelError(channel)
    case 'headers_too_large':
      return new InvalidOptionError('headers take more than 64 KiB as JSON')
    case 'invalid_headers':
      // jsonb cannot hold \u0000 or a lone surrogate, in keys or values.
      return new InvalidOptionError('headers must be strings PostgreSQL can store: no NUL character, no lone UTF-16 surrogate')
    default:
      return new InvalidPayloadError(`the request was refused (${status})`)
  }
}
