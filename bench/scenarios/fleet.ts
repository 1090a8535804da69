// The fleet scenario (`--scenario fleet`): the usual pair of processes per system, measured beside N idle
// processes of a deployment's other pods, each size in turn in every pass, so that the reference (none)
// and each size share the machine's mood of that pass. Before PostgreSQL 19 every NOTIFY signals every
// session of the database that LISTENs: what idle processes cost is what their LISTENs cost.
//
// The idle processes (bench/scenarios/fleet-member.ts) use a pgrr schema of their own, `pgrr_bench_fleet`
// (NOTIFY reaches every LISTENing session of the database whatever its schema), or for
// `responders-other-db` the same schema in a database of their own, `pgrr_bench_fleet_other`, created
// and dropped here. Their sessions are named `pgrr-fleet-idle`, so that the matrix's cleanup leaves them
// alone and they are not counted as the bench's server CPU.
import postgres from 'postgres'
import { migrate } from '../../src/migrate.ts'
import { BenchChild, killAllChildren } from '../child.ts'
import { quoteIdentifier, withApplicationNameExactly } from '../database-url.ts'
import type { MachineDescription } from '../machine.ts'
import type { BenchOptions, FleetKind, FleetOptions } from '../options.ts'
import { median } from '../percentile.ts'
import { ProgressLine } from '../progress.ts'
import type { BenchResult } from '../result.ts'
import type { BenchRun } from '../run.ts'
import type { FleetMemberConfig, FromFleetMember, ToFleetMember } from './fleet-member.ts'

export const FLEET_SCHEMA = 'pgrr_bench_fleet'
export const FLEET_DATABASE = 'pgrr_bench_fleet_other'
const MEMBER_APPLICATION_NAME = 'pgrr-fleet-idle'
const ADMIN_APPLICATION_NAME = 'pgrr-fleet-admin'
/** Idle members per Node process. */
const MEMBERS_PER_PROCESS = 10
const MEMBER_START_TIMEOUT_MS = 90_000
/** Sessions each idle member holds once idle: a client its LISTEN session; a responder that, its own and a pool's. */
const SESSIONS_PER_MEMBER: Record<FleetKind, number> = { clients: 1, 'clients-listening': 1, responders: 3, 'responders-other-db': 3 }
/** Connections left free for the measured pair and the rest of the server's users. */
const CONNECTION_HEADROOM = 25

export interface FleetRow {
  pass: number
  /** 'none' for the reference run of the pass. */
  kind: FleetKind | 'none'
  size: number
  /** Idle members LISTENing on something while the pair ran. */
  listening: number
  system: string
  concurrency: number
  p50Us: number | null
  p99Us: number | null
  requestsPerSec: number | null
  errors: number
  /** p50 over the same pass's reference (no idle process). */
  p50VsNone: number | null
  /** requestsPerSec over the same pass's reference. */
  requestsPerSecVsNone: number | null
  skipped?: string
}

export interface FleetSummaryRow {
  kind: FleetKind | 'none'
  size: number
  system: string
  concurrency: number
  passes: number
  p50Us: number | null
  requestsPerSec: number | null
  /** Median over passes, and the lowest and highest pass. */
  p50VsNone: [median: number, low: number, high: number] | null
  requestsPerSecVsNone: [median: number, low: number, high: number] | null
}

export interface FleetReport {
  command: string
  date: string
  machine: MachineDescription | null
  settings: { systems: string[]; concurrency: number[]; count: number; runs: number; sizes: number[]; kinds: FleetKind[]; phaseTimeCapMs: number }
  warnings: string[]
  scenarios: { fleet: { rows: FleetRow[]; summary: FleetSummaryRow[] } }
}

/** The matrix runner (bench/run.ts), passed in: run.ts imports this file, and awaits at its top level. */
export type RunMatrix = (options: BenchOptions, hooks: { signal?: AbortSignal }) => Promise<BenchRun>

export async function runFleet(
  options: BenchOptions,
  fleet: FleetOptions,
  runBench: RunMatrix,
  hooks: { signal?: AbortSignal; command?: string } = {},
): Promise<FleetReport> {
  const signal = hooks.signal ?? new AbortController().signal
  const progress = new ProgressLine()
  // Not named like the matrix runs' connections (pgrr-bench-…): each run's cleanup terminates those.
  const admin = postgres(withApplicationNameExactly(options.databaseUrl, ADMIN_APPLICATION_NAME), { max: 1, onnotice: () => {} })
  const otherUrl = databaseUrlFor(options.databaseUrl, FLEET_DATABASE)
  const needsOther = fleet.kinds.includes('responders-other-db')
  const rows: FleetRow[] = []
  const warnings = new Set<string>()
  let machine: MachineDescription | null = null
  let createdOther = false
  try {
    await admin.unsafe(`drop schema if exists ${quoteIdentifier(FLEET_SCHEMA)} cascade`)
    await migrate({ connectionString: options.databaseUrl, schema: FLEET_SCHEMA })
    if (needsOther) {
      await dropOtherDatabase(admin)
      await admin.unsafe(`create database ${quoteIdentifier(FLEET_DATABASE)}`)
      createdOther = true
      await migrate({ connectionString: otherUrl, schema: FLEET_SCHEMA })
    }
    const points: Array<{ kind: FleetKind | 'none'; size: number }> = [{ kind: 'none', size: 0 }]
    for (const kind of fleet.kinds) for (const size of fleet.sizes) if (size > 0) points.push({ kind, size })
    for (let pass = 1; pass <= options.runs; pass++) {
      let reference: BenchResult[] = []
      for (const point of points) {
        signal.throwIfAborted()
        const label = `pass ${pass}/${options.runs}, ${point.size} idle ${point.kind === 'none' ? '' : point.kind}`.trim()
        const free = point.kind === 'none' ? Infinity : await freeConnections(admin)
        const needed = point.kind === 'none' ? 0 : point.size * SESSIONS_PER_MEMBER[point.kind]
        if (needed > free - CONNECTION_HEADROOM) {
          const skipped = `needs ${needed} connections, ${free} free (max_connections)`
          progress.log(`${label}: skipped, ${skipped}`)
          for (const system of options.systems) {
            for (const concurrency of options.concurrency) rows.push(skippedRow(pass, point.kind, point.size, system, concurrency, skipped))
          }
          continue
        }
        progress.log(`${label}: starting`)
        const url = point.kind === 'responders-other-db' ? otherUrl : options.databaseUrl
        const members = point.kind === 'none' ? null : await startMembers(point.kind, point.size, url, signal)
        try {
          const listening = members?.listening ?? 0
          if (members) progress.log(`${label}: ${listening} of ${point.size} idle members LISTEN`)
          const { report } = await runBench({ ...options, runs: 1, writeDocs: false }, { signal })
          machine ??= report.machine
          // The idle members are "other sessions" on purpose: the reference runs say whether there were others.
          if (point.kind === 'none') for (const warning of report.warnings) warnings.add(`pass ${pass}: ${warning}`)
          if (point.kind === 'none') reference = report.results
          for (const result of report.results) rows.push(fleetRow(pass, point.kind, point.size, listening, result, reference))
        } finally {
          await members?.stop()
        }
      }
    }
  } finally {
    killAllChildren()
    await Promise.all([...members].map((child) => child.killAndWait()))
    await admin`select pg_terminate_backend(pid) from pg_stat_activity where application_name = ${MEMBER_APPLICATION_NAME}`.catch(() => undefined)
    await admin.unsafe(`drop schema if exists ${quoteIdentifier(FLEET_SCHEMA)} cascade`).catch(() => undefined)
    if (createdOther) await dropOtherDatabase(admin).catch(() => undefined)
    await admin.end({ timeout: 5 })
  }
  return {
    command: hooks.command ?? 'node --import tsx bench/run.ts --scenario fleet',
    date: new Date().toISOString(),
    machine,
    settings: {
      systems: options.systems,
      concurrency: options.concurrency,
      count: options.count,
      runs: options.runs,
      sizes: fleet.sizes,
      kinds: fleet.kinds,
      phaseTimeCapMs: options.phaseTimeCapMs,
    },
    warnings: [...warnings],
    scenarios: { fleet: { rows, summary: summarizeFleet(rows) } },
  }
}

/** Every idle member process alive: they are not killed with each matrix run, so the fleet kills them last. */
const members = new Set<BenchChild<ToFleetMember, FromFleetMember>>()

/** Starts `size` idle members in processes of up to ten; resolves once every one is idle. */
async function startMembers(
  kind: FleetKind,
  size: number,
  databaseUrl: string,
  signal: AbortSignal,
): Promise<{ listening: number; stop: () => Promise<void> }> {
  const config: FleetMemberConfig = { databaseUrl, schema: FLEET_SCHEMA, applicationName: MEMBER_APPLICATION_NAME }
  const children: Array<BenchChild<ToFleetMember, FromFleetMember>> = []
  for (let first = 0; first < size; first += MEMBERS_PER_PROCESS) {
    const count = Math.min(MEMBERS_PER_PROCESS, size - first)
    children.push(new BenchChild(`fleet ${kind}`, './scenarios/fleet-member.ts', [kind, String(count), JSON.stringify(config)], () => {}, { runScoped: false }))
  }
  for (const child of children) members.add(child)
  const stop = async (): Promise<void> => {
    await Promise.all(children.map((child) => child.stop({ type: 'stop' }, 8000)))
    for (const child of children) members.delete(child)
  }
  try {
    const ready = await Promise.all(children.map((child) => child.expect('ready', MEMBER_START_TIMEOUT_MS, signal)))
    return { listening: ready.reduce((sum, message) => sum + message.listening, 0), stop }
  } catch (error) {
    await Promise.all(children.map((child) => child.killAndWait()))
    throw error
  }
}

async function freeConnections(admin: postgres.Sql): Promise<number> {
  const [row] = await admin<[{ free: number }]>`
    select current_setting('max_connections')::int - (select count(*) from pg_stat_activity where backend_type = 'client backend')::int as free`
  return row.free
}

async function dropOtherDatabase(admin: postgres.Sql): Promise<void> {
  await admin`select pg_terminate_backend(pid) from pg_stat_activity where datname = ${FLEET_DATABASE}`
  await admin.unsafe(`drop database if exists ${quoteIdentifier(FLEET_DATABASE)}`)
}

function databaseUrlFor(databaseUrl: string, database: string): string {
  const url = new URL(databaseUrl)
  url.pathname = `/${database}`
  return url.toString()
}

function fleetRow(pass: number, kind: FleetKind | 'none', size: number, listening: number, result: BenchResult, reference: BenchResult[]): FleetRow {
  const base = reference.find((row) => row.system === result.system && row.concurrency === result.concurrency)
  const ratio = (value: number | null, of: number | null | undefined): number | null =>
    value === null || of === null || of === undefined || of === 0 ? null : Math.round((value / of) * 100) / 100
  return {
    pass,
    kind,
    size,
    listening,
    system: result.system,
    concurrency: result.concurrency,
    p50Us: result.p50Us,
    p99Us: result.p99Us,
    requestsPerSec: result.requestsPerSec,
    errors: result.errors,
    p50VsNone: ratio(result.p50Us, base?.p50Us),
    requestsPerSecVsNone: ratio(result.requestsPerSec, base?.requestsPerSec),
    ...(result.skipped ? { skipped: result.skipped } : {}),
    ...(result.failed ? { skipped: `failed: ${result.failed}` } : {}),
  }
}

function skippedRow(pass: number, kind: FleetKind | 'none', size: number, system: string, concurrency: number, skipped: string): FleetRow {
  return {
    pass, kind, size, listening: 0, system, concurrency, p50Us: null, p99Us: null, requestsPerSec: null, errors: 0,
    p50VsNone: null, requestsPerSecVsNone: null, skipped,
  }
}

/** Per point, system and concurrency: medians over the passes, and each ratio's range. */
export function summarizeFleet(rows: FleetRow[]): FleetSummaryRow[] {
  const groups = new Map<string, FleetRow[]>()
  for (const row of rows) {
    const key = `${row.kind}|${row.size}|${row.system}|${row.concurrency}`
    groups.set(key, [...(groups.get(key) ?? []), row])
  }
  const spread = (values: number[]): [number, number, number] | null =>
    values.length === 0 ? null : [median(values), Math.min(...values), Math.max(...values)]
  const present = (values: Array<number | null>): number[] => values.filter((value): value is number => value !== null)
  return [...groups.values()].map((group) => {
    const first = group[0] as FleetRow
    const p50 = present(group.map((row) => row.p50Us))
    const rps = present(group.map((row) => row.requestsPerSec))
    return {
      kind: first.kind,
      size: first.size,
      system: first.system,
      concurrency: first.concurrency,
      passes: p50.length,
      p50Us: p50.length > 0 ? median(p50) : null,
      requestsPerSec: rps.length > 0 ? Math.round(median(rps)) : null,
      p50VsNone: spread(present(group.map((row) => row.p50VsNone))),
      requestsPerSecVsNone: spread(present(group.map((row) => row.requestsPerSecVsNone))),
    }
  })
}

/** The summary as a text table. */
export function formatFleet(report: FleetReport): string {
  const range = (value: [number, number, number] | null): string =>
    value === null ? '-' : value[1] === value[2] ? `${value[0].toFixed(2)}` : `${value[0].toFixed(2)} (${value[1].toFixed(2)}-${value[2].toFixed(2)})`
  const header = ['idle', 'n', 'system', 'c', 'p50 µs', 'req/s', 'p50 ×none', 'req/s ×none']
  const lines = report.scenarios.fleet.summary.map((row) => [
    row.kind,
    String(row.size),
    row.system,
    String(row.concurrency),
    row.p50Us === null ? '-' : String(Math.round(row.p50Us)),
    row.requestsPerSec === null ? '-' : String(row.requestsPerSec),
    range(row.p50VsNone),
    range(row.requestsPerSecVsNone),
  ])
  const widths = header.map((title, column) => Math.max(title.length, ...lines.map((line) => (line[column] ?? '').length)))
  const format = (line: string[]): string => line.map((cell, column) => cell.padEnd(widths[column] ?? 0)).join('  ').trimEnd()
  return [format(header), ...lines.map(format)].join('\n')
}
