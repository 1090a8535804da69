// `pgrr bench` on a server shared with another database: its cleanup ends only its own database's benchmark
// sessions, and a run refuses to start while another run holds the server (whatever its database).
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

function bench(): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'bench', '--systems', 'floor-select1', '--concurrency', '1', '--count', '50', '--time-cap', '10', '--database-url', databaseUrl()], {
      cwd: repoRoot,
      stdio: ['ignore', 'ignore', 'pipe'],
    })
    let stderr = ''
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk))
    child.once('error', reject)
    child.once('exit', (code) => resolve({ code, stderr }))
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
