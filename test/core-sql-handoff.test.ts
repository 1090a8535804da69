/**
 * SQL callers and the handoff. request() hands a request to a live responder as a TypeScript client's
 * requests are, but its NOTIFY goes out at the commit of the caller's transaction, once the responder and the
 * deadline have been checked again (pgrr_handoff_at_commit); the awaiter, who has no request lock to block
 * on, blocks on the responder's reply bell, released by the commit of the responder's next reply to an SQL
 * caller. A request too large for a NOTIFY waits in the queue: its awaiter blocks on the channel's claim bell,
 * then on the request lock. What must hold: the awaiter really blocks on a lock (it does not poll), wakes
 * when the reply commits, and still gets every reply when a hostile session squats on the bells, or when
 * many awaiters share one responder; a handoff never reaches a responder before the commit, nor one gone by
 * then, nor at all once the transaction that made it cancelled it.
 */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import postgres from 'postgres'
import { deferred, overhearInbox, serverFor, useTestSchema, waitFor } from './helpers.ts'

const db = useTestSchema('core_sql_handoff')

async function sqlRequest(sql: postgres.Sql, channel: string, payload: string): Promise<string> {
  const [row] = await sql.unsafe(`select ${db.quoted}.request($1::text, $2::text)::text as id`, [channel, payload])
  return String(row!.id)
}

async function awaitReply(sql: postgres.Sql, id: string, timeout = '20 s'): Promise<string> {
  const [row] = await sql.unsafe(`select ${db.quoted}.await_reply($1::bigint, $2::interval) as reply`, [id, timeout])
  return row!.reply as string
}

test('an SQL request is handed over; await_reply blocks on the reply bell and wakes at the reply', async (t) => {
  const channel = 'sqlhand.basic'
  const gate = deferred()
  const started = deferred()
  await serverFor(t, db, channel, async (payload: string) => {
    started.resolve()
    await gate.promise
    return `done ${payload}`
  })
  const caller = postgres(db.options.connectionString, { max: 1, onnotice: () => {}, connection: { application_name: 'sqlhand-awaiter' } })
  t.after(() => caller.end({ timeout: 1 }))
  const id = await sqlRequest(caller, channel, 'gated')
  const [row] = await db.sql.unsafe(`select state, handed, reply_to from ${db.quoted}.pgrr_request where id = $1`, [id])
  assert.deepStrictEqual({ ...row }, { state: 'claimed', handed: true, reply_to: null }, 'handed to the responder, no reply channel')
  await started.promise
  const reply = awaitReply(caller, id)
  // While the handler runs the awaiter waits on an advisory lock (the bell), not in pg_sleep.
  await waitFor(async () => {
    const [activity] = await db.sql.unsafe(
      `select wait_event_type, wait_event from pg_stat_activity where application_name = 'sqlhand-awaiter' and state = 'active'`,
    )
    return activity?.wait_event_type === 'Lock' && activity?.wait_event === 'advisory'
  }, { message: 'the awaiter blocks on the reply bell' })
  gate.resolve()
  assert.equal(await reply, 'done gated')
})

test('a session squatting on every reply bell of the responder: SQL callers are still answered', async (t) => {
  const channel = 'sqlhand.squat'
  const server = await serverFor(t, db, channel, (payload: string) => `echo ${payload}`)
  // Anyone who can connect may take advisory locks: here, in every lane, the three of the responder's four
  // bells that it does not hold, so that it can never ring and awaiters cannot tell which bell is current.
  const squatter = postgres(db.options.connectionString, { max: 1, onnotice: () => {} })
  t.after(() => squatter.end({ timeout: 1 }))
  const held = await squatter.reserve()
  t.after(() => held.release())
  const taken = await held.unsafe(
    `select lane, k from generate_series(0, 15) lane, generate_series(0, 3) k
      where pg_try_advisory_lock_shared(${db.quoted}.pgrr_ns_reply_bell(), ${db.quoted}.pgrr_reply_bell_key($1, lane, k))`,
    [server.responderId!],
  )
  assert.equal(taken.length, 16 * 3, 'the squatter holds every bell but the current one of each lane')
  const caller = postgres(db.options.connectionString, { max: 1, onnotice: () => {} })
  t.after(() => caller.end({ timeout: 1 }))
  for (const payload of ['one', 'two', 'three']) {
    const id = await sqlRequest(caller, channel, payload)
    assert.equal(await awaitReply(caller, id), `echo ${payload}`)
  }
  await held.unsafe(`select pg_advisory_unlock_all()`)
  const id = await sqlRequest(caller, channel, 'after')
  assert.equal(await awaitReply(caller, id), 'echo after', 'answered once the squatter is gone')
})

test('twenty SQL callers at once on one responder: every reply reaches its own caller', { timeout: 60_000 }, async (t) => {
  const channel = 'sqlhand.many'
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

test('a request too large for a NOTIFY waits in the queue; await_reply blocks on its request lock and wakes at the reply', async (t) => {
  const channel = 'sqlhand.queued'
  const gate = deferred()
  const started = deferred()
  await serverFor(t, db, channel, async (payload: string) => {
    started.resolve()
    await gate.promise
    return `done ${payload}`
  })
  const caller = postgres(db.options.connectionString, { max: 1, onnotice: () => {}, connection: { application_name: 'sqlhand-queued-awaiter' } })
  t.after(() => caller.end({ timeout: 1 }))
  const id = await sqlRequest(caller, channel, `gated${'.'.repeat(9000)}`)
  await started.promise
  const [row] = await db.sql.unsafe(`select state, handed, reply_to from ${db.quoted}.pgrr_request where id = $1`, [id])
  assert.deepStrictEqual({ ...row }, { state: 'claimed', handed: false, reply_to: null }, 'claimed from the queue, no reply channel')
  const reply = awaitReply(caller, id)
  // While the handler runs the awaiter waits on an advisory lock (the request lock), not in pg_sleep.
  await waitFor(async () => {
    const [activity] = await db.sql.unsafe(
      `select wait_event_type, wait_event from pg_stat_activity where application_name = 'sqlhand-queued-awaiter' and state = 'active'`,
    )
    return activity?.wait_event_type === 'Lock' && activity?.wait_event === 'advisory'
  }, { message: 'the awaiter blocks on the request lock' })
  gate.resolve()
  assert.equal(await reply, `done gated${'.'.repeat(9000)}`)
})

test('a session squatting on the channel bells and their token: SQL callers are still answered', async (t) => {
  const channel = 'sqlhand.claimsquat'
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
  // Too large for a NOTIFY: queued, so that their awaiters wait for a claim.
  for (const payload of ['one', 'two', 'three'].map((word) => word.padEnd(9000, '.'))) {
    const id = await sqlRequest(caller, channel, payload)
    assert.equal(await awaitReply(caller, id), `echo ${payload}`)
  }
  await held.unsafe(`select pg_advisory_unlock_all()`)
  const id = await sqlRequest(caller, channel, 'after')
  assert.equal(await awaitReply(caller, id), 'echo after', 'answered once the squatter is gone')
})

test('a request made in a transaction is handed over at its commit, and not before', async (t) => {
  const channel = 'sqlhand.txn'
  const s = db.quoted
  const server = await serverFor(t, db, channel, (payload: string) => `late ${payload}`)
  const { heard, sync } = await overhearInbox(t, db, server.responderId!)
  const caller = postgres(db.options.connectionString, { max: 1, onnotice: () => {} })
  t.after(() => caller.end({ timeout: 1 }))
  const id = await caller.begin(async (tx) => {
    const [row] = await tx.unsafe(`select ${s}.request($1::text, 'in a transaction'::text)::text as id`, [channel])
    const [stored] = await tx.unsafe(`select state, handed, responder_id from ${s}.pgrr_request where id = $1`, [row!.id])
    assert.deepStrictEqual({ ...stored }, { state: 'claimed', handed: true, responder_id: server.responderId })
    await sync()
    assert.deepStrictEqual(heard, [], 'nothing reached the responder before the commit')
    return String(row!.id)
  })
  assert.equal(await awaitReply(caller, id), 'late in a transaction')
  await sync()
  assert.equal(heard.length, 1, 'one handoff, at the commit')
  assert.equal(JSON.parse(heard[0]!)[0][0], id)
})

test('a request cancelled in the transaction that made it is not handed over at its commit', async (t) => {
  const channel = 'sqlhand.cancelled'
  const s = db.quoted
  const server = await serverFor(t, db, channel, (payload: string) => `ran ${payload}`)
  const { heard, sync } = await overhearInbox(t, db, server.responderId!)
  const caller = postgres(db.options.connectionString, { max: 1, onnotice: () => {} })
  t.after(() => caller.end({ timeout: 1 }))
  const id = await caller.begin(async (tx) => {
    const [row] = await tx.unsafe(`select ${s}.request($1::text, 'given up'::text)::text as id`, [channel])
    await tx.unsafe(`select ${s}.pgrr_cancel(array[$1::bigint])`, [row!.id])
    return String(row!.id)
  })
  // Synced after the caller's commit: a handoff of that commit would have arrived before the marker.
  await sync()
  assert.deepStrictEqual(heard, [], 'no handoff at the commit')
  const [stored] = await db.sql.unsafe(`select state from ${s}.pgrr_request where id = $1`, [id])
  assert.equal(stored?.state, 'cancelled')
  await assert.rejects(caller.unsafe(`select ${s}.await_reply($1::bigint)`, [id]), { code: 'PR009' })
})

test('the responder a request was handed to is gone by the commit: the request goes to the queue, another answers it', async (t) => {
  const channel = 'sqlhand.gone'
  const s = db.quoted
  // The only live responder, a raw session that the test ends while the caller's transaction is open.
  const doomedSql = postgres(db.options.connectionString, { max: 1, onnotice: () => {} })
  t.after(() => doomedSql.end({ timeout: 1 }))
  const doomed = await doomedSql.reserve()
  const [registered] = await doomed.unsafe(`select responder_id from ${s}.pgrr_register($1, 'doomed', 0, 1)`, [channel])
  const caller = postgres(db.options.connectionString, { max: 1, onnotice: () => {} })
  t.after(() => caller.end({ timeout: 1 }))
  const id = await caller.begin(async (tx) => {
    const [row] = await tx.unsafe(`select ${s}.request($1::text, 'orphan'::text)::text as id`, [channel])
    const [stored] = await tx.unsafe(`select responder_id from ${s}.pgrr_request where id = $1`, [row!.id])
    assert.equal(stored!.responder_id, registered!.responder_id, 'handed to the responder that is about to go')
    await doomed.unsafe('select pg_terminate_backend(pg_backend_pid())').catch(() => undefined)
    await waitFor(async () => (await db.sql.unsafe(`select 1 from ${s}.pgrr_live_responder where id = $1`, [registered!.responder_id])).length === 0, {
      message: 'the doomed responder is no longer live',
    })
    // A responder that takes the queue arrives meanwhile.
    await serverFor(t, db, channel, (payload: string) => `rescued ${payload}`)
    return String(row!.id)
  })
  const [stored] = await db.sql.unsafe(`select state from ${s}.pgrr_request where id = $1`, [id])
  assert.notEqual(stored?.state, 'lost')
  assert.equal(await awaitReply(caller, id), 'rescued orphan', 'answered once, by the responder that remained')
})

test('a reply bell rung in a transaction that rolls back: the bells are as they were once the next ring commits', async (t) => {
  const s = db.quoted
  // A responder session of its own, driven by hand: the settings and the session locks are its own.
  const responderSql = postgres(db.options.connectionString, { max: 1, onnotice: () => {} })
  t.after(() => responderSql.end({ timeout: 1 }))
  const session = await responderSql.reserve()
  t.after(() => session.release())
  const [reg] = await session.unsafe(`select responder_id from ${s}.pgrr_register('sqlhand.rollback', 'h', 1, 1)`)
  const responderId = Number(reg!.responder_id)
  // Which of lane 0's four bells some session holds, seen from another session.
  const held = async () =>
    (
      await db.sql.unsafe(
        `select k from generate_series(0, 3) k where not ${s}.pgrr_lock_is_free_now(${s}.pgrr_ns_reply_bell(), ${s}.pgrr_reply_bell_key($1, 0, k))`,
        [responderId],
      )
    ).map((row) => Number(row.k))
  assert.deepEqual(await held(), [0])
  await session.unsafe('begin')
  await session.unsafe(`select ${s}.pgrr_ring_reply($1, 0)`, [responderId])
  await session.unsafe('rollback')
  // The session lock taken by the ring stays; the setting that says which bell is current was rolled back.
  assert.deepEqual(await held(), [1])
  await session.unsafe(`select ${s}.pgrr_ring_reply($1, 0)`, [responderId])
  assert.deepEqual(await held(), [1], 'the ring found the setting stale and gave the extra hold back')
  await session.unsafe(`select ${s}.pgrr_ring_reply($1, 0)`, [responderId])
  assert.deepEqual(await held(), [2], 'and the next ring moves on by one')
})

test('a claim bell rung in a transaction that rolls back: the bells are as they were once the next ring commits', async (t) => {
  const s = db.quoted
  // A responder session of its own, driven by hand: the settings and the session locks are its own.
  const responderSql = postgres(db.options.connectionString, { max: 1, onnotice: () => {} })
  t.after(() => responderSql.end({ timeout: 1 }))
  const session = await responderSql.reserve()
  t.after(() => session.release())
  const [reg] = await session.unsafe(`select responder_id, channel_id from ${s}.pgrr_register('sqlhand.claimrollback', 'h', 1, 1)`)
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
