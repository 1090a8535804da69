/**
 * Turns errors of the database driver into the library's typed errors: the SQLSTATEs of the protocol into
 * their classes, lost connections into `ConnectionError`, a missing install into `SchemaVersionError`.
 * Anything else is returned unchanged: it is a bug or a misconfiguration, and its own message says more.
 */
import {
  CancelledError,
  ConnectionError,
  InvalidChannelError,
  NoRespondersError,
  PayloadTooLargeError,
  PgrrError,
  RemoteError,
  ResponderLostError,
  SameTransactionError,
  SchemaVersionError,
  TimeoutError,
  UnknownRequestError,
} from './errors.ts'

interface DriverError {
  code?: string
  message?: string
  detail?: string
  errno?: string
  /** The C function of the server that raised a database error: never translated, unlike the message. */
  routine?: string
}

// Codes of the drivers and of Node for a broken or unreachable connection: the socket's, the name
// lookup's (EAI_AGAIN: DNS did not answer) and TLS's when the server's certificate is refused.
const driverConnectionCodes = new Set([
  'CONNECTION_CLOSED',
  'CONNECTION_ENDED',
  'CONNECTION_DESTROYED',
  'CONNECT_TIMEOUT',
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENETDOWN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_HAS_EXPIRED',
  'ERR_TLS_CERT_ALTNAME_INVALID',
])

/** The typed error for a driver error (or the error itself when it has no typed meaning). */
export function toPgrrError(error: unknown): Error {
  if (error instanceof PgrrError || !(error instanceof Error)) {
    return error instanceof Error ? error : new ConnectionError(String(error))
  }
  const { code = '', message = '', detail } = error as DriverError
  switch (code) {
    case 'PR001':
      return new NoRespondersError(channelFromMessage(message))
    case 'PR002':
      return new TimeoutError(0, message)
    case 'PR003':
      return new RemoteError(detail || 'HANDLER_ERROR', message)
    case 'PR004':
      return new ResponderLostError(message)
    case 'PR005':
      return new UnknownRequestError(message)
    case 'PR006':
      return new SameTransactionError(message)
    case 'PR007':
      return new InvalidChannelError(channelFromMessage(message))
    case 'PR008':
      return new PayloadTooLargeError(channelFromMessage(message))
    case 'PR009':
      return new CancelledError(message)
  }
  if (isConnectionLoss(error)) {
    return new ConnectionError(`database connection failed: ${message}`, { cause: error })
  }
  if (isOutOfResources(error)) {
    return new ConnectionError(`the database is out of resources: ${message}`, { cause: error })
  }
  // undefined_function, undefined_table, invalid_schema_name: the protocol is not installed there.
  if (code === '42883' || code === '42P01' || code === '3F000') {
    return new SchemaVersionError(`the pg-request-reply schema is missing or incomplete (${message}): run \`pgrr migrate\``)
  }
  return error
}

/**
 * Whether an error says the connection itself is broken or cannot be made, as opposed to the database
 * refusing one statement, told by codes, never by the message (which the server translates): 08 connection
 * exceptions, 57P01-03 the server shut down or is starting, 28 login refused, 3D000 no such database, the
 * codes Node gives a socket, a name lookup or TLS; and the driver's own errors, which carry no code at all
 * (a connection that timed out, ended, or was refused SSL; a pool with no connection free in time). A
 * `ConnectionError` of this library says so too, unless it stands for a lack of resources.
 */
export function isConnectionLoss(error: unknown): boolean {
  if (error instanceof ConnectionError) return !isOutOfResources(error.cause)
  const { code = '' } = (error ?? {}) as DriverError
  return (
    driverConnectionCodes.has(code) ||
    code.startsWith('08') ||
    code.startsWith('28') ||
    code === '3D000' ||
    code === '57P01' ||
    code === '57P02' ||
    code === '57P03' ||
    isDriverError(error)
  )
}

/**
 * An error node-postgres raises itself, about its connection: a plain `Error` with no code. What the server
 * says is a `DatabaseError` with a SQLSTATE, what Node says has an errno code, and a misuse of the driver's
 * API is a `TypeError` or the like; what is left is the driver giving up on a connection.
 */
function isDriverError(error: unknown): boolean {
  return error instanceof Error && Object.getPrototypeOf(error) === Error.prototype && !(error as DriverError).code
}

/**
 * 53: insufficient resources (too many connections, out of memory or disk); a NOTIFY queue that is full (a
 * session LISTENs without reading: 54000 raised at commit by PreCommit_Notify, whatever language the
 * server speaks). The database cannot take the work now, whatever it is; the connection that said so still
 * works.
 */
function isOutOfResources(error: unknown): boolean {
  const { code = '', routine } = (error ?? {}) as DriverError
  return code.startsWith('53') || (code === '54000' && routine === 'PreCommit_Notify')
}

function channelFromMessage(message: string): string {
  const quoted = /'((?:[^']|'')*)'/.exec(message)
  return quoted?.[1]?.replace(/''/g, "'") ?? ''
}
