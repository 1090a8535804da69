// End to end, TypeScript caller to TypeScript responder: payloads and replies round-trip exactly, the handler
// context, channel names (valid and invalid, from TS and SQL), and the lifecycle (close, drain, reconnect).
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { test } from 'node:test'
import {
  CancelledError,
  connect,
  ClosedError,
  InvalidChannelError,
  InvalidOptionError,
  InvalidPayloadError,
  NoRespondersError,
  PgrrError,
  RemoteError,
  serve,
  type HandlerContext,
} from '../src/index.ts'
import { aborted, clientFor, deferred, rejection, requestRows, serverFor, useTestSchema, waitFor } from './helpers.ts'

const db = useTestSchema('e2e')

test('string and JSON payloads and replies round-trip exactly', async (t) => {
  const received: unknown[] = []
  await serverFor(t, db, 'echo', (payload) => {
    received.push(payload)
    return payload
  })
  const client = await clientFor(t, db)
  const values: unknown[] = [
    'plain text',
    '',
    '  spaces around  ',
    '{"a":1}', // a string that looks like JSON stays a string
    'null',
    '42',
    'line 1\nline 2\r\n\ttabbed',
    { a: 1, b: { c: [1, 2, { d: null }], e: 'ü' } },
    { nested: { deeper: { deepest: [[], {}, [[[]]]] } } },
    [1, 'two', null, true, false, { three: 3 }],
    [],
    {},
    0,
    42,
    -17,
    3.14159,
    1e-7,
    2 ** 53 - 1,
    -(2 ** 53 - 1),
    1.7976931348623157e308,
    5e-324,
    null,
    true,
    false,
    { unicode: '日本語 🎉 e\u0301', nul: 'a\u0000b' }, // inside JSON a NUL is an escape, so it is fine
    { key: 'value with "quotes" and \\backslashes\\' },
  ]
  for (const value of values) {
    received.length = 0
    const reply = await client.request('echo', value)
    assert.deepStrictEqual(received, [value], `the handler received ${JSON.stringify(value)}`)
    assert.deepStrictEqual(reply, value, `the reply to ${JSON.stringify(value)}`)
  }
  // The same, all in flight at once.
  const replies = await Promise.all(values.map((value) => client.request('echo', value)))
  assert.deepStrictEqual(replies, values)
})

test('non-ASCII text, quotes and backslashes round-trip exactly', async (t) => {
  await serverFor(t, db, 'text', (payload: unknown) => ({ got: payload, reply: `re: ${JSON.stringify(payload)}` }))
  await serverFor(t, db, 'text.raw', (payload: unknown) => payload)
  const client = await clientFor(t, db)
  const texts = [
    'emoji 😀 👩‍👩‍👧‍👦 🏳️‍🌈 🇫🇷',
    'CJK 漢字・かな・カナ 한국어',
    'combining e\u0301 a\u0308 o\u0302\u0323 देवनागरी क्षि',
    'RTL שלום עולם مرحبا بالعالم \u200f\u202e reversed\u202c',
    `quotes 'single' "double" \`back\` ‘curly’ “curly”`,
    'backslashes C:\\path\\to\\file \\n \\\\ \\u0000 \\x00 \\',
    `sql '); drop table x; -- $$ dollar $$ $1 %s`,
    'invisible \ufeff BOM \u200b zero width \u00a0 nbsp',
    'astral \u{10FFFF} \u{1F600} \u{20000}',
    'controls \u0001\u0007\u001b\u007f\u0085',
    'long ünïcödé '.repeat(300), // about 5 KB: handed over and replied inside NOTIFYs of their own
    'longer ünïcödé '.repeat(600), // over 8 KB: queued and claimed, the reply fetched
  ]
  for (const text of texts) {
    assert.equal(await client.request('text.raw', text), text)
    assert.deepStrictEqual(await client.request('text', text), { got: text, reply: `re: ${JSON.stringify(text)}` })
    assert.deepStrictEqual(await client.request('text', { text }), { got: { text }, reply: `re: ${JSON.stringify({ text })}` })
  }
})

test('a burst mixing small and large requests and replies: each answered once, the large ones in statements of their own', { timeout: 60_000 }, async (t) => {
  const ran = new Map<string, number>()
  await serverFor(t, db, 'mixed', async (payload: string) => {
    const key = payload.slice(0, 8)
    ran.set(key, (ran.get(key) ?? 0) + 1)
    // Replies of all sizes finish in the same turn, so that they are written in one flush.
    await new Promise((resolve) => setImmediate(resolve))
    return `${key}:${payload.length}:${payload.length > 20_000 ? 'r'.repeat(50_000) : 'r'}`
  }, { concurrency: 16 })
  const client = await clientFor(t, db)
  const sizes = [10, 40_000, 100, 33_000, 7_000, 70_000, 20, 32_768]
  const payloads = sizes.map((size, i) => `req-${String(i).padStart(3, '0')}`.padEnd(size, 'x').slice(0, Math.max(size, 8)))
  const replies = await Promise.all(payloads.map((payload) => client.request<string>('mixed', payload)))
  for (const [i, reply] of replies.entries()) {
    const payload = payloads[i]!
    assert.equal(reply, `${payload.slice(0, 8)}:${payload.length}:${payload.length > 20_000 ? 'r'.repeat(50_000) : 'r'}`)
  }
  assert.deepEqual([...ran.values()], sizes.map(() => 1), 'each ran once')
})

test('a 1 MB payload and a 1 MB reply round-trip (text and JSON)', { timeout: 60_000 }, async (t) => {
  await serverFor(t, db, 'big', (payload: unknown) =>
    typeof payload === 'string' ? `${payload.length}:${payload}` : { length: JSON.stringify(payload).length, payload },
  )
  const client = await clientFor(t, db)
  const unit = 'ascii 🎉 ü 漢 "\\ '
  const big = unit.repeat(Math.ceil((1024 * 1024) / Buffer.byteLength(unit)))
  assert.ok(Buffer.byteLength(big) >= 1024 * 1024)
  const reply = await client.request<string>('big', big)
  assert.ok(reply === `${big.length}:${big}`, `1 MB text reply differs (length ${reply.length}, expected ${big.length + String(big.length).length + 1})`)
  const json = { big, list: [big.slice(0, 1000)] }
  const jsonReply = await client.request<{ length: number; payload: unknown }>('big', json)
  assert.equal(jsonReply.length, JSON.stringify(json).length)
  assert.ok(JSON.stringify(jsonReply.payload) === JSON.stringify(json), '1 MB JSON reply differs')
})

test('payloads PostgreSQL cannot hold reject InvalidPayloadError before anything is stored', async (t) => {
  let calls = 0
  await serverFor(t, db, 'invalid.payload', () => {
    calls++
    return 'handled'
  })
  const client = await clientFor(t, db)
  const invalid: [string, unknown][] = [
    ['a NUL character', 'before\u0000after'],
    ['a lone surrogate', 'half \ud83d of an emoji'],
    ['undefined', undefined],
    ['a function', () => 1],
    ['a bigint', { n: 1n }],
    ['NaN', Number.NaN],
    ['Infinity', Number.POSITIVE_INFINITY],
    ['Infinity in an object', { v: Number.POSITIVE_INFINITY }],
    ['NaN deep in an array', { list: [1, [2, Number.NaN]] }],
    ['-Infinity from a toJSON', { at: { toJSON: () => Number.NEGATIVE_INFINITY } }],
  ]
  for (const [what, payload] of invalid) {
    const error = await rejection(client.request('invalid.payload', payload))
    assert.ok(error instanceof InvalidPayloadError, `${what}: ${error.name}: ${error.message}`)
    assert.equal(error.code, 'INVALID_PAYLOAD')
    assert.ok(error instanceof PgrrError)
  }
  assert.equal(await client.request('invalid.payload', 'valid'), 'handled')
  assert.equal(calls, 1, 'only the valid request reached the handler')
  // The one valid request is acknowledged (deleted) asynchronously.
  await waitFor(async () => (await requestRows(db, 'invalid.payload')).length === 0, { message: 'the request table of the channel empties' })
})

test('a reply PostgreSQL cannot hold becomes a RemoteError, not a hang', async (t) => {
  await serverFor(t, db, 'invalid.reply', () => 'reply with NUL \u0000')
  const client = await clientFor(t, db)
  const error = await rejection(client.request('invalid.reply', 'x', { timeoutMs: 10_000 }))
  assert.ok(error instanceof RemoteError, `${error.name}: ${error.message}`)
  assert.equal(error.remoteCode, 'INVALID_REPLY')
  assert.match(error.message, /NUL/)
})

test('a reply with NaN or Infinity inside is an INVALID_REPLY, not a null', async (t) => {
  await serverFor(t, db, 'invalid.nested', (payload: string) => (payload === 'nan' ? { list: [Number.NaN] } : { v: Number.POSITIVE_INFINITY }))
  const client = await clientFor(t, db)
  for (const payload of ['nan', 'infinity']) {
    const error = await rejection(client.request('invalid.nested', payload, { timeoutMs: 10_000 }))
    assert.ok(error instanceof RemoteError, `${payload}: ${error.name}: ${error.message}`)
    assert.equal(error.remoteCode, 'INVALID_REPLY')
    assert.match(error.message, /NaN|Infinity/)
  }
})

test('headers reach the handler; attempt is 1; deadline is in the future', async (t) => {
  const contexts: { ctx: HandlerContext; now: number }[] = []
  await serverFor(t, db, 'context', (_payload, ctx) => {
    contexts.push({ ctx, now: Date.now() })
    return 'ok'
  })
  const client = await clientFor(t, db)
  const headers = { 'x-trace-id': 'abc-123', 'ünï cödé': '🎉 "quoted" \\ back', empty: '' }
  const timeoutMs = 20_000
  assert.equal(await client.request('context', 'with headers', { headers, timeoutMs }), 'ok')
  assert.equal(await client.request('context', 'without headers'), 'ok')

  assert.equal(contexts.length, 2)
  const [first, second] = contexts as [(typeof contexts)[0], (typeof contexts)[0]]
  assert.deepStrictEqual({ ...first.ctx.headers }, headers)
  assert.deepStrictEqual({ ...second.ctx.headers }, {})
  for (const { ctx } of contexts) {
    assert.equal(ctx.attempt, 1)
    assert.equal(ctx.channel, 'context')
    assert.match(ctx.id, /^[1-9][0-9]*$/)
    assert.ok(ctx.signal instanceof AbortSignal && !ctx.signal.aborted)
  }
  assert.notEqual(first.ctx.id, second.ctx.id)
  assert.ok(first.ctx.deadline instanceof Date)
  const left = first.ctx.deadline.getTime() - first.now
  assert.ok(left > 0, `deadline is ${left} ms in the future`)
  assert.ok(left <= timeoutMs + 1, `deadline ${left} ms away is within the request's timeout of ${timeoutMs} ms`)

  await assert.rejects(client.request('context', 'x', { headers: { n: 1 as unknown as string } }), InvalidOptionError)
})

const invalidChannels: [string, string][] = [
  ['empty', ''],
  ['64 ASCII bytes', 'a'.repeat(64)],
  ['64 UTF-8 bytes in 32 characters', 'é'.repeat(32)],
  ['NUL', 'a\u0000b'],
  ['newline', 'a\nb'],
  ['tab', 'a\tb'],
  ['unit separator', 'a\u001fb'],
  ['DEL', 'a\u007fb'],
  ['C1 control', 'a\u0085b'],
]

// Names that look dangerous in SQL or in LISTEN, but are valid: 1 to 63 bytes, no control characters.
const validOddChannels = [
  'a"; drop table x; --',
  "'",
  "'); select pg_sleep(10); --",
  'with spaces',
  'ユニコード 🚀',
  '$1 %s \\ \\\\',
  'pgrr.fake.s1',
  'ü'.repeat(31) + 'a', // 63 bytes
]

test('invalid channel names reject InvalidChannelError (request and serve) and PR007 in SQL', async (t) => {
  const client = await clientFor(t, db)
  for (const [what, channel] of invalidChannels) {
    const error = await rejection(client.request(channel, 'x'))
    assert.ok(error instanceof InvalidChannelError, `request, ${what}: ${error.name}`)
    assert.equal(error.code, 'INVALID_CHANNEL')
    const serveError = await rejection(client.serve(channel, () => 'never'))
    assert.ok(serveError instanceof InvalidChannelError, `serve, ${what}: ${serveError.name}`)
    if (channel.includes('\u0000')) continue // PostgreSQL text cannot even carry it
    const sqlError = await rejection(db.sql.unsafe(`select ${db.quoted}.request($1::text, 'x'::text)`, [channel]))
    assert.equal(sqlError.code, 'PR007', `SQL, ${what}: ${sqlError.message}`)
  }
  const nullError = await rejection(db.sql.unsafe(`select ${db.quoted}.request(null::text, 'x'::text)`))
  assert.equal(nullError.code, 'PR007')
  const [{ count }] = await db.sql.unsafe(`select count(*)::int as count from ${db.quoted}.pgrr_channel where name = any ($1::text[])`, [
    invalidChannels.map(([, channel]) => channel.replaceAll('\u0000', '')),
  ]) as unknown as [{ count: number }]
  assert.equal(count, 0, 'no invalid channel was registered')
})

test('valid channel names that look like injections work end to end, from TS and SQL', async (t) => {
  const client = await clientFor(t, db)
  for (const channel of validOddChannels) {
    const server = await client.serve(channel, (payload: unknown, ctx) => ({ channel: ctx.channel, payload }))
    try {
      assert.deepStrictEqual(await client.request(channel, 'from TS'), { channel, payload: 'from TS' }, `TS on ${JSON.stringify(channel)}`)
      const [{ id }] = await db.sql.unsafe(`select ${db.quoted}.request($1::text, 'from SQL'::text) as id`, [channel]) as unknown as [{ id: string }]
      const [{ reply }] = await db.sql.unsafe(`select ${db.quoted}.await_reply_json($1::bigint, '10 s') as reply`, [id]) as unknown as [{ reply: unknown }]
      assert.deepStrictEqual(reply, { channel, payload: 'from SQL' }, `SQL on ${JSON.stringify(channel)}`)
    } finally {
      await server.close()
    }
    const error = await rejection(client.request(channel, 'nobody left'))
    assert.ok(error instanceof NoRespondersError, `${JSON.stringify(channel)} after close: ${error.name}`)
    assert.equal(error.channel, channel)
  }
  const [{ ok }] = await db.sql.unsafe(`select count(*) = $2 as ok from ${db.quoted}.pgrr_channel where name = any ($1::text[])`, [
    validOddChannels,
    validOddChannels.length,
  ]) as unknown as [{ ok: boolean }]
  assert.ok(ok, 'every odd name was registered verbatim')
})

test('client.close() rejects pending requests with ClosedError; the client refuses new ones', async (t) => {
  const started = deferred()
  const release = deferred<string>()
  await serverFor(t, db, 'close.pending', async () => {
    started.resolve()
    return release.promise
  })
  const client = await clientFor(t, db)
  const pending = rejection(client.request('close.pending', 'x', { timeoutMs: 20_000 }))
  await started.promise
  assert.equal(client.inFlight, 1)
  await client.close()
  const error = await pending
  assert.ok(error instanceof ClosedError, `${error.name}: ${error.message}`)
  assert.equal(error.code, 'CLOSED')
  assert.equal(client.inFlight, 0)
  assert.ok((await rejection(client.request('close.pending', 'y'))) instanceof ClosedError)
  await assert.rejects(client.serve('close.pending.serve', () => 'x'), ClosedError)
  await client.close() // idempotent
  release.resolve('late reply')
})

test('client.close() cancels its pending requests at the responder', async (t) => {
  const started = deferred<AbortSignal>()
  await serverFor(t, db, 'close.cancel', (_payload, ctx) => {
    started.resolve(ctx.signal)
    return new Promise((_resolve, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason as Error)))
  })
  const client = await clientFor(t, db)
  const pending = rejection(client.request('close.cancel', 'x', { timeoutMs: 20_000 }))
  const signal = await started.promise
  await client.close()
  assert.ok((await pending) instanceof ClosedError)
  // close() waits for its cancel statements, so the row is already cancelled (or gone).
  const rows = await requestRows(db, 'close.cancel')
  assert.ok(rows.every((row) => row.state === 'cancelled'), `rows after close(): ${JSON.stringify(rows)}`)
  // Well before the 20 s deadline: only the cancellation can fire the handler's signal.
  const reason = await aborted(signal)
  assert.ok(reason instanceof CancelledError, `the handler's signal fired with ${String(reason)}`)
  await waitFor(async () => (await requestRows(db, 'close.cancel')).length === 0, { message: 'the cancelled request is removed' })
})

test('client.close() right after request() (still being sent) rejects it with ClosedError', async (t) => {
  await serverFor(t, db, 'close.sending', async () => new Promise(() => {}))
  const client = await clientFor(t, db)
  const pending = rejection(client.request('close.sending', 'x', { timeoutMs: 2000 }))
  await client.close()
  const error = await pending
  assert.ok(error instanceof ClosedError, `${error.name}: ${error.message}`)
})

test('server.drain() finishes the request in flight, then new requests get NoRespondersError', async (t) => {
  const started = deferred()
  const release = deferred()
  const server = await serverFor(t, db, 'drain', async (payload: unknown) => {
    started.resolve()
    await release.promise
    return `done ${String(payload)}`
  })
  const client = await clientFor(t, db)
  const inFlight = client.request('drain', 'first', { timeoutMs: 20_000 })
  await started.promise
  const responderId = server.responderId
  const draining = server.drain(20_000)
  assert.equal(server.state, 'draining')
  // Once it has unregistered, the channel has no live responder (its session still holds its lock).
  await waitFor(async () => {
    const rows = await db.sql.unsafe(`select 1 from ${db.quoted}.pgrr_live_responder where id = $1`, [responderId!])
    return rows.length === 0
  }, { message: 'the draining responder unregisters' })
  const refused = await rejection(client.request('drain', 'second'))
  assert.ok(refused instanceof NoRespondersError, `${refused.name}: ${refused.message}`)
  assert.equal(server.state, 'draining')
  release.resolve()
  assert.equal(await inFlight, 'done first')
  await draining
  assert.equal(server.state, 'closed')
  assert.ok((await rejection(client.request('drain', 'third'))) instanceof NoRespondersError)
})

test('callers and responders recover after pg_terminate_backend of all their sessions', { timeout: 60_000 }, async (t) => {
  // Names of their own, so that only this test's sessions are terminated (others share the server).
  const suffix = randomBytes(4).toString('hex')
  const serverApp = `pgrr-test-server-${suffix}`
  const clientApp = `pgrr-test-client-${suffix}`
  const server = await serve({ ...db.options, applicationName: serverApp }, 'reconnect', (payload: unknown) => `re ${String(payload)}`)
  t.after(() => server.close())
  const client = await clientFor(t, db, { applicationName: clientApp })
  assert.equal(await client.request('reconnect', 'before'), 're before')
  const firstResponderId = server.responderId
  const terminated = await db.sql`
    select pg_terminate_backend(pid) as ok from pg_stat_activity
     where application_name in (${serverApp}, ${clientApp})`
  // The server's pool, LISTEN and work sessions; the client's pool and LISTEN sessions.
  assert.ok(terminated.length >= 3, `terminated ${terminated.length} sessions`)
  // Requests may fail while the sessions come back (a broken connection, no responders while re-registering).
  const reply = await waitFor(async () => {
    try {
      return await client.request('reconnect', 'after', { timeoutMs: 3000 })
    } catch (error) {
      assert.ok(error instanceof PgrrError, `while reconnecting: ${String(error)}`)
      return undefined
    }
  }, { timeoutMs: 30_000, intervalMs: 100, message: 'a request succeeds after the sessions were terminated' })
  assert.equal(reply, 're after')
  assert.equal(server.state, 'running')
  assert.notEqual(server.responderId, firstResponderId, 'the responder registered anew on a fresh session')
})

test('reply headers travel back: requestWithHeaders, RemoteError.headers, await_reply_full; big replies too', async (t) => {
  await serverFor(t, db, 'e2e.reply.headers', (payload: string, ctx) => {
    ctx.replyHeaders['x-served-by'] = 'responder-1'
    ctx.replyHeaders['x-échoed'] = ctx.headers['x-request'] ?? 'none'
    if (payload === 'fail') throw Object.assign(new Error('refused'), { code: 'E_NO' })
    return payload === 'big' ? 'x'.repeat(100_000) : payload.toUpperCase()
  })
  const client = await clientFor(t, db)
  const { reply, headers } = await client.requestWithHeaders<string>('e2e.reply.headers', 'hi', { headers: { 'x-request': 'r1' } })
  assert.equal(reply, 'HI')
  assert.deepStrictEqual(headers, { 'x-served-by': 'responder-1', 'x-échoed': 'r1' })
  // Too big for the NOTIFY: reply and headers are fetched.
  const big = await client.requestWithHeaders<string>('e2e.reply.headers', 'big')
  assert.equal(big.reply.length, 100_000)
  assert.deepStrictEqual(big.headers, { 'x-served-by': 'responder-1', 'x-échoed': 'none' })
  // Plain request() still resolves with the reply alone.
  assert.equal(await client.request('e2e.reply.headers', 'plain'), 'PLAIN')
  const error = await rejection(client.request('e2e.reply.headers', 'fail'))
  assert.ok(error instanceof RemoteError)
  assert.deepStrictEqual(error.headers, { 'x-served-by': 'responder-1', 'x-échoed': 'none' })
  // From SQL.
  const [{ id }] = (await db.sql.unsafe(`select ${db.quoted}.request('e2e.reply.headers', 'sql'::text, null, '{"x-request":"q"}') as id`)) as unknown as [{ id: string }]
  const [full] = await db.sql.unsafe(`select reply, reply_json, headers from ${db.quoted}.await_reply_full($1)`, [id])
  assert.deepStrictEqual({ ...full }, { reply: 'SQL', reply_json: false, headers: { 'x-served-by': 'responder-1', 'x-échoed': 'q' } })
})

test('reply headers that cannot travel make the reply an INVALID_REPLY error reply, for TypeScript and SQL callers', async (t) => {
  await serverFor(t, db, 'e2e.reply.badheaders', (payload: string, ctx) => {
    if (payload === 'number') (ctx.replyHeaders as Record<string, unknown>)['x-number'] = 42
    else ctx.replyHeaders['x-nul'] = 'a\u0000b'
    return 'the reply'
  })
  const client = await clientFor(t, db)
  for (const [payload, message] of [['number', /reply header "x-number" must be a string, got number/], ['nul', /reply header "x-nul" holds text PostgreSQL cannot store/]] as const) {
    const error = await rejection(client.request('e2e.reply.badheaders', payload))
    assert.ok(error instanceof RemoteError, `${payload}: ${error.name}: ${error.message}`)
    assert.equal(error.remoteCode, 'INVALID_REPLY')
    assert.match(error.message, message)
  }
  const [{ id }] = (await db.sql.unsafe(`select ${db.quoted}.request('e2e.reply.badheaders', 'number'::text) as id`)) as unknown as [{ id: string }]
  const sqlError = await rejection(db.sql.unsafe(`select ${db.quoted}.await_reply($1)`, [id]))
  assert.equal(sqlError.code, 'PR003')
  assert.equal(sqlError.detail, 'INVALID_REPLY')
})

test('options out of range fail at once with InvalidOptionError; fractions of a millisecond round up', async (t) => {
  const invalid: [string, Record<string, unknown>][] = [
    ['overflow', { overflow: 'rejct' }],
    ['fallbackPollIntervalMs', { fallbackPollIntervalMs: -5 }],
    ['defaultTimeoutMs', { defaultTimeoutMs: 3e9 }],
    ['checkIntervalMs', { checkIntervalMs: 3e9 }],
    ['poolSize', { poolSize: 2.5 }],
    ['maxInFlight', { maxInFlight: 0 }],
  ]
  for (const [name, options] of invalid) {
    // A client that opens anyway is closed again, so that the assertion below fails rather than hangs.
    const error = await rejection(connect({ ...db.options, ...options }).then(async (client) => client.close()))
    assert.ok(error instanceof InvalidOptionError, `${name}: ${error.name}: ${error.message}`)
    assert.match(error.message, new RegExp(name))
  }
  const server = await serverFor(t, db, 'options', (payload: string) => payload)
  const client = await clientFor(t, db)
  // A computed timeout (say, from performance.now()) is a fraction: it rounds up, in a batch with others.
  const replies = await Promise.all([client.request('options', 'a', { timeoutMs: 1500.5 }), client.request('options', 'b')])
  assert.deepEqual(replies, ['a', 'b'])
  for (const timeoutMs of [0, -1, 3e9, Number.NaN]) {
    const error = await rejection(client.request('options', 'x', { timeoutMs }))
    assert.ok(error instanceof InvalidOptionError, `timeoutMs ${timeoutMs}: ${error.name}: ${error.message}`)
  }
  await assert.rejects(server.drain(-1), InvalidOptionError)
  assert.equal(server.state, 'running', 'a refused drain changes nothing')
})
