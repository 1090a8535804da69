/**
 * `pgrr ping`, `pgrr info` and `pgrr stats`, run as real child processes against responders of this test
 * file: their lines, their --json, and their exit codes.
 */
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { test } from 'node:test'
import { databaseUrl, repoRoot, serverFor, useTestSchema, waitFor, clientFor } from './helpers.ts'

const db = useTestSchema('services_cli')

interface Exit {
  code: number | null
  stdout: string
  stderr: string
}

/** Runs `pgrr <args> --schema <schema>` to its end. */
function pgrr(args: string[]): Promise<Exit> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args, '--schema', db.schema], {
    cwd: repoRoot,
    env: { ...process.env, DATABASE_URL: databaseUrl() },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', (text: string) => (stdout += text))
  child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text))
  return new Promise((resolve, reject) => {
    child.once('error', reject)
    child.once('close', (code) => resolve({ code, stdout, stderr }))
  })
}

test('pgrr ping, info and stats: human lines, --json and exit codes', { timeout: 60_000 }, async (t) => {
  const server = await serverFor(t, db, 'cli.svc', (text: string) => text, { description: 'echoes', version: '2.0.0', requestSchema: { type: 'string' } })
  const client = await clientFor(t, db)
  await client.request('cli.svc', 'one')
  await waitFor(async () => (await client.services('cli.svc'))[0]?.stats.requests === 1, { message: 'stats written' })
  const id = server.responderId!

  const ping = await pgrr(['ping', 'cli.svc'])
  assert.equal(ping.code, 0, ping.stderr)
  assert.match(ping.stdout, new RegExp(`^responder ${id} \\(.+, pid ${process.pid}\\): \\d+\\.\\d\\d ms, 0/10 handlers busy\\n$`))
  const pingJson = await pgrr(['ping', 'cli.svc', '--json'])
  assert.equal(pingJson.code, 0, pingJson.stderr)
  const [pinged] = JSON.parse(pingJson.stdout) as { responder: { id: number; pid: number }; roundTripMs: number; running: number; concurrency: number }[]
  assert.equal(pinged?.responder.id, id)
  assert.equal(pinged?.responder.pid, process.pid)
  assert.equal(pinged?.concurrency, 10)
  assert.ok(typeof pinged?.roundTripMs === 'number')

  const info = await pgrr(['info', 'cli.svc'])
  assert.equal(info.code, 0, info.stderr)
  assert.match(info.stdout, /^"cli\.svc"\n/)
  assert.match(info.stdout, new RegExp(`  responder ${id} \\(.+, pid ${process.pid}\\), concurrency 10, started \\d{4}-`))
  assert.match(info.stdout, /\n {4}description: echoes\n {4}version: 2\.0\.0\n {4}request schema: \{"type":"string"\}\n$/)
  const infoJson = await pgrr(['info', '--json'])
  assert.equal(infoJson.code, 0, infoJson.stderr)
  const [described] = JSON.parse(infoJson.stdout) as { channel: string; responderId: number; description: string; requestSchema: unknown }[]
  assert.deepEqual([described?.channel, described?.responderId, described?.description, described?.requestSchema], ['cli.svc', id, 'echoes', { type: 'string' }])

  const stats = await pgrr(['stats', 'cli.svc'])
  assert.equal(stats.code, 0, stats.stderr)
  assert.match(stats.stdout, new RegExp(`  responder ${id} \\(.+\\): 1 requests, 0 errors, average \\d+\\.\\d\\d ms, p99 \\d+\\.\\d\\d ms \\(as of \\d+\\.\\d s ago\\)\\n$`))
  const statsJson = await pgrr(['stats', 'cli.svc', '--json'])
  const [counted] = JSON.parse(statsJson.stdout) as { stats: { requests: number; errors: number } }[]
  assert.deepEqual([counted?.stats.requests, counted?.stats.errors], [1, 0])

  // No responder: exit code 3, for each command that names a channel.
  for (const command of ['ping', 'info', 'stats']) {
    const none = await pgrr([command, 'cli.nobody'])
    assert.equal(none.code, 3, `${command}: ${none.stderr}`)
    assert.match(none.stderr, /^pgrr: no responders on channel "cli\.nobody"\n$/)
  }
  const usage = await pgrr(['ping'])
  assert.equal(usage.code, 2)
  const help = await pgrr(['--help'])
  for (const command of ['ping', 'info', 'stats']) assert.match(help.stdout, new RegExp(`\\n  ${command} `))
})
