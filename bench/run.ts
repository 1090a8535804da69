// The benchmark orchestrator: `node --import tsx bench/run.ts [options]` (see bench/options.ts), or
// `runBench(options)` from the CLI. For each system it spawns a responder process and a caller process,
// runs every concurrency, and collects one row per scenario; then prints a table or JSON, and with
// --write-docs regenerates docs/benchmarks.md and docs/benchmarks.svg.
import { pathToFileURL } from 'node:url'
import postgres from 'postgres'
import { killAllChildren } from './child.ts'
import { withApplicationName } from './database-url.ts'
import { checkRunConditions } from './run-conditions.ts'
import { describeMachine, type MachineDescription } from './machine.ts'
import { SERVE_CONCURRENCY, USAGE, parseBenchArgs, type BenchOptions } from './options.ts'
import { PAYLOAD_BYTES } from './payload.ts'
import { loadPgrrCore } from './peers/pgrr-core.ts'
import { hostAndPort, isReachable } from './probe.ts'
import { ProgressLine } from './progress.ts'
import { writeBenchmarkDocs } from './report-docs.ts'
import { formatTextTable } from './report-table.ts'
import {
  addFloorRatios,
  failedResult,
  medianOfRuns,
  medianPassIndex,
  skippedResult,
  type BenchResult,
  type LatencyCurve,
} from './result.ts'
import { acquireRunLock, releaseRunLock } from './run-lock.ts'
import { BenchSchemas } from './schemas.ts'
import { runSystem, scenarioCount } from './system-runner.ts'
import { SYSTEMS, type ServerKind, type SystemSpec } from './systems.ts'
import type { PeerConfig } from './peer.ts'

export type { BenchOptions } from './options.ts'
export type { BenchResult } from './result.ts'

export const PGRR_SCHEMA = 'pgrr_bench'
export const POC_SCHEMA = 'pgrr_bench_poc'
const SERVICE = 'bench_echo'

/** What `--json` prints. */
export interface BenchReport {
  command: string
  date: string
  machine: MachineDescription
  settings: {
    systems: string[]
    concurrency: number[]
    count: number
    /** Passes of the whole matrix; each result is the median over them (see --runs). */
    runs: number
    quick: boolean
    phaseTimeCapMs: number
    payloadBytes: number
    /** Channels the requests were spread over (--channels). */
    channels: number
    /** The pgrr responder's serve() concurrency (--serve-concurrency). */
    serveConcurrency: number
  }
  /** Conditions that make the numbers unrepresentative (another transaction pinning the xmin horizon, load). */
  warnings: string[]
  results: BenchResult[]
}

export interface BenchRun {
  report: BenchReport
  /** Latency distributions, for the picture; not part of the JSON. */
  curves: LatencyCurve[]
}

/**
 * Runs the benchmark. Progress goes to stderr. `signal` aborts the run (children are killed and the schemas
 * dropped before this rejects); `command` is what the report says was run.
 */
export async function runBench(options: BenchOptions, hooks: { signal?: AbortSignal; command?: string } = {}): Promise<BenchRun> {
  const signal = hooks.signal ?? new AbortController().signal
  const progress = new ProgressLine()
  const sql = postgres(withApplicationName(options.databaseUrl, 'orchestrator'), { max: 1, onnotice: () => {} })
  // Last line of defence: whatever happens to this process, its children go with it.
  process.on('exit', killAllChildren)
  const schemas = new BenchSchemas(sql, options.databaseUrl, PGRR_SCHEMA, POC_SCHEMA)
  const config: PeerConfig = {
    databaseUrl: options.databaseUrl,
    natsUrl: options.natsUrl,
    amqpUrl: options.amqpUrl,
    redisUrl: options.redisUrl,
    pgrrSchema: PGRR_SCHEMA,
    pocSchema: POC_SCHEMA,
    service: SERVICE,
    channels: options.channels,
    serveConcurrency: options.serveConcurrency,
  }
  const passes: BenchResult[][] = []
  const passCurves: LatencyCurve[][] = []
  let machine: MachineDescription | undefined
  let locked = false
  const warnings: string[] = []

  try {
    await acquireRunLock(sql)
    locked = true
    await sql`set lock_timeout = '10s'`
    machine = await describeMachine(sql)
    warnings.push(...(await checkRunConditions(sql, 'start')))
    for (const warning of warnings) progress.log(`warning: ${warning}`)
    const perPass = options.systems.length * options.concurrency.length
    const totalScenarios = perPass * options.runs
    // Passes run one after the other, each over every system: a slow spell of the machine then touches
    // every system a little instead of one system a lot.
    for (let pass = 0; pass < options.runs; pass++) {
      const results: BenchResult[] = []
      const curves: LatencyCurve[] = []
      passes.push(results)
      passCurves.push(curves)
      if (options.runs > 1) progress.log(`pass ${pass + 1} of ${options.runs}`)
      for (const [index, name] of options.systems.entries()) {
        signal.throwIfAborted()
        const spec = SYSTEMS[name]
        const unavailable = await prepare(spec, options, schemas)
        if (unavailable) {
          const rows = options.concurrency.map((concurrency) =>
            unavailable.skip
              ? skippedResult(spec.name, concurrency, unavailable.reason)
              : failedResult(spec.name, concurrency, scenarioCount(spec, concurrency, options), unavailable.reason),
          )
          results.push(...rows)
          progress.log(`${spec.name}: ${unavailable.skip ? 'skipped' : 'FAILED'}: ${unavailable.reason}`)
          continue
        }
        const outcome = await runSystem(spec, {
          options,
          config,
          sql,
          progress,
          signal,
          firstScenario: pass * perPass + index * options.concurrency.length + 1,
          totalScenarios,
        })
        results.push(...outcome.results)
        curves.push(...outcome.curves)
        if (outcome.serverVersion && spec.server !== 'postgres') machine.servers[spec.server] = outcome.serverVersion
        if (spec.needs === 'poc-schema') await schemas.dropPoc()
        if (spec.schema) await schemas.dropPeerSchema(spec.schema)
      }
    }
    const atEnd = await checkRunConditions(sql, 'end')
    for (const warning of atEnd) progress.log(`warning: ${warning}`)
    warnings.push(...atEnd)
  } finally {
    killAllChildren()
    // Without the lock the schemas and sessions belong to the run that holds it: leave them alone.
    if (locked) {
      for (const problem of await schemas.dropAll()) progress.log(`cleanup: ${problem}`)
      await releaseRunLock(sql).catch(() => {})
    }
    await sql.end({ timeout: 5 })
    process.off('exit', killAllChildren)
  }

  for (const results of passes) addFloorRatios(results)
  const results = medianOfRuns(passes)
  // The picture shows, for each scenario, the distribution of its median pass.
  const curves = results.flatMap((row) => {
    const pass = medianPassIndex(passes, row.system, row.concurrency)
    return passCurves[pass]?.filter((curve) => curve.system === row.system && curve.concurrency === row.concurrency) ?? []
  })
  const report: BenchReport = {
    command: hooks.command ?? commandFor(options),
    date: new Date().toISOString(),
    machine,
    settings: {
      systems: options.systems,
      concurrency: options.concurrency,
      count: options.count,
      runs: options.runs,
      quick: options.quick,
      phaseTimeCapMs: options.phaseTimeCapMs,
      payloadBytes: options.payloadBytes,
      channels: options.channels,
      serveConcurrency: options.serveConcurrency,
    },
    warnings,
    results,
  }
  if (options.writeDocs) await writeBenchmarkDocs(report, curves)
  return { report, curves }
}

const DEFAULT_PORTS: Record<Exclude<ServerKind, 'postgres'>, number> = { nats: 4222, rabbitmq: 5672, redis: 6379 }

/**
 * Gets a system ready to run: its server reachable, its schema in place. Returns why it cannot run instead:
 * `skip` for what this machine lacks (a broker, the core), a failure for what should have worked.
 */
async function prepare(spec: SystemSpec, options: BenchOptions, schemas: BenchSchemas): Promise<{ skip: boolean; reason: string } | null> {
  if (spec.unavailable) return { skip: true, reason: spec.unavailable }
  if (spec.server !== 'postgres') {
    const url = { nats: options.natsUrl, rabbitmq: options.amqpUrl, redis: options.redisUrl }[spec.server]
    const port = DEFAULT_PORTS[spec.server]
    if (!(await isReachable(url, port))) return { skip: true, reason: `${spec.server} not reachable at ${hostAndPort(url, port)}` }
  }
  try {
    if (spec.needs === 'pgrr-schema') {
      const loaded = await loadPgrrCore()
      if ('unavailable' in loaded) return { skip: true, reason: loaded.unavailable }
      await schemas.preparePgrr(loaded.core)
    } else if (spec.needs === 'poc-schema') {
      await schemas.preparePoc()
    }
    if (spec.schema) await schemas.preparePeerSchema(spec.schema)
  } catch (error) {
    return { skip: false, reason: `setup failed: ${error instanceof Error ? error.message : String(error)}` }
  }
  return null
}

function commandFor(options: BenchOptions): string {
  const parts = ['node --import tsx bench/run.ts']
  if (options.quick) parts.push('--quick')
  parts.push(`--systems ${options.systems.join(',')}`, `--concurrency ${options.concurrency.join(',')}`, `--count ${options.count}`)
  if (options.runs > 1) parts.push(`--runs ${options.runs}`)
  if (options.payloadBytes !== PAYLOAD_BYTES) parts.push(`--payload-bytes ${options.payloadBytes}`)
  if (options.channels > 1) parts.push(`--channels ${options.channels}`)
  if (options.serveConcurrency !== SERVE_CONCURRENCY) parts.push(`--serve-concurrency ${options.serveConcurrency}`)
  if (options.writeDocs) parts.push('--write-docs')
  return parts.join(' ')
}

/** The table for the terminal, headed by the payload size when it is not the standard one. */
export function formatBenchTable(report: BenchReport): string {
  const table = formatTextTable(report.results)
  return report.settings.payloadBytes === PAYLOAD_BYTES ? table : `payload: ${report.settings.payloadBytes} bytes\n${table}`
}

/** Exit code: 0 when every scenario that ran got all its replies right. */
export function exitCodeFor(report: BenchReport): number {
  return report.results.some((result) => result.failed || result.errors > 0) ? 1 : 0
}

/**
 * The command line: parses `argv`, owns SIGINT/SIGTERM (the first aborts the run cleanly, the second kills the
 * children and exits), prints the table or the JSON. Returns the exit code.
 */
export async function main(argv: string[], command = `node --import tsx bench/run.ts ${argv.join(' ')}`.trim()): Promise<number> {
  let parsed
  try {
    parsed = parseBenchArgs(argv)
  } catch (error) {
    process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n\n${USAGE}\n`)
    return 2
  }
  if (parsed.kind === 'help') {
    process.stdout.write(`${USAGE}\n`)
    return 0
  }
  if (parsed.kind === 'drivers') {
    const { runDriverComparison } = await import('./drivers.ts')
    await runDriverComparison({ databaseUrl: parsed.databaseUrl })
    return 0
  }
  if (parsed.kind === 'functions') {
    const { runFunctionTimings } = await import('./functions.ts')
    return runFunctionTimings(parsed.options)
  }

  const controller = new AbortController()
  const onSignal = (): void => {
    if (controller.signal.aborted) {
      killAllChildren()
      process.exit(130)
    }
    process.stderr.write('\ninterrupted: stopping children and dropping the bench schemas (again to force)\n')
    controller.abort()
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  try {
    if (parsed.kind === 'fleet') {
      const { runFleet, formatFleet } = await import('./scenarios/fleet.ts')
      const report = await runFleet(parsed.options, parsed.fleet, runBench, { signal: controller.signal, command })
      process.stdout.write(parsed.options.json ? `${JSON.stringify(report, null, 2)}\n` : `${formatFleet(report)}\n`)
      return report.scenarios.fleet.rows.some((row) => row.errors > 0 || row.skipped?.startsWith('failed')) ? 1 : 0
    }
    if (parsed.kind === 'cotenancy') {
      const { runCotenancy, formatCotenancy } = await import('./scenarios/cotenancy.ts')
      const report = await runCotenancy(parsed.options, parsed.cotenancy, { signal: controller.signal, command })
      process.stdout.write(parsed.options.json ? `${JSON.stringify(report, null, 2)}\n` : `${formatCotenancy(report)}\n`)
      return report.scenarios.cotenancy.rows.some((row) => (row.load?.errors ?? 0) > 0) ? 1 : 0
    }
    if (parsed.kind === 'long') {
      const { runLongRun, formatLongRun, longRunExitCode } = await import('./long-run.ts')
      const report = await runLongRun(parsed.options, { signal: controller.signal, command })
      process.stdout.write(parsed.options.json ? `${JSON.stringify(report, null, 2)}\n` : `${formatLongRun(report)}\n`)
      return longRunExitCode(report)
    }
    const { report } = await runBench(parsed.options, { signal: controller.signal, command })
    process.stdout.write(parsed.options.json ? `${JSON.stringify(report, null, 2)}\n` : `${formatBenchTable(report)}\n`)
    return exitCodeFor(report)
  } catch (error) {
    if (controller.signal.aborted) return 130
    process.stderr.write(`bench failed: ${error instanceof Error ? error.message : String(error)}\n`)
    return 1
  } finally {
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const code = await main(process.argv.slice(2))
  // Exit explicitly once stdout is flushed: a driver handle left open must not keep a finished run alive.
  process.stdout.write('', () => process.exit(code))
}
