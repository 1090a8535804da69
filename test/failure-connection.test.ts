/**
 * Connection loss under load: while 200 requests are in flight between this process and three responder
 * processes, every session of the test's application is terminated with pg_terminate_backend (twice).
 * Every request still settles, with its correct reply or a typed error; none stays pending; nothing crashes;
 * responders register again (once each, one live registration per process); requests made afterwards all
 * succeed; and no row is left once the sweeper ran. (Restarting the server itself needs a private one: see
 * failure-restart.test.ts.)
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { after, test } from 'node:test'
import { describeReport, Load } from './fixtures/failure-load.ts'
import { connect } from '../src/index.ts'
import { connectionLossCodes, oneRegistrationEach, printDiagnostics, sessionCount } from './fixtures/failure-checks.ts'
import { killAll, startResponderChild, within } from './fixtures/failure-process.ts'
import type { FailureReply } from './fixtures/failure-responder.ts'
import { requestRows, useTestSchema, waitFor } from './helpers.ts'

// Registered first so that it runs first: a wedged child must not keep locks the schema drop waits for.
after(killAll)
const db = useTestSchema('fail_conn')

const unhandled: unknown[] = []
process.on('unhandledRejection', (reason) => unhandled.push(reason))

test(
  'pg_terminate_backend of every session, twice, under a load of 200 requests in flight',
  { timeout: 120_000 },
  async (t) => {
    const channel = 'conn.load'
    const app = `pgrr-fail-conn-${randomBytes(4).toString('hex')}`
    const options = { ...db.options, applicationName: app }
    const responders = await Promise.all(
      [0, 1, 2].map((i) => startResponderChild({ options, channel, name: `r${i}`, concurrency: 32, sweepIntervalMs: 500 })),
    )
    const client = await connect({ ...db.options, applicationName: app, poolSize: 4 })
    t.after(async () => {
      await killAll() // first: a wedged responder holds row locks that client.close() would wait for
      await within(client.close(), 15_000, 'client.close()')
    })
    const load = new Load(client, channel, { total: 4000, concurrency: 200, timeoutMs: 4000 })

    try {
      const terminate = async () => {
        const rows = await db.sql`select pg_terminate_backend(pid) as ok from pg_stat_activity where application_name = ${app}`
        return rows.filter((row) => row.ok === true).length
      }
      await load.settled(400)
      const first = await terminate()
      await load.settled(2000)
      const second = await terminate()
      const report = await load.finished(30_000)
      console.log(`terminated ${first} then ${second} sessions; ${describeReport(report)}; max in flight ${report.maxInFlight}`)

      assert.equal(report.settled, report.sent, 'every request settled')
      assert.deepEqual(report.untyped, [], 'every error is typed')
      assert.equal(report.wrong, 0, 'no reply belongs to another request')
      for (const code of Object.keys(report.errors)) assert.ok(connectionLossCodes.includes(code), `unexpected outcome ${code}`)
      // (NO_RESPONDERS: requests sent while every responder was registering again fail at once, so their share
      // depends on the pace.)
      assert.ok(report.replied > 0)
      // Client LISTEN + pool, and per responder its LISTEN, pool and work sessions.
      assert.ok(first >= 3 * 3 + 2, `terminated ${first} sessions`)

      // Each responder registered again once per strike, and holds exactly one live registration.
      await waitFor(() => oneRegistrationEach(db, channel, responders), { timeoutMs: 15_000, message: 'one live registration per responder process' })
      const again = responders.map((r) => r.process.stdoutLines.filter((line) => line.includes('responder registered again')).length)
      console.log(`"registered again" per responder: ${again.join(', ')}`)

      // After recovery every request succeeds.
      const after = await within(Promise.all(Array.from({ length: 200 }, (_, n) => client.request<FailureReply>(channel, { op: 'echo', n }, { timeoutMs: 10_000 }))), 15_000, 'requests after recovery')
      assert.deepEqual(after.map((reply) => (reply.payload as { n: number }).n), Array.from({ length: 200 }, (_, n) => n))

      // Outcomes nobody will read (inserts whose result was lost with the connection) are swept after their deadline.
      await waitFor(async () => (await requestRows(db, channel)).length === 0, { timeoutMs: 20_000, intervalMs: 250, message: 'no rows left' })

      for (const responder of responders) {
        assert.ok(responder.process.alive, `${responder.process.name} is still running`)
        responder.process.child.stdin?.end()
      }
      const exits = await within(Promise.all(responders.map((r) => r.process.exited)), 15_000, 'responders draining')
      assert.deepEqual(exits, responders.map(() => ({ code: 0, signal: null })), 'every responder drained and exited 0')
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

test(
  "a responder whose session is terminated while it claims a backlog registers again (5 times in a row)",
  { timeout: 120_000 },
  async (t) => {
    const channel = 'conn.backlog'
    const app = `pgrr-fail-backlog-${randomBytes(4).toString('hex')}`
    const responder = await startResponderChild({ options: { ...db.options, applicationName: app }, channel, name: 'busy', concurrency: 2 })
    const client = await connect({ ...db.options, poolSize: 2 })
    t.after(async () => {
      await killAll()
      await within(client.close(), 15_000, 'client.close()')
    })
    try {
      // A backlog that keeps the responder claiming all the time.
      const load = new Load(client, channel, { total: 100_000, concurrency: 300, timeoutMs: 10_000, payload: (n) => ({ op: 'sleep', ms: 1, n }) })
      for (let strike = 1; strike <= 5; strike++) {
        await load.settled(strike * 500)
        const [row] = await db.sql.unsafe(
          `select r.backend_pid from ${db.quoted}.pgrr_responder r where r.pid = $1 and not ${db.quoted}.pgrr_lock_is_free(${db.quoted}.pgrr_ns_responder(), r.id)`,
          [responder.process.child.pid!],
        )
        assert.ok(row !== undefined, `strike ${strike}: the responder is registered`)
        await db.sql`select pg_terminate_backend(${row.backend_pid})`
        await responder.process.nextLine('log info responder registered again', 10_000)
      }
      client.close().catch(() => undefined)
    } catch (error) {
      await printDiagnostics(db, app, [responder])
      throw error
    }
  },
)
