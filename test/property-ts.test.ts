// Property-based tests of the TypeScript API (fast-check): random payloads (unicode, astral, NUL, lone
// surrogates, JSON values), channel names, headers, timeouts and cancellations. Every call ends within its
// timeout, in a reply or a typed error (a PgrrError subclass); valid payloads round-trip exactly; nothing
// crashes the responder, which still serves at the end. Runs are bounded (well under a minute).
import assert from 'node:assert/strict'
import { test } from 'node:test'
import fc from 'fast-check'
import {
  CancelledError,
  InvalidChannelError,
  InvalidOptionError,
  InvalidPayloadError,
  PgrrError,
  TimeoutError,
} from '../src/index.ts'
import { channelName, hostileJson, hostileString, hostileUnit, isStorable, isValidChannel, viaJson } from './fixtures/security-arbitraries.ts'
import { clientFor, serverFor, useTestSchema } from './helpers.ts'

const db = useTestSchema('prop_ts')

/** Settles `promise` as { value } or { error }, and how long it took. */
async function outcome(promise: Promise<unknown>): Promise<{ value?: unknown; error?: unknown; ms: number }> {
  const startedAt = Date.now()
  try {
    const value = await promise
    return { value, ms: Date.now() - startedAt }
  } catch (error) {
    return { error, ms: Date.now() - startedAt }
  }
}

test('random text and JSON payloads round-trip exactly, or fail at once with InvalidPayloadError', async (t) => {
  await serverFor(t, db, 'prop.echo', (payload: unknown) => payload, { concurrency: 20 })
  const client = await clientFor(t, db)
  await fc.assert(
    fc.asyncProperty(fc.array(fc.oneof(hostileString(200), hostileJson), { minLength: 1, maxLength: 8 }), async (payloads) => {
      // Sent together: they share batches, so a bad one must not affect the others.
      const results = await Promise.all(payloads.map((payload) => outcome(client.request('prop.echo', payload, { timeoutMs: 10_000 }))))
      payloads.forEach((payload, i) => {
        const result = results[i]!
        if (typeof payload === 'string' && !isStorable(payload)) {
          assert.ok(result.error instanceof InvalidPayloadError, `InvalidPayloadError for ${JSON.stringify(payload)}, got ${String(result.error ?? 'a reply')}`)
        } else {
          assert.equal(result.error, undefined, `a reply for ${JSON.stringify(payload)}, got ${String(result.error)}`)
          assert.deepStrictEqual(result.value, typeof payload === 'string' ? payload : viaJson(payload))
        }
      })
    }),
    { numRuns: 150 },
  )
  assert.equal(await client.request('prop.echo', 'still here'), 'still here')
})

test('random channel names: valid ones serve and round-trip, invalid ones fail with InvalidChannelError before any round trip', async (t) => {
  const client = await clientFor(t, db)
  await fc.assert(
    fc.asyncProperty(channelName, async (name) => {
      if (!isValidChannel(name)) {
        const request = await outcome(client.request(name, 'x', { timeoutMs: 5000 }))
        assert.ok(request.error instanceof InvalidChannelError, `request ${JSON.stringify(name)}: ${String(request.error)}`)
        const serve = await outcome(client.serve(name, () => 'x'))
        assert.ok(serve.error instanceof InvalidChannelError, `serve ${JSON.stringify(name)}: ${String(serve.error)}`)
        return
      }
      let server
      try {
        server = await client.serve(name, (payload: unknown, ctx) => ({ payload, channel: ctx.channel }))
      } catch (error) {
        // A lone surrogate reaches the database as U+FFFD: a known gap of the name check (see security-input).
        assert.ok(!name.isWellFormed() && error instanceof PgrrError, `serve ${JSON.stringify(name)}: ${String(error)}`)
        return
      }
      try {
        const reply = await outcome(client.request(name, 'ping', { timeoutMs: 10_000 }))
        assert.deepStrictEqual(reply, { value: { payload: 'ping', channel: name }, ms: reply.ms })
      } finally {
        await server.close()
      }
    }),
    { numRuns: 60 },
  )
})

test('random headers reach the handler exactly, or fail alone with a typed error', async (t) => {
  await serverFor(t, db, 'prop.headers', (_payload, ctx) => ({ ...ctx.headers }), { concurrency: 20 })
  const client = await clientFor(t, db)
  const headers = fc.dictionary(fc.string({ unit: hostileUnit, maxLength: 12 }), fc.string({ unit: hostileUnit, maxLength: 30 }), { maxKeys: 5 })
  await fc.assert(
    fc.asyncProperty(fc.array(headers, { minLength: 1, maxLength: 5 }), async (all) => {
      const results = await Promise.all(all.map((h) => outcome(client.request('prop.headers', 'x', { headers: h, timeoutMs: 10_000 }))))
      all.forEach((h, i) => {
        const result = results[i]!
        const storable = Object.entries(h).every(([key, value]) => isStorable(key) && isStorable(value))
        if (storable) {
          assert.equal(result.error, undefined, `${JSON.stringify(h)}: ${String(result.error)}`)
          assert.deepStrictEqual(result.value, viaJson(h))
        } else {
          assert.ok(
            result.error instanceof InvalidPayloadError || result.error instanceof InvalidOptionError,
            `${JSON.stringify(h)}: expected a typed error, got ${String(result.error ?? JSON.stringify(result.value))}`,
          )
        }
      })
    }),
    { numRuns: 80 },
  )
})

test('random timeouts, handler delays and cancellations: each call ends in time in a reply, TimeoutError or CancelledError', async (t) => {
  await serverFor(
    t,
    db,
    'prop.timing',
    async (payload: unknown, ctx) => {
      const { delayMs, hang } = payload as { delayMs: number; hang: boolean }
      await new Promise<void>((resolve, reject) => {
        const timer = hang ? undefined : setTimeout(resolve, delayMs)
        ctx.signal.addEventListener('abort', () => (clearTimeout(timer), reject(ctx.signal.reason as Error)), { once: true })
      })
      return 'done'
    },
    { concurrency: 50 },
  )
  const client = await clientFor(t, db)
  const call = fc.record({
    timeoutMs: fc.integer({ min: 1, max: 400 }),
    delayMs: fc.integer({ min: 0, max: 400 }),
    hang: fc.boolean(),
    abortAfterMs: fc.option(fc.integer({ min: 0, max: 400 }), { nil: undefined }),
  })
  await fc.assert(
    fc.asyncProperty(fc.array(call, { minLength: 1, maxLength: 6 }), async (calls) => {
      const results = await Promise.all(
        calls.map(async ({ timeoutMs, delayMs, hang, abortAfterMs }) => {
          const controller = new AbortController()
          const timer = abortAfterMs === undefined ? undefined : setTimeout(() => controller.abort(new Error('test abort')), abortAfterMs)
          try {
            return await outcome(client.request('prop.timing', { delayMs, hang }, { timeoutMs, signal: controller.signal }))
          } finally {
            clearTimeout(timer)
          }
        }),
      )
      calls.forEach(({ timeoutMs, abortAfterMs, hang }, i) => {
        const result = results[i]!
        const bound = Math.min(timeoutMs, abortAfterMs ?? Infinity)
        assert.ok(result.ms <= bound + 1500, `ended after ${result.ms} ms, bound ${bound} ms`)
        if (result.error === undefined) {
          assert.equal(result.value, 'done')
          assert.ok(!hang, 'a hanging handler never replies')
        } else {
          assert.ok(
            result.error instanceof TimeoutError || result.error instanceof CancelledError,
            `${(result.error as Error).name}: ${(result.error as Error).message}`,
          )
        }
      })
    }),
    { numRuns: 40 },
  )
  assert.equal(await client.request('prop.timing', { delayMs: 0, hang: false }), 'done', 'the responder still serves')
})

test('random option values are refused with InvalidOptionError, never sent', async (t) => {
  await serverFor(t, db, 'prop.options', () => 'sent')
  const client = await clientFor(t, db)
  const nonPositive = fc.oneof(fc.constantFrom(0, -1, Number.NaN, Infinity, -Infinity), fc.double({ max: 0 }))
  const bad = fc.oneof(
    fc.record({ option: fc.constant('timeoutMs' as const), value: fc.oneof(nonPositive, fc.constant(2 ** 31)) }),
    fc.record({ option: fc.constant('maxAttempts' as const), value: fc.oneof(nonPositive, fc.constantFrom(1.5, 101, 2 ** 31)) }),
  )
  await fc.assert(
    fc.asyncProperty(bad, async ({ option, value }) => {
      const result = await outcome(client.request('prop.options', 'x', { [option]: value }))
      assert.ok(result.error instanceof InvalidOptionError, `${option} ${value}: ${String(result.error ?? result.value)}`)
    }),
    { numRuns: 60 },
  )
  const tooLarge = await outcome(client.request('prop.options', 'x', { headers: { big: 'h'.repeat(70_000) } }))
  assert.ok(tooLarge.error instanceof InvalidOptionError, `headers over 64 KiB: ${String(tooLarge.error)}`)
  assert.match(String(tooLarge.error), /headers/)
  assert.equal(await client.request('prop.options', 'x'), 'sent')
})
