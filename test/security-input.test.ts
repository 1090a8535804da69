// Hostile input: channel names that look like SQL (accepted and kept apart, everywhere), invalid channel
// names (rejected with a clear error at every entry point: SQL functions, TypeScript API, CLI), payload
// limits per channel (requests and replies), the per-claim byte cap, headers, reply channels and timeouts.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import postgres from 'postgres'
import { configureChannel, grantChannel } from '../src/channel-config.ts'
import { InvalidChannelError, InvalidOptionError, InvalidPayloadError, PayloadTooLargeError, RemoteError } from '../src/index.ts'
import { runPgrr, startPgrr } from './fixtures/security-cli.ts'
import { clientFor, rejection, serverFor, useTestSchema } from './helpers.ts'

const db = useTestSchema('sec_input')

/** Valid names built to break naive quoting: each must work end to end and stay a channel of its own. */
const tricky = [
  "'; drop table pgrr_request; --",
  '"; drop schema public cascade; --',
  "x'); select pg_sleep(10); --",
  '$$; select 1; $$',
  '\\ back\\slash \\\\',
  "E'\\x41'",
  'pgrr.1.s1',
  'listen x; notify y',
  'unlisten *',
  '*',
  '%',
  '_',
  ' ',
  ' leading and trailing ',
  'ünïcödé 🎉',
  '\u202e reversed',
  'NULL',
  'a'.repeat(63),
  '€'.repeat(21),
]

/** Invalid names: empty, over 63 bytes, control characters. */
const invalid = ['', 'a'.repeat(64), '€'.repeat(22), '🎉'.repeat(16), 'tab\there', 'new\nline', 'cr\rhere', 'del\u007f', 'c1\u0085', 'bell\u0007', 'esc\u001b[31m']

async function sqlState(promise: Promise<unknown>): Promise<string> {
  const error = await rejection(promise)
  return String(error.code)
}

test('channel names that look like SQL work end to end from TypeScript and SQL, each as a channel of its own', async (t) => {
  const s = db.quoted
  const [{ me }] = (await db.sql.unsafe('select current_user as me')) as unknown as [{ me: string }]
  const client = await clientFor(t, db)
  for (const channel of tricky) {
    await serverFor(t, db, channel, (payload: unknown, ctx) => ({ payload, channel: ctx.channel }))
  }
  for (const channel of tricky) {
    assert.deepStrictEqual(await client.request(channel, 'ts'), { payload: 'ts', channel }, `TS ${JSON.stringify(channel)}`)
    const [{ id }] = (await db.sql.unsafe(`select ${s}.request($1, 'sql'::text)::text as id`, [channel])) as unknown as [{ id: string }]
    const [{ reply }] = (await db.sql.unsafe(`select ${s}.await_reply_json($1::bigint, '10 s') as reply`, [id])) as unknown as [{ reply: unknown }]
    assert.deepStrictEqual(reply, { payload: 'sql', channel }, `SQL ${JSON.stringify(channel)}`)
    await configureChannel(db.options, channel, { maxAttempts: 2 })
    await grantChannel(db.options, channel, me)
  }
  const rows = await db.sql.unsafe(`select name from ${s}.pgrr_channel where name = any ($1::text[])`, [tricky])
  assert.equal(rows.length, tricky.length, 'one channel per name, stored verbatim')
  const [{ ok }] = (await db.sql.unsafe(`select to_regclass('public.pg_class') is null and to_regnamespace('public') is not null as ok`)) as unknown as [{ ok: boolean }]
  assert.ok(ok, 'nothing was dropped')
})

test('invalid channel names are rejected with a clear error by every entry point', async (t) => {
  const s = db.quoted
  const client = await clientFor(t, db)
  for (const channel of invalid) {
    const what = JSON.stringify(channel)
    const requestError = await rejection(client.request(channel, 'x'))
    assert.ok(requestError instanceof InvalidChannelError, `request ${what}: ${requestError.name}`)
    assert.match(requestError.message, /1 to 63 bytes without control characters/)
    const serveError = await rejection(client.serve(channel, () => 'x'))
    assert.ok(serveError instanceof InvalidChannelError, `serve ${what}: ${serveError.name}`)
    const configureError = await rejection(configureChannel(db.options, channel, { maxAttempts: 1 }))
    assert.ok(configureError instanceof InvalidChannelError, `configureChannel ${what}: ${configureError.name}`)
    const grantError = await rejection(grantChannel(db.options, channel, 'nobody'))
    assert.ok(grantError instanceof InvalidChannelError, `grantChannel ${what}: ${grantError.name}`)
    assert.equal(await sqlState(db.sql.unsafe(`select ${s}.request($1, 'x'::text)`, [channel])), 'PR007', `SQL request ${what}`)
    assert.equal(await sqlState(db.sql.unsafe(`select ${s}.request($1, '1'::jsonb)`, [channel])), 'PR007', `SQL request jsonb ${what}`)
    assert.equal(await sqlState(db.sql.unsafe(`select * from ${s}.pgrr_register($1, 'h', 1, 1)`, [channel])), 'PR007', `SQL register ${what}`)
    assert.equal(await sqlState(db.sql.unsafe(`select * from ${s}.pgrr_configure_channel($1, 10)`, [channel])), 'PR007', `SQL configure ${what}`)
    assert.equal(await sqlState(db.sql.unsafe(`select ${s}.pgrr_grant_channel($1, current_user)`, [channel])), 'PR007', `SQL grant ${what}`)
    const [row] = await db.sql.unsafe(`select ${s}.pgrr_send(null, $1::text[], '{x}', '{f}', '{1000}', '{NULL}', '{NULL}') as sent`, [[channel]])
    assert.match(String(row?.sent), /invalid_channel/, `SQL pgrr_send ${what}`)
  }
  // NUL cannot reach SQL at all (PostgreSQL text cannot hold it); the TypeScript API rejects it first.
  assert.ok((await rejection(client.request('nul\u0000', 'x'))) instanceof InvalidChannelError)
  assert.equal(await sqlState(db.sql.unsafe(`select ${s}.request(null, 'x'::text)`)), 'PR007', 'SQL request null channel')
})

test(
  'a channel name with a lone UTF-16 surrogate is rejected (it would reach the database as U+FFFD, aliasing another name)',
  async (t) => {
    const client = await clientFor(t, db)
    const error = await rejection(client.request('lone\uD800', 'x'))
    assert.ok(error instanceof InvalidChannelError, `${error.name}: ${error.message}`)
  },
)

test('the CLI passes hostile channel names through safely: pgrr serve and pgrr request', { timeout: 120_000 }, async () => {
  const env = { DATABASE_URL: db.options.connectionString }
  const common = ['--schema', db.schema]
  for (const channel of ["'; drop table pgrr_request; --", '$$ "quoted" $$', 'ünï 🎉 \\']) {
    const serve = startPgrr(['serve', channel, '--handler', 'test/fixtures/security-echo-handler.ts', ...common], env)
    try {
      await serve.waitForStderr(/serving /)
      const result = await runPgrr(['request', channel, 'hi', '--timeout', '10000', ...common], env)
      assert.equal(result.code, 0, `request ${JSON.stringify(channel)}: ${result.stderr}`)
      assert.deepStrictEqual(JSON.parse(result.stdout), { echoed: 'hi', channel })
    } finally {
      await serve.stop()
    }
  }
  const nobody = await runPgrr(['request', "nobody'; --", 'hi', ...common], env)
  assert.equal(nobody.code, 3, `no responders: ${nobody.stderr}`)
  for (const channel of ['', 'a'.repeat(64), 'new\nline', 'esc\u001b[2J']) {
    const request = await runPgrr(['request', channel, 'hi', ...common], env)
    assert.equal(request.code, 10, `request ${JSON.stringify(channel)}: ${request.stderr}`)
    assert.match(request.stderr, /invalid channel name/)
    const serve = await runPgrr(['serve', channel, '--handler', 'test/fixtures/security-echo-handler.ts', ...common], env)
    assert.equal(serve.code, 10, `serve ${JSON.stringify(channel)}: ${serve.stderr}`)
    assert.match(serve.stderr, /invalid channel name/)
  }
})

test('configureChannel sets a channel\'s limits; omitted settings stay; values out of range are refused', async () => {
  const s = db.quoted
  assert.deepStrictEqual(await configureChannel(db.options, 'limits.config', {}), {
    channel: 'limits.config',
    maxPayloadBytes: 67108864,
    maxAttempts: 1,
  })
  assert.deepStrictEqual(await configureChannel(db.options, 'limits.config', { maxPayloadBytes: 1000 }), {
    channel: 'limits.config',
    maxPayloadBytes: 1000,
    maxAttempts: 1,
  })
  assert.deepStrictEqual(await configureChannel(db.options, 'limits.config', { maxAttempts: 3 }), {
    channel: 'limits.config',
    maxPayloadBytes: 1000,
    maxAttempts: 3,
  })
  for (const settings of [{ maxPayloadBytes: 0 }, { maxPayloadBytes: 1.5 }, { maxPayloadBytes: 2 ** 31 }, { maxAttempts: 0 }, { maxAttempts: 101 }, { maxAttempts: Number.NaN }]) {
    const error = await rejection(configureChannel(db.options, 'limits.config', settings))
    assert.ok(error instanceof InvalidOptionError, `${JSON.stringify(settings)}: ${error.name}`)
  }
  for (const [bytes, attempts] of [[0, null], [-1, null], [1073741824, null], [null, 0], [null, 101]] as [number | null, number | null][]) {
    assert.equal(
      await sqlState(db.sql.unsafe(`select * from ${s}.pgrr_configure_channel('limits.config', $1::int, $2::int)`, [bytes, attempts])),
      '22023',
      `SQL ${bytes} ${attempts}`,
    )
  }
})

test('a channel\'s max_payload_bytes bounds request payloads and replies; headers have 64 KiB', async (t) => {
  const s = db.quoted
  const channel = 'limits.small'
  await configureChannel(db.options, channel, { maxPayloadBytes: 1000 })
  await serverFor(t, db, channel, (payload: unknown) => {
    if (payload === 'big reply') return 'r'.repeat(1001)
    if (payload === 'big json reply') return { r: 'r'.repeat(1000) }
    if (payload === 'big error') throw Object.assign(new Error('e'.repeat(1001)), { code: 'E_BIG' })
    return typeof payload === 'string' ? payload.length : payload
  })
  const client = await clientFor(t, db)
  assert.equal(await client.request(channel, 'x'.repeat(1000)), 1000)
  assert.equal(await client.request(channel, 'x'.repeat(1000), { headers: { a: 'b'.repeat(60_000) } }), 1000)
  for (const payload of ['x'.repeat(1001), '€'.repeat(334)]) {
    const error = await rejection(client.request(channel, payload))
    assert.ok(error instanceof PayloadTooLargeError, `${payload.length} chars: ${error.name}: ${error.message}`)
    assert.equal(error.code, 'PAYLOAD_TOO_LARGE')
  }
  // Headers over 64 KiB are a bad option, named as such: not a payload too large.
  const headersError = await rejection(client.request(channel, 'x', { headers: { a: 'b'.repeat(65_536) } }))
  assert.ok(headersError instanceof InvalidOptionError, `${headersError.name}: ${headersError.message}`)
  assert.match(headersError.message, /headers take \d+ bytes as JSON, over the limit of 65536/)
  const sqlError = await rejection(db.sql.unsafe(`select ${s}.request($1, repeat('x', 1001))`, [channel]))
  assert.equal(sqlError.code, 'PR008')
  assert.match(sqlError.message, /payload too large/)
  const sqlHeaders = await rejection(db.sql.unsafe(`select ${s}.request($1, 'x'::text, null, jsonb_build_object('a', repeat('b', 65536)))`, [channel]))
  assert.equal(sqlHeaders.code, '22023')
  assert.match(sqlHeaders.message, /headers take more than 64 KiB/)

  for (const payload of ['big reply', 'big json reply']) {
    const error = await rejection(client.request(channel, payload))
    assert.ok(error instanceof RemoteError, `${payload}: ${error.name}: ${error.message}`)
    assert.equal(error.remoteCode, 'INVALID_REPLY')
    assert.match(error.message, /reply of \d+ bytes is over the limit of 1000 bytes/)
  }
  const bigError = await rejection(client.request(channel, 'big error'))
  assert.ok(bigError instanceof RemoteError, `${bigError.name}: ${bigError.message}`)
  assert.equal(bigError.remoteCode, 'E_BIG')
  assert.match(bigError.message, /error message of 1001 bytes is over the limit/)
  assert.equal(await client.request(channel, 'still fine'), 10, 'the responder keeps serving')
})

test('one claim returns at most 8 MiB of payloads, and always at least one request', async () => {
  const s = db.quoted
  const channel = 'claim.cap'
  // A session of its own: it is terminated at the end, which must not leave a dead connection in db.sql.
  const session = postgres(db.options.connectionString, { max: 1, onnotice: () => {} })
  const responder = await session.reserve()
  try {
    const [reg] = await responder.unsafe(`select responder_id, channel_id from ${s}.pgrr_register($1, 'h', 1, 100)`, [channel])
    const mib = 1024 * 1024
    for (let i = 0; i < 5; i++) await db.sql.unsafe(`select ${s}.request($1, repeat('p', $2))`, [channel, 3 * mib])
    const claim = async () =>
      (await responder.unsafe(`select id, octet_length(payload) as bytes from ${s}.pgrr_claim($1, $2, 100)`, [reg!.responder_id, reg!.channel_id])).map(
        (row) => Number(row.bytes),
      )
    assert.deepStrictEqual(await claim(), [3 * mib, 3 * mib, 3 * mib], 'stops once 8 MiB are reached')
    assert.deepStrictEqual(await claim(), [3 * mib, 3 * mib])
    await db.sql.unsafe(`select ${s}.request($1, repeat('h', $2))`, [channel, 20 * mib])
    assert.deepStrictEqual(await claim(), [20 * mib], 'a request larger than the cap still goes, alone')
    assert.deepStrictEqual(await claim(), [])
  } finally {
    // Ending the session releases the request locks; the requests become lost and are swept.
    await responder.unsafe('select pg_terminate_backend(pg_backend_pid())').catch(() => undefined)
    responder.release()
    await session.end({ timeout: 1 })
  }
})

test('headers must be a flat JSON object of strings; a bad one fails alone, not its batch', async (t) => {
  const s = db.quoted
  await serverFor(t, db, 'headers.check', (_payload, ctx) => ({ ...ctx.headers }))
  for (const headers of ['[1]', '{"a": 1}', '"text"', '{"a": {"b": "c"}}', 'null']) {
    // $1::text::jsonb: given a jsonb parameter, postgres.js would JSON-encode the text once more.
    assert.equal(await sqlState(db.sql.unsafe(`select ${s}.request('headers.check', 'x'::text, null, $1::text::jsonb)`, [headers])), '22023', headers)
  }
  const [{ id }] = (await db.sql.unsafe(`select ${s}.request('headers.check', 'x'::text, null, '{"k": "v"}')::text as id`)) as unknown as [{ id: string }]
  const [{ reply }] = (await db.sql.unsafe(`select ${s}.await_reply_json($1::bigint) as reply`, [id])) as unknown as [{ reply: unknown }]
  assert.deepStrictEqual(reply, { k: 'v' })

  // TypeScript: requests sent in the same tick share one pgrr_send; text jsonb cannot hold fails alone.
  const client = await clientFor(t, db)
  const outcomes = await Promise.allSettled([
    client.request('headers.check', 'a', { headers: { ok: 'yes' } }),
    client.request('headers.check', 'b', { headers: { nul: 'a\u0000b' } }),
    client.request('headers.check', 'c', { headers: { lone: '\uD800' } }),
    client.request('headers.check', 'd', { headers: { 'k\u0000': 'v' } }),
    client.request('headers.check', 'e'),
  ])
  assert.deepStrictEqual(outcomes[0], { status: 'fulfilled', value: { ok: 'yes' } })
  assert.deepStrictEqual(outcomes[4], { status: 'fulfilled', value: {} })
  for (const outcome of outcomes.slice(1, 4)) {
    assert.equal(outcome.status, 'rejected')
    const reason = (outcome as PromiseRejectedResult).reason as Error
    assert.ok(reason instanceof InvalidPayloadError || reason instanceof InvalidOptionError, `${reason.name}: ${reason.message}`)
  }
})

test('a reply channel PostgreSQL could not NOTIFY is refused at once, so it cannot break a responder\'s reply', async () => {
  const s = db.quoted
  for (const replyTo of ['', 'c'.repeat(64)]) {
    assert.equal(
      await sqlState(db.sql.unsafe(`select * from ${s}.pgrr_send($1, '{x}', '{x}', '{f}', '{1000}', '{NULL}', '{NULL}')`, [replyTo])),
      '22023',
      `reply_to of ${replyTo.length} bytes`,
    )
  }
})

test('SQL timeouts: request() refuses any out of range before converting; await_reply() clamps any', async (t) => {
  const s = db.quoted
  await serverFor(t, db, 'timeouts', async () => {
    await new Promise((resolve) => setTimeout(resolve, 300))
    return 'on time'
  })
  for (const timeout of ['0', '-1 s', '-100 years', '1000 years', '25 days']) {
    assert.equal(await sqlState(db.sql.unsafe(`select ${s}.request('timeouts', 'x'::text, $1::interval)`, [timeout])), '22023', timeout)
  }
  const [{ version }] = (await db.sql.unsafe(`select current_setting('server_version_num')::int as version`)) as unknown as [{ version: number }]
  if (version >= 170000) {
    for (const timeout of ['infinity', '-infinity']) {
      assert.equal(await sqlState(db.sql.unsafe(`select ${s}.request('timeouts', 'x'::text, $1::interval)`, [timeout])), '22023', timeout)
    }
  }
  const [{ id }] = (await db.sql.unsafe(`select ${s}.request('timeouts', 'x'::text, '1 ms')::text as id`)) as unknown as [{ id: string }]
  assert.ok(id.length > 0)
  const [{ id: slow }] = (await db.sql.unsafe(`select ${s}.request('timeouts', 'x'::text, '24 days')::text as id`)) as unknown as [{ id: string }]
  assert.equal(await sqlState(db.sql.unsafe(`select ${s}.await_reply($1::bigint, '-5 s')`, [slow])), 'PR002', 'a negative wait times out at once')
  const [{ reply }] = (await db.sql.unsafe(`select ${s}.await_reply($1::bigint, '1000 years') as reply`, [slow])) as unknown as [{ reply: string }]
  assert.equal(reply, 'on time', 'a huge wait is bounded by the request\'s deadline')
})
