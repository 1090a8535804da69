// BatchQueue, the group commit behind sends, replies and acknowledgements: what a carrier may take, and
// what a delayed flush then writes. No database: it is plain logic, driven by its own flushes.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { BatchQueue } from '../src/batch-queue.ts'
import { deferred } from './helpers.ts'

test('items pushed in one turn are flushed together; more wait for a running flush', async () => {
  const batches: number[][] = []
  const release = deferred()
  const queue = new BatchQueue<number>(async (items) => {
    batches.push(items)
    if (batches.length === 1) await release.promise
  })
  queue.push(1)
  queue.push(2)
  await Promise.resolve()
  queue.push(3)
  queue.push(4)
  release.resolve()
  await queue.idle()
  assert.deepEqual(batches, [[1, 2], [3, 4]])
})

test('take() hands items to another carrier only once the oldest has waited; a delayed flush writes what is left', async (t) => {
  const flushed = deferred<number[]>()
  const queue = new BatchQueue<number>(async (items) => flushed.resolve(items), { delayMs: 20 })
  // The queue's timers do not keep a process alive (a client's sockets do): this test's process needs one.
  const alive = setInterval(() => {}, 1000)
  t.after(() => clearInterval(alive))
  queue.push(1)
  assert.deepEqual(queue.take(undefined, 60_000), [], 'too young to be carried')
  assert.equal(queue.size, 1)
  assert.deepEqual(queue.take(undefined, 0), [1])
  queue.push(2)
  // The flush armed for item 1 finds it gone and writes item 2 alone, once item 2 has waited.
  assert.deepEqual(await flushed.promise, [2])
  await queue.idle()
  assert.equal(queue.size, 0)
})

test('take() takes at most max items, oldest first', () => {
  const queue = new BatchQueue<number>(async () => {}, { delayMs: 60_000 })
  for (let i = 0; i < 5; i++) queue.push(i)
  assert.deepEqual(queue.take(2), [0, 1])
  assert.deepEqual(queue.take(), [2, 3, 4])
  assert.deepEqual(queue.take(), [])
})
