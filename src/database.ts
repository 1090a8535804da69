/**
 * Connections, with node-postgres (`pg`). Every connection of the library is made here, so names,
 * timeouts, keepalive and error handling are set in one place.
 *
 * Two kinds: a pool, for statements that may run on any session (requests, acknowledgements, sweeps),
 * and a session, a dedicated connection whose session state is the point (the LISTEN connection, a
 * responder's advisory locks). A session is never reused after it ends: callers make a new one.
 *
 * Driver choice, measured (docs/benchmarks.md, "Driver: postgres.js or node-postgres"): postgres.js and pg tie on throughput here and
 * pg has the lower tail under load; postgres.js 3.4.9 can also throw an uncatchable TypeError from a
 * queued write when the backend of a pinned connection dies (porsager/postgres#1208), which for a
 * library whose dedicated sessions are terminated on purpose is disqualifying.
 */
import pg from 'pg'
import { silentLogger, type Logger } from './logger.ts'
import type { ConnectionOptions } from './options.ts'

export type Pool = pg.Pool
export type Session = pg.Client
/** Anything a statement can run on. */
export type Queryable = pg.Pool | pg.Client | pg.PoolClient

/** Settings shared by pools and sessions. */
function settings(options: ConnectionOptions, connectionString: string | undefined): pg.ClientConfig {
  const config: pg.ClientConfig = {
    connectionString,
    host: options.host,
    port: options.port,
    database: options.database,
    user: options.user,
    password: options.password,
    ssl: options.ssl,
    application_name: options.applicationName ?? 'pgrr',
    keepAlive: true,
    keepAliveInitialDelayMillis: 10_000,
    connectionTimeoutMillis: 10_000,
  }
  for (const key of Object.keys(config) as (keyof pg.ClientConfig)[]) {
    if (config[key] === undefined) delete config[key]
  }
  return config
}

/** A pool. An idle connection that breaks is dropped and logged, never thrown. */
export function createPool(options: ConnectionOptions, max: number): Pool {
  const logger = options.logger ?? silentLogger
  const pool = new pg.Pool({
    ...settings(options, options.connectionString),
    max,
    idleTimeoutMillis: 60_000,
    maxLifetimeSeconds: 30 * 60,
  })
  pool.on('error', (error) => logger.debug({ err: error }, 'an idle pooled connection failed'))
  pool.on('connect', (client) => client.on('notice', (notice) => logger.debug({ notice: notice.message }, 'postgres notice')))
  return pool
}

export interface SessionHandlers {
  /** Every NOTIFY this session receives. */
  onNotification?: (channel: string, payload: string) => void
  /** The connection ended (error or close). Called once. */
  onEnd?: () => void
}

/** What a dedicated session connects with: `sessionConnectionString` when set, else `connectionString`. */
export type SessionOptions = ConnectionOptions & { sessionConnectionString?: string }

/**
 * A dedicated session, not yet connected (call `connect()`). Uses `sessionConnectionString` when set:
 * sessions need a direct connection, not a transaction pooler.
 */
export function createSession(options: SessionOptions, handlers: SessionHandlers = {}): Session {
  const logger: Logger = options.logger ?? silentLogger
  const client = new pg.Client(settings(options, options.sessionConnectionString ?? options.connectionString))
  // Without a listener an 'error' event would crash the process; 'end' follows it and reports the loss.
  client.on('error', (error) => logger.debug({ err: error }, 'session connection error'))
  client.on('notice', (notice) => logger.debug({ notice: notice.message }, 'postgres notice'))
  const onEnd = handlers.onEnd
  if (onEnd !== undefined) client.once('end', onEnd)
  const onNotification = handlers.onNotification
  if (onNotification !== undefined) client.on('notification', (message) => onNotification(message.channel, message.payload ?? ''))
  return client
}

/**
 * Ends a session without waiting long and without throwing (it may be broken already). A session that has
 * not ended after a second (it waits for the statements it has sent; an unreachable server never
 * answers) has its socket destroyed, so that the server ends the session and releases its locks.
 */
export async function endSession(session: Session): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  const ended = await Promise.race([
    session.end().then(
      () => true,
      () => true,
    ),
    new Promise<boolean>((resolve) => (timer = setTimeout(resolve, 1000, false)).unref()),
  ])
  clearTimeout(timer)
  if (!ended) session.connection.stream.destroy()
}

const statementNames = new Map<string, string>()
/** The last statement queued on each session: node-postgres runs one at a time and wants callers to wait. */
const sessionTails = new WeakMap<pg.Client, Promise<unknown>>()

/** Runs a statement on the pool, prepared unless the pool turned out to be a transaction pooler. */
export type PoolQuery = <Row = Record<string, unknown>>(text: string, values?: unknown[]) => Promise<Row[]>

/**
 * Runs one of the library's statements. `prepare` (the default) makes it a named prepared statement:
 * parsed and planned once per connection. Turn it off through a transaction pooler that does not track
 * prepared statements.
 */
export async function query<Row = Record<string, unknown>>(
  db: Queryable,
  text: string,
  values: unknown[] = [],
  prepare = true,
): Promise<Row[]> {
  let name: string | undefined
  if (prepare) {
    name = statementNames.get(text)
    if (name === undefined) {
      name = `pgrr_${statementNames.size + 1}`
      statementNames.set(text, name)
    }
  }
  const config = name === undefined ? { text, values } : { name, text, values }
  if (!(db instanceof pg.Client)) return (await db.query<Row & pg.QueryResultRow>(config)).rows
  // A session runs its statements in order; queue behind the previous one (its failure is not ours).
  const previous = sessionTails.get(db) ?? Promise.resolve()
  const run = previous.then(() => db.query<Row & pg.QueryResultRow>(config))
  sessionTails.set(db, run.catch(() => undefined))
  return (await run).rows
}

/** Quotes an identifier for SQL text: the one identifier this library substitutes is the schema. */
export function quoteIdentifier(name: string): string {
  return '"' + name.replace(/"/g, '""') + '"'
}

/** Quotes a string literal for SQL text (migrations only; queries use parameters). */
export function quoteLiteral(value: string): string {
  return "'" + value.replace(/'/g, "''") + "'"
}

/** Closes a pool without waiting on a broken connection for long, and without throwing. */
export async function endPool(pool: Pool): Promise<void> {
  await Promise.race([pool.end().catch(() => undefined), new Promise((resolve) => setTimeout(resolve, 2000).unref())])
}

/**
 * Runs `fn` in a transaction on one pooled connection: committed when it resolves, rolled back when it
 * throws. `mode` is appended to BEGIN (e.g. `'read only'`).
 */
export async function withTransaction<T>(pool: Pool, fn: (client: pg.PoolClient) => Promise<T>, mode = ''): Promise<T> {
  const client = await pool.connect()
  let broken = false
  try {
    await client.query(mode === '' ? 'begin' : `begin ${mode}`)
    const result = await fn(client)
    await client.query('commit')
    return result
  } catch (error) {
    await client.query('rollback').catch(() => {
      broken = true
    })
    throw error
  } finally {
    // A connection that could not even roll back is not given back to the pool.
    client.release(broken)
  }
}
