// Command-line options of the benchmark, shared by `node --import tsx bench/run.ts` and the `pgrr bench` command.
import { parseArgs } from 'node:util'
import { MIN_PAYLOAD_BYTES, PAYLOAD_BYTES } from './payload.ts'
import { DEFAULT_SYSTEMS, SYSTEM_NAMES, isSystemName, type SystemName } from './systems.ts'

export interface BenchOptions {
  /** Systems to run, in this order. @default all of them */
  systems: SystemName[]
  /** Requests in flight per scenario. @default [1, 16, 64] */
  concurrency: number[]
  /** Measured requests per scenario, before a slow system's own cap. @default 10000 (1000 with quick) */
  count: number
  /**
   * Times the whole matrix runs, one pass after the other; each scenario reports the median of its runs
   * (errors: the sum). @default 1
   */
  runs: number
  /** The whole matrix in under two minutes, with fewer requests. @default false */
  quick: boolean
  /** Print one JSON object on stdout instead of the table. @default false */
  json: boolean
  /** Regenerate the results section of docs/benchmarks.md and docs/benchmarks.svg. @default false */
  writeDocs: boolean
  /** @default $DATABASE_URL or postgres://postgres@127.0.0.1:5432/test */
  databaseUrl: string
  /** @default $NATS_URL or nats://127.0.0.1:4222 */
  natsUrl: string
  /** @default $AMQP_URL or amqp://guest:guest@127.0.0.1:5672 */
  amqpUrl: string
  /** @default $REDIS_URL or redis://127.0.0.1:6379 */
  redisUrl: string
  /** Hard cap of each phase (warm-up, then measured) of a scenario. @default 45000 (6000 with quick) */
  phaseTimeCapMs: number
  /** Size of every request body, in bytes, for every system. @default 100 */
  payloadBytes: number
}

export const QUICK_DEFAULTS = { count: 1000, phaseTimeCapMs: 6_000 }
export const FULL_DEFAULTS = { count: 10_000, phaseTimeCapMs: 45_000 }

/** Options of the long run (`--long`, bench/long-run.ts): pgrr-ts alone, one concurrency, many requests. */
export interface LongRunOptions {
  /** Measured requests, after the warm-up. @default 200000 */
  count: number
  /** Requests in flight. @default 64 */
  concurrency: number
  /** Hard cap of the whole run, after which the children are killed and what was measured is reported. @default 600000 */
  timeCapMs: number
  json: boolean
  databaseUrl: string
}

export const LONG_DEFAULTS = { count: 200_000, concurrency: 64, timeCapMs: 600_000 }

/** Options of `--functions` (bench/functions.ts): each protocol function timed alone. */
export interface FunctionOptions {
  databaseUrl: string
  /** Rounds, each timing one request per call and then a batch per call. @default 5 */
  rounds: number
  /** Requests per round and size (a batch call counts for `batch` of them). @default 300 */
  calls: number
  /** Requests per call in the batch half of a round. @default 50 */
  batch: number
}

export const FUNCTION_DEFAULTS = { rounds: 5, calls: 300, batch: 50 }

export const USAGE = `Usage: node --import tsx bench/run.ts [options]

Runs request-reply side by side: the Postgres floors, pgrr (TypeScript and SQL callers), the proof of
concept, the Postgres job queues and workflow engines (pg-boss, graphile-worker, DBOS, BullMQ on Postgres,
Absurd), NATS, RabbitMQ and Redis. One responder process and one caller process per system.

  --systems a,b          ${SYSTEM_NAMES.join(', ')}
                         (default: all but the measuring aids floor-pg and pgrr-protocol)
  --concurrency 1,16,64  requests in flight per scenario (default: 1,16,64)
  --count n              measured requests per scenario (default: ${FULL_DEFAULTS.count}, quick: ${QUICK_DEFAULTS.count})
  --runs n               run the whole matrix n times, one pass after the other, and report each
                         scenario's median (ratios: the median of each pass's ratio; errors: the sum)
  --payload-bytes n      size of every request body, for every system (default: ${PAYLOAD_BYTES}, at least ${MIN_PAYLOAD_BYTES})
  --time-cap seconds     hard cap per phase (default: ${FULL_DEFAULTS.phaseTimeCapMs / 1000}, quick: ${QUICK_DEFAULTS.phaseTimeCapMs / 1000})
  --quick                the whole matrix in under two minutes
  --json                 one JSON object on stdout instead of the table
  --write-docs           regenerate docs/benchmarks.md (results section) and docs/benchmarks.svg
  --database-url url     (default: $DATABASE_URL or postgres://postgres@127.0.0.1:5432/test)
  --nats-url, --amqp-url, --redis-url   broker addresses (defaults: local, standard ports)
  --drivers              instead: compare postgres.js with node-postgres (bench/drivers.ts)
  --functions            instead: time each protocol function alone, for one request and a batch
                         (bench/functions.ts); takes --rounds (5), --calls (300), --batch (50)
  --long                 instead: the long run of pgrr-ts (bench/long-run.ts): RSS of caller and responder,
                         size of the request table, errors; takes --count (default: ${LONG_DEFAULTS.count}),
                         --concurrency (one value, default: ${LONG_DEFAULTS.concurrency}), --time-cap (whole run,
                         default: ${LONG_DEFAULTS.timeCapMs / 1000}), --json, --database-url
  -h, --help

Progress goes to stderr; stdout carries only the table or the JSON.`

export type ParsedArgs =
  | { kind: 'help' }
  | { kind: 'drivers'; databaseUrl: string }
  | { kind: 'functions'; options: FunctionOptions }
  | { kind: 'long'; options: LongRunOptions }
  | { kind: 'bench'; options: BenchOptions }

export function parseBenchArgs(argv: string[], env: NodeJS.ProcessEnv = process.env): ParsedArgs {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      systems: { type: 'string' },
      concurrency: { type: 'string' },
      count: { type: 'string' },
      runs: { type: 'string' },
      'time-cap': { type: 'string' },
      'payload-bytes': { type: 'string' },
      quick: { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
      'write-docs': { type: 'boolean', default: false },
      'database-url': { type: 'string' },
      'nats-url': { type: 'string' },
      'amqp-url': { type: 'string' },
      'redis-url': { type: 'string' },
      drivers: { type: 'boolean', default: false },
      functions: { type: 'boolean', default: false },
      rounds: { type: 'string' },
      calls: { type: 'string' },
      batch: { type: 'string' },
      long: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  })
  if (values.help) return { kind: 'help' }
  if (values['payload-bytes'] !== undefined && (values.drivers || values.functions || values.long)) {
    throw new Error('--payload-bytes: only for the matrix (not with --drivers, --functions or --long)')
  }
  const databaseUrl = values['database-url'] ?? env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test'
  if (values.drivers) return { kind: 'drivers', databaseUrl }
  if (values.functions) {
    const number = (flag: 'rounds' | 'calls' | 'batch'): number => {
      const value = values[flag]
      return value === undefined ? FUNCTION_DEFAULTS[flag] : parsePositive(`--${flag}`, value)
    }
    return { kind: 'functions', options: { databaseUrl, rounds: number('rounds'), calls: number('calls'), batch: number('batch') } }
  }
  const stray = (['rounds', 'calls', 'batch'] as const).filter((flag) => values[flag] !== undefined)
  if (stray.length > 0) throw new Error(`${stray.map((flag) => `--${flag}`).join(', ')}: only with --functions`)
  if (values.long) {
    const refused = (['systems', 'quick', 'write-docs', 'runs'] as const).filter((flag) => values[flag])
    if (refused.length > 0) throw new Error(`--long: does not take ${refused.map((flag) => `--${flag}`).join(', ')}`)
    const concurrency = values.concurrency ? parsePositiveList('--concurrency', values.concurrency) : [LONG_DEFAULTS.concurrency]
    if (concurrency.length !== 1) throw new Error('--long: --concurrency takes one value')
    return {
      kind: 'long',
      options: {
        count: values.count ? parsePositive('--count', values.count) : LONG_DEFAULTS.count,
        concurrency: concurrency[0] ?? LONG_DEFAULTS.concurrency,
        timeCapMs: values['time-cap'] ? parsePositive('--time-cap', values['time-cap']) * 1000 : LONG_DEFAULTS.timeCapMs,
        json: values.json,
        databaseUrl,
      },
    }
  }

  const defaults = values.quick ? QUICK_DEFAULTS : FULL_DEFAULTS
  return {
    kind: 'bench',
    options: {
      systems: values.systems ? parseSystems(values.systems) : [...DEFAULT_SYSTEMS],
      concurrency: values.concurrency ? parsePositiveList('--concurrency', values.concurrency) : [1, 16, 64],
      count: values.count ? parsePositive('--count', values.count) : defaults.count,
      runs: values.runs ? parsePositive('--runs', values.runs) : 1,
      quick: values.quick,
      json: values.json,
      writeDocs: values['write-docs'],
      databaseUrl,
      natsUrl: values['nats-url'] ?? env.NATS_URL ?? 'nats://127.0.0.1:4222',
      amqpUrl: values['amqp-url'] ?? env.AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672',
      redisUrl: values['redis-url'] ?? env.REDIS_URL ?? 'redis://127.0.0.1:6379',
      phaseTimeCapMs: values['time-cap'] ? parsePositive('--time-cap', values['time-cap']) * 1000 : defaults.phaseTimeCapMs,
      payloadBytes: values['payload-bytes'] ? parsePayloadBytes(values['payload-bytes']) : PAYLOAD_BYTES,
    },
  }
}

function parseSystems(text: string): SystemName[] {
  const names = text.split(',').map((name) => name.trim()).filter(Boolean)
  for (const name of names) {
    if (!isSystemName(name)) throw new Error(`--systems: unknown system "${name}" (known: ${SYSTEM_NAMES.join(', ')})`)
  }
  return names as SystemName[]
}

function parsePositiveList(flag: string, text: string): number[] {
  return text.split(',').map((part) => parsePositive(flag, part.trim()))
}

function parsePayloadBytes(text: string): number {
  const value = parsePositive('--payload-bytes', text)
  if (value < MIN_PAYLOAD_BYTES) throw new Error(`--payload-bytes: at least ${MIN_PAYLOAD_BYTES}, got ${value}`)
  return value
}

function parsePositive(flag: string, text: string): number {
  const value = Number(text)
  if (!Number.isInteger(value) || value <= 0) throw new Error(`${flag}: expected a positive integer, got "${text}"`)
  return value
}
