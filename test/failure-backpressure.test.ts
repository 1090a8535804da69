/**
 * Backpressure. A responder never runs more than `concurrency` handlers (measured inside the handler); with
 * every slot busy, requests wait in the table and are claimed oldest first as slots free up; a client keeps at
 * most `maxInFlight` requests in flight and either rejects the rest at once (overflow 'reject') or queues them
 * without losing any (overflow 'wait'), and a queued request that gave up does not keep the next one waiting.
 */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { TooManyRequestsError, type Server } from '../src/index.ts'
import { since } from './fixtures/failure-process.ts'
import { clientFor, deferred, rejection, requestRows, serverFor, useTestSchema, waitFor, type Deferred } from './helpers.ts'

const db = useTestSchema('fail_backpressure')

/** A handler that counts how many of its calls run at once. */
function counting(delayMs: () => number) {
  const stats = { running: 0, max: 0, calls: 0 }
  const handler = async (payload: unknown) => {
    stats.calls++
    stats.max = Math.max(stats.max, ++stats.running)
    await new Promise((resolve) => setTimeout(resolve, delayMs()))
    stats.running--
    return payload
  }
  return { stats, handler }
}

test('a responder never runs more than `concurrency` handlers at once', { timeout: 60_000 }, async (t) => {
  const channel = 'bp.concurrency'
  const a = counting(() => 2 + Math.random() * 10)
  const b = counting(() => 2 + Math.random() * 10)
  await serverFor(t, db, channel, a.handler, { concurrency: 3 })
  await serverFor(t, db, channel, b.handler, { concurrency: 3 })
  const client = await clientFor(t, db)
  const replies = await Promise.all(Array.from({ length: 400 }, (_, i) => client.request(channel, i, { timeoutMs: 30_000 })))
  assert.deepEqual(replies, Array.from({ length: 400 }, (_, i) => i))
  console.log(`most handlers at once: ${a.stats.max} and ${b.stats.max} (concurrency 3 each); calls ${a.stats.calls} + ${b.stats.calls}`)
  assert.ok(a.stats.max <= 3 && b.stats.max <= 3)
  assert.equal(a.stats.calls + b.stats.calls, 400)
})

test('with every slot busy, requests wait in the table and are claimed oldest first', { timeout: 60_000 }, async (t) => {
  const channel = 'bp.order'
  const gates = new Map<string, Deferred<void>>()
  const started: string[] = []
  const startedEvent = new Map<number, Deferred<void>>()
  const server: Server = await serverFor(t, db, channel, async (payload: string) => {
    started.push(payload)
    startedEvent.get(started.length)?.resolve()
    const gate = deferred()
    gates.set(payload, gate)
    await gate.promise
    return payload
  }, { concurrency: 2 })
  t.after(() => gates.forEach((gate) => gate.resolve()))
  const nthStart = (n: number) => {
    if (started.length >= n) return Promise.resolve()
    const event = deferred()
    startedEvent.set(n, event)
    return event.promise
  }
  const client = await clientFor(t, db)
  const replies: Promise<unknown>[] = []
  for (const payload of ['busy-0', 'busy-1']) replies.push(client.request(channel, payload, { timeoutMs: 30_000 }))
  await nthStart(2)
  // One at a time, each in the table before the next: their order of arrival is certain. A lone request is
  // handed to the responder, which has no free slot and gives it back: wait until it is pending again.
  const queued = Array.from({ length: 8 }, (_, i) => `queued-${i}`)
  for (const [i, payload] of queued.entries()) {
    replies.push(client.request(channel, payload, { timeoutMs: 30_000 }))
    await waitFor(async () => {
      const rows = await requestRows(db, channel)
      return rows.length === 3 + i && rows.filter((row) => row.state === 'pending').length === 1 + i
    }, { message: `${payload} is stored and waits` })
  }
  const states = (await requestRows(db, channel)).map((row) => row.state)
  console.log(`with 2 slots busy: ${states.filter((s) => s === 'claimed').length} claimed, ${states.filter((s) => s === 'pending').length} pending`)
  assert.deepEqual(states.sort(), [...Array(2).fill('claimed'), ...Array(8).fill('pending')].sort())
  assert.equal(server.running, 2)
  // Free one slot at a time: each time the oldest waiting request starts.
  for (let i = 0; i < 10; i++) {
    gates.get(started[i]!)!.resolve()
    if (i < 8) await nthStart(3 + i)
  }
  assert.deepEqual(started, ['busy-0', 'busy-1', ...queued])
  assert.deepEqual(await Promise.all(replies), ['busy-0', 'busy-1', ...queued])
})

test("maxInFlight with overflow 'reject': TooManyRequestsError at once, and a slot is usable again once freed", async (t) => {
  const channel = 'bp.reject'
  const release = deferred()
  await serverFor(t, db, channel, async (payload: unknown) => {
    if (payload !== 'quick') await release.promise
    return payload
  }, { concurrency: 10 })
  t.after(() => release.resolve())
  const client = await clientFor(t, db, { maxInFlight: 3, overflow: 'reject' })
  const inFlight = [0, 1, 2].map((i) => client.request(channel, i, { timeoutMs: 30_000 }))
  const startedAt = performance.now()
  const error = await rejection(client.request(channel, 'one too many'))
  assert.ok(error instanceof TooManyRequestsError, `${error.name}: ${error.message}`)
  assert.equal(error.code, 'TOO_MANY_REQUESTS')
  assert.ok(since(startedAt) < 100, 'rejected at once')
  assert.equal(client.inFlight, 3)
  release.resolve()
  assert.deepEqual(await Promise.all(inFlight), [0, 1, 2])
  assert.equal(await client.request(channel, 'quick'), 'quick')
})

test("maxInFlight with overflow 'wait': requests queue in the client and none is lost", { timeout: 60_000 }, async (t) => {
  const channel = 'bp.wait'
  const stats = counting(() => 1 + Math.random() * 5)
  await serverFor(t, db, channel, stats.handler, { concurrency: 50 })
  const client = await clientFor(t, db, { maxInFlight: 4, overflow: 'wait' })
  let maxInFlight = 0
  const sampler = setInterval(() => (maxInFlight = Math.max(maxInFlight, client.inFlight)), 1)
  t.after(() => clearInterval(sampler))
  const replies = await Promise.all(Array.from({ length: 300 }, (_, i) => client.request(channel, i, { timeoutMs: 30_000 })))
  clearInterval(sampler)
  assert.deepEqual(replies, Array.from({ length: 300 }, (_, i) => i))
  console.log(`300 requests through maxInFlight 4: at most ${stats.stats.max} handlers and ${maxInFlight} in flight at once`)
  assert.ok(stats.stats.max <= 4 && maxInFlight <= 4)
  assert.equal(stats.stats.calls, 300)
})

test("a queued request that times out does not keep the next one waiting (overflow 'wait')", async (t) => {
  const channel = 'bp.waiters'
  const release = deferred()
  await serverFor(t, db, channel, async (payload: unknown) => {
    if (payload === 'first') await release.promise
    return payload
  })
  t.after(() => release.resolve())
  const client = await clientFor(t, db, { maxInFlight: 1, overflow: 'wait' })
  const first = client.request(channel, 'first', { timeoutMs: 30_000 })
  const impatient = rejection(client.request(channel, 'impatient', { timeoutMs: 200 }))
  const patient = client.request(channel, 'patient', { timeoutMs: 30_000 })
  assert.equal((await impatient).code, 'TIMEOUT')
  const releasedAt = performance.now()
  release.resolve()
  assert.equal(await first, 'first')
  assert.equal(await patient, 'patient')
  const ms = since(releasedAt)
  assert.ok(ms < 2000, `the patient request waited ${ms} ms after a slot was free`)
})
