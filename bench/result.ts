// One row of the report: a system at one concurrency. The first six fields are the contract of `--json`;
// the rest are extras for the table and the docs.
import { median, sortLatencies, summarize, cdfCurve } from './percentile.ts'
import type { CpuTime, PhaseResult } from './messages.ts'
import type { SystemName } from './systems.ts'

export interface BenchResult {
  system: SystemName
  concurrency: number
  /** Null when the system was skipped or failed. */
  p50Us: number | null
  p99Us: number | null
  /** Successful replies per second of the measured phase. */
  requestsPerSec: number | null
  errors: number

  /** Measured requests sent (after a slow system's own cap). */
  count: number
  warmupCount: number
  p90Us: number | null
  p999Us: number | null
  maxUs: number | null
  elapsedMs: number | null
  /** user + system CPU of the caller process over the measured phase. */
  callerCpuUs: number | null
  /** user + system CPU of the responder process over the measured phase (null: no responder). */
  responderCpuUs: number | null
  /** CPU of the server side (the bench's Postgres backends, or the broker), when it runs on this machine. */
  serverCpuUs: number | null
  /** (caller + responder) CPU per successful request. */
  clientCpuUsPerRequest: number | null
  /** Null when serverCpuUs is under 100 ms: /proc's 10 ms ticks make smaller totals mostly rounding. */
  serverCpuUsPerRequest: number | null
  /** p50 over floor-notify's p50 at the same concurrency. */
  p50VsFloor: number | null
  /** requestsPerSec over floor-notify's at the same concurrency. */
  requestsPerSecVsFloor: number | null
  skipped?: string
  failed?: string
  errorSamples?: string[]
  /** Errors during warm-up (not counted in `errors`), when there were any. */
  warmupErrors?: number
  /** With --runs: how many passes this row is the median of. */
  runs?: number
}

/** The latency distribution of one row, for the picture (kept out of the JSON). */
export interface LatencyCurve {
  system: SystemName
  concurrency: number
  points: Array<[latencyUs: number, fraction: number]>
}

/** Server CPU below this (ten /proc ticks) is too coarse to divide into a per-request figure. */
const MIN_SERVER_CPU_US = 100_000

const EMPTY_MEASUREMENTS = {
  p50Us: null,
  p99Us: null,
  requestsPerSec: null,
  p90Us: null,
  p999Us: null,
  maxUs: null,
  elapsedMs: null,
  callerCpuUs: null,
  responderCpuUs: null,
  serverCpuUs: null,
  clientCpuUsPerRequest: null,
  serverCpuUsPerRequest: null,
  p50VsFloor: null,
  requestsPerSecVsFloor: null,
} as const

export function skippedResult(system: SystemName, concurrency: number, reason: string): BenchResult {
  return { system, concurrency, ...EMPTY_MEASUREMENTS, errors: 0, count: 0, warmupCount: 0, skipped: reason }
}

/** A scenario that could not produce numbers: every request it was to send counts as an error. */
export function failedResult(system: SystemName, concurrency: number, count: number, reason: string): BenchResult {
  return { system, concurrency, ...EMPTY_MEASUREMENTS, errors: count, count, warmupCount: 0, failed: reason }
}

export function measuredResult(options: {
  system: SystemName
  concurrency: number
  count: number
  warmupCount: number
  warmupErrors: number
  phase: PhaseResult
  responderCpu: CpuTime | null
  serverCpuUs: number | null
}): { result: BenchResult; curve: LatencyCurve } {
  const { phase } = options
  const sorted = sortLatencies(phase.latenciesUs)
  const summary = summarize(sorted)
  const ok = sorted.length
  const callerCpuUs = phase.cpu.userUs + phase.cpu.systemUs
  const responderCpuUs = options.responderCpu ? options.responderCpu.userUs + options.responderCpu.systemUs : null
  const perRequest = (us: number | null): number | null => (us === null || ok === 0 ? null : round(us / ok))
  // /proc counts in 10 ms ticks: below ten of them the per-request figure is mostly rounding.
  const serverCpuMeaningful = options.serverCpuUs !== null && options.serverCpuUs >= MIN_SERVER_CPU_US
  const result: BenchResult = {
    system: options.system,
    concurrency: options.concurrency,
    p50Us: ok ? round(summary.p50Us) : null,
    p99Us: ok ? round(summary.p99Us) : null,
    requestsPerSec: ok ? round(ok / (phase.elapsedMs / 1000)) : null,
    errors: phase.errors,
    count: options.count,
    warmupCount: options.warmupCount,
    p90Us: ok ? round(summary.p90Us) : null,
    p999Us: ok ? round(summary.p999Us) : null,
    maxUs: ok ? round(summary.maxUs) : null,
    elapsedMs: round(phase.elapsedMs),
    callerCpuUs,
    responderCpuUs,
    serverCpuUs: options.serverCpuUs,
    clientCpuUsPerRequest: perRequest(callerCpuUs + (responderCpuUs ?? 0)),
    serverCpuUsPerRequest: serverCpuMeaningful ? perRequest(options.serverCpuUs) : null,
    p50VsFloor: null,
    requestsPerSecVsFloor: null,
  }
  if (phase.errorSamples.length > 0) result.errorSamples = phase.errorSamples
  if (options.warmupErrors > 0) result.warmupErrors = options.warmupErrors
  return { result, curve: { system: options.system, concurrency: options.concurrency, points: cdfCurve(sorted) } }
}

/** Fills the ratios to floor-notify at the same concurrency, where both sides have numbers. */
export function addFloorRatios(results: BenchResult[]): void {
  for (const result of results) {
    const floor = results.find((candidate) => candidate.system === 'floor-notify' && candidate.concurrency === result.concurrency)
    if (!floor) continue
    if (result.p50Us !== null && floor.p50Us) result.p50VsFloor = round(result.p50Us / floor.p50Us, 2)
    if (result.requestsPerSec !== null && floor.requestsPerSec) {
      result.requestsPerSecVsFloor = round(result.requestsPerSec / floor.requestsPerSec, 3)
    }
  }
}

const MEDIAN_FIELDS = [
  'p50Us',
  'p99Us',
  'requestsPerSec',
  'p90Us',
  'p999Us',
  'maxUs',
  'elapsedMs',
  'callerCpuUs',
  'responderCpuUs',
  'serverCpuUs',
  'clientCpuUsPerRequest',
  'serverCpuUsPerRequest',
  'p50VsFloor',
  'requestsPerSecVsFloor',
] as const

/**
 * Folds several passes of the same matrix (each with its floor ratios filled) into one row per scenario:
 * the median of each measurement over the passes that measured it, the sum of the errors. A scenario that
 * failed or was skipped in any pass is reported as that pass reported it.
 */
export function medianOfRuns(passes: BenchResult[][]): BenchResult[] {
  const [first] = passes
  if (first === undefined) return []
  if (passes.length === 1) return first
  return first.map((row) => {
    const same = passes.flatMap((pass) => pass.filter((r) => r.system === row.system && r.concurrency === row.concurrency))
    const notMeasured = same.find((r) => r.failed !== undefined || r.skipped !== undefined)
    if (notMeasured) return { ...notMeasured, errors: sum(same.map((r) => r.errors)), runs: same.length }
    const merged: BenchResult = { ...row, errors: sum(same.map((r) => r.errors)), runs: same.length }
    for (const field of MEDIAN_FIELDS) merged[field] = medianOfPresent(same.map((r) => r[field]))
    const warmupErrors = sum(same.map((r) => r.warmupErrors ?? 0))
    if (warmupErrors > 0) merged.warmupErrors = warmupErrors
    const samples = same.flatMap((r) => r.errorSamples ?? []).slice(0, 10)
    if (samples.length > 0) merged.errorSamples = samples
    return merged
  })
}

/** Index of the pass whose p50 is the median one for a scenario (its latency curve goes in the picture). */
export function medianPassIndex(passes: BenchResult[][], system: SystemName, concurrency: number): number {
  const p50s = passes
    .map((pass, index) => ({ index, p50: pass.find((r) => r.system === system && r.concurrency === concurrency)?.p50Us ?? null }))
    .filter((entry): entry is { index: number; p50: number } => entry.p50 !== null)
    .sort((a, b) => a.p50 - b.p50)
  return p50s[Math.floor((p50s.length - 1) / 2)]?.index ?? 0
}

/** Median of the non-null values, or null when there are none. */
function medianOfPresent(values: (number | null)[]): number | null {
  const present = values.filter((value): value is number => value !== null)
  return present.length === 0 ? null : median(present)
}

function sum(values: number[]): number {
  return values.reduce((total, value) => total + value, 0)
}

function round(value: number, decimals = 1): number {
  const scale = 10 ** decimals
  return Math.round(value * scale) / scale
}
