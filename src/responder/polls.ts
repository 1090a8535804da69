/**
 * The polls of one client's responders (pgrr_pending_channels, 07_claim.sql): the safety net for a lost
 * NOTIFY. Every poll interval (the shortest of the running responders'), one statement on the pool asks
 * which of their channels have pending requests, and only the responders of those claim. A process
 * serving 100 channels otherwise ran 50 claims a second while idle, each on its own session.
 */
import type { PoolQuery } from '../database.ts'
import type { Logger } from '../logger.ts'
import type { Statements } from '../statements.ts'

export interface PollsOptions {
  readonly poolQuery: PoolQuery
  readonly statements: Statements
  readonly logger: Logger
}

/** A responder, as it is polled for. */
export interface PollMember {
  /** The channel of its current registration; undefined between sessions (not polled for then). */
  readonly channelId: () => number | undefined
  /** Claims what it has free slots for (claim.ts). */
  readonly wake: () => void
}

/** The polls of the responders of one client. */
export class Polls {
  readonly #options: PollsOptions
  /** The poll interval of each running responder. */
  readonly #members = new Map<PollMember, number>()
  #timer: NodeJS.Timeout | undefined
  #intervalMs: number | undefined
  #polling = false

  constructor(options: PollsOptions) {
    this.#options = options
  }

  /** A responder starts: it is polled for every `intervalMs` or sooner, until the returned leave() is called. */
  join(member: PollMember, intervalMs: number): () => void {
    this.#members.set(member, intervalMs)
    this.#arm()
    return () => {
      if (this.#members.delete(member)) this.#arm()
    }
  }

  /** The interval changed (a responder joined or left). */
  #arm(): void {
    const intervalMs = this.#members.size === 0 ? undefined : Math.min(...this.#members.values())
    if (intervalMs === this.#intervalMs) return
    clearInterval(this.#timer)
    this.#timer = undefined
    this.#intervalMs = intervalMs
    if (intervalMs === undefined) return
    // Unreferenced: the sessions keep the process alive.
    this.#timer = setInterval(() => void this.#poll(), intervalMs)
    this.#timer.unref()
  }

  /** One poll, unless the last one is still on its way (a slow pool must not pile them up). */
  async #poll(): Promise<void> {
    if (this.#polling) return
    // The responders polled for, by the channel of their registration (between sessions: not polled for).
    const polled = new Map<PollMember, number>()
    for (const member of this.#members.keys()) {
      const channelId = member.channelId()
      if (channelId !== undefined) polled.set(member, channelId)
    }
    if (polled.size === 0) return
    this.#polling = true
    const { poolQuery, statements, logger } = this.#options
    try {
      const rows = await poolQuery<{ channel_id: number }>(statements.pendingChannels, [[...new Set(polled.values())]])
      const pending = new Set(rows.map((row) => row.channel_id))
      // Those still running: one may have left while the statement ran.
      for (const [member, channelId] of polled) if (pending.has(channelId) && this.#members.has(member)) member.wake()
    } catch (error) {
      logger.debug({ err: error }, 'poll failed')
    } finally {
      this.#polling = false
    }
  }
}
