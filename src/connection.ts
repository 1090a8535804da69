/**
 * Builds postgres.js instances from {@link ConnectionOptions}. Every connection of the library is made
 * here, so notices, names and timeouts are set in one place.
 */
import postgres from 'postgres'
import type { ConnectionOptions } from './options.ts'
import { silentLogger } from './logger.ts'

/** A postgres.js instance. */
// eslint-disable-next-line @typescript-eslint/no-empty-object-type
export type Sql = postgres.Sql<{}>

/** What kind of connection, which decides pooling and lifetime. */
export interface SqlRole {
  /** Connections in the instance. */
  max: number
  /**
   * A dedicated session (LISTEN, or a responder's locks): never recycled by lifetime or idleness,
   * because its session state is the point.
   */
  dedicated: boolean
  /** Use this URL instead of `connectionString` (the direct URL of the LISTEN connection). */
  connectionString?: string
  onnotify?: (channel: string, payload: string) => void
  onclose?: () => void
}

/** Creates a postgres.js instance for one role. Connections open lazily, on the first query. */
export function createSql(options: ConnectionOptions, role: SqlRole): Sql {
  const logger = options.logger ?? silentLogger
  const url = role.connectionString ?? options.connectionString
  const settings: Record<string, unknown> = {
    max: role.max,
    host: options.host,
    port: options.port,
    database: options.database,
    username: options.user,
    password: options.password,
    ssl: options.ssl,
    // Only the first connection attempt should wait long; a dead server is reported by the caller.
    connect_timeout: 10,
    keep_alive: 30,
    // 0 turns both off.
    idle_timeout: role.dedicated ? 0 : 60,
    max_lifetime: role.dedicated ? 0 : 60 * 30,
    fetch_types: !role.dedicated || role.onnotify === undefined,
    connection: { application_name: options.applicationName ?? 'pgrr' },
    onnotice: (notice: postgres.Notice) => logger.debug({ notice: notice.message }, 'postgres notice'),
    // Not in postgres.js's typings, but an option of its own: every NotificationResponse of the instance.
    onnotify: role.onnotify,
    onclose: role.onclose,
  }
  for (const key of Object.keys(settings)) {
    if (settings[key] === undefined) delete settings[key]
  }
  // eslint-disable-next-line @typescript-eslint/no-empty-object-type
  const typed = settings as postgres.Options<{}>
  return url === undefined ? postgres(typed) : postgres(url, typed)
}

/** Quotes an identifier for SQL text: the one identifier this library substitutes is the schema. */
export function quoteIdentifier(name: string): string {
  return '"' + name.replace(/"/g, '""') + '"'
}

/** Quotes a string literal for SQL text (migrations only; queries use parameters). */
export function quoteLiteral(value: string): string {
  return "'" + value.replace(/'/g, "''") + "'"
}

/** Serialises booleans as a PostgreSQL array literal: postgres.js would type a JS boolean array wrongly. */
export function booleanArray(values: readonly boolean[]): string {
  return '{' + values.map((value) => (value ? 't' : 'f')).join(',') + '}'
}

/**
 * Runs one of the library's statements as a named prepared statement: one round trip, planned once per
 * connection. (postgres.js's `unsafe` otherwise sends an unnamed statement and describes it first, which
 * costs a second round trip on every call.)
 */
export async function query<Row = Record<string, unknown>>(sql: Sql, text: string, parameters: unknown[] = []): Promise<Row[]> {
  return (await sql.unsafe(text, parameters as never[], { prepare: true })) as unknown as Row[]
}
