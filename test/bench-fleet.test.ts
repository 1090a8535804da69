// `pgrr bench --scenario fleet` end to end, at its smallest: the reference and one idle client beside a
// `select 1` pair. The idle client drops its LISTEN before the pair runs (the report says how many idle
// processes LISTENed), the JSON carries the rows under "scenarios", and the run leaves nothing behind.
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { test } from 'node:test'
import postgres from 'postgres'
import { databaseUrl, repoRoot } from './helpers.ts'

function bench(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'bench/run.ts', ...args, '--database-url', databaseUrl()], {
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

test('the fleet scenario: idle clients do not LISTEN while the pair runs, rows under "scenarios"', { timeout: 120_000 }, async (t) => {
  const run = await bench([
    '--scenario', 'fleet', '--fleet', '0,1', '--fleet-kinds', 'clients', '--systems', 'floor-select1',
    '--concurrency', '1', '--count', '20', '--time-cap', '10', '--json',
  ])
  assert.equal(run.code, 0, run.stderr)
  const report = JSON.parse(run.stdout) as { scenarios: { fleet: { rows: Array<Record<string, unknown>>; summary: unknown[] } } }
  const rows = report.scenarios.fleet.rows
  assert.deepEqual(rows.map((row) => [row.kind, row.size, row.system, row.concurrency]), [
    ['none', 0, 'floor-select1', 1],
    ['clients', 1, 'floor-select1', 1],
  ])
  assert.equal(rows[1]?.listening, 0, 'the idle client no longer LISTENs')
  assert.equal(rows[0]?.p50VsNone, 1)
  assert.equal(typeof rows[1]?.p50VsNone, 'number')
  assert.equal(report.scenarios.fleet.summary.length, 2)

  const admin = postgres(databaseUrl(), { max: 1, onnotice: () => {} })
  t.after(() => admin.end({ timeout: 5 }))
  const [left] = await admin`
    select (select count(*) from pg_namespace where nspname = 'pgrr_bench_fleet')::int as schemas,
           (select count(*) from pg_stat_activity where application_name = 'pgrr-fleet-idle')::int as sessions`
  assert.deepEqual({ ...left }, { schemas: 0, sessions: 0 })
})
