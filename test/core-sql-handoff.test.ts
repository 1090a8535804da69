/**
 * SQL callers and the handoff. request() hands a request to a live responder as a TypeScript client's
 * requests are (see pgrr_send_one); the awaiter, who has no request lock to block on, blocks on the
 * responder's reply bell, released by the commit of the responder's next reply to an SQL caller. What must
 * hold: the awaiter really blocks on a lock (it does not poll), wakes when the reply commits, and still
 * gets every reply when a hostile session squats on the bells (then at its wait's timeout), or when many
 * awaiters share one responder.
 */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import postgres from 'postgres'
import { deferred, serverFor, useTestSchema, waitFor } from './helpers.ts'

const db = useTestSchema('core_sql_handoff')

/** Runs request() once on a channel nobody serves (PR001): the session has request() loaded afterwards. */
async function warmUp(sql: postgres.Sql): Promise<void> {
  await assert.rejects(sql.unsafe(`select ${db.quoted}.request($1::text, $2::text)`, ['sqlhand.nobody', 'x']), { code: 'PR001' })
}

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
  // request() hands over only from a transaction that began just before it (see pgrr_send_one), and a new
  // session's first call spends its first milliseconds loading catalogs between the two: one refused call
  // first, so that the timing of a loaded machine cannot decide what this test sees.
  await warmUp(caller)
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

test('a request made in a transaction that was already under way waits in the table, and is answered after the commit', async (t) => {
  const channel = 'sqlhand.txn'
  await serverFor(t, db, channel, (payload: string) => `late ${payload}`)
  const caller = postgres(db.options.connectionString, { max: 1, onnotice: () => {} })
  t.after(() => caller.end({ timeout: 1 }))
  // Its NOTIFY would go out only at the commit, when the responder picked now may be gone: not handed over.
  const id = await caller.begin(async (tx) => {
    await tx.unsafe(`select pg_sleep(0.05)`)
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
