// BatchQueue, the group commit behind sends, replies and acknowledgements: what goes in one flush, what a
// delayed flush writes, and queues sharing flush slots. No database: it is plain logic, driven by its own flushes.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { BatchQueue, FlushSlots } from '../src/batch-queue.ts'
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

test('queues sharing one flush slot take turns, in the order they asked, and gather what came meanwhile', async () => {
  const slots = new FlushSlots(1)
  const log: string[] = []
  const gates = new Map<string, ReturnType<typeof deferred>>()
  const queue = (name: string) =>
    new BatchQueue<number>(
      async (items) => {
        const key = `${name}${items.join(',')}`
        log.push(key)
        const gate = deferred()
        gates.set(key, gate)
        await gate.promise
      },
      { maxConcurrent: 2, slots },
    )
  const a = queue('a')
  const b = queue('b')
  const c = queue('c')
  a.push(1)
  await Promise.resolve()
  b.push(1)
  c.push(1)
  await Promise.resolve()
  // a holds the slot: its second item waits too, though a may run two flushes of its own.
  a.push(2)
  b.push(2)
  await Promise.resolve()
  assert.deepEqual(log, ['a1'])
  gates.get('a1')?.resolve()
  await waitForLog(log, 2)
  assert.deepEqual(log, ['a1', 'b1,2'], 'b asked first and gets the slot, with all it gathered')
  gates.get('b1,2')?.resolve()
  await waitForLog(log, 3)
  gates.get('c1')?.resolve()
  await waitForLog(log, 4)
  gates.get('a2')?.resolve()
  await Promise.all([a.idle(), b.idle(), c.idle()])
  assert.deepEqual(log, ['a1', 'b1,2', 'c1', 'a2'])
  // The slot is free again: a lone push flushes at once.
  a.push(3)
  await waitForLog(log, 5)
  gates.get('a3')?.resolve()
  await a.idle()
})

async function waitForLog(log: readonly string[], length: number): Promise<void> {
  for (let i = 0; i < 100 && log.length < length; i++) await new Promise((resolve) => setImmediate(resolve))
  assert.equal(log.length, length, `flushes so far: ${log.join(' ')}`)
}
