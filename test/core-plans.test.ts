// Plans: what the planner makes of the protocol's statements, read from auto_explain (loaded in one session
// of the test, with its plans sent to that session as notices) and from the function-call counts of a
// session that counts them. Each test reproduces a way it used to go wrong without any error: only the time
// it took showed it.
import assert from 'node:assert/strict'
import { test, type TestContext } from 'node:test'
import postgres from 'postgres'
import { databaseUrl, serverFor, useTestSchema } from './helpers.ts'

const db = useTestSchema('plans')

/**
 * `count` sessions with auto_explain loaded, every statement's plan (nested ones included) sent to them as
 * a notice, plus `settings`; ended with the test. Null when auto_explain cannot be loaded here (the test
 * is then skipped). `plans()` gives the plans received so far, `clear()` forgets them.
 */
async function explainingSessions(t: TestContext, count: number, settings = '') {
  const notices: string[] = []
  const sql = postgres(databaseUrl(), { max: count, onnotice: (notice) => notices.push(String(notice.message)) })
  const sessions: postgres.ReservedSql[] = []
  t.after(async () => {
    for (const session of sessions) session.release()
    await sql.end({ timeout: 5 })
  })
  for (let i = 0; i < count; i++) {
    const session = await sql.reserve()
    sessions.push(session)
    try {
      await session.unsafe(`load 'auto_explain'`)
    } catch (error) {
      t.skip(`auto_explain cannot be loaded here: ${(error as Error).message}`)
      return null
    }
    await session.unsafe(`set auto_explain.log_min_duration = 0; set auto_explain.log_nested_statements = on;
                          set auto_explain.log_level = notice; ${settings}`)
  }
  return {
    sessions,
    plans: () => notices.filter((message) => message.includes('plan:')),
    clear: () => void notices.splice(0),
  }
}

test('no statement of the protocol is compiled by JIT, the branches a generic plan keeps for nothing included', { timeout: 60_000 }, async (t) => {
  // A live responder, so that the sends below hand their requests over and the replies have rows to write.
  await serverFor(t, db, 'plans.echo', (payload: string) => payload)
  // JIT as a default server has it (on, plans costed over 100,000 compiled), whatever this one is set to.
  const explaining = await explainingSessions(t, 1, 'set jit = on; reset jit_above_cost')
  if (explaining === null) return
  const [session] = explaining.sessions as [postgres.ReservedSql]
  const s = db.quoted
  // This session is a responder too: the functions that only its registering session may call.
  const [registered] = await session.unsafe<{ responder_id: number; channel_id: number }[]>(
    `select responder_id, channel_id from ${s}.pgrr_register('plans.mine', 'test', 0, 10)`,
  )
  const responder = registered!.responder_id
  const [sent] = await session.unsafe<{ id: string }[]>(
    `select id from ${s}.pgrr_send_one('pgrr_plans_replies', 'plans.mine', 'x', false, 30000, null, null)`,
  )
  const id = sent!.id
  const calls = [
    `select * from ${s}.pgrr_send('pgrr_plans_replies', '{plans.echo,plans.echo}', '{a,b}', '{f,f}', '{30000,30000}', '{null,null}', '{1,1}')`,
    `select * from ${s}.pgrr_send_one('pgrr_plans_replies', 'plans.echo', 'c', false, 30000, null, null)`,
    `select * from ${s}.pgrr_handed(${responder})`,
    `select * from ${s}.pgrr_claim(${responder}, ${registered!.channel_id}, 10)`,
    `select * from ${s}.pgrr_pending_channels('{${registered!.channel_id}}')`,
    `select ${s}.pgrr_reply_one(${responder}, ${id}, false, 'done', false, null)`,
    `select ${s}.pgrr_reply(${responder}, '{${id}}', '{f}', '{done}', '{f}', '{null}')`,
    `select ${s}.pgrr_decline(${responder}, '{${id}}')`,
    `select * from ${s}.pgrr_fetch('{${id}}')`,
    `select * from ${s}.pgrr_reap('{${id}}')`,
    `select * from ${s}.pgrr_reap(null)`,
    `select ${s}.pgrr_cancel('{${id}}')`,
    `select ${s}.pgrr_ack('{${id}}')`,
    `select ${s}.pgrr_sweep()`,
    `select ${s}.pgrr_renew(${responder})`,
    `select ${s}.pgrr_renew(${responder}, '{${responder}}', '{"{}"}', '{{1,0,1,0,0}}')`,
    `select ${s}.pgrr_unregister(${responder})`,
  ]
  for (const call of calls) await session.unsafe(call)
  // The SQL caller's path: a request handed to the live responder, and the wait for its reply.
  const [asked] = await session.unsafe<{ id: string }[]>(`select ${s}.request('plans.echo', 'e') as id`)
  const [answered] = await session.unsafe<{ reply: string }[]>(`select ${s}.await_reply(${asked!.id}) as reply`)
  assert.equal(answered!.reply, 'e')
  // Every statement run inside those functions was explained, and none was compiled.
  const plans = explaining.plans()
  assert.ok(plans.length >= calls.length, `auto_explain explained ${plans.length} statements`)
  const compiled = plans.filter((plan) => /\bJIT:/.test(plan))
  assert.deepEqual(compiled.map((plan) => plan.slice(0, 400)), [])
})

test('every SQL-language helper that takes arguments is inlined into its caller, never run as a function of its own', async (t) => {
  // A helper that is not inlined runs as a function: its body parsed and planned in every transaction that
  // calls it (about 20 µs each time, measured). PostgreSQL inlines an SQL function only when its body is no
  // more volatile than the function is declared (text || int is stable: an immutable helper using it was not
  // inlined). Each helper is called here on column values, so that it is not folded into a constant, in a
  // session that counts every function call it runs (track_functions = all).
  const session = await db.sql.reserve()
  // The connection goes back to the admin pool: leave it as it was, even when an assertion failed.
  t.after(async () => {
    await session.unsafe(`reset track_functions; drop table if exists pgrr_plans_args`).catch(() => undefined)
    session.release()
  })
  const [{ version }] = (await session.unsafe(`select current_setting('server_version_num')::int as version`)) as [{ version: number }]
  if (version < 150000) {
    t.skip('pg_stat_force_next_flush() needs PostgreSQL 15')
    return
  }
  const helpers = await session.unsafe<{ name: string; types: string[] }[]>(
    `select p.proname as name, array(select format_type(t, null) from unnest(p.proargtypes) with ordinality u(t, k) order by k) as types
       from pg_proc p join pg_language l on l.oid = p.prolang
      where p.pronamespace = $1::regnamespace and l.lanname = 'sql' and p.pronargs > 0
      order by 1`,
    [db.schema],
  )
  assert.ok(helpers.length >= 10, `found ${helpers.length} SQL helpers`)
  const column: Record<string, string> = {
    integer: 'v.i',
    bigint: 'v.b',
    text: 'v.t',
    boolean: 'v.f',
    jsonb: 'v.j',
    uuid: 'v.u',
    'timestamp with time zone': 'v.z',
    interval: 'v.iv',
  }
  await session.unsafe(`set track_functions = 'all'`)
  await session.unsafe(`create temporary table pgrr_plans_args as select 1 as i, 1::bigint as b, 'x'::text as t, false as f, null::jsonb as j, gen_random_uuid() as u, now() as z, interval '1 second' as iv`)
  for (const { name, types } of helpers) {
    const args = types.map((type) => column[type] ?? assert.fail(`no sample value for ${type} (${name})`))
    await session.unsafe(`select ${db.quoted}.${name}(${args.join(', ')}) from pgrr_plans_args v`)
  }
  await session.unsafe(`select pg_advisory_unlock_all(), pg_stat_force_next_flush()`)
  const called = await session.unsafe<{ name: string; calls: string }[]>(
    `select funcname as name, calls from pg_stat_user_functions where schemaname = $1 and calls > 0 and funcname = any ($2)`,
    [db.schema, helpers.map((helper) => helper.name)],
  )
  assert.deepEqual(called.map((row) => `${row.name}: ${row.calls} calls`), [])
})

test('batch statements touch only the rows they name, even with plans made while the table looked empty', { timeout: 60_000 }, async (t) => {
  // A generic plan is made at a function's first call in a session, from the table's size then. Made while
  // the table was empty (just vacuumed), a join of the request table with a statement's input scanned the
  // whole primary key and compared every row with every input row: nothing failed, each reply and each
  // claim just took time in proportion to the table. Here the plans are made on an empty table, then
  // 2,000 requests of nobody here are added, and the same calls again must not read them.
  const decoys = 2000
  const s = db.quoted
  const explaining = await explainingSessions(t, 2, 'set auto_explain.log_analyze = on; set auto_explain.log_timing = off')
  if (explaining === null) return
  const [caller, responderSession] = explaining.sessions as [postgres.ReservedSql, postgres.ReservedSql]
  t.after(() => db.sql.unsafe(`delete from ${s}.pgrr_request; alter table ${s}.pgrr_request reset (autovacuum_enabled)`))
  // Empty and vacuumed, and left alone by autovacuum: its statistics say so until the end of the test.
  await db.sql.unsafe(`alter table ${s}.pgrr_request set (autovacuum_enabled = off)`)
  await db.sql.unsafe(`delete from ${s}.pgrr_request`)
  await db.sql.unsafe(`vacuum ${s}.pgrr_request`)
  // Concurrency 2: a batch of two is handed over, a batch of three waits in the table for a claim.
  const [registered] = await responderSession.unsafe<{ responder_id: number; channel_id: number }[]>(
    `select responder_id, channel_id from ${s}.pgrr_register('plans.rows', 'test', 0, 2)`,
  )
  const responder = registered!.responder_id
  const send = async (count: number): Promise<string[]> => {
    const rows = await caller.unsafe<{ id: string | null; status: string }[]>(
      `select id, status from ${s}.pgrr_send('pgrr_plans_rows', array_fill('plans.rows'::text, array[${count}]),
              array_fill('x'::text, array[${count}]), array_fill(false, array[${count}]), array_fill(30000, array[${count}]),
              array_fill(null::text, array[${count}]), array_fill(1, array[${count}]))`,
    )
    assert.deepEqual(rows.map((row) => row.status), Array<string>(count).fill('ok'))
    return rows.map((row) => row.id!)
  }
  const list = (ids: string[]) => `'{${ids.join(',')}}'::bigint[]`
  const texts = (count: number, value: string) => `array_fill(${value}::text, array[${count}])`
  const flags = (count: number) => `array_fill(false, array[${count}])`
  const round = async (): Promise<void> => {
    const handed = await send(2)
    const queued = await send(3)
    const [one] = await caller.unsafe<{ id: string }[]>(
      `select id from ${s}.pgrr_send_one('pgrr_plans_rows', 'plans.rows', 'x', false, 30000, null, 1)`,
    )
    const claimed = await responderSession.unsafe<{ id: string }[]>(
      `select id from ${s}.pgrr_claim(${responder}, ${registered!.channel_id}, 10)`,
    )
    assert.deepEqual(claimed.map((row) => row.id).sort(), [...queued].sort())
    for (const ids of [handed, queued]) {
      const [written] = await responderSession.unsafe<{ n: number }[]>(
        `select (${s}.pgrr_reply(${responder}, ${list(ids)}, ${flags(ids.length)}, ${texts(ids.length, "'done'")},
                ${flags(ids.length)}, ${texts(ids.length, 'null')})).notified as n`,
      )
      assert.equal(written!.n, 1, 'one NOTIFY of replies')
    }
    await responderSession.unsafe(`select ${s}.pgrr_reply_one(${responder}, ${one!.id}, false, 'done', false, null)`)
    // The SQL caller's path: request() hands it over (at its commit), the reply is written before
    // await_reply looks.
    const [asked] = await caller.unsafe<{ id: string }[]>(`select ${s}.request('plans.rows', 'q') as id`)
    await responderSession.unsafe(`select ${s}.pgrr_reply_one(${responder}, ${asked!.id}, false, 'Q', false, null)`)
    const [answered] = await caller.unsafe<{ reply: string }[]>(`select ${s}.await_reply(${asked!.id}) as reply`)
    assert.equal(answered!.reply, 'Q')
    const done = [...handed, ...queued, one!.id]
    const fetched = await caller.unsafe<{ state: string }[]>(`select state from ${s}.pgrr_fetch(${list(done)})`)
    assert.deepEqual(fetched.map((row) => row.state), Array<string>(done.length).fill('replied'))
    await caller.unsafe(`select ${s}.pgrr_ack(${list(done)})`)
    const declined = await send(2)
    await responderSession.unsafe(`select ${s}.pgrr_decline(${responder}, ${list(declined)})`)
    await caller.unsafe(`select * from ${s}.pgrr_reap(${list(declined)})`)
    await caller.unsafe(`select ${s}.pgrr_cancel(${list(declined)})`)
  }
  await round()
  await db.sql.unsafe(
    `insert into ${s}.pgrr_request (id, channel_id, payload, deadline, state, responder_id, claimed_at, attempt, handed, caller)
     select 4000000000000 + g, -1, 'decoy', now() + interval '1 hour', 'claimed', -1, now(), 1, true, 'nobody'
       from generate_series(1, ${decoys}) g`,
  )
  explaining.clear()
  await round()
  const [{ left }] = (await db.sql.unsafe(`select count(*)::int as left from ${s}.pgrr_request`)) as [{ left: number }]
  assert.equal(left, decoys, 'the round left exactly the decoys behind')
  const plans = explaining.plans()
  assert.ok(plans.length >= 10, `auto_explain explained ${plans.length} statements`)
  // Rows read and thrown away, or read by a scan of the request table: never as many as the decoys.
  const heavy = plans.flatMap((plan) =>
    plan.split('\n').filter((line) => {
      const removed = /Rows Removed by (?:Join )?Filter: (\d+)/.exec(line)
      const scanned = /Scan .*on pgrr_request\b.*actual rows=(\d+) loops=(\d+)/.exec(line)
      return (removed !== null && Number(removed[1]) >= decoys / 2) ||
        (scanned !== null && Number(scanned[1]) * Number(scanned[2]) >= decoys / 2)
    }).map((line) => `${line.trim()}  <- ${plan.slice(plan.indexOf('Query Text:'), plan.indexOf('Query Text:') + 120)}`),
  )
  assert.deepEqual(heavy, [])
})
