// Scatter-gather and ping, measured side by side in one run:
//   DATABASE_URL=... node --import tsx bench/services.ts [--rounds 5] [--calls 200] [--responders 3]
// One caller and --responders responders (concurrency 4 each) in this process, in a schema of its own
// (dropped at the end). Each round runs, one call at a time, --calls of each of: request() (one responder),
// requestAll() (every responder), ping() with idle responders, and ping() while every handler slot of every
// responder is busy; the kinds take turns within a round, so the machine's drift touches them alike. Prints
// the p50 and p99 of each kind (the time of the whole call) and the ratios, pooled over the rounds. Loopback only; bounded by --rounds.
import { randomBytes } from 'node:crypto'
import { parseArgs } from 'node:util'
import postgres from 'postgres'
import { connect, migrate, type Server } from '../src/index.ts'

const { values } = parseArgs({
  options: { rounds: { type: 'string', default: '5' }, calls: { type: 'string', default: '200' }, responders: { type: 'string', default: '3' } },
})
const rounds = Number(values.rounds)
const calls = Number(values.calls)
const responderCount = Number(values.responders)
const connectionString = process.env.DATABASE_URL
if (!connectionString) throw new Error('set DATABASE_URL')
const schema = `pgrr_bench_services_${randomBytes(4).toString('hex')}`
const admin = postgres(connectionString, { max: 1, onnotice: () => {} })

const kinds = ['request', 'requestAll', 'ping idle', 'ping busy'] as const
const samples: Record<(typeof kinds)[number], number[]> = { request: [], requestAll: [], 'ping idle': [], 'ping busy': [] }

try {
  await migrate({ connectionString, schema })
  const client = await connect({ connectionString, schema })
  const servers: Server[] = []
  let release: (() => void) | undefined
  let held = new Promise<void>((resolve) => (release = resolve))
  for (let i = 0; i < responderCount; i++) {
    servers.push(await client.serve('bench.svc', (payload: string) => (payload === 'hold' ? held.then(() => 'held') : payload), { concurrency: 4 }))
  }
  const time = async (run: () => Promise<unknown>) => {
    const start = performance.now()
    await run()
    return performance.now() - start
  }
  for (let round = 0; round < rounds; round++) {
    for (let call = 0; call < calls; call++) {
      samples.request.push(await time(() => client.request('bench.svc', 'x', { timeoutMs: 10_000 })))
      samples.requestAll.push(await time(async () => {
        for await (const outcome of client.requestAll('bench.svc', 'x', { timeoutMs: 10_000 })) if (outcome.error) throw outcome.error
      }))
      samples['ping idle'].push(await time(() => client.ping('bench.svc', { timeoutMs: 10_000 })))
    }
    // Every slot busy: four held scatter-gathers fill the four slots of every responder.
    const holding = [0, 1, 2, 3].map(async () => {
      for await (const outcome of client.requestAll('bench.svc', 'hold', { timeoutMs: 600_000 })) void outcome
    })
    while (servers.some((server) => server.running < 4)) await new Promise((resolve) => setTimeout(resolve, 10))
    for (let call = 0; call < calls; call++) {
      samples['ping busy'].push(await time(async () => {
        const results = await client.ping('bench.svc', { timeoutMs: 10_000 })
        if (results.some((result) => result.error !== undefined || result.running !== 4)) throw new Error('a ping failed or a slot was free')
      }))
    }
    release!()
    await Promise.all(holding)
    held = new Promise<void>((resolve) => (release = resolve))
  }
  await client.close()
  const percentile = (values: number[], p: number) => {
    const sorted = [...values].sort((a, b) => a - b)
    return sorted[Math.min(sorted.length - 1, Math.ceil(sorted.length * p) - 1)]!
  }
  const p50 = (kind: (typeof kinds)[number]) => percentile(samples[kind], 0.5)
  console.log(`${responderCount} responders, ${rounds} rounds of ${calls} calls of each kind, one at a time`)
  const us = (ms: number) => `${(ms * 1000).toFixed(0).padStart(6)} µs`
  for (const kind of kinds) console.log(`${kind.padEnd(11)} p50 ${us(p50(kind))}, p99 ${us(percentile(samples[kind], 0.99))}`)
  console.log(`requestAll / request (p50): ${(p50('requestAll') / p50('request')).toFixed(2)}`)
  console.log(`ping idle / request (p50): ${(p50('ping idle') / p50('request')).toFixed(2)}`)
  console.log(`ping busy / ping idle (p50): ${(p50('ping busy') / p50('ping idle')).toFixed(2)}`)
} finally {
  await admin.unsafe(`drop schema if exists "${schema}" cascade`)
  await admin.end({ timeout: 5 })
}
