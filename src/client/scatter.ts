/**
 * Scatter-gather (sql/protocol/15_scatter.sql): one request to every live responder of a channel, or to
 * `max` of them, each addressed to its responder alone (pgrr_send_all), and their outcomes as they come.
 * Each is an ordinary request once sent: its reply comes through the reply multiplexer, the recovery check
 * finds it lost when its responder dies, and a cancel reaches its responder. What is scatter-gather's own is
 * here: one statement for all the sends, one deadline for all of them, and the iteration.
 */
import { assertChannelName } from '../channel-name.ts'
import { toPgrrError } from '../database-error.ts'
import type { PoolQuery } from '../database.ts'
import { CancelledError, ClosedError, TimeoutError, type PgrrError } from '../errors.ts'
import { durationOption, integerOption } from '../option-values.ts'
import { encodePayload } from '../payload.ts'
import type { Statements } from '../statements.ts'
import type { AddressedKind, Headers } from '../wire.ts'
import type { PendingRequest } from './pending-request.ts'
import { encodeHeaders } from './prepare.ts'
import { sendStatusError } from './send.ts'

/** Most responders one scatter-gather addresses (`max`). */
export const maxResponders = 10_000

/** Options of {@link Client.requestAll}. */
export interface RequestAllOptions {
  /**
   * The deadline of the whole scatter-gather: the responders that have not answered by then are reported
   * with a `TimeoutError`, and their requests cancelled. @default the client's defaultTimeoutMs
   */
  timeoutMs?: number
  /** Address at most this many live responders (accepting ones first, then at random), 1 to 10,000. @default all */
  max?: number
  /** Aborting it cancels the requests not yet answered; the iteration then throws `CancelledError`. */
  signal?: AbortSignal
  /** Small string map carried with each request to the handler. */
  headers?: Record<string, string>
}

/** A responder addressed by a scatter-gather. */
export interface AddressedResponder {
  /** Responder id (as `pgrr status` and `client.services()` show it). */
  id: number
  /** Host name of its process. */
  host: string | null
  /** Process id on that host. */
  pid: number | null
}

/** The outcome of one responder of a scatter-gather: its reply (and reply headers), or its error. */
export type RequestAllResult<Reply = unknown> =
  | { responder: AddressedResponder; reply: Reply; headers: Readonly<Headers>; error?: undefined; elapsedMs: number }
  | { responder: AddressedResponder; error: PgrrError; reply?: undefined; elapsedMs: number }

/** What a client gives its scatter-gathers. */
export interface ScatterContext {
  readonly statements: Statements
  readonly query: PoolQuery
  readonly replyChannel: () => string
  /** Resolves once the reply channel is LISTENed on (see reply-listen.ts); undefined when polling. */
  readonly listening: () => Promise<void> | undefined
  readonly defaultTimeoutMs: number
  readonly closed: () => boolean
  /** From now on the outcome of `pending` (which has its id) comes to it, as any request's. */
  readonly track: (pending: PendingRequest) => void
  /** Stops waiting for `pending`: settles it with `error`, and cancels it in the database. */
  readonly giveUp: (pending: PendingRequest, error: PgrrError) => void
}

interface SendAllRow {
  responder_id: number | null
  host: string | null
  pid: number | null
  id: string | null
  status: string
}

/**
 * Sends `payload` to the live responders of `channel` and yields their outcomes as they come (see
 * {@link Client.requestAll}). `kind` 'ping' is answered by each responder itself, without its handler.
 */
export async function* requestAll<Reply>(
  context: ScatterContext,
  channel: string,
  payload: unknown,
  options: RequestAllOptions = {},
  kind: AddressedKind = 'all',
): AsyncGenerator<RequestAllResult<Reply>, void, undefined> {
  assertChannelName(channel)
  const timeoutMs = durationOption(options.timeoutMs ?? context.defaultTimeoutMs, 'timeoutMs')
  const max = options.max === undefined ? null : integerOption(options.max, 'max', maxResponders)
  const encoded = encodePayload(payload)
  const headers = encodeHeaders(options.headers)
  const signal = options.signal
  if (context.closed()) throw new ClosedError('the client is closed')
  if (signal?.aborted) throw abortError(signal)
  const startedAt = performance.now()
  let rows: SendAllRow[]
  try {
    await context.listening()
    rows = await context.query<SendAllRow>(context.statements.sendAll, [
      context.replyChannel(), channel, encoded.text, encoded.json, timeoutMs, headers, max, kind,
    ])
  } catch (error) {
    throw toPgrrError(error)
  }
  const failed = rows.find((row) => row.status !== 'ok' || row.id === null || row.responder_id === null)
  if (failed !== undefined) throw sendStatusError(failed.status, channel)

  // Outcomes in the order they settle; the iteration takes them from here.
  const outcomes: RequestAllResult<Reply>[] = []
  let wake: (() => void) | undefined
  const arrived = (outcome: RequestAllResult<Reply>) => {
    outcomes.push(outcome)
    wake?.()
  }
  const pendings = rows.map((row) => {
    const responder: AddressedResponder = { id: row.responder_id!, host: row.host, pid: row.pid }
    const pending: PendingRequest = {
      channel,
      payload: encoded.text,
      json: encoded.json,
      headers,
      maxAttempts: 1,
      timeoutMs,
      id: row.id!,
      startedAt,
      admitted: false,
      settled: false,
      withHeaders: true,
      resolve: (value) => {
        const { reply, headers: replyHeaders } = value as { reply: Reply; headers: Headers }
        arrived({ responder, reply, headers: replyHeaders, elapsedMs: performance.now() - startedAt })
      },
      reject: (error) => arrived({ responder, error: error as PgrrError, elapsedMs: performance.now() - startedAt }),
    }
    return pending
  })
  for (const pending of pendings) context.track(pending)

  let cancelled: CancelledError | undefined
  const giveUpAll = (error: () => PgrrError) => {
    for (const pending of pendings) if (!pending.settled) context.giveUp(pending, error())
  }
  // The deadline of all of them: each responder that has not answered is reported timed out.
  const timer = setTimeout(() => giveUpAll(() => new TimeoutError(timeoutMs)), Math.max(1, timeoutMs - (performance.now() - startedAt)))
  const onAbort = () => {
    cancelled = abortError(signal!)
    giveUpAll(() => new CancelledError('the scatter-gather was cancelled'))
    wake?.()
  }
  signal?.addEventListener('abort', onAbort, { once: true })
  // Aborted while the requests were being sent.
  if (signal?.aborted) onAbort()
  try {
    for (let left = pendings.length; left > 0; left--) {
      while (outcomes.length === 0 && cancelled === undefined) await new Promise<void>((resolve) => (wake = resolve))
      wake = undefined
      if (cancelled !== undefined) throw cancelled
      yield outcomes.shift()!
    }
  } finally {
    // A break out of the loop, a throw, or the end: nothing of it stays in flight.
    clearTimeout(timer)
    signal?.removeEventListener('abort', onAbort)
    giveUpAll(() => new CancelledError('the scatter-gather was ended by its caller'))
  }
}

function abortError(signal: AbortSignal): CancelledError {
  return new CancelledError('the scatter-gather was cancelled', { cause: signal.reason })
}
