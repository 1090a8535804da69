/**
 * Drain. `server.drain()` and SIGTERM to `pgrr serve` stop claiming, let the handlers in flight finish and send
 * their replies, stop being live (nothing new is sent to them; their sessions go away at the end), and end
 * (the CLI exits 0);
 * requests still queued are taken by the responders that remain.
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { after, test } from 'node:test'
import { NoRespondersError, serve } from '../src/index.ts'
import { killAll, LineProcess, within } from './fixtures/failure-process.ts'
import { clientFor, deferred, rejection, requestRows, serverFor, useTestSchema, waitFor, type TestSchema } from './helpers.ts'

after(killAll)
const db = useTestSchema('fail_drain')

async function sessionsOf(schema: TestSchema, app: string): Promise<number> {
  const rows = await schema.sql`select count(*)::int as n from pg_stat_activity where application_name = ${app}`
  return Number(rows[0]?.n)
}

/** Whether the responder is live: listed by the view that says who requests are sent to. */
async function isLive(schema: TestSchema, id: number | undefined): Promise<boolean> {
  const rows = await schema.sql.unsafe(`select 1 from ${schema.quoted}.pgrr_live_responder where id = $1`, [id ?? -1])
  return rows.length > 0
}

test('server.drain(): in-flight handlers finish, nothing new is claimed, presence goes, the others take the queue', { timeout: 60_000 }, async (t) => {
  const channel = 'drain.api'
  const app = `pgrr-drain-${randomBytes(4).toString('hex')}`
  const release = deferred()
  const firstRan: string[] = []
  const twoStarted = deferred()
  const draining = await serve({ ...db.options, applicationName: app }, channel, async (payload: string) => {
    firstRan.push(payload)
    if (firstRan.length === 2) twoStarted.resolve()
    await release.promise
    return `first ${payload}`
  }, { concurrency: 3 })
  t.after(() => draining.close())
  const client = await clientFor(t, db)
  const inFlight = ['a', 'b'].map((p) => client.request(channel, p, { timeoutMs: 30_000 }))
  await twoStarted.promise
  const responderId = draining.responderId
  const drained = draining.drain(30_000)
  assert.equal(draining.state, 'draining')
  await waitFor(async () => !(await isLive(db, responderId)), { message: 'the draining responder unregisters' })
  // Nobody else serves the channel yet: refused at once, not queued for a responder that is leaving.
  assert.ok((await rejection(client.request(channel, 'refused'))) instanceof NoRespondersError)

  // Another responder comes; requests made now all go to it, though the draining one has a free slot.
  await serverFor(t, db, channel, (payload: string) => `second ${payload}`)
  const later = await Promise.all(['c', 'd', 'e'].map((p) => client.request(channel, p, { timeoutMs: 30_000 })))
  assert.deepEqual(later, ['second c', 'second d', 'second e'])
  assert.equal(draining.state, 'draining')

  release.resolve()
  assert.deepEqual(await Promise.all(inFlight), ['first a', 'first b'], 'the handlers in flight finished and replied')
  await within(drained, 10_000, 'drain()')
  assert.equal(draining.state, 'closed')
  assert.deepEqual(firstRan, ['a', 'b'], 'the draining responder claimed nothing new')
  await waitFor(async () => (await sessionsOf(db, app)) === 0, { message: 'its sessions are closed' })
})

test('SIGTERM to `pgrr serve`: the request in flight is answered, it exits 0, the queued ones go to another responder', { timeout: 60_000 }, async (t) => {
  const channel = 'drain.cli'
  const cli = new LineProcess('pgrr serve', [
    'src/cli/main.ts', 'serve', channel,
    '--handler', 'test/fixtures/failure-handler.ts',
    '--concurrency', '1',
    '--database-url', db.options.connectionString,
    '--schema', db.schema,
  ], { stderrLines: true })
  t.after(() => cli.kill())
  await cli.nextLine(/serving drain\.cli/)
  const app = `pgrr serve ${channel}`
  const [{ id: responderId } = { id: undefined }] = await db.sql.unsafe(
    `select r.id from ${db.quoted}.pgrr_responder r join ${db.quoted}.pgrr_channel c on c.id = r.channel_id where c.name = $1`, [channel])

  const client = await clientFor(t, db)
  const held = client.request(channel, 'hold', { timeoutMs: 30_000 })
  const [, , heldId] = (await cli.nextLine('failure-handler: holding ')).split(' ')
  // Concurrency 1: these wait in the table.
  const queued = ['q1', 'q2', 'q3'].map((p) => client.request(channel, p, { timeoutMs: 30_000 }))
  await waitFor(async () => (await requestRows(db, channel)).filter((row) => row.state === 'pending').length === 3, { message: 'three requests queued' })

  const signalledAt = performance.now()
  cli.child.kill('SIGTERM')
  assert.equal(await held, `released ${heldId}`, 'the request in flight at SIGTERM was answered')
  const exit = await within(cli.exited, 20_000, 'pgrr serve exiting')
  console.log(`pgrr serve drained and exited ${Math.round(performance.now() - signalledAt)} ms after SIGTERM`)
  assert.deepEqual(exit, { code: 0, signal: null }, `stderr:\n${cli.stderr}`)
  assert.equal(await isLive(db, responderId as number | undefined), false, 'its registration is gone')
  assert.equal(await sessionsOf(db, app), 0, 'its sessions are gone')
  assert.ok(!/failure-handler: start .* q[123]/.test(cli.stderr), 'it started none of the queued requests')

  // The queued requests wait for the next responder, which takes them all.
  await serverFor(t, db, channel, (payload: string) => `next ${payload}`)
  assert.deepEqual(await Promise.all(queued), ['next q1', 'next q2', 'next q3'])
})
