/**
 * Lock leaks. A responder holds a request lock (session level) exactly from its claim to the commit of the
 * reply; when its claim transaction fails (here it is refused; in the wild a statement_timeout or a cancel
 * does the same), the rows go back to pending and no lock may stay behind, or the next responder to claim
 * them would find their keys taken: the failed session is ended, which releases everything it held.
 * After an ordinary run, no session holds a request lock at all.
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { test } from 'node:test'
import { serve } from '../src/index.ts'
import { clientFor, deferred, useTestSchema, waitFor, type TestSchema } from './helpers.ts'

const db = useTestSchema('fail_locks')

/** Request locks (advisory, request namespace of the schema) held by each backend pid. */
async function requestLocks(schema: TestSchema): Promise<Map<number, number>> {
  const rows = await schema.sql.unsafe(
    `select l.pid, count(*)::int as locks from pg_locks l
      where l.locktype = 'advisory' and l.objsubid = 2 and l.granted
        and l.classid::bigint = (${schema.quoted}.pgrr_ns_request()::bigint & 4294967295)
      group by l.pid`,
  )
  return new Map(rows.map((row) => [Number(row.pid), Number(row.locks)]))
}

test('after requests are answered, no session holds a request lock', async (t) => {
  const channel = 'locks.normal'
  await Promise.all([1, 2].map(() => serve(db.options, channel, (payload: unknown) => payload, { concurrency: 4 }).then((server) => t.after(() => server.close()))))
  const client = await clientFor(t, db)
  const replies = await Promise.all(Array.from({ length: 300 }, (_, i) => client.request(channel, i)))
  assert.deepEqual(replies, Array.from({ length: 300 }, (_, i) => i))
  const held = await requestLocks(db)
  assert.equal([...held.values()].reduce((a, b) => a + b, 0), 0, `request locks still held: ${JSON.stringify([...held])}`)
})

test(
  'a claim transaction that fails leaves no lock behind: the request is answered, and the responder recovers',
  { timeout: 60_000 },
  async (t) => {
    const channel = 'locks.abort'
    const suffix = randomBytes(4).toString('hex')
    const held = deferred()
    const release = deferred()
    const claimFailed = deferred<unknown>()
    const logger = {
      debug: () => {},
      info: () => {},
      error: () => {},
      warn: (obj: object | string, message?: string) => {
        if (message === 'claim failed') claimFailed.resolve((obj as { err?: unknown }).err)
      },
    }
    const first = await serve({ ...db.options, applicationName: `pgrr-locks-a-${suffix}`, logger }, channel, async (payload: unknown) => {
      if (payload === 'hold') {
        held.resolve()
        await release.promise
      }
      return `first: ${String(payload)}`
    }, { concurrency: 2, pollIntervalMs: 600_000 }) // it claims only when notified
    t.after(async () => {
      release.resolve()
      await first.close()
    })
    const client = await clientFor(t, db)
    // A request in flight while the claim fails.
    const holding = client.request(channel, 'hold', { timeoutMs: 30_000 }).then(
      (reply) => reply,
      (error: Error & { code?: string }) => error.code,
    )
    await held.promise
    const firstId = first.responderId

    // Make the next claim fail: its check that this session registered the responder refuses once the
    // row no longer names this session's backend (42501). A failed claim ends the session, whatever locks
    // it had taken, and the server registers anew.
    await db.sql.unsafe(`update ${db.quoted}.pgrr_responder set backend_pid = 0 where id = $1`, [firstId!])
    // Three requests in one turn go out in one batch, more than the responder's concurrency, which is
    // queued for a claim (a smaller one would be handed to the responder directly, with no claim to fail).
    const [one, oneMore, another] = ['one', 'one more', 'another'].map((payload) => client.request(channel, payload, { timeoutMs: 8000 }))
    const error = (await claimFailed.promise) as { code?: string }
    assert.equal(error.code, '42501', 'the claim was refused')

    // A second responder, as in the wild: the failed claim leaves nothing that would stop it.
    const second = await serve({ ...db.options, applicationName: `pgrr-locks-b-${suffix}` }, channel, (payload: unknown) => `second: ${String(payload)}`)
    // Nothing of the failed claim holds it back: whichever responder claims it next (the first one, once
    // registered again, or the second) answers it.
    assert.match(String(await one), /^(first|second): one$/)
    assert.match(String(await oneMore), /^(first|second): one more$/)
    assert.match(String(await another), /^(first|second): another$/)
    // The request in flight at the failed claim: answered if the session survived, lost if it was restarted.
    const held0 = await holding
    console.log(`the request in flight during the failed claim ended with: ${String(held0)}`)
    assert.ok(held0 === 'first: hold' || held0 === 'RESPONDER_LOST', String(held0))

    // The first responder serves again.
    await waitFor(() => first.state === 'running' && first.responderId !== firstId, { timeoutMs: 10_000, message: `the first responder registers again (state ${first.state})` })
    await second.close()
    assert.equal(await client.request(channel, 'two', { timeoutMs: 5000 }), 'first: two')
    const leaked = [...(await requestLocks(db)).values()].reduce((a, b) => a + b, 0)
    assert.equal(leaked, 0, 'no request lock is held once everything is answered')
  },
)
