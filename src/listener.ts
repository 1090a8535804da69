/**
 * The one LISTEN connection of a client process: a dedicated session outside the pool that every caller
 * and responder of the client shares. NOTIFY is only a hint, so what matters here is knowing when hints may
 * have been missed: after the connection breaks it reconnects with jittered backoff on a new session,
 * LISTENs again on every channel, and then runs the reconnect hooks, which re-read the table (the truth).
 */
import { retryDelayMs } from './backoff.ts'
import { createSession, endSession, query, quoteIdentifier, type Session } from './database.ts'
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

/** Longest wait for an UNLISTEN (see listen()). */
const unlistenTimeoutMs = 2000

export class Listener {
  readonly #options: ListenerOptions
  readonly #logger: Logger
  readonly #handlers = new Map<string, Set<NotificationHandler>>()
  readonly #reconnectHooks = new Set<() => void>()
  readonly #healthTimer: NodeJS.Timeout
  #session: Session | undefined
  #state: State = 'new'
  #failures = 0
  #retryTimer: NodeJS.Timeout | undefined
  #reconnecting = false

  constructor(options: ListenerOptions) {
    this.#options = options
    this.#logger = options.logger ?? silentLogger
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
      this.#session = await this.#connect([])
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
    const session = this.#session
    if (handlers.size === 1 && this.#state === 'connected' && session !== undefined) {
      try {
        await query(session, `listen ${quoteIdentifier(channel)}`, [], false)
      } catch (error) {
        // LISTEN fails on a broken session (one terminated a moment ago may not have said so yet): the
        // handler stays, and a new session LISTENs on every channel and then runs the reconnect hooks.
        if (this.#state === 'connected' && session === this.#session) {
          this.#logger.warn({ err: error, channel }, 'LISTEN failed; reconnecting')
          void endSession(session)
        }
      }
    }
    return async () => {
      const current = this.#handlers.get(channel)
      if (current === undefined || !current.delete(handler) || current.size > 0) return
      this.#handlers.delete(channel)
      if (this.#state === 'connected') {
        const session = this.#session
        if (session === undefined) return
        // Bounded: a session that stopped answering must not hold up a drain or a close. A notification
        // that still arrives on the channel finds no handler.
        let timer: NodeJS.Timeout | undefined
        await Promise.race([
          query(session, `unlisten ${quoteIdentifier(channel)}`, [], false).catch(() => undefined),
          new Promise((resolve) => (timer = setTimeout(resolve, unlistenTimeoutMs))),
        ])
        clearTimeout(timer)
      }
    }
  }

  /** The channels the session LISTENs on, as the server reports them (`pg_listening_channels()`). */
  async listeningChannels(): Promise<string[]> {
    const session = this.#session
    if (this.#state !== 'connected' || session === undefined) throw new ConnectionError('the LISTEN connection is not up')
    const rows = await query<{ channel: string }>(session, 'select pg_listening_channels() as channel', [], false)
    return rows.map((row) => row.channel)
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
    const session = this.#session
    this.#session = undefined
    if (session !== undefined) await endSession(session)
  }

  /** A new session listening on `channels`. */
  async #connect(channels: string[]): Promise<Session> {
    const session: Session = createSession(this.#options, {
      onNotification: (channel, payload) => {
        if (session === this.#session) this.#dispatch(channel, payload)
      },
      onEnd: () => {
        if (session === this.#session) this.#connectionLost()
      },
    })
    try {
      await session.connect()
      if (channels.length > 0) await query(session, channels.map((channel) => `listen ${quoteIdentifier(channel)}`).join(';'), [], false)
    } catch (error) {
      await endSession(session)
      throw error
    }
    return session
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
    this.#session = undefined
    this.#scheduleReconnect()
  }

  #scheduleReconnect(): void {
    if (this.#retryTimer !== undefined || this.#reconnecting || this.#state === 'closed') return
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined
      void this.#reconnect()
    }, retryDelayMs(this.#failures))
  }

  async #reconnect(): Promise<void> {
    this.#reconnecting = true
    let session: Session
    const channels = [...this.#handlers.keys()]
    const listened = new Set(channels)
    try {
      session = await this.#connect(channels)
      // Channels registered while this connected (or while it listened on those) were not in the list it
      // listened on: until none is left, since the session takes over without an await in between.
      let added: string[]
      while ((added = [...this.#handlers.keys()].filter((channel) => !listened.has(channel))).length > 0) {
        await query(session, added.map((channel) => `listen ${quoteIdentifier(channel)}`).join(';'), [], false).catch(async (error: unknown) => {
          await endSession(session)
          throw error
        })
        for (const channel of added) listened.add(channel)
      }
    } catch (error) {
      this.#failures++
      this.#logger.warn({ err: error, attempt: this.#failures }, 'LISTEN reconnect failed')
      this.#reconnecting = false
      if (this.#state !== 'closed') this.#scheduleReconnect()
      return
    }
    this.#reconnecting = false
    if (this.#state === 'closed') return void endSession(session)
    this.#session = session
    this.#failures = 0
    this.#state = 'connected'
    // And channels whose last handler went meanwhile: nobody would ever UNLISTEN them on this session.
    const gone = [...listened].filter((channel) => !this.#handlers.has(channel))
    if (gone.length > 0) void query(session, gone.map((channel) => `unlisten ${quoteIdentifier(channel)}`).join(';'), [], false).catch(() => undefined)
    this.#logger.info({ channels: this.#handlers.size }, 'LISTEN connection restored')
    this.#runReconnectHooks()
  }

  #runReconnectHooks(): void {
    for (const hook of this.#reconnectHooks) {
      try {
        hook()
      } catch (error) {
        this.#logger.error({ err: error }, 'reconnect hook threw')
      }
    }
  }

  async #healthCheck(): Promise<void> {
    const session = this.#session
    if (this.#state !== 'connected' || session === undefined) return
    try {
      const rows = await query<{ channel: string }>(session, 'select pg_listening_channels() as channel', [], false)
      const listening = new Set(rows.map((row) => row.channel))
      const missing = [...this.#handlers.keys()].filter((channel) => !listening.has(channel))
      if (missing.length > 0 && session === this.#session) {
        this.#logger.warn({ missing }, 'LISTEN registrations missing; listening again')
        await query(session, missing.map((channel) => `listen ${quoteIdentifier(channel)}`).join(';'), [], false)
        this.#runReconnectHooks()
      }
    } catch (error) {
      // A broken session also ends, which reconnects; this only records it.
      this.#logger.debug({ err: error }, 'LISTEN health check failed')
    }
  }
}
