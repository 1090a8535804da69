// postgres.js or node-postgres (pg)? Measured, not guessed: `select 1` and `select $1::text` with a 100-byte
// parameter, at 1 and 64 queries in flight from one process, for 3 s per configuration.
//   node --import tsx bench/drivers.ts [--seconds 3] [--database-url url]
//   node --import tsx bench/run.ts --drivers
// Both drivers go through their own pool, as an application would use them. pg runs twice: with unnamed
// statements (its default: parse + bind + execute every time) and with named prepared statements (what
// postgres.js does by default, and what our style asks for). postgres.js runs twice too: as is (Nagle's
// algorithm left on, unlike pg) and with TCP_NODELAY sockets.
import net from 'node:net'
import { parseArgs } from 'node:util'
import { pathToFileURL } from 'node:url'
import pg from 'pg'
import postgres from 'postgres'
import { withApplicationName } from './database-url.ts'
import { makePayload } from './payload.ts'
import { percentile, sortLatencies } from './percentile.ts'

export interface DriverResult {
  driver: string
  query: string
  inFlight: number
  poolSize: number
  requestsPerSec: number
  p50Us: number
  p99Us: number
}

type Runner = { query: (kind: QueryKind) => Promise<unknown>; close: () => Promise<void> }
type QueryKind = 'select 1' | 'select $1::text'

const PARAMETER = makePayload(0)

const DRIVERS: Record<string, (url: string, poolSize: number) => Runner> = {
  'postgres.js': (url, poolSize) => {
    const sql = postgres(url, { max: poolSize, onnotice: () => {} })
    return {
      query: (kind) => (kind === 'select 1' ? sql`select 1` : sql`select ${PARAMETER}::text`),
      close: () => sql.end({ timeout: 2 }),
    }
  },
  // postgres.js, unlike pg, leaves Nagle's algorithm on; this variant hands it sockets with TCP_NODELAY to
  // see whether that matters.
  'postgres.js (noDelay)': (url, poolSize) => {
    // `socket` is a documented option that postgres.js's type declarations omit.
    const options = { max: poolSize, onnotice: () => {}, socket: connectWithoutNagle }
    const sql = postgres(url, options)
    return {
      query: (kind) => (kind === 'select 1' ? sql`select 1` : sql`select ${PARAMETER}::text`),
      close: () => sql.end({ timeout: 2 }),
    }
  },
  pg: (url, poolSize) => {
    const pool = new pg.Pool({ connectionString: url, max: poolSize })
    return {
      query: (kind) => (kind === 'select 1' ? pool.query('select 1') : pool.query('select $1::text', [PARAMETER])),
      close: () => pool.end(),
    }
  },
  'pg (named)': (url, poolSize) => {
    const pool = new pg.Pool({ connectionString: url, max: poolSize })
    return {
      query: (kind) =>
        kind === 'select 1'
          ? pool.query({ name: 'bench_select_1', text: 'select 1' })
          : pool.query({ name: 'bench_select_text', text: 'select $1::text', values: [PARAMETER] }),
      close: () => pool.end(),
    }
  },
}

/** postgres.js's `socket` option: must resolve to an already connected socket. */
function connectWithoutNagle(options: { host: string[]; port: number[] }): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: options.host[0], port: options.port[0] ?? 5432, noDelay: true })
    socket.once('connect', () => resolve(socket))
    socket.once('error', reject)
  })
}

/** In flight × pool size: one at a time; 64 through the drivers' default pool of 10; 64 on 64 connections. */
const SHAPES = [
  { inFlight: 1, poolSize: 1 },
  { inFlight: 64, poolSize: 10 },
  { inFlight: 64, poolSize: 64 },
]
const QUERIES: QueryKind[] = ['select 1', 'select $1::text']

/** Each configuration runs for `seconds` in total, split into rounds interleaved across drivers so that a
 * noisy neighbour or a CPU frequency change hits every driver alike. */
const ROUNDS = 3
const WARMUP_MS_PER_ROUND = 300

interface RoundResult {
  requests: number
  elapsedSeconds: number
  latenciesUs: number[]
}

async function measureRound(runner: Runner, kind: QueryKind, inFlight: number, durationMs: number): Promise<RoundResult> {
  const latenciesUs: number[] = []
  let measuring = false
  let stopped = false
  const worker = async (): Promise<void> => {
    while (!stopped) {
      const startedAt = process.hrtime.bigint()
      await runner.query(kind)
      if (measuring && !stopped) latenciesUs.push(Number(process.hrtime.bigint() - startedAt) / 1000)
    }
  }
  const workers = Array.from({ length: inFlight }, worker)
  await delay(WARMUP_MS_PER_ROUND)
  measuring = true
  const startedAt = process.hrtime.bigint()
  await delay(durationMs)
  stopped = true
  const elapsedSeconds = Number(process.hrtime.bigint() - startedAt) / 1e9
  await Promise.all(workers)
  return { requests: latenciesUs.length, elapsedSeconds, latenciesUs }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

export async function runDriverComparison(options: { databaseUrl: string; seconds?: number }): Promise<DriverResult[]> {
  const roundMs = ((options.seconds ?? 3) * 1000) / ROUNDS
  const url = withApplicationName(options.databaseUrl, 'drivers')
  const results: DriverResult[] = []
  for (const shape of SHAPES) {
    for (const query of QUERIES) {
      const rounds = new Map<string, RoundResult[]>()
      for (let round = 1; round <= ROUNDS; round++) {
        for (const [driver, open] of Object.entries(DRIVERS)) {
          process.stderr.write(`drivers: "${query}" ${shape.inFlight} in flight on ${shape.poolSize} connections, round ${round}/${ROUNDS}: ${driver}\n`)
          // A fresh pool per round: four pools of 64 would not fit under max_connections together.
          const runner = open(url, shape.poolSize)
          try {
            rounds.set(driver, [...(rounds.get(driver) ?? []), await measureRound(runner, query, shape.inFlight, roundMs)])
          } finally {
            await runner.close()
          }
        }
      }
      for (const [driver, measured] of rounds) {
        const rates = measured.map((round) => round.requests / round.elapsedSeconds).sort((a, b) => a - b)
        const sorted = sortLatencies(measured.flatMap((round) => round.latenciesUs))
        results.push({
          driver,
          query,
          ...shape,
          // The median round: one disturbed round should not decide the choice of a driver.
          requestsPerSec: Math.round(rates[Math.floor(rates.length / 2)] ?? 0),
          p50Us: Math.round(percentile(sorted, 50)),
          p99Us: Math.round(percentile(sorted, 99)),
        })
      }
    }
  }
  process.stdout.write(`${formatDriverTable(results)}\n`)
  return results
}

export function formatDriverTable(results: DriverResult[]): string {
  const header = ['driver', 'query', 'in flight', 'pool', 'req/s', 'p50 µs', 'p99 µs']
  const rows = results.map((result) => [
    result.driver,
    result.query,
    String(result.inFlight),
    String(result.poolSize),
    String(result.requestsPerSec),
    String(result.p50Us),
    String(result.p99Us),
  ])
  const widths = header.map((_, column) => Math.max(...[header, ...rows].map((row) => (row[column] ?? '').length)))
  return [header, ...rows].map((row) => row.map((cell, column) => (column < 2 ? cell.padEnd(widths[column] ?? 0) : cell.padStart(widths[column] ?? 0))).join('  ')).join('\n')
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { values } = parseArgs({ options: { seconds: { type: 'string' }, 'database-url': { type: 'string' } } })
  await runDriverComparison({
    databaseUrl: values['database-url'] ?? process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test',
    seconds: values.seconds ? Number(values.seconds) : 3,
  })
}
