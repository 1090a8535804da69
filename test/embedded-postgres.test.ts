// Always uses its own embedded server, whatever DATABASE_URL says: the subject here is the embedded server itself.
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { access } from 'node:fs/promises'
import net from 'node:net'
import path from 'node:path'
import { createInterface } from 'node:readline'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'
import postgres from 'postgres'
import { EmbeddedPostgresError, startEmbeddedPostgres } from '../src/embedded-postgres.ts'

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')

test('starts a fresh server that answers queries and LISTEN/NOTIFY; stop() removes everything', { timeout: 60_000 }, async () => {
  const server = await startEmbeddedPostgres({ database: 'pgrr_embedded_test' })
  const tempRoot = path.dirname(server.dataDir)
  try {
    const sql = postgres(server.connectionString, { max: 2, onnotice: () => {} })
    try {
      const [row] = await sql`
        select current_setting('server_version_num')::int >= 150000 as recent, current_database() as db`
      assert.deepEqual({ ...row }, { recent: true, db: 'pgrr_embedded_test' })

      let resolveNotification!: (payload: string) => void
      const notified = new Promise<string>((resolve) => { resolveNotification = resolve })
      await sql.listen('pgrr_embedded_test', (payload) => resolveNotification(payload))
      await sql.notify('pgrr_embedded_test', 'hello')
      assert.equal(await notified, 'hello')
    } finally {
      await sql.end({ timeout: 5 })
    }
  } finally {
    await server.stop()
  }
  assert.equal(await canConnect(server.port), false, 'the port still accepts connections after stop()')
  await assert.rejects(access(tempRoot), { code: 'ENOENT' })
  await server.stop() // idempotent
})

test('a requested port that is taken gives PORT_IN_USE', { timeout: 60_000 }, async () => {
  const blocker = net.createServer()
  blocker.listen(0, '127.0.0.1')
  await once(blocker, 'listening')
  const { port } = blocker.address() as net.AddressInfo
  try {
    await assert.rejects(startEmbeddedPostgres({ port }), (err: unknown) => {
      assert.ok(err instanceof EmbeddedPostgresError)
      assert.equal(err.code, 'PORT_IN_USE')
      return true
    })
  } finally {
    blocker.close()
  }
})

test('a bin directory without binaries gives BINARIES_NOT_FOUND', async () => {
  await assert.rejects(startEmbeddedPostgres({ binDir: path.join(repoRoot, 'test', 'fixtures', 'no-such-dir') }), {
    name: 'EmbeddedPostgresError',
    code: 'BINARIES_NOT_FOUND',
  })
})

test('a parent killed with SIGKILL leaves no server and no directory behind', { timeout: 60_000 }, async () => {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'test', 'fixtures', 'embedded-postgres-child.ts')], {
    cwd: repoRoot,
    stdio: ['pipe', 'pipe', 'inherit'], // the pipe on stdin ends the child if this process dies
  })
  const exited = once(child, 'exit')
  try {
    const [line] = await once(createInterface({ input: child.stdout }), 'line') as [string]
    const { port, dataDir } = JSON.parse(line) as { port: number; dataDir: string }
    assert.equal(await canConnect(port), true)

    child.kill('SIGKILL')
    await exited
    await waitUntil(async () => !(await canConnect(port)), 15_000, `postgres still listens on port ${port}`)
    await waitUntil(() => access(path.dirname(dataDir)).then(() => false, () => true), 15_000, `${dataDir} was not removed`)
  } finally {
    child.kill('SIGKILL')
  }
})

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port })
    socket.once('connect', () => { socket.destroy(); resolve(true) })
    socket.once('error', () => resolve(false))
  })
}

async function waitUntil(condition: () => Promise<boolean>, timeoutMs: number, message: string): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await condition())) {
    if (Date.now() > deadline) assert.fail(message)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}
