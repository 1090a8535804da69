// `pgrr bench` on a server shared with another database: its cleanup ends only its own database's benchmark
// sessions, and a run refuses to start while another run holds the server (whatever its database). And the
// measuring aids that stand in for other designs answer every request and leave nothing behind.
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { after, before, test } from 'node:test'
import postgres from 'postgres'
import { databaseUrl, repoRoot } from './helpers.ts'

const other = `pgrr_test_bench_${randomBytes(4).toString('hex')}`
const admin = postgres(databaseUrl(), { max: 1, onnotice: () => {} })
let created = false

/** A session in the other database, named as a benchmark's sessions are. */
function otherSession(applicationName: string): postgres.Sql {
  const url = new URL(databaseUrl())
  url.pathname = `/${other}`
  return postgres(url.toString(), { max: 1, onnotice: () => {}, connection: { application_name: applicationName } })
}

function bench(args = ['--systems', 'floor-select1', '--concurrency', '1', '--count', '50']): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'bench', ...args, '--time-cap', '10', '--database-url', databaseUrl()], {
      cwd: repoRoot,
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk))
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk))
    child.once('error', reject)
    child.once('exit', (code) => resolve({ code, stdout, stderr }))
  })
}

before(async () => {
  await admin.unsafe(`create database ${other}`)
  created = true
})

after(async () => {
  if (created) {
    await admin`select pg_terminate_backend(pid) from pg_stat_activity where datname = ${other}`
    await admin.unsafe(`drop database if exists ${other}`)
  }
  await admin.end({ timeout: 5 })
})

test('the cleanup of a run ends its own database\'s benchmark sessions only', { timeout: 60_000 }, async (t) => {
  const bystander = otherSession('pgrr-bench-bystander')
  t.after(() => bystander.end({ timeout: 1 }))
  const [{ pid }] = (await bystander`select pg_backend_pid() as pid`) as unknown as [{ pid: number }]
  const run = await bench()
  assert.equal(run.code, 0, run.stderr)
  const [alive] = await admin`select count(*)::int as n from pg_stat_activity where pid = ${pid}`
  assert.equal(alive?.n, 1, 'the session of the other database is still there')
})

test('a run refuses to start while another database of the server runs one', { timeout: 60_000 }, async (t) => {
  const orchestrator = otherSession('pgrr-bench-orchestrator')
  t.after(() => orchestrator.end({ timeout: 1 }))
  await orchestrator`select 1`
  const run = await bench()
  assert.notEqual(run.code, 0)
  assert.match(run.stderr, new RegExp(`another benchmark run is in progress on this server \\(database ${other}`))
})

test('the batching sketches and the batched floor answer every request and drop their schemas', { timeout: 120_000 }, async () => {
  const systems = ['floor-batch', 'batch-sketch', 'batch-row-sketch']
  // 16 bodies of 3,000 bytes: a batch's requests and replies take several NOTIFYs.
  const run = await bench(['--systems', systems.join(','), '--concurrency', '1,16', '--count', '300', '--payload-bytes', '3000', '--json'])
  assert.equal(run.code, 0, run.stderr)
  const { results } = JSON.parse(run.stdout) as { results: { system: string; concurrency: number; count: number; errors: number; requestsPerSec: number }[] }
  assert.deepEqual(
    results.map((result) => [result.system, result.concurrency, result.count, result.errors]),
    systems.flatMap((system) => [[system, 1, 300, 0], [system, 16, 300, 0]]),
  )
  for (const result of results) assert.ok(result.requestsPerSec > 0, `${result.system} measured nothing`)
  const left = await admin`select nspname from pg_namespace where nspname like 'pgrr_bench_batch%'`
  assert.deepEqual([...left], [])
})
