// The co-tenancy scenario (`--scenario cotenancy`): what request-reply costs the application's own
// transactions. pgbench (TPC-B, `--pgbench-scale` 10, `--pgbench-clients` 8, in a database of its own,
// created and dropped here) runs alone, then beside each system of `--systems` serving `--rate` requests/s
// (default: half of what pgrr-ts reached at c=64 just before, closed loop), one phase of
// `--phase-seconds` each, in a rotating order each pass. The load is open-loop (a fixed rate, as
// independent users send) from this process, to one responder process.
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import postgres from 'postgres'
import { migrate } from '../../src/migrate.ts'
import { BenchChild, killAllChildren } from '../child.ts'
import { APPLICATION_NAME_PREFIX, quoteIdentifier, withApplicationName } from '../database-url.ts'
import { runLoad } from '../load.ts'
import type { OrchestratorToResponder, ResponderToOrchestrator } from '../messages.ts'
import type { BenchOptions, CotenancyOptions } from '../options.ts'
import { median } from '../percentile.ts'
import type { PeerConfig } from '../peer.ts'
import { loadPeer } from '../peer-modules.ts'
import { ProgressLine } from '../progress.ts'
import { acquireRunLock, releaseRunLock } from '../run-lock.ts'
import { OpenLoad, type OpenLoadStats } from './open-load.ts'

const execFileAsync = promisify(execFile)
export const PGBENCH_DATABASE = 'pgrr_bench_pgbench'
const PGRR_SCHEMA = 'pgrr_bench'
const WARMUP_MS = 2000
const START_TIMEOUT_MS = 30_000

export interface CotenancyRow {
  pass: number
  /** 'alone', or the system serving requests beside pgbench. */
  phase: string
  pgbenchTps: number
  /** pgbenchTps over the same pass's 'alone'. */
  tpsVsAlone: number | null
  load: OpenLoadStats | null
}

export interface CotenancyReport {
  command: string
  date: string
  settings: { systems: string[]; rate: number; phaseSeconds: number; runs: number; pgbenchScale: number; pgbenchClients: number }
  /** What pgrr-ts reached at c=64 (closed loop) when the rate was derived from it. */
  maxRequestsPerSec: number | null
  scenarios: { cotenancy: { rows: CotenancyRow[]; summary: Array<{ phase: string; tpsVsAlone: [number, number, number] | null; pgbenchTps: number }> } }
}

export async function runCotenancy(
  options: BenchOptions,
  cotenancy: CotenancyOptions,
  hooks: { signal?: AbortSignal; command?: string } = {},
): Promise<CotenancyReport> {
  const signal = hooks.signal ?? new AbortController().signal
  const progress = new ProgressLine()
  // Named as an orchestrator: the run lock then keeps matrix runs and this one apart.
  const admin = postgres(withApplicationName(options.databaseUrl, 'orchestrator'), { max: 1, onnotice: () => {} })
  const pgbenchUrl = new URL(options.databaseUrl)
  pgbenchUrl.pathname = `/${PGBENCH_DATABASE}`
  const config: PeerConfig = {
    databaseUrl: options.databaseUrl,
    natsUrl: options.natsUrl,
    amqpUrl: options.amqpUrl,
    redisUrl: options.redisUrl,
    pgrrSchema: PGRR_SCHEMA,
    pocSchema: 'pgrr_bench_poc',
    service: 'bench_echo',
  }
  const rows: CotenancyRow[] = []
  let rate = cotenancy.rate
  let maxRequestsPerSec: number | null = null
  let created = false
  let locked = false
  try {
    await acquireRunLock(admin)
    locked = true
    await admin.unsafe(`drop schema if exists ${quoteIdentifier(PGRR_SCHEMA)} cascade`)
    await migrate({ connectionString: options.databaseUrl, schema: PGRR_SCHEMA })
    await dropDatabase(admin)
    await admin.unsafe(`create database ${quoteIdentifier(PGBENCH_DATABASE)}`)
    created = true
    progress.log(`pgbench -i -s ${cotenancy.pgbenchScale}`)
    await execFileAsync(cotenancy.pgbenchPath, ['-i', '-q', '-s', String(cotenancy.pgbenchScale), pgbenchUrl.toString()])
    if (rate === null) {
      maxRequestsPerSec = await withSystem('pgrr-ts', config, signal, async (call) => {
        const result = await runLoad({ count: 8000, concurrency: 64, timeCapMs: 30_000, firstSequence: 0, payloadBytes: 100, call, onProgress: () => {} })
        return Math.round((result.latenciesUs.length / result.elapsedMs) * 1000)
      })
      rate = Math.max(1, Math.round(maxRequestsPerSec / 2))
      progress.log(`pgrr-ts reached ${maxRequestsPerSec} requests/s at c=64: the load is ${rate} requests/s`)
    }
    const phases = ['alone', ...options.systems]
    for (let pass = 1; pass <= options.runs; pass++) {
      // Rotated each pass, so that no phase always runs first or last.
      const order = phases.map((_, index) => phases[(index + pass - 1) % phases.length] as string)
      const passRows: CotenancyRow[] = []
      for (const phase of order) {
        signal.throwIfAborted()
        let row: CotenancyRow
        if (phase === 'alone') {
          row = { pass, phase, pgbenchTps: await pgbench(cotenancy, pgbenchUrl.toString()), tpsVsAlone: null, load: null }
        } else {
          row = await withSystem(phase, config, signal, async (call) => {
            const load = new OpenLoad(call, rate as number)
            try {
              await new Promise((resolve) => setTimeout(resolve, WARMUP_MS))
              load.mark()
              const tps = await pgbench(cotenancy, pgbenchUrl.toString())
              return { pass, phase, pgbenchTps: tps, tpsVsAlone: null, load: await load.stop() }
            } catch (error) {
              await load.stop()
              throw error
            }
          })
        }
        progress.log(`pass ${pass}, ${phase}: pgbench ${row.pgbenchTps} tps${row.load ? `, ${row.load.requestsPerSec} requests/s, ${row.load.errors} errors` : ''}`)
        passRows.push(row)
      }
      const alone = passRows.find((row) => row.phase === 'alone')?.pgbenchTps
      for (const row of passRows) row.tpsVsAlone = alone ? Math.round((row.pgbenchTps / alone) * 1000) / 1000 : null
      rows.push(...passRows)
    }
  } finally {
    killAllChildren()
    if (created) await dropDatabase(admin).catch(() => undefined)
    if (locked) {
      await admin`select pg_terminate_backend(pid) from pg_stat_activity
        where application_name like ${`${APPLICATION_NAME_PREFIX}-%`} and pid <> pg_backend_pid() and datname = current_database()`.catch(() => undefined)
      await admin.unsafe(`drop schema if exists ${quoteIdentifier(PGRR_SCHEMA)} cascade`).catch(() => undefined)
      await releaseRunLock(admin).catch(() => undefined)
    }
    await admin.end({ timeout: 5 })
  }
  const summary = ['alone', ...options.systems].map((phase) => {
    const group = rows.filter((row) => row.phase === phase)
    const ratios = group.map((row) => row.tpsVsAlone).filter((value): value is number => value !== null)
    return {
      phase,
      pgbenchTps: Math.round(median(group.map((row) => row.pgbenchTps))),
      tpsVsAlone: ratios.length > 0 ? ([median(ratios), Math.min(...ratios), Math.max(...ratios)] as [number, number, number]) : null,
    }
  })
  return {
    command: hooks.command ?? 'node --import tsx bench/run.ts --scenario cotenancy',
    date: new Date().toISOString(),
    settings: {
      systems: options.systems,
      rate: rate ?? 0,
      phaseSeconds: cotenancy.phaseSeconds,
      runs: options.runs,
      pgbenchScale: cotenancy.pgbenchScale,
      pgbenchClients: cotenancy.pgbenchClients,
    },
    maxRequestsPerSec,
    scenarios: { cotenancy: { rows, summary } },
  }
}

/** Runs `body` with a responder process of `system` and a caller in this process. */
async function withSystem<T>(system: string, config: PeerConfig, signal: AbortSignal, body: (call: (payload: string) => Promise<string>) => Promise<T>): Promise<T> {
  const responder = new BenchChild<OrchestratorToResponder, ResponderToOrchestrator>(`${system} responder`, './responder.ts', [system, JSON.stringify(config)], () => {})
  try {
    await responder.expect('ready', START_TIMEOUT_MS, signal)
    const caller = await (await loadPeer(system)).openCaller(config, 64)
    try {
      return await body((payload) => caller.call(payload, 0))
    } finally {
      await caller.close()
    }
  } finally {
    await responder.stop({ type: 'stop' }, 5000)
  }
}

/** One pgbench run (TPC-B, no vacuum between runs); its tps, initial connections excluded. */
async function pgbench(options: CotenancyOptions, url: string): Promise<number> {
  const args = ['-n', '-c', String(options.pgbenchClients), '-j', '2', '-T', String(options.phaseSeconds), url]
  const { stdout } = await execFileAsync(options.pgbenchPath, args)
  const match = /tps = ([\d.]+) \(without initial connection time\)/.exec(stdout)
  if (!match) throw new Error(`pgbench printed no tps: ${stdout.slice(-300)}`)
  return Math.round(Number(match[1]))
}

async function dropDatabase(admin: postgres.Sql): Promise<void> {
  await admin`select pg_terminate_backend(pid) from pg_stat_activity where datname = ${PGBENCH_DATABASE}`
  await admin.unsafe(`drop database if exists ${quoteIdentifier(PGBENCH_DATABASE)}`)
}

/** The summary as text. */
export function formatCotenancy(report: CotenancyReport): string {
  const lines = [`load: ${report.settings.rate} requests/s${report.maxRequestsPerSec ? ` (half of pgrr-ts's ${report.maxRequestsPerSec} at c=64)` : ''}`]
  for (const row of report.scenarios.cotenancy.summary) {
    const ratio = row.tpsVsAlone ? `${row.tpsVsAlone[0].toFixed(3)} (${row.tpsVsAlone[1].toFixed(3)}-${row.tpsVsAlone[2].toFixed(3)})` : '-'
    lines.push(`${row.phase.padEnd(14)} pgbench ${String(row.pgbenchTps).padStart(6)} tps   ×alone ${ratio}`)
  }
  return lines.join('\n')
}
