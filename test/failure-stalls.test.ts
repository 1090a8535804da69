/**
 * Responders that stall: a handler that blocks its event loop, a process stopped (SIGSTOP). Every request
 * still ends in exactly one outcome: a reply written after the deadline is refused by the database, so the
 * caller's timeout stays the outcome for every reader, SQL and TypeScript. And a stalled responder stops
 * renewing its lease: new requests go to the responders that still turn, and it serves again once it
 * resumes.
 */
import assert from 'node:assert/strict'
import { after, test } from 'node:test'
import postgres from 'postgres'
import { TimeoutError } from '../src/index.ts'
import { clientFor, startResponderProcess, useTestSchema, waitFor, type ResponderProcess, type TestSchema } from './helpers.ts'

const db = useTestSchema('fail_stalls')
const started: ResponderProcess[] = []
after(async () => {
  for (const responder of started) {
    responder.child.kill('SIGCONT')
    await responder.kill()
  }
})

async function busyResponder(channel: string, concurrency = 4): Promise<ResponderProcess> {
  const responder = await startResponderProcess({ options: db.options, channel, behaviour: 'busy', concurrency })
  started.push(responder)
  return responder
}

/** The stored state of a request, as every reader sees it. */
async function stored(schema: TestSchema, id: string): Promise<{ state: string; error_code: string | null } | undefined> {
  const [row] = await schema.sql.unsafe(`select state, error_code from ${schema.quoted}.pgrr_request where id = $1`, [id])
  return row === undefined ? undefined : { state: String(row.state), error_code: row.error_code as string | null }
}

async function sqlOutcome(sql: postgres.Sql, id: string): Promise<string> {
  return sql.unsafe(`select ${db.quoted}.await_reply($1::bigint) as reply`, [id]).then(
    (rows) => `reply ${String(rows[0]?.reply)}`,
    (error: { code?: string }) => `error ${error.code}`,
  )
}

test('a handler that blocks its event loop past the deadline: its late reply is refused, the SQL caller\'s timeout stays', { timeout: 60_000 }, async (t) => {
  const channel = 'stall.block.sql'
  const responder = await busyResponder(channel)
  const caller = postgres(db.options.connectionString, { max: 1, onnotice: () => {} })
  t.after(() => caller.end({ timeout: 1 }))
  const [{ id }] = (await caller.unsafe(
    `select ${db.quoted}.request($1, $2::text::jsonb, interval '400 milliseconds')::text as id`,
    [channel, JSON.stringify({ blockMs: 1500, tag: 'a' })],
  )) as unknown as [{ id: string }]
  await responder.nextLine(`started ${id}`)
  assert.equal(await sqlOutcome(caller, id), 'error PR002', 'the caller times out at the deadline')
  await responder.nextLine(`finished ${id}`)
  // The handler returned after the deadline; its reply reaches the database once the event loop turns.
  await waitFor(async () => (await stored(db, id))?.state !== 'claimed', { message: 'the late reply is written' })
  assert.deepStrictEqual(await stored(db, id), { state: 'failed', error_code: 'PGRR_DEADLINE' }, 'stored as the timeout')
  assert.equal(await sqlOutcome(caller, id), 'error PR002', 'a second read sees the same outcome, not the late reply')
})

test('a responder stopped (SIGSTOP) past the deadline, then resumed: the SQL caller\'s timeout stays', { timeout: 60_000 }, async (t) => {
  const channel = 'stall.stop.sql'
  const responder = await busyResponder(channel)
  const caller = postgres(db.options.connectionString, { max: 1, onnotice: () => {} })
  t.after(() => caller.end({ timeout: 1 }))
  const [{ id }] = (await caller.unsafe(
    `select ${db.quoted}.request($1, $2::text::jsonb, interval '500 milliseconds')::text as id`,
    [channel, JSON.stringify({ waitMs: 300, tag: 'b' })],
  )) as unknown as [{ id: string }]
  await responder.nextLine(`started ${id}`)
  responder.child.kill('SIGSTOP')
  assert.equal(await sqlOutcome(caller, id), 'error PR002', 'the caller times out at the deadline')
  responder.child.kill('SIGCONT')
  await responder.nextLine(`finished ${id}`)
  await waitFor(async () => (await stored(db, id))?.state !== 'claimed', { message: 'the responder writes its outcome' })
  assert.deepStrictEqual(await stored(db, id), { state: 'failed', error_code: 'PGRR_DEADLINE' })
  assert.equal(await sqlOutcome(caller, id), 'error PR002')
})

test('a TypeScript caller whose handler blocks, or whose responder is stopped, past the deadline gets one outcome: the timeout', { timeout: 60_000 }, async (t) => {
  const channel = 'stall.ts'
  const responder = await busyResponder(channel)
  const client = await clientFor(t, db)
  for (const [tag, payload, stop] of [['c', { blockMs: 1500 }, false], ['d', { waitMs: 300 }, true]] as const) {
    const outcome = client.request<string>(channel, { ...payload, tag }, { timeoutMs: 500 }).then(
      (reply) => `reply ${reply}`,
      (error: Error) => (error instanceof TimeoutError ? 'timeout' : `${error.name}`),
    )
    const line = await responder.nextLine('started ')
    const id = line.slice('started '.length)
    if (stop) responder.child.kill('SIGSTOP')
    assert.equal(await outcome, 'timeout', `request ${tag}`)
    if (stop) responder.child.kill('SIGCONT')
    await responder.nextLine(`finished ${id}`)
    // Cancelled by the caller (then deleted by the late reply) or refused as late: never replied.
    await waitFor(async () => (await stored(db, id))?.state !== 'claimed' && (await stored(db, id))?.state !== 'cancelled', {
      message: 'the late reply reaches the database',
    })
    const row = await stored(db, id)
    assert.ok(row === undefined || (row.state === 'failed' && row.error_code === 'PGRR_DEADLINE'), `request ${tag}: ${JSON.stringify(row)}`)
  }
})

test('one of two responders stopped under load: new requests go to the other within the lease, and it serves again once resumed', { timeout: 90_000 }, async (t) => {
  const channel = 'stall.frozen'
  const first = await startResponderProcess({ options: db.options, channel, behaviour: 'identity', name: 'first', concurrency: 16 })
  const second = await startResponderProcess({ options: db.options, channel, behaviour: 'identity', name: 'second', concurrency: 16 })
  started.push(first, second)
  const client = await clientFor(t, db, { poolSize: 4 })
  let frozenAt = Infinity
  let resumedAt = Infinity
  let stop = false
  const outcomes: { sentAt: number; ok: boolean; by?: string }[] = []
  const worker = async () => {
    while (!stop) {
      const sentAt = performance.now()
      try {
        const reply = await client.request<{ responder: string }>(channel, 'x', { timeoutMs: 1000 })
        outcomes.push({ sentAt, ok: true, by: reply.responder })
      } catch {
        outcomes.push({ sentAt, ok: false })
      }
    }
  }
  const workers = Array.from({ length: 16 }, worker)
  await waitFor(() => outcomes.filter((o) => o.by === 'first').length > 50, { message: 'both serve' })
  first.child.kill('SIGSTOP')
  frozenAt = performance.now()
  await waitFor(() => performance.now() - frozenAt > 5000, { timeoutMs: 10_000, message: 'frozen for 5 s' })
  first.child.kill('SIGCONT')
  resumedAt = performance.now()
  await waitFor(() => outcomes.some((o) => o.by === 'first' && o.sentAt > resumedAt), { timeoutMs: 20_000, message: 'the resumed responder serves again' })
  stop = true
  await Promise.all(workers)
  const later = outcomes.filter((o) => o.sentAt >= frozenAt + 2000 && o.sentAt < resumedAt)
  const succeeded = later.filter((o) => o.ok).length
  console.log(`sent 2 s or more after the freeze: ${succeeded} of ${later.length} succeeded; before that: ` +
    `${outcomes.filter((o) => o.sentAt >= frozenAt && o.sentAt < frozenAt + 2000 && !o.ok).length} timed out`)
  assert.ok(later.length > 100, `enough requests during the freeze (${later.length})`)
  assert.ok(succeeded >= later.length * 0.99, `${succeeded} of ${later.length} succeeded`)
})
