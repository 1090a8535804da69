/** A request of a client, from `request()` to its outcome. */
import type { RequestObservation } from '../telemetry.ts'

export interface PendingRequest {
  channel: string
  payload: string
  json: boolean
  headers: string | null
  maxAttempts: number | null
  timeoutMs: number
  /** Set once pgrr_send returned it. */
  id?: string
  /** When request() was called, by performance.now(): a clock no adjustment of the system's moves. */
  startedAt: number
  /** Counted in the client's in-flight requests. */
  admitted: boolean
  settled: boolean
  resolve: (value: unknown) => void
  reject: (error: Error) => void
  timer?: NodeJS.Timeout
  signal?: AbortSignal
  onAbort?: () => void
  observation?: RequestObservation
  /** Resolve with `{ reply, headers }` rather than the reply alone. */
  withHeaders?: boolean
  /** A streamed request (src/client/stream.ts): how it is sent, and who is told its id. */
  stream?: StreamSpec
}

/** How a streamed request is sent (pgrr_stream_open rather than pgrr_send), and who is told its id. */
export interface StreamSpec {
  open(pending: PendingRequest, replyChannel: string, timeoutMs: number): Promise<{ id: string | null; status: string }>
  /** pgrr_stream_open returned the request's id (also when the request was given up meanwhile). */
  opened(id: string): void
}

/** How a request ends: an error, or the value its promise resolves with. */
export type Settlement = Error | { value: unknown }

/** Ends a request (once; later calls are ignored). */
export type Settle = (pending: PendingRequest, outcome: Settlement) => void

/**
 * What is left of a request's timeout as it is sent: the time it waited for a slot or a send counts, so
 * that the responder's deadline (`ctx.deadline`, and the row's) is the caller's own.
 */
export function remainingMs(pending: PendingRequest): number {
  return Math.min(pending.timeoutMs, Math.max(1, Math.ceil(pending.timeoutMs - (performance.now() - pending.startedAt))))
}
