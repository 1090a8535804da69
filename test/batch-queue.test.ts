// BatchQueue, the group commit behind sends, replies and acknowledgements: what goes in one flush, and what
// a delayed flush writes. No database: it is plain logic, driven by its own flushes.
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

test('a delayed queue writes what gathered during the delay in one flush', async (t) => {
  const flushed = deferred<number[]>()
  const queue = new BatchQueue<number>(async (items) => flushed.resolve(items), { delayMs: 20 })
  // The queue's timers do not keep a process alive (a client's sockets do): this test's process needs one.
  const alive = setInterval(() => {}, 1000)
  t.after(() => clearInterval(alive))
  queue.push(1)
  await Promise.resolve()
  queue.push(2)
  assert.equal(queue.size, 2, 'nothing is written before the delay')
  assert.deepEqual(await flushed.promise, [1, 2])
  await queue.idle()
  assert.equal(queue.size, 0)
})
