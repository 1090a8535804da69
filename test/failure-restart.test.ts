/**
 * The server itself goes away, on a private PostgreSQL of this file (never the shared one):
 *   - a clean restart (fast shutdown, 1.5 s down) under a load of 200 requests in flight: every request settles
 *     with its reply or a typed error, responders register again (one live registration each), later requests
 *     all succeed, nothing crashes;
 *   - a crash (SIGKILL of the postmaster; and an immediate shutdown) with requests in flight: callers get a
 *     typed error, never a hang; the UNLOGGED request table is empty after recovery; service resumes.
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { after, before, test } from 'node:test'
import postgres from 'postgres'
import { connect, migrate, type Client } from '../src/index.ts'
import { connectionLossCodes, oneRegistrationEach, printDiagnostics, sessionCount, type SchemaAccess } from './fixtures/failure-checks.ts'
import { describeReport, Load } from './fixtures/failure-load.ts'
import { PrivatePostgres, type StopMode } from './fixtures/failure-postgres.ts'
import { killAll, since, startResponderChild, within, type ResponderChild } from './fixtures/failure-process.ts'
import type { FailureReply } from './fixtures/failure-responder.ts'
import { waitFor, type AdminSql } from './helpers.ts'

const schema = 'pgrr_failure'
let server: PrivatePostgres
let admin: AdminSql
const db: SchemaAccess = {
  get sql() {
    return admin
  },
  quoted: `"${schema}"`,
}

const unhandled: unknown[] = []
process.on('unhandledRejection', (reason) => unhandled.push(reason))

before(async () => {
  server = await PrivatePostgres.start()
  await migrate({ connectionString: server.connectionString, schema })
  admin = newAdmin()
})
after(async () => {
  await killAll()
  await admin?.end({ timeout: 1 })
  await server?.stop()
})

function newAdmin(): AdminSql {
  return postgres(server.connectionString, { max: 2, onnotice: () => {}, connection: { application_name: 'pgrr-test-admin' } })
}

function options(app: string) {
  return { connectionString: server.connectionString, schema, applicationName: app }
}

async function startResponders(app: string, channel: string, count: number, extra: { concurrency?: number } = {}): Promise<ResponderChild[]> {
  return Promise.all(
    Array.from({ length: count }, (_, i) =>
      startResponderChild({ options: options(app), channel, name: `r${i}`, concurrency: extra.concurrency ?? 32, sweepIntervalMs: 500 }),
    ),
  )
}

async function rowCount(): Promise<number> {
  const [row] = await admin.unsafe(`select count(*)::int as n from ${db.quoted}.pgrr_request`)
  return Number(row?.n)
}

async function stopGracefully(responders: ResponderChild[]): Promise<void> {
  for (const responder of responders) {
    assert.ok(responder.process.alive, `${responder.process.name} is still running`)
    responder.process.child.stdin?.end()
  }
  const exits = await within(Promise.all(responders.map((r) => r.process.exited)), 15_000, 'responders draining')
  assert.deepEqual(exits, responders.map(() => ({ code: 0, signal: null })), 'every responder drained and exited 0')
}

test(
  'a clean restart of the server under a load of 200 requests in flight',
  { timeout: 180_000 },
  async (t) => {
    const channel = 'restart.load'
    const app = `pgrr-restart-${randomBytes(4).toString('hex')}`
    const responders = await startResponders(app, channel, 3)
    const client = await connect({ ...options(app), poolSize: 4 })
    t.after(async () => {
      await killAll()
      await within(client.close(), 15_000, 'client.close()')
    })
    try {
      const load = new Load(client, channel, { total: 6000, concurrency: 200, timeoutMs: 5000, payload: (n) => ({ op: 'sleep', ms: 20, n }) })
      await load.settled(1000)
      const downAt = performance.now()
      await server.stopServer('fast')
      await new Promise((resolve) => setTimeout(resolve, 1500)) // the outage: its length is the scenario, not a synchronisation
      await server.startServer()
      console.log(`server down for ${since(downAt)} ms`)
      const report = await load.finished(90_000)
      console.log(`${describeReport(report)}; max in flight ${report.maxInFlight}; the load ended ${since(downAt)} ms after the stop`)
      assert.equal(report.settled, report.sent, 'every request settled')
      assert.deepEqual(report.untyped, [], 'every error is typed')
      assert.equal(report.wrong, 0)
      for (const code of Object.keys(report.errors)) assert.ok(connectionLossCodes.includes(code), `unexpected outcome ${code}`)

      await waitFor(() => oneRegistrationEach(db, channel, responders), { timeoutMs: 20_000, message: 'one live registration per responder process' })
      const again = responders.map((r) => r.process.stdoutLines.filter((line) => line.includes('responder registered again')).length)
      console.log(`"registered again" per responder: ${again.join(', ')}; registered ${since(downAt)} ms after the stop`)
      const later = await within(
        Promise.all(Array.from({ length: 200 }, (_, n) => client.request<FailureReply>(channel, { op: 'echo', n }, { timeoutMs: 10_000 }))),
        15_000,
        'requests after the restart',
      )
      assert.equal(later.length, 200)
      await waitFor(async () => (await rowCount()) === 0, { timeoutMs: 20_000, intervalMs: 250, message: 'no rows left' })
      console.log(`rows swept ${since(downAt)} ms after the stop`)
      await stopGracefully(responders)
      // No connection leaks: once the client closes too, no session of the test's application is left.
      await within(client.close(), 15_000, 'client.close()')
      await waitFor(async () => (await sessionCount(db, app)) === 0, { message: 'every session closed' })
    } catch (error) {
      await printDiagnostics(db, app, responders)
      throw error
    }
    assert.deepEqual(unhandled, [], 'no unhandled rejection in the test process')
  },
)

for (const mode of ['kill', 'immediate'] satisfies StopMode[]) {
  test(
    `a crash (${mode === 'kill' ? 'SIGKILL of the postmaster' : 'immediate shutdown'}) with requests in flight: typed errors, an empty table, service resumes`,
    { timeout: 120_000 },
    async (t) => {
      const channel = `crash.${mode}`
      const app = `pgrr-crash-${randomBytes(4).toString('hex')}`
      const responders = await startResponders(app, channel, 2, { concurrency: 3 })
      let client: Client | undefined
      const sqlCaller = postgres(server.connectionString, { max: 1, onnotice: () => {}, connection: { application_name: app } })
      t.after(async () => {
        await killAll()
        await sqlCaller.end({ timeout: 1 })
        if (client !== undefined) await within(client.close(), 15_000, 'client.close()')
      })
      try {
        client = await connect({ ...options(app), poolSize: 2 })
        // 6 handled (3 per responder), 4 waiting in the table, plus one SQL caller blocked in await_reply.
        const outcomes = Array.from({ length: 10 }, () =>
          client!.request(channel, { op: 'hang' }, { timeoutMs: 20_000 }).then(
            () => 'replied',
            (error: Error & { code?: string }) => error.code ?? `untyped: ${error.message}`,
          ),
        )
        await Promise.all(responders.flatMap((r) => [1, 2, 3].map(() => r.process.nextLine('start '))))
        const [row] = await sqlCaller.unsafe(`select ${db.quoted}.request($1, '{"op":"hang"}'::jsonb, interval '20 seconds') as id`, [channel])
        const sqlId = String(row?.id)
        const sqlOutcome = sqlCaller.unsafe(`select ${db.quoted}.await_reply($1)`, [sqlId]).then(
          () => 'replied',
          (error: Error & { code?: string }) => error.code ?? error.message,
        )
        assert.equal(await rowCount(), 11)

        const crashedAt = performance.now()
        await server.stopServer(mode)
        await server.startServer()
        const restartMs = since(crashedAt)
        // A fresh admin connection: the old ones broke with the server (postgres.js may report that once more).
        const broken = admin
        admin = newAdmin()
        await broken.end({ timeout: 0 })
        // UNLOGGED: crash recovery empties it, before anyone could write a new row (requests need responders).
        const rowsAfter = await rowCount()
        const settled = await within(Promise.all(outcomes), 30_000, 'the callers settling')
        const settledMs = since(crashedAt)
        const sqlCode = await within(sqlOutcome, 10_000, 'the SQL caller')
        const again = await admin.unsafe(`select ${db.quoted}.await_reply($1)`, [sqlId]).then(
          () => 'replied',
          (error: Error & { code?: string }) => error.code ?? error.message,
        )
        const counts = settled.reduce<Record<string, number>>((acc, code) => ({ ...acc, [code]: (acc[code] ?? 0) + 1 }), {})
        console.log(
          `${mode}: restarted in ${restartMs} ms; rows after recovery ${rowsAfter}; TypeScript callers ${JSON.stringify(counts)} ` +
            `all settled ${settledMs} ms after the crash; SQL caller ${sqlCode}, then await_reply again -> ${again}`,
        )
        assert.equal(rowsAfter, 0, 'the request table is empty after crash recovery')
        for (const code of settled) assert.ok(['CONNECTION', 'TIMEOUT', 'RESPONDER_LOST'].includes(code), `caller outcome ${code}`)
        assert.notEqual(sqlCode, 'replied')
        assert.equal(again, 'PR005', 'after recovery the request is unknown')

        await waitFor(() => oneRegistrationEach(db, channel, responders), { timeoutMs: 20_000, message: 'one live registration per responder process' })
        const reply = await client.request<FailureReply>(channel, { op: 'echo' }, { timeoutMs: 10_000 })
        assert.equal((reply.payload as { op: string }).op, 'echo')
        await stopGracefully(responders)
      } catch (error) {
        await printDiagnostics(db, app, responders)
        throw error
      }
      assert.deepEqual(unhandled, [], 'no unhandled rejection in the test process')
    },
  )
}
