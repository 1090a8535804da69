/**
 * Handoff. A TypeScript caller's requests go straight to a live responder (pgrr_send picks one, marks the
 * rows as handed to it, and NOTIFYs the payloads on the responder's inbox): no claim. What must hold:
 * requests too large for a NOTIFY, and bursts larger than the responder's concurrency, still go through
 * the queue; a responder without a free slot gives a request back and it is still answered exactly once;
 * a handoff whose NOTIFY the responder missed (its LISTEN session was away) is found and answered; and the
 * inbox's name cannot be guessed.
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { test } from 'node:test'
import { serve, type HandlerContext } from '../src/index.ts'
import { clientFor, deferred, serverFor, useTestSchema, waitFor } from './helpers.ts'

const db = useTestSchema('core_handoff')

async function handed(id: string): Promise<boolean | undefined> {
  const [row] = await db.sql.unsafe(`select handed from ${db.quoted}.pgrr_request where id = $1`, [id])
  return row?.handed as boolean | undefined
}

test('requests are handed to the responder, alone or in a batch; large ones and large bursts are queued and claimed', async (t) => {
  const channel = 'handoff.basic'
  const seen = new Map<string, boolean | undefined>()
  await serverFor(t, db, channel, async (payload: string, ctx: HandlerContext) => {
    seen.set(payload.slice(0, 10), await handed(ctx.id))
    return `got ${payload.slice(0, 10)}`
  }, { concurrency: 3 })
  const client = await clientFor(t, db)
  assert.equal(await client.request(channel, 'alone'), 'got alone')
  assert.equal(seen.get('alone'), true, 'the single request was handed over')
  assert.deepEqual(await Promise.all([client.request(channel, 'x'), client.request(channel, 'y')]), ['got x', 'got y'])
  assert.equal(seen.get('x'), true, 'a batch is handed over')
  assert.equal(seen.get('y'), true, 'a batch is handed over')
  // Up to 7800 bytes a request is handed over in a batch too, in a NOTIFY of its own when its entry is over
  // 2000 bytes; over that it does not fit in a NOTIFY and is queued.
  const large = 'large-one ' + 'z'.repeat(7000)
  const larger = 'larger-one' + 'z'.repeat(7000)
  const huge = 'huge-one  ' + 'z'.repeat(7800)
  assert.deepEqual(
    await Promise.all([large, 'small-one', larger].map((payload) => client.request(channel, payload))),
    ['got large-one ', 'got small-one', 'got larger-one'],
  )
  assert.equal(seen.get('large-one '), true, 'a large request in a batch is handed over')
  assert.equal(seen.get('larger-one'), true, 'a second large request in the batch is handed over')
  assert.equal(seen.get('small-one'), true, 'the small one beside them is handed over')
  assert.deepEqual(await Promise.all([huge, 'small-two'].map((payload) => client.request(channel, payload))), ['got huge-one  ', 'got small-two'])
  assert.equal(seen.get('huge-one  '), false, 'a request too large for a NOTIFY is queued')
  assert.equal(seen.get('small-two'), true, 'the small one beside it is handed over')
  // More requests at once than the responder's concurrency: the burst waits in the table for claims.
  const burst = ['b1', 'b2', 'b3', 'b4']
  assert.deepEqual(await Promise.all(burst.map((payload) => client.request(channel, payload))), burst.map((payload) => `got ${payload}`))
  for (const payload of burst) assert.equal(seen.get(payload), false, `${payload} of a burst larger than the concurrency is queued`)
})

test('a responder without a free slot gives a handed request back; it is answered once, in its turn', async (t) => {
  const channel = 'handoff.full'
  const release = deferred()
  const started = deferred()
  const ran: string[] = []
  const server = await serverFor(t, db, channel, async (payload: string) => {
    ran.push(payload)
    if (payload === 'first') {
      started.resolve()
      await release.promise
    }
    return `done ${payload}`
  }, { concurrency: 1 })
  const client = await clientFor(t, db)
  const first = client.request(channel, 'first', { timeoutMs: 20_000 })
  await started.promise
  // The only live responder gets it, has no free slot, and declines: the request waits in the queue.
  const second = client.request(channel, 'second', { timeoutMs: 20_000 })
  await waitFor(async () => {
    const rows = await db.sql.unsafe(
      `select q.state, q.handed, q.responder_id from ${db.quoted}.pgrr_request q
         join ${db.quoted}.pgrr_channel c on c.id = q.channel_id
        where c.name = $1 and q.payload = 'second'`,
      [channel],
    )
    return rows.length === 1 && rows[0]?.state === 'pending' && rows[0]?.handed === false && rows[0]?.responder_id === null
  }, { message: 'the declined request is pending again' })
  assert.equal(server.running, 1)
  release.resolve()
  assert.equal(await first, 'done first')
  assert.equal(await second, 'done second')
  assert.deepEqual(ran, ['first', 'second'], 'each ran once')
})

test('many single requests racing for a responder with few slots: every one answered exactly once', { timeout: 60_000 }, async (t) => {
  const channel = 'handoff.race'
  const runs = new Map<string, number>()
  await serverFor(t, db, channel, async (payload: string) => {
    runs.set(payload, (runs.get(payload) ?? 0) + 1)
    await new Promise((resolve) => setTimeout(resolve, 2))
    return payload.toUpperCase()
  }, { concurrency: 2 })
  // Separate clients, each one request at a time: every send is a single request, so each is handed over.
  const clients = await Promise.all(Array.from({ length: 6 }, () => clientFor(t, db)))
  await Promise.all(
    clients.map(async (client, c) => {
      for (let i = 0; i < 40; i++) {
        const payload = `c${c}-${i}`
        assert.equal(await client.request(channel, payload, { timeoutMs: 20_000 }), payload.toUpperCase())
      }
    }),
  )
  assert.equal(runs.size, 240)
  assert.ok([...runs.values()].every((count) => count === 1), 'no request ran twice')
})

test('a handoff whose NOTIFY the responder missed is found when its LISTEN session comes back', { timeout: 60_000 }, async (t) => {
  const channel = 'handoff.missed'
  const app = `pgrr-handoff-${randomBytes(4).toString('hex')}`
  const ran = deferred<string>()
  const server = await serve({ ...db.options, applicationName: app }, channel, (payload: string) => {
    ran.resolve(payload)
    return `late ${payload}`
  })
  t.after(() => server.close())
  // A request handed to the responder with no NOTIFY at all, as if it had gone out while the responder's
  // LISTEN session was away.
  const id = String(BigInt(`0x${randomBytes(7).toString('hex')}`))
  await db.sql.unsafe(
    `insert into ${db.quoted}.pgrr_request (id, channel_id, payload, reply_to, deadline, state, responder_id, claimed_at, attempt, handed)
     select $1, c.id, 'missed', 'pgrr_test_nobody', now() + interval '30 s', 'claimed', $2, now(), 1, true
       from ${db.quoted}.pgrr_channel c where c.name = $3`,
    [id, server.responderId!, channel],
  )
  // The LISTEN session goes away and comes back: the responder looks for what was handed to it.
  await db.sql.unsafe(
    `select pg_terminate_backend(pid) from pg_stat_activity where application_name = $1 and query ilike 'listen%'`,
    [app],
  )
  assert.equal(await ran.promise, 'missed')
  await waitFor(async () => {
    const [row] = await db.sql.unsafe(`select state, reply from ${db.quoted}.pgrr_request where id = $1`, [id])
    return row?.state === 'replied' && row?.reply === 'late missed'
  }, { message: 'the missed request is answered' })
})

test('each registration gets its own inbox, named with 62 random bits', async (t) => {
  const channel = 'handoff.inbox'
  const a = await serverFor(t, db, channel, (payload: unknown) => payload)
  const b = await serverFor(t, db, channel, (payload: unknown) => payload)
  const rows = await db.sql.unsafe(
    `select r.inbox from ${db.quoted}.pgrr_responder r where r.id in ($1, $2)`,
    [a.responderId!, b.responderId!],
  )
  assert.equal(rows.length, 2)
  const [x, y] = rows.map((row) => String(row.inbox))
  assert.notEqual(x, y)
  for (const inbox of [x, y]) assert.match(inbox!, /\.h[0-9a-f]{16}$/, inbox)
})

test('a request handed over the moment a responder starts (its first claim and recovery in flight) is answered', async (t) => {
  const client = await clientFor(t, db)
  for (let i = 0; i < 8; i++) {
    const channel = `handoff.start.${i}`
    const server = await client.serve(channel, (payload: string) => `${channel} ${payload}`)
    try {
      assert.equal(await client.request(channel, 'now', { timeoutMs: 5000 }), `${channel} now`)
    } finally {
      await server.close()
    }
  }
})
