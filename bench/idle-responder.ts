// What an idle responder process costs: `node --import tsx bench/idle-responder.ts [channels] [seconds]
// [rounds]` (DATABASE_URL) serves `channels` channels (default 100) from one client, nobody sending, and,
// 10 s after the last registration (the start-up's work done), measures over `seconds` (default 20) the CPU its backends took in PostgreSQL and the CPU of this process,
// both in ms per second, `rounds` times (default 3), and the sessions the process holds (`sessions`).
// What is left is housekeeping: lease renewals, polls, sweeps. Prints one JSON object. Uses a schema of its
// own, dropped at the end.
import postgres from 'postgres'
import { connect, migrate, type Server } from '../src/index.ts'
import { withApplicationName } from './database-url.ts'
import { ServerCpuMeter } from './server-cpu.ts'

const url = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test'
const channels = Number(process.argv[2] ?? 100)
const seconds = Number(process.argv[3] ?? 20)
const rounds = Number(process.argv[4] ?? 3)
const schema = 'pgrr_bench_idle_responder'
const settleMs = 10_000

const admin = postgres(url, { max: 1, onnotice: () => {} })
await admin.unsafe(`drop schema if exists ${schema} cascade`)
try {
  await migrate({ connectionString: url, schema })
  const client = await connect({ connectionString: withApplicationName(url, 'idle-responder'), schema })
  const servers: Server[] = []
  try {
    for (let index = 0; index < channels; index++) {
      servers.push(await client.serve(`idle.${index}`, async (payload: unknown) => payload, { concurrency: 64 }))
    }
    await new Promise((resolve) => setTimeout(resolve, settleMs))
    const [held] = await admin<{ n: number }[]>`select count(*)::int as n from pg_stat_activity where application_name = 'pgrr-bench-idle-responder'`
    const samples: { serverCpuMsPerSecond: number | null; nodeCpuMsPerSecond: number }[] = []
    for (let round = 0; round < rounds; round++) {
      const meter = new ServerCpuMeter('postgres', admin)
      await meter.start()
      const cpu = process.cpuUsage()
      const started = performance.now()
      await new Promise((resolve) => setTimeout(resolve, seconds * 1000))
      const elapsedSeconds = (performance.now() - started) / 1000
      const serverUs = await meter.stop()
      const nodeUs = process.cpuUsage(cpu)
      samples.push({
        serverCpuMsPerSecond: serverUs === null ? null : Math.round(serverUs / 1000 / elapsedSeconds * 10) / 10,
        nodeCpuMsPerSecond: Math.round((nodeUs.user + nodeUs.system) / 1000 / elapsedSeconds * 10) / 10,
      })
    }
    process.stdout.write(`${JSON.stringify({ date: new Date().toISOString(), channels, seconds, sessions: held?.n ?? null, samples })}\n`)
  } finally {
    await Promise.all(servers.map((server) => server.close()))
    await client.close()
  }
} finally {
  await admin.unsafe(`drop schema if exists ${schema} cascade`)
  await admin.end({ timeout: 5 })
}
