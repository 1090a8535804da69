/**
 * Errors of pg-request-reply: one class per outcome, each with a stable string `code` that programs can
 * switch on (messages may change, codes do not). Every class extends {@link PgrrError}.
 *
 * The SQL functions raise the same outcomes with their own SQLSTATEs (class `PR`); {@link sqlStateCodes}
 * maps them.
 */

/** Stable codes of {@link PgrrError} subclasses. */
export type PgrrErrorCode =
  | 'NO_RESPONDERS'
  | 'TIMEOUT'
  | 'REMOTE_ERROR'
  | 'RESPONDER_LOST'
  | 'CANCELLED'
  | 'CONNECTION'
  | 'CLOSED'
  | 'INVALID_CHANNEL'
  | 'INVALID_PAYLOAD'
  | 'PAYLOAD_TOO_LARGE'
  | 'TOO_MANY_REQUESTS'
  | 'UNKNOWN_REQUEST'
  | 'SAME_TRANSACTION'
  | 'SCHEMA_VERSION'
  | 'INVALID_OPTION'
  | 'VALIDATION'
  | 'MISSING_DEPENDENCY'
  | 'STREAM_CLOSED'

/** Base class of every error this library raises on purpose. */
export class PgrrError extends Error {
  readonly code: PgrrErrorCode

  constructor(code: PgrrErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.code = code
    this.name = new.target.name
  }
}

/** No live responder serves the channel; the request was not stored. */
export class NoRespondersError extends PgrrError {
  constructor(readonly channel: string) {
    super('NO_RESPONDERS', `no responders on channel ${JSON.stringify(channel)}`)
  }
}

/** The deadline passed before a reply arrived. */
export class TimeoutError extends PgrrError {
  constructor(readonly timeoutMs: number, message = `no reply within ${timeoutMs} ms`) {
    super('TIMEOUT', message)
  }
}

/** The handler threw: `remoteCode` and `message` are what it said; `headers` what it set on its reply. */
export class RemoteError extends PgrrError {
  constructor(
    readonly remoteCode: string,
    message: string,
    readonly headers: Readonly<Record<string, string>> = {},
  ) {
    super('REMOTE_ERROR', message)
  }
}

/** The responder's session ended while it held the request, and no attempts were left. */
export class ResponderLostError extends PgrrError {
  constructor(message = 'the responder ended without replying') {
    super('RESPONDER_LOST', message)
  }
}

/** The caller cancelled the request (its AbortSignal fired). */
export class CancelledError extends PgrrError {
  constructor(message = 'the request was cancelled', options?: { cause?: unknown }) {
    super('CANCELLED', message, options)
  }
}

/**
 * The database could not be reached or refused the work for want of resources (too many connections, a
 * full NOTIFY queue, no pooled connection free in time), or the connection broke while the outcome was
 * unknown.
 */
export class ConnectionError extends PgrrError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('CONNECTION', message, options)
  }
}

/** The client or server was closed. */
export class ClosedError extends PgrrError {
  constructor(message = 'closed') {
    super('CLOSED', message)
  }
}

/** A channel (service) name is empty, longer than 63 bytes or holds control characters. */
export class InvalidChannelError extends PgrrError {
  constructor(readonly channel: unknown) {
    super('INVALID_CHANNEL', `invalid channel name ${safeJson(channel)}: use 1 to 63 bytes without control characters`)
  }
}

/** A payload or reply cannot be carried (not a string or JSON value, or text with a NUL character). */
export class InvalidPayloadError extends PgrrError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('INVALID_PAYLOAD', message, options)
  }
}

/** The payload is larger than the channel accepts. */
export class PayloadTooLargeError extends PgrrError {
  constructor(readonly channel: string) {
    super('PAYLOAD_TOO_LARGE', `payload too large for channel ${JSON.stringify(channel)}`)
  }
}

/** The client already has `maxInFlight` requests waiting and was told not to queue more. */
export class TooManyRequestsError extends PgrrError {
  constructor(readonly maxInFlight: number) {
    super('TOO_MANY_REQUESTS', `too many requests in flight (maxInFlight ${maxInFlight})`)
  }
}

/** SQL callers only: the id is unknown, already consumed or expired. */
export class UnknownRequestError extends PgrrError {
  constructor(message = 'unknown request') {
    super('UNKNOWN_REQUEST', message)
  }
}

/** SQL callers only: await_reply ran in the transaction that made the request. */
export class SameTransactionError extends PgrrError {
  constructor(message = 'awaited in the transaction that made the request') {
    super('SAME_TRANSACTION', message)
  }
}

/** The database schema is missing, or was migrated by a newer version of this library. */
export class SchemaVersionError extends PgrrError {
  constructor(message: string) {
    super('SCHEMA_VERSION', message)
  }
}

/** An option has a value this library cannot use. */
export class InvalidOptionError extends PgrrError {
  constructor(message: string) {
    super('INVALID_OPTION', message)
  }
}

/** One problem a validator found: where (a path into the value) and what. */
export interface ValidationIssue {
  message: string
  path: PropertyKey[]
}

/** A typed service's validator rejected a payload or reply on this side (see `defineService`). */
export class ValidationError extends PgrrError {
  constructor(message: string, readonly issues: ValidationIssue[]) {
    super('VALIDATION', message)
  }
}

/**
 * A feature needs an optional package that is not installed: `prom-client` for `createMetrics()`,
 * `@opentelemetry/api` for `createTracing()`, `tsx` for a TypeScript handler file of `pgrr serve`.
 * `packageName` names it; the message says how to install it.
 */
export class MissingDependencyError extends PgrrError {
  constructor(readonly packageName: string, message: string, options?: { cause?: unknown }) {
    super('MISSING_DEPENDENCY', message, options)
  }
}

/**
 * A handler's `ctx.send()` of a part that no stream can take: its final reply was sent, the caller asked
 * for one reply (`request()`, not `requestStream()`), or the request is no longer this responder's. The
 * part is not sent; the handler may carry on.
 */
export class StreamClosedError extends PgrrError {
  constructor(message: string) {
    super('STREAM_CLOSED', message)
  }
}

/**
 * @internal The error code a responder writes when a request's deadline passes while its handler runs.
 * Callers report it as their own `TimeoutError` (SQL: PR002); a handler cannot send it (it becomes
 * `HANDLER_ERROR`), so a handler rethrowing some other timeout stays a `RemoteError`.
 */
export const responderDeadlineCode = 'PGRR_DEADLINE'

/** SQLSTATEs raised by the SQL functions, and the error code each stands for. */
export const sqlStateCodes: Readonly<Record<string, PgrrErrorCode>> = {
  PR001: 'NO_RESPONDERS',
  PR002: 'TIMEOUT',
  PR003: 'REMOTE_ERROR',
  PR004: 'RESPONDER_LOST',
  PR005: 'UNKNOWN_REQUEST',
  PR006: 'SAME_TRANSACTION',
  PR007: 'INVALID_CHANNEL',
  PR008: 'PAYLOAD_TOO_LARGE',
  PR009: 'CANCELLED',
}

function safeJson(value: unknown): string {
  try {
    return JSON.stringify(value) ?? String(value)
  } catch {
    return String(value)
  }
}
