// The poll, the safety net for a lost NOTIFY (pgrr_pending_channels in sql/protocol/07_claim.sql,
// src/responder/polls.ts): one statement per poll interval for all of a client's channels names those with
// pending requests, and only their responders claim. A request queued without a NOTIFY is found and
// answered; a channel with nothing pending is not named.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { clientFor, ownSession, registerOn, useTestSchema, waitFor } from './helpers.ts'

const db = useTestSchema('polls')

/** Stores a request of `channelId` as pending, as the queue holds it, without any NOTIFY. Returns its id. */
async function queueSilently(channelId: number, payload: string, state = 'pending', responder: number | null = null): Promise<string> {
  const [row] = await db.sql.unsafe<{ id: string }[]>(
    `insert into ${db.quoted}.pgrr_request (id, channel_id, payload, deadline, state, responder_id, attempt)
     values (${db.quoted}.pgrr_random_id(), $1, $2, clock_timestamp() + interval '30 s', $3, $4, 0)
     returning id::text`,
    [channelId, payload, state, responder],
  )
  return row!.id
}

test('pgrr_pending_channels names the given channels that have pending requests, and no other', { timeout: 30_000 }, async (t) => {
  const s = db.quoted
  const session = await ownSession(t, 'registered')
  const a = await registerOn(db, session, 'polls.sql.a')
  const b = await registerOn(db, session, 'polls.sql.b')
  const c = await registerOn(db, session, 'polls.sql.c')
  await queueSilently(b.channelId, 'waiting')
  await queueSilently(c.channelId, 'in hand', 'claimed', c.responder)
  const pending = async (ids: number[]) =>
    (await db.sql.unsafe<{ id: number }[]>(`select id from ${s}.pgrr_pending_channels($1::int[]) as id`, [ids])).map((row) => row.id)
  assert.deepEqual(await pending([a.channelId, b.channelId, c.channelId]), [b.channelId])
  assert.deepEqual(await pending([a.channelId, c.channelId]), [])
})

test('a request queued without a NOTIFY is claimed at the next poll, by its channel\'s responder', { timeout: 30_000 }, async (t) => {
  const client = await clientFor(t, db)
  const quiet = await client.serve('polls.ts.quiet', (text: string) => `quiet:${text}`, { pollIntervalMs: 100 })
  const busy = await client.serve('polls.ts.busy', (text: string) => `busy:${text}`, { pollIntervalMs: 100 })
  t.after(() => Promise.all([quiet.close(), busy.close()]))
  // A round trip first: its reply is written on the responder's session after the claim it makes as it
  // starts, so what claims the request below can only be a poll.
  assert.equal(await client.request('polls.ts.busy', 'first'), 'busy:first')
  const [row] = await db.sql.unsafe<{ channel_id: number }[]>(
    `select channel_id from ${db.quoted}.pgrr_responder where id = $1`, [busy.responderId!],
  )
  const id = await queueSilently(row!.channel_id, 'lost notify')
  const answered = await waitFor(async () => {
    const [request] = await db.sql.unsafe<{ state: string; reply: string | null; responder: number }[]>(
      `select state, reply, responder_id as responder from ${db.quoted}.pgrr_request where id = $1`, [id],
    )
    return request?.state === 'replied' ? request : undefined
  }, { message: 'the silently queued request answered' })
  assert.deepEqual(answered, { state: 'replied', reply: 'busy:lost notify', responder: busy.responderId })
})
