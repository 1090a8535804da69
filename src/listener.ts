/**
 * The one LISTEN connection of a client process: a dedicated session outside the pool that every caller
 * and responder of the client shares. NOTIFY is only a hint, so what matters here is knowing when hints may
 * have been missed: after the connection breaks it reconnects with jittered backoff, LISTENs again on every
 * channel, and then runs the reconnect hooks, which re-read the table (the truth).
 */
import { createSql, quoteIdentifier, type Sql } from './connection.ts'
import { ClosedError, ConnectionError } from './errors.ts'
import { silentLogger, type Logger } from './logger.ts'
import type { ConnectionOptions } from './options.ts'

/** Receives the payload of each notification on a channel. */
export type NotificationHandler = (payload: string) => void

export interface ListenerOptions extends ConnectionOptions {
  /** Direct (non-pooled) URL for this session, when the main one goes through a transaction pooler. */
  sessionConnectionString?: string
  /** How often the session is asked which channels it listens on, to catch a silent loss. @default 30000 */
  healthCheckIntervalMs?: number
}

type State = 'new' | 'connected' | 'reconnecting' | 'closed'

const maxBackoffMs = 5000

export class Listener {
  readonly #options: ListenerOptions
  #sql: Sql
  readonly #logger: Logger
  readonly #handlers = new Map<string, Set<NotificationHandler>>()
  readonly #reconnectHooks = new Set<() => void>()
  readonly #healthTimer: NodeJS.Timeout
  #state: State = 'new'
  #failures = 0
  #retryTimer: NodeJS.Timeout | undefined
  #reconnecting: Promise<void> | undefined

  constructor(options: ListenerOptions) {
    this.#logger = options.logger ?? silentLogger
    this.#options = options
    this.#sql = this.#createSql()
    this.#healthTimer = setInterval(() => void this.#healthCheck(), options.healthCheckIntervalMs ?? 30000)
    this.#healthTimer.unref()
  }

  /** True while the session is up and listening on every channel. */
  get connected(): boolean {
    return this.#state === 'connected'
  }

  /** Opens the session. Throws `ConnectionError` when the database cannot be reached. */
  async start(): Promise<void> {
    try {
      await this.#sql`select 1`
      this.#state = 'connected'
    } catch (error) {
      throw new ConnectionError(`cannot open the LISTEN connection: ${(error as Error).message}`, { cause: error })
    }
  }

  /** Calls `handler` for every notification on `channel` until the returned function is called. */
  async listen(channel: string, handler: NotificationHandler): Promise<() => Promise<void>> {
    if (this.#state === 'closed') throw new ClosedError('the listener is closed')
    let handlers = this.#handlers.get(channel)
    if (handlers === undefined) {
      handlers = new Set()
      this.#handlers.set(channel, handlers)
    }
    handlers.add(handler)
    // While reconnecting, the reconnect LISTENs on every registered channel, this one included.
    if (handlers.size === 1 && this.#state === 'connected') {
      try {
        await this.#sql.unsafe(`listen ${quoteIdentifier(channel)}`)
      } catch (error) {
        if (this.#state === 'connected') {
          handlers.delete(handler)
          throw new ConnectionError(`LISTEN failed: ${(error as Error).message}`, { cause: error })
        }
      }
    }
    return async () => {
      const current = this.#handlers.get(channel)
      if (current === undefined || !current.delete(handler) || current.size > 0) return
      this.#handlers.delete(channel)
      if (this.#state === 'connected') {
        await this.#sql.unsafe(`unlisten ${quoteIdentifier(channel)}`).catch(() => undefined)
      }
    }
  }

  /** Runs `hook` after every reconnect, once LISTEN is back on every channel. Returns its remover. */
  onReconnect(hook: () => void): () => void {
    this.#reconnectHooks.add(hook)
    return () => this.#reconnectHooks.delete(hook)
  }

  /** Closes the session. Idempotent. */
  async close(): Promise<void> {
    if (this.#state === 'closed') return
    this.#state = 'closed'
    clearInterval(this.#healthTimer)
    clearTimeout(this.#retryTimer)
    this.#handlers.clear()
    this.#reconnectHooks.clear()
    await this.#sql.end({ timeout: 2 }).catch(() => undefined)
  }

  #createSql(): Sql {
    const sql: Sql = createSql(this.#options, {
      max: 1,
      dedicated: true,
      connectionString: this.#options.sessionConnectionString,
      onnotify: (channel, payload) => this.#dispatch(channel, payload),
      // Only the current instance's session matters; a replaced one closing is expected.
      onclose: () => {
        if (sql === this.#sql) this.#connectionLost()
      },
    })
    return sql
  }

  #dispatch(channel: string, payload: string): void {
    const handlers = this.#handlers.get(channel)
    if (handlers === undefined) return
    for (const handler of handlers) {
      try {
        handler(payload)
      } catch (error) {
        this.#logger.error({ err: error, channel }, 'notification handler threw')
      }
    }
  }

  #connectionLost(): void {
    if (this.#state === 'closed' || this.#state === 'new') return
    if (this.#state === 'connected') this.#logger.warn('LISTEN connection lost; reconnecting')
    this.#state = 'reconnecting'
    this.#scheduleReconnect()
  }

  #scheduleReconnect(): void {
    if (this.#retryTimer !== undefined || this.#reconnecting !== undefined || this.#state === 'closed') return
    // Full jitter: processes that lost the server together do not come back together.
    const ceiling = Math.min(maxBackoffMs, 50 * 2 ** this.#failures)
    const delay = this.#failures === 0 ? Math.random() * 50 : Math.random() * ceiling
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined
      this.#reconnecting = this.#reconnect().finally(() => (this.#reconnecting = undefined))
    }, delay)
  }

  async #reconnect(): Promise<void> {
    const statements = [...this.#handlers.keys()].map((channel) => `listen ${quoteIdentifier(channel)}`)
    try {
      await this.#sql.unsafe(statements.length > 0 ? statements.join(';') : 'select 1')
    } catch (error) {
      this.#failures++
      this.#logger.warn({ err: error, attempt: this.#failures }, 'LISTEN reconnect failed')
      // A postgres.js instance whose connection broke during its startup can stay stuck, failing every
      // later attempt (CONNECT_TIMEOUT): the next attempt gets a fresh instance.
      const stuck = this.#sql
      this.#sql = this.#createSql()
      void stuck.end({ timeout: 0 }).catch(() => undefined)
      if (this.#state !== 'closed') this.#scheduleReconnect()
      return
    }
    if (this.#state === 'closed') return
    this.#failures = 0
    this.#state = 'connected'
    this.#logger.info({ channels: statements.length }, 'LISTEN connection restored')
    for (const hook of this.#reconnectHooks) {
      try {
        hook()
      } catch (error) {
        this.#logger.error({ err: error }, 'reconnect hook threw')
      }
    }
  }

  async #healthCheck(): Promise<void> {
    if (this.#state !== 'connected') return
    try {
      const rows = await this.#sql`select pg_listening_channels() as channel`
      const listening = new Set(rows.map((row) => row.channel as string))
      const missing = [...this.#handlers.keys()].filter((channel) => !listening.has(channel))
      if (missing.length > 0 && this.#state === 'connected') {
        this.#logger.warn({ missing }, 'LISTEN registrations missing; listening again')
        await this.#sql.unsafe(missing.map((channel) => `listen ${quoteIdentifier(channel)}`).join(';'))
        for (const hook of this.#reconnectHooks) hook()
      }
    } catch (error) {
      // A broken session also fires onclose, which reconnects; this only records it.
      this.#logger.debug({ err: error }, 'LISTEN health check failed')
    }
  }
}
