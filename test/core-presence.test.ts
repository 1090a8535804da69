// Responders in child processes that are SIGKILLed: presence turns false (new requests get no responders),
// and a request the dead responder held ends as lost for TS and SQL callers (or is retried when allowed).
// Detection times are printed; the bound asserted (5 s) is generous, the requirement is "within 2 s".
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { NoRespondersError, ResponderLostError } from '../src/index.ts'
import { clientFor, deferred, rejection, serverFor, startResponderProcess, useTestSchema, waitFor } from './helpers.ts'

const db = useTestSchema('presence')
const detectionBoundMs = 5000

async function sqlRequest(channel: string, payload: string): Promise<string> {
  const [row] = await db.sql.unsafe(`select ${db.quoted}.request($1::text, $2::text, '10 s') as id`, [channel, payload])
  return String(row!.id)
}

async function awaitReply(id: string): Promise<string> {
  const [row] = await db.sql.unsafe(`select ${db.quoted}.await_reply($1::bigint) as reply`, [id])
  return row!.reply as string
}

test('presence turns false once the responder process is SIGKILLed (TS and SQL callers)', { timeout: 60_000 }, async (t) => {
  const child = await startResponderProcess({ options: db.options, channel: 'presence.echo', behaviour: 'echo' })
  t.after(() => child.kill())
  const client = await clientFor(t, db)
  assert.equal(await client.request('presence.echo', 'alive?'), 'alive?')
  assert.equal(await awaitReply(await sqlRequest('presence.echo', 'alive from SQL?')), 'alive from SQL?')

  await child.kill()
  const killedAt = performance.now()
  // No event tells us when the server has noticed the closed socket: poll request() until it refuses.
  await waitFor(async () => {
    try {
      await sqlRequest('presence.echo', 'anyone?') // still live: inserted, expires unanswered
      return false
    } catch (error) {
      assert.equal((error as { code?: string }).code, 'PR001', String(error))
      return true
    }
  }, { timeoutMs: detectionBoundMs, intervalMs: 20, message: 'request() raises PR001 after the responder was killed' })
  console.log(`presence turned false ${Math.round(performance.now() - killedAt)} ms after SIGKILL`)

  const error = await rejection(client.request('presence.echo', 'anyone?'))
  assert.ok(error instanceof NoRespondersError, `${error.name}: ${error.message}`)
  const sqlError = await rejection(sqlRequest('presence.echo', 'anyone?'))
  assert.equal(sqlError.code, 'PR001')
  assert.match(sqlError.message, /no responders on channel/)
})

test('a responder killed mid-request: the TS caller gets ResponderLostError (measured)', { timeout: 60_000 }, async (t) => {
  const child = await startResponderProcess({ options: db.options, channel: 'presence.lost.ts', behaviour: 'hang', concurrency: 1 })
  t.after(() => child.kill())
  const client = await clientFor(t, db)
  const outcome = rejection(client.request('presence.lost.ts', 'x', { timeoutMs: 30_000 }))
  await child.nextLine('handling ')
  await child.kill()
  const killedAt = performance.now()
  const error = await outcome
  const detectedMs = Math.round(performance.now() - killedAt)
  console.log(`the TS caller saw the responder's death ${detectedMs} ms after SIGKILL`)
  assert.ok(error instanceof ResponderLostError, `${error.name}: ${error.message}`)
  assert.equal(error.code, 'RESPONDER_LOST')
  assert.ok(detectedMs < detectionBoundMs, `detected after ${detectedMs} ms`)
})

test('a responder killed mid-request: the SQL caller gets PR004 (measured)', { timeout: 60_000 }, async (t) => {
  const child = await startResponderProcess({ options: db.options, channel: 'presence.lost.sql', behaviour: 'hang', concurrency: 1 })
  t.after(() => child.kill())
  const id = await sqlRequest('presence.lost.sql', 'x')
  const handling = await child.nextLine('handling ')
  assert.equal(handling, `handling ${id}`)
  const outcome = rejection(awaitReply(id)) // blocks on the request lock the responder's session holds
  await child.kill()
  const killedAt = performance.now()
  const error = await outcome
  const detectedMs = Math.round(performance.now() - killedAt)
  console.log(`the SQL caller saw the responder's death ${detectedMs} ms after SIGKILL`)
  assert.equal(error.code, 'PR004', `${String(error.code)}: ${error.message}`)
  assert.ok(detectedMs < detectionBoundMs, `detected after ${detectedMs} ms`)
})

test('with maxAttempts 2, a request whose responder was killed is handled again by another (attempt 2)', { timeout: 60_000 }, async (t) => {
  const child = await startResponderProcess({ options: db.options, channel: 'presence.retry', behaviour: 'hang', concurrency: 1 })
  t.after(() => child.kill())
  const client = await clientFor(t, db)
  const reply = client.request('presence.retry', 'x', { timeoutMs: 30_000, maxAttempts: 2 })
  const [, id] = (await child.nextLine('handling ')).split(' ')
  // The second responder starts only now, so the first attempt was surely the child's.
  const attempts = deferred<{ id: string; attempt: number }>()
  await serverFor(t, db, 'presence.retry', (payload: unknown, ctx) => {
    attempts.resolve({ id: ctx.id, attempt: ctx.attempt })
    return `retried ${String(payload)}`
  })
  await child.kill()
  assert.equal(await reply, 'retried x')
  assert.deepStrictEqual(await attempts.promise, { id, attempt: 2 })
})
