// Property-based tests of the SQL API (fast-check): random channel names, text and JSON payloads, ids,
// timeouts and batches through request(), await_reply(), await_reply_json(), pgrr_send(), pgrr_fetch(),
// pgrr_ack(), pgrr_cancel() and pgrr_reap(). Every call ends within its timeout, in a result or a
// protocol error (SQLSTATE class PR) or a documented argument error (22023, 22004); valid payloads
// round-trip exactly; the TypeScript responder behind them keeps serving.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import fc from 'fast-check'
import { channelName, hostileJson, isValidChannel, storableString } from './fixtures/security-arbitraries.ts'
import { rejection, serverFor, useTestSchema } from './helpers.ts'

const db = useTestSchema('prop_sql')

/** SQLSTATE of the error `promise` rejects with, or 'ok'. */
async function stateOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise
    return 'ok'
  } catch (error) {
    return String((error as { code?: unknown }).code)
  }
}

/** Strings PostgreSQL can receive as text parameters. */
const sqlChannel = channelName.map((name) => name.replaceAll('\u0000', '').toWellFormed())

/** JSON values jsonb can hold: no \u0000 and no lone surrogate (JSON.stringify escapes both) in its strings. */
const jsonbValue = hostileJson.filter((value) => !/\\u(0000|d[89a-f][0-9a-f]{2})/.test(JSON.stringify(value)))

test('request() with random channel names: PR007 for invalid names, PR001 for valid ones nobody serves', async () => {
  const s = db.quoted
  await fc.assert(
    fc.asyncProperty(sqlChannel, storableString(50), async (channel, payload) => {
      const state = await stateOf(db.sql.unsafe(`select ${s}.request($1, $2::text)`, [channel, payload]))
      assert.equal(state, isValidChannel(channel) ? 'PR001' : 'PR007', JSON.stringify(channel))
      const jsonState = await stateOf(db.sql.unsafe(`select ${s}.request($1, $2::text::jsonb)`, [channel, JSON.stringify(payload)]))
      assert.equal(jsonState, state)
    }),
    { numRuns: 200 },
  )
  const [{ count }] = (await db.sql.unsafe(`select count(*)::int as count from ${s}.pgrr_request`)) as unknown as [{ count: number }]
  assert.equal(count, 0, 'nothing was stored')
})

test('random text and JSON payloads round-trip exactly through request() and await_reply(_json)', async (t) => {
  const s = db.quoted
  await serverFor(t, db, 'prop.sql.echo', (payload: unknown) => payload, { concurrency: 20 })
  await fc.assert(
    fc.asyncProperty(storableString(300), jsonbValue, async (text, json) => {
      const [{ id }] = (await db.sql.unsafe(`select ${s}.request('prop.sql.echo', $1::text)::text as id`, [text])) as unknown as [{ id: string }]
      const [{ reply }] = (await db.sql.unsafe(`select ${s}.await_reply($1::bigint, '10 s') as reply`, [id])) as unknown as [{ reply: string }]
      assert.equal(reply, text)
      // $1::text::jsonb: given a jsonb parameter, postgres.js would JSON-encode the text once more.
      const [{ jsonId }] = (await db.sql.unsafe(`select ${s}.request('prop.sql.echo', $1::text::jsonb)::text as "jsonId"`, [JSON.stringify(json)])) as unknown as [
        { jsonId: string },
      ]
      const [{ value }] = (await db.sql.unsafe(`select ${s}.await_reply_json($1::bigint, '10 s') as value`, [jsonId])) as unknown as [{ value: unknown }]
      const [{ expected }] = (await db.sql.unsafe(`select $1::text::jsonb as expected`, [JSON.stringify(json)])) as unknown as [{ expected: unknown }]
      assert.deepStrictEqual(value, expected, 'the JSON value as jsonb holds it')
    }),
    { numRuns: 100 },
  )
})

test('await_reply() and friends with random ids: PR005 for ids that are not the caller\'s, no error from the others', async () => {
  const s = db.quoted
  const id = fc.oneof(fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }), fc.constantFrom(0n, 1n, -1n, 2n ** 63n - 1n, -(2n ** 63n)))
  await fc.assert(
    fc.asyncProperty(id, fc.array(id, { maxLength: 5 }), async (one, many) => {
      assert.equal(await stateOf(db.sql.unsafe(`select ${s}.await_reply($1::bigint, '50 ms')`, [one.toString()])), 'PR005')
      assert.equal(await stateOf(db.sql.unsafe(`select ${s}.await_reply_json($1::bigint, '50 ms')`, [one.toString()])), 'PR005')
      const ids = many.map(String)
      await db.sql.unsafe(`select ${s}.pgrr_ack($1::bigint[]), ${s}.pgrr_cancel($1::bigint[])`, [ids])
      const [row] = await db.sql.unsafe(
        `select (select count(*) from ${s}.pgrr_fetch($1::bigint[]))::int as fetched,
                (select count(*) from ${s}.pgrr_reap($1::bigint[]))::int as reaped`,
        [ids],
      )
      assert.deepStrictEqual({ ...row }, { fetched: 0, reaped: 0 })
    }),
    { numRuns: 100 },
  )
  assert.equal(await stateOf(db.sql.unsafe(`select ${s}.await_reply(null)`)), 'PR005')
})

test('random timeouts: request() accepts 1 ms to 24.8 days (else 22023); await_reply() ends within its wait', async (t) => {
  const s = db.quoted
  await serverFor(
    t,
    db,
    'prop.sql.slow',
    async (payload: unknown, ctx) => {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Number(payload))
        ctx.signal.addEventListener('abort', () => (clearTimeout(timer), resolve()), { once: true })
      })
      return 'slow reply'
    },
    { concurrency: 20 },
  )
  const interval = fc.oneof(
    fc.integer({ min: -2000, max: 600 }).map((ms) => `${ms} milliseconds`),
    fc.double({ min: -1e6, max: 1e6, noNaN: true }).map((seconds) => `${seconds.toFixed(6)} seconds`),
    fc.constantFrom('1000 years', '-1000 years', '24 days', '25 days', '1 month', '0', '1 microsecond'),
  )
  await fc.assert(
    fc.asyncProperty(interval, interval, fc.integer({ min: 0, max: 300 }), async (requestTimeout, waitTimeout, delayMs) => {
      const [{ ms }] = (await db.sql.unsafe(`select extract(epoch from $1::interval) * 1000 as ms`, [requestTimeout])) as unknown as [{ ms: string }]
      const requestMs = Number(ms)
      let id: string
      try {
        const [row] = await db.sql.unsafe(`select ${s}.request('prop.sql.slow', $1::text, $2::interval)::text as id`, [String(delayMs), requestTimeout])
        id = row!.id as string
      } catch (error) {
        assert.equal((error as { code?: string }).code, '22023', `request timeout ${requestTimeout}: ${(error as Error).message}`)
        assert.ok(!(requestMs >= 1 && requestMs <= 2_000_000_000), `refused a valid timeout ${requestTimeout}`)
        return
      }
      const [{ waitMs }] = (await db.sql.unsafe(`select extract(epoch from $1::interval) * 1000 as "waitMs"`, [waitTimeout])) as unknown as [{ waitMs: string }]
      const bound = Math.max(0, Math.min(Number(waitMs), requestMs))
      const startedAt = Date.now()
      const state = await stateOf(db.sql.unsafe(`select ${s}.await_reply($1::bigint, $2::interval)`, [id, waitTimeout]))
      const elapsed = Date.now() - startedAt
      assert.ok(['ok', 'PR002', 'PR009'].includes(state), `await_reply: ${state}`)
      assert.ok(elapsed <= bound + 1500, `await_reply took ${elapsed} ms, bound ${bound} ms (${waitTimeout}, request ${requestTimeout})`)
      await db.sql.unsafe(`select ${s}.pgrr_cancel($1::bigint[])`, [[id]])
    }),
    { numRuns: 60 },
  )
})

test('pgrr_send with random batches: one row per element, statuses from the contract, or 22023 for a bad reply channel', async (t) => {
  const s = db.quoted
  await serverFor(t, db, 'prop.sql.batch', () => 'ok')
  const element = fc.record({
    channel: fc.oneof(fc.constant('prop.sql.batch'), sqlChannel),
    payload: fc.option(storableString(30), { nil: null }),
    json: fc.option(fc.boolean(), { nil: null }),
    timeoutMs: fc.option(fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }), { nil: null }),
    headers: fc.option(fc.oneof(storableString(20), fc.constantFrom('{"a":"b"}', '{}', '[]', '{"a":1}', '{"a":"\\u0000"}')), { nil: null }),
    maxAttempts: fc.option(fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }), { nil: null }),
  })
  const replyTo = fc.option(storableString(70), { nil: null })
  const statuses = new Set(['ok', 'invalid_channel', 'no_responders', 'invalid_payload', 'invalid_headers', 'too_large'])
  await fc.assert(
    fc.asyncProperty(fc.array(element, { maxLength: 6 }), replyTo, async (elements, reply) => {
      let rows
      try {
        rows = await db.sql.unsafe(
          `select ord, id::text as id, status from ${s}.pgrr_send($1, $2::text[], $3::text[], $4::bool[], $5::int[], $6::text[], $7::int[])`,
          [
            reply,
            elements.map((e) => e.channel),
            elements.map((e) => e.payload),
            `{${elements.map((e) => (e.json === null ? 'NULL' : e.json ? 't' : 'f')).join(',')}}`,
            elements.map((e) => e.timeoutMs),
            elements.map((e) => e.headers),
            elements.map((e) => e.maxAttempts),
          ] as never[],
        )
      } catch (error) {
        assert.equal((error as { code?: string }).code, '22023', (error as Error).message)
        assert.ok(reply !== null && !(Buffer.byteLength(reply) >= 1 && Buffer.byteLength(reply) <= 63))
        return
      }
      assert.deepStrictEqual(
        rows.map((row) => row.ord as number),
        elements.map((_, i) => i + 1),
      )
      for (const row of rows) {
        assert.ok(statuses.has(row.status as string), String(row.status))
        assert.equal(row.id === null, row.status !== 'ok')
      }
      const ids = rows.filter((row) => row.id !== null).map((row) => row.id as string)
      await db.sql.unsafe(`select ${s}.pgrr_cancel($1::bigint[])`, [ids])
    }),
    { numRuns: 150 },
  )
  const [{ id }] = (await db.sql.unsafe(`select ${s}.request('prop.sql.batch', 'x'::text)::text as id`)) as unknown as [{ id: string }]
  const [{ reply }] = (await db.sql.unsafe(`select ${s}.await_reply($1::bigint) as reply`, [id])) as unknown as [{ reply: string }]
  assert.equal(reply, 'ok', 'the responder still serves')
})

test('await_reply_json of a JSON reply jsonb cannot hold raises 22P05 and leaves the reply for await_reply', async (t) => {
  const s = db.quoted
  await serverFor(t, db, 'prop.sql.nul', () => ({ text: 'nul \u0000 inside' }))
  const [{ id }] = (await db.sql.unsafe(`select ${s}.request('prop.sql.nul', 'x'::text)::text as id`)) as unknown as [{ id: string }]
  const error = await rejection(db.sql.unsafe(`select ${s}.await_reply_json($1::bigint, '10 s')`, [id]))
  assert.equal(error.code, '22P05', error.message)
  const [{ reply }] = (await db.sql.unsafe(`select ${s}.await_reply($1::bigint) as reply`, [id])) as unknown as [{ reply: string }]
  assert.deepStrictEqual(JSON.parse(reply), { text: 'nul \u0000 inside' })
})
