// What a client pays for not LISTENing while idle: the first request after a quiet spell waits for its
// LISTEN. `node --import tsx bench/reply-listen-idle.ts [rounds]` (DATABASE_URL): in each round, after a
// pause longer than the quiet period, one request from a client that dropped its LISTEN and one from a
// client that kept it (replyListenIdleMs of 10 minutes), then one more from each right away. Prints the
// p50 of each as JSON. Uses a schema of its own, dropped at the end.
import postgres from 'postgres'
import { connect, migrate, serve, type Client } from '../src/index.ts'
import { median } from './percentile.ts'

const url = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test'
const rounds = Number(process.argv[2] ?? 150)
const schema = 'pgrr_bench_reply_listen'
const quietMs = 20
const pauseMs = 60

const admin = postgres(url, { max: 1, onnotice: () => {} })
await admin.unsafe(`drop schema if exists ${schema} cascade`)
try {
  await migrate({ connectionString: url, schema })
  const server = await serve({ connectionString: url, schema }, 'echo', async (payload: unknown) => payload, { concurrency: 8 })
  const lazy = await connect({ connectionString: url, schema, replyListenIdleMs: quietMs })
  const keeping = await connect({ connectionString: url, schema, replyListenIdleMs: 600_000 })
  const time = async (client: Client): Promise<number> => {
    const started = performance.now()
    await client.request('echo', 'x')
    return (performance.now() - started) * 1000
  }
  const samples = { lazyAfterPause: [] as number[], lazyNext: [] as number[], keepingAfterPause: [] as number[], keepingNext: [] as number[] }
  for (let index = 0; index < 5; index++) await Promise.all([time(lazy), time(keeping)])
  for (let round = 0; round < rounds; round++) {
    await new Promise((resolve) => setTimeout(resolve, pauseMs))
    samples.lazyAfterPause.push(await time(lazy))
    samples.lazyNext.push(await time(lazy))
    await new Promise((resolve) => setTimeout(resolve, pauseMs))
    samples.keepingAfterPause.push(await time(keeping))
    samples.keepingNext.push(await time(keeping))
  }
  const p50 = Object.fromEntries(Object.entries(samples).map(([name, values]) => [`${name}P50Us`, Math.round(median(values))]))
  process.stdout.write(`${JSON.stringify({ date: new Date().toISOString(), rounds, ...p50 })}\n`)
  await Promise.all([lazy.close(), keeping.close()])
  await server.close()
} finally {
  await admin.unsafe(`drop schema if exists ${schema} cascade`)
  await admin.end({ timeout: 5 })
}
