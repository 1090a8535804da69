// One lease renewal for every channel a process serves (pgrr_renew in sql/protocol/05_registration.sql,
// src/responder/lease.ts): pgrr_renew on one registration's session renews the leases of the registrations
// of the same login and process it names, with their counters and the handler statistics of those that
// changed, and touches
// nothing of another process's; a client serving two channels keeps both leases running, and when their
// session is lost and only one of them registers again, its lease runs on.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import postgres from 'postgres'
import { clientFor, ownSession, registerOn, rejection, useTestSchema, waitFor } from './helpers.ts'

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

test('a client serving two channels keeps both leases running, and when one cannot register again after a lost session, the other\'s', { timeout: 30_000 }, async (t) => {
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

  // The session of both registrations ends, and the database refuses to register the first again (a test
  // trigger): the second registers again, and its lease runs on while the first's registration is retried.
  const [channel] = await db.sql.unsafe<{ id: number }[]>(`select channel_id as id from ${s}.pgrr_responder where id = $1`, [ids[0]!])
  await db.sql.unsafe(`create function ${s}.leases_refuse() returns trigger language plpgsql as $$
    begin
      if new.channel_id = ${Number(channel!.id)} then raise exception 'registration refused by the test'; end if;
      return new;
    end $$`)
  await db.sql.unsafe(`create trigger leases_refuse before insert on ${s}.pgrr_responder for each row execute function ${s}.leases_refuse()`)
  t.after(() => db.sql.unsafe(`drop trigger if exists leases_refuse on ${s}.pgrr_responder`))
  await db.sql.unsafe(`select pg_terminate_backend(backend_pid) from ${s}.pgrr_responder where id = $1`, [ids[0]!])
  await waitFor(() => (second.state === 'running' && second.responderId !== ids[1]) || undefined, { message: 'the second channel registered again' })
  await expireLeases()
  await waitFor(async () => (await leases([second.responderId!]))[0]?.running || undefined, { message: 'the second lease renewed alone' })
  assert.equal(first.state, 'reconnecting')
  assert.equal(await client.request('leases.ts.b', 'y'), 'b:y')
})
