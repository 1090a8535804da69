// Hardening: what another session, a handler or a burst of cancellations could do to a responder, and how
// the protocol holds. Each test reproduces a way it used to break.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { RemoteError, TimeoutError } from '../src/index.ts'
import { aborted, clientFor, deferred, rejection, serverFor, useTestSchema } from './helpers.ts'

const db = useTestSchema('hardening')

test('a session squatting on the lock keys of future responder ids stalls no registration', { timeout: 60_000 }, async (t) => {
  // Any session may take any advisory lock, and responder ids count up: take the presence keys of the next
  // responder ids before anything is there. (Request locks are keyed on the secret id: see
  // security-locks.test.ts.)
  const squatter = await db.sql.reserve()
  t.after(async () => {
    await squatter.unsafe('select pg_advisory_unlock_all()')
    squatter.release()
  })
  await squatter.unsafe(
    `select pg_advisory_lock(${db.quoted}.pgrr_ns_responder(), (s.last + k)::int)
       from (select coalesce(pg_sequence_last_value(pg_get_serial_sequence($1, 'id')::regclass), 0) as last) s,
            generate_series(1, 3) k`,
    [`${db.quoted}.pgrr_responder`],
  )
  // Registration takes the next free id instead of waiting.
  const server = await serverFor(t, db, 'hard.squat', (payload: string) => payload.toUpperCase())
  const [{ last }] = (await db.sql.unsafe(`select pg_sequence_last_value(pg_get_serial_sequence($1, 'id')::regclass) as last`, [
    `${db.quoted}.pgrr_responder`,
  ])) as unknown as [{ last: string }]
  assert.equal(server.responderId, Number(last), 'registered with the last id drawn')
  const client = await clientFor(t, db)
  const replies = await Promise.all(Array.from({ length: 5 }, (_, i) => client.request('hard.squat', `s${i}`)))
  assert.deepEqual(replies, ['S0', 'S1', 'S2', 'S3', 'S4'])
})

test('cancelling 500 claimed requests at once reaches every handler (cancel NOTIFYs are chunked)', { timeout: 60_000 }, async (t) => {
  const started = new Set<string>()
  const allStarted = deferred()
  const abortedIds = new Set<string>()
  const allAborted = deferred()
  await serverFor(
    t,
    db,
    'hard.cancel.many',
    async (_payload: unknown, ctx) => {
      started.add(ctx.id)
      if (started.size === 500) allStarted.resolve()
      await aborted(ctx.signal)
      abortedIds.add(ctx.id)
      if (abortedIds.size === 500) allAborted.resolve()
      return 'cancelled'
    },
    { concurrency: 500 },
  )
  const client = await clientFor(t, db)
  const requests = Array.from({ length: 500 }, (_, i) => client.request('hard.cancel.many', i, { timeoutMs: 30_000 }).catch((error: Error) => error))
  await allStarted.promise
  await client.close()
  for (const outcome of await Promise.all(requests)) assert.equal((outcome as { code?: string }).code, 'CLOSED')
  await allAborted.promise
  assert.equal(abortedIds.size, 500)
})

test('a handler that throws an error with code TIMEOUT is a RemoteError, not the caller\'s own timeout', async (t) => {
  await serverFor(t, db, 'hard.timeout.code', () => {
    throw Object.assign(new Error('the downstream service timed out'), { code: 'TIMEOUT' })
  })
  const client = await clientFor(t, db)
  const error = await rejection(client.request('hard.timeout.code', 'x'))
  assert.ok(error instanceof RemoteError, `${error.name}: ${error.message}`)
  assert.equal(error.remoteCode, 'TIMEOUT')
  // The responder's own deadline is still the caller's TimeoutError.
  await serverFor(t, db, 'hard.deadline', (_payload: unknown, ctx) => aborted(ctx.signal).then(() => 'late'))
  const late = await rejection(client.request('hard.deadline', 'x', { timeoutMs: 300 }))
  assert.ok(late instanceof TimeoutError, `${late.name}: ${late.message}`)
})

test('await_reply outside READ COMMITTED fails at once (0A000) instead of never seeing the reply', async (t) => {
  const release = deferred<string>()
  await serverFor(t, db, 'hard.isolation', () => release.promise)
  const [{ id }] = (await db.sql.unsafe(`select ${db.quoted}.request('hard.isolation', 'x'::text) as id`)) as unknown as [{ id: string }]
  const error = await rejection(
    db.sql.begin('isolation level repeatable read', (tx) => tx.unsafe(`select ${db.quoted}.await_reply($1, '10 s')`, [id])),
  )
  assert.equal(error.code, '0A000')
  release.resolve('fine')
  const [{ reply }] = (await db.sql.unsafe(`select ${db.quoted}.await_reply($1) as reply`, [id])) as unknown as [{ reply: string }]
  assert.equal(reply, 'fine')
})

test('pgrr_sweep takes no grace from its caller; the owner-only pgrr_sweep_older_than does', async () => {
  const missing = await rejection(db.sql.unsafe(`select ${db.quoted}.pgrr_sweep('-10 years'::interval)`))
  assert.equal(missing.code, '42883', 'there is no pgrr_sweep(interval)')
  const [{ privileged }] = (await db.sql.unsafe(
    `select has_function_privilege('public', $1, 'execute') as privileged`,
    [`${db.quoted}.pgrr_sweep_older_than(interval)`],
  )) as unknown as [{ privileged: boolean }]
  assert.equal(privileged, false)
})
