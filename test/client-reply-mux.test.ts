// A client's reply multiplexer (src/client/reply-mux.ts): reply NOTIFYs applied to the requests they
// answer, replies that arrive before the send returned their request's id, and what it does with entries it
// cannot read. No database: NOTIFY payloads are handed to it as the listener would, in the forms
// pgrr_reply_entry and pgrr_lost_entry make (the integration tests cover the round trip); none of these
// needs a read from the table.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import type { PendingRequest, Settlement } from '../src/client/pending-request.ts'
import { RecoveryCheck } from '../src/client/recovery-check.ts'
import { ReplyMux } from '../src/client/reply-mux.ts'
import { InvalidPayloadError, RemoteError, ResponderLostError, TimeoutError } from '../src/errors.ts'
import type { Logger } from '../src/logger.ts'
import { renderStatements } from '../src/statements.ts'

function setUp() {
  const settled: { pending: PendingRequest; outcome: Settlement }[] = []
  const errors: { fields: unknown; message: string }[] = []
  const noop = () => {}
  const logger: Logger = {
    debug: noop,
    info: noop,
    warn: noop,
    error: (fields: unknown, message?: string) => errors.push({ fields, message: message ?? '' }),
  }
  // Acknowledgements are only gathered here, and read back with take().
  const pushed: string[] = []
  const acks = { push: (id: string) => void pushed.push(id), take: () => pushed.splice(0) }
  const mux = new ReplyMux({
    statements: renderStatements('public'),
    logger,
    query: () => Promise.reject(new Error('no statement is expected here')),
    acks,
    settle: (pending, outcome) => settled.push({ pending, outcome }),
  })
  return { mux, settled, errors, acks }
}

function pending(fields: Partial<PendingRequest> = {}): PendingRequest {
  return {
    channel: 'mux.test',
    payload: 'p',
    json: false,
    headers: null,
    maxAttempts: null,
    timeoutMs: 5000,
    startedAt: performance.now(),
    admitted: true,
    settled: false,
    resolve: () => {},
    reject: () => {},
    ...fields,
  }
}

test('each entry settles the request with its id, and is acknowledged', () => {
  const { mux, settled, acks } = setUp()
  const requests = ['1', '2', '3', '4', '5'].map((id) => pending({ id }))
  requests.forEach((request) => mux.add(request.id as string, request))
  assert.equal(mux.size, 5)
  mux.onReplies(
    JSON.stringify([
      ['1', 'r', true, '{"a":[1,2]}'],
      ['2', 'r', false, 'plain'],
      ['3', 'f', 'E_APP', 'it failed', { trace: 't-1' }],
      ['4', 'f', 'PGRR_DEADLINE', 'the request reached its deadline'],
      ['5', 'l'],
    ]),
  )
  const outcomes = new Map(settled.map(({ pending, outcome }) => [pending.id, outcome]))
  assert.deepEqual(outcomes.get('1'), { value: { a: [1, 2] } })
  assert.deepEqual(outcomes.get('2'), { value: 'plain' })
  const failed = outcomes.get('3')
  assert.ok(failed instanceof RemoteError)
  assert.equal(failed.remoteCode, 'E_APP')
  assert.equal(failed.message, 'it failed')
  assert.deepEqual(failed.headers, { trace: 't-1' })
  // The responder's deadline is the caller's own timeout.
  const timedOut = outcomes.get('4')
  assert.ok(timedOut instanceof TimeoutError)
  assert.equal(timedOut.timeoutMs, 5000)
  assert.ok(outcomes.get('5') instanceof ResponderLostError)
  assert.deepEqual(acks.take().sort(), ['1', '2', '3', '4', '5'])
})

test('a reply that arrives before its id is applied when the send returns the id', () => {
  const { mux, settled, acks } = setUp()
  mux.onReplies('[["77", "r", false, "early bird", {"h": "v"}]]')
  assert.equal(settled.length, 0)
  assert.deepEqual(acks.take(), [], 'not acknowledged before its request is known')
  const request = pending({ id: '77', withHeaders: true })
  mux.add('77', request)
  assert.equal(settled.length, 1)
  assert.equal(settled[0]?.pending, request)
  assert.deepEqual(settled[0]?.outcome, { value: { reply: 'early bird', headers: { h: 'v' } } })
  assert.deepEqual(acks.take(), ['77'])
  // Applied once: the early reply is gone.
  mux.delete('77')
  mux.add('77', pending({ id: '77' }))
  assert.equal(settled.length, 1)
})

test('early replies nobody claimed are forgotten after a minute', (t) => {
  t.mock.timers.enable({ apis: ['Date'] })
  const { mux, settled } = setUp()
  mux.onReplies('[["5", "l"], ["6", "l"]]')
  t.mock.timers.tick(30_000)
  mux.onReplies('[["7", "l"]]')
  t.mock.timers.tick(30_001)
  mux.purgeEarly()
  for (const id of ['5', '6', '7']) mux.add(id, pending({ id }))
  assert.deepEqual(settled.map((s) => s.pending.id), ['7'])
})

test('a reply that is not valid JSON fails its request with InvalidPayloadError', () => {
  const { mux, settled } = setUp()
  mux.add('1', pending({ id: '1' }))
  mux.onReplies('[["1", "r", true, "{not json"]]')
  assert.ok(settled[0]?.outcome instanceof InvalidPayloadError)
})

test('malformed entries are skipped and logged, the others applied; an unreadable notification changes nothing', () => {
  const { mux, settled, errors, acks } = setUp()
  for (const id of ['1', '2', '3']) mux.add(id, pending({ id }))
  mux.onReplies('[null, ["1", "l"], ["2", "r", "yes", "x"], 42, ["3", "r", false, "ok"], ["4", "zzz"]]')
  assert.deepEqual(settled.map((s) => s.pending.id), ['1', '3'])
  assert.deepEqual(errors, [{ fields: { malformed: 4 }, message: 'ignored malformed reply entries' }])
  assert.deepEqual(acks.take(), ['1', '3'])
  assert.equal(mux.size, 3, 'settling is the client’s: the mux forgets an id when told')

  for (const payload of ['', '{', '{"1": ["1", "l"]}', '"1,l"', 'null']) mux.onReplies(payload)
  assert.equal(settled.length, 2)
  assert.equal(errors.length, 6)
  assert.ok(errors.slice(1).every((e) => e.message === 'unreadable reply notification'))
})

test('waitingFor lists the requests that have waited long enough', () => {
  const { mux } = setUp()
  const now = performance.now()
  mux.add('old', pending({ id: 'old', startedAt: now - 5000 }))
  mux.add('new', pending({ id: 'new', startedAt: now - 10 }))
  assert.deepEqual(mux.waitingFor(1000, now), ['old'])
  assert.deepEqual(mux.waitingFor(0, now).sort(), ['new', 'old'])
  mux.delete('old')
  assert.deepEqual(mux.waitingFor(0, now), ['new'])
})

test('the recovery check reads every request that has waited a tenth of a second, at every interval', async (t) => {
  // A responder that died is found out by this check, at most an interval and a tenth of a second after it
  // died, whenever its requests were sent: a request sent just before a tick is read at the next one.
  let now = 10_000
  t.mock.method(performance, 'now', () => now)
  t.mock.timers.enable({ apis: ['setInterval'] })
  const { mux } = setUp()
  const read: string[][] = []
  const check = new RecoveryCheck({
    statements: renderStatements('public'),
    logger: { debug: () => {}, info: () => {}, warn: () => {}, error: () => {} },
    query: async (_text, values) => {
      read.push([...(values?.[0] as string[])])
      return []
    },
    mux,
    checkIntervalMs: 1000,
    pollIntervalMs: 50,
    polling: () => false,
    closed: () => false,
    idle: () => false,
  })
  t.after(() => check.stop())
  const add = (id: string) => mux.add(id, pending({ id, startedAt: now }))
  add('old')
  check.ensure()
  now += 950
  add('young')
  now += 50
  t.mock.timers.tick(1000)
  await new Promise((resolve) => setImmediate(resolve))
  // The reap (once per interval) and the fetch both name what has waited 100 ms or more: not a request
  // whose reply may be on its way.
  assert.deepEqual(read.at(-1), ['old'])
  now += 150
  add('just sent')
  now += 850
  t.mock.timers.tick(1000)
  await new Promise((resolve) => setImmediate(resolve))
  assert.deepEqual(new Set(read.at(-1)), new Set(['old', 'young', 'just sent']), 'a request 850 ms old is read at the next tick')
})
