/**
 * SQL callers wait on locks. request() stores the request in the queue (an SQL caller's transaction may go
 * on after it, and its NOTIFY with it: it is never handed over); await_reply blocks on the channel's claim
 * bell until a claim commits, then on the request lock, released by the commit of the reply. What must
 * hold: the awaiter really blocks on a lock (it does not poll), wakes when the reply commits, and still
 * gets every reply when a hostile session squats on the bells, or when many awaiters share one responder.
 */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import postgres from 'postgres'
import { deferred, serverFor, useTestSchema, waitFor } from './helpers.ts'

const db = useTestSchema('core_sql_wait')

/** Runs request() once on a channel nobody serves (PR001): the session has request() loaded afterwards. */
async function warmUp(sql: postgres.Sql): Promise<void> {
  await assert.rejects(sql.unsafe(`select ${db.quoted}.request($1::text, $2::text)`, ['sqlwait.nobody', 'x']), { code: 'PR001' })
}

async function sqlRequest(sql: postgres.Sql, channel: string, payload: string): Promise<string> {
  const [row] = await sql.unsafe(`select ${db.quoted}.request($1::text, $2::text)::text as id`, [channel, payload])
  return String(row!.id)
}

async function awaitReply(sql: postgres.Sql, id: string, timeout = '20 s'): Promise<string> {
  const [row] = await sql.unsafe(`select ${db.quoted}.await_reply($1::bigint, $2::interval) as reply`, [id, timeout])
  return row!.reply as string
}

test('an SQL request waits in the queue; await_reply blocks on its request lock and wakes at the reply', async (t) => {
  const channel = 'sqlwait.basic'
  const gate = deferred()
  const started = deferred()
  await serverFor(t, db, channel, async (payload: string) => {
    started.resolve()
    await gate.promise
    return `done ${payload}`
  })
  const caller = postgres(db.options.connectionString, { max: 1, onnotice: () => {}, connection: { application_name: 'sqlwait-awaiter' } })
  t.after(() => caller.end({ timeout: 1 }))
  await warmUp(caller)
  const id = await sqlRequest(caller, channel, 'gated')
  await started.promise
  const [row] = await db.sql.unsafe(`select state, handed, reply_to from ${db.quoted}.pgrr_request where id = $1`, [id])
  assert.deepStrictEqual({ ...row }, { state: 'claimed', handed: false, reply_to: null }, 'claimed from the queue, no reply channel')
  const reply = awaitReply(caller, id)
  // While the handler runs the awaiter waits on an advisory lock (the request lock), not in pg_sleep.
  await waitFor(async () => {
    const [activity] = await db.sql.unsafe(
      `select wait_event_type, wait_event from pg_stat_activity where application_name = 'sqlwait-awaiter' and state = 'active'`,
    )
    return activity?.wait_event_type === 'Lock' && activity?.wait_event === 'advisory'
  }, { message: 'the awaiter blocks on the request lock' })
  gate.resolve()
  assert.equal(await reply, 'done gated')
})

test('a session squatting on the channel bells and their token: SQL callers are still answered', async (t) => {
  const channel = 'sqlwait.squat'
  await serverFor(t, db, channel, (payload: string) => `echo ${payload}`)
  const caller = postgres(db.options.connectionString, { max: 1, onnotice: () => {} })
  t.after(() => caller.end({ timeout: 1 }))
  // One request first, so that the channel exists; then anyone who can connect may take advisory locks: here
  // both bells of the channel and the token, so that no responder can ring (the holder's ring fails) and
  // awaiters wait on a bell that never rings.
  assert.equal(await awaitReply(caller, await sqlRequest(caller, channel, 'first')), 'echo first')
  const squatter = postgres(db.options.connectionString, { max: 1, onnotice: () => {} })
  t.after(() => squatter.end({ timeout: 1 }))
  const held = await squatter.reserve()
  t.after(() => held.release())
  const [{ n }] = (await held.unsafe(
    `select count(*)::int as n from ${db.quoted}.pgrr_channel c, generate_series(0, 2) k
      where c.name = $1 and pg_try_advisory_lock_shared(${db.quoted}.pgrr_ns_bell(), ${db.quoted}.pgrr_bell_key(c.id, k))`,
    [channel],
  )) as unknown as [{ n: number }]
  assert.ok(n >= 1, 'the squatter holds bells of the channel')
  for (const payload of ['one', 'two', 'three']) {
    const id = await sqlRequest(caller, channel, payload)
    assert.equal(await awaitReply(caller, id), `echo ${payload}`)
  }
  await held.unsafe(`select pg_advisory_unlock_all()`)
  const id = await sqlRequest(caller, channel, 'after')
  assert.equal(await awaitReply(caller, id), 'echo after', 'answered once the squatter is gone')
})

test('twenty SQL callers at once on one responder: every reply reaches its own caller', { timeout: 60_000 }, async (t) => {
  const channel = 'sqlwait.many'
  let running = 0
  let most = 0
  await serverFor(t, db, channel, async (payload: string) => {
    most = Math.max(most, ++running)
    await new Promise((resolve) => setTimeout(resolve, 5))
    running--
    return `for ${payload}`
  }, { concurrency: 20 })
  const callers = Array.from({ length: 20 }, () => postgres(db.options.connectionString, { max: 1, onnotice: () => {} }))
  t.after(() => Promise.all(callers.map((sql) => sql.end({ timeout: 1 }))))
  const replies = await Promise.all(
    callers.map(async (sql, i) => {
      const answers: string[] = []
      for (let round = 0; round < 5; round++) answers.push(await awaitReply(sql, await sqlRequest(sql, channel, `${i}.${round}`)))
      return answers
    }),
  )
  replies.forEach((answers, i) => assert.deepStrictEqual(answers, [0, 1, 2, 3, 4].map((round) => `for ${i}.${round}`)))
  assert.ok(most > 1, `handlers overlapped (${most} at once)`)
  const [left] = await db.sql.unsafe(
    `select count(*)::int as n from ${db.quoted}.pgrr_request q join ${db.quoted}.pgrr_channel c on c.id = q.channel_id where c.name = $1`,
    [channel],
  )
  assert.equal(left!.n, 0, 'await_reply consumed every reply')
})

test('a request made in a transaction waits in the table, and is answered after the commit', async (t) => {
  const channel = 'sqlwait.txn'
  await serverFor(t, db, channel, (payload: string) => `late ${payload}`)
  const caller = postgres(db.options.connectionString, { max: 1, onnotice: () => {} })
  t.after(() => caller.end({ timeout: 1 }))
  const id = await caller.begin(async (tx) => {
    const [row] = await tx.unsafe(`select ${db.quoted}.request($1::text, 'in a transaction'::text)::text as id`, [channel])
    const [stored] = await tx.unsafe(`select state, handed from ${db.quoted}.pgrr_request where id = $1`, [row!.id])
    assert.deepStrictEqual({ ...stored }, { state: 'pending', handed: false })
    return String(row!.id)
  })
  assert.equal(await awaitReply(caller, id), 'late in a transaction')
})

test('a ring in a transaction that rolls back leaves the bells as they were once the next ring commits', async (t) => {
  const s = db.quoted
  // A responder session of its own, driven by hand: the settings and the session locks are its own.
  const responderSql = postgres(db.options.connectionString, { max: 1, onnotice: () => {} })
  t.after(() => responderSql.end({ timeout: 1 }))
  const session = await responderSql.reserve()
  t.after(() => session.release())
  const [reg] = await session.unsafe(`select responder_id, channel_id from ${s}.pgrr_register('sqlwait.rollback', 'h', 1, 1)`)
  const [responderId, channelId] = [Number(reg!.responder_id), Number(reg!.channel_id)]
  // Which of the channel's two bells some session holds, seen from another session.
  const held = async () =>
    (
      await db.sql.unsafe(
        `select k from generate_series(0, 1) k where not ${s}.pgrr_lock_is_free(${s}.pgrr_ns_bell(), ${s}.pgrr_bell_key($1, k))`,
        [channelId],
      )
    ).map((row) => Number(row.k))
  assert.deepEqual(await held(), [])
  await session.unsafe(`select ${s}.pgrr_ring($1, $2)`, [responderId, channelId])
  assert.deepEqual(await held(), [0], 'the first ring makes the session the holder of bell 0')
  await session.unsafe('begin')
  await session.unsafe(`select ${s}.pgrr_ring($1, $2)`, [responderId, channelId])
  await session.unsafe('rollback')
  // The session lock taken by the ring stays, and so does the release of the other one (session locks are
  // not transactional); the setting that says which bell is current was rolled back.
  assert.deepEqual(await held(), [1])
  await session.unsafe(`select ${s}.pgrr_ring($1, $2)`, [responderId, channelId])
  assert.deepEqual(await held(), [1], 'the ring found the setting stale and gave the extra hold back')
  await session.unsafe(`select ${s}.pgrr_ring($1, $2)`, [responderId, channelId])
  assert.deepEqual(await held(), [0], 'and the next ring moves on by one')
})
