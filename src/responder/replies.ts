/**
 * Writing outcomes (09_reply.sql): every request a responder holds gets one, even a cancelled one, since
 * writing it is what releases the request. Outcomes finished in the same turn go in one statement
 * (pgrr_reply), a lone one in the scalar pgrr_reply_one, and so does each large one (batch-queue.ts,
 * aloneOverChars); a reply the database refuses ends the session, which releases every request it holds.
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
}

export interface RepliesOptions extends ResponderContext {
  /** Ends the work session on purpose, which releases its requests, and registers anew. */
  readonly recycle: () => void
  /** These outcomes were written, or are gone with their session. */
  readonly written: (ids: readonly { readonly id: string }[]) => void
}

/** The outcomes of one responder waiting to be written. */
export class Replies {
  readonly #options: RepliesOptions
  readonly #queue: BatchQueue<Outcome>

  constructor(options: RepliesOptions) {
    this.#options = options
    this.#queue = new BatchQueue((outcomes) => this.#flush(outcomes), { maxBatch: 1000, maxConcurrent: 2 })
  }

  /** Queues the outcome of `job` for writing. */
  push(job: Pick<Job, 'id' | 'generation' | 'handed'>, result: Result): void {
    this.#queue.push({
      id: job.id,
      generation: job.generation,
      handed: job.handed,
      failed: result.failed,
      body: result.body,
      json: result.json,
      code: result.code,
      headers: result.headers ?? null,
    })
  }

  /** Resolves once every outcome queued is written (or given up with its session). */
  idle(): Promise<void> {
    return this.#queue.idle()
  }

  async #flush(outcomes: Outcome[]): Promise<void> {
    const session = this.#options.registration()
    const current = outcomes.filter((outcome) => session !== undefined && outcome.generation === session.generation)
    try {
      await this.#write(session, current)
    } finally {
      this.#options.written(outcomes)
    }
  }

  async #write(session: Registration | undefined, current: Outcome[]): Promise<void> {
    if (session === undefined || current.length === 0) return
    const { together, alone } = splitAlone(current, (outcome) => outcome.body.length > aloneOverChars)
    await Promise.all([this.#writeSome(session, together), ...alone.map((outcome) => this.#writeSome(session, [outcome]))])
  }

  async #writeSome(session: Registration, current: Outcome[]): Promise<void> {
    if (current.length === 0) return
    const { channel, statements, telemetry, query } = this.#options
    try {
      const [only] = current
      if (current.length === 1 && only !== undefined) {
        // A lone reply: the scalar statement, cheaper than the batch for it.
        const [row] = await query<{ outcome: string }>(statements.replyOne, [
          session.responderId,
          only.id,
          only.failed,
          only.body,
          only.json,
          only.code,
          only.headers,
        ])
        telemetry.replied?.(channel, 1)
        if (row?.outcome === 'late') this.#late([only.id])
        return
      }
      const [row] = await query<{ late: string[] | null }>(statements.reply, [
        session.responderId,
        current.map((o) => o.id),
        current.map((o) => o.failed),
        current.map((o) => o.body),
        current.map((o) => o.json),
        current.map((o) => o.code),
        current.map((o) => o.headers),
      ])
      telemetry.replied?.(channel, current.length)
      if (row?.late != null && row.late.length > 0) this.#late(row.late)
    } catch (error) {
      if (session.generation !== this.#options.generation() || isConnectionLoss(error)) return
      // Not a connection problem: a reply the database refused. Ending the session releases every lock it
      // holds, so no caller waits on a reply that cannot be written.
      this.#options.logger.error({ err: error }, 'writing replies failed; restarting the responder session')
      this.#options.recycle()
    }
  }

  /**
   * Replies the database refused because their request's deadline had passed by its clock (09_reply.sql):
   * the caller's outcome is the timeout. The handler finished in time by this process's clock, or this is
   * a reply of the responder's own deadline seen late.
   */
  #late(ids: readonly string[]): void {
    const { channel, logger, telemetry } = this.#options
    logger.warn({ channel, ids }, 'replies refused: their requests had reached their deadline; their callers saw a timeout')
    telemetry.repliedLate?.(channel, ids.length)
  }
}
