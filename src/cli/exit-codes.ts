/**
 * Exit codes of `pgrr`: one per kind of outcome, so that scripts can tell "nobody serves this" from "the
 * handler failed" from "the database is down" without parsing messages. `pgrr --help` prints this table.
 */
import { toPgrrError } from '../database-error.ts'
import { PgrrError, type PgrrErrorCode } from '../errors.ts'

export const exitCodes = {
  ok: 0,
  error: 1,
  usage: 2,
  noResponders: 3,
  timeout: 4,
  remoteError: 5,
  responderLost: 6,
  connection: 7,
  schemaVersion: 8,
  cancelled: 9,
  invalidInput: 10,
} as const

export type ExitCode = (typeof exitCodes)[keyof typeof exitCodes]

/** The table `pgrr --help` prints: code, meaning. */
export const exitCodeTable: readonly (readonly [ExitCode, string])[] = [
  [exitCodes.ok, 'success'],
  [exitCodes.error, 'other or unexpected error'],
  [exitCodes.usage, 'usage error (unknown command or option, bad value)'],
  [exitCodes.noResponders, 'no responders on the channel'],
  [exitCodes.timeout, 'no reply within the timeout'],
  [exitCodes.remoteError, 'the handler threw (remote error)'],
  [exitCodes.responderLost, 'the responder ended without replying'],
  [exitCodes.connection, 'cannot connect to the database, or the connection broke'],
  [exitCodes.schemaVersion, 'schema not migrated, or migrated by another version (run pgrr migrate, or upgrade)'],
  [exitCodes.cancelled, 'cancelled (SIGINT while connecting or waiting for the reply)'],
  [exitCodes.invalidInput, 'invalid payload or channel name, or payload too large'],
]

const byLibraryCode: Record<PgrrErrorCode, ExitCode> = {
  NO_RESPONDERS: exitCodes.noResponders,
  TIMEOUT: exitCodes.timeout,
  REMOTE_ERROR: exitCodes.remoteError,
  RESPONDER_LOST: exitCodes.responderLost,
  CANCELLED: exitCodes.cancelled,
  CONNECTION: exitCodes.connection,
  SCHEMA_VERSION: exitCodes.schemaVersion,
  INVALID_CHANNEL: exitCodes.invalidInput,
  INVALID_PAYLOAD: exitCodes.invalidInput,
  PAYLOAD_TOO_LARGE: exitCodes.invalidInput,
  INVALID_OPTION: exitCodes.usage,
  CLOSED: exitCodes.error,
  TOO_MANY_REQUESTS: exitCodes.error,
  UNKNOWN_REQUEST: exitCodes.error,
  SAME_TRANSACTION: exitCodes.error,
  VALIDATION: exitCodes.invalidInput,
  MISSING_DEPENDENCY: exitCodes.error,
  STREAM_CLOSED: exitCodes.error,
}

/** Raised by commands for problems of their own: a message for stderr and the exit code. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: ExitCode,
    options?: { cause?: unknown },
  ) {
    super(message, options)
    this.name = 'CliError'
  }
}

/** A bad command line: exit code 2, and the usage of the command is worth showing. */
export class UsageError extends CliError {
  constructor(message: string) {
    super(message, exitCodes.usage)
    this.name = 'UsageError'
  }
}

/**
 * The error as the CLI reports it. Errors that reach us straight from the driver (migrate() does not
 * translate them) go through the library's own translation first; failed logins and unknown databases are
 * connection errors to a user, though the library leaves them untranslated.
 */
export function classify(error: unknown): { exitCode: ExitCode; error: Error } {
  if (error instanceof CliError) return { exitCode: error.exitCode, error }
  const typed = toPgrrError(error)
  if (typed instanceof PgrrError) return { exitCode: byLibraryCode[typed.code] ?? exitCodes.error, error: typed }
  const code = (typed as { code?: unknown }).code
  // 28xxx: invalid authorization (bad password, no pg_hba entry); 3D000: the database does not exist.
  if (typeof code === 'string' && (code.startsWith('28') || code === '3D000')) {
    return { exitCode: exitCodes.connection, error: typed }
  }
  return { exitCode: exitCodes.error, error: typed }
}
