// Plain SQL callers (postgres.js as a bare SQL client, and the real psql binary) of TypeScript responders:
// request()/await_reply()/await_reply_json() and every SQLSTATE of the contract in sql/protocol/.
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { test } from 'node:test'
import { promisify } from 'node:util'
import { aborted, databaseUrl, deferred, rejection, requestRows, serverFor, useTestSchema } from './helpers.ts'

const db = useTestSchema('sql')

/** `select <schema>.request(channel, payload::text [, timeout [, headers]])`: the new request's id. */
async function sqlRequest(channel: string, payload: string, timeout: string | null = null, headers: object | null = null): Promise<string> {
  const [row] = await db.sql.unsafe(`select ${db.quoted}.request($1::text, $2::text, $3::interval, $4::text::jsonb) as id`, [
    channel,
    payload,
    timeout,
    headers === null ? null : JSON.stringify(headers),
  ])
  return String(row!.id)
}

/** `select <schema>.await_reply(id [, timeout])`. */
async function awaitReply(id: string, timeout: string | null = null): Promise<string> {
  const [row] = await db.sql.unsafe(`select ${db.quoted}.await_reply($1::bigint, $2::interval) as reply`, [id, timeout])
  return row!.reply as string
}

/** Waits forever on its signal, then rejects with its reason. */
function untilAborted(signal: AbortSignal): Promise<never> {
  return aborted(signal).then((reason) => Promise.reject(reason as Error))
}

test('plain SQL caller to a TS responder: request() then await_reply() round-trips text exactly', async (t) => {
  const received: unknown[] = []
  await serverFor(t, db, 'sql.text', (payload: unknown) => {
    received.push(payload)
    return `reply to ${String(payload)}`
  })
  const payloads = [
    'p',
    '',
    '{"a":1}',
    'emoji 😀👩‍👩‍👧‍👦 CJK 漢字かな combining e\u0301 RTL שלום مرحبا',
    `quotes ' '' " \` and backslashes \\ \\\\ \\n \\x00`,
    `'); drop table x; --`,
  ]
  for (const payload of payloads) {
    const id = await sqlRequest('sql.text', payload)
    assert.match(id, /^[1-9][0-9]*$/)
    assert.equal(await awaitReply(id), `reply to ${payload}`)
  }
  assert.deepStrictEqual(received, payloads, 'the handler got each payload as the same string')
  // await_reply consumed (deleted) every row.
  assert.deepStrictEqual(await requestRows(db, 'sql.text'), [])
})

test('JSON overload: request(ch, jsonb) reaches the handler as JSON; await_reply_json returns jsonb', async (t) => {
  const received: unknown[] = []
  await serverFor(t, db, 'sql.json', (payload: unknown) => {
    received.push(payload)
    return { got: payload, n: 1.5, list: [1, null, 'ü'], nested: { ok: true } }
  })
  const [{ id }] = await db.sql.unsafe(`select ${db.quoted}.request('sql.json', '{"a":1,"b":[true,null,"ü🎉"]}'::jsonb) as id`) as unknown as [{ id: string }]
  const [{ reply }] = await db.sql.unsafe(`select ${db.quoted}.await_reply_json($1::bigint) as reply`, [id]) as unknown as [{ reply: unknown }]
  const expected = { got: { a: 1, b: [true, null, 'ü🎉'] }, n: 1.5, list: [1, null, 'ü'], nested: { ok: true } }
  assert.deepStrictEqual(received, [{ a: 1, b: [true, null, 'ü🎉'] }])
  assert.deepStrictEqual(reply, expected)

  // await_reply (text) of a JSON reply is its JSON text.
  const [{ id: id2 }] = await db.sql.unsafe(`select ${db.quoted}.request('sql.json', '[1,2]'::jsonb) as id`) as unknown as [{ id: string }]
  const text = await awaitReply(id2)
  assert.deepStrictEqual(JSON.parse(text), { ...expected, got: [1, 2] })
})

test(
  'await_reply_json returns a text reply as a JSON string',
  async (t) => {
    await serverFor(t, db, 'sql.json.text', (payload: unknown) => String(payload))
    for (const text of ['{"a":1}', '123', 'true', '"quoted"', 'plain']) {
      const [{ id }] = await db.sql.unsafe(`select ${db.quoted}.request('sql.json.text', $1::text) as id`, [text]) as unknown as [{ id: string }]
      const [{ reply }] = await db.sql.unsafe(`select ${db.quoted}.await_reply_json($1::bigint) as reply`, [id]) as unknown as [{ reply: unknown }]
      assert.deepStrictEqual(reply, text, `the text reply ${JSON.stringify(text)} comes back as a JSON string`)
    }
  },
)

test('the psql binary as caller', async (t) => {
  const run = promisify(execFile)
  try {
    await run('psql', ['--version'])
  } catch {
    t.skip('psql not found')
    return
  }
  await serverFor(t, db, 'sql.psql', (payload: unknown) => `psql said ${String(payload)}`)
  const env = { ...process.env, PGCLIENTENCODING: 'UTF8', PGCONNECT_TIMEOUT: '10' }
  const psql = (command: string) => run('psql', ['-X', '-At', '-v', 'VERBOSITY=verbose', databaseUrl(), '-c', command], { env })

  const { stdout: id } = await psql(`select ${db.quoted}.request('sql.psql', 'héllo ✓ ''quoted''')`)
  assert.match(id.trim(), /^[1-9][0-9]*$/)
  const { stdout: reply } = await psql(`select ${db.quoted}.await_reply(${id.trim()})`)
  assert.equal(reply, "psql said héllo ✓ 'quoted'\n")

  const failed = await rejection(psql(`select ${db.quoted}.request('sql.psql.nobody', 'x')`))
  assert.equal(failed.code, 1, 'psql exits 1 on the error')
  assert.match(String(failed.stderr), /PR001/)
  assert.match(String(failed.stderr), /no responders on channel/)
})

test('no responders: SQLSTATE PR001 "no responders on channel", nothing stored', async () => {
  const error = await rejection(sqlRequest('sql.nobody', 'x'))
  assert.equal(error.code, 'PR001')
  assert.match(error.message, /no responders on channel 'sql\.nobody'/)
  const [{ count }] = await db.sql.unsafe(`select count(*)::int as count from ${db.quoted}.pgrr_request`) as unknown as [{ count: number }]
  assert.equal(count, 0)
})

test('a handler error raises PR003 with the handler message and DETAIL = its code', async (t) => {
  await serverFor(t, db, 'sql.fails', (payload: unknown) => {
    if (payload === 'plain') throw new Error('plain failure')
    throw Object.assign(new Error('broken ünïcode 🎉'), { code: 'E_BROKEN' })
  })
  const coded = await rejection(awaitReply(await sqlRequest('sql.fails', 'coded')))
  assert.equal(coded.code, 'PR003')
  assert.equal(coded.message, 'broken ünïcode 🎉')
  assert.equal(coded.detail, 'E_BROKEN')
  const plain = await rejection(awaitReply(await sqlRequest('sql.fails', 'plain')))
  assert.equal(plain.code, 'PR003')
  assert.equal(plain.message, 'plain failure')
  assert.equal(plain.detail, 'HANDLER_ERROR')
})

// A raise rolls back every change of its statement: an error outcome cannot be consumed by the await that
// raises it, so it stays readable until the sweeper removes it (5 s past the request's deadline).
test(
  'a failed request is not consumed by await_reply: awaiting it again raises the same PR003',
  async (t) => {
    await serverFor(t, db, 'sql.fails.twice', () => {
      throw Object.assign(new Error('once'), { code: 'E_ONCE' })
    })
    const id = await sqlRequest('sql.fails.twice', 'x')
    assert.equal((await rejection(awaitReply(id))).code, 'PR003')
    const again = await rejection(awaitReply(id))
    assert.equal(again.code, 'PR003', `second await: ${String(again.code)} ${again.message}`)
    assert.equal(again.message, 'once')
  },
)

test('await_reply(id, 200 ms) raises PR002; the request stays and can be awaited again', async (t) => {
  const release = deferred<string>()
  const started = deferred()
  await serverFor(t, db, 'sql.wait', async () => {
    started.resolve()
    return release.promise
  })
  const id = await sqlRequest('sql.wait', 'x', '20 s')
  const error = await rejection(awaitReply(id, '200 ms'))
  assert.equal(error.code, 'PR002')
  assert.match(error.message, /timed out/)
  await started.promise
  release.resolve('late but fine')
  assert.equal(await awaitReply(id), 'late but fine')
})

/** A responder of concurrency 1, kept busy by a request it never finishes, so later requests stay pending. */
async function busyResponder(t: Parameters<typeof serverFor>[0], channel: string): Promise<void> {
  const busy = deferred()
  await serverFor(t, db, channel, (payload: unknown, ctx) => {
    if (payload !== 'occupy') return 'handled'
    busy.resolve()
    return untilAborted(ctx.signal)
  }, { concurrency: 1 })
  await sqlRequest(channel, 'occupy', '20 s')
  await busy.promise
}

test('a request whose own deadline passed raises PR002 from await_reply', async (t) => {
  await busyResponder(t, 'sql.deadline')
  const id = await sqlRequest('sql.deadline', 'x', '300 ms')
  const error = await rejection(awaitReply(id))
  assert.equal(error.code, 'PR002')
  // Also with a longer wait than the deadline: the deadline wins.
  const id2 = await sqlRequest('sql.deadline', 'y', '300 ms')
  assert.equal((await rejection(awaitReply(id2, '20 s'))).code, 'PR002')
})

test('a request past its deadline is never handed to a handler, and the sweeper removes it', async (t) => {
  await busyResponder(t, 'sql.deadline.cancel')
  const id = await sqlRequest('sql.deadline.cancel', 'expired', '300 ms')
  assert.equal((await rejection(awaitReply(id))).code, 'PR002')
  // A second responder with free slots claims what is pending: never the expired request.
  const seen: unknown[] = []
  await serverFor(t, db, 'sql.deadline.cancel', (payload: unknown) => {
    seen.push(payload)
    return 'handled'
  })
  assert.equal(await awaitReply(await sqlRequest('sql.deadline.cancel', 'fresh')), 'handled')
  assert.deepStrictEqual(seen, ['fresh'])
  await db.sql.unsafe(`select ${db.quoted}.pgrr_sweep_older_than('0 seconds')`)
  const rows = (await requestRows(db, 'sql.deadline.cancel')).filter((row) => row.id === id)
  assert.deepStrictEqual(rows, [], 'the sweeper removed the expired request')
})

test('await_reply in the transaction that made the request raises PR006 at once', async (t) => {
  let calls = 0
  await serverFor(t, db, 'sql.same.tx', () => {
    calls++
    return 'never'
  })
  // With a 10 s wait, a hang would end in PR002, not PR006.
  const error = await rejection(db.sql.begin(async (tx) => {
    const [{ id }] = await tx.unsafe(`select ${db.quoted}.request('sql.same.tx', 'x'::text) as id`) as unknown as [{ id: string }]
    await tx.unsafe(`select ${db.quoted}.await_reply($1::bigint, '10 s')`, [id])
  }))
  assert.equal(error.code, 'PR006')
  // The transaction rolled back: no row, and the responder never saw it.
  assert.deepStrictEqual(await requestRows(db, 'sql.same.tx'), [])
  assert.equal(await awaitReply(await sqlRequest('sql.same.tx', 'y')), 'never')
  assert.equal(calls, 1)
})

test('unknown ids and already-consumed ids raise PR005', async (t) => {
  await serverFor(t, db, 'sql.consume', () => 'once')
  for (const id of ['9223372036854775807', '0', '-1']) {
    const error = await rejection(awaitReply(id))
    assert.equal(error.code, 'PR005', `id ${id}`)
    assert.match(error.message, /unknown request/)
  }
  const id = await sqlRequest('sql.consume', 'x')
  assert.equal(await awaitReply(id), 'once')
  assert.equal((await rejection(awaitReply(id))).code, 'PR005')
  const [{ id: jsonId }] = await db.sql.unsafe(`select ${db.quoted}.request('sql.consume', '{}'::jsonb) as id`) as unknown as [{ id: string }]
  await db.sql.unsafe(`select ${db.quoted}.await_reply_json($1::bigint)`, [jsonId])
  const error = await rejection(db.sql.unsafe(`select ${db.quoted}.await_reply_json($1::bigint)`, [jsonId]))
  assert.equal(error.code, 'PR005')
})

test('1 MB payload and 1 MB reply through SQL', { timeout: 60_000 }, async (t) => {
  await serverFor(t, db, 'sql.big', (payload: unknown) => `${(payload as string).length}:${payload as string}`)
  const unit = 'ascii 🎉 ü 漢 \'"\\ '
  const big = unit.repeat(Math.ceil((1024 * 1024) / Buffer.byteLength(unit)))
  const id = await sqlRequest('sql.big', big)
  const reply = await awaitReply(id)
  assert.ok(reply === `${big.length}:${big}`, `1 MB reply differs (length ${reply.length})`)
})

test('headers from SQL reach the handler; a non-positive timeout is refused', async (t) => {
  const seen = deferred<Record<string, string>>()
  await serverFor(t, db, 'sql.headers', (_payload, ctx) => {
    seen.resolve({ ...ctx.headers })
    return `attempt ${ctx.attempt}`
  })
  const id = await sqlRequest('sql.headers', 'x', null, { trace: 'abc', 'ünï': '🎉' })
  assert.equal(await awaitReply(id), 'attempt 1')
  assert.deepStrictEqual(await seen.promise, { trace: 'abc', 'ünï': '🎉' })
  for (const timeout of ['0 s', '-1 s']) {
    const error = await rejection(sqlRequest('sql.headers', 'x', timeout))
    assert.equal(error.code, '22023', `timeout ${timeout}`)
  }
})

// The claim cursor: responders claim from the lowest seq a NOTIFY announced. A request inserted by a long
// transaction gets its seq early and commits late, after later requests were claimed; its NOTIFY (sent at its
// commit) must bring the cursor back, without waiting for the slow poll (set to 10 minutes here).
test('a request committed late with a lower seq than requests already claimed is claimed at its commit', async (t) => {
  await serverFor(t, db, 'sql.straggler', (payload: unknown) => `got ${String(payload)}`, { pollIntervalMs: 600_000 })
  const slow = await db.sql.reserve()
  t.after(() => slow.release())
  await slow`begin`
  const [{ id: slowId }] = await slow.unsafe(`select ${db.quoted}.request('sql.straggler', 'slow'::text, '20 s') as id`) as unknown as [{ id: string }]
  // Later requests (higher seqs) commit first and are claimed: the cursor moves past the slow one's seq.
  for (const payload of ['a', 'b', 'c']) assert.equal(await awaitReply(await sqlRequest('sql.straggler', payload)), `got ${payload}`)
  await slow`commit`
  assert.equal(await awaitReply(String(slowId), '5 s'), 'got slow')
})
