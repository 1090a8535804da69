// CPU time of the servers over a measured phase, read from /proc. process.cpuUsage() only sees the two Node
// processes; in a Postgres-based RPC most of the work happens in the backends, in a broker-based one inside
// the broker, so a fair CPU comparison needs the server side too. Only possible when the server runs on this
// machine (loopback) and /proc is readable; otherwise the meter reports null.
import { readFile, readdir } from 'node:fs/promises'
import type { Sql } from 'postgres'
import { APPLICATION_NAME_PREFIX } from './database-url.ts'
import type { ServerKind } from './systems.ts'

// /proc reports utime and stime in USER_HZ ticks, which Linux fixes at 100 per second for userspace.
const MICROSECONDS_PER_TICK = 10_000

const BROKER_PROCESS_NAMES: Record<Exclude<ServerKind, 'postgres'>, string[]> = {
  nats: ['nats-server'],
  rabbitmq: ['beam.smp'],
  redis: ['redis-server'],
}

export class ServerCpuMeter {
  private before = new Map<number, number>()

  /**
   * For Postgres, `sql` finds the backends of the benchmark's own connections (by application_name), so that
   * other sessions on the same server are not counted.
   */
  constructor(
    private readonly kind: ServerKind,
    private readonly sql: Sql,
  ) {}

  async start(): Promise<void> {
    this.before = await readTicks(await this.pids())
  }

  /** CPU microseconds (user + system) since start(), or null when the server's processes are not visible. */
  async stop(): Promise<number | null> {
    const after = await readTicks(await this.pids())
    if (after.size === 0) return null
    let ticks = 0
    for (const [pid, total] of after) ticks += total - (this.before.get(pid) ?? 0)
    return ticks * MICROSECONDS_PER_TICK
  }

  private async pids(): Promise<number[]> {
    if (this.kind === 'postgres') {
      const rows = await this.sql<Array<{ pid: number }>>`
        select pid from pg_stat_activity
        where application_name like ${`${APPLICATION_NAME_PREFIX}-%`}
          and application_name <> ${`${APPLICATION_NAME_PREFIX}-orchestrator`}`
      return rows.map((row) => row.pid)
    }
    return processesNamed(BROKER_PROCESS_NAMES[this.kind])
  }
}

async function processesNamed(names: string[]): Promise<number[]> {
  let entries: string[]
  try {
    entries = await readdir('/proc')
  } catch {
    return []
  }
  const pids: number[] = []
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue
    const comm = await readFile(`/proc/${entry}/comm`, 'utf8').catch(() => '')
    if (names.includes(comm.trim())) pids.push(Number(entry))
  }
  return pids
}

async function readTicks(pids: number[]): Promise<Map<number, number>> {
  const ticks = new Map<number, number>()
  for (const pid of pids) {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => null)
    if (stat === null) continue
    // Fields after the command name (which may itself contain spaces and parentheses): state is field 3,
    // utime field 14, stime field 15.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    ticks.set(pid, Number(fields[11]) + Number(fields[12]))
  }
  return ticks
}
