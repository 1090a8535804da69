/**
 * Options of the public API. Durations are in milliseconds and say so in their names.
 */
import type { Logger } from './logger.ts'
import type { ConnectionOptions as ConnectionOptionsTls } from 'node:tls'
import type { Telemetry } from './telemetry.ts'

/** Where the database is and which install of the protocol to use. */
export interface ConnectionOptions {
  /** `postgres://user:password@host:port/database`. Otherwise the fields below, then the `PG*` variables. */
  connectionString?: string
  host?: string
  port?: number
  database?: string
  user?: string
  password?: string
  /**
   * TLS: `true`, or options for `tls.connect` (e.g. `{ rejectUnauthorized: false }`). `sslmode` in the
   * connection string works too. @default false
   */
  ssl?: boolean | ConnectionOptionsTls
  /** Schema the protocol was migrated into. @default 'public' */
  schema?: string
  /** Receives the library's log records (pino-compatible). Nothing is logged without it. */
  logger?: Logger
  /** `application_name` of the sessions, visible in `pg_stat_activity`. @default 'pgrr' */
  applicationName?: string
  /** Hook points for metrics and tracing (see `createMetrics()`, `createTracing()`). */
  telemetry?: Telemetry | readonly Telemetry[]
  /**
   * Named prepared statements on pooled connections (each statement parsed and planned once per
   * connection). Set `false` when `connectionString` goes through a transaction pooler that does not track
   * them (PgBouncer before 1.21, or without `max_prepared_statements`). Dedicated sessions always prepare.
   * @default true
   */
  prepare?: boolean
}

/** Options of {@link connect}. */
export interface ClientOptions extends ConnectionOptions {
  /** Connections of the pool that sends requests and acknowledgements. @default 4 */
  poolSize?: number
  /** Timeout of a request that does not set `timeoutMs`. @default 30000 */
  defaultTimeoutMs?: number
  /**
   * Most requests this client keeps in flight. Further calls wait for a slot (`overflow: 'wait'`) or fail
   * at once with `TooManyRequestsError` (`overflow: 'reject'`). Waiting requests count against their
   * timeout. @default 10000
   */
  maxInFlight?: number
  /** What `request()` does when `maxInFlight` requests are already in flight. @default 'wait' */
  overflow?: 'wait' | 'reject'
  /**
   * How often requests in flight for longer than this are checked in the table: replies whose NOTIFY was
   * lost are picked up, and requests whose responder's session died are detected (`ResponderLostError`)
   * or handed to another responder. @default 1000
   */
  checkIntervalMs?: number
  /**
   * A direct (session) connection string for the sessions that need one: the LISTEN connection and each
   * responder's session (advisory locks). Set it when `connectionString` points at a transaction-pooling
   * PgBouncer; requests and acknowledgements then go through the pooler. @default connectionString
   */
  sessionConnectionString?: string
  /**
   * At start the client checks that LISTEN delivers (it NOTIFYs itself through the pool). When it does
   * not (LISTEN through a transaction pooler), the client warns and polls for replies this often instead;
   * responders refuse to start there. @default 50
   */
  fallbackPollIntervalMs?: number
  /**
   * The client LISTENs on its reply channel only while it has requests in flight, and stops this long
   * after the last one settled: before PostgreSQL 19 every NOTIFY of the database wakes every LISTENing
   * session, so an idle client that kept listening would slow down every other process's requests. The
   * next request waits for LISTEN again (one round trip). @default 5000
   */
  replyListenIdleMs?: number
}

/** Options of one request. */
export interface RequestOptions {
  /** Give up after this long: the request rejects with `TimeoutError` and is cancelled. @default 30000 */
  timeoutMs?: number
  /** Aborting it rejects the request with `CancelledError` and cancels it at the responder. */
  signal?: AbortSignal
  /** Small string map carried with the request to the handler. */
  headers?: Record<string, string>
  /**
   * Attempts before the request is reported lost when responders die while holding it. 1 (the default,
   * or the channel's setting) is at-most-once: no handler ever runs twice for one request. More makes it
   * at-least-once: a request whose responder's session ended goes to another responder.
   */
  maxAttempts?: number
}

/** Options of {@link Client.serve}. */
export interface ServeOptions {
  /** Most handlers running at once in this responder. @default 10 */
  concurrency?: number
  /**
   * Safety net for lost notifications: how often the responder looks for pending requests even without
   * a NOTIFY. @default 2000
   */
  pollIntervalMs?: number
  /**
   * How often expired requests are deleted, requests of dead responders reaped and the table vacuumed, and
   * this responder's counters written for `pgrr status`. The sweeps are the client's: one for all its
   * responders, at the shortest interval of those running. @default 5000
   */
  sweepIntervalMs?: number
  /** `drain()` waits this long for running handlers, then aborts them. @default 30000 */
  drainTimeoutMs?: number
  /** What the service does, for `pgrr info` and `client.services()`. */
  description?: string
  /** The service's version, for `pgrr info` and `client.services()`. */
  version?: string
  /** JSON Schema of the request payload, for `pgrr info` (typed services fill it in when their validator can). */
  requestSchema?: unknown
  /** JSON Schema of the reply, for `pgrr info` (typed services fill it in when their validator can). */
  replySchema?: unknown
}
