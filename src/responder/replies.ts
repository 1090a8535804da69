/**
 * Writing outcomes (09_reply.sql): every request a responder holds gets one, even a cancelled one, since
 * writing it is what releases the request. The outcomes of all of a client's responders wait in one queue
 * (ReplyQueue): those finished in the same turn go in one statement (pgrr_reply) whatever channel they are
 * of, on the session of the responder with the most of them (the client's responders share one: every
 * outcome is written there); the statement gives back those of SQL callers of a responder registered on
 * another session, which that session writes. A lone outcome goes in the scalar
 * pgrr_reply_one, and so does each large one (batch-queue.ts, aloneOverChars). A reply the database refuses
 * releases the registration, which gives back every request it holds.
 */
import { aloneOverChars, BatchQueue, splitAlone } from '../batch-queue.ts'
import { isConnectionLoss } from '../database-error.ts'
import type { Result } from './handler.ts'
import type { Job } from './jobs.ts'
import type { Registration, ResponderContext } from './registration.ts'

/** An outcome addressed to its request, as pgrr_reply takes it. */
interface Outcome extends Result {
  id: string
  generation: number
  /** Handed over by the send rather than claimed: no request lock to release (see pgrr_reply_one). */
  handed: boolean
  /** The reply headers as JSON, or null. */
  headers: string | null
  /** The responder whose request it is. */
  replies: Replies
}

/** The outcomes of one responder, with the registration they belong to. */
interface Group {
  session: Registration
  outcomes: Outcome[]
}

/** The outcomes of every responder of one client, waiting to be written. */
export class ReplyQueue {
  readonly #queue = new BatchQueue<Outcome>((outcomes) => this.#flush(outcomes), { maxBatch: 1000, maxConcurrent: 2 })

  /** @internal Replies.push calls it. */
  push(outcome: Outcome): void {
    this.#queue.push(outcome)
  }

  async #flush(outcomes: Outcome[]): Promise<void> {
    // Those of a registration that has ended are gone with its session.
    const current: { outcome: Outcome; session: Registration }[] = []
    for (const outcome of outcomes) {
      const session = outcome.replies.current(outcome.generation)
      if (session !== undefined) current.push({ outcome, session })
    }
    const { together, alone } = splitAlone(current, ({ outcome }) => outcome.body.length > aloneOverChars)
    const groups = new Map<Replies, Group>()
    for (const { outcome, session } of together) {
      const group = groups.get(outcome.replies)
      if (group === undefined) groups.set(outcome.replies, { session, outcomes: [outcome] })
      else group.outcomes.push(outcome)
    }
    try {
      await Promise.all([
        this.#writeTogether(groups),
        ...alone.map(({ outcome, session }) => outcome.replies.write(session, [outcome])),
      ])
    } finally {
      for (const outcome of outcomes) outcome.replies.settle(outcome)
    }
  }

  /**
   * One statement for the outcomes of every responder, on the session of the one with the most; then each
   * other one writes, on its own session, what it gave back. When it fails, each writes its own: the
   * writer's own are lost with its session if that is what failed (the others' requests are still held, and
   * one written by a statement whose answer was lost is found replied, and left), and one the database
   * refuses releases its own responder's registration, as when each writes alone.
   */
  async #writeTogether(groups: Map<Replies, Group>): Promise<void> {
    let writer: [Replies, Group] | undefined
    for (const entry of groups) if (writer === undefined || entry[1].outcomes.length > writer[1].outcomes.length) writer = entry
    if (writer === undefined) return
    if (groups.size === 1) return writer[0].write(writer[1].session, writer[1].outcomes)
    let rest: Map<Replies, Group>
    try {
      rest = await writer[0].writeAll(writer[1].session, [...groups.values()])
    } catch {
      rest = groups
    }
    await Promise.all([...rest].map(([replies, group]) => replies.write(group.session, group.outcomes)))
  }
}

export interface RepliesOptions extends ResponderContext {
  /** The client's queue of outcomes, shared by its responders. */
  readonly queue: ReplyQueue
  /** Releases the registration on purpose, which gives back its requests, and registers anew. */
  readonly recycle: () => void
  /** These outcomes were written, or are gone with their session. */
  readonly written: (ids: readonly { readonly id: string }[]) => void
}

/** The outcomes of one responder. */
export class Replies {
  readonly #options: RepliesOptions
  /** Outcomes pushed and not yet settled. */
  #queued = 0
  #idleWaiters: (() => void)[] = []

  constructor(options: RepliesOptions) {
    this.#options = options
  }

  /** Queues the outcome of `job` for writing. */
  push(job: Pick<Job, 'id' | 'generation' | 'handed'>, result: Result): void {
    this.#queued++
    this.#options.queue.push({
      id: job.id,
      generation: job.generation,
      handed: job.handed,
      failed: result.failed,
      body: result.body,
      json: result.json,
      code: result.code,
      headers: result.headers ?? null,
      replies: this,
    })
  }

  /** Resolves once every outcome queued is written (or given up with its session). */
  idle(): Promise<void> {
    if (this.#queued === 0) return Promise.resolve()
    return new Promise((resolve) => this.#idleWaiters.push(resolve))
  }

  /** @internal The registration of `generation`, while it lasts. */
  current(generation: number): Registration | undefined {
    const session = this.#options.registration()
    return session !== undefined && session.generation === generation ? session : undefined
  }

  /** @internal This outcome was written, or given up. */
  settle(outcome: Outcome): void {
    this.#options.written([outcome])
    if (--this.#queued > 0) return
    const waiters = this.#idleWaiters
    this.#idleWaiters = []
    for (const resolve of waiters) resolve()
  }

  /** @internal Writes this responder's `outcomes` on its session: the scalar statement for a lone one. */
  async write(session: Registration, outcomes: Outcome[]): Promise<void> {
    const [only] = outcomes
    if (only === undefined) return
    const { statements, query } = this.#options
    try {
      if (outcomes.length === 1) {
        const [row] = await query<{ outcome: string }>(statements.replyOne, [
          session.responderId, only.id, only.failed, only.body, only.json, only.code, only.headers,
        ])
        this.#recorded(1, row?.outcome === 'late' ? [only.id] : [])
        return
      }
      const [row] = await query<{ late: string[] | null }>(statements.reply, [session.responderId, ...columns(outcomes), null])
      this.#recorded(outcomes.length, row?.late ?? [])
    } catch (error) {
      this.#refused(session, error)
    }
  }

  /**
   * @internal Writes the outcomes of `groups` (this responder's among them) in one statement on this
   * responder's session, and returns what the others must write on their own: their SQL callers'. Rejects
   * when the statement fails.
   */
  async writeAll(session: Registration, groups: Group[]): Promise<Map<Replies, Group>> {
    const outcomes = groups.flatMap((group) => group.outcomes)
    const responders = groups.flatMap((group) => group.outcomes.map(() => group.session.responderId))
    const [row] = await this.#options.query<{ late: string[] | null; elsewhere: string[] | null }>(this.#options.statements.reply, [
      session.responderId, ...columns(outcomes), responders,
    ])
    const late = new Set(row?.late ?? [])
    const elsewhere = new Set(row?.elsewhere ?? [])
    const rest = new Map<Replies, Group>()
    for (const group of groups) {
      const owner = group.outcomes[0]!.replies
      const theirs = group.outcomes.filter((outcome) => elsewhere.has(outcome.id))
      if (theirs.length > 0) rest.set(owner, { session: group.session, outcomes: theirs })
      const refused = group.outcomes.filter((outcome) => late.has(outcome.id)).map((outcome) => outcome.id)
      owner.#recorded(group.outcomes.length - theirs.length, refused)
    }
    return rest
  }

  /** A write failed: unless its session is gone anyway, the database refused it, and the registration is released. */
  #refused(session: Registration, error: unknown): void {
    if (session.generation !== this.#options.generation() || isConnectionLoss(error)) return
    // Releasing the registration gives back every lock it holds, so no caller waits on a reply that cannot
    // be written.
    this.#options.logger.error({ err: error }, 'writing replies failed; registering the responder again')
    this.#options.recycle()
  }

  /**
   * `written` outcomes of this responder went in one statement; `late` are the ids among them the database
   * refused because their request's deadline had passed by its clock (09_reply.sql): the caller's outcome is
   * the timeout. The handler finished in time by this process's clock, or this is a reply of the responder's
   * own deadline seen late.
   */
  #recorded(written: number, late: readonly string[]): void {
    const { channel, logger, telemetry } = this.#options
    if (written > 0) telemetry.replied?.(channel, written)
    if (late.length === 0) return
    logger.warn({ channel, ids: late }, 'replies refused: their requests had reached their deadline; their callers saw a timeout')
    telemetry.repliedLate?.(channel, late.length)
  }
}

/** The arrays of pgrr_reply, after the responder: ids, failed, bodies, json, codes, headers. */
function columns(outcomes: readonly Outcome[]): unknown[] {
  return [
    outcomes.map((o) => o.id),
    outcomes.map((o) => o.failed),
    outcomes.map((o) => o.body),
    outcomes.map((o) => o.json),
    outcomes.map((o) => o.code),
    outcomes.map((o) => o.headers),
  ]
}
