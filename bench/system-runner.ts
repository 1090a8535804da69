// Runs one system through every concurrency: one responder process and one caller process (started once,
// restarted only after a failure), and for each scenario the sequence warm-up → CPU marks → measured phase.
import type { Sql } from 'postgres'
import { BenchChild } from './child.ts'
import { ServerCpuMeter } from './server-cpu.ts'
import { failedResult, measuredResult, type BenchResult, type LatencyCurve } from './result.ts'
import type { CallerToOrchestrator, OrchestratorToCaller, OrchestratorToResponder, ResponderToOrchestrator } from './messages.ts'
import type { BenchOptions } from './options.ts'
import type { PeerConfig } from './peer.ts'
import type { ProgressLine } from './progress.ts'
import type { SystemSpec } from './systems.ts'

/** Time for a child to start (tsx compiles on the fly) and connect. */
const STARTUP_TIMEOUT_MS = 30_000
/** Beyond the caller's own phase cap: opening a session (up to 64 connections) and reporting. */
const PHASE_GRACE_MS = 20_000
const CONTROL_TIMEOUT_MS = 5_000
const STOP_GRACE_MS = 5_000
/** Seconds a capped (slow) system's phase is sized for: well inside the time cap. */
const QUICK_PHASE_SECONDS = 4
const FULL_PHASE_SECONDS = 15

type Caller = BenchChild<OrchestratorToCaller, CallerToOrchestrator>
type Responder = BenchChild<OrchestratorToResponder, ResponderToOrchestrator>

export interface SystemRunContext {
  options: BenchOptions
  config: PeerConfig
  /** The orchestrator's connection, for finding the bench's backends. */
  sql: Sql
  progress: ProgressLine
  signal: AbortSignal
  /** Position of this system's first scenario in the whole run, and the run's scenario total, for progress. */
  firstScenario: number
  totalScenarios: number
}

export interface SystemRunOutcome {
  results: BenchResult[]
  curves: LatencyCurve[]
  serverVersion: string | null
}

export function scenarioCount(spec: SystemSpec, concurrency: number, options: BenchOptions): number {
  const phaseSeconds = options.quick ? QUICK_PHASE_SECONDS : FULL_PHASE_SECONDS
  return spec.maxCount ? Math.min(options.count, spec.maxCount(concurrency, phaseSeconds)) : options.count
}

/** Warm-up: a tenth of the count, and at least two requests per worker so every connection is open and used. */
export function warmupCount(count: number, concurrency: number): number {
  return Math.min(count, Math.max(Math.ceil(count / 10), 2 * concurrency))
}

export async function runSystem(spec: SystemSpec, context: SystemRunContext): Promise<SystemRunOutcome> {
  const outcome: SystemRunOutcome = { results: [], curves: [], serverVersion: null }
  let label: string = spec.name
  let processes: { caller: Caller; responder: Responder | null } | null = null

  const start = async (): Promise<{ caller: Caller; responder: Responder | null }> => {
    const args = [spec.name, JSON.stringify(context.config)]
    const onProgress = (message: CallerToOrchestrator): void => {
      if (message.type === 'progress') context.progress.update(`${label} ${message.phase} ${message.done}/${message.total}`)
    }
    const responder: Responder | null = spec.hasResponder
      ? new BenchChild(`${spec.name} responder`, './responder.ts', args, () => {})
      : null
    const caller: Caller = new BenchChild(`${spec.name} caller`, './caller.ts', args, onProgress)
    const started = { caller, responder }
    processes = started
    const [, ready] = await Promise.all([
      caller.expect('ready', STARTUP_TIMEOUT_MS, context.signal),
      responder?.expect('ready', STARTUP_TIMEOUT_MS, context.signal),
    ])
    if (ready?.serverVersion) outcome.serverVersion = ready.serverVersion
    return started
  }

  try {
    for (const [index, concurrency] of context.options.concurrency.entries()) {
      const count = scenarioCount(spec, concurrency, context.options)
      label = `[${context.firstScenario + index}/${context.totalScenarios}] ${spec.name} c=${concurrency}`
      context.progress.update(`${label} starting`)
      try {
        processes ??= await start()
        const measured = await runScenario(processes, spec, concurrency, count, context)
        outcome.results.push(measured.result)
        outcome.curves.push(measured.curve)
        context.progress.log(`${label}: ${describe(measured.result)}`)
      } catch (error) {
        if (context.signal.aborted) throw error
        const reason = error instanceof Error ? error.message : String(error)
        outcome.results.push(failedResult(spec.name, concurrency, count, reason))
        context.progress.log(`${label}: FAILED ${reason}`)
        // The children may be in any state now: start afresh for the next concurrency.
        await killAll(processes)
        processes = null
      }
    }
  } finally {
    // Interrupted: no time for a polite stop (a caller mid-phase reads its inbox only after the phase).
    if (context.signal.aborted) await killAll(processes)
    else await stopAll(processes)
  }
  return outcome
}

async function runScenario(
  processes: { caller: Caller; responder: Responder | null },
  spec: SystemSpec,
  concurrency: number,
  count: number,
  context: SystemRunContext,
): Promise<{ result: BenchResult; curve: LatencyCurve }> {
  const { caller, responder } = processes
  const { signal, options } = context
  const warmup = warmupCount(count, concurrency)
  caller.send({ type: 'run', concurrency, warmupCount: warmup, count, timeCapMs: options.phaseTimeCapMs, payloadBytes: options.payloadBytes })
  const warmed = await caller.expect('warmed', options.phaseTimeCapMs + PHASE_GRACE_MS, signal)

  // CPU marks go around the measured phase only: warm-up (JIT, connection setup) is not what we compare.
  const serverCpu = new ServerCpuMeter(spec.server, context.sql)
  responder?.send({ type: 'cpu-start' })
  await responder?.expect('cpu-started', CONTROL_TIMEOUT_MS, signal)
  await serverCpu.start()
  caller.send({ type: 'measure' })
  const { result: phase } = await caller.expect('result', options.phaseTimeCapMs + PHASE_GRACE_MS, signal)
  const serverCpuUs = await serverCpu.stop()
  caller.send({ type: 'release' })
  responder?.send({ type: 'cpu-stop' })
  const responderCpu = responder ? (await responder.expect('cpu', CONTROL_TIMEOUT_MS, signal)).cpu : null

  return measuredResult({
    system: spec.name,
    concurrency,
    count,
    warmupCount: warmup,
    warmupErrors: warmed.errors,
    phase,
    responderCpu,
    serverCpuUs,
  })
}

async function stopAll(processes: { caller: Caller; responder: Responder | null } | null): Promise<void> {
  if (!processes) return
  await Promise.all([
    processes.caller.stop({ type: 'stop' }, STOP_GRACE_MS),
    processes.responder?.stop({ type: 'stop' }, STOP_GRACE_MS),
  ])
}

async function killAll(processes: { caller: Caller; responder: Responder | null } | null): Promise<void> {
  if (!processes) return
  await Promise.all([processes.caller.killAndWait(), processes.responder?.killAndWait()])
}

function describe(result: BenchResult): string {
  const ms = (us: number | null): string => (us === null ? '-' : `${(us / 1000).toFixed(2)} ms`)
  const errors = result.errors > 0 ? `, ${result.errors} errors (${result.errorSamples?.[0] ?? ''})` : ''
  return `p50 ${ms(result.p50Us)}, p99 ${ms(result.p99Us)}, ${result.requestsPerSec ?? '-'} req/s${errors}`
}
