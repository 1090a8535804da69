// One session for all of a client's responders (src/responder/responder-session.ts, pgrr_release in
// sql/protocol/05_registration.sql): every channel a client serves is registered on the same backend;
// closing one server gives back exactly its registration's locks (its responder lock, its reply bells, its
// channel's claim bell unless another registration of the channel stays, the request locks of the SQL
// callers' requests it claimed) and takes back what it held, while the others go on; what a statement cut
// off part-way left behind (a registration, a claim) is given back too; when a release fails the session is
// ended; when the session is lost, every server registers again on one new session; a refusal that comes
// back with every registration makes each one wait longer.
import assert from 'node:assert/strict'
import { test, type TestContext } from 'node:test'
import { clientFor, deferred, ownSession, registerOn, rejection, useTestSchema, waitFor } from './helpers.ts'

const db = useTestSchema('session')

/** The backend each responder was registered on. */
async function backends(ids: number[]): Promise<number[]> {
  const rows = await db.sql.unsafe<{ pid: number }[]>(
    `select backend_pid as pid from ${db.quoted}.pgrr_responder where id = any($1::int[]) order by id`, [ids],
  )
  return rows.map((row) => row.pid)
}

/**
 * The advisory locks `pid` holds of a registration: its responder lock, its 64 reply bell keys, the three
 * claim bell keys of its channel, and the request lock of request `id`. Each as [what, key].
 */
async function heldLocks(pid: number, responder: number, channelId: number, id: string): Promise<string[]> {
  const s = db.quoted
  const rows = await db.sql.unsafe<{ what: string }[]>(
    `with keys (what, ns, key) as (
       select 'responder', ${s}.pgrr_ns_responder(), $2::int
       union all
       select 'reply bell ' || lane || '/' || k, ${s}.pgrr_ns_reply_bell(), ${s}.pgrr_reply_bell_key($2, lane, k)
         from generate_series(0, 15) lane, generate_series(0, 3) k
       union all
       select 'claim bell ' || k, ${s}.pgrr_ns_bell(), ${s}.pgrr_bell_key($3, k) from generate_series(0, 2) k
       union all
       select 'request', ${s}.pgrr_ns_request(), ${s}.pgrr_request_key($4::bigint)
     )
     select k.what from keys k
      where exists (select 1 from pg_locks l
                     where l.locktype = 'advisory' and l.pid = $1 and l.granted and l.objsubid = 2
                       and l.classid = k.ns::oid and l.objid = k.key::oid)
      order by k.what`,
    [pid, responder, channelId, id],
  )
  return rows.map((row) => row.what)
}

/**
 * An SQL caller's request (no reply channel) stored pending on `channel` before any responder of it is
 * live, without a NOTIFY: the first responder's claim takes it, with its request lock. The channel is made
 * by a registration released at once (on a session of the test's own). Returns the request id and channel.
 */
async function queueSqlRequest(
  t: TestContext, channel: string, payload: string, maxAttempts = 1,
): Promise<{ id: string; channelId: number }> {
  const s = db.quoted
  const setup = await ownSession(t, 'setup')
  const { responder, channelId } = await registerOn(db, setup, channel)
  await setup.unsafe(`select ${s}.pgrr_release($1)`, [responder])
  const [row] = await db.sql.unsafe<{ id: string }[]>(
    `insert into ${s}.pgrr_request (id, channel_id, payload, deadline, state, attempt, max_attempts)
     values (${s}.pgrr_random_id(), $1, $2, clock_timestamp() + interval '40 s', 'pending', 0, $3)
     returning id::text`,
    [channelId, payload, maxAttempts],
  )
  return { id: row!.id, channelId }
}

test('a client registers all its channels on one session', { timeout: 30_000 }, async (t) => {
  const client = await clientFor(t, db)
  const servers = await Promise.all(['a', 'b', 'c'].map((name) => client.serve(`session.one.${name}`, (text: string) => `${name}:${text}`)))
  t.after(() => Promise.all(servers.map((server) => server.close())))
  const pids = await backends(servers.map((server) => server.responderId!))
  assert.equal(pids.length, 3)
  assert.equal(new Set(pids).size, 1, `one backend for three registrations, got ${pids.join(', ')}`)
  assert.deepEqual(await Promise.all(['a', 'b', 'c'].map((name) => client.request(`session.one.${name}`, 'x'))), ['a:x', 'b:x', 'c:x'])
})

test('closing one server releases exactly its registration\'s locks and takes back its request; the others go on', { timeout: 60_000 }, async (t) => {
  const s = db.quoted
  // An SQL caller's request, queued before any responder is live, with a second attempt: the first
  // responder claims it as it starts, which takes its request lock on the shared session.
  const caller = await ownSession(t, 'caller')
  const { id, channelId } = await queueSqlRequest(t, 'session.release.x', 'held', 2)
  const awaited = caller.unsafe<{ reply: string }[]>(`select ${s}.await_reply($1::bigint, interval '40 s') as reply`, [id])
  awaited.catch(() => undefined)

  const client = await clientFor(t, db)
  const started = deferred<string>()
  const x = await client.serve('session.release.x', async (text: string, { signal }) => {
    started.resolve(text)
    await new Promise((resolve) => signal.addEventListener('abort', resolve))
    return 'never written'
  })
  const y = await client.serve('session.release.y', (text: string) => `y:${text}`)
  t.after(() => Promise.all([x.close(), y.close()]))
  assert.equal(await started.promise, 'held')
  const [pid] = await backends([x.responderId!])
  const xId = x.responderId!
  const yId = y.responderId!
  // Before: the shared session holds x's responder lock, a reply bell in every lane, the request's lock, and
  // the claim bell of x's channel (its claim of an SQL caller's request rang it).
  const before = await heldLocks(pid!, xId, channelId, id)
  assert.ok(before.includes('responder') && before.includes('request') && before.includes('claim bell 2'), `held before: ${before.join(', ')}`)
  assert.equal(before.filter((what) => what.startsWith('reply bell')).length, 16)

  await x.close()
  assert.deepEqual(await heldLocks(pid!, xId, channelId, id), [], 'nothing of the closed registration is held')
  const [yLocks] = await db.sql.unsafe<{ held: boolean }[]>(
    `select exists (select 1 from pg_locks l where l.locktype = 'advisory' and l.pid = $1 and l.objsubid = 2
                      and l.classid = ${s}.pgrr_ns_responder()::oid and l.objid = $2::int::oid) as held`, [pid!, yId],
  )
  assert.equal(yLocks!.held, true, 'the other registration keeps its responder lock')
  assert.deepEqual(await backends([xId, yId]), [pid], 'the closed registration\'s row is gone, the other\'s stays')
  assert.equal(await client.request('session.release.y', 'still'), 'y:still')

  // The request went back to the queue; a responder of another session can claim it (its request lock is
  // free) and its SQL awaiter gets the reply.
  const other = await clientFor(t, db)
  const again = await other.serve('session.release.x', (text: string) => `again:${text}`)
  t.after(() => again.close())
  const [answer] = await awaited
  assert.equal(answer!.reply, 'again:held')
})

test('when the session is lost, every server registers again on one new session', { timeout: 60_000 }, async (t) => {
  const client = await clientFor(t, db)
  const a = await client.serve('session.lost.a', (text: string) => `a:${text}`)
  const b = await client.serve('session.lost.b', (text: string) => `b:${text}`)
  t.after(() => Promise.all([a.close(), b.close()]))
  const [pid] = await backends([a.responderId!])
  const old = [a.responderId!, b.responderId!]
  await db.sql.unsafe('select pg_terminate_backend($1)', [pid!])
  await waitFor(() => (a.state === 'running' && b.state === 'running' && a.responderId !== old[0] && b.responderId !== old[1]) || undefined,
    { message: 'both servers registered again' })
  const pids = await backends([a.responderId!, b.responderId!])
  assert.equal(pids.length, 2)
  assert.equal(new Set(pids).size, 1, `one new backend for both, got ${pids.join(', ')}`)
  assert.notEqual(pids[0], pid)
  assert.deepEqual([await client.request('session.lost.a', 'x'), await client.request('session.lost.b', 'y')], ['a:x', 'b:y'])
})

test('pgrr_release of one registration keeps every lock its sibling on the session accounts for', { timeout: 30_000 }, async (t) => {
  const s = db.quoted
  const shared = await ownSession(t, 'release-sibling')
  const a = await registerOn(db, shared, 'session.sibling.a')
  const b = await registerOn(db, shared, 'session.sibling.b')
  // b holds a claimed SQL caller's request, its lock on the session as a claim leaves it.
  const [row] = await db.sql.unsafe<{ id: string }[]>(
    `insert into ${s}.pgrr_request (id, channel_id, payload, deadline, state, responder_id, claimed_at, attempt)
     values (${s}.pgrr_random_id(), $1, 'x', clock_timestamp() + interval '30 s', 'claimed', $2, clock_timestamp(), 1)
     returning id::text`,
    [b.channelId, b.responder],
  )
  await shared.unsafe(`select ${s}.pgrr_hold_request_lock($1::bigint)`, [row!.id])
  const [{ pid }] = await shared.unsafe<{ pid: number }[]>('select pg_backend_pid() as pid') as unknown as [{ pid: number }]
  const before = await heldLocks(pid, b.responder, b.channelId, row!.id)
  assert.ok(before.includes('responder') && before.includes('request'), `held before: ${before.join(', ')}`)
  assert.equal(before.filter((what) => what.startsWith('reply bell')).length, 16)
  await shared.unsafe(`select ${s}.pgrr_release($1)`, [a.responder])
  assert.deepEqual(await heldLocks(pid, b.responder, b.channelId, row!.id), before)
  assert.deepEqual(await heldLocks(pid, a.responder, a.channelId, row!.id), before.filter((what) => what === 'request'),
    'of a\'s, nothing is left')
})

test('pgrr_release does nothing for a responder this session did not register', { timeout: 30_000 }, async (t) => {
  const s = db.quoted
  const owner = await ownSession(t, 'owner')
  const stranger = await ownSession(t, 'stranger')
  const { responder } = await registerOn(db, owner, 'session.stranger')
  await stranger.unsafe(`select ${s}.pgrr_release($1)`, [responder])
  const [row] = await db.sql.unsafe<{ live: boolean }[]>(
    `select exists (select 1 from ${s}.pgrr_live_responder where id = $1) as live`, [responder],
  )
  assert.equal(row!.live, true)
  const error = await rejection(stranger.unsafe(`select ${s}.pgrr_claim($1, (select channel_id from ${s}.pgrr_responder where id = $1), 1)`, [responder]))
  assert.equal(error.code, '42501')
})

test('when releasing one registration fails, the session is ended: nothing of it stays held, and the others register again', { timeout: 60_000 }, async (t) => {
  const s = db.quoted
  const client = await clientFor(t, db)
  const x = await client.serve('session.refused.x', (text: string) => text)
  const y = await client.serve('session.refused.y', (text: string) => `y:${text}`)
  t.after(() => Promise.all([x.close(), y.close()]))
  const xId = x.responderId!
  const yId = y.responderId!
  const [pid] = await backends([xId])
  // The database refuses to delete x's row, so pgrr_release fails as a whole.
  await db.sql.unsafe(`create function ${s}.session_refuse() returns trigger language plpgsql as $$
    begin
      if old.id = ${xId} then raise exception 'release refused by the test'; end if;
      return old;
    end $$`)
  await db.sql.unsafe(`create trigger session_refuse before delete on ${s}.pgrr_responder for each row execute function ${s}.session_refuse()`)
  t.after(() => db.sql.unsafe(`drop function if exists ${s}.session_refuse() cascade`))
  await x.close()
  await waitFor(async () => (await db.sql`select 1 from pg_stat_activity where pid = ${pid!}`).length === 0 || undefined, {
    message: 'the shared session ended',
  })
  await waitFor(() => (y.state === 'running' && y.responderId !== yId) || undefined, { message: 'the other server registered again' })
  assert.equal(await client.request('session.refused.y', 'z'), 'y:z')
})

/** How many advisory locks `pid` holds in the responder and reply bell namespaces, and of which responders. */
async function registrationLocks(pid: number): Promise<{ responders: number[]; bells: number; bellOwners: number[] }> {
  const s = db.quoted
  const [row] = await db.sql.unsafe<{ responders: number[] | null; bells: number; owners: number[] | null }[]>(
    `select array_agg(l.objid::bigint::int order by l.objid) filter (where l.classid = ${s}.pgrr_ns_responder()::oid) as responders,
            count(*) filter (where l.classid = ${s}.pgrr_ns_reply_bell()::oid)::int as bells,
            array_agg(distinct (l.objid::bigint / 64)::int) filter (where l.classid = ${s}.pgrr_ns_reply_bell()::oid) as owners
       from pg_locks l
      where l.locktype = 'advisory' and l.pid = $1 and l.objsubid = 2`,
    [pid],
  )
  return { responders: row!.responders ?? [], bells: row!.bells, bellOwners: row!.owners ?? [] }
}

test('a registration that fails half way leaves no lock on the session its siblings go on with', { timeout: 30_000 }, async (t) => {
  const s = db.quoted
  const client = await clientFor(t, db)
  const y = await client.serve('session.half.y', (text: string) => `y:${text}`)
  t.after(() => y.close())
  const [pid] = await backends([y.responderId!])
  // The database refuses the description, in the statement that registers: after pgrr_register took the
  // responder lock and the reply bells (session locks, which outlive the statement's rollback).
  await db.sql.unsafe(`create function ${s}.session_refuse_info() returns trigger language plpgsql as $$
    begin raise exception 'description refused by the test'; end $$`)
  await db.sql.unsafe(`create trigger session_refuse_info before update on ${s}.pgrr_responder for each row
    when (new.info is distinct from old.info) execute function ${s}.session_refuse_info()`)
  t.after(() => db.sql.unsafe(`drop function if exists ${s}.session_refuse_info() cascade`))
  await rejection(client.serve('session.half.x', (text: string) => text, { description: 'refused' }))
  assert.deepEqual(await registrationLocks(pid!), { responders: [y.responderId!], bells: 16, bellOwners: [y.responderId!] })
  assert.deepEqual(await backends([y.responderId!]), [pid], 'the other registration goes on, on the same session')
  assert.equal(await client.request('session.half.y', 'z'), 'y:z')
})

test('a claim that fails after taking request locks: the registration is released with them, and the request is answered', { timeout: 60_000 }, async (t) => {
  const s = db.quoted
  const client = await clientFor(t, db, { checkIntervalMs: 200 })
  const y = await client.serve('session.claim.y', (text: string) => `y:${text}`)
  t.after(() => y.close())
  const [pid] = await backends([y.responderId!])
  // The first claim of the poisoned request fails after its request lock was taken (an AFTER trigger runs
  // at the end of the statement); the next one goes through.
  // (A sequence counts the claims: nextval is not rolled back with the statement.)
  await db.sql.unsafe(`create sequence ${s}.session_poison`)
  await db.sql.unsafe(`create function ${s}.session_poison() returns trigger language plpgsql as $$
    begin
      if new.state = 'claimed' and new.payload = 'poison' and nextval('${s}.session_poison') = 1 then
        raise exception 'claim refused by the test';
      end if;
      return new;
    end $$`)
  t.after(() => db.sql.unsafe(`drop sequence if exists ${s}.session_poison`))
  t.after(() => db.sql.unsafe(`drop function if exists ${s}.session_poison() cascade`))
  const { id: queuedId } = await queueSqlRequest(t, 'session.claim.x', 'poison')
  await db.sql.unsafe(`create trigger session_poison after update on ${s}.pgrr_request for each row execute function ${s}.session_poison()`)
  const caller = await ownSession(t, 'caller')
  const awaited = caller.unsafe<{ reply: string }[]>(`select ${s}.await_reply($1::bigint, interval '40 s') as reply`, [queuedId])
  const x = await client.serve('session.claim.x', (text: string) => `x:${text}`)
  t.after(() => x.close())
  const [answer] = await awaited
  assert.equal(answer!.reply, 'x:poison')
  const [claims] = await db.sql.unsafe<{ n: number }[]>(`select last_value::int as n from ${s}.session_poison`)
  assert.equal(claims!.n, 2, 'the first claim was refused, the second went through')
  // Its request lock is not held on the shared session any more: neither the hold the failed claim left, nor
  // the reply's.
  const [held] = await db.sql.unsafe<{ held: boolean }[]>(
    `select exists (select 1 from pg_locks l where l.locktype = 'advisory' and l.pid = $1 and l.objsubid = 2
                      and l.classid = ${s}.pgrr_ns_request()::oid and l.objid = ${s}.pgrr_request_key($2::bigint)::oid) as held`,
    [pid!, queuedId],
  )
  assert.equal(held!.held, false)
  assert.equal(await client.request('session.claim.y', 'z'), 'y:z')
})

test('a claim refused every time: each registration after a refusal waits longer, until a claim goes through', { timeout: 60_000 }, async (t) => {
  const s = db.quoted
  // The refusals counted in the warning of each registration that follows one, and its longest wait.
  const refusals: number[] = []
  const waits: number[] = []
  let counted: { n: number; done: () => void } | undefined
  const warnings = (n: number): Promise<void> => new Promise((done) => (refusals.length >= n ? done() : (counted = { n, done })))
  const logger = {
    debug: () => {}, info: () => {}, error: () => {},
    warn: (entry: object | string, message?: string) => {
      if (message !== 'responder session lost; registering again' || typeof entry !== 'object') return
      refusals.push((entry as { refusals: number }).refusals)
      waits.push((entry as { waitUpToMs: number }).waitUpToMs)
      if (counted !== undefined && refusals.length >= counted.n) counted.done()
    },
  }
  const client = await clientFor(t, db, { logger })
  await db.sql.unsafe(`create function ${s}.session_refuse_claims() returns trigger language plpgsql as $$
    begin
      if new.state = 'claimed' and new.payload like 'poison%' then raise exception 'claim refused by the test'; end if;
      return new;
    end $$`)
  t.after(() => db.sql.unsafe(`drop function if exists ${s}.session_refuse_claims() cascade`))
  const refuse = () => db.sql.unsafe(`create trigger session_refuse_claims after update on ${s}.pgrr_request for each row execute function ${s}.session_refuse_claims()`)
  const accept = () => db.sql.unsafe(`drop trigger session_refuse_claims on ${s}.pgrr_request`)
  const caller = await ownSession(t, 'caller')
  const awaitReply = (id: string) => caller.unsafe<{ reply: string }[]>(`select ${s}.await_reply($1::bigint, interval '40 s') as reply`, [id])

  const first = await queueSqlRequest(t, 'session.refused', 'poison 1')
  await refuse()
  const firstReply = awaitReply(first.id)
  // Claims come by the poll too, so that a request queued later is found without a NOTIFY.
  const server = await client.serve('session.refused', (text: string) => `ok:${text}`, { pollIntervalMs: 100 })
  t.after(() => server.close())
  await warnings(4)
  // One more refusal each time (the wait before registering again doubles with it), none forgotten in between.
  assert.deepEqual(refusals.slice(0, 4), [1, 2, 3, 4])
  assert.deepEqual(waits.slice(0, 4), [100, 200, 400, 800])
  await accept()
  assert.equal((await firstReply)[0]!.reply, 'ok:poison 1')

  // A claim went through: the count starts again from one.
  const seen = refusals.length
  await refuse()
  const second = await queueSqlRequest(t, 'session.refused', 'poison 2')
  const secondReply = awaitReply(second.id)
  await warnings(seen + 1)
  assert.equal(refusals[seen], 1)
  assert.equal(waits[seen], 100)
  await accept()
  assert.equal((await secondReply)[0]!.reply, 'ok:poison 2')
  assert.equal(await client.request('session.refused', 'again'), 'ok:again')
})

test('two servers of one channel on a client: closing one keeps the channel\'s claim bell for the other', { timeout: 30_000 }, async (t) => {
  const s = db.quoted
  const { id: queuedId, channelId } = await queueSqlRequest(t, 'session.twice', 'ring')
  const client = await clientFor(t, db)
  const first = await client.serve('session.twice', (text: string) => `1:${text}`)
  const second = await client.serve('session.twice', (text: string) => `2:${text}`)
  t.after(() => Promise.all([first.close(), second.close()]))
  await waitFor(async () => (await db.sql.unsafe(`select 1 from ${s}.pgrr_request where id = $1 and state = 'replied'`, [queuedId])).length === 1 || undefined,
    { message: 'the queued request answered' })
  const [pid] = await backends([first.responderId!])
  const bell = async () => (await heldLocks(pid!, first.responderId!, channelId, queuedId)).filter((what) => what.startsWith('claim bell'))
  assert.equal((await bell()).length, 2, 'the token and one bell')
  await second.close()
  assert.equal((await bell()).length, 2, 'still held for the other registration of the channel')
})
