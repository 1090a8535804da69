/**
 * Streamed replies from SQL: request_stream() and a loop of await_part(), one part at a time, in order,
 * then the final reply; the window holds the handler back until the SQL caller consumes; the psql loop of
 * docs/streams.md; bad input (a wrong id, another login's stream); a cancellation the responder learns from
 * a part's write or from its read of the credits. Nothing is left in the tables.
 */
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import { test, type TestContext } from 'node:test'
import postgres from 'postgres'
import { CancelledError, type HandlerContext } from '../src/index.ts'
import { aborted, databaseUrl, deferred, repoRoot, serverFor, useTestSchema, waitFor } from './helpers.ts'

const db = useTestSchema('stream_sql')

async function left(): Promise<number> {
  const [row] = await db.sql.unsafe(`select (select count(*) from ${db.quoted}.pgrr_stream)::int + (select count(*) from ${db.quoted}.pgrr_stream_part)::int
    + (select count(*) from ${db.quoted}.pgrr_request)::int as left`)
  return Number(row?.left)
}

test('await_part reads the parts in order, each once, then the final reply; a slow SQL reader holds the handler back', { timeout: 60_000 }, async (t) => {
  let written = 0
  await serverFor(t, db, 'sql.stream', async (count: number, ctx: HandlerContext) => {
    for (let i = 1; i <= count; i++) {
      await ctx.send(i % 2 === 0 ? { i } : `part ${i}`)
      written = i
    }
    return 'the end'
  })
  const sql = postgres(databaseUrl(), { max: 1, onnotice: () => {} })
  t.after(() => sql.end({ timeout: 1 }))
  const [request] = await sql.unsafe(`select ${db.quoted}.request_stream('sql.stream', '50'::jsonb, interval '30 seconds', null, 4) as id`)
  const id = String(request?.id)
  await waitFor(() => written === 4, { message: 'the first window written' })
  await waitFor(async () => {
    const [row] = await db.sql.unsafe(`select count(*)::int as n from ${db.quoted}.pgrr_stream_part`)
    return row?.n === 4
  })
  assert.equal(written, 4)
  const parts: string[] = []
  let final: string | undefined
  for (;;) {
    const [row] = await sql.unsafe(`select part, is_final from ${db.quoted}.await_part($1)`, [id])
    if (row?.is_final === true) {
      final = String(row.part)
      break
    }
    parts.push(String(row?.part))
  }
  assert.deepEqual(parts, Array.from({ length: 50 }, (_, k) => (k % 2 === 1 ? JSON.stringify({ i: k + 1 }) : `part ${k + 1}`)))
  assert.equal(final, 'the end')
  assert.equal(await left(), 0)
  // Consumed: the id is unknown now.
  await assert.rejects(sql.unsafe(`select * from ${db.quoted}.await_part($1)`, [id]), { code: 'PR005' })
})

test('the psql loop of docs/streams.md prints every part, then the reply', { timeout: 60_000 }, async (t) => {
  await serverFor(t, db, 'sql.tokens', async function* (prompt: string) {
    for (const word of prompt.split(' ')) yield word
    return `${prompt.split(' ').length} words`
  })
  // The loop of docs/streams.md, on this test's channel.
  const docs = await readFile(path.join(repoRoot, 'docs', 'streams.md'), 'utf8')
  const loop = /<!-- stream-sql-example[^>]*-->\n```sql\n([\s\S]*?)```/.exec(docs)?.[1]
  assert.ok(loop !== undefined, 'the loop of docs/streams.md')
  const script = `set search_path = ${db.quoted};\n${loop.replace("'tokens'", "'sql.tokens'").replace("'Tell me a story'", "'one two three'")}`
  // From a file (here stdin), not -c: psql sends -c's statements as one transaction, where DO cannot COMMIT.
  // Not spawnSync: the responder runs in this process.
  const child = spawn('psql', [databaseUrl(), '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-f', '-'], { stdio: ['pipe', 'pipe', 'pipe'] })
  let stderr = ''
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk))
  child.stdin.end(script)
  const [status] = (await once(child, 'close')) as [number]
  const psql = { status, stderr }
  assert.equal(psql.status, 0, psql.stderr)
  assert.deepEqual(psql.stderr.trim().split('\n').map((line) => line.replace(/^.*NOTICE:\s+/, '')), ['one', 'two', 'three', '3 words'])
  assert.equal(await left(), 0)
})

test('await_part of a plain request returns its reply as the final part; an unknown id is PR005', { timeout: 30_000 }, async (t) => {
  await serverFor(t, db, 'sql.plain', (text: string) => text.toUpperCase())
  const sql = postgres(databaseUrl(), { max: 1, onnotice: () => {} })
  t.after(() => sql.end({ timeout: 1 }))
  const [request] = await sql.unsafe(`select ${db.quoted}.request('sql.plain', 'hello') as id`)
  const [row] = await sql.unsafe(`select part, is_final from ${db.quoted}.await_part($1)`, [String(request?.id)])
  assert.deepEqual({ ...row }, { part: 'HELLO', is_final: true })
  await assert.rejects(sql.unsafe(`select * from ${db.quoted}.await_part(42)`), { code: 'PR005' })
  await assert.rejects(sql.unsafe(`select ${db.quoted}.request_stream('sql.plain', 'x', null, null, 0)`), { code: '22023' })
})

test('a stream whose caller went away is swept with its request: no part is left behind', { timeout: 30_000 }, async (t) => {
  let sent = 0
  await serverFor(t, db, 'sql.abandoned', async (_payload: unknown, ctx: HandlerContext) => {
    for (;;) {
      await ctx.send('x')
      sent++
    }
  })
  const sql = postgres(databaseUrl(), { max: 1, onnotice: () => {} })
  t.after(() => sql.end({ timeout: 1 }))
  // Nobody reads it: the handler fills the window (2) and waits, until the deadline ends it.
  await sql.unsafe(`select ${db.quoted}.request_stream('sql.abandoned', 'x', interval '300 milliseconds', null, 2)`)
  await waitFor(async () => {
    const [row] = await db.sql.unsafe(`select state from ${db.quoted}.pgrr_request`)
    return row?.state === 'failed'
  }, { message: 'the request ended at its deadline' })
  assert.equal(sent, 2)
  assert.ok((await left()) > 0)
  // The sweep, with no grace (responders run it with 5 s).
  await db.sql.unsafe(`select ${db.quoted}.pgrr_sweep_older_than(interval '0')`)
  assert.equal(await left(), 0)
})

/**
 * A handler that sends parts until a send fails, and an SQL caller's stream of it (window `window`) that
 * the test cancels as pgrr_cancel would, without the NOTIFY that tells the responder (lost, or slower than
 * what the responder learns otherwise).
 */
async function cancelledWithoutNotify(t: TestContext, channel: string, window: number, sentBefore: number) {
  const state = { sent: 0 }
  const signalled = deferred<unknown>()
  const sendError = deferred<unknown>()
  await serverFor(t, db, channel, async (_payload: unknown, ctx: HandlerContext) => {
    void aborted(ctx.signal).then((reason) => signalled.resolve(reason))
    try {
      for (;;) {
        await ctx.send(state.sent + 1)
        state.sent++
      }
    } catch (error) {
      sendError.resolve(error)
      throw error
    }
  })
  const sql = postgres(databaseUrl(), { max: 1, onnotice: () => {} })
  t.after(() => sql.end({ timeout: 1 }))
  const [request] = await sql.unsafe(`select ${db.quoted}.request_stream($1, 'x', interval '60 seconds', null, $2) as id`, [channel, window])
  const id = String(request?.id)
  await waitFor(() => state.sent >= sentBefore, { message: `${sentBefore} parts written` })
  await db.sql.unsafe(`update ${db.quoted}.pgrr_request set state = 'cancelled', finished_at = clock_timestamp() where id = $1`, [id])
  // Each ends with the handler failing with CancelledError, its signal fired, and nothing left.
  assert.ok((await sendError.promise) instanceof CancelledError)
  assert.ok((await signalled.promise) instanceof CancelledError)
  await sql.unsafe(`select * from ${db.quoted}.pgrr_stream_finish($1, 0, false)`, [id])
  await waitFor(async () => (await left()) === 0, { message: 'nothing left' })
  return state.sent
}

test('a stream cancelled without its NOTIFY reaching the responder: the next part\'s write tells, and the handler\'s signal fires', { timeout: 30_000 }, async (t) => {
  await cancelledWithoutNotify(t, 'sql.deleted', 100000, 3)
})

test('a handler waiting for room in the window of a stream cancelled without its NOTIFY: the credit read tells, and its signal fires', { timeout: 30_000 }, async (t) => {
  // Nobody reads: the handler fills the window (2) and waits for a credit, which will not come either.
  assert.equal(await cancelledWithoutNotify(t, 'sql.blocked', 2, 2), 2)
})
