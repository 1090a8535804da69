/**
 * Services that describe themselves, from the caller's side (sql/protocol/16_services.sql): what each live
 * responder says it is and how its handler has done, read from the table (pgrr_services, through the one
 * definition of live), and ping, which travels to every responder and back (a scatter-gather of a built-in
 * request that each answers without its handler).
 */
import { toPgrrError } from '../database-error.ts'
import type { PoolQuery } from '../database.ts'
import type { PgrrError } from '../errors.ts'
import type { PingReply } from '../responder/addressed.ts'
import type { HandlerStats } from '../responder/service-stats.ts'
import type { ServiceInfo } from '../responder/service-info.ts'
import type { Statements } from '../statements.ts'
import { requestAll, type AddressedResponder, type ScatterContext } from './scatter.ts'

/** A live responder as it describes itself. */
export interface ServiceResponder extends ServiceInfo {
  channel: string
  /** Responder id (a new one after each reconnect). */
  responderId: number
  host: string | null
  pid: number | null
  /** Most handlers it runs at once. */
  concurrency: number | null
  /** When it registered. */
  startedAt: Date
  /** Its lease runs (its event loop turns): sends prefer it. */
  accepting: boolean
  /**
   * Its handler statistics as it last wrote them (on its lease renewal, every 500 ms, when they changed),
   * with when (`at`, null before its first request) and how old they were at the read (`ageMs`, by the
   * database's clock). While its event loop turns, they lag its handlers by at most about half a second.
   */
  stats: HandlerStats & { at: Date | null; ageMs: number | null }
}

interface ServiceRow {
  channel: string
  responder_id: number
  host: string | null
  pid: number | null
  concurrency: number | null
  started_at: Date
  accepting: boolean
  info: ServiceInfo | null
  stats: HandlerStats | null
  stats_at: Date | null
  now: Date
}

const noStats: HandlerStats = { requests: 0, errors: 0, averageMs: null, p99Ms: null, lastError: null }

/** The live responders of `channel` (every channel when undefined), by channel and id. */
export async function readServices(query: PoolQuery, statements: Statements, channel?: string): Promise<ServiceResponder[]> {
  let rows: ServiceRow[]
  try {
    rows = await query<ServiceRow>(statements.services, [channel ?? null])
  } catch (error) {
    throw toPgrrError(error)
  }
  return rows.map((row) => {
    const info = row.info ?? {}
    const described: ServiceResponder = {
      channel: row.channel,
      responderId: row.responder_id,
      host: row.host,
      pid: row.pid,
      concurrency: row.concurrency,
      startedAt: row.started_at,
      accepting: row.accepting,
      stats: { ...noStats, ...row.stats, at: row.stats_at, ageMs: row.stats_at === null ? null : row.now.getTime() - row.stats_at.getTime() },
    }
    if (typeof info.description === 'string') described.description = info.description
    if (typeof info.version === 'string') described.version = info.version
    if (info.requestSchema !== undefined) described.requestSchema = info.requestSchema
    if (info.replySchema !== undefined) described.replySchema = info.replySchema
    return described
  })
}

/** Options of {@link Client.ping}. */
export interface PingOptions {
  /** How long to wait for the slowest responder. @default 5000 */
  timeoutMs?: number
  /** Aborting it ends the ping with `CancelledError`. */
  signal?: AbortSignal
}

/** One responder's answer to a ping: its round trip, or why there was none. */
export interface PingResult {
  responder: AddressedResponder
  /** From the send to its reply, in milliseconds (the send's statement included). */
  roundTripMs: number
  /** How busy it was as it answered (absent with `error`). */
  running?: number
  concurrency?: number
  /** Set when it did not answer: `TimeoutError`, `ResponderLostError`, ... */
  error?: PgrrError
}

/** Pings every live responder of `channel`; resolves with their answers in the order they came. */
export async function ping(context: ScatterContext, channel: string, options: PingOptions = {}): Promise<PingResult[]> {
  const results: PingResult[] = []
  const scatter = requestAll<PingReply>(context, channel, null, { timeoutMs: options.timeoutMs ?? 5000, ...(options.signal ? { signal: options.signal } : {}) }, 'ping')
  for await (const outcome of scatter) {
    const roundTripMs = Math.round(outcome.elapsedMs * 100) / 100
    if (outcome.error !== undefined) results.push({ responder: outcome.responder, roundTripMs, error: outcome.error })
    else results.push({ responder: outcome.responder, roundTripMs, running: outcome.reply.running, concurrency: outcome.reply.concurrency })
  }
  return results
}
