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
  /** Channels the requests are spread over, each with a live responder (pgrr-ts, pgrr-sql and nats only). @default 1 */
  channels: number
  /** `concurrency` of the pgrr responder's `serve()` (pgrr-ts and pgrr-sql). @default 64 */
  serveConcurrency: number
}

/**
 * The pgrr responder's `serve()` concurrency unless `--serve-concurrency` says otherwise: enough for the
 * highest concurrency the benchmark runs.
 */
export const SERVE_CONCURRENCY = 64

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

/**
 * What the idle processes of the fleet scenario (bench/scenarios/fleet.ts) are: pgrr clients that sent one
 * request (`clients`), the same keeping their LISTEN as every client did before 0.2 (`clients-listening`),
 * responders of another channel (`responders`), and those in another database (`responders-other-db`).
 */
export const FLEET_KINDS = ['clients', 'clients-listening', 'responders', 'responders-other-db'] as const
export type FleetKind = (typeof FLEET_KINDS)[number]

/** Options of `--scenario fleet`: the matrix options, plus the idle processes kept beside the pair. */
export interface FleetOptions {
  /** Idle processes beside the measured pair; 0 is the reference. @default [0, 10, 50] */
  sizes: number[]
  /** @default ['clients', 'clients-listening', 'responders'] */
  kinds: FleetKind[]
}

/** Options of `--scenario cotenancy` (bench/scenarios/cotenancy.ts). */
export interface CotenancyOptions {
  /** Requests per second beside pgbench; null: half of what pgrr-ts reaches at c=64, measured first. */
  rate: number | null
  /** Length of each pgbench run. @default 20 */
  phaseSeconds: number
  /** TPC-B scale factor. @default 10 */
  pgbenchScale: number
  /** pgbench clients. @default 8 */
  pgbenchClients: number
  /** @default $PGBENCH or /usr/lib/postgresql/15/bin/pgbench */
  pgbenchPath: string
}

export const COTENANCY_DEFAULTS = { systems: ['pgrr-ts', 'nats'] as SystemName[], phaseSeconds: 20, pgbenchScale: 10, pgbenchClients: 8 }

export const FLEET_DEFAULTS = {
  systems: ['pgrr-ts', 'floor-notify', 'nats'] as SystemName[],
  concurrency: [1, 64],
  sizes: [0, 10, 50],
  kinds: ['clients', 'clients-listening', 'responders'] as FleetKind[],
}

export const USAGE = `Usage: node --import tsx bench/run.ts [options]

Runs request-reply side by side: the Postgres floors, pgrr (TypeScript and SQL callers), the proof of
concept, the Postgres job queues and workflow engines (pg-boss, graphile-worker, DBOS, BullMQ on Postgres,
Absurd), NATS, RabbitMQ and Redis. One responder process and one caller process per system.

  --systems a,b          ${SYSTEM_NAMES.join(', ')}
                         (default: all but the measuring aids floor-pg, pgrr-protocol, floor-batch,
                         batch-sketch and batch-row-sketch)
  --concurrency 1,16,64  requests in flight per scenario (default: 1,16,64)
  --count n              measured requests per scenario (default: ${FULL_DEFAULTS.count}, quick: ${QUICK_DEFAULTS.count})
  --runs n               run the whole matrix n times, one pass after the other, and report each
                         scenario's median (ratios: the median of each pass's ratio; errors: the sum)
  --payload-bytes n      size of every request body, for every system (default: ${PAYLOAD_BYTES}, at least ${MIN_PAYLOAD_BYTES})
  --channels n           spread the requests over n channels, round robin, each served by the responder
                         process (pgrr-ts, pgrr-sql and nats only; default: 1)
  --serve-concurrency n  the pgrr responder's serve() concurrency (pgrr-ts and pgrr-sql only; default: 64,
                         the library's own default is 10)
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
  --scenario fleet       instead: the matrix beside idle processes (bench/scenarios/fleet.ts), each size
                         in turn, every pass; defaults: --systems ${FLEET_DEFAULTS.systems.join(',')},
                         --concurrency ${FLEET_DEFAULTS.concurrency.join(',')}; takes --fleet (sizes, default
                         ${FLEET_DEFAULTS.sizes.join(',')}) and --fleet-kinds (${FLEET_KINDS.join(', ')};
                         default ${FLEET_DEFAULTS.kinds.join(',')}); the JSON has them under "scenarios"
  --scenario cotenancy   instead: pgbench (TPC-B, scale ${COTENANCY_DEFAULTS.pgbenchScale}, ${COTENANCY_DEFAULTS.pgbenchClients} clients, a database of its own)
                         alone, then beside each of --systems (default ${COTENANCY_DEFAULTS.systems.join(',')}) serving
                         --rate requests/s (default: half of pgrr-ts's at c=64, measured first), each
                         for --phase-seconds (default ${COTENANCY_DEFAULTS.phaseSeconds}); --runs passes in rotating order
  -h, --help

Progress goes to stderr; stdout carries only the table or the JSON.`

export type ParsedArgs =
  | { kind: 'help' }
  | { kind: 'drivers'; databaseUrl: string }
  | { kind: 'functions'; options: FunctionOptions }
  | { kind: 'long'; options: LongRunOptions }
  | { kind: 'bench'; options: BenchOptions }
  | { kind: 'fleet'; options: BenchOptions; fleet: FleetOptions }
  | { kind: 'cotenancy'; options: BenchOptions; cotenancy: CotenancyOptions }

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
      channels: { type: 'string' },
      'serve-concurrency': { type: 'string' },
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
      scenario: { type: 'string' },
      fleet: { type: 'string' },
      'fleet-kinds': { type: 'string' },
      rate: { type: 'string' },
      'phase-seconds': { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  })
  if (values.help) return { kind: 'help' }
  for (const flag of ['payload-bytes', 'channels', 'serve-concurrency'] as const) {
    if (values[flag] !== undefined && (values.drivers || values.functions || values.long)) {
      throw new Error(`--${flag}: only for the matrix (not with --drivers, --functions or --long)`)
    }
  }
  if (values.scenario !== undefined && values.scenario !== 'fleet' && values.scenario !== 'cotenancy') {
    throw new Error(`--scenario: unknown scenario "${values.scenario}" (known: fleet, cotenancy)`)
  }
  const fleetFlags = (['fleet', 'fleet-kinds'] as const).filter((flag) => values[flag] !== undefined)
  if (values.scenario !== 'fleet' && fleetFlags.length > 0) {
    throw new Error(`${fleetFlags.map((flag) => `--${flag}`).join(', ')}: only with --scenario fleet`)
  }
  const cotenancyFlags = (['rate', 'phase-seconds'] as const).filter((flag) => values[flag] !== undefined)
  if (values.scenario !== 'cotenancy' && cotenancyFlags.length > 0) {
    throw new Error(`${cotenancyFlags.map((flag) => `--${flag}`).join(', ')}: only with --scenario cotenancy`)
  }
  if (values.scenario !== undefined) {
    const refused = (['drivers', 'functions', 'long', 'write-docs'] as const).filter((flag) => values[flag])
    if (refused.length > 0) throw new Error(`--scenario: does not take ${refused.map((flag) => `--${flag}`).join(', ')}`)
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
  const fleet = values.scenario === 'fleet'
  const cotenancy = values.scenario === 'cotenancy'
  const defaultSystems = fleet ? FLEET_DEFAULTS.systems : cotenancy ? COTENANCY_DEFAULTS.systems : DEFAULT_SYSTEMS
  const options: BenchOptions = {
    systems: values.systems ? parseSystems(values.systems) : [...defaultSystems],
    concurrency: values.concurrency
      ? parsePositiveList('--concurrency', values.concurrency)
      : fleet
        ? [...FLEET_DEFAULTS.concurrency]
        : [1, 16, 64],
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
    channels: values.channels ? parsePositive('--channels', values.channels) : 1,
    serveConcurrency: values['serve-concurrency'] ? parsePositive('--serve-concurrency', values['serve-concurrency']) : SERVE_CONCURRENCY,
  }
  const spreadable: readonly string[] = ['pgrr-ts', 'pgrr-sql', 'nats']
  const unspread = options.systems.filter((system) => !spreadable.includes(system))
  const notPgrr = options.systems.filter((system) => system !== 'pgrr-ts' && system !== 'pgrr-sql')
  if (options.serveConcurrency !== SERVE_CONCURRENCY && notPgrr.length > 0) {
    throw new Error(`--serve-concurrency: only pgrr-ts and pgrr-sql have a pgrr responder (not ${notPgrr.join(', ')}): name them in --systems`)
  }
  const inNotify = options.systems.filter((system) => ['floor-batch', 'batch-sketch', 'batch-row-sketch'].includes(system))
  if (options.payloadBytes > 7800 && inNotify.length > 0) {
    throw new Error(`--payload-bytes: ${inNotify.join(', ')} carry bodies inside their NOTIFYs, at most 7800 bytes each`)
  }
  if (options.channels > 1 && unspread.length > 0) {
    throw new Error(`--channels: only pgrr-ts, pgrr-sql and nats spread their requests over channels (not ${unspread.join(', ')}): name them in --systems`)
  }
  if (cotenancy) {
    return {
      kind: 'cotenancy',
      options,
      cotenancy: {
        rate: values.rate ? parsePositive('--rate', values.rate) : null,
        phaseSeconds: values['phase-seconds'] ? parsePositive('--phase-seconds', values['phase-seconds']) : COTENANCY_DEFAULTS.phaseSeconds,
        pgbenchScale: COTENANCY_DEFAULTS.pgbenchScale,
        pgbenchClients: COTENANCY_DEFAULTS.pgbenchClients,
        pgbenchPath: env.PGBENCH ?? '/usr/lib/postgresql/15/bin/pgbench',
      },
    }
  }
  if (!fleet) return { kind: 'bench', options }
  return {
    kind: 'fleet',
    options,
    fleet: {
      sizes: values.fleet ? parseSizes(values.fleet) : [...FLEET_DEFAULTS.sizes],
      kinds: values['fleet-kinds'] ? parseFleetKinds(values['fleet-kinds']) : [...FLEET_DEFAULTS.kinds],
    },
  }
}

/** Fleet sizes: distinct integers from 0; 0, the reference, first (added when missing). */
function parseSizes(text: string): number[] {
  const sizes = text.split(',').map((part) => {
    const value = Number(part.trim())
    if (part.trim() === '' || !Number.isInteger(value) || value < 0) throw new Error(`--fleet: expected integers from 0, got "${text}"`)
    return value
  })
  if (new Set(sizes).size !== sizes.length) throw new Error(`--fleet: a size appears twice in "${text}"`)
  return [0, ...sizes.filter((size) => size !== 0)]
}

function parseFleetKinds(text: string): FleetKind[] {
  const kinds = text.split(',').map((kind) => kind.trim()).filter(Boolean)
  for (const kind of kinds) {
    if (!(FLEET_KINDS as readonly string[]).includes(kind)) {
      throw new Error(`--fleet-kinds: unknown kind "${kind}" (known: ${FLEET_KINDS.join(', ')})`)
    }
  }
  if (kinds.length === 0) throw new Error('--fleet-kinds: at least one kind')
  return kinds as FleetKind[]
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
