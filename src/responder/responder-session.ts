/**
 * The session a client's responders register on (05_registration.sql): one for all of them, however many
 * channels they serve, so that a process needs a session for its responders rather than one per channel.
 * Its advisory locks are what callers block on and what tells them a responder died, so it is never
 * pooled. One registration ends with pgrr_release while the others go on; the last one ends the session.
 * When the session is lost, every registration on it is lost with it, and each registers again on the next
 * one, which the first of them opens.
 */
import { createSession, endSession, query, type Session, type SessionOptions } from '../database.ts'
import { toPgrrError } from '../database-error.ts'
import type { Logger } from '../logger.ts'
import type { Statements } from '../statements.ts'

/** A responder registered on the session: told when it is lost. */
export interface SessionMember {
  readonly lost: (session: Session) => void
}

/** The responders' session of one client. */
export class ResponderSession {
  readonly #options: SessionOptions
  readonly #statements: Statements
  readonly #logger: Logger
  #session: Session | undefined
  #opening: Promise<Session> | undefined
  /** The members on the current session. */
  #members = new Set<SessionMember>()
  /** The client closes: its servers leave without releasing, and the last one ends the session. */
  #closing = false

  constructor(options: {
    connection: SessionOptions
    statements: Statements
    logger: Logger
  }) {
    this.#options = options.connection
    this.#statements = options.statements
    this.#logger = options.logger
  }

  /** The session, opened if there is none; `member` is told when it is lost, until it leaves. */
  async join(member: SessionMember): Promise<Session> {
    let session = this.#session
    if (session === undefined) {
      this.#opening ??= this.#open().finally(() => (this.#opening = undefined))
      session = await this.#opening
    }
    this.#members.add(member)
    return session
  }

  /** Whether `session` is the current one (not lost, not ended). */
  isCurrent(session: Session): boolean {
    return session === this.#session
  }

  /**
   * `member` leaves `session`, with its registration `responderId` (undefined: it has none there, its
   * registration failed). The last member ends the session, which releases every lock at once; any other
   * releases its own registration (pgrr_release, which also gives back what a failed statement left
   * behind) and the session goes on. Waits at most `waitMs` for the release (it runs behind the statements
   * queued on the session); when the release fails, the session is ended: no lock of the registration may
   * stay behind, and the others register again.
   */
  async leave(member: SessionMember, session: Session, responderId: number | undefined, waitMs: number): Promise<void> {
    if (session !== this.#session || !this.#members.delete(member)) return
    if (this.#members.size === 0) {
      this.#session = undefined
      await endWithLocks(session, waitMs)
      return
    }
    if (this.#closing) return
    const released = query(session, this.#statements.release, [responderId ?? null]).then(
      () => undefined,
      (error: unknown) => {
        this.#logger.warn({ err: error }, 'releasing a registration failed; ending the responders\' session')
        if (session === this.#session) this.#lose(session)
        void endSession(session)
      },
    )
    await within(released, waitMs)
  }

  /** The client closes: its servers leave without a release each; the last ends the session. */
  close(): void {
    this.#closing = true
  }

  async #open(): Promise<Session> {
    const session: Session = createSession(this.#options, {
      onEnd: () => {
        if (session === this.#session) this.#lose(session)
      },
    })
    try {
      await session.connect()
    } catch (error) {
      await endSession(session)
      throw toPgrrError(error)
    }
    this.#session = session
    return session
  }

  /** The session is gone: its locks with it. Each member is told. */
  #lose(session: Session): void {
    this.#session = undefined
    const members = this.#members
    this.#members = new Set()
    for (const member of members) member.lost(session)
  }
}

/**
 * Ends a session after giving back its advisory locks on purpose, behind any statement still running:
 * node-postgres cuts the connection under a running statement, and the server would hold the responder
 * locks until it noticed. Once this resolves, no send picks its responders (unless the server took longer
 * than `waitMs` to answer).
 */
async function endWithLocks(session: Session, waitMs: number): Promise<void> {
  await within(query(session, 'select pg_advisory_unlock_all()', []).catch(() => undefined), waitMs)
  await endSession(session)
}

/** Waits for `work`, or `ms` at most (the work goes on behind). */
async function within(work: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  await Promise.race([work, new Promise((resolve) => (timer = setTimeout(resolve, ms)))])
  clearTimeout(timer)
}
