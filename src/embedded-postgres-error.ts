// What goes wrong when an embedded PostgreSQL server starts (src/embedded-postgres.ts).

/** What went wrong while starting an embedded PostgreSQL server. */
export type EmbeddedPostgresErrorCode =
  | 'BINARIES_NOT_FOUND'
  | 'UNSUPPORTED_PLATFORM'
  | 'NO_UNPRIVILEGED_USER'
  | 'INITDB_FAILED'
  | 'PORT_IN_USE'
  | 'START_FAILED'
  | 'START_TIMEOUT'

/** Thrown by {@link startEmbeddedPostgres}; `code` says which step failed. */
export class EmbeddedPostgresError extends Error {
  override readonly name = 'EmbeddedPostgresError'
  readonly code: EmbeddedPostgresErrorCode

  constructor(code: EmbeddedPostgresErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.code = code
  }
}
