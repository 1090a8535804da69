// One benchmark run per server at a time. Runs share the schemas pgrr_bench and pgrr_bench_poc (a second
// run would drop and re-migrate them under the first one's responders) and each ends by terminating the
// bench's leftover sessions of its database; and two runs on one server, whatever their databases, would
// measure each other. The lock is a session-level advisory lock on the orchestrator's single connection,
// released by unlock or disconnect; advisory locks belong to one database, so an orchestrator of another
// database (its application_name, which every role may read in pg_stat_activity) counts as a holder too.
import type { Sql } from 'postgres'
import { APPLICATION_NAME_PREFIX } from './database-url.ts'

// Two-key form, first key a namespace of our own, so as not to collide with other users of advisory locks.
const LOCK_NAMESPACE = 0x70677262 // "pgrb"
const LOCK_KEY = 1
/** The application_name of an orchestrator's connection (withApplicationName(url, 'orchestrator')). */
const ORCHESTRATOR = `${APPLICATION_NAME_PREFIX}-orchestrator`

export async function acquireRunLock(sql: Sql): Promise<void> {
  const [row] = await sql<[{ locked: boolean }]>`select pg_try_advisory_lock(${LOCK_NAMESPACE}::int, ${LOCK_KEY}::int) as locked`
  if (!row.locked) {
    const [holder] = await sql<Array<{ pid: number; application_name: string }>>`
      select a.pid, a.application_name from pg_locks l join pg_stat_activity a using (pid)
      where l.locktype = 'advisory' and l.classid = ${LOCK_NAMESPACE}::oid and l.objid = ${LOCK_KEY}::oid and l.granted`
    const who = holder ? ` (backend pid ${holder.pid}, ${holder.application_name})` : ''
    throw new Error(`another benchmark run is in progress on this database${who}: wait for it to finish`)
  }
  const [other] = await sql<Array<{ pid: number; datname: string }>>`
    select a.pid, a.datname from pg_stat_activity a
     where a.application_name = ${ORCHESTRATOR} and a.pid <> pg_backend_pid() and a.datname <> current_database()`
  if (other) {
    await releaseRunLock(sql)
    throw new Error(`another benchmark run is in progress on this server (database ${other.datname}, backend pid ${other.pid}): wait for it to finish`)
  }
}

export async function releaseRunLock(sql: Sql): Promise<void> {
  await sql`select pg_advisory_unlock(${LOCK_NAMESPACE}::int, ${LOCK_KEY}::int)`
}
