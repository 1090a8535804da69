// The typed outcomes a TypeScript caller gets besides a reply: no responders, a handler's error, a timeout,
// a cancellation; and what each one leaves behind at the responder and in the table.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { randomBytes } from 'node:crypto'
import { createServer } from 'node:net'
import { CancelledError, connect, ConnectionError, NoRespondersError, PgrrError, RemoteError, TimeoutError } from '../src/index.ts'
import { isConnectionLoss, toPgrrError } from '../src/database-error.ts'
import { aborted, clientFor, databaseUrl, deferred, rejection, requestRows, serverFor, useTestSchema, waitFor } from './helpers.ts'

const db = useTestSchema('errors')

test('no responders: NoRespondersError at once, and nothing is stored', async (t) => {
  const client = await clientFor(t, db)
  const error = await rejection(client.request('nobody.ever', 'x'))
  assert.ok(error instanceof NoRespondersError, `${error.name}: ${error.message}`)
  assert.ok(error instanceof PgrrError)
  assert.equal(error.code, 'NO_RESPONDERS')
  assert.equal(error.channel, 'nobody.ever')
  assert.match(error.message, /no responders on channel/)

  // A channel that had a responder, now closed: the same, and still no row.
  const server = await serverFor(t, db, 'nobody.anymore', () => 'here')
  assert.equal(await client.request('nobody.anymore', 'x'), 'here')
  await server.close()
  const again = await rejection(client.request('nobody.anymore', 'y'))
  assert.ok(again instanceof NoRespondersError, `${again.name}: ${again.message}`)
  await waitFor(async () => (await requestRows(db, 'nobody.anymore')).length === 0, { message: 'the answered request is acknowledged' })
  const [{ count }] = await db.sql.unsafe(`select count(*)::int as count from ${db.quoted}.pgrr_request`) as unknown as [{ count: number }]
  assert.equal(count, 0, 'no request row was stored for refused requests')
})

test('a handler error reaches the caller as RemoteError with its code and message', async (t) => {
  await serverFor(t, db, 'fails', async (payload: unknown) => {
    switch (payload) {
      case 'coded':
        throw Object.assign(new Error('the widget is broken: ünïcode 🎉 "quoted"'), { code: 'E_WIDGET' })
      case 'plain':
        throw new Error('plain failure')
      case 'sync':
        return Promise.reject(Object.assign(new TypeError('rejected'), { code: 'E_TYPE' }))
      case 'string':
        throw 'a thrown string'
      case 'long': {
        throw Object.assign(new Error('x'.repeat(9000)), { code: 'E_LONG' }) // too long for the NOTIFY: fetched
      }
      default:
        return 'fine'
    }
  })
  const client = await clientFor(t, db)
  const cases: [payload: string, code: string, message: string][] = [
    ['coded', 'E_WIDGET', 'the widget is broken: ünïcode 🎉 "quoted"'],
    ['plain', 'HANDLER_ERROR', 'plain failure'],
    ['sync', 'E_TYPE', 'rejected'],
    ['string', 'HANDLER_ERROR', 'a thrown string'],
    ['long', 'E_LONG', 'x'.repeat(9000)],
  ]
  for (const [payload, code, message] of cases) {
    const error = await rejection(client.request('fails', payload))
    assert.ok(error instanceof RemoteError, `${payload}: ${error.name}: ${error.message}`)
    assert.equal(error.code, 'REMOTE_ERROR')
    assert.equal(error.remoteCode, code, payload)
    assert.equal(error.message, message, payload)
  }
  assert.equal(await client.request('fails', 'other'), 'fine', 'the responder keeps serving after errors')
  await waitFor(async () => (await requestRows(db, 'fails')).length === 0, { message: 'failed requests are acknowledged' })
})

test('timeout: TimeoutError, and the handler is told through its signal after the caller gave up', async (t) => {
  const events: string[] = []
  const started = deferred()
  const handlerSignal = deferred<AbortSignal>()
  await serverFor(t, db, 'slow', (_payload, ctx) => {
    handlerSignal.resolve(ctx.signal)
    started.resolve()
    ctx.signal.addEventListener('abort', () => events.push('handler signal'))
    return new Promise((_resolve, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason as Error)))
  })
  const client = await clientFor(t, db)
  const error = await rejection(client.request('slow', 'x', { timeoutMs: 300 }))
  events.push('caller timeout')
  assert.ok(error instanceof TimeoutError, `${error.name}: ${error.message}`)
  assert.equal(error.code, 'TIMEOUT')
  assert.equal(error.timeoutMs, 300)
  await started.promise
  const reason = await aborted(await handlerSignal.promise)
  console.log(`the handler's signal fired with ${(reason as Error).name}: ${(reason as Error).message}`)
  assert.ok(reason instanceof PgrrError && ['CANCELLED', 'TIMEOUT'].includes(reason.code), `reason: ${String(reason)}`)
  assert.deepStrictEqual(events, ['caller timeout', 'handler signal'])
  await waitFor(async () => (await requestRows(db, 'slow')).length === 0, { message: 'the timed-out request is removed' })
})

test('cancel via AbortSignal: CancelledError, and the cancellation reaches the handler', async (t) => {
  const started = deferred<AbortSignal>()
  await serverFor(t, db, 'cancellable', (_payload, ctx) => {
    started.resolve(ctx.signal)
    return new Promise((_resolve, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason as Error)))
  })
  const client = await clientFor(t, db)
  const controller = new AbortController()
  const pending = rejection(client.request('cancellable', 'x', { signal: controller.signal, timeoutMs: 30_000 }))
  const signal = await started.promise
  assert.equal(signal.aborted, false)
  controller.abort(new Error('the user went away'))
  const error = await pending
  assert.ok(error instanceof CancelledError, `${error.name}: ${error.message}`)
  assert.equal(error.code, 'CANCELLED')
  assert.equal((error.cause as Error).message, 'the user went away')
  // Well before the 30 s deadline: only the caller's cancellation can fire it.
  const reason = await aborted(signal)
  assert.ok(reason instanceof CancelledError, `the handler's signal fired with ${String(reason)}`)
  await waitFor(async () => (await requestRows(db, 'cancellable')).length === 0, { message: 'the cancelled request is removed' })
  assert.equal(client.inFlight, 0)
})

test('an already-aborted signal rejects at once, and nothing is sent', async (t) => {
  let calls = 0
  await serverFor(t, db, 'never', () => {
    calls++
    return 'ran'
  })
  const client = await clientFor(t, db)
  const error = await rejection(client.request('never', 'x', { signal: AbortSignal.abort() }))
  assert.ok(error instanceof CancelledError, `${error.name}: ${error.message}`)
  assert.equal(client.inFlight, 0)
  assert.deepStrictEqual(await requestRows(db, 'never'), [])
  assert.equal(await client.request('never', 'y'), 'ran')
  assert.equal(calls, 1, 'only the second request reached the handler')
})

test('a database out of resources is a ConnectionError: too many connections, a full NOTIFY queue, no pooled connection in time', async (t) => {
  const role = `pgrr_test_limited_${randomBytes(4).toString('hex')}`
  await db.sql.unsafe(`create role ${role} login connection limit 0`)
  t.after(() => db.sql.unsafe(`drop role if exists ${role}`))
  const url = new URL(databaseUrl())
  url.username = role
  // A client that opens anyway is closed again, so that the assertion fails rather than hangs.
  const error = await rejection(connect({ connectionString: url.toString(), schema: db.schema }).then(async (client) => client.close()))
  assert.ok(error instanceof ConnectionError, `${error.name}: ${error.message}`)
  assert.equal(error.code, 'CONNECTION')
  // The same mapping for what cannot be provoked here without disturbing other sessions of the server.
  // The server's fields, as node-postgres gives them; the message in the language of the server's
  // lc_messages, which must not matter.
  const full = Object.assign(new Error('zu viele Benachrichtigungen in der NOTIFY-Schlange'), { code: '54000', routine: 'PreCommit_Notify' })
  assert.ok(toPgrrError(full) instanceof ConnectionError)
  assert.ok(toPgrrError(new Error('timeout exceeded when trying to connect')) instanceof ConnectionError)
  assert.ok(toPgrrError(new Error('timeout expired')) instanceof ConnectionError)
  const other = Object.assign(new Error('too many notifications in the NOTIFY queue'), { code: '54000', routine: 'array_in' })
  assert.equal(toPgrrError(other), other, 'other limits keep their own error, whatever their message says')
  const misuse = new TypeError('Client was passed a null or undefined query')
  assert.equal(toPgrrError(misuse), misuse, 'a misuse of the driver is not a lost connection')
})

test('a server that refuses SSL, a name lookup that failed, an unreachable network, a refused certificate: lost connections', async (t) => {
  // Answers the SSLRequest with N, as a PostgreSQL server without SSL does.
  const server = createServer((socket) => socket.on('error', () => {}).once('data', () => socket.end('N')))
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.after(() => void server.close())
  const port = (server.address() as { port: number }).port
  const url = `postgres://postgres@127.0.0.1:${port}/test?sslmode=verify-full`
  const error = await rejection(connect({ connectionString: url, schema: db.schema }).then(async (client) => client.close()))
  assert.ok(error instanceof ConnectionError, `${error.name}: ${error.message}`)
  assert.match(error.message, /does not support SSL/)
  assert.ok(isConnectionLoss(error.cause))
  // What cannot be provoked here: the codes Node gives them.
  for (const code of ['EAI_AGAIN', 'ENETUNREACH', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'ERR_TLS_CERT_ALTNAME_INVALID']) {
    const driverError = Object.assign(new Error(`connect ${code}`), { code })
    assert.ok(isConnectionLoss(driverError), code)
    assert.ok(toPgrrError(driverError) instanceof ConnectionError, code)
  }
})
