// A responder's job bookkeeping (src/responder/jobs.ts) and the outcomes it hands on (handler.ts): the one
// deadline timer, abort reasons and signals made on first use, concurrency accounting, counters. No
// database: the jobs are driven directly, and the deadline timer by a clock of the test's own (Node's mock
// timers and performance.now()), so that deadlines fire in their order whatever the load.
import assert from 'node:assert/strict'
import { test, type TestContext } from 'node:test'
import { CancelledError, ClosedError, ConnectionError, responderDeadlineCode, TimeoutError } from '../src/errors.ts'
import { deadlineOutcome, encodeReplyHeaders, failure, success, type Handler, type HandlerContext, type Result } from '../src/responder/handler.ts'
import { Jobs, type ClaimedRow, type Job } from '../src/responder/jobs.ts'
import type { LogFn, Logger } from '../src/logger.ts'
import type { HandlerObservation, Telemetry } from '../src/telemetry.ts'

interface Finished {
  id: string
  generation: number
  handed: boolean
  result: Result
}

interface Logged {
  level: 'debug' | 'info' | 'warn' | 'error'
  fields: Record<string, unknown>
  msg: string | undefined
}

/** A logger that keeps what it is told. */
function capturingLogger(): { logger: Logger; logged: Logged[] } {
  const logged: Logged[] = []
  const at = (level: Logged['level']) => ((fields: object | string, msg?: string) =>
    logged.push(typeof fields === 'string' ? { level, fields: {}, msg: fields } : { level, fields: fields as Record<string, unknown>, msg })) as LogFn
  return { logger: { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') }, logged }
}

function setUp(handler: Handler, telemetry: Telemetry = {}) {
  const finished: Finished[] = []
  const { logger, logged } = capturingLogger()
  const jobs = new Jobs({
    channel: 'jobs.test',
    handler,
    telemetry,
    logger,
    finished: (job: Job, result: Result) => finished.push({ id: job.id, generation: job.generation, handed: job.handed, result }),
  })
  return { jobs, finished, logged }
}

function row(id: string, fields: Partial<ClaimedRow> = {}): ClaimedRow {
  return { id, payload: `payload ${id}`, payload_json: false, headers: null, attempt: 1, remaining_ms: 30_000, queued_ms: 0, ...fields }
}

const never = () => new Promise<never>(() => {})

/** Mock timers and a performance.now() that moves with them only: returns what moves both. */
function mockClock(t: TestContext): (ms: number) => void {
  let now = 1_000
  t.mock.method(performance, 'now', () => now)
  t.mock.timers.enable({ apis: ['setTimeout'] })
  return (ms) => {
    now += ms
    t.mock.timers.tick(ms)
  }
}

test('one timer ends each job at its deadline, earliest first, and aborts its signal with a TimeoutError', (t) => {
  const advance = mockClock(t)
  const reasons = new Map<string, unknown>()
  const { jobs, finished } = setUp((_payload, ctx) => {
    ctx.signal.addEventListener('abort', () => reasons.set(ctx.id, ctx.signal.reason))
    return never()
  })
  jobs.start(row('a', { remaining_ms: 300 }), 1, false)
  jobs.start(row('b', { remaining_ms: 100 }), 1, false)
  jobs.start(row('c', { remaining_ms: 200 }), 1, true)
  assert.equal(jobs.size, 3)

  advance(100)
  assert.deepEqual(finished.map((f) => f.id), ['b'])
  assert.deepEqual(finished[0]?.result, { ...deadlineOutcome(100), headers: null })
  assert.equal(finished[0]?.result.code, responderDeadlineCode)
  const reason = reasons.get('b')
  assert.ok(reason instanceof TimeoutError)
  assert.equal(reason.message, deadlineOutcome(100).body)
  assert.ok(!reasons.has('a') && !reasons.has('c'), 'the others run on')
  assert.equal(jobs.size, 2)

  advance(100)
  assert.deepEqual(finished.map((f) => f.id), ['b', 'c'])
  assert.equal(finished[1]?.handed, true)
  advance(100)
  assert.deepEqual(finished.map((f) => f.id), ['b', 'c', 'a'])
  assert.equal(jobs.size, 0)
  assert.deepEqual(jobs.counters(), { handledTotal: 3, failedTotal: 3, handledLastMinute: 3, failedLastMinute: 3, running: 0 })
})

test('a job that finishes before its deadline leaves the timer to the others', async (t) => {
  const advance = mockClock(t)
  let release!: (value: string) => void
  const { jobs, finished } = setUp((_payload, ctx) => (ctx.id === 'early' ? new Promise((resolve) => (release = resolve)) : never()))
  jobs.start(row('early', { remaining_ms: 100 }), 1, false)
  jobs.start(row('late', { remaining_ms: 200 }), 1, false)
  release('done')
  await Promise.resolve()
  await Promise.resolve()
  assert.deepEqual(finished, [{ id: 'early', generation: 1, handed: false, result: { failed: false, body: 'done', json: false, code: null, headers: null } }])
  // The timer armed for the job that finished fires for nothing, and is armed again for the next deadline.
  advance(100)
  assert.equal(finished.length, 1)
  advance(100)
  assert.deepEqual(finished.map((f) => f.id), ['early', 'late'])
  assert.equal(finished[1]?.result.code, responderDeadlineCode)
})

test('once the deadlines are stopped, no deadline fires', (t) => {
  const advance = mockClock(t)
  const { jobs, finished } = setUp(never)
  jobs.start(row('a', { remaining_ms: 100 }), 1, false)
  jobs.stopDeadlines()
  advance(500)
  assert.equal(finished.length, 0)
  assert.equal(jobs.size, 1)
  jobs.abandonAll(new ClosedError('the responder closed'))
  assert.equal(jobs.size, 0)
})

test('a signal made after its job was cancelled is aborted already, with the first reason', async () => {
  const contexts = new Map<string, HandlerContext>()
  const { jobs, finished } = setUp((_payload, ctx) => {
    contexts.set(ctx.id, ctx)
    return never()
  })
  jobs.start(row('1'), 3, false)
  jobs.start(row('2'), 3, false)
  jobs.cancel(['1', 'unknown', ''])
  // Cancelled, then abandoned: the handler that reads its signal only now sees why it was first aborted.
  jobs.abandonAll(new ConnectionError('the responder lost its database session'))
  const signal = contexts.get('1')?.signal
  assert.equal(signal?.aborted, true)
  assert.ok(signal?.reason instanceof CancelledError)
  const other = contexts.get('2')?.signal
  assert.equal(other?.aborted, true)
  assert.ok(other?.reason instanceof ConnectionError)
  // Abandoned jobs get no outcome: their requests go with the session.
  assert.equal(finished.length, 0)
  assert.equal(jobs.size, 0)
  assert.equal(jobs.has('1'), false)
})

test('a signal read before the abort fires once, and a handler ending after its job was abandoned changes nothing', async () => {
  const aborts: unknown[] = []
  let release!: () => void
  const { jobs, finished } = setUp((_payload, ctx) => {
    ctx.signal.addEventListener('abort', () => aborts.push(ctx.signal.reason))
    return new Promise<string>((resolve) => (release = () => resolve('late')))
  })
  jobs.start(row('1'), 1, false)
  jobs.cancel(['1'])
  jobs.cancel(['1'])
  assert.equal(aborts.length, 1)
  assert.ok(aborts[0] instanceof CancelledError)
  // A cancelled job still runs until its handler ends: its outcome releases the request.
  assert.equal(jobs.size, 1)
  jobs.abandonAll(new ClosedError('the responder closed'))
  assert.equal(aborts.length, 1)
  release()
  await new Promise((resolve) => setImmediate(resolve))
  assert.equal(finished.length, 0)
  assert.deepEqual(jobs.counters(), { handledTotal: 0, failedTotal: 0, handledLastMinute: 0, failedLastMinute: 0, running: 0 })
})

test('running jobs are counted from start to outcome, whatever the handler does', async () => {
  const releases: (() => void)[] = []
  const { jobs, finished } = setUp((payload, ctx) => {
    switch (payload) {
      case 'sync':
        return `sync ${ctx.attempt}`
      case 'throws':
        throw Object.assign(new Error('boom'), { code: 'E_BOOM' })
      case 'hostile then':
        return Object.defineProperty({}, 'then', {
          get() {
            throw new Error('then getter')
          },
        })
      case 'rejects':
        return Promise.reject(new Error('rejected'))
      default:
        return new Promise((resolve) => releases.push(() => resolve({ echoed: payload })))
    }
  })
  jobs.start(row('1', { payload: 'sync', attempt: 2 }), 1, false)
  jobs.start(row('2', { payload: 'throws' }), 1, false)
  jobs.start(row('3', { payload: 'hostile then' }), 1, false)
  assert.equal(jobs.size, 0, 'synchronous ends free their slot at once')
  jobs.start(row('4', { payload: 'slow' }), 1, false)
  jobs.start(row('5', { payload: 'rejects' }), 1, false)
  jobs.start(row('6', { payload: 'not json', payload_json: true }), 1, false)
  jobs.start(row('7', { remaining_ms: 0 }), 1, true)
  assert.equal(jobs.size, 2)
  assert.ok(jobs.has('4') && jobs.has('5'))
  await new Promise((resolve) => setImmediate(resolve))
  assert.equal(jobs.size, 1)
  releases.forEach((release) => release())
  await new Promise((resolve) => setImmediate(resolve))
  assert.equal(jobs.size, 0)
  const byId = new Map(finished.map((f) => [f.id, f.result]))
  assert.deepEqual(byId.get('1'), { failed: false, body: 'sync 2', json: false, code: null, headers: null })
  assert.deepEqual(byId.get('2'), { failed: true, body: 'boom', json: false, code: 'E_BOOM', headers: null })
  assert.deepEqual(byId.get('3'), { failed: true, body: 'then getter', json: false, code: 'HANDLER_ERROR', headers: null })
  assert.deepEqual(byId.get('4'), { failed: false, body: '{"echoed":"slow"}', json: true, code: null, headers: null })
  assert.deepEqual(byId.get('5'), { failed: true, body: 'rejected', json: false, code: 'HANDLER_ERROR', headers: null })
  assert.deepEqual(byId.get('6'), { failed: true, body: 'the payload is not valid JSON', json: false, code: 'INVALID_PAYLOAD', headers: null })
  assert.deepEqual(byId.get('7'), { ...deadlineOutcome(0), headers: null })
  assert.equal(finished.length, 7, 'each job ends once')
  assert.deepEqual(jobs.counters(), { handledTotal: 7, failedTotal: 5, handledLastMinute: 7, failedLastMinute: 5, running: 0 })
})

test('telemetry sees each handler start and end once, and runs it in its observation', () => {
  const events: string[] = []
  const telemetry: Telemetry = {
    handlerStarted(info): HandlerObservation {
      events.push(`start ${info.id} attempt ${info.attempt} queued ${info.queuedMs}`)
      return {
        run: (fn) => {
          events.push(`run ${info.id}`)
          return fn()
        },
        end: (outcome) => events.push(`end ${info.id} ${outcome}`),
      }
    },
  }
  const { jobs } = setUp((payload) => {
    if (payload === 'fail') throw new Error('no')
    return 'ok'
  }, telemetry)
  jobs.start(row('1', { queued_ms: 7 }), 1, false)
  jobs.start(row('2', { payload: 'fail' }), 1, false)
  jobs.start(row('3', { remaining_ms: -5 }), 1, false)
  assert.deepEqual(events, ['start 1 attempt 1 queued 7', 'run 1', 'end 1 ok', 'start 2 attempt 1 queued 0', 'run 2', 'end 2 HANDLER_ERROR'])
})

test('outcomes: replies and thrown values become what pgrr_reply takes, hostile ones included', () => {
  assert.deepEqual(success('text'), { failed: false, body: 'text', json: false, code: null })
  assert.deepEqual(success({ a: [1] }), { failed: false, body: '{"a":[1]}', json: true, code: null })
  assert.equal(success(undefined).code, 'INVALID_REPLY')
  assert.equal(success('nul \u0000').code, 'INVALID_REPLY')
  // The responder's deadline code is its own: a handler cannot make its caller see a timeout.
  assert.equal(failure(Object.assign(new Error('x'), { code: responderDeadlineCode })).code, 'HANDLER_ERROR')
  assert.equal(failure(Object.assign(new Error('x'), { code: '' })).code, 'HANDLER_ERROR')
  assert.equal(failure({ code: 'A\u0000B'.padEnd(300, 'c') }).code, 'A\uFFFDB'.padEnd(200, 'c'))
  assert.deepEqual(failure('plain string'), { failed: true, body: 'plain string', json: false, code: 'HANDLER_ERROR' })
  const hostile = new Proxy(
    {},
    {
      get() {
        throw new Error('trap')
      },
    },
  )
  assert.deepEqual(failure(hostile), { failed: true, body: 'the handler threw a value that cannot be described', json: false, code: 'HANDLER_ERROR' })
  assert.equal(failure(new Error('lone \uD800 surrogate')).body, 'lone \uFFFD surrogate')
})

test('reply headers: the JSON of what a handler set, null when none, or why they cannot travel', () => {
  assert.deepEqual(encodeReplyHeaders(undefined), { json: null })
  assert.deepEqual(encodeReplyHeaders({}), { json: null })
  assert.deepEqual(encodeReplyHeaders({ a: 'x', b: 'y' }), { json: '{"a":"x","b":"y"}' })
  const invalid = (headers: unknown) => {
    const encoded = encodeReplyHeaders(headers as Record<string, string>)
    return 'invalid' in encoded ? encoded.invalid : `valid: ${encoded.json}`
  }
  assert.match(invalid({ a: 'x', n: 1 }), /reply header "n" must be a string, got number/)
  assert.match(invalid({ a: 'nul \u0000' }), /reply header "a" holds text PostgreSQL cannot store/)
  assert.match(invalid({ ['k\u0000']: 'v' }), /cannot store/)
  assert.match(invalid({ a: 'half \uD800' }), /cannot store/)
  assert.match(invalid({ a: 'x'.repeat(70_000) }), /over the limit of 65536/)
  const throwing = Object.defineProperty({}, 'k', {
    enumerable: true,
    get() {
      throw new Error('getter')
    },
  })
  assert.match(invalid(throwing), /reply headers cannot be read: getter/)
})

test('a handler that sets a reply header that cannot travel gets an INVALID_REPLY error reply, not a reply without it', async () => {
  const { jobs, finished } = setUp((_payload, ctx) => {
    ctx.replyHeaders.ok = 'yes'
    ;(ctx.replyHeaders as Record<string, unknown>).count = 3
    return 'the reply'
  })
  jobs.start(row('h'), 1, false)
  await Promise.resolve()
  assert.deepEqual(finished[0]?.result, {
    failed: true,
    body: 'reply header "count" must be a string, got number',
    json: false,
    code: 'INVALID_REPLY',
  })
})

test('a handler that throws is logged at error level with its channel, request id and attempt', async () => {
  const boom = new Error('boom')
  const { jobs, finished, logged } = setUp(() => Promise.reject(boom))
  jobs.start(row('f', { attempt: 2 }), 1, false)
  await Promise.resolve()
  await Promise.resolve()
  assert.equal(finished[0]?.result.code, 'HANDLER_ERROR')
  assert.deepEqual(logged, [{ level: 'error', fields: { err: boom, channel: 'jobs.test', id: 'f', attempt: 2 }, msg: 'handler failed' }])
})

test('a handler that finishes after its deadline (its event loop was blocked) is answered as the timeout, its signal aborted', async (t) => {
  let now = 1_000
  t.mock.method(performance, 'now', () => now)
  let release!: (value: string) => void
  let signal!: AbortSignal
  const late: number[] = []
  const { jobs, finished, logged } = setUp(
    (_payload, ctx) => {
      signal = ctx.signal
      return new Promise((resolve) => (release = resolve))
    },
    { repliedLate: (_channel, count) => late.push(count) },
  )
  jobs.start(row('slow', { remaining_ms: 100 }), 1, false)
  // The loop was blocked past the deadline: time moved, the deadline timer has not run yet.
  now += 250
  release('too late')
  await Promise.resolve()
  await Promise.resolve()
  assert.deepEqual(finished[0]?.result, { ...deadlineOutcome(100), headers: null })
  assert.ok(signal.aborted && signal.reason instanceof TimeoutError, 'the signal says: deadline')
  assert.deepEqual(late, [1])
  assert.equal(logged.length, 1)
  assert.equal(logged[0]?.level, 'warn')
  assert.deepEqual(logged[0]?.fields, { channel: 'jobs.test', id: 'slow', lateMs: 150 })
  jobs.stopDeadlines()
})
