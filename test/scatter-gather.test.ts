/**
 * Scatter-gather (client.requestAll): one request to every live responder of a channel, each addressed to
 * its responder alone. Responders in other processes are killed for real (SIGKILL); a slow one is reported
 * timed out at the deadline, by responder; each responder runs the request once and no other responder
 * ever runs it; max; cancellation by signal and by break; a responder with every slot busy runs its request
 * when a slot frees instead of giving it back.
 */
import assert from 'node:assert/strict'
import { after, test } from 'node:test'
import postgres from 'postgres'
import {
  CancelledError,
  InvalidOptionError,
  NoRespondersError,
  PayloadTooLargeError,
  ResponderLostError,
  TimeoutError,
  type HandlerContext,
  type RequestAllResult,
} from '../src/index.ts'
import { killAll, LineProcess } from './fixtures/failure-process.ts'
import type { ScatterResponderConfig } from './fixtures/scatter-responder.ts'
import { clientFor, databaseUrl, deferred, rejection, serverFor, useTestSchema, waitFor } from './helpers.ts'

const db = useTestSchema('scatter')
after(killAll)

/** A scatter-responder process that printed `ready`, and its responder id. */
async function startChild(config: Omit<ScatterResponderConfig, 'options'>): Promise<{ process: LineProcess; responderId: number }> {
  const child = new LineProcess(`responder ${config.name}`, ['test/fixtures/scatter-responder.ts', JSON.stringify({ ...config, options: db.options })])
  const ready = await child.nextLine('ready ')
  return { process: child, responderId: Number(ready.split(' ')[1]) }
}

/** Every outcome of an iteration, in order. */
async function collect<Reply>(iterable: AsyncIterable<RequestAllResult<Reply>>): Promise<RequestAllResult<Reply>[]> {
  const outcomes: RequestAllResult<Reply>[] = []
  for await (const outcome of iterable) outcomes.push(outcome)
  return outcomes
}

/** A handler that records its calls and hangs until its signal fires (then rejects with the reason). */
function hangingHandler(name: string, calls: string[], aborted?: (code: string) => void) {
  return (_payload: unknown, ctx: HandlerContext) => {
    calls.push(name)
    return new Promise((_resolve, reject) =>
      ctx.signal.addEventListener('abort', () => {
        aborted?.((ctx.signal.reason as { code?: string }).code ?? 'unknown')
        reject(ctx.signal.reason as Error)
      }),
    )
  }
}

test('3 responders, one killed mid-request and one slow: a reply, ResponderLostError and TimeoutError, each by its responder, each run once', { timeout: 60_000 }, async (t) => {
  const channel = 'scatter.three'
  const fast = await startChild({ channel, name: 'fast', mode: 'answer' })
  const doomed = await startChild({ channel, name: 'doomed', mode: 'hang' })
  const slow = await startChild({ channel, name: 'slow', mode: 'hang' })
  const client = await clientFor(t, db)

  const outcomes = collect(client.requestAll<{ by: string; payload: unknown }>(channel, { drop: 'key-1' }, { timeoutMs: 8000 }))
  await doomed.process.nextLine('start ')
  await slow.process.nextLine('start ')
  const exit = await doomed.process.kill('SIGKILL')
  assert.equal(exit.signal, 'SIGKILL')
  const results = await outcomes

  assert.equal(results.length, 3)
  const byResponder = new Map(results.map((result) => [result.responder.id, result]))
  assert.equal(byResponder.size, 3, 'one outcome per responder')
  const fastResult = byResponder.get(fast.responderId)
  assert.deepEqual(fastResult?.reply, { by: 'fast', payload: { drop: 'key-1' } })
  assert.ok(byResponder.get(doomed.responderId)?.error instanceof ResponderLostError, String(byResponder.get(doomed.responderId)?.error))
  assert.ok(byResponder.get(slow.responderId)?.error instanceof TimeoutError, String(byResponder.get(slow.responderId)?.error))
  // The slow one last: it is reported at the deadline, when the others have long answered or been found dead.
  assert.equal(results[2]!.responder.id, slow.responderId)
  assert.equal(results[0]!.responder.pid !== null && results[0]!.responder.host !== null, true)

  // Each surviving responder ran it once, and the doomed one's request never went to another.
  for (const child of [fast, slow]) {
    assert.equal(child.process.stdoutLines.filter((line) => line.startsWith('start ')).length, 1, child.process.name)
  }
  // Nothing is left behind: the slow one's request was cancelled at the deadline (its handler aborted,
  // its row deleted by its reply), the lost one was read and acknowledged.
  await waitFor(async () => (await db.sql.unsafe(`select count(*)::int as n from ${db.quoted}.pgrr_request where kind is not null`))[0]?.n === 0, {
    message: 'the addressed requests are gone',
  })
  for (const child of [fast, slow]) {
    child.process.child.stdin?.end()
    assert.equal((await child.process.exited).code, 0)
  }
})

test('max: that many responders are addressed, each once; out of range is an InvalidOptionError; none live is NoRespondersError', { timeout: 30_000 }, async (t) => {
  const channel = 'scatter.max'
  const calls: string[] = []
  for (const name of ['a', 'b', 'c']) {
    await serverFor(t, db, channel, (payload: number, ctx) => {
      calls.push(name)
      return { name, doubled: payload * 2, attempt: ctx.attempt }
    })
  }
  const client = await clientFor(t, db)
  const two = await collect(client.requestAll<{ name: string; doubled: number }>(channel, 21, { max: 2, timeoutMs: 10_000 }))
  assert.equal(two.length, 2)
  assert.equal(new Set(two.map((result) => result.responder.id)).size, 2)
  for (const result of two) assert.equal(result.reply?.doubled, 42)
  assert.deepEqual([...calls].sort(), two.map((result) => result.reply!.name).sort())

  calls.length = 0
  const all = await collect(client.requestAll(channel, 1, { timeoutMs: 10_000 }))
  assert.equal(all.length, 3)
  assert.deepEqual([...calls].sort(), ['a', 'b', 'c'])
  const more = await collect(client.requestAll(channel, 1, { max: 10, timeoutMs: 10_000 }))
  assert.equal(more.length, 3)

  for (const max of [0, -1, 1.5, 10_001, Number.NaN]) {
    const error = await rejection(collect(client.requestAll(channel, 1, { max })))
    assert.ok(error instanceof InvalidOptionError, `max ${max}: ${error.name}`)
  }
  assert.ok((await rejection(collect(client.requestAll('scatter.nobody', 1)))) instanceof NoRespondersError)
  // A request of a scatter-gather travels inside its NOTIFY: a larger one is refused, and nothing is stored.
  assert.ok((await rejection(collect(client.requestAll(channel, 'x'.repeat(9000))))) instanceof PayloadTooLargeError)
  const [left] = await db.sql.unsafe(`select count(*)::int as n from ${db.quoted}.pgrr_request where kind is not null and state not in ('replied')`)
  assert.equal(left?.n, 0)
})

test('cancellation: aborting the signal and breaking out of the loop both cancel the requests not yet answered', { timeout: 30_000 }, async (t) => {
  const channel = 'scatter.cancel'
  const calls: string[] = []
  const aborts: string[] = []
  const bothAborted = deferred()
  const onAbort = (code: string) => {
    aborts.push(code)
    if (aborts.length === 2) bothAborted.resolve()
  }
  await serverFor(t, db, channel, (payload: string, ctx) => (payload === 'quick' ? 'quick reply' : hangingHandler('hang', calls, onAbort)(payload, ctx)))
  await serverFor(t, db, channel, (payload: string, ctx) => hangingHandler('hang', calls, onAbort)(payload, ctx))
  const client = await clientFor(t, db)

  // Signal: the iteration throws CancelledError; both handlers' signals fire.
  const controller = new AbortController()
  const iteration = collect(client.requestAll(channel, 'slow', { signal: controller.signal, timeoutMs: 20_000 }))
  await waitFor(() => calls.length === 2, { message: 'both handlers started' })
  controller.abort()
  assert.ok((await rejection(iteration)) instanceof CancelledError)
  await bothAborted.promise
  assert.deepEqual(aborts, ['CANCELLED', 'CANCELLED'])

  // Break after the first answer: the other one is cancelled.
  aborts.length = 0
  calls.length = 0
  const oneAborted = deferred()
  const second = await serverFor(t, db, 'scatter.break', (payload: string, ctx) => hangingHandler('hang', calls, () => oneAborted.resolve())(payload, ctx))
  await serverFor(t, db, 'scatter.break', () => 'first')
  for await (const outcome of client.requestAll('scatter.break', 'x', { timeoutMs: 20_000 })) {
    assert.equal(outcome.reply, 'first')
    break
  }
  await oneAborted.promise
  await waitFor(() => second.running === 0, { message: 'the hanging handler ended' })
  await waitFor(async () => (await db.sql.unsafe(`select count(*)::int as n from ${db.quoted}.pgrr_request where kind is not null and state = 'cancelled'`))[0]?.n === 0, {
    message: 'the cancelled requests are deleted',
  })
})

test('a responder with every slot busy runs its request when a slot frees: never given back, never run by another', { timeout: 30_000 }, async (t) => {
  const channel = 'scatter.busy'
  const calls: string[] = []
  const release = deferred<string>()
  const busy = await serverFor(t, db, channel, async (payload: string) => {
    calls.push(`busy:${payload}`)
    if (payload === 'hold') return release.promise
    return 'busy answered'
  }, { concurrency: 1 })
  const client = await clientFor(t, db)
  const held = client.request(channel, 'hold', { timeoutMs: 20_000 })
  await waitFor(() => busy.running === 1, { message: 'the only slot is busy' })
  await serverFor(t, db, channel, (payload: string) => {
    calls.push(`idle:${payload}`)
    return 'idle answered'
  })

  const outcomes: RequestAllResult<string>[] = []
  for await (const outcome of client.requestAll<string>(channel, 'all', { timeoutMs: 20_000 })) {
    outcomes.push(outcome)
    // The idle responder answers first; the busy one's request waits for its slot.
    if (outcomes.length === 1) {
      assert.equal(outcome.reply, 'idle answered')
      release.resolve('released')
    }
  }
  assert.equal(await held, 'released')
  assert.deepEqual(outcomes.map((outcome) => outcome.reply), ['idle answered', 'busy answered'])
  assert.equal(outcomes[1]!.responder.id, busy.responderId)
  assert.deepEqual(calls, ['busy:hold', 'idle:all', 'busy:all'])
})

test('SQL callers: request_all returns one id per live responder, each awaited with await_reply', { timeout: 30_000 }, async (t) => {
  const channel = 'scatter.sql'
  const servers = [
    await serverFor(t, db, channel, (payload: string) => `one:${payload}`),
    await serverFor(t, db, channel, (payload: string) => `two:${payload}`),
  ]
  const rows = await db.sql.unsafe<{ id: string; responder_id: number }[]>(
    `select id::text, responder_id from ${db.quoted}.request_all($1, 'hi', interval '10 seconds')`,
    [channel],
  )
  assert.deepEqual(rows.map((row) => row.responder_id).sort(), servers.map((server) => server.responderId!).sort())
  const replies: string[] = []
  for (const row of rows) {
    const [reply] = await db.sql.unsafe(`select ${db.quoted}.await_reply($1::bigint) as reply`, [row.id])
    replies.push(reply?.reply as string)
  }
  assert.deepEqual(replies.sort(), ['one:hi', 'two:hi'])
  const json = await db.sql.unsafe(`select id::text from ${db.quoted}.request_all($1, '{"a": 1}'::jsonb, max => 1)`, [channel])
  assert.equal(json.length, 1)
  const [reply] = await db.sql.unsafe(`select ${db.quoted}.await_reply_json($1::bigint) as reply`, [json[0]!.id])
  assert.match(String(reply?.reply), /^(one|two):\[object Object\]$/)

  const noResponders = await rejection(db.sql.unsafe(`select * from ${db.quoted}.request_all('scatter.nobody', 'x')`))
  assert.equal((noResponders as Error & { code?: string }).code, 'PR001')
  const badMax = await rejection(db.sql.unsafe(`select * from ${db.quoted}.request_all($1, 'x', max => 0)`, [channel]))
  assert.equal((badMax as Error & { code?: string }).code, '22023')
})

test('the protocol keeps an addressed request its responder\'s: given back it ends lost, and an SQL caller\'s whose responder left before the commit too', { timeout: 30_000 }, async (t) => {
  const s = db.quoted
  // A responder made of a session of its own: it registers, is handed a request, and gives it back.
  // Sessions of their own (the schema's admin connection has two, for the reads below).
  const sessions = postgres(databaseUrl(), { max: 2, onnotice: () => {} })
  t.after(() => sessions.end({ timeout: 5 }))
  const responder = await sessions.reserve()
  t.after(() => responder.release())
  const [registered] = await responder.unsafe<{ responder_id: number }[]>(`select responder_id from ${s}.pgrr_register('scatter.protocol', 'test', 0, 1)`)
  const responderId = registered!.responder_id
  const [sent] = await db.sql.unsafe<{ id: string; status: string }[]>(
    `select id::text, status from ${s}.pgrr_send_all('pgrr_scatter_test_replies', 'scatter.protocol', 'x', false, 10000, null, null, 'all')`,
  )
  assert.equal(sent?.status, 'ok')
  await responder.unsafe(`select ${s}.pgrr_decline($1, array[$2::bigint])`, [responderId, sent!.id])
  const [declined] = await db.sql.unsafe(`select state, responder_id from ${s}.pgrr_request where id = $1`, [sent!.id])
  assert.deepEqual({ ...declined }, { state: 'lost', responder_id: responderId })

  // An SQL caller's request_all in a transaction whose responder unregisters before the commit: lost, never queued.
  const caller = await sessions.reserve()
  t.after(() => caller.release())
  await caller.unsafe('begin')
  const [row] = await caller.unsafe<{ id: string }[]>(`select id::text from ${s}.request_all('scatter.protocol', 'y')`)
  await responder.unsafe(`select ${s}.pgrr_unregister($1)`, [responderId])
  await caller.unsafe('commit')
  const [stored] = await db.sql.unsafe(`select state, responder_id from ${s}.pgrr_request where id = $1`, [row!.id])
  assert.deepEqual({ ...stored }, { state: 'lost', responder_id: responderId })
  const lost = await rejection(caller.unsafe(`select ${s}.await_reply($1::bigint)`, [row!.id]))
  assert.equal((lost as Error & { code?: string }).code, 'PR004')
})
