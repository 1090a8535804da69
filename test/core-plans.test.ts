// Plans: what the planner makes of the protocol's statements, read from auto_explain (loaded in one session
// of the test, with its plans sent to that session as notices). Each test reproduces a way it used to go
// wrong without any error: only the time it took showed it.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import postgres from 'postgres'
import { databaseUrl, serverFor, useTestSchema } from './helpers.ts'

const db = useTestSchema('plans')

test('no statement of the protocol is compiled by JIT, the branches a generic plan keeps for nothing included', { timeout: 60_000 }, async (t) => {
  // A live responder, so that the sends below hand their requests over and the replies have rows to write.
  await serverFor(t, db, 'plans.echo', (payload: string) => payload)
  const notices: string[] = []
  const sql = postgres(databaseUrl(), { max: 1, onnotice: (notice) => notices.push(String(notice.message)) })
  const session = await sql.reserve()
  t.after(async () => {
    session.release()
    await sql.end({ timeout: 5 })
  })
  try {
    await session.unsafe(`load 'auto_explain'`)
  } catch (error) {
    t.skip(`auto_explain cannot be loaded here: ${(error as Error).message}`)
    return
  }
  // JIT as a default server has it (on, plans costed over 100,000 compiled), whatever this one is set to.
  await session.unsafe(`set jit = on; reset jit_above_cost; set auto_explain.log_min_duration = 0;
                        set auto_explain.log_nested_statements = on; set auto_explain.log_level = notice`)
  const s = db.quoted
  // This session is a responder too: the functions that only its registering session may call.
  const [registered] = await session.unsafe<{ responder_id: number; channel_id: number }[]>(
    `select responder_id, channel_id from ${s}.pgrr_register('plans.mine', 'test', 0, 10)`,
  )
  const responder = registered!.responder_id
  const [sent] = await session.unsafe<{ id: string }[]>(
    `select id from ${s}.pgrr_send_one('pgrr_plans_replies', 'plans.mine', 'x', false, 30000, null, null, '{}')`,
  )
  const id = sent!.id
  const calls = [
    `select * from ${s}.pgrr_send('pgrr_plans_replies', '{plans.echo,plans.echo}', '{a,b}', '{f,f}', '{30000,30000}', '{null,null}', '{1,1}', '{}')`,
    `select * from ${s}.pgrr_send_one('pgrr_plans_replies', 'plans.echo', 'c', false, 30000, null, null, '{}')`,
    `select * from ${s}.pgrr_handed(${responder})`,
    `select * from ${s}.pgrr_claim(${responder}, ${registered!.channel_id}, 10, 0)`,
    `select ${s}.pgrr_reply_one(${responder}, ${id}, false, 'done', false, null)`,
    `select ${s}.pgrr_reply(${responder}, '{${id}}', '{f}', '{done}', '{f}', '{null}')`,
    `select ${s}.pgrr_decline(${responder}, '{${id}}')`,
    `select * from ${s}.pgrr_fetch('{${id}}')`,
    `select * from ${s}.pgrr_reap('{${id}}')`,
    `select * from ${s}.pgrr_reap(null)`,
    `select ${s}.pgrr_cancel('{${id}}')`,
    `select ${s}.pgrr_ack('{${id}}')`,
    `select ${s}.pgrr_sweep()`,
    `select ${s}.pgrr_report(${responder}, 1, 0, 1, 0, 0)`,
    `select ${s}.pgrr_unregister(${responder})`,
  ]
  for (const call of calls) await session.unsafe(call)
  // The SQL caller's path: a request handed to the live responder, and the wait for its reply.
  const [asked] = await session.unsafe<{ id: string }[]>(`select ${s}.request('plans.echo', 'e') as id`)
  const [answered] = await session.unsafe<{ reply: string }[]>(`select ${s}.await_reply(${asked!.id}) as reply`)
  assert.equal(answered!.reply, 'e')
  // Every statement run inside those functions was explained, and none was compiled.
  const plans = notices.filter((message) => message.includes('plan:'))
  assert.ok(plans.length >= calls.length, `auto_explain explained ${plans.length} statements`)
  const compiled = plans.filter((plan) => /\bJIT:/.test(plan))
  assert.deepEqual(compiled.map((plan) => plan.slice(0, 400)), [])
})
