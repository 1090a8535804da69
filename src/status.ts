/**
 * What `pgrr status` shows, as data: per channel, the live responders and their counters, the backlog, the
 * requests being handled and the age of the oldest waiting request, plus how full the server's NOTIFY
 * queue is and which session's transaction holds back the cleanup of dead rows the longest. Read-only and
 * cheap: a few aggregate queries over the (small) request table and `pg_stat_activity`.
 *
 * The responders listed are the live ones, as requests are sent to them: the view `pgrr_live_responder`
 * (sql/protocol/04_liveness.sql), the one definition of live.
 *
 * It reads the tables directly, so it needs a role that may: the schema owner (the role that migrated) or
 * a superuser. The caller and responder roles of `migrate({ roles })` may not.
 */
import { createSession, endSession, query, quoteIdentifier, type Queryable, type Session } from './database.ts'
import { toPgrrError } from './database-error.ts'
import { ClosedError } from './errors.ts'
import { integerOption } from './option-values.ts'
import { assertMigrated } from './schema-version.ts'
import type { ConnectionOptions } from './options.ts'

/** Options of {@link getStatus}. */
export interface StatusOptions extends ConnectionOptions {
  /** Only these channels. @default every channel ever served in the schema */
  channels?: readonly string[]
  /** Longest a read may take (a statement timeout). @default 5000 */
  timeoutMs?: number
}

/** A live responder. */
export interface ResponderStatus {
  /** Responder id (a new one after each reconnect). */
  id: number
  /** Host name of its process. */
  host: string | null
  /** Process id on that host. */
  pid: number | null
  /** Most handlers it runs at once. */
  concurrency: number | null
  /** Handlers running at its last report. */
  running: number
  /** When it registered. */
  since: Date
  /** Requests handled (replied or failed) since it registered, at its last report. */
  handledTotal: number
  /** Of those, the ones whose handler failed. */
  failedTotal: number
  /** Requests handled in the minute before its last report. */
  handledLastMinute: number
  /** Of those, the failed ones. */
  failedLastMinute: number
  /** Its last report (every `sweepIntervalMs`); null before the first one. */
  reportedAt: Date | null
}

/** One channel (service). */
export interface ChannelStatus {
  channel: string
  /** Live responders, by id. */
  responders: ResponderStatus[]
  /** Requests waiting to be claimed (pending and not yet past their deadline). */
  backlog: number
  /** Requests claimed by a responder and not yet answered. */
  inFlight: number
  /** Age of the oldest request of the backlog, in milliseconds; null when the backlog is empty. */
  oldestPendingMs: number | null
  /** Requests handled per second over the last minute, by the live responders (from their reports). */
  requestsPerSecond: number
  /** Of those, failed per second. */
  errorsPerSecond: number
}

/**
 * The session of the database whose open transaction holds back cleanup the longest (the oldest snapshot,
 * or transaction id of a transaction that wrote): while that transaction stays open, VACUUM cannot remove
 * the dead row versions that every request leaves (its insert, reply and delete), so the request table
 * grows and every request costs more (see docs/benchmarks.md, "A transaction left open during a c=64 run").
 */
export interface OldestTransaction {
  /** Backend pid (`pg_stat_activity.pid`). */
  pid: number
  /** Its `application_name` ('' when it set none). */
  applicationName: string
  /** `pg_stat_activity.state`: 'active', 'idle in transaction', … */
  state: string | null
  /** How long its transaction has been open, in milliseconds. */
  ageMs: number
}

/** The state of one install (schema) of the protocol. */
export interface Status {
  schema: string
  /** When it was read (the database's clock). */
  time: Date
  /** `pg_notification_queue_usage()`: the fraction (0 to 1) of the server's NOTIFY queue in use. */
  notificationQueueUsage: number
  /**
   * The other session of this database whose open transaction holds back cleanup the longest (the oldest
   * snapshot, or transaction id of a transaction that wrote), or null when none does. Sessions of other
   * roles are seen only by a superuser or a member of `pg_read_all_stats`.
   */
  oldestTransaction: OldestTransaction | null
  /** Channels by name. */
  channels: ChannelStatus[]
}

/** Counts per channel: what the status shows and what the metrics' backlog collector exports. */
export interface ChannelCounts {
  channel: string
  backlog: number
  inFlight: number
  oldestPendingMs: number | null
  liveResponders: number
}

/** Reads the status once: opens a connection, reads, closes it. */
export async function getStatus(options: StatusOptions = {}): Promise<Status> {
  const reader = new StatusReader(options)
  try {
    return await reader.read()
  } finally {
    await reader.close()
  }
}

/**
 * @internal Reads the status repeatedly over one session of its own (`pgrr status --watch`, the metrics),
 * opened at the first read and again after it breaks.
 */
export class StatusReader {
  readonly #options: StatusOptions
  readonly #schema: string
  readonly #channels: string[] | null
  readonly #timeoutMs: number
  readonly #statements: ReturnType<typeof renderStatusStatements>
  #checked = false
  #session: Session | undefined
  /** A session still connecting, and the promise of it: close() cuts it short. */
  #connecting: { session: Session; ready: Promise<Session> } | undefined
  #closed = false

  constructor(options: StatusOptions) {
    this.#options = options
    this.#schema = options.schema ?? 'public'
    this.#channels = options.channels === undefined ? null : [...options.channels]
    this.#timeoutMs = integerOption(options.timeoutMs ?? 5000, 'timeoutMs')
    this.#statements = renderStatusStatements(this.#schema)
  }

  /** Per channel counts only (one statement): for the metrics, scraped often. */
  async counts(): Promise<ChannelCounts[]> {
    return this.#transaction(async (sql) => {
      const rows = await query<Record<string, unknown>>(sql, this.#statements.counts, [this.#channels])
      return rows.map(toCounts)
    })
  }

  /** The whole status. */
  async read(): Promise<Status> {
    return this.#transaction(async (sql) => {
      const [head] = await query<Record<string, unknown>>(sql, this.#statements.head)
      const counts = await query<Record<string, unknown>>(sql, this.#statements.counts, [this.#channels])
      const responders = await query<Record<string, unknown>>(sql, this.#statements.responders, [this.#channels])
      const byChannel = new Map<string, ResponderStatus[]>()
      for (const row of responders) {
        const list = byChannel.get(row.channel as string) ?? []
        list.push(toResponder(row))
        byChannel.set(row.channel as string, list)
      }
      return {
        schema: this.#schema,
        time: head!.time as Date,
        notificationQueueUsage: Number(head!.usage),
        oldestTransaction: toOldestTransaction(head!.oldest),
        channels: counts.map((row) => {
          const { channel, backlog, inFlight, oldestPendingMs } = toCounts(row)
          const live = byChannel.get(channel) ?? []
          return {
            channel,
            responders: live,
            backlog,
            inFlight,
            oldestPendingMs,
            requestsPerSecond: live.reduce((sum, r) => sum + r.handledLastMinute, 0) / 60,
            errorsPerSecond: live.reduce((sum, r) => sum + r.failedLastMinute, 0) / 60,
          }
        }),
      }
    })
  }

  /**
   * Ends the session. A connection attempt under way is cut short, not waited for (it could take the whole
   * connect timeout against a server that does not answer); a read under way fails. Idempotent.
   */
  async close(): Promise<void> {
    this.#closed = true
    const connecting = this.#connecting
    this.#connecting = undefined
    connecting?.session.connection.stream.destroy()
    const session = this.#session
    this.#session = undefined
    if (session !== undefined) await endSession(session)
  }

  /** The session, connected first when there is none (or the last one broke). */
  async #connection(): Promise<Session> {
    if (this.#closed) throw new ClosedError('the status reader was closed')
    if (this.#session !== undefined) return this.#session
    if (this.#connecting !== undefined) return this.#connecting.ready
    const session: Session = createSession(this.#options, {
      onEnd: () => {
        if (this.#session === session) this.#session = undefined
      },
    })
    const ready = (async () => {
      try {
        await session.connect()
      } catch (error) {
        await endSession(session)
        throw error
      } finally {
        if (this.#connecting?.session === session) this.#connecting = undefined
      }
      if (this.#closed) {
        await endSession(session)
        throw new ClosedError('the status reader was closed')
      }
      this.#session = session
      return session
    })()
    this.#connecting = { session, ready }
    return ready
  }

  /** A read-only transaction bounded by the statement timeout; errors as the library's typed errors. */
  async #transaction<T>(fn: (sql: Queryable) => Promise<T>): Promise<T> {
    try {
      const session = await this.#connection()
      if (!this.#checked) {
        await assertMigrated(session, this.#schema)
        this.#checked = true
      }
      await query(session, 'begin read only', [], false)
      try {
        await query(session, `select pg_catalog.set_config('statement_timeout', $1, true)`, [String(this.#timeoutMs)])
        const result = await fn(session)
        await query(session, 'commit', [], false)
        return result
      } catch (error) {
        // A session that cannot even roll back is dropped: the next read opens another.
        await query(session, 'rollback', [], false).catch(() => {
          if (this.#session === session) this.#session = undefined
          void endSession(session)
        })
        throw error
      }
    } catch (error) {
      throw toPgrrError(error)
    }
  }
}

function renderStatusStatements(schema: string) {
  const s = quoteIdentifier(schema)
  // The responders requests are sent to: the one definition of live (sql/protocol/04_liveness.sql).
  const live = `live as materialized (select l.id, l.channel_id from ${s}.pgrr_live_responder l)`
  return {
    // What VACUUM has to keep for: the oldest snapshot (backend_xmin) or transaction id (backend_xid, a
    // transaction that wrote, even while it holds no snapshot between statements) of the database's other
    // sessions, by the number of transactions behind it.
    head: `
      select pg_catalog.now() as time, pg_catalog.pg_notification_queue_usage() as usage,
             (select pg_catalog.json_build_object(
                       'pid', a.pid, 'application', a.application_name, 'state', a.state,
                       'ageMs', extract(epoch from pg_catalog.clock_timestamp() - a.xact_start) * 1000)
                from pg_catalog.pg_stat_activity a
               where a.datname = pg_catalog.current_database() and a.pid <> pg_catalog.pg_backend_pid()
                 and (a.backend_xmin is not null or a.backend_xid is not null) and a.xact_start is not null
               order by greatest(pg_catalog.age(a.backend_xmin), pg_catalog.age(a.backend_xid)) desc,
                        a.xact_start
               limit 1) as oldest`,
    // Pending requests past their deadline are left out: nobody will claim them, a sweep deletes them.
    counts: `
      with ${live},
      requests as (
        select q.channel_id,
               count(*) filter (where q.state = 'pending' and q.deadline > pg_catalog.now()) as backlog,
               count(*) filter (where q.state = 'claimed') as in_flight,
               min(q.created_at) filter (where q.state = 'pending' and q.deadline > pg_catalog.now()) as oldest
          from ${s}.pgrr_request q
         where q.state in ('pending', 'claimed')
         group by q.channel_id
      )
      select c.name as channel,
             coalesce(q.backlog, 0)::int as backlog,
             coalesce(q.in_flight, 0)::int as in_flight,
             (extract(epoch from pg_catalog.now() - q.oldest) * 1000)::float8 as oldest_pending_ms,
             (select count(*) from live where live.channel_id = c.id)::int as live_responders
        from ${s}.pgrr_channel c
        left join requests q on q.channel_id = c.id
       where $1::text[] is null or c.name = any ($1::text[])
       order by c.name`,
    responders: `
      with ${live}
      select c.name as channel, r.id, r.host, r.pid, r.concurrency, r.running, r.started_at,
             r.handled_total::float8 as handled_total, r.failed_total::float8 as failed_total,
             r.handled_last_minute, r.failed_last_minute, r.reported_at
        from live
        join ${s}.pgrr_responder r on r.id = live.id
        join ${s}.pgrr_channel c on c.id = r.channel_id
       where $1::text[] is null or c.name = any ($1::text[])
       order by c.name, r.id`,
  }
}

function toCounts(row: Record<string, unknown>): ChannelCounts {
  // Counts may arrive as strings (int8, numeric): node-postgres keeps them exact.
  return {
    channel: row.channel as string,
    backlog: Number(row.backlog),
    inFlight: Number(row.in_flight),
    oldestPendingMs: row.oldest_pending_ms === null ? null : Math.max(0, Math.round(Number(row.oldest_pending_ms))),
    liveResponders: Number(row.live_responders),
  }
}

function toOldestTransaction(value: unknown): OldestTransaction | null {
  if (value === null || value === undefined) return null
  const row = value as { pid: number; application: string | null; state: string | null; ageMs: number }
  return {
    pid: row.pid,
    applicationName: row.application ?? '',
    state: row.state,
    ageMs: Math.max(0, Math.round(Number(row.ageMs))),
  }
}

function toResponder(row: Record<string, unknown>): ResponderStatus {
  return {
    id: row.id as number,
    host: row.host as string | null,
    pid: row.pid as number | null,
    concurrency: row.concurrency as number | null,
    running: Number(row.running),
    since: row.started_at as Date,
    handledTotal: Number(row.handled_total),
    failedTotal: Number(row.failed_total),
    handledLastMinute: Number(row.handled_last_minute),
    failedLastMinute: Number(row.failed_last_minute),
    reportedAt: row.reported_at as Date | null,
  }
}
