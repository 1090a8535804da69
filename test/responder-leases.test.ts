// One lease renewal for every channel a process serves (pgrr_renew in sql/protocol/05_registration.sql,
// src/responder/lease.ts): pgrr_renew on one registration's session renews the leases of the registrations
// of the same login and process it names, with their counters and the handler statistics of those that
// changed, and touches
// nothing of another process's; a client serving two channels keeps both leases running, and when the
// session that renewed them is lost, the next renewal goes on the other registration's.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import postgres from 'postgres'
import { clientFor, deferred, ownSession, registerOn, rejection, useTestSchema, waitFor } from './helpers.ts'

const db = useTestSchema('leases')

interface LeaseRow { id: number; running: boolean; stats: unknown; statsWritten: boolean; handled: number; reported: boolean }

/** Each responder's lease, as running or not, its statistics and its counter of handled requests. */
async function leases(ids: number[]): Promise<LeaseRow[]> {
  return [...await db.sql.unsafe<LeaseRow[]>(
    `select id, lease_until > clock_timestamp() as running, stats, stats_at is not null as "statsWritten",
            handled_total::int as handled, reported_at is not null as reported
       from ${db.quoted}.pgrr_responder where id = any($1::int[]) order by id`,
    [ids],
  )]
}

/** Lets every lease of the schema run out. */
async function expireLeases(): Promise<void> {
  await db.sql.unsafe(`update ${db.quoted}.pgrr_responder set lease_until = clock_timestamp() - interval '1 hour'`)
}

test('pgrr_renew renews the leases it names of its own process, writes their changed stats, and leaves another process\'s', { timeout: 30_000 }, async (t) => {
  const s = db.quoted
  const [writer, sibling, stranger] = [await ownSession(t, 'writer'), await ownSession(t, 'sibling'), await ownSession(t, 'stranger')]
  const { responder: a } = await registerOn(db, writer, 'leases.sql.a', 'host-1', 7)
  const { responder: b } = await registerOn(db, sibling, 'leases.sql.b', 'host-1', 7)
  const { responder: c } = await registerOn(db, stranger, 'leases.sql.c', 'host-1', 8)
  // (postgres.js sends each element of a jsonb[] parameter as JSON: objects, not their text.)
  const renew = (session: postgres.ReservedSql, responder: number, stats: unknown[] | null, counters: (number | null)[][] | null = null) =>
    session.unsafe(`select ${s}.pgrr_renew($1::int, $2::int[], $3::jsonb[], $4::bigint[])`, [responder, [a, b, c], stats as never, counters as never])

  await expireLeases()
  await renew(writer, a, [null, { requests: 2 }, { requests: 3 }], [[1, 0, 1, 0, 0], [5, 1, 5, 1, 2], [9, 9, 9, 9, 9]])
  assert.deepEqual(await leases([a, b, c]), [
    { id: a, running: true, stats: null, statsWritten: false, handled: 1, reported: true },
    { id: b, running: true, stats: { requests: 2 }, statsWritten: true, handled: 5, reported: true },
    { id: c, running: false, stats: null, statsWritten: false, handled: 0, reported: false },
  ])

  // Stats and counters given as null are left as they were; without a list, the responder alone.
  await expireLeases()
  await renew(writer, a, null, [[null, null, null, null, null], [6, 1, 6, 1, 0], [null, null, null, null, null]])
  await writer.unsafe(`select ${s}.pgrr_renew($1::int)`, [a])
  assert.deepEqual((await leases([a, b, c])).map((row) => [row.running, row.stats, row.handled]),
    [[true, null, 1], [true, { requests: 2 }, 6], [false, null, 0]])

  // A session that did not register the responder it names renews nothing.
  await expireLeases()
  await renew(stranger, a, null)
  assert.deepEqual((await leases([a, b, c])).map((row) => row.running), [false, false, false])

  // Statistics that are not a JSON object of at most 64 KiB: refused, and nothing is renewed.
  for (const stats of [[1], { big: 'x'.repeat(70_000) }]) {
    const error = await rejection(renew(writer, a, [null, stats, null]))
    assert.equal(error.code, '22023')
  }
  assert.deepEqual((await leases([a, b, c])).map((row) => row.running), [false, false, false])
})

test('a client serving two channels keeps both leases running, on the other session when the renewing one is lost', { timeout: 30_000 }, async (t) => {
  const s = db.quoted
  const client = await clientFor(t, db)
  const first = await client.serve('leases.ts.a', (text: string) => text)
  const second = await client.serve('leases.ts.b', (text: string) => `b:${text}`)
  t.after(() => Promise.all([first.close(), second.close()]))
  assert.equal(await client.request('leases.ts.b', 'x'), 'b:x')
  const ids = [first.responderId!, second.responderId!]

  await expireLeases()
  await waitFor(async () => (await leases(ids)).every((row) => row.running) || undefined, { message: 'both leases renewed' })
  await waitFor(async () => {
    const [row] = await leases([ids[1]!])
    return (row?.statsWritten && row.handled === 1) || undefined
  }, { message: 'the second channel\'s stats and counters written' })

  // The first registration's session (the one that renews) ends, and the database refuses to register it
  // again (a test trigger): the second's lease still runs on, renewed on its own session.
  const [channel] = await db.sql.unsafe<{ id: number }[]>(`select channel_id as id from ${s}.pgrr_responder where id = $1`, [ids[0]!])
  await db.sql.unsafe(`create function ${s}.leases_refuse() returns trigger language plpgsql as $$
    begin
      if new.channel_id = ${Number(channel!.id)} then raise exception 'registration refused by the test'; end if;
      return new;
    end $$`)
  await db.sql.unsafe(`create trigger leases_refuse before insert on ${s}.pgrr_responder for each row execute function ${s}.leases_refuse()`)
  t.after(() => db.sql.unsafe(`drop trigger if exists leases_refuse on ${s}.pgrr_responder`))
  await db.sql.unsafe(`select pg_terminate_backend(backend_pid) from ${s}.pgrr_responder where id = $1`, [ids[0]!])
  await waitFor(() => first.state === 'reconnecting' || undefined, { message: 'the first channel lost its session' })
  await expireLeases()
  await waitFor(async () => (await leases([ids[1]!]))[0]?.running || undefined, { message: 'the second lease renewed alone' })
  assert.equal(first.state, 'reconnecting')
  assert.equal(await client.request('leases.ts.b', 'y'), 'b:y')
})

test('a renewal held up behind a long statement on one registration\'s session does not stop the leases', { timeout: 30_000 }, async (t) => {
  const s = db.quoted
  const client = await clientFor(t, db)
  const release = deferred()
  t.after(() => release.resolve())
  const first = await client.serve('leases.busy.a', async (text: string) => {
    await release.promise
    return text
  })
  const second = await client.serve('leases.busy.b', (text: string) => text)
  t.after(() => Promise.all([first.close(), second.close()]))
  const ids = [first.responderId!, second.responderId!]
  const reply = client.request('leases.busy.a', 'held')
  const [row] = await waitFor(() => db.sql.unsafe<{ id: string }[]>(
    `select id::text from ${s}.pgrr_request where responder_id = $1 and state = 'claimed'`, [ids[0]!],
  ).then((rows) => (rows.length > 0 ? rows : undefined)), { message: 'the request handed to the first channel' })
  // The reply to it, on the first registration's session, waits on a row lock the test holds.
  const blocker = await ownSession(t, 'blocker')
  await blocker.unsafe('begin')
  await blocker.unsafe(`select id from ${s}.pgrr_request where id = $1 for update`, [row!.id])
  release.resolve()
  await waitFor(async () => {
    const [waiting] = await db.sql.unsafe<{ waiting: boolean }[]>(
      `select a.wait_event_type = 'Lock' as waiting
         from pg_stat_activity a join ${s}.pgrr_responder r on r.backend_pid = a.pid where r.id = $1`, [ids[0]!],
    )
    return waiting?.waiting || undefined
  }, { message: 'the first registration\'s session waits on the row lock' })
  await expireLeases()
  await waitFor(async () => (await leases(ids)).every((lease) => lease.running) || undefined, { message: 'both leases renewed on the other session' })
  await blocker.unsafe('rollback')
  assert.equal(await reply, 'held')
})
