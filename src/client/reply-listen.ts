/**
 * The LISTEN on a client's reply channel, held only while the client has requests in flight. Before
 * PostgreSQL 19 every NOTIFY of a database signals every session of that database that LISTENs, whatever
 * its channels: a client that stayed LISTENing while idle made every request of every other process of the
 * deployment slower (docs/benchmarks.md, "Fleet size"). So a send after a quiet spell first waits for its
 * LISTEN, and UNLISTEN follows once nothing has been in flight for `idleMs`.
 *
 * No reply is missed for it: UNLISTEN is sent only while nothing is in flight, and a request is stored only
 * once LISTEN is in place, after any UNLISTEN still on its way (one session runs them in order, and each
 * waits for the one before). The quiet period only saves a LISTEN/UNLISTEN pair per burst; correctness
 * does not depend on it, and the recovery check (the table) stays what catches a missed notification.
 */
import { toPgrrError } from '../database-error.ts'
import type { PoolQuery } from '../database.ts'
import type { Listener, NotificationHandler } from '../listener.ts'
import type { Logger } from '../logger.ts'

export interface ReplyListenOptions {
  readonly listener: Listener
  readonly channel: string
  readonly onReplies: NotificationHandler
  /** How long nothing must be in flight before UNLISTEN. */
  readonly idleMs: number
  /** Nothing in flight, nothing waiting to be sent. */
  readonly idle: () => boolean
  readonly logger: Logger
}

export class ReplyListen {
  readonly #options: ReplyListenOptions
  /** LISTEN in place, or on its way; undefined while not listening. */
  #listening: Promise<void> | undefined
  #unlisten: (() => Promise<void>) | undefined
  /** The last LISTEN or UNLISTEN started: the next one starts after it has ended. */
  #last: Promise<unknown> = Promise.resolve()
  #timer: NodeJS.Timeout | undefined
  #closed = false

  constructor(options: ReplyListenOptions) {
    this.#options = options
  }

  /** Whether LISTEN is in place or on its way (false once UNLISTEN has been decided). */
  get listening(): boolean {
    return this.#listening !== undefined
  }

  /**
   * Resolves once the reply channel is LISTENed on, or is registered with a listener that is reconnecting
   * (its reconnect LISTENs, then the recovery check re-reads every request in flight); sends wait for it.
   * Rejects only when the listener is closed; the next call tries again.
   */
  ready(): Promise<void> {
    clearTimeout(this.#timer)
    this.#timer = undefined
    if (this.#listening === undefined) {
      const { listener, channel, onReplies } = this.#options
      const listening = this.#last.then(async () => {
        this.#unlisten = await listener.listen(channel, onReplies)
      })
      this.#listening = listening
      this.#last = listening.catch(() => undefined)
      listening.catch(() => {
        if (this.#listening === listening) this.#listening = undefined
      })
    }
    return this.#listening
  }

  /** Nothing is in flight now: UNLISTEN once that has lasted `idleMs`. */
  quiet(): void {
    if (this.#listening === undefined || this.#timer !== undefined || this.#closed) return
    this.#timer = setTimeout(() => {
      this.#timer = undefined
      // A request admitted meanwhile keeps the LISTEN; its settling calls quiet() again.
      if (!this.#closed && this.#options.idle()) this.#stop()
    }, this.#options.idleMs)
    this.#timer.unref()
  }

  /** The client is closing: no more UNLISTEN timers (closing the listener ends every LISTEN). */
  close(): void {
    this.#closed = true
    clearTimeout(this.#timer)
  }

  #stop(): void {
    this.#listening = undefined
    const stopping = this.#last.then(async () => {
      const unlisten = this.#unlisten
      this.#unlisten = undefined
      await unlisten?.()
      this.#options.logger.debug({ channel: this.#options.channel }, 'idle: reply channel no longer LISTENed on')
    })
    this.#last = stopping.catch(() => undefined)
  }
}

/**
 * Whether LISTEN delivers on this database: NOTIFYs `channel` through the pool and waits (3 s) for the
 * LISTEN connection to receive it. It does not through a transaction pooler; then replies are polled for.
 */
export async function listenDelivers(listener: Listener, query: PoolQuery, channel: string): Promise<boolean> {
  let received!: () => void
  const arrived = new Promise<boolean>((resolve) => (received = () => resolve(true)))
  const unlisten = await listener.listen(channel, () => received())
  let timer: NodeJS.Timeout | undefined
  try {
    await query('select pg_notify($1, $2)', [channel, 'probe'])
    // Generous: a busy database must not pass for a pooler (polling mode cannot serve and is slower).
    return await Promise.race([arrived, new Promise<boolean>((resolve) => (timer = setTimeout(resolve, 3000, false)))])
  } catch (error) {
    throw toPgrrError(error)
  } finally {
    clearTimeout(timer)
    await unlisten()
  }
}
