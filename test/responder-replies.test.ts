// One reply statement for every channel a process serves (sql/protocol/09_reply.sql, src/responder/replies.ts):
// pgrr_reply on one registration's session writes the TypeScript callers' outcomes of the other
// registrations of the same login and process, and their SQL callers' when they registered on the same
// session (as a client's registrations do), gives back those of a registration on another session (which
// holds what their awaiters wait on), and touches nothing of another process's. A client serving two channels answers TypeScript and SQL callers
// of both when their handlers end together; when the session they share dies mid-statement, the requests of
// both are lost, never hung, and both answer again; when the database refuses the statement, the other
// registration's outcome is written, and the refused one's registration alone is released.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { ResponderLostError, type Server } from '../src/index.ts'
import { clientFor, collectErrors, deferred, ownSession, registerOn, useTestSchema, waitFor } from './helpers.ts'

const db = useTestSchema('replies')

/** An SQL array of `type` from parameter `n`, a JSON array. */
function array(type: string, n: number): string {
  return `array(select jsonb_array_elements_text($${n}::text::jsonb))::${type}[]`
}

test('pgrr_reply writes the TypeScript callers\' outcomes of its process\'s other registrations, gives back their SQL callers\', and leaves another process\'s', { timeout: 30_000 }, async (t) => {
  const s = db.quoted
  const [writer, sibling, stranger] = [await ownSession(t, 'writer'), await ownSession(t, 'sibling'), await ownSession(t, 'stranger')]
  const a = await registerOn(db, writer, 'replies.sql.a', 'host-1', 7)
  const b = await registerOn(db, sibling, 'replies.sql.b', 'host-1', 7)
  const c = await registerOn(db, stranger, 'replies.sql.c', 'host-1', 8)
  // Another registration of the process, on a channel whose replies may be 10 bytes at most.
  await db.sql.unsafe(`select * from ${s}.pgrr_configure_channel('replies.sql.d', 10, 1)`)
  const d = await registerOn(db, await ownSession(t, 'small-limit'), 'replies.sql.d', 'host-1', 7)
  const replyChannel = `pgrr_test_replies_${process.pid}`
  const heard: string[] = []
  const listening = await db.sql.listen(replyChannel, (payload) => heard.push(payload))
  t.after(() => listening.unlisten())
  // Requests as the send leaves them: handed (claimed) to a responder; a TypeScript caller's with its reply channel.
  const rows = [
    { name: 'own', responder: a, replyTo: replyChannel, state: 'claimed' },
    { name: 'sibling', responder: b, replyTo: replyChannel, state: 'claimed' },
    { name: 'siblingSql', responder: b, replyTo: null, state: 'claimed' },
    { name: 'siblingCancelled', responder: b, replyTo: replyChannel, state: 'cancelled' },
    { name: 'stranger', responder: c, replyTo: replyChannel, state: 'claimed' },
    { name: 'smallLimit', responder: d, replyTo: replyChannel, state: 'claimed' },
  ]
  const ids = new Map<string, string>()
  for (const row of rows) {
    const [inserted] = await db.sql.unsafe<{ id: string }[]>(
      `insert into ${s}.pgrr_request (id, channel_id, payload, reply_to, deadline, state, responder_id, claimed_at, attempt, handed)
       values (${s}.pgrr_random_id(), $1, 'x', $2, clock_timestamp() + interval '30 s', $3, $4, clock_timestamp(), 1, true)
       returning id::text`,
      [row.responder.channelId, row.replyTo, row.state, row.responder.responder],
    )
    ids.set(row.name, inserted!.id)
  }
  const [result] = await writer.unsafe<{ notified: number; late: string[]; elsewhere: string[] }[]>(
    `select notified, late::text[] as late, elsewhere::text[] as elsewhere
       from ${s}.pgrr_reply($1, ${array('bigint', 2)}, ${array('bool', 3)}, ${array('text', 4)}, ${array('bool', 3)},
                            ${array('text', 5)}, null, ${array('int', 6)})`,
    [a.responder, ...[rows.map((row) => ids.get(row.name)), rows.map(() => false), rows.map((row) => `reply to ${row.name}`),
      rows.map(() => null), rows.map((row) => row.responder.responder)].map((values) => JSON.stringify(values))],
  )
  assert.deepEqual(result!.elsewhere, [ids.get('siblingSql')], 'the SQL caller\'s outcome is left for its own responder\'s session')
  assert.deepEqual(result!.late, [])
  const states = async () => Object.fromEntries(
    await Promise.all(rows.map(async (row) => {
      const [found] = await db.sql.unsafe<{ state: string; reply: string | null }[]>(
        `select state, coalesce(reply, error_code) as reply from ${s}.pgrr_request where id = $1`, [ids.get(row.name)!],
      )
      return [row.name, found === undefined ? 'deleted' : `${found.state}:${found.reply ?? ''}`]
    })),
  )
  assert.deepEqual(await states(), {
    own: 'replied:reply to own',
    sibling: 'replied:reply to sibling',
    siblingSql: 'claimed:',
    siblingCancelled: 'deleted',
    stranger: 'claimed:',
    smallLimit: 'failed:INVALID_REPLY',
  })
  await waitFor(() => heard.some((payload) => payload.includes(ids.get('sibling')!)), { message: 'the sibling\'s caller is NOTIFYed its reply' })
  // The sibling's own session writes what was given back; the stranger's outcome is its own to write.
  await sibling.unsafe(`select ${s}.pgrr_reply($1, $2::bigint[], '{f}', '{late write}', '{f}', '{NULL}')`, [b.responder, [ids.get('siblingSql')!]])
  await stranger.unsafe(`select ${s}.pgrr_reply($1, $2::bigint[], '{f}', '{its own}', '{f}', '{NULL}')`, [c.responder, [ids.get('stranger')!]])
  const after = await states()
  assert.equal(after.siblingSql, 'replied:late write')
  assert.equal(after.stranger, 'replied:its own')
})

test('pgrr_reply writes the SQL callers\' outcomes of a registration on its own session: the sibling\'s bell rings, its request lock goes', { timeout: 30_000 }, async (t) => {
  const s = db.quoted
  const writer = await ownSession(t, 'shared')
  const a = await registerOn(db, writer, 'replies.shared.a', 'host-2', 9)
  const b = await registerOn(db, writer, 'replies.shared.b', 'host-2', 9)
  // Two requests of SQL callers held by b: one handed over (its awaiter waits on b's reply bell of its lane),
  // one claimed (its awaiter waits on its request lock, which the claim took on this session).
  const held: Record<'handed' | 'claimed', string> = { handed: '', claimed: '' }
  for (const kind of ['handed', 'claimed'] as const) {
    const [row] = await db.sql.unsafe<{ id: string }[]>(
      `insert into ${s}.pgrr_request (id, channel_id, payload, deadline, state, responder_id, claimed_at, attempt, handed)
       values (${s}.pgrr_random_id(), $1, 'x', clock_timestamp() + interval '30 s', 'claimed', $2, clock_timestamp(), 1, $3)
       returning id::text`,
      [b.channelId, b.responder, kind === 'handed'],
    )
    held[kind] = row!.id
  }
  // Which of b's reply bells of the handed request's lane the session holds (0 to 3): the reply moves it on.
  const [{ pid }] = await writer.unsafe<{ pid: number }[]>('select pg_backend_pid() as pid') as unknown as [{ pid: number }]
  const [{ lane }] = await db.sql.unsafe<{ lane: number }[]>(
    `select ${s}.pgrr_reply_lane(seq) as lane from ${s}.pgrr_request where id = $1::bigint`, [held.handed],
  ) as unknown as [{ lane: number }]
  const bells = async () => (await db.sql.unsafe<{ k: number }[]>(
    `select k from generate_series(0, 3) k
      where exists (select 1 from pg_locks l where l.locktype = 'advisory' and l.pid = $1 and l.granted and l.objsubid = 2
                      and l.classid = ${s}.pgrr_ns_reply_bell()::oid and l.objid = ${s}.pgrr_reply_bell_key($2, $3, k)::oid)
      order by k`,
    [pid, b.responder, lane],
  )).map((row) => row.k)
  const before = await bells()
  assert.equal(before.length, 1)
  const [locked] = await writer.unsafe<{ ok: boolean }[]>(`select ${s}.pgrr_hold_request_lock($1::bigint) as ok`, [held.claimed])
  assert.equal(locked!.ok, true)
  const awaitReply = async (kind: 'handed' | 'claimed') => {
    const caller = await ownSession(t, `caller-${kind}`)
    const [row] = await caller.unsafe<{ reply: string }[]>(`select ${s}.await_reply($1::bigint, interval '20 s') as reply`, [held[kind]])
    return row!.reply
  }
  // The claimed request's awaiter waits on its request lock. (The handed one's comes after the reply: an
  // awaiter looking at the bells while the reply rings could make it skip the ring, see pgrr_ring_reply.)
  const claimedReply = awaitReply('claimed')
  claimedReply.catch(() => {})
  await waitFor(async () => {
    const [row] = await db.sql.unsafe<{ n: number }[]>(
      `select count(*)::int as n from pg_stat_activity where application_name = 'pgrr-test-caller-claimed' and wait_event_type = 'Lock'`,
    )
    return row!.n === 1
  }, { message: 'the awaiter blocks' })
  const [result] = await writer.unsafe<{ elsewhere: string[] }[]>(
    `select elsewhere::text[] as elsewhere from ${s}.pgrr_reply($1, $2::bigint[], '{f,f}', '{handed reply,claimed reply}', '{f,f}', '{NULL,NULL}', null, $3::int[])`,
    [a.responder, [held.handed, held.claimed], [b.responder, b.responder]],
  )
  assert.deepEqual(result!.elsewhere, [], 'nothing left for another statement')
  assert.deepEqual(await bells(), [(before[0]! + 1) % 4], 'b\'s bell of the lane rang')
  assert.equal(await claimedReply, 'claimed reply')
  assert.equal(await awaitReply('handed'), 'handed reply')
  const [lock] = await db.sql.unsafe<{ held: boolean }[]>(
    `select exists (select 1 from pg_locks l where l.locktype = 'advisory' and l.objsubid = 2
                      and l.classid = ${s}.pgrr_ns_request()::oid and l.objid = ${s}.pgrr_request_key($1::bigint)::oid) as held`,
    [held.claimed],
  )
  assert.equal(lock!.held, false, 'the claimed request\'s lock is given back')
})

test('a batch refused after it gave back a sibling\'s request lock: the next statement still writes that outcome', { timeout: 30_000 }, async (t) => {
  const s = db.quoted
  const writer = await ownSession(t, 'refused-batch')
  const a = await registerOn(db, writer, 'replies.refused.a', 'host-3', 9)
  const b = await registerOn(db, writer, 'replies.refused.b', 'host-3', 9)
  const insert = async (responder: { responder: number; channelId: number }, replyTo: string | null, handed: boolean) => {
    const [row] = await db.sql.unsafe<{ id: string }[]>(
      `insert into ${s}.pgrr_request (id, channel_id, payload, reply_to, deadline, state, responder_id, claimed_at, attempt, handed)
       values (${s}.pgrr_random_id(), $1, 'x', $2, clock_timestamp() + interval '30 s', 'claimed', $3, clock_timestamp(), 1, $4)
       returning id::text`,
      [responder.channelId, replyTo, responder.responder, handed],
    )
    return row!.id
  }
  // b's claimed SQL request, its request lock held by the session as a claim leaves it; a's request of a
  // TypeScript caller, whose reply an AFTER trigger refuses (at the end of the statement: after every lock
  // of the statement was moved).
  const sqlId = await insert(b, null, false)
  const tsId = await insert(a, `pgrr_test_refused_${process.pid}`, true)
  await writer.unsafe(`select ${s}.pgrr_hold_request_lock($1::bigint)`, [sqlId])
  await db.sql.unsafe(`create function ${s}.replies_refuse() returns trigger language plpgsql as $$
    begin
      if new.reply = 'refuse' then raise exception 'reply refused by the test'; end if;
      return new;
    end $$`)
  t.after(() => db.sql.unsafe(`drop function if exists ${s}.replies_refuse() cascade`))
  await db.sql.unsafe(`create trigger replies_refuse after update on ${s}.pgrr_request for each row execute function ${s}.replies_refuse()`)
  await assert.rejects(
    writer.unsafe(`select ${s}.pgrr_reply($1, $2::bigint[], '{f,f}', '{sql reply,refuse}', '{f,f}', '{NULL,NULL}', null, $3::int[])`,
      [a.responder, [sqlId, tsId], [b.responder, a.responder]]),
    /reply refused by the test/,
  )
  // The lock was given back and the rollback did not take it again; b's own statement writes the outcome.
  await writer.unsafe(`select ${s}.pgrr_reply($1, $2::bigint[], '{f}', '{sql reply}', '{f}', '{NULL}')`, [b.responder, [sqlId]])
  const [row] = await db.sql.unsafe<{ state: string; reply: string }[]>(`select state, reply from ${s}.pgrr_request where id = $1::bigint`, [sqlId])
  assert.deepEqual({ ...row }, { state: 'replied', reply: 'sql reply' })
  const caller = await ownSession(t, 'refused-batch-caller')
  const [answer] = await caller.unsafe<{ reply: string }[]>(`select ${s}.await_reply($1::bigint, interval '20 s') as reply`, [sqlId])
  assert.equal(answer!.reply, 'sql reply')
})

test('a process serving two channels answers the TypeScript and SQL callers of both when their handlers end together', { timeout: 60_000 }, async (t) => {
  const host = await clientFor(t, db)
  const gate = deferred()
  const started = { count: 0, all: deferred() }
  const channels = ['replies.pair.a', 'replies.pair.b']
  for (const channel of channels) {
    await host.serve(channel, async (payload: string) => {
      if (++started.count === 8) started.all.resolve()
      await gate.promise
      return `${channel}:${payload}`
    }, { concurrency: 8 })
  }
  const client = await clientFor(t, db)
  const calls: Promise<string>[] = []
  for (const channel of channels) {
    for (const tag of ['ts1', 'ts2']) calls.push(client.request<string>(channel, tag, { timeoutMs: 20_000 }).then((reply) => `${channel} ${tag} -> ${reply}`))
    for (const tag of ['sql1', 'sql2']) {
      calls.push(
        db.sql.unsafe<{ id: string }[]>(`select ${db.quoted}.request($1, $2::text, '20 s')::text as id`, [channel, tag])
          .then(([sent]) => db.sql.unsafe<{ reply: string }[]>(`select ${db.quoted}.await_reply($1::bigint) as reply`, [sent!.id]))
          .then(([row]) => `${channel} ${tag} -> ${row!.reply}`),
      )
    }
  }
  await started.all.promise
  gate.resolve()
  const replies = await Promise.all(calls)
  assert.deepEqual(replies.sort(), channels.flatMap((channel) => ['sql1', 'sql2', 'ts1', 'ts2'].map((tag) => `${channel} ${tag} -> ${channel}:${tag}`)).sort())
})

test('the session writing two registrations\' outcomes dies mid-statement: the requests of both are lost, never hung, and both channels answer again', { timeout: 60_000 }, async (t) => {
  const s = db.quoted
  const host = await clientFor(t, db, { checkIntervalMs: 200 })
  const gate = deferred()
  const started = { count: 0, all: deferred() }
  const servers: Server[] = []
  for (const channel of ['replies.loss.a', 'replies.loss.b']) {
    servers.push(await host.serve(channel, async (payload: string) => {
      if (++started.count === 3) started.all.resolve()
      await gate.promise
      return `${channel}:${payload}`
    }, { concurrency: 4, sweepIntervalMs: 200 }))
  }
  const client = await clientFor(t, db, { checkIntervalMs: 200 })
  // Two outcomes for a, one for b, written by one statement on the session both are registered on.
  const forA = ['a1', 'a2'].map((tag) => client.request<string>('replies.loss.a', tag, { timeoutMs: 20_000 }))
  const forB = client.request<string>('replies.loss.b', 'b1', { timeoutMs: 20_000 })
  await started.all.promise
  // b's request row locked by another transaction: the statement that writes it waits there.
  const blocker = await ownSession(t, 'blocker')
  await blocker.unsafe('begin')
  await blocker.unsafe(
    `select 1 from ${s}.pgrr_request q join ${s}.pgrr_channel c on c.id = q.channel_id where c.name = 'replies.loss.b' for update of q`,
  )
  const [writer] = await db.sql.unsafe<{ pid: number }[]>(`select backend_pid as pid from ${s}.pgrr_responder where id = $1`, [servers[0]!.responderId!])
  const old = servers.map((server) => server.responderId)
  gate.resolve()
  await waitFor(async () => (await db.sql`select 1 from pg_stat_activity where pid = ${writer!.pid} and wait_event_type = 'Lock'`).length === 1, {
    message: 'the session waits on b\'s request row, in the statement writing both',
  })
  await db.sql`select pg_terminate_backend(${writer!.pid})`
  await blocker.unsafe('commit')
  // The requests were held by the session that died: lost (their outcomes went with it), never hung.
  const errors = await collectErrors([...forA, forB])
  assert.equal(errors.length, 3)
  for (const error of errors) assert.ok(error instanceof ResponderLostError, `lost with their responder: ${String(error)}`)
  await waitFor(() => servers.every((server, i) => server.state === 'running' && server.responderId !== old[i]) || undefined, {
    message: 'both registered again',
  })
  assert.deepEqual(await Promise.all([client.request('replies.loss.a', 'again'), client.request('replies.loss.b', 'again')]),
    ['replies.loss.a:again', 'replies.loss.b:again'])
})

test('the database refuses the statement writing two registrations\' outcomes: the other registration\'s is written, the refused one\'s request is lost', { timeout: 60_000 }, async (t) => {
  const s = db.quoted
  // A reply the database refuses, whoever writes it.
  await db.sql.unsafe(`create function ${s}.test_refuse_reply() returns trigger language plpgsql as $$ begin raise exception 'refused reply'; end $$`)
  await db.sql.unsafe(`create trigger test_refuse_reply before update on ${s}.pgrr_request for each row when (new.reply = 'refuse me') execute function ${s}.test_refuse_reply()`)
  t.after(() => db.sql.unsafe(`drop function ${s}.test_refuse_reply() cascade`))
  const host = await clientFor(t, db, { checkIntervalMs: 200 })
  const gate = deferred()
  const started = { count: 0, all: deferred() }
  const servers: Server[] = []
  for (const channel of ['replies.refused.a', 'replies.refused.b']) {
    servers.push(await host.serve(channel, async (payload: string) => {
      if (++started.count === 2) started.all.resolve()
      await gate.promise
      return payload
    }, { sweepIntervalMs: 200 }))
  }
  const old = servers.map((server) => server.responderId)
  const client = await clientFor(t, db, { checkIntervalMs: 200 })
  const refused = client.request<string>('replies.refused.a', 'refuse me', { timeoutMs: 20_000 })
  const fine = client.request<string>('replies.refused.b', 'fine', { timeoutMs: 20_000 })
  await started.all.promise
  gate.resolve()
  assert.equal(await fine, 'fine')
  const [error] = await collectErrors([refused])
  assert.ok(error instanceof ResponderLostError, `the refused reply's request is lost with the registration that held it: ${String(error)}`)
  // The refused one's registration alone was released and made again; the other's went on.
  await waitFor(() => (servers[0]!.state === 'running' && servers[0]!.responderId !== old[0]) || undefined, { message: 'a registered again' })
  assert.equal(servers[1]!.responderId, old[1])
  assert.equal(await client.request('replies.refused.a', 'again'), 'again')
})
