// Lock squatting. Any login of the database may take any advisory lock, and some of the protocol's keys are
// built from public facts: a namespace hashed from the schema name and a small sequential responder id. A
// session of a login granted nothing at all (no pgrr role, no privilege on the schema) takes them here, as a
// hostile or broken neighbour could, and every request still ends promptly in its reply or a typed error:
// - the responder lock of a responder whose session died: while listed as live, this phantom is handed
//   requests that nobody runs; they are reaped (lost, or retried when retryable) at the caller's next check,
//   and the next sweep forgets the phantom;
// - the responder lock of a responder that drained and closed: it is handed nothing more (a draining
//   responder is handed nothing, and what it still runs is left to it);
// - the lock keys of the next requests, whose seqs every service-channel NOTIFY shows: request locks are
//   keyed on the request's secret id, so those keys lock nothing.
// And two requests whose ids share a lock key delay each other by a second at most, and a session that holds
// a request's lock still cannot answer it unless it registered the responder that holds the request.
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { after, test, type TestContext } from 'node:test'
import postgres from 'postgres'
import { getStatus, ResponderLostError } from '../src/index.ts'
import { clientFor, databaseUrl, deferred, overhearInbox, ownSession, serverFor, useTestSchema, waitFor, type AdminSql, type Deferred } from './helpers.ts'

const db = useTestSchema('sec_locks')
const squatterRole = `pgrr_test_squat_${randomBytes(3).toString('hex')}`
const squatterPassword = randomBytes(12).toString('hex')
const squatterPools: AdminSql[] = []
let roleCreated: Promise<unknown> | undefined

after(async () => {
  await Promise.all(squatterPools.map((sql) => sql.end({ timeout: 1 })))
  if (roleCreated === undefined) return
  const admin = postgres(databaseUrl(), { max: 1, onnotice: () => {} })
  await admin.unsafe(`drop role if exists "${squatterRole}"`)
  await admin.end({ timeout: 1 })
})

/**
 * A session of a login granted nothing (its own, created for the file), and its pool for LISTEN. Its locks
 * are released after the test.
 */
async function squatterSession(t: TestContext): Promise<{ sql: AdminSql; session: postgres.ReservedSql; pid: number }> {
  roleCreated ??= db.sql.unsafe(`create role "${squatterRole}" login password '${squatterPassword}'`)
  await roleCreated
  const url = new URL(databaseUrl())
  url.username = squatterRole
  url.password = squatterPassword
  const sql: AdminSql = postgres(url.toString(), { max: 1, onnotice: () => {}, connection: { application_name: 'pgrr-test-squatter' } })
  squatterPools.push(sql)
  const session = await sql.reserve()
  t.after(async () => {
    await session.unsafe('select pg_advisory_unlock_all()').catch(() => undefined)
    session.release()
  })
  const [row] = await session.unsafe<{ pid: number }[]>('select pg_backend_pid() as pid')
  return { sql, session, pid: row!.pid }
}

/** Waits until the session `pid` is blocked on an advisory lock. */
async function blockedOnLock(pid: number, message: string): Promise<void> {
  await waitFor(async () => (await db.sql`select 1 from pg_stat_activity where pid = ${pid} and wait_event = 'advisory'`).length === 1, { message })
}

/**
 * Starts `count` requests, each in a turn of the event loop of its own: the client sends what one turn
 * queued as one batch, handed to one responder picked for the whole batch, so this spreads them over
 * several batches and picks.
 */
async function oneByOne<T>(count: number, start: (index: number) => Promise<T>): Promise<Promise<T>[]> {
  const started: Promise<T>[] = []
  for (let i = 0; i < count; i++) {
    started.push(start(i))
    await new Promise((resolve) => setImmediate(resolve))
  }
  return started
}

/** The outcome of a promise and when it settled, in ms from `since`. */
function timed<T>(promise: Promise<T>, since: number): Promise<{ value?: T; error?: Error; ms: number }> {
  return promise.then(
    (value) => ({ value, ms: performance.now() - since }),
    (error: Error) => ({ error, ms: performance.now() - since }),
  )
}

test('a squatter on a dead responder\'s lock: what the phantom is handed is reaped, and a sweep forgets it', { timeout: 60_000 }, async (t) => {
  const channel = 'locks.phantom'
  const s = db.quoted
  // The live responder does not sweep during the test: the phantom stays listed until the sweep below.
  const retriedAttempts: number[] = []
  await serverFor(t, db, channel, (payload: string, ctx) => {
    if (ctx.attempt > 1) retriedAttempts.push(ctx.attempt)
    return `live: ${payload}`
  }, { sweepIntervalMs: 600_000 })
  // The doomed responder: a registration on a session of its own, which the test ends.
  const doomed = await ownSession(t, 'doomed')
  const [registered] = await doomed.unsafe<{ responder_id: number }[]>(`select responder_id from ${s}.pgrr_register($1, 'doomed', 0, 10)`, [channel])
  const doomedId = registered!.responder_id
  // The squatter computes the keys (the namespace is a hash of the schema name, ids count up from 1) and
  // waits for them; it gets them the moment the doomed session ends.
  const squatter = await squatterSession(t)
  const squatted = squatter.session.unsafe(
    `select pg_advisory_lock(hashtext($1 || '/pgrr/responder'), $2)`,
    [db.schema, doomedId],
  ).execute()
  await blockedOnLock(squatter.pid, 'the squatter waits for the responder lock')
  await doomed.unsafe('select pg_terminate_backend(pg_backend_pid())').catch(() => undefined)
  await squatted
  const [listed] = await db.sql.unsafe(`select count(*)::int as n from ${s}.pgrr_live_responder where id = $1`, [doomedId])
  assert.equal(listed!.n, 1, 'the squatter makes the dead responder look live')
  // pgrr status lists who requests are sent to: the phantom too, until a sweep (below).
  const statusIds = async () => (await getStatus({ ...db.options, channels: [channel] })).channels.flatMap((c) => c.responders.map((r) => r.id))
  const listedIds = await statusIds()
  assert.equal(listedIds.length, 2, `status lists the live responder and the phantom: ${JSON.stringify(listedIds)}`)
  assert.ok(listedIds.includes(doomedId), 'status lists the phantom as sends see it')

  // Requests handed to the phantom end within a check interval: lost, or run by the live responder when
  // retryable. One at a time, so that each is a batch of its own, sent to a responder picked for it alone.
  const client = await clientFor(t, db, { checkIntervalMs: 200 })
  const lostAfterMs: number[] = []
  for (let i = 0; i < 16; i++) {
    const maxAttempts = i % 2 === 0 ? 1 : 3
    const outcome = await timed(client.request(channel, `ts ${i}`, { timeoutMs: 8000, maxAttempts }), performance.now())
    if (outcome.error instanceof ResponderLostError && maxAttempts === 1) lostAfterMs.push(Math.round(outcome.ms))
    else assert.equal(outcome.value, `live: ts ${i}`, `request ${i} (maxAttempts ${maxAttempts}): ${String(outcome.error)}`)
    assert.ok(outcome.ms < 4000, `request ${i} ended after ${Math.round(outcome.ms)} ms`)
  }
  // The same from SQL: await_reply reaps what the phantom was handed (PR004) instead of waiting for it.
  const sqlLostAfterMs: number[] = []
  for (let i = 0; i < 8; i++) {
    const began = performance.now()
    const [{ id }] = (await db.sql.unsafe(`select ${s}.request($1, $2::text, '8 s')::text as id`, [channel, `sql ${i}`])) as unknown as [{ id: string }]
    const outcome = await timed(db.sql.unsafe(`select ${s}.await_reply($1::bigint) as reply`, [id]), began)
    if ((outcome.error as { code?: string } | undefined)?.code === 'PR004') sqlLostAfterMs.push(Math.round(outcome.ms))
    else assert.equal((outcome.value as unknown as [{ reply: string }] | undefined)?.[0]?.reply, `live: sql ${i}`, String(outcome.error))
    assert.ok(outcome.ms < 4000, `SQL request ${i} ended after ${Math.round(outcome.ms)} ms`)
  }
  console.log(`retryable TypeScript requests run again after the phantom was handed them: ${retriedAttempts.length} (of 8); ` +
    `lost after [${lostAfterMs.join(', ')}] ms: ${lostAfterMs.length} of 8 TypeScript requests (checkIntervalMs 200); ` +
    `PR004 after [${sqlLostAfterMs.join(', ')}] ms: ${sqlLostAfterMs.length} of 8 SQL requests`)

  // A responder's sweep (any channel's: sweeps cover the schema) forgets the phantom; nothing goes to it any more.
  await serverFor(t, db, 'locks.sweeper', () => 'unused', { sweepIntervalMs: 100 })
  await waitFor(async () => (await db.sql.unsafe(`select 1 from ${s}.pgrr_responder where id = $1`, [doomedId])).length === 0, {
    timeoutMs: 5000,
    message: 'the sweep deletes the phantom\'s row',
  })
  const replies = await Promise.all(await oneByOne(20, (i) => client.request(channel, `after ${i}`, { timeoutMs: 8000 })))
  assert.deepEqual(replies, Array.from({ length: 20 }, (_, i) => `live: after ${i}`))
  const remaining = await statusIds()
  assert.equal(remaining.length, 1, `status lists the live responder only: ${JSON.stringify(remaining)}`)
  assert.ok(!remaining.includes(doomedId), 'status no longer lists the phantom')
})

test('a draining responder is handed nothing more and keeps what it runs; a squatter on its lock once it closed is handed nothing either', { timeout: 60_000 }, async (t) => {
  const channel = 'locks.draining'
  const s = db.quoted
  const started = deferred()
  const release = deferred<string>()
  const draining = await serverFor(t, db, channel, (payload: string) => {
    if (payload !== 'held') return `draining: ${payload}`
    started.resolve()
    return release.promise
  }, { sweepIntervalMs: 600_000 })
  const client = await clientFor(t, db, { checkIntervalMs: 200 })
  const held = client.request(channel, 'held', { timeoutMs: 30_000 })
  await started.promise
  const responderId = draining.responderId!
  // Everything handed to the responder from now on.
  const { heard: handoffs, sync } = await overhearInbox(t, db, responderId)

  const drained = draining.drain()
  await waitFor(async () => {
    const [row] = await db.sql.unsafe(`select unregistered from ${s}.pgrr_responder where id = $1`, [responderId])
    return row?.unregistered === true
  }, { message: 'the responder unregisters' })
  await serverFor(t, db, channel, (payload: string) => `other: ${payload}`, { sweepIntervalMs: 600_000 })
  const replies = await Promise.all(await oneByOne(20, (i) => client.request(channel, `r${i}`, { timeoutMs: 8000 })))
  assert.deepEqual(replies, Array.from({ length: 20 }, (_, i) => `other: r${i}`))
  await sync()
  assert.deepEqual(handoffs, [], 'nothing was handed to the draining responder')

  // Its session still holds its lock: reaps and sweeps leave its request alone, and it answers it.
  await db.sql.unsafe(`select * from ${s}.pgrr_reap(null)`)
  await db.sql.unsafe(`select ${s}.pgrr_sweep()`)
  const [inHand] = await db.sql.unsafe(`select count(*)::int as n from ${s}.pgrr_request where responder_id = $1 and state = 'claimed'`, [responderId])
  assert.equal(inHand!.n, 1, 'the held request is still in the draining responder\'s hands')
  release.resolve('answered while draining')
  assert.equal(await held, 'answered while draining')
  await drained

  // Closed now; a squatter takes its lock, free again: nothing is handed to it either.
  const squatter = await squatterSession(t)
  await squatter.session.unsafe(`select pg_advisory_lock(hashtext($1 || '/pgrr/responder'), $2)`, [db.schema, responderId])
  const later = await Promise.all(await oneByOne(20, (i) => client.request(channel, `later ${i}`, { timeoutMs: 8000 })))
  assert.deepEqual(later, Array.from({ length: 20 }, (_, i) => `other: later ${i}`))
  await sync()
  assert.deepEqual(handoffs, [], 'nothing was handed to the closed responder')
})

test('a squatter on the lock keys of the next seqs, which the service channel shows: queued requests are claimed all the same', { timeout: 30_000 }, async (t) => {
  const channel = 'locks.queued'
  const s = db.quoted
  await serverFor(t, db, channel, (payload: string) => `${payload.length} bytes`)
  const squatter = await squatterSession(t)
  // The squatter listens on the service channel (its name is a hash of the schema name and a small channel id).
  const [{ channelId }] = (await db.sql.unsafe(`select id as "channelId" from ${s}.pgrr_channel where name = $1`, [channel])) as unknown as [{ channelId: number }]
  const [{ prefix }] = (await squatter.session.unsafe(`select 'pgrr.' || to_hex(hashtext($1)) as prefix`, [db.schema])) as unknown as [{ prefix: string }]
  const announced = deferred<number>()
  const listening = await squatter.sql.listen(`${prefix}.s${channelId}`, (payload) => announced.resolve(Number(payload)))
  t.after(() => listening.unlisten())
  // A request over 7,800 bytes waits in the table, and its NOTIFY carries its seq.
  const client = await clientFor(t, db)
  const big = 'x'.repeat(9000)
  assert.equal(await client.request(channel, big), '9000 bytes')
  const seq = await announced.promise
  // The next 20 seqs' keys, as request locks were once keyed (the seq itself), held in shared mode: a claim's
  // try-lock would fail on them.
  await squatter.session.unsafe(
    `select pg_advisory_lock_shared(hashtext($1 || '/pgrr/request'), k::int) from generate_series($2::bigint + 1, $2::bigint + 20) k`,
    [db.schema, seq],
  )
  assert.equal(await client.request(channel, `${big}y`, { timeoutMs: 5000 }), '9001 bytes')
  const [{ id }] = (await db.sql.unsafe(`select ${s}.request($1, $2::text, '5 s')::text as id`, [channel, `${big}zz`])) as unknown as [{ id: string }]
  const [{ reply }] = (await db.sql.unsafe(`select ${s}.await_reply($1::bigint) as reply`, [id])) as unknown as [{ reply: string }]
  assert.equal(reply, '9002 bytes')
})

test('a session holding a claimed request\'s lock cannot answer it: pgrr_reply also needs the responder\'s own session', { timeout: 30_000 }, async (t) => {
  const channel = 'locks.forged'
  const s = db.quoted
  // A responder's session claims a queued request, then ends without replying.
  const victim = await ownSession(t, 'victim')
  const [registered] = await victim.unsafe<{ responder_id: number; channel_id: number }[]>(
    `select responder_id, channel_id from ${s}.pgrr_register($1, 'victim', 0, 1)`, [channel],
  )
  const [{ id }] = (await db.sql.unsafe(`select ${s}.request($1, $2::text, '30 s')::text as id`, [channel, 'x'.repeat(9000)])) as unknown as [{ id: string }]
  const claimed = await victim.unsafe<{ id: string }[]>(`select id::text as id from ${s}.pgrr_claim($1, $2, 1)`, [registered!.responder_id, registered!.channel_id])
  assert.deepEqual(claimed.map((row) => row.id), [id])
  // The request lock it holds, as pg_locks shows it (two int keys: classid and objid, objsubid 2).
  const [lock] = await db.sql.unsafe<{ ns: number; key: number }[]>(
    `select (l.classid::bigint - case when l.classid::bigint >= 2147483648 then 4294967296 else 0 end)::int as ns,
            (l.objid::bigint - case when l.objid::bigint >= 2147483648 then 4294967296 else 0 end)::int as key
       from pg_locks l
      where l.locktype = 'advisory' and l.objsubid = 2 and l.granted
        and l.pid = (select backend_pid from ${s}.pgrr_responder where id = $1)
        and l.classid::bigint = (${s}.pgrr_ns_request()::bigint & 4294967295)`,
    [registered!.responder_id],
  )
  assert.ok(lock !== undefined, 'the claiming session holds the request lock')
  await victim.unsafe('select pg_terminate_backend(pg_backend_pid())').catch(() => undefined)
  // A responder of another channel, on its own session, takes that lock and answers as the victim.
  const forger = await ownSession(t, 'forger')
  await forger.unsafe(`select * from ${s}.pgrr_register('locks.forger', 'forger', 0, 1)`)
  await forger.unsafe('select pg_advisory_lock($1, $2)', [lock.ns, lock.key])
  await forger.unsafe(`select ${s}.pgrr_reply($1, $2::bigint[], '{f}', '{forged}', '{f}', '{NULL}')`, [registered!.responder_id, [id]])
  const [row] = await db.sql.unsafe(`select state, reply from ${s}.pgrr_request where id = $1`, [id])
  assert.notEqual(row?.state, 'replied', `the forged reply was written: ${JSON.stringify(row)}`)
})

test('two requests whose ids share a lock key, claimed by one responder: the first one\'s awaiter is answered while the second runs', { timeout: 30_000 }, async (t) => {
  const channel = 'locks.collide'
  const s = db.quoted
  const gates = new Map<string, Deferred<string>>([['first', deferred<string>()], ['second', deferred<string>()]])
  let running = 0
  const bothRunning = deferred()
  await serverFor(t, db, channel, (payload: string) => {
    if (++running === 2) bothRunning.resolve()
    return gates.get(payload)!.promise
  }, { concurrency: 4, pollIntervalMs: 100 })
  // Ids with the same low 32 bits (the lock key), inserted as an SQL caller's queued requests would be, in
  // one statement: one claim takes both, on the one session of the responder.
  const low = 1 + Math.floor(Math.random() * 2 ** 30)
  const [firstId, secondId] = [String(2 ** 40 + low), String(2 ** 41 + low)]
  await db.sql.unsafe(
    `insert into ${s}.pgrr_request (id, channel_id, payload, deadline)
     select t.id, c.id, t.payload, clock_timestamp() + interval '30 s'
       from ${s}.pgrr_channel c, unnest($1::bigint[], $2::text[]) as t(id, payload)
      where c.name = $3`,
    [[firstId, secondId], ['first', 'second'], channel],
  )
  await bothRunning.promise
  const awaiter = postgres(databaseUrl(), { max: 1, onnotice: () => {}, connection: { application_name: 'pgrr-test-collide' } })
  t.after(() => awaiter.end({ timeout: 1 }))
  const [{ pid }] = (await awaiter.unsafe('select pg_backend_pid() as pid')) as unknown as [{ pid: number }]
  const first = awaiter.unsafe(`select ${s}.await_reply($1::bigint, '10 s') as reply`, [firstId]).execute()
  await blockedOnLock(pid, 'the awaiter blocks on the request lock')
  const answeredAt = performance.now()
  gates.get('first')!.resolve('first done')
  const [{ reply }] = (await first) as unknown as [{ reply: string }]
  const ms = performance.now() - answeredAt
  assert.equal(reply, 'first done')
  assert.ok(ms < 2500, `the awaiter saw the reply ${Math.round(ms)} ms after it`)
  gates.get('second')!.resolve('second done')
  const [{ reply: second }] = (await awaiter.unsafe(`select ${s}.await_reply($1::bigint, '10 s') as reply`, [secondId])) as unknown as [{ reply: string }]
  assert.equal(second, 'second done')
})

test('a responder whose session changed its authorization (SET SESSION AUTHORIZATION) is not taken for gone by a sweep', { timeout: 30_000 }, async (t) => {
  const channel = 'locks.authorization'
  const role = `pgrr_test_auth_${randomBytes(3).toString('hex')}`
  await db.sql.unsafe(`create role ${role} nologin`)
  t.after(() => db.sql.unsafe(`drop owned by ${role}; drop role if exists ${role}`).catch(() => undefined))
  await db.sql.unsafe(`select ${db.quoted}.pgrr_grant_responder($1), ${db.quoted}.pgrr_grant_channel($2, $1)`, [role, channel])
  // A superuser's session that takes on another role, then registers as a responder.
  const session = await db.sql.reserve()
  t.after(async () => {
    await session.unsafe('reset session authorization').catch(() => undefined)
    session.release()
  })
  await session.unsafe(`set session authorization ${role}`)
  const [registered] = await session.unsafe(`select responder_id from ${db.quoted}.pgrr_register($1, 'host', 1, 1)`, [channel])
  await db.sql.unsafe(`select ${db.quoted}.pgrr_sweep_older_than(interval '5 seconds')`)
  const rows = await db.sql.unsafe(`select id from ${db.quoted}.pgrr_responder where id = $1`, [registered?.responder_id])
  assert.equal(rows.length, 1, 'the sweep left the live responder in place')
  await session.unsafe(`select ${db.quoted}.pgrr_unregister($1)`, [registered?.responder_id])
})
