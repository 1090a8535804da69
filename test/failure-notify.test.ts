/**
 * NOTIFY is a hint, the table is the truth. A reply whose notification never reaches the caller is still
 * delivered: by the client's periodic check (checkIntervalMs) when the notification was simply never sent, and
 * by the catch-up after a reconnect when the caller's LISTEN session was cut just as the reply was written.
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { test } from 'node:test'
import { since } from './fixtures/failure-process.ts'
import { clientFor, deferred, serverFor, useTestSchema, waitFor } from './helpers.ts'

const db = useTestSchema('fail_notify')

test('a reply written without any NOTIFY reaches the caller through its periodic check', async (t) => {
  const channel = 'notify.none'
  const release = deferred()
  // The only slot is taken, so the second request stays pending: nobody will ever notify its caller.
  await serverFor(t, db, channel, async (payload: unknown) => {
    await release.promise
    return payload
  }, { concurrency: 1, pollIntervalMs: 600_000 })
  t.after(() => release.resolve())
  const client = await clientFor(t, db, { checkIntervalMs: 500 })
  const blocker = client.request(channel, 'blocker', { timeoutMs: 20_000 })
  const reply = client.request(channel, 'by hand', { timeoutMs: 20_000 })
  await waitFor(async () => (await db.sql.unsafe(`select 1 from ${db.quoted}.pgrr_request where payload = 'by hand' and state = 'pending'`)).length === 1, {
    message: 'the second request waits in the table',
  })
  // Write its reply straight into the table: no pgrr_reply, so no NOTIFY.
  await db.sql.unsafe(
    `update ${db.quoted}.pgrr_request set state = 'replied', reply = 'written by hand', reply_json = false, finished_at = clock_timestamp()
      where payload = 'by hand'`,
  )
  const writtenAt = performance.now()
  assert.equal(await reply, 'written by hand')
  const ms = since(writtenAt)
  console.log(`reply without NOTIFY delivered ${ms} ms after it was written (checkIntervalMs 500)`)
  assert.ok(ms < 2500, `took ${ms} ms`)
  release.resolve()
  assert.equal(await blocker, 'blocker')
  // The caller acknowledged it like any other reply.
  await waitFor(async () => (await db.sql.unsafe(`select 1 from ${db.quoted}.pgrr_request`)).length === 0, { message: 'acknowledged' })
})

test("a reply sent while the caller's LISTEN session is being cut is delivered after the reconnect", async (t) => {
  const channel = 'notify.cut'
  const app = `pgrr-notify-${randomBytes(4).toString('hex')}`
  const started = deferred()
  const release = deferred()
  await serverFor(t, db, channel, async (payload: unknown) => {
    started.resolve()
    await release.promise
    return `re: ${String(payload)}`
  })
  t.after(() => release.resolve())
  // A long check interval: only the reconnect's catch-up can deliver it in time.
  const client = await clientFor(t, db, { applicationName: app, checkIntervalMs: 60_000 })
  const reply = client.request(channel, 'x', { timeoutMs: 20_000 })
  await started.promise
  // The only session of the client that ever runs LISTEN or UNLISTEN.
  const [listen] = await db.sql`
    select pid from pg_stat_activity where application_name = ${app} and query ~* '^(un)?listen '`
  assert.ok(listen !== undefined, 'found the LISTEN session')
  const cutAt = performance.now()
  await db.sql`select pg_terminate_backend(${listen.pid})`
  release.resolve() // the reply (and its NOTIFY) is written while the session is gone or coming back
  assert.equal(await reply, 're: x')
  console.log(`reply delivered ${since(cutAt)} ms after the LISTEN session was terminated`)
})
