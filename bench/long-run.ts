// The long run: `node --import tsx bench/run.ts --long [--count 200000] [--concurrency 64] [--json]`.
// One pgrr-ts responder process and one pgrr-ts caller process (the peer code of the pgrr-ts system) against
// a schema of its own; a warm-up, then `count` requests in a closed loop at one concurrency, sampled every
// couple of seconds: RSS and heap of both processes (reported by them over IPC), requests done and errors,
// and the size of the request table and its indexes. It answers the question the short scenarios cannot:
// does anything grow with the number of requests? Targets: RSS of each process grows less than 20 MB after
// the warm-up, zero errors, the request table stays bounded.
//
// This file is also the child: bench/child.ts spawns it as `long-run.ts caller|responder <config-json>
// <concurrency>`. The long run's children differ from bench/caller.ts and bench/responder.ts in what they
// keep: no latency array (200,000 numbers would be growth of their own), a fixed histogram instead, and
// they answer memory samples while the load runs.
import os from 'node:os'
import { pathToFileURL } from 'node:url'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import postgres, { type Sql } from 'postgres'
import { BenchChild, killAllChildren } from './child.ts'
import { quoteIdentifier, withApplicationName } from './database-url.ts'
import { Inbox, errorMessage, sendToParent } from './inbox.ts'
import { describeMachine, type MachineDescription } from './machine.ts'
import { SERVE_CONCURRENCY, type LongRunOptions } from './options.ts'
import { PAYLOAD_BYTES, makePayload, transform } from './payload.ts'
import type { CallerSession, PeerConfig, ResponderSession } from './peer.ts'
import { loadPgrrCore } from './peers/pgrr-core.ts'
import { peer as pgrrTsPeer, startPgrrResponder } from './peers/pgrr-ts.ts'
import { ProgressLine } from './progress.ts'
import { checkRunConditions } from './run-conditions.ts'
import { acquireRunLock, releaseRunLock } from './run-lock.ts'
import { BenchSchemas } from './schemas.ts'

export const LONG_SCHEMA = 'pgrr_bench_long'
const SERVICE = 'bench_echo'
/**
 * The warm-up before the baseline: JIT, pools, prepared statements, the table's first vacuum cycles, and the
 * heap sized for the load. At least this many requests and at least this long: 10,000 requests alone take
 * about a second here, and a baseline taken then is not the steady state: V8 keeps growing the young
 * generation for a few seconds more, and the caller's RSS then rose 15–30 MB to a plateau it never left,
 * with the live heap unchanged (three runs of 200,000 requests with a 10,000-request warm-up).
 */
export const LONG_WARMUP_COUNT = 10_000
export const LONG_WARMUP_MIN_MS = 10_000
const SAMPLE_INTERVAL_MS = 2_000
/** The targets of the issue. */
const RSS_GROWTH_LIMIT_BYTES = 20_000_000
/**
 * "Bounded": the largest size of the table (heap + indexes + TOAST) over the second half of the measured
 * phase is at most this much above its largest size before (the warm-up and the first half). The size is a
 * sawtooth between the responder's VACUUMs (every 20,000 requests and every sweep), so the reference takes
 * every sample before the middle, the warm-up's included, to be sure to hold a peak. A table that grows
 * with the number of requests (dead rows never removed) is larger in the second half than ever before;
 * one that is bounded reaches its plateau within the first vacuum cycles, during the warm-up.
 */
const BOUNDED_TOLERANCE_RATIO = 0.1
const BOUNDED_TOLERANCE_BYTES = 1_000_000
/** Fewer samples in the second half of the measured phase and there is no trend to judge. */
const MIN_SECOND_HALF_SAMPLES = 3

const STARTUP_TIMEOUT_MS = 30_000
const SAMPLE_TIMEOUT_MS = 5_000
const STOP_GRACE_MS = 5_000
const CLOSE_TIMEOUT_MS = 5_000
const MB = 1_000_000

// ---------------------------------------------------------------------------------------------------------
// IPC vocabulary of the long run.

/** What a child reports about its memory (bytes), from process.memoryUsage(). */
export interface ChildMemory {
  rss: number
  heapUsed: number
  heapTotal: number
  external: number
  arrayBuffers: number
  /** heapUsed right after a forced full GC (taken after the other fields): the live heap. Only on marks. */
  heapUsedAfterGc?: number
  /** RSS right after that GC (V8 gives little back at once: RSS is what the process has committed). */
  rssAfterGc?: number
}

export interface LatencySummary {
  p50Us: number | null
  p99Us: number | null
  p999Us: number | null
  maxUs: number | null
}

type LongPhase = 'warm-up' | 'measured'

interface PhaseDone {
  type: 'phase-done'
  phase: LongPhase
  done: number
  errors: number
  errorSamples: string[]
  elapsedMs: number
  latency: LatencySummary
}

/** Sample requests and their answers travel as 'progress' so that BenchChild hands them to a callback. */
type ToChild =
  | { type: 'run'; phase: LongPhase; count: number; minDurationMs: number }
  | { type: 'sample'; id: number; gc: boolean } | { type: 'stop' }
type SampleReply = { type: 'progress'; id: number; memory: ChildMemory; phase: LongPhase | null; done: number; errors: number }
type FromChild = { type: 'ready' } | PhaseDone | SampleReply | { type: 'failed'; message: string }
type LongChild = BenchChild<ToChild, FromChild>

// ---------------------------------------------------------------------------------------------------------
// The report.

export type LongRunMark = 'start' | 'after-warm-up' | 'end' | 'after-caller-close' | 'after-vacuum'

export interface TableSize {
  /** pg_total_relation_size: heap, indexes, TOAST, free space and visibility maps. */
  totalBytes: number
  /** pg_relation_size of the table itself. */
  heapBytes: number
  /** pg_indexes_size, and pg_relation_size of each index. */
  indexesBytes: number
  indexBytes: Record<string, number>
  rows: number
  /** From pg_stat_user_tables (estimates, updated at the end of transactions). */
  liveTuples: number
  deadTuples: number
  vacuumCount: number
  autovacuumCount: number
}

export interface LongRunSample {
  /** Milliseconds since the run started. */
  tMs: number
  phase: LongPhase | 'finished'
  mark: LongRunMark | null
  /** Requests the caller has completed in its current phase, and how many of them failed. */
  done: number | null
  errors: number | null
  /** Over the time since the previous sample of the same phase. */
  requestsPerSec: number | null
  caller: ChildMemory | null
  responder: ChildMemory | null
  table: TableSize | null
}

export interface ProcessMemorySummary {
  atStartBytes: number | null
  afterWarmupBytes: number | null
  maxBytes: number | null
  endBytes: number | null
  /** end − after warm-up, and max − after warm-up (the one the target is judged on). */
  growthEndBytes: number | null
  growthPeakBytes: number | null
  heapUsedAfterWarmupBytes: number | null
  heapUsedMaxBytes: number | null
  heapUsedEndBytes: number | null
  /** heapUsed after a forced full GC, at the end of the warm-up and at the end. */
  liveHeapAfterWarmupBytes: number | null
  liveHeapEndBytes: number | null
}

export interface Verdict {
  target: string
  outcome: 'pass' | 'fail' | 'inconclusive'
  detail: string
}

export interface LongRunReport {
  command: string
  date: string
  machine: MachineDescription
  /** os.loadavg() (1, 5, 15 minutes) when the run started and when it ended. */
  loadAverage: { start: number[]; end: number[] }
  settings: {
    count: number
    concurrency: number
    /** The warm-up: at least this many requests, and more until it has lasted warmupMinMs. */
    warmupCount: number
    warmupMinMs: number
    responderConcurrency: number
    sampleIntervalMs: number
    timeCapMs: number
    payloadBytes: number
    schema: string
  }
  warnings: string[]
  outcome: {
    /** Every measured request was made and answered (right or wrong). */
    completed: boolean
    /** The hard cap ended the run. */
    capped: boolean
    /** What broke the run, if something did (a child died, a phase failed). */
    failure: string | null
    warmupRequests: number
    warmupErrors: number
    requests: number
    errors: number
    errorSamples: string[]
    durationMs: number | null
    requestsPerSec: number | null
    latency: LatencySummary | null
    wallTimeMs: number
  }
  memory: { caller: ProcessMemorySummary; responder: ProcessMemorySummary }
  table: {
    name: string
    /** Over the measured phase (from the end of the warm-up to the end of the load). */
    totalBytes: { min: number | null; max: number | null; end: number | null; afterVacuum: number | null }
    heapBytes: { min: number | null; max: number | null; end: number | null; afterVacuum: number | null }
    indexesBytes: { min: number | null; max: number | null; end: number | null; afterVacuum: number | null }
    indexBytesAfterVacuum: Record<string, number> | null
    /**
     * Largest total size before the middle of the measured phase (warm-up included) and after it: the
     * boundedness test.
     */
    maxFirstHalfBytes: number | null
    maxSecondHalfBytes: number | null
    rows: { max: number | null; end: number | null; afterCallerClose: number | null; afterVacuum: number | null }
    /** VACUUMs of the table during the run (the responders' own, then the final one) and autovacuums. */
    vacuums: number | null
    autovacuums: number | null
    /** The orchestrator's VACUUM (VERBOSE) after the caller closed: how long, and what it said (truncation). */
    finalVacuum: { durationMs: number; messages: string[] } | null
  }
  verdicts: Verdict[]
  samples: LongRunSample[]
}

// ---------------------------------------------------------------------------------------------------------
// The orchestrator side.

/**
 * Runs the long run. Progress goes to stderr. `signal` aborts it (children killed, schema dropped, then this
 * rejects); the time cap does not reject: it stops the run and the report says so.
 */
export async function runLongRun(options: LongRunOptions, hooks: { signal?: AbortSignal; command?: string } = {}): Promise<LongRunReport> {
  const signal = hooks.signal ?? new AbortController().signal
  const startedAt = Date.now()
  const loadAtStart = os.loadavg().map(round2)
  const progress = new ProgressLine()
  // Notices are dropped, except those of the final VACUUM (VERBOSE): they say whether it truncated the table.
  let notices: string[] | null = null
  const sql = postgres(withApplicationName(options.databaseUrl, 'orchestrator'), {
    max: 1,
    onnotice: (notice) => notices?.push(String(notice.message)),
  })
  process.on('exit', killAllChildren)
  const schemas = new BenchSchemas(sql, options.databaseUrl, LONG_SCHEMA, `${LONG_SCHEMA}_unused`)
  const config: PeerConfig = {
    databaseUrl: options.databaseUrl,
    natsUrl: '',
    amqpUrl: '',
    redisUrl: '',
    pgrrSchema: LONG_SCHEMA,
    pocSchema: '',
    service: SERVICE,
  }
  const cap = new AbortController()
  const capTimer = setTimeout(() => cap.abort(), options.timeCapMs)
  const runSignal = AbortSignal.any([signal, cap.signal])
  const warnings: string[] = []
  let locked = false
  let sampler: Sampler | null = null

  try {
    await acquireRunLock(sql)
    locked = true
    await sql`set lock_timeout = '10s'`
    await sql`set statement_timeout = '120s'`
    const machine = await describeMachine(sql)
    warnings.push(...(await checkRunConditions(sql, 'start')))
    progress.log(
      `long run: ${options.count} requests at concurrency ${options.concurrency} after a warm-up of ≥ ${LONG_WARMUP_COUNT} requests and ≥ ${LONG_WARMUP_MIN_MS / 1000} s; ` +
        `load average at start ${loadAtStart.join(' ')} on ${machine.cpus} CPUs; time cap ${options.timeCapMs / 1000} s`,
    )
    for (const warning of warnings) progress.log(`warning: ${warning}`)

    const loaded = await loadPgrrCore()
    if ('unavailable' in loaded) throw new Error(`pgrr: ${loaded.unavailable}`)
    await schemas.preparePgrr(loaded.core)

    const state = new RunState(options)
    const table = `${quoteIdentifier(LONG_SCHEMA)}.pgrr_request`
    const memoryWaiters = new Map<number, (reply: SampleReply) => void>()
    const onSampleReply = (message: FromChild): void => {
      if (message.type !== 'progress') return
      memoryWaiters.get(message.id)?.(message)
      memoryWaiters.delete(message.id)
    }
    const args = [JSON.stringify(config), String(options.concurrency)]
    const children: { caller: LongChild | null; responder: LongChild | null } = { caller: null, responder: null }
    sampler = new Sampler({ sql, table, children, memoryWaiters, state, progress, startedAt })

    try {
      children.responder = new BenchChild('long-run responder', './long-run.ts', ['responder', ...args], onSampleReply)
      await children.responder.expect('ready', STARTUP_TIMEOUT_MS, runSignal)
      children.caller = new BenchChild('long-run caller', './long-run.ts', ['caller', ...args], onSampleReply)
      await children.caller.expect('ready', STARTUP_TIMEOUT_MS, runSignal)
      const caller = children.caller
      await sampler.take('start', false)
      sampler.start(SAMPLE_INTERVAL_MS)

      state.phase = 'warm-up'
      caller.send({ type: 'run', phase: 'warm-up', count: LONG_WARMUP_COUNT, minDurationMs: LONG_WARMUP_MIN_MS })
      state.warmup = await caller.expect('phase-done', remaining(startedAt, options.timeCapMs), runSignal)
      await sampler.take('after-warm-up', true)

      state.phase = 'measured'
      caller.send({ type: 'run', phase: 'measured', count: options.count, minDurationMs: 0 })
      state.measured = await caller.expect('phase-done', remaining(startedAt, options.timeCapMs), runSignal)
    } catch (error) {
      if (signal.aborted) throw error
      if (cap.signal.aborted) state.capped = true
      else state.failure = errorMessage(error)
      progress.log(state.capped ? `time cap of ${options.timeCapMs / 1000} s reached: stopping` : `FAILED: ${state.failure}`)
    }

    // The end: memory and table as the load left them, then the caller closes (its last acknowledgements
    // delete the last rows), then one VACUUM, and the table once more.
    const broken = state.capped || state.failure !== null
    await sampler.take('end', !broken)
    sampler.stop()
    state.phase = 'finished'
    signal.throwIfAborted()
    if (broken) {
      await Promise.all([children.caller?.killAndWait(), children.responder?.killAndWait()])
    } else {
      await children.caller?.stop({ type: 'stop' }, STOP_GRACE_MS)
    }
    children.caller = null
    await sampler.take('after-caller-close', false)
    signal.throwIfAborted()
    const vacuumStartedAt = Date.now()
    notices = []
    try {
      await sql.unsafe(`vacuum (verbose) ${table}`)
    } catch (error) {
      warnings.push(`final vacuum failed: ${errorMessage(error)}`)
    }
    state.finalVacuum = { durationMs: Date.now() - vacuumStartedAt, messages: notices.filter((message) => !message.includes('pg_toast')) }
    notices = null
    await sampler.take('after-vacuum', false)
    await children.responder?.stop({ type: 'stop' }, STOP_GRACE_MS)
    children.responder = null

    const atEnd = await checkRunConditions(sql, 'end')
    for (const warning of atEnd) progress.log(`warning: ${warning}`)
    warnings.push(...atEnd)
    return buildReport({
      options,
      command: hooks.command ?? commandFor(options),
      machine,
      loadAtStart,
      warnings,
      state,
      samples: sampler.samples,
      startedAt,
    })
  } finally {
    clearTimeout(capTimer)
    sampler?.stop()
    killAllChildren()
    if (locked) {
      for (const problem of await schemas.dropAll()) progress.log(`cleanup: ${problem}`)
      await releaseRunLock(sql).catch(() => {})
    }
    await sql.end({ timeout: 5 })
    process.off('exit', killAllChildren)
  }
}

class RunState {
  phase: LongPhase | 'finished' = 'warm-up'
  warmup: PhaseDone | null = null
  measured: PhaseDone | null = null
  capped = false
  failure: string | null = null
  finalVacuum: { durationMs: number; messages: string[] } | null = null
  constructor(readonly options: LongRunOptions) {}
}

interface SamplerContext {
  sql: Sql
  table: string
  children: { caller: LongChild | null; responder: LongChild | null }
  memoryWaiters: Map<number, (reply: SampleReply) => void>
  state: RunState
  progress: ProgressLine
  startedAt: number
}

/** Takes samples, one at a time: every interval, and on marks. */
class Sampler {
  readonly samples: LongRunSample[] = []
  private chain: Promise<unknown> = Promise.resolve()
  private timer: NodeJS.Timeout | undefined
  private stopped = false
  private nextId = 0

  constructor(private readonly context: SamplerContext) {}

  start(intervalMs: number): void {
    const tick = (): void => {
      this.timer = setTimeout(() => {
        void this.take(null, false)
          .catch(() => undefined)
          .then(() => {
            if (!this.stopped) tick()
          })
      }, intervalMs)
    }
    tick()
  }

  stop(): void {
    this.stopped = true
    clearTimeout(this.timer)
  }

  take(mark: LongRunMark | null, gc: boolean): Promise<LongRunSample> {
    const next = this.chain.then(() => this.collect(mark, gc))
    this.chain = next.catch(() => undefined)
    return next
  }

  private async collect(mark: LongRunMark | null, gc: boolean): Promise<LongRunSample> {
    const { children, state, startedAt } = this.context
    const tMs = Date.now() - startedAt
    const [caller, responder, table] = await Promise.all([
      this.memoryOf(children.caller, gc),
      this.memoryOf(children.responder, gc),
      readTable(this.context.sql, this.context.table).catch(() => null),
    ])
    const phase = state.phase
    // Between two phases the caller still reports the previous one: no count for this phase yet.
    const current = caller !== null && caller.phase === phase ? caller : null
    const previous = this.samples.findLast((sample) => sample.phase === phase && sample.done !== null)
    const requestsPerSec =
      current && previous?.done != null && tMs > previous.tMs
        ? Math.round(((current.done - previous.done) * 1000) / (tMs - previous.tMs))
        : null
    const sample: LongRunSample = {
      tMs,
      phase,
      mark,
      done: current?.done ?? null,
      errors: current?.errors ?? null,
      requestsPerSec,
      caller: caller?.memory ?? null,
      responder: responder?.memory ?? null,
      table,
    }
    this.samples.push(sample)
    this.context.progress.log(describeSample(sample, state.options))
    return sample
  }

  /** Null when the child is gone or does not answer in time. */
  private memoryOf(child: LongChild | null, gc: boolean): Promise<SampleReply | null> {
    if (!child?.alive) return Promise.resolve(null)
    const id = ++this.nextId
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.context.memoryWaiters.delete(id)
        resolve(null)
      }, SAMPLE_TIMEOUT_MS)
      this.context.memoryWaiters.set(id, (reply) => {
        clearTimeout(timer)
        resolve(reply)
      })
      child.send({ type: 'sample', id, gc })
    })
  }
}

async function readTable(sql: Sql, table: string): Promise<TableSize> {
  const [row] = await sql.unsafe<
    [
      {
        total: number
        heap: number
        indexes: number
        index_bytes: Record<string, number> | null
        live: number | null
        dead: number | null
        vacuums: number | null
        autovacuums: number | null
      },
    ]
  >(
    `select pg_total_relation_size(t.oid)::float8 as total,
            pg_relation_size(t.oid)::float8 as heap,
            pg_indexes_size(t.oid)::float8 as indexes,
            (select json_object_agg(c.relname, pg_relation_size(c.oid))
               from pg_index i join pg_class c on c.oid = i.indexrelid where i.indrelid = t.oid) as index_bytes,
            s.n_live_tup::float8 as live, s.n_dead_tup::float8 as dead,
            s.vacuum_count::float8 as vacuums, s.autovacuum_count::float8 as autovacuums
       from (select $1::regclass::oid as oid) t
       left join pg_stat_user_tables s on s.relid = t.oid`,
    [table],
  )
  const [{ rows }] = await sql.unsafe<[{ rows: number }]>(`select count(*)::int as rows from ${table}`)
  return {
    totalBytes: row.total,
    heapBytes: row.heap,
    indexesBytes: row.indexes,
    indexBytes: row.index_bytes ?? {},
    rows,
    liveTuples: row.live ?? 0,
    deadTuples: row.dead ?? 0,
    vacuumCount: row.vacuums ?? 0,
    autovacuumCount: row.autovacuums ?? 0,
  }
}

function remaining(startedAt: number, timeCapMs: number): number {
  // The cap's own abort ends the wait; this timeout is only a backstop.
  return Math.max(1, startedAt + timeCapMs - Date.now()) + 1_000
}

function describeSample(sample: LongRunSample, options: LongRunOptions): string {
  const seconds = `${(sample.tMs / 1000).toFixed(1)} s`.padStart(8)
  const total = sample.phase === 'warm-up' ? ` (≥ ${LONG_WARMUP_COUNT}, ≥ ${LONG_WARMUP_MIN_MS / 1000} s)` : `/${options.count}`
  const head =
    sample.done === null
      ? sample.phase
      : `${sample.phase} ${sample.done}${total}, ${sample.errors ?? 0} errors${sample.requestsPerSec === null ? '' : `, ${sample.requestsPerSec} req/s`}`
  const memory = (name: string, m: ChildMemory | null): string =>
    m ? `${name} RSS ${mbUnit(m.rss)} (heap ${mbUnit(m.heapUsed)}${m.heapUsedAfterGc === undefined ? '' : `, after GC: live heap ${mbUnit(m.heapUsedAfterGc)}, RSS ${mbUnit(m.rssAfterGc)}`})` : `${name} -`
  const table = sample.table
    ? `table ${mbUnit(sample.table.totalBytes)} (heap ${mbUnit(sample.table.heapBytes)}, indexes ${mbUnit(sample.table.indexesBytes)}), ${sample.table.rows} rows`
    : 'table -'
  return `[${seconds}]${sample.mark ? ` ${sample.mark}:` : ''} ${head} | ${memory('caller', sample.caller)}, ${memory('responder', sample.responder)} | ${table}`
}

function commandFor(options: LongRunOptions): string {
  return `node --import tsx bench/run.ts --long --count ${options.count} --concurrency ${options.concurrency} --time-cap ${options.timeCapMs / 1000}`
}

// ---------------------------------------------------------------------------------------------------------
// Summary and verdicts.

function buildReport(input: {
  options: LongRunOptions
  command: string
  machine: MachineDescription
  loadAtStart: number[]
  warnings: string[]
  state: RunState
  samples: LongRunSample[]
  startedAt: number
}): LongRunReport {
  const { options, state, samples } = input
  const byMark = (mark: LongRunMark): LongRunSample | undefined => samples.find((sample) => sample.mark === mark)
  const warmedAt = samples.findIndex((sample) => sample.mark === 'after-warm-up')
  const endAt = samples.findIndex((sample) => sample.mark === 'end')
  // The measured phase, marks included; empty when the warm-up never finished.
  const measured = warmedAt >= 0 ? samples.slice(warmedAt, endAt >= 0 ? endAt + 1 : undefined) : []

  const memory = (side: 'caller' | 'responder'): ProcessMemorySummary => {
    const of = (sample: LongRunSample | undefined): ChildMemory | null => sample?.[side] ?? null
    const warmed = of(byMark('after-warm-up'))
    const end = of(byMark('end')) ?? of(measured.findLast((sample) => sample[side] !== null))
    const rss = measured.map((sample) => sample[side]?.rss).filter((value) => value !== undefined)
    const heap = measured.map((sample) => sample[side]?.heapUsed).filter((value) => value !== undefined)
    const maxRss = rss.length > 0 ? Math.max(...rss) : null
    return {
      atStartBytes: of(byMark('start'))?.rss ?? null,
      afterWarmupBytes: warmed?.rss ?? null,
      maxBytes: maxRss,
      endBytes: end?.rss ?? null,
      growthEndBytes: warmed && end ? end.rss - warmed.rss : null,
      growthPeakBytes: warmed && maxRss !== null ? maxRss - warmed.rss : null,
      heapUsedAfterWarmupBytes: warmed?.heapUsed ?? null,
      heapUsedMaxBytes: heap.length > 0 ? Math.max(...heap) : null,
      heapUsedEndBytes: end?.heapUsed ?? null,
      liveHeapAfterWarmupBytes: warmed?.heapUsedAfterGc ?? null,
      liveHeapEndBytes: end?.heapUsedAfterGc ?? null,
    }
  }

  const tables = measured.map((sample) => sample.table).filter((table) => table !== null)
  const endTable = byMark('end')?.table ?? null
  const closedTable = byMark('after-caller-close')?.table ?? null
  const vacuumedTable = byMark('after-vacuum')?.table ?? null
  const startTable = byMark('start')?.table ?? null
  const range = (pick: (table: TableSize) => number) => {
    const values = tables.map(pick)
    return {
      min: values.length > 0 ? Math.min(...values) : null,
      max: values.length > 0 ? Math.max(...values) : null,
      end: endTable ? pick(endTable) : null,
      afterVacuum: vacuumedTable ? pick(vacuumedTable) : null,
    }
  }
  const lastTable = vacuumedTable ?? closedTable ?? endTable
  const vacuums = lastTable && startTable ? lastTable.vacuumCount - startTable.vacuumCount : null
  const autovacuums = lastTable && startTable ? lastTable.autovacuumCount - startTable.autovacuumCount : null

  // Before the middle of the measured phase (warm-up included), and after it.
  let maxFirstHalfBytes: number | null = null
  let maxSecondHalfBytes: number | null = null
  const first = measured[0]
  const last = measured.at(-1)
  if (first && last) {
    const middle = (first.tMs + last.tMs) / 2
    const sized = samples.slice(0, warmedAt + measured.length).filter((sample) => sample.table !== null)
    const before = sized.filter((sample) => sample.tMs <= middle)
    const after = sized.filter((sample) => sample.tMs > middle)
    if (before.length > 0 && after.length >= MIN_SECOND_HALF_SAMPLES) {
      maxFirstHalfBytes = Math.max(...before.map((sample) => sample.table?.totalBytes ?? 0))
      maxSecondHalfBytes = Math.max(...after.map((sample) => sample.table?.totalBytes ?? 0))
    }
  }

  const warmup = state.warmup
  const run = state.measured
  // A run cut short has no phase-done: its counts are those of the last sample.
  const lastOf = (phase: LongPhase): LongRunSample | undefined => samples.findLast((sample) => sample.phase === phase && sample.done !== null)
  const requests = run?.done ?? lastOf('measured')?.done ?? 0
  const errors = run?.errors ?? lastOf('measured')?.errors ?? 0
  const partialMs = first && lastOf('measured') ? (lastOf('measured')?.tMs ?? 0) - first.tMs : null
  const durationMs = run ? Math.round(run.elapsedMs) : partialMs
  const report: LongRunReport = {
    command: input.command,
    date: new Date().toISOString(),
    machine: input.machine,
    loadAverage: { start: input.loadAtStart, end: os.loadavg().map(round2) },
    settings: {
      count: options.count,
      concurrency: options.concurrency,
      warmupCount: LONG_WARMUP_COUNT,
      warmupMinMs: LONG_WARMUP_MIN_MS,
      responderConcurrency: SERVE_CONCURRENCY,
      sampleIntervalMs: SAMPLE_INTERVAL_MS,
      timeCapMs: options.timeCapMs,
      payloadBytes: PAYLOAD_BYTES,
      schema: LONG_SCHEMA,
    },
    warnings: input.warnings,
    outcome: {
      completed: run !== null && run.done === options.count,
      capped: state.capped,
      failure: state.failure,
      warmupRequests: warmup?.done ?? lastOf('warm-up')?.done ?? 0,
      warmupErrors: warmup?.errors ?? lastOf('warm-up')?.errors ?? 0,
      requests,
      errors,
      errorSamples: [...new Set([...(warmup?.errorSamples ?? []), ...(run?.errorSamples ?? [])])],
      durationMs,
      requestsPerSec: durationMs ? Math.round((requests * 1000) / durationMs) : null,
      latency: run?.latency ?? null,
      wallTimeMs: Date.now() - input.startedAt,
    },
    memory: { caller: memory('caller'), responder: memory('responder') },
    table: {
      name: `${LONG_SCHEMA}.pgrr_request`,
      totalBytes: range((table) => table.totalBytes),
      heapBytes: range((table) => table.heapBytes),
      indexesBytes: range((table) => table.indexesBytes),
      indexBytesAfterVacuum: vacuumedTable?.indexBytes ?? null,
      maxFirstHalfBytes,
      maxSecondHalfBytes,
      rows: {
        max: tables.length > 0 ? Math.max(...tables.map((table) => table.rows)) : null,
        end: endTable?.rows ?? null,
        afterCallerClose: closedTable?.rows ?? null,
        afterVacuum: vacuumedTable?.rows ?? null,
      },
      vacuums,
      autovacuums,
      finalVacuum: state.finalVacuum,
    },
    verdicts: [],
    samples,
  }
  report.verdicts = verdictsFor(report)
  return report
}

function verdictsFor(report: LongRunReport): Verdict[] {
  const verdicts: Verdict[] = []
  for (const side of ['caller', 'responder'] as const) {
    const m = report.memory[side]
    const target = `${side} RSS grows < ${RSS_GROWTH_LIMIT_BYTES / MB} MB after warm-up (peak − after warm-up)`
    if (m.growthPeakBytes === null || m.growthEndBytes === null) {
      verdicts.push({ target, outcome: 'inconclusive', detail: 'no memory samples after the warm-up' })
      continue
    }
    const heapGrowth =
      m.liveHeapAfterWarmupBytes !== null && m.liveHeapEndBytes !== null
        ? `; live heap after GC ${signedMbUnit(m.liveHeapEndBytes - m.liveHeapAfterWarmupBytes)}`
        : ''
    verdicts.push({
      target,
      outcome: m.growthPeakBytes < RSS_GROWTH_LIMIT_BYTES ? 'pass' : 'fail',
      detail: `peak ${signedMbUnit(m.growthPeakBytes)}, at end ${signedMbUnit(m.growthEndBytes)} (${mbUnit(m.afterWarmupBytes)} → max ${mbUnit(m.maxBytes)}, end ${mbUnit(m.endBytes)})${heapGrowth}`,
    })
  }

  const o = report.outcome
  const allErrors = o.warmupErrors + o.errors
  const shortfall = o.completed ? '' : `; run not completed (${o.requests}/${report.settings.count} measured requests${o.capped ? ', time cap reached' : ''}${o.failure ? `, ${o.failure}` : ''})`
  verdicts.push({
    target: 'zero errors',
    outcome: allErrors === 0 && o.completed ? 'pass' : 'fail',
    detail: `${allErrors} errors in ${o.warmupRequests + o.requests} requests (warm-up included)${shortfall}${o.errorSamples.length > 0 ? `: ${o.errorSamples.join('; ')}` : ''}`,
  })

  const t = report.table
  const target = `table bounded: max size (table + indexes) over the 2nd half of the measured phase ≤ max before it (warm-up included) + ${BOUNDED_TOLERANCE_RATIO * 100}% + ${BOUNDED_TOLERANCE_BYTES / MB} MB`
  const sizes = `max ${mbUnit(t.totalBytes.max)}, at end ${mbUnit(t.totalBytes.end)}, after the final VACUUM ${mbUnit(t.totalBytes.afterVacuum)} (${t.rows.afterVacuum ?? '-'} rows)`
  if (t.maxFirstHalfBytes === null || t.maxSecondHalfBytes === null) {
    verdicts.push({ target, outcome: 'inconclusive', detail: `too few samples in the measured phase to see a trend; ${sizes}` })
  } else {
    const limit = t.maxFirstHalfBytes * (1 + BOUNDED_TOLERANCE_RATIO) + BOUNDED_TOLERANCE_BYTES
    verdicts.push({
      target,
      outcome: t.maxSecondHalfBytes <= limit ? 'pass' : 'fail',
      detail: `max before ${mbUnit(t.maxFirstHalfBytes)}, 2nd half max ${mbUnit(t.maxSecondHalfBytes)}; ${sizes}`,
    })
  }
  return verdicts
}

/** 0 when every verdict passed (an inconclusive one is reported, not failed on), 1 otherwise. */
export function longRunExitCode(report: LongRunReport): number {
  return report.verdicts.some((verdict) => verdict.outcome === 'fail') ? 1 : 0
}

export function formatLongRun(report: LongRunReport): string {
  const { settings: s, outcome: o, memory, table: t } = report
  const lines: string[] = []
  const ms = (us: number | null | undefined): string => (us === null || us === undefined ? '-' : `${(us / 1000).toFixed(2)} ms`)
  lines.push(`pgrr long run: ${s.count} requests at concurrency ${s.concurrency} (pgrr-ts caller → pgrr-ts responder, serve concurrency ${s.responderConcurrency}), after a warm-up of ≥ ${s.warmupCount} requests and ≥ ${s.warmupMinMs / 1000} s`)
  lines.push(`${report.date}; ${report.machine.cpus} × ${report.machine.cpuModel}, Node ${report.machine.node}, PostgreSQL ${report.machine.postgres}`)
  lines.push(`load average at start ${report.loadAverage.start.join(' ')}, at end ${report.loadAverage.end.join(' ')} (1, 5, 15 min)`)
  lines.push('')
  lines.push(`requests   ${o.requests} measured, ${o.errors} errors; warm-up ${o.warmupRequests}, ${o.warmupErrors} errors${o.completed ? '' : '  (NOT COMPLETED)'}`)
  if (o.capped) lines.push(`           time cap of ${s.timeCapMs / 1000} s reached`)
  if (o.failure) lines.push(`           failure: ${o.failure}`)
  lines.push(`duration   ${o.durationMs === null ? '-' : `${(o.durationMs / 1000).toFixed(1)} s`} measured, ${o.requestsPerSec ?? '-'} req/s; wall time ${(o.wallTimeMs / 1000).toFixed(1)} s`)
  lines.push(`latency    p50 ${ms(o.latency?.p50Us)}, p99 ${ms(o.latency?.p99Us)}, p99.9 ${ms(o.latency?.p999Us)}, max ${ms(o.latency?.maxUs)}`)
  if (o.errorSamples.length > 0) lines.push(`errors     ${o.errorSamples.join('; ')}`)
  lines.push('')
  lines.push('memory (MB = 10^6 bytes)  at start  after warm-up      max      end  growth end  growth peak   heapUsed warm-up/max/end   live heap warm-up/end')
  for (const side of ['caller', 'responder'] as const) {
    const m = memory[side]
    lines.push(
      [
        `${side} RSS`.padEnd(25),
        mb(m.atStartBytes).padStart(9),
        mb(m.afterWarmupBytes).padStart(15),
        mb(m.maxBytes).padStart(8),
        mb(m.endBytes).padStart(8),
        signedMb(m.growthEndBytes).padStart(11),
        signedMb(m.growthPeakBytes).padStart(12),
        `${mb(m.heapUsedAfterWarmupBytes)}/${mb(m.heapUsedMaxBytes)}/${mb(m.heapUsedEndBytes)}`.padStart(27),
        `${mb(m.liveHeapAfterWarmupBytes)}/${mb(m.liveHeapEndBytes)}`.padStart(24),
      ].join(''),
    )
  }
  lines.push('')
  lines.push(`table ${t.name}, over the measured phase     min      max      end   after final VACUUM`)
  const row = (label: string, r: { min: number | null; max: number | null; end: number | null; afterVacuum: number | null }): string =>
    `  ${label.padEnd(38)}${mb(r.min).padStart(8)} ${mb(r.max).padStart(8)} ${mb(r.end).padStart(8)} ${mb(r.afterVacuum).padStart(20)}`
  lines.push(row('total (pg_total_relation_size)', t.totalBytes))
  lines.push(row('table (pg_relation_size)', t.heapBytes))
  lines.push(row('indexes (pg_indexes_size)', t.indexesBytes))
  if (t.indexBytesAfterVacuum) {
    lines.push(`  indexes after the final VACUUM: ${Object.entries(t.indexBytesAfterVacuum).map(([name, bytes]) => `${name} ${mb(bytes)}`).join(', ')}`)
  }
  lines.push(`  rows: max ${t.rows.max ?? '-'} while running, ${t.rows.end ?? '-'} at end, ${t.rows.afterCallerClose ?? '-'} after the caller closed, ${t.rows.afterVacuum ?? '-'} after the final VACUUM`)
  lines.push(`  vacuums during the run: ${t.vacuums ?? '-'} VACUUM (the responder's own and the final one), ${t.autovacuums ?? '-'} autovacuum`)
  if (t.finalVacuum) {
    const truncated = t.finalVacuum.messages.find((message) => message.includes('truncated'))
    lines.push(`  final VACUUM: ${t.finalVacuum.durationMs} ms, ${truncated ?? 'no truncation'}`)
  }
  lines.push('')
  lines.push('verdicts')
  for (const verdict of report.verdicts) {
    lines.push(`  ${verdict.outcome.toUpperCase().padEnd(12)} ${verdict.target}`)
    lines.push(`  ${''.padEnd(12)} ${verdict.detail}`)
  }
  if (report.warnings.length > 0) {
    lines.push('')
    lines.push('warnings')
    for (const warning of report.warnings) lines.push(`  ${warning}`)
  }
  lines.push('')
  lines.push(`(${report.samples.length} samples every ${s.sampleIntervalMs / 1000} s in --json; progress was on stderr)`)
  return lines.join('\n')
}

function mb(bytes: number | null | undefined): string {
  return bytes === null || bytes === undefined ? '-' : (bytes / MB).toFixed(1)
}

function mbUnit(bytes: number | null | undefined): string {
  return bytes === null || bytes === undefined ? '-' : `${mb(bytes)} MB`
}

function signedMbUnit(bytes: number | null): string {
  return bytes === null ? '-' : `${signedMb(bytes)} MB`
}

function signedMb(bytes: number | null): string {
  if (bytes === null) return '-'
  return `${bytes >= 0 ? '+' : '−'}${(Math.abs(bytes) / MB).toFixed(1)}`
}

function round2(value: number): number {
  return Math.round(value * 100) / 100
}

// ---------------------------------------------------------------------------------------------------------
// The child side: `long-run.ts caller|responder <config-json> <concurrency>`.

/** Latencies in buckets 2% wide: percentiles without keeping a number per request. */
class LatencyHistogram {
  private static readonly BASE = Math.log(1.02)
  private readonly buckets = new Uint32Array(1200)
  private count = 0
  private max = 0

  record(us: number): void {
    const index = Math.min(this.buckets.length - 1, Math.max(0, Math.ceil(Math.log(Math.max(us, 1)) / LatencyHistogram.BASE)))
    this.buckets[index] = (this.buckets[index] ?? 0) + 1
    this.count++
    if (us > this.max) this.max = us
  }

  summary(): LatencySummary {
    if (this.count === 0) return { p50Us: null, p99Us: null, p999Us: null, maxUs: null }
    return { p50Us: this.quantile(0.5), p99Us: this.quantile(0.99), p999Us: this.quantile(0.999), maxUs: Math.round(this.max) }
  }

  /** Upper bound of the bucket holding the quantile (2% precision), never above the maximum seen. */
  private quantile(q: number): number {
    const rank = Math.ceil(q * this.count)
    let seen = 0
    for (let index = 0; index < this.buckets.length; index++) {
      seen += this.buckets[index] ?? 0
      if (seen >= rank) return Math.round(Math.min(Math.exp(index * LatencyHistogram.BASE), this.max))
    }
    return Math.round(this.max)
  }
}

function makeGc(): () => void {
  // The long run wants the live heap at its two marks; --expose-gc cannot be passed through BenchChild.
  setFlagsFromString('--expose-gc')
  return runInNewContext('gc') as () => void
}

function memorySnapshot(gc: (() => void) | null): ChildMemory {
  const usage = process.memoryUsage()
  const memory: ChildMemory = {
    rss: usage.rss,
    heapUsed: usage.heapUsed,
    heapTotal: usage.heapTotal,
    external: usage.external,
    arrayBuffers: usage.arrayBuffers,
  }
  if (gc) {
    gc()
    const after = process.memoryUsage()
    memory.heapUsedAfterGc = after.heapUsed
    memory.rssAfterGc = after.rss
  }
  return memory
}

function closeWithin(session: { close(): Promise<void> }): Promise<unknown> {
  return Promise.race([session.close().catch(() => undefined), new Promise((resolve) => setTimeout(resolve, CLOSE_TIMEOUT_MS).unref())])
}

async function runChild(role: string, configJson: string | undefined, concurrencyText: string | undefined): Promise<void> {
  if ((role !== 'caller' && role !== 'responder') || !configJson || !process.send) {
    process.stderr.write('bench/long-run.ts runs as a child of `node --import tsx bench/run.ts --long`\n')
    process.exit(2)
  }
  const config = JSON.parse(configJson) as PeerConfig
  const concurrency = Number(concurrencyText)
  const inbox = new Inbox<ToChild>()
  const send = (message: FromChild): void => sendToParent(message)
  const gc = makeGc()

  if (role === 'responder') {
    let session: ResponderSession
    try {
      session = await startPgrrResponder(config)
    } catch (error) {
      send({ type: 'failed', message: errorMessage(error) })
      process.exit(1)
    }
    send({ type: 'ready' })
    for (;;) {
      const message = await inbox.next()
      if (message.type === 'stop') break
      if (message.type === 'sample') {
        send({ type: 'progress', id: message.id, memory: memorySnapshot(message.gc ? gc : null), phase: null, done: 0, errors: 0 })
      }
    }
    await closeWithin(session)
    process.exit(0)
  }

  let session: CallerSession
  try {
    session = await pgrrTsPeer.openCaller(config, concurrency)
  } catch (error) {
    send({ type: 'failed', message: errorMessage(error) })
    process.exit(1)
  }
  const load = new CallerLoad(session, concurrency)
  send({ type: 'ready' })
  for (;;) {
    const message = await inbox.next()
    if (message.type === 'stop') break
    if (message.type === 'sample') {
      send({ type: 'progress', id: message.id, memory: memorySnapshot(message.gc ? gc : null), phase: load.phase, done: load.done, errors: load.errors })
    } else if (message.type === 'run') {
      load.run(message.phase, message.count, message.minDurationMs).then(send, (error: unknown) => send({ type: 'failed', message: errorMessage(error) }))
    }
  }
  await load.stop()
  await closeWithin(session)
  process.exit(0)
}

/** The closed loop of the caller: `concurrency` workers, one request in flight each. */
class CallerLoad {
  phase: LongPhase | null = null
  done = 0
  errors = 0
  private sequence = 0
  private stopped = false
  private running: Promise<unknown> = Promise.resolve()

  constructor(
    private readonly session: CallerSession,
    private readonly concurrency: number,
  ) {}

  run(phase: LongPhase, count: number, minDurationMs: number): Promise<PhaseDone> {
    const result = this.runPhase(phase, count, minDurationMs)
    this.running = result.catch(() => undefined)
    return result
  }

  async stop(): Promise<void> {
    this.stopped = true
    await Promise.race([this.running, new Promise((resolve) => setTimeout(resolve, CLOSE_TIMEOUT_MS).unref())])
  }

  /** At least `count` requests, and more until `minDurationMs` have passed. */
  private async runPhase(phase: LongPhase, count: number, minDurationMs: number): Promise<PhaseDone> {
    this.phase = phase
    this.done = 0
    this.errors = 0
    const histogram = new LatencyHistogram()
    const errorSamples = new Set<string>()
    let issued = 0
    const until = Date.now() + minDurationMs
    const work = async (worker: number): Promise<void> => {
      while (!this.stopped && (issued < count || Date.now() < until)) {
        const payload = makePayload(this.sequence++)
        issued++
        const startedAt = process.hrtime.bigint()
        try {
          const reply = await this.session.call(payload, worker)
          if (reply === transform(payload)) {
            histogram.record(Number(process.hrtime.bigint() - startedAt) / 1000)
          } else {
            this.errors++
            if (errorSamples.size < 5) errorSamples.add(`unexpected reply: ${JSON.stringify(reply).slice(0, 60)}`)
          }
        } catch (error) {
          this.errors++
          if (errorSamples.size < 5) errorSamples.add(errorMessage(error))
        }
        this.done++
      }
    }
    const startedAt = process.hrtime.bigint()
    await Promise.all(Array.from({ length: Math.min(this.concurrency, count) }, (_, worker) => work(worker)))
    const elapsedMs = Number(process.hrtime.bigint() - startedAt) / 1e6
    return {
      type: 'phase-done',
      phase,
      done: this.done,
      errors: this.errors,
      errorSamples: [...errorSamples],
      elapsedMs,
      latency: histogram.summary(),
    }
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await runChild(process.argv[2] ?? '', process.argv[3], process.argv[4])
}
