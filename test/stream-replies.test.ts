/**
 * Streamed replies from TypeScript (sql/protocol/14_stream.sql, src/client/stream.ts, src/responder/stream.ts):
 * parts in order and exactly once under load, backpressure (a slow reader holds the handler's send back),
 * cancellation mid-stream, large parts, the idle timeout, and bad input (a part after the final reply, a
 * part over the channel's limit, ctx.send() for a plain request). Nothing is left in the tables.
 */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { configureChannel } from '../src/channel-config.ts'
import { CancelledError, PayloadTooLargeError, RemoteError, StreamClosedError, TimeoutError, type HandlerContext } from '../src/index.ts'
import { aborted, clientFor, deferred, rejection, serverFor, useTestSchema, waitFor } from './helpers.ts'

const db = useTestSchema('stream')

/** Rows left in the stream tables (and requests) of the test schema. */
async function leftovers(): Promise<{ streams: number; parts: number; requests: number }> {
  const [row] = await db.sql.unsafe(`select (select count(*) from ${db.quoted}.pgrr_stream)::int as streams,
    (select count(*) from ${db.quoted}.pgrr_stream_part)::int as parts, (select count(*) from ${db.quoted}.pgrr_request)::int as requests`)
  return row as unknown as { streams: number; parts: number; requests: number }
}

async function nothingLeft(): Promise<void> {
  await waitFor(async () => {
    const left = await leftovers()
    return left.streams === 0 && left.parts === 0 && left.requests === 0
  }, { message: 'the stream tables and the request table empty' })
}

test('parts arrive in order, each once, then the final reply: 20 streams of 300 parts at once, ctx.send and a generator', { timeout: 120_000 }, async (t) => {
  await serverFor(t, db, 'stream.send', async (count: number, ctx: HandlerContext) => {
    for (let i = 1; i <= count; i++) await ctx.send(i % 3 === 0 ? `text ${i}` : { i })
    return { total: count }
  }, { concurrency: 20 })
  await serverFor(t, db, 'stream.gen', async function* (count: number) {
    for (let i = 1; i <= count; i++) yield i
    return 'done'
  }, { concurrency: 20 })
  const client = await clientFor(t, db)
  const count = 300
  const read = async (channel: string) => {
    const stream = client.requestStream(channel, count, { timeoutMs: 60_000, maxPartsInFlight: 16 })
    const parts: unknown[] = []
    for await (const part of stream) parts.push(part)
    return { parts, reply: await stream.reply }
  }
  const results = await Promise.all(Array.from({ length: 20 }, (_, k) => read(k % 2 === 0 ? 'stream.send' : 'stream.gen')))
  for (const [k, { parts, reply }] of results.entries()) {
    if (k % 2 === 0) {
      assert.deepEqual(parts, Array.from({ length: count }, (_, i) => ((i + 1) % 3 === 0 ? `text ${i + 1}` : { i: i + 1 })))
      assert.deepEqual(reply, { total: count })
    } else {
      assert.deepEqual(parts, Array.from({ length: count }, (_, i) => i + 1))
      assert.equal(reply, 'done')
    }
  }
  await nothingLeft()
})

test('order holds when the window refuses parts: 30 generator streams of 200 parts with windows of 1 to 3 parts', { timeout: 120_000 }, async (t) => {
  // A generator's parts are queued without waiting for their writes, so parts are refused for want of room
  // (or while the reader's acknowledgement holds the stream's row) while later ones are on their way: they
  // must still be written in order.
  await serverFor(t, db, 'stream.narrow', async function* (count: number) {
    for (let i = 1; i <= count; i++) yield i
    return 'done'
  }, { concurrency: 30 })
  const client = await clientFor(t, db)
  const read = async (window: number) => {
    const stream = client.requestStream('stream.narrow', 200, { timeoutMs: 60_000, maxPartsInFlight: window })
    const parts: unknown[] = []
    for await (const part of stream) parts.push(part)
    return parts
  }
  const results = await Promise.all(Array.from({ length: 30 }, (_, k) => read(1 + (k % 3))))
  for (const parts of results) assert.deepEqual(parts, Array.from({ length: 200 }, (_, i) => i + 1))
  await nothingLeft()
})

test('backpressure: a reader that takes nothing holds the handler at maxPartsInFlight parts; each part it takes lets more go', { timeout: 60_000 }, async (t) => {
  let written = 0
  const progress: (() => void)[] = []
  await serverFor(t, db, 'stream.slow', async (_payload: unknown, ctx: HandlerContext) => {
    for (let i = 1; i <= 40; i++) {
      await ctx.send(i)
      written = i
      for (const wake of progress.splice(0)) wake()
    }
    return 'end'
  })
  const wroteAtLeast = (n: number) =>
    new Promise<void>((resolve) => {
      const check = () => (written >= n ? resolve() : progress.push(check))
      check()
    })
  const client = await clientFor(t, db)
  const stream = client.requestStream('stream.slow', null, { timeoutMs: 30_000, maxPartsInFlight: 8 })
  await wroteAtLeast(8)
  // The ninth send waits for a credit: the database holds 8 parts nobody consumed. (Nothing to wait on for
  // an event that must not happen: its absence is checked after a database round trip that shows the
  // parts written, while the handler's send, if it were not held, would have been written long before.)
  await waitFor(async () => (await leftovers()).parts === 8, { message: '8 parts in the table' })
  assert.equal(written, 8)
  const iterator = stream[Symbol.asyncIterator]()
  const taken: unknown[] = []
  // Half the window taken: acknowledged, and the handler goes on by as much.
  for (let i = 0; i < 4; i++) taken.push((await iterator.next()).value)
  await wroteAtLeast(12)
  assert.ok(written <= 12, `the handler wrote ${written} parts with 4 consumed and a window of 8`)
  for (;;) {
    const step = await iterator.next()
    if (step.done === true) {
      assert.equal(step.value, 'end')
      break
    }
    taken.push(step.value)
  }
  assert.deepEqual(taken, Array.from({ length: 40 }, (_, i) => i + 1))
  await nothingLeft()
})

test('breaking out of the loop cancels the handler (its signal fires, its waiting send rejects) and deletes the stream', { timeout: 30_000 }, async (t) => {
  const signalled = deferred<unknown>()
  const sendError = deferred<unknown>()
  await serverFor(t, db, 'stream.cancel', async (_payload: unknown, ctx: HandlerContext) => {
    void aborted(ctx.signal).then((reason) => signalled.resolve(reason))
    try {
      for (let i = 1; ; i++) await ctx.send(i)
    } catch (error) {
      sendError.resolve(error)
      throw error
    }
  })
  const client = await clientFor(t, db)
  const stream = client.requestStream('stream.cancel', null, { timeoutMs: 30_000, maxPartsInFlight: 4 })
  const seen: unknown[] = []
  for await (const part of stream) {
    seen.push(part)
    if (seen.length === 10) break
  }
  assert.deepEqual(seen, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
  assert.ok((await signalled.promise) instanceof CancelledError)
  assert.ok((await sendError.promise) instanceof CancelledError)
  assert.ok((await rejection(stream.reply)) instanceof CancelledError)
  await nothingLeft()
})

test('an abort signal mid-stream ends the iteration with CancelledError', { timeout: 30_000 }, async (t) => {
  const signalled = deferred<unknown>()
  await serverFor(t, db, 'stream.abort', async (_payload: unknown, ctx: HandlerContext) => {
    await ctx.send('first')
    await aborted(ctx.signal).then((reason) => signalled.resolve(reason))
    return 'never'
  })
  const client = await clientFor(t, db)
  const controller = new AbortController()
  const stream = client.requestStream('stream.abort', null, { timeoutMs: 30_000, signal: controller.signal })
  const iterator = stream[Symbol.asyncIterator]()
  assert.equal((await iterator.next()).value, 'first')
  controller.abort()
  assert.ok((await rejection(iterator.next())) instanceof CancelledError)
  assert.ok((await signalled.promise) instanceof CancelledError)
  await nothingLeft()
})

test('large parts travel through the table, small ones in the NOTIFY, in one stream, in order', { timeout: 60_000 }, async (t) => {
  const sizes = [10, 1_000_000, 5, 8000, 3_000_000, 1]
  await serverFor(t, db, 'stream.large', async function* () {
    for (const [i, size] of sizes.entries()) yield String.fromCharCode(97 + i).repeat(size)
    return 'ok'
  })
  const client = await clientFor(t, db)
  const stream = client.requestStream<string>('stream.large', null, { timeoutMs: 30_000 })
  const got: string[] = []
  for await (const part of stream) got.push(part)
  assert.deepEqual(got.map((part) => part.length), sizes)
  assert.deepEqual(got.map((part) => part[0]), ['a', 'b', 'c', 'd', 'e', 'f'])
  assert.ok(got.every((part) => new Set(part).size === 1))
  assert.equal(await stream.reply, 'ok')
  await nothingLeft()
})

test('bad input: a part over the channel\'s limit is refused (the stream goes on), a part after the final reply and ctx.send() for request() get StreamClosedError', { timeout: 30_000 }, async (t) => {
  await configureChannel(db.options, 'stream.bad', { maxPayloadBytes: 1000 })
  let afterFinal: Promise<unknown> | undefined
  const errors: unknown[] = []
  await serverFor(t, db, 'stream.bad', async (payload: string, ctx: HandlerContext) => {
    if (payload === 'plain') {
      await ctx.send('x').catch((error: unknown) => errors.push(error))
      return 'plain reply'
    }
    await ctx.send('before')
    await ctx.send('y'.repeat(2000)).catch((error: unknown) => errors.push(error))
    await ctx.send('after')
    // Sent once the reply is written: too late.
    setImmediate(() => (afterFinal = ctx.send('late').then(() => 'sent', (error: unknown) => error)))
    return 'final'
  })
  const client = await clientFor(t, db)
  const stream = client.requestStream('stream.bad', 'stream', { timeoutMs: 10_000 })
  const parts: unknown[] = []
  for await (const part of stream) parts.push(part)
  assert.deepEqual(parts, ['before', 'after'])
  assert.equal(await stream.reply, 'final')
  assert.ok(errors[0] instanceof PayloadTooLargeError, String(errors[0]))
  await waitFor(() => afterFinal !== undefined)
  assert.ok((await afterFinal!) instanceof StreamClosedError)
  assert.equal(await client.request('stream.bad', 'plain', { timeoutMs: 10_000 }), 'plain reply')
  assert.ok(errors[1] instanceof StreamClosedError, String(errors[1]))
  await nothingLeft()
})

test('the handler\'s error ends the stream after its parts; with idleTimeoutMs a stream outlives timeoutMs while parts keep coming', { timeout: 30_000 }, async (t) => {
  await serverFor(t, db, 'stream.fail', async function* () {
    yield 1
    yield 2
    throw Object.assign(new Error('broken'), { code: 'BROKEN' })
  })
  await serverFor(t, db, 'stream.idle', async (count: number, ctx: HandlerContext) => {
    for (let i = 1; i <= count; i++) {
      await new Promise((resolve) => setTimeout(resolve, 100))
      await ctx.send(i)
    }
    return 'done'
  })
  const client = await clientFor(t, db)
  const failing = client.requestStream('stream.fail', null, { timeoutMs: 10_000 })
  const seen: unknown[] = []
  const error = await rejection((async () => {
    for await (const part of failing) seen.push(part)
  })())
  assert.deepEqual(seen, [1, 2])
  assert.ok(error instanceof RemoteError && error.remoteCode === 'BROKEN', String(error))

  // 12 parts 100 ms apart: 1.2 s in all, past a timeoutMs of 600 ms, never 600 ms without a part.
  const idle = client.requestStream('stream.idle', 12, { timeoutMs: 600, idleTimeoutMs: 600 })
  const parts: unknown[] = []
  for await (const part of idle) parts.push(part)
  assert.equal(parts.length, 12)
  assert.equal(await idle.reply, 'done')
  // Without it, the same stream times out.
  const bounded = client.requestStream('stream.idle', 12, { timeoutMs: 600 })
  assert.ok((await rejection(bounded.reply)) instanceof TimeoutError)
  await nothingLeft()
})

test('bad options: maxPartsInFlight out of range, idleTimeoutMs not a duration: InvalidOptionError from the iteration, nothing sent', { timeout: 30_000 }, async (t) => {
  let calls = 0
  await serverFor(t, db, 'stream.options', async function* () {
    calls++
    yield 1
    return 'never asked'
  })
  const client = await clientFor(t, db)
  for (const options of [{ maxPartsInFlight: 0 }, { maxPartsInFlight: 100_001 }, { maxPartsInFlight: 1.5 }, { idleTimeoutMs: -1 }]) {
    const stream = client.requestStream('stream.options', null, options)
    const error = await rejection((async () => {
      for await (const _part of stream) assert.fail('a part arrived')
    })())
    assert.equal((error as { code?: string }).code, 'INVALID_OPTION', `${JSON.stringify(options)}: ${String(error)}`)
    assert.equal((await rejection(stream.reply)).code, 'INVALID_OPTION')
  }
  assert.equal(calls, 0)
  await nothingLeft()
})
