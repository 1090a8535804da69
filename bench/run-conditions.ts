// Conditions that make a run's numbers unrepresentative, checked at its start and end and reported with it.
// The one that matters most for table-based systems (pgrr, poc): a transaction elsewhere in the cluster that
// holds back the xmin horizon. Then no dead row of a request table can be removed, every claim walks the
// dead index entries of all requests since, and the cost per request grows through the run (we saw the
// server CPU per pgrr request triple within 15,000 requests). Other sessions (listeners) and load from other
// processes are the others.
import os from 'node:os'
import type { Sql } from 'postgres'
import { APPLICATION_NAME_PREFIX } from './database-url.ts'

/** A transaction older than this, holding a snapshot or a transaction id, is worth a warning. */
const OLD_TRANSACTION_SECONDS = 10

export async function checkRunConditions(sql: Sql, when: 'start' | 'end'): Promise<string[]> {
  const warnings: string[] = []
  const holders = await sql<Array<{ pid: number; application_name: string; seconds: number }>>`
    select pid, application_name, extract(epoch from now() - xact_start)::int as seconds
    from pg_stat_activity
    where (backend_xmin is not null or backend_xid is not null)
      and pid <> pg_backend_pid()
      and application_name not like ${`${APPLICATION_NAME_PREFIX}-%`}
      and xact_start < now() - make_interval(secs => ${OLD_TRANSACTION_SECONDS})
    order by xact_start
    limit 1`
  const oldest = holders[0]
  if (oldest) {
    warnings.push(
      `at ${when}: a transaction open for ${oldest.seconds} s (pid ${oldest.pid}, ${oldest.application_name || 'no application_name'}) holds back the xmin horizon: table-based systems (pgrr, poc) slow down as dead rows pile up`,
    )
  }
  // Every NOTIFY signals every LISTENing session of the database, whatever its channel: 20 idle listeners
  // halved the NOTIFY floor here. Postgres cannot tell us who listens, so count every other session.
  const [others] = await sql<[{ count: number }]>`
    select count(*)::int as count from pg_stat_activity
    where datname = current_database() and backend_type = 'client backend'
      and pid <> pg_backend_pid() and application_name not like ${`${APPLICATION_NAME_PREFIX}-%`}`
  if (others.count > 0) {
    warnings.push(`at ${when}: ${others.count} other sessions connected to the database (any of them LISTENing slows every NOTIFY)`)
  }
  // Only at the start: by the end, the run itself has loaded the machine.
  const [load] = os.loadavg()
  const cpus = os.cpus().length
  if (when === 'start' && load !== undefined && load >= cpus) {
    warnings.push(`at start: load average ${load.toFixed(2)} on ${cpus} CPUs: other work was competing for the machine`)
  }
  return warnings
}
