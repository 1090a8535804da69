/**
 * Deadlines. A responder never starts a request past its deadline, however long it sat in the table; and the
 * handler's AbortSignal fires when the caller cancels, when the caller times out, and at the deadline itself
 * (a SQL caller that never awaits: nobody cancels, only the deadline can stop the handler).
 */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import postgres from 'postgres'
import type { HandlerContext } from '../src/index.ts'
import { since } from './fixtures/failure-process.ts'
import { aborted, clientFor, databaseUrl, deferred, rejection, requestRows, serverFor, useTestSchema, waitFor, type Deferred } from './helpers.ts'

const db = useTestSchema('fail_deadline')

test('a request that waited past its deadline is never handed to a handler', { timeout: 60_000 }, async (t) => {
  const channel = 'deadline.expired'
  const release = deferred()
  const starts: { payload: string; lateMs: number }[] = []
  await serverFor(t, db, channel, async (payload: string, ctx: HandlerContext) => {
    starts.push({ payload, lateMs: Date.now() - ctx.deadline.getTime() })
    if (payload === 'blocker') await release.promise
    return `done ${payload}`
  }, { concurrency: 1, sweepIntervalMs: 200 })
  t.after(() => release.resolve())
  const client = await clientFor(t, db)
  const blocker = client.request(channel, 'blocker', { timeoutMs: 30_000 })
  await waitFor(() => starts.length === 1, { message: 'the blocker runs' })

  // SQL callers that never await: nothing cancels these, they just expire in the table.
  const sql = postgres(databaseUrl(), { max: 1, onnotice: () => {} })
  t.after(() => sql.end({ timeout: 1 }))
  const expired: string[] = []
  for (let i = 0; i < 5; i++) {
    const [row] = await sql.unsafe(`select ${db.quoted}.request($1, $2, interval '300 milliseconds') as id`, [channel, `short-${i}`])
    expired.push(String(row?.id))
  }
  const [fresh] = await sql.unsafe(`select ${db.quoted}.request($1, 'fresh', interval '30 seconds') as id`, [channel])
  // Wait (on the database's clock) until their deadlines passed while the only slot was busy.
  await waitFor(async () => {
    const rows = await db.sql.unsafe(`select count(*)::int as n from ${db.quoted}.pgrr_request where payload like 'short-%' and deadline < clock_timestamp()`)
    return rows[0]?.n === 5
  }, { message: 'the short requests expire' })
  release.resolve()
  assert.equal(await blocker, 'done blocker')
  const [answer] = await sql.unsafe(`select ${db.quoted}.await_reply($1) as reply`, [fresh?.id])
  assert.equal(answer?.reply, 'done fresh', 'the request behind the expired ones was served')
  assert.deepEqual(starts.map((s) => s.payload), ['blocker', 'fresh'], 'no expired request was started')
  for (const start of starts) assert.ok(start.lateMs < 0, `${start.payload} started ${start.lateMs} ms after its deadline`)
  // Awaiting an expired request reports the timeout; the sweeper then removes it (5 s after its deadline).
  const error = await sql.unsafe(`select ${db.quoted}.await_reply($1)`, [expired[0]!]).then(() => undefined, (e: { code?: string }) => e.code)
  assert.ok(error === 'PR002' || error === 'PR005', `await_reply of an expired request: ${String(error)}`)
  await waitFor(async () => (await requestRows(db, channel)).length === 0, { timeoutMs: 15_000, intervalMs: 200, message: 'the sweeper removes the expired requests' })
})

test("the handler's signal fires on caller cancel, caller timeout, and at the deadline", { timeout: 60_000 }, async (t) => {
  const channel = 'deadline.signal'
  const handlers = new Map<string, { signal: AbortSignal; startedAt: number; deadline: Date }>()
  const started = new Map<string, Deferred<void>>()
  for (const name of ['cancel', 'timeout', 'deadline']) started.set(name, deferred())
  await serverFor(t, db, channel, (payload: string, ctx: HandlerContext) => {
    handlers.set(payload, { signal: ctx.signal, startedAt: performance.now(), deadline: ctx.deadline })
    started.get(payload)?.resolve()
    // Ignores its signal on purpose: the outcome is the library's business.
    return new Promise((resolve) => setTimeout(resolve, 20_000, 'too late').unref())
  })
  const client = await clientFor(t, db)

  // Caller cancel.
  const controller = new AbortController()
  const cancelled = rejection(client.request(channel, 'cancel', { signal: controller.signal, timeoutMs: 30_000 }))
  await started.get('cancel')!.promise
  const abortAt = performance.now()
  controller.abort()
  assert.equal((await cancelled).code, 'CANCELLED')
  const cancelReason = (await aborted(handlers.get('cancel')!.signal)) as { code?: string }
  const cancelMs = since(abortAt)

  // Caller timeout.
  const timedOut = rejection(client.request(channel, 'timeout', { timeoutMs: 400 }))
  await started.get('timeout')!.promise
  assert.equal((await timedOut).code, 'TIMEOUT')
  const timeoutAt = performance.now()
  const timeoutReason = (await aborted(handlers.get('timeout')!.signal)) as { code?: string }
  const timeoutMs = since(timeoutAt)

  // Deadline, with no caller left to cancel: a SQL request that is never awaited.
  const sql = postgres(databaseUrl(), { max: 1, onnotice: () => {} })
  t.after(() => sql.end({ timeout: 1 }))
  await sql.unsafe(`select ${db.quoted}.request($1, 'deadline', interval '600 milliseconds')`, [channel])
  await started.get('deadline')!.promise
  const deadlineReason = (await aborted(handlers.get('deadline')!.signal)) as { code?: string }
  const { deadline } = handlers.get('deadline')!
  const lateMs = Date.now() - deadline.getTime()

  console.log(
    `handler signal: cancel -> ${cancelReason.code} after ${cancelMs} ms; caller timeout -> ${timeoutReason.code} after ${timeoutMs} ms; ` +
      `deadline -> ${deadlineReason.code} ${lateMs} ms after ctx.deadline`,
  )
  assert.equal(cancelReason.code, 'CANCELLED')
  assert.ok(['CANCELLED', 'TIMEOUT'].includes(timeoutReason.code ?? ''), `timeout reason ${String(timeoutReason.code)}`)
  assert.equal(deadlineReason.code, 'TIMEOUT')
  assert.ok(cancelMs < 2000 && timeoutMs < 2000, 'the caller side reaches the handler promptly')
  assert.ok(lateMs > -50 && lateMs < 1000, `the deadline signal fired ${lateMs} ms after ctx.deadline`)
})

test('a request made in a transaction that outlives its deadline is never started; its awaiter gets PR002', { timeout: 60_000 }, async (t) => {
  const channel = 'deadline.transaction'
  const starts: string[] = []
  await serverFor(t, db, channel, (payload: string) => {
    starts.push(payload)
    return `done ${payload}`
  })
  const sql = postgres(databaseUrl(), { max: 1, onnotice: () => {} })
  t.after(() => sql.end({ timeout: 1 }))
  // Stored in the queue (its NOTIFY goes out at the commit); the transaction then goes on past the
  // request's deadline, by the database's clock, and no claim takes a request past its deadline.
  const id = await sql.begin(async (tx) => {
    const [row] = await tx.unsafe(`select ${db.quoted}.request($1, 'late', interval '300 milliseconds') as id`, [channel])
    await waitFor(async () => {
      const [late] = await tx.unsafe(`select deadline < clock_timestamp() as past from ${db.quoted}.pgrr_request where id = $1`, [row?.id])
      return late?.past === true
    }, { message: 'the deadline passes inside the transaction' })
    return String(row?.id)
  })
  const code = await sql.unsafe(`select ${db.quoted}.await_reply($1)`, [id]).then(() => 'replied', (e: { code?: string }) => e.code)
  assert.equal(code, 'PR002', 'the awaiter gets the timeout')
  // A request after it is served: the late one was not left in the responder's hands.
  const [next] = await sql.unsafe(`select ${db.quoted}.request($1, 'next') as id`, [channel])
  const [reply] = await sql.unsafe(`select ${db.quoted}.await_reply($1) as reply`, [next?.id])
  assert.equal(reply?.reply, 'done next')
  assert.deepEqual(starts, ['next'], 'the late request was never started')
})

test("a request's deadline counts the time it waited for a slot: ctx.deadline is the caller's own", { timeout: 60_000 }, async (t) => {
  const channel = 'deadline.queued'
  const release = deferred()
  const deadlines = new Map<string, Date>()
  await serverFor(t, db, channel, async (payload: string, ctx: HandlerContext) => {
    deadlines.set(payload, ctx.deadline)
    if (payload === 'first') await release.promise
    return payload
  })
  t.after(() => release.resolve())
  const client = await clientFor(t, db, { maxInFlight: 1 })
  const first = client.request(channel, 'first')
  await waitFor(() => deadlines.has('first'), { message: 'the first request runs' })
  const calledAt = Date.now()
  const timeoutMs = 5000
  const second = client.request(channel, 'second', { timeoutMs })
  // The second waits for the only slot; how long it waits is what the test is about.
  await waitFor(() => Date.now() - calledAt >= 500, { message: 'time passes' })
  release.resolve()
  assert.equal(await first, 'first')
  assert.equal(await second, 'second')
  const deadline = deadlines.get('second')!.getTime()
  assert.ok(deadline <= calledAt + timeoutMs + 50, `ctx.deadline is ${deadline - calledAt} ms after the call, for a timeout of ${timeoutMs} ms`)
})
