/**
 * Streamed replies, the handler's side (sql/protocol/14_stream.sql): `ctx.send(part)` writes a part of the
 * request's stream on the responder's session (pgrr_stream_send; parts sent in the same turn of the event
 * loop, by any handler, go in one statement) and resolves once it is written. The database numbers the
 * parts in the order written and refuses one beyond the caller's window: then, and whenever this side
 * knows the window to be full, the send waits for a credit (a NOTIFY on the control channel, or a read of
 * pgrr_stream_credit every second while something waits), so a slow caller holds the handler back. A
 * handler written as an async generator has each value it yields sent, and its return value is the reply.
 * A job's reply is written only once the parts it sent are (see Jobs: `outstanding`).
 */
import { BatchQueue } from '../batch-queue.ts'
import { toPgrrError } from '../database-error.ts'
import { CancelledError, ConnectionError, InvalidPayloadError, PayloadTooLargeError, StreamClosedError, TimeoutError, type PgrrError } from '../errors.ts'
import { encodePayload } from '../payload.ts'
import type { StreamStatements } from '../stream-statements.ts'
import { decodeCredit } from '../stream-wire.ts'
import type { ResponderContext } from './registration.ts'

/** How often a send waiting for a credit reads the credits, in case their NOTIFY was missed. */
const creditPollMs = 1000

export interface StreamSenderOptions extends ResponderContext {
  readonly streamStatements: StreamStatements
  /** The caller pushed the request's deadline later (its idle timeout): `remainingMs` from now. */
  readonly extend: (id: string, remainingMs: number) => void
  /**
   * The caller cancelled request `id`, as a part's write found its stream gone: its handler's signal fires
   * (the cancellation's NOTIFY may come after the write's answer, or not at all).
   */
  readonly cancelled: (id: string) => void
}

/** What a job's stream is known to be here. */
interface StreamState {
  readonly id: string
  readonly generation: number
  /** Parts written (the last n the database gave). */
  sent: number
  /** Parts its caller consumed, as last heard (never ahead of the database). */
  consumed: number
  /** Its max_in_flight, known once the first part was written. */
  window: number | undefined
  /** Parts queued or being written, not yet written or failed. */
  queued: number
  /**
   * Parts queued and not yet sent, in order: the next statement takes them all. Those refused for want of
   * room ('window', 'busy') go back to its front, in order, and wait for a credit (`blocked`).
   */
  pending: PartWrite[]
  blocked: boolean
  /** In the write queue. */
  scheduled: boolean
  /** Sends waiting for room. */
  waiters: Set<() => void>
  /** Credits heard so far: one heard while a write was under way may be older news than its answer. */
  credits: number
  /** Why it takes no more parts. */
  closed: PgrrError | undefined
  /** Resolves once nothing is queued or blocked. */
  drained: Promise<void> | undefined
  resolveDrained: (() => void) | undefined
}

interface PartWrite {
  readonly state: StreamState
  readonly text: string
  readonly json: boolean
  readonly resolve: () => void
  readonly reject: (error: Error) => void
}

interface SendRow {
  ord: number
  status: string
  n: number | null
  consumed: number | null
  max_in_flight: number | null
}

/** The streams of one responder's running jobs. */
export class StreamSender {
  readonly #options: StreamSenderOptions
  readonly #streams = new Map<string, StreamState>()
  /** Streams with parts to send, several streams' parts to a statement. */
  readonly #writes: BatchQueue<StreamState>
  #pollTimer: NodeJS.Timeout | undefined

  constructor(options: StreamSenderOptions) {
    this.#options = options
    this.#writes = new BatchQueue((states) => this.#flush(states), { maxBatch: 100 })
  }

  /**
   * Queues a part of job `id` (registration `generation`) once the caller's window has room for it (the
   * wait ends with the handler's `signal`); `written` then settles once it is written. `ctx.send(part)`
   * resolves with `written`.
   */
  async enqueue(id: string, generation: number, part: unknown, signal: () => AbortSignal): Promise<{ written: Promise<void> }> {
    const { text, json } = encodePayload(part, 'part')
    let state = this.#streams.get(id)
    if (state === undefined) {
      state = { id, generation, sent: 0, consumed: 0, window: undefined, queued: 0, pending: [], blocked: false, scheduled: false, waiters: new Set(), credits: 0, closed: undefined, drained: undefined, resolveDrained: undefined }
      this.#streams.set(id, state)
    }
    while (!hasRoom(state)) {
      if (state.closed !== undefined) throw state.closed
      await this.#room(state, signal())
    }
    if (state.closed !== undefined) throw state.closed
    state.queued++
    const current = state
    const written = new Promise<void>((resolve, reject) => current.pending.push({ state: current, text, json, resolve, reject }))
    this.#schedule(state)
    return { written }
  }

  /**
   * Resolves once every part job `id` sent is written (or failed); undefined when none is on its way: what
   * the job waits for before its reply is written.
   */
  outstanding(id: string): Promise<void> | undefined {
    const state = this.#streams.get(id)
    if (state === undefined || state.queued === 0) return undefined
    state.drained ??= new Promise<void>((resolve) => (state.resolveDrained = resolve))
    return state.drained
  }

  /**
   * Job `id` ended: its stream takes no more parts, and sends still waiting fail with `reason()` (made only
   * for a job that sent parts: an error's stack costs every other job 2% of a process's CPU at c=1).
   */
  end(id: string, reason: () => PgrrError): void {
    const state = this.#streams.get(id)
    if (state === undefined) return
    this.#streams.delete(id)
    const error = reason()
    state.closed ??= error
    for (const write of state.pending.splice(0)) write.reject(error)
    state.queued = 0
    state.resolveDrained?.()
    for (const wake of state.waiters) wake()
  }

  /**
   * A NOTIFY on the control channel: true when it was a credit (then applied), false when it is something
   * else (a cancellation).
   */
  credit(payload: string): boolean {
    const credit = decodeCredit(payload)
    if (credit === undefined) return false
    this.#applyCredit(credit.id, credit.consumed, credit.remainingMs)
    return true
  }

  /**
   * Drives the handler of job `id` when it is an async generator: each value it yields is queued as a part
   * (`enqueue`) and the generator resumed without waiting for the write, so that parts yielded in a row go
   * several to a statement (the window still holds it back). A part that cannot be sent is thrown into it
   * at a later yield (at once when it cannot be queued); its return value is the reply, once every part is
   * written (or the error of one that could not be, not thrown into it yet). Anything else is returned as
   * it is.
   */
  drive(id: string, result: unknown, enqueue: (part: unknown) => Promise<{ written: Promise<void> }>): unknown {
    if (!isAsyncGenerator(result)) return result
    return (async () => {
      const failures: unknown[] = []
      let step = await result.next()
      while (step.done !== true) {
        let error: unknown
        try {
          const { written } = await enqueue(step.value)
          written.catch((failure: unknown) => failures.push(failure))
        } catch (failure) {
          error = failure
        }
        if (error === undefined && failures.length > 0) error = failures.shift()
        step = error === undefined ? await result.next() : await result.throw(error)
      }
      await this.outstanding(id)
      // Let the rejections of the last writes land.
      await Promise.resolve()
      if (failures.length > 0) throw failures[0]
      return step.value
    })()
  }

  /** The server closed: no credit is read any more. */
  stop(): void {
    clearInterval(this.#pollTimer)
    this.#pollTimer = undefined
  }

  /** Waits for room in the window: a credit, a write that told more, the stream's end, or the signal. */
  #room(state: StreamState, signal: AbortSignal): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const wake = () => {
        state.waiters.delete(wake)
        signal.removeEventListener('abort', onAbort)
        resolve()
      }
      const onAbort = () => {
        state.waiters.delete(wake)
        reject(signal.reason instanceof Error ? signal.reason : new StreamClosedError('the handler was aborted'))
      }
      if (signal.aborted) return onAbort()
      signal.addEventListener('abort', onAbort, { once: true })
      state.waiters.add(wake)
      // Waiting for a credit (not only for the first part's write, which tells the window).
      if (state.window !== undefined) this.#pollCredits()
    })
  }

  #applyCredit(id: string, consumed: number, remainingMs: number): void {
    this.#options.extend(id, remainingMs)
    const state = this.#streams.get(id)
    if (state === undefined) return
    state.credits++
    state.consumed = Math.max(state.consumed, consumed)
    this.#release(state)
  }

  /** There may be room now: parts refused for want of it go again, in order, then the waiting sends. */
  #release(state: StreamState): void {
    state.blocked = false
    this.#schedule(state)
    for (const wake of state.waiters) wake()
  }

  /** Puts a stream with parts to send in the write queue, unless it is there or waits for a credit. */
  #schedule(state: StreamState): void {
    if (state.scheduled || state.blocked || state.pending.length === 0) return
    state.scheduled = true
    this.#writes.push(state)
  }

  /** Reads the credits every second while a send waits for one (their NOTIFY is a hint). */
  #pollCredits(): void {
    if (this.#pollTimer !== undefined) return
    this.#pollTimer = setInterval(() => void this.#readCredits(), creditPollMs)
    this.#pollTimer.unref()
  }

  async #readCredits(): Promise<void> {
    const waiting = [...this.#streams.values()].filter((state) => state.waiters.size > 0 || state.blocked)
    const session = this.#options.registration()
    if (waiting.length === 0) return this.stop()
    if (session === undefined) return
    try {
      const rows = await this.#options.query<{ id: string; consumed: number; remaining_ms: string }>(this.#options.streamStatements.credit, [
        session.responderId,
        waiting.map((state) => state.id),
      ])
      for (const row of rows) this.#applyCredit(String(row.id), row.consumed, Number(row.remaining_ms))
      // No row: the stream no longer takes parts here (its caller cancelled, and that NOTIFY was missed, or
      // it finished reading). A write tells which: let the next part go (the database still holds the
      // window, should it be wrong).
      const answered = new Set(rows.map((row) => String(row.id)))
      for (const state of waiting) {
        if (answered.has(state.id) || this.#streams.get(state.id) !== state) continue
        state.consumed = Math.max(state.consumed, state.sent)
        this.#release(state)
      }
    } catch (error) {
      this.#options.logger.debug({ err: error }, 'reading stream credits failed')
    }
  }

  async #flush(states: StreamState[]): Promise<void> {
    const session = this.#options.registration()
    const writes: PartWrite[] = []
    for (const state of states) {
      state.scheduled = false
      if (state.blocked) continue
      const parts = state.pending.splice(0)
      if (state.closed !== undefined) for (const write of parts) this.#settle(write, state.closed)
      else if (session === undefined || state.generation !== session.generation) {
        for (const write of parts) this.#settle(write, new ConnectionError('the responder lost its database session'))
      } else writes.push(...parts)
    }
    if (writes.length === 0 || session === undefined) return
    const credits = new Map(writes.map((write) => [write.state, write.state.credits]))
    let rows: SendRow[]
    try {
      rows = await this.#options.query<SendRow>(this.#options.streamStatements.send, [
        session.responderId,
        writes.map((write) => write.state.id),
        writes.map((write) => write.text),
        writes.map((write) => write.json),
      ])
    } catch (error) {
      const typed = toPgrrError(error)
      for (const write of writes) this.#settle(write, typed)
      return
    }
    // Parts refused for want of room, by stream, in order (pgrr_stream_send refuses every part of a stream
    // after one it refused, so none was written past them).
    const refused = new Map<StreamState, PartWrite[]>()
    for (const row of rows) {
      const write = writes[row.ord - 1]
      if (write === undefined) continue
      const { state } = write
      if (row.max_in_flight !== null) state.window = row.max_in_flight
      if (row.consumed !== null && row.consumed > state.consumed) state.consumed = row.consumed
      if (row.status === 'window' || row.status === 'busy') {
        const list = refused.get(state) ?? []
        list.push(write)
        refused.set(state, list)
        continue
      }
      if (row.status === 'ok') {
        state.sent = row.n ?? state.sent + 1
        this.#settle(write)
      } else {
        this.#settle(write, this.#refusal(row.status, state))
      }
      // What this told may have made room for sends waiting.
      for (const wake of state.waiters) wake()
    }
    for (const [state, list] of refused) {
      if (state.closed !== undefined) {
        for (const write of list) this.#settle(write, state.closed)
        continue
      }
      // Sent again, before the parts queued since, at the next credit (or its read); at once when a credit
      // came while this statement ran (it may have been read before the refusal).
      state.pending.unshift(...list)
      state.blocked = true
      this.#pollCredits()
      if (credits.get(state) !== state.credits) this.#release(state)
    }
  }

  /** A write is done: written (no error) or failed; the stream's count of parts on their way goes down. */
  #settle(write: PartWrite, error?: Error): void {
    const { state } = write
    if (state.queued > 0) state.queued--
    if (state.queued === 0) {
      state.resolveDrained?.()
      state.drained = undefined
      state.resolveDrained = undefined
    }
    if (error === undefined) write.resolve()
    else write.reject(error)
  }

  /** The error of a part the database refused (see pgrr_stream_send); some also close the stream. */
  #refusal(status: string, state: StreamState): PgrrError {
    switch (status) {
      case 'too_large':
        return new PayloadTooLargeError(this.#options.channel)
      case 'invalid':
        return new InvalidPayloadError('a part must not be null')
      case 'late':
        return (state.closed = new TimeoutError(0, 'the request reached its deadline: no more parts can be sent'))
      case 'finished':
        return (state.closed = new StreamClosedError('the final reply was already sent: no part may follow it'))
      case 'not_stream':
        return (state.closed = new StreamClosedError('the caller asked for one reply (request()), not a stream (requestStream())'))
      default:
        // 'gone': a stream is never retried, so it left this responder's hands by its caller's cancellation.
        state.closed = new CancelledError('the caller cancelled the stream')
        this.#options.cancelled(state.id)
        return state.closed
    }
  }
}

/** Whether another part may be queued: the window is known and not full, or nothing is on its way yet. */
function hasRoom(state: StreamState): boolean {
  if (state.closed !== undefined) return true
  if (state.window === undefined) return state.queued === 0
  return !state.blocked && state.sent + state.queued < state.consumed + state.window
}

function isAsyncGenerator(value: unknown): value is AsyncGenerator<unknown, unknown, undefined> {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as { [Symbol.asyncIterator]?: unknown })[Symbol.asyncIterator] === 'function' &&
    typeof (value as { next?: unknown }).next === 'function' &&
    typeof (value as { throw?: unknown }).throw === 'function'
  )
}
