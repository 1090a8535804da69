/**
 * A client LISTENs on its reply channel only while it has requests in flight (src/client/reply-listen.ts):
 * an idle client costs the other sessions of the database nothing on each NOTIFY. Checked on the LISTEN
 * session itself (pg_listening_channels()): none before the first request, the reply channel while one is
 * in flight, none again once idle; the next request after idle, requests racing the UNLISTEN, and a request
 * after the LISTEN session was terminated while idle all get their reply.
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { test } from 'node:test'
import { connect, InvalidOptionError, type Client } from '../src/index.ts'
import type { Logger } from '../src/logger.ts'
import { clientFor, deferred, serverFor, useTestSchema, waitFor } from './helpers.ts'

const db = useTestSchema('reply_listen')

/** A logger that reports each time the client stops listening on its reply channel. */
function unlistenEvents(): { logger: Logger; next: () => Promise<void> } {
  let waiting = deferred()
  const ignore = (): void => {}
  const logger: Logger = {
    debug: (obj: object | string, msg?: string) => {
      if (typeof obj === 'object' && msg?.startsWith('idle: reply channel')) {
        waiting.resolve()
        waiting = deferred()
      }
    },
    info: ignore,
    warn: ignore,
    error: ignore,
  }
  return { logger, next: () => waiting.promise }
}

function listening(client: Client): Promise<string[]> {
  return client.context.listener.listeningChannels()
}

test('an idle client does not LISTEN; a request LISTENs first, and the next one after idle works', { timeout: 60_000 }, async (t) => {
  const release = deferred()
  const started = deferred()
  await serverFor(t, db, 'rl.echo', async (payload: string) => {
    if (payload === 'hold') {
      started.resolve()
      await release.promise
    }
    return payload.toUpperCase()
  })
  const events = unlistenEvents()
  const client = await clientFor(t, db, { replyListenIdleMs: 20, logger: events.logger })
  assert.deepEqual(await listening(client), [], 'no LISTEN before the first request')

  const unlistened = events.next()
  const held = client.request('rl.echo', 'hold', { timeoutMs: 20_000 })
  await started.promise
  const during = await listening(client)
  assert.equal(during.length, 1, 'the reply channel is LISTENed on while a request is in flight')
  assert.match(during[0] ?? '', /\.c[0-9a-f]{16}$/)
  release.resolve()
  assert.equal(await held, 'HOLD')

  await unlistened
  assert.deepEqual(await listening(client), [], 'no LISTEN once idle')
  assert.equal(await client.request('rl.echo', 'again', { timeoutMs: 20_000 }), 'AGAIN')
})

test('requests sent while the UNLISTEN goes out all get their reply by NOTIFY', { timeout: 60_000 }, async (t) => {
  await serverFor(t, db, 'rl.race', async (payload: string) => payload.toUpperCase())
  const events = unlistenEvents()
  // No recovery check within the test: a reply whose NOTIFY was missed would time out.
  const client = await clientFor(t, db, { replyListenIdleMs: 1, checkIntervalMs: 600_000, logger: events.logger })
  for (let round = 0; round < 30; round++) {
    assert.equal(await client.request('rl.race', `r${round}`, { timeoutMs: 10_000 }), `R${round}`)
    // Every other round waits for the UNLISTEN to be sent; the others race it.
    if (round % 2 === 0) await events.next()
  }
})

test('scatter-gather and ping after idle LISTEN first, and keep the LISTEN while they wait', { timeout: 60_000 }, async (t) => {
  const release = deferred()
  const started = deferred()
  await serverFor(t, db, 'rl.all', async (payload: string) => {
    if (payload === 'hold') {
      started.resolve()
      await release.promise
    }
    return payload.toUpperCase()
  })
  const events = unlistenEvents()
  // No recovery check within the test: a reply whose NOTIFY was missed would time out.
  const client = await clientFor(t, db, { replyListenIdleMs: 1, checkIntervalMs: 600_000, logger: events.logger })
  const unlistened = events.next()
  assert.equal(await client.request('rl.all', 'one', { timeoutMs: 10_000 }), 'ONE')
  await unlistened
  assert.deepEqual(await listening(client), [], 'idle')

  const answers = []
  for await (const answer of client.requestAll('rl.all', 'all', { timeoutMs: 10_000 })) answers.push(answer)
  assert.deepEqual(answers.map((answer) => ('reply' in answer ? answer.reply : answer.error)), ['ALL'])
  const pings = await client.ping('rl.all', { timeoutMs: 10_000 })
  assert.equal(pings.length, 1)
  assert.equal(pings[0]?.error, undefined, 'the ping was answered')

  // A scatter-gather alone in flight keeps the LISTEN past the idle period.
  const gathering = (async () => {
    const all = []
    for await (const answer of client.requestAll('rl.all', 'hold', { timeoutMs: 20_000 })) all.push(answer)
    return all
  })()
  await started.promise
  // The absence of an UNLISTEN cannot be waited for: give it 50 idle periods of 1 ms to happen.
  await new Promise((resolve) => setTimeout(resolve, 50))
  assert.equal((await listening(client)).length, 1, 'still LISTENing while the scatter-gather waits')
  release.resolve()
  const held = await gathering
  assert.deepEqual(held.map((answer) => ('reply' in answer ? answer.reply : answer.error)), ['HOLD'])
})

test('after the LISTEN session was terminated while idle, the next request gets its reply', { timeout: 60_000 }, async (t) => {
  await serverFor(t, db, 'rl.reconnect', async (payload: string) => payload.toUpperCase())
  const events = unlistenEvents()
  const applicationName = `pgrr-rl-${randomBytes(4).toString('hex')}`
  const client = await clientFor(t, db, { replyListenIdleMs: 20, logger: events.logger, applicationName })
  const unlistened = events.next()
  assert.equal(await client.request('rl.reconnect', 'one', { timeoutMs: 20_000 }), 'ONE')
  await unlistened
  // The LISTEN session: the client's session whose last statement was the UNLISTEN.
  const [row] = await db.sql`
    select count(pg_terminate_backend(pid))::int as n from pg_stat_activity
     where application_name = ${applicationName} and query like 'unlisten %'`
  assert.equal(row?.n, 1, 'the LISTEN session was terminated')
  assert.equal(await client.request('rl.reconnect', 'two', { timeoutMs: 20_000 }), 'TWO')
  await waitFor(() => client.context.listener.connected, { message: 'the LISTEN connection is back' })
  assert.equal(await client.request('rl.reconnect', 'three', { timeoutMs: 20_000 }), 'THREE')
})

test('replyListenIdleMs out of range is refused before anything connects', async () => {
  for (const replyListenIdleMs of [0, -1, Number.NaN, 2 ** 31]) {
    await assert.rejects(connect({ ...db.options, replyListenIdleMs }), InvalidOptionError, String(replyListenIdleMs))
  }
})
