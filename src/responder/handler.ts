/**
 * What a handler is given and what its end becomes: the outcome a responder writes for its request. Plain
 * functions of their inputs; a handler's result or thrown value may be hostile (a Proxy, a throwing getter
 * or `toString`), and none of that may escape here.
 */
import { responderDeadlineCode, TimeoutError } from '../errors.ts'
import { encodePayload } from '../payload.ts'

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
  /**
   * Sends a part of a streamed reply, before the final reply (a string, or any JSON value), to a caller
   * that asked for a stream (`client.requestStream()`, SQL `request_stream()`). Resolves once the part is
   * written; waits while the caller has `maxInFlight` parts it has not consumed yet. Rejects with
   * `StreamClosedError` (not a stream, or the final reply was sent), `PayloadTooLargeError` (over the
   * channel's limit: the part is not sent, the stream goes on), `InvalidPayloadError`, or the signal's
   * reason. See docs/streams.md.
   */
  send(part: unknown): Promise<void>
}

/**
 * Handles one request: returns (or resolves with) the reply, a string or any JSON value. Throwing sends an
 * error reply: the caller gets a `RemoteError` with the error's `message` and its `code` when that is a
 * string (else `'HANDLER_ERROR'`). An async generator streams: each value it yields is a part
 * (`ctx.send`), its return value the reply.
 */
export type Handler<Payload = unknown, Reply = unknown> = (
  payload: Payload,
  context: HandlerContext,
) => Reply | Promise<Reply> | AsyncGenerator<unknown, Reply, undefined>

/** What a handler's end says, before it is addressed to its request (the arguments of pgrr_reply). */
export interface Result {
  failed: boolean
  body: string
  json: boolean
  code: string | null
  /** The reply headers as JSON, or null: set when the job finishes (see encodeReplyHeaders). */
  headers?: string | null
}

/** The outcome of a reply value. */
export function success(value: unknown): Result {
  try {
    const encoded = encodePayload(value, 'reply')
    return { failed: false, body: encoded.text, json: encoded.json, code: null }
  } catch (error) {
    return { failed: true, body: describe(error), json: false, code: 'INVALID_REPLY' }
  }
}

/** The outcome of a thrown value (or a rejection). */
export function failure(error: unknown): Result {
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

/** The outcome of a request whose payload is not valid JSON: its handler never runs. */
export function invalidPayload(): Result {
  return { failed: true, body: 'the payload is not valid JSON', json: false, code: 'INVALID_PAYLOAD' }
}

/** The outcome a request gets when its deadline passes at the responder (callers report it as a timeout). */
export function deadlineOutcome(timeoutMs: number): Result {
  // Callers report this code as their own timeout (TimeoutError, SQLSTATE PR002).
  return { failed: true, body: new TimeoutError(timeoutMs, 'the request reached its deadline').message, json: false, code: responderDeadlineCode }
}

/** A message for any thrown value, never throwing itself (a thrown value may have a hostile toString). */
export function describe(error: unknown): string {
  try {
    const message = error instanceof Error ? error.message : typeof error === 'string' ? error : JSON.stringify(error) ?? String(error)
    return sanitize(message)
  } catch {
    return 'the handler threw a value that cannot be described'
  }
}

/** PostgreSQL text cannot hold NUL, nor lone surrogates in UTF-8. */
export function sanitize(text: string): string {
  return text.replaceAll('\u0000', '\uFFFD').toWellFormed()
}

/** Largest reply header map, as JSON (what pgrr_reply keeps): the same as a request's. */
const maxReplyHeaderBytes = 65536

/**
 * Reply headers as JSON (null when the handler set none), or why they cannot travel: a value that is not a
 * string, text PostgreSQL cannot hold, or more than 64 KiB in all. A reply with such headers is answered
 * with an INVALID_REPLY error reply, never sent without them.
 */
export function encodeReplyHeaders(headers: Record<string, string> | undefined): { json: string | null } | { invalid: string } {
  if (headers === undefined) return noHeaders
  try {
    // The usual case, a handler that set none, without the copies below.
    let empty = true
    for (const key in headers) {
      if (Object.hasOwn(headers, key)) {
        empty = false
        break
      }
    }
    if (empty) return noHeaders
    for (const [key, value] of Object.entries(headers)) {
      if (typeof value !== 'string') return { invalid: `reply header ${JSON.stringify(key)} must be a string, got ${typeof value}` }
      if (value.includes('\u0000') || key.includes('\u0000') || !value.isWellFormed() || !key.isWellFormed()) {
        return { invalid: `reply header ${JSON.stringify(key)} holds text PostgreSQL cannot store (a NUL or a lone surrogate)` }
      }
    }
    const json = JSON.stringify(headers)
    if (Buffer.byteLength(json) > maxReplyHeaderBytes) return { invalid: `reply headers take ${Buffer.byteLength(json)} bytes, over the limit of ${maxReplyHeaderBytes}` }
    return { json }
  } catch (error) {
    // A handler may have put a Proxy or a getter that throws there.
    return { invalid: `reply headers cannot be read: ${describe(error)}` }
  }
}

const noHeaders = { json: null } as const

/** The outcome of a reply whose headers cannot travel (see encodeReplyHeaders). */
export function invalidReplyHeaders(message: string): Result {
  return { failed: true, body: sanitize(message), json: false, code: 'INVALID_REPLY' }
}

/** Whether a handler returned a promise-like; reading `then` may throw (call it inside a try). */
export function isThenable(value: unknown): value is PromiseLike<unknown> {
  return typeof (value as { then?: unknown } | null)?.then === 'function'
}
