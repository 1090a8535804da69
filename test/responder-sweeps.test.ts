// The sweeps a client runs for all its responders (src/responder/sweeps.ts): one timer for all of them, at
// the shortest interval of those running, none once the last has left, never two sweeps at once, a vacuum
// after a sweep that follows handled requests. No database: the statements are recorded, and the timer is
// driven by Node's mock timers, so that what runs does not depend on the machine's speed.
import assert from 'node:assert/strict'
import { test, type TestContext } from 'node:test'
import { silentLogger } from '../src/logger.ts'
import { renderStatements } from '../src/statements.ts'
import { Sweeps } from '../src/responder/sweeps.ts'
import type { Pool } from '../src/database.ts'

const statements = renderStatements('pgrr_sweeps_test')

function setUp(t: TestContext, { hold = false } = {}) {
  t.mock.timers.enable({ apis: ['setTimeout', 'Date'] })
  const ran: string[] = []
  let release: () => void = () => undefined
  const held = new Promise<void>((resolve) => (release = resolve))
  const named = (text: string) => text === statements.reap ? 'reap' : text === statements.sweep ? 'sweep' : text === statements.vacuum ? 'vacuum' : text
  const sweeps = new Sweeps({
    pool: { query: async (text: string) => { ran.push(named(text)); return { rows: [] } } } as unknown as Pool,
    poolQuery: async (text: string) => {
      ran.push(named(text))
      if (hold) await held
      return []
    },
    statements,
    logger: silentLogger,
  })
  return { sweeps, ran, release }
}

/** Lets the sweep's awaits run. */
const settle = () => new Promise<void>((resolve) => setImmediate(resolve))

test('one sweep per interval for all the responders of a client, at the shortest interval, none after the last leaves', async (t) => {
  const { sweeps, ran } = setUp(t)
  const leaves = [sweeps.join(5000), sweeps.join(5000), sweeps.join(2000)]
  t.mock.timers.tick(2000)
  await settle()
  assert.deepEqual(ran, ['reap', 'sweep'], 'three responders, one sweep')
  t.mock.timers.tick(2000)
  await settle()
  assert.deepEqual(ran, ['reap', 'sweep', 'reap', 'sweep'])
  ran.length = 0
  leaves[2]!()
  t.mock.timers.tick(4000)
  await settle()
  assert.deepEqual(ran, [], 'the 2000 ms responder left: every 5000 ms from now on')
  t.mock.timers.tick(1000)
  await settle()
  assert.deepEqual(ran, ['reap', 'sweep'])
  ran.length = 0
  leaves[0]!()
  leaves[0]!()
  leaves[1]!()
  t.mock.timers.tick(20_000)
  await settle()
  assert.deepEqual(ran, [], 'nobody left: no sweep')
})

test('a sweep still running is not joined by the next one; a vacuum follows a sweep after handled requests', async (t) => {
  const { sweeps, ran, release } = setUp(t, { hold: true })
  const leave = sweeps.join(1000)
  t.after(leave)
  sweeps.handled()
  t.mock.timers.tick(1000)
  await settle()
  t.mock.timers.tick(3000)
  await settle()
  assert.deepEqual(ran, ['reap'], 'the reap waits, and no sweep starts beside it')
  release()
  await settle()
  await settle()
  assert.deepEqual(ran, ['reap', 'sweep', 'vacuum'], 'then the sweep, and the vacuum for the request handled')
  ran.length = 0
  t.mock.timers.tick(1000)
  await settle()
  await settle()
  assert.deepEqual(ran, ['reap', 'sweep'], 'nothing handled since: no vacuum')
})

test('a vacuum every 20,000 handled requests, between sweeps', (t) => {
  const { sweeps, ran } = setUp(t)
  const leave = sweeps.join(60_000)
  t.after(leave)
  for (let i = 0; i < 19_999; i++) sweeps.handled()
  assert.deepEqual(ran, [])
  sweeps.handled()
  assert.deepEqual(ran, ['vacuum'])
})

test('responders that come and go do not keep pushing the next sweep away', async (t) => {
  const { sweeps, ran } = setUp(t)
  const leave = sweeps.join(5000)
  t.after(leave)
  // A responder with a shorter interval joins and leaves every 900 ms: were the timer restarted at each
  // change, neither its 1000 ms nor the other's 5000 ms would ever elapse.
  for (let i = 0; i < 10; i++) {
    const leaveShort = sweeps.join(1000)
    t.mock.timers.tick(900)
    await settle()
    leaveShort()
  }
  assert.ok(ran.filter((statement) => statement === 'reap').length >= 1, `swept in 9 s: ${ran.join(', ')}`)
})
