// Streamed replies against NATS: one stream of --parts small parts (default 1,000 parts of 20 bytes) at a
// time, parts per second, pg-request-reply (client.requestStream, the handler an async generator, the default
// window of 64 parts) and NATS requestMany (the responder publishes every part to the reply subject, then
// an empty message that ends it: no backpressure) in the same run, interleaved, --rounds times each.
//   node --import tsx bench/stream.ts [--parts 1000] [--rounds 7]
// DATABASE_URL (default postgres://postgres@127.0.0.1:5432/test) and NATS_URL (default
// nats://127.0.0.1:4222). Caller and responder run in this one process, for both systems; the schema it
// creates is dropped at the end. Prints the median parts/s of each and their ratio.
import { parseArgs } from 'node:util'
import { connect as natsConnect, RequestStrategy, StringCodec } from 'nats'
import pg from 'pg'
import { connect, migrate, serve } from '../src/index.ts'
import { quoteIdentifier, withApplicationName } from './database-url.ts'

const { values } = parseArgs({ options: { parts: { type: 'string', default: '1000' }, rounds: { type: 'string', default: '7' } } })
const parts = Number(values.parts)
const rounds = Number(values.rounds)
const databaseUrl = withApplicationName(process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test', 'stream')
const natsUrl = new URL(process.env.NATS_URL ?? 'nats://127.0.0.1:4222')
const schema = `pgrr_bench_stream_${process.pid}`
const part = 'x'.repeat(20)

await migrate({ connectionString: databaseUrl, schema })
const options = { connectionString: databaseUrl, schema }
const server = await serve(options, 'tokens', async function* (count: number) {
  for (let i = 0; i < count; i++) yield part
  return 'done'
})
const client = await connect(options)

const codec = StringCodec()
const responder = await natsConnect({ servers: `${natsUrl.hostname}:${natsUrl.port || 4222}` })
responder.subscribe('tokens', {
  queue: 'bench',
  callback: (error, message) => {
    if (error) return
    const count = Number(codec.decode(message.data))
    for (let i = 0; i < count; i++) message.respond(codec.encode(part))
    message.respond(new Uint8Array(0))
  },
})
await responder.flush()
const caller = await natsConnect({ servers: `${natsUrl.hostname}:${natsUrl.port || 4222}` })

async function pgrrRound(): Promise<number> {
  const start = performance.now()
  let received = 0
  const stream = client.requestStream(options.schema === schema ? 'tokens' : 'tokens', parts, { timeoutMs: 60_000 })
  for await (const value of stream) if (value === part) received++
  if ((await stream.reply) !== 'done' || received !== parts) throw new Error(`pgrr: ${received} parts`)
  return (parts / (performance.now() - start)) * 1000
}

async function natsRound(): Promise<number> {
  const start = performance.now()
  let received = 0
  const replies = await caller.requestMany('tokens', codec.encode(String(parts)), { strategy: RequestStrategy.SentinelMsg, maxWait: 60_000 })
  for await (const message of replies) if (message.data.length > 0) received++
  if (received !== parts) throw new Error(`nats: ${received} parts`)
  return (parts / (performance.now() - start)) * 1000
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!
const results = { pgrr: [] as number[], nats: [] as number[] }
try {
  // One warm-up round each, not counted.
  await pgrrRound()
  await natsRound()
  for (let round = 0; round < rounds; round++) {
    results.pgrr.push(await pgrrRound())
    results.nats.push(await natsRound())
  }
} finally {
  await client.close()
  await server.close()
  await caller.close()
  await responder.close()
  const admin = new pg.Client({ connectionString: databaseUrl })
  await admin.connect()
  await admin.query(`drop schema ${quoteIdentifier(schema)} cascade`)
  await admin.end()
}
const pgrr = median(results.pgrr)
const nats = median(results.nats)
const fmt = (n: number) => Math.round(n).toLocaleString('en')
console.log(`${parts} parts of ${part.length} bytes per stream, ${rounds} rounds each, interleaved, median:`)
console.log(`  pg-request-reply requestStream: ${fmt(pgrr)} parts/s  (rounds: ${results.pgrr.map(fmt).join(', ')})`)
console.log(`  NATS requestMany:               ${fmt(nats)} parts/s  (rounds: ${results.nats.map(fmt).join(', ')})`)
console.log(`  ratio NATS / pg-request-reply:  ${(nats / pgrr).toFixed(1)}`)
