/**
 * Services that describe themselves: what serve() is told (description, version, JSON Schemas, those of a
 * zod-typed service included) is read back by client.services(); handler statistics ride on the lease
 * renewals; ping, info and stats answer while every handler slot is busy, and ping is a round trip to each
 * responder that never runs its handler.
 */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import * as v from 'valibot'
import { z } from 'zod'
import { defineService, InvalidOptionError, NoRespondersError, type HandlerContext } from '../src/index.ts'
import { clientFor, deferred, rejection, serverFor, useTestSchema, waitFor } from './helpers.ts'

const db = useTestSchema('services')

test('description, version and JSON Schemas are written with the registration and read by client.services()', { timeout: 30_000 }, async (t) => {
  const described = await serverFor(t, db, 'svc.plain', (text: string) => text, {
    description: 'echoes text',
    version: '1.2.3',
    requestSchema: { type: 'string' },
  })
  const typed = defineService({
    name: 'svc.typed',
    request: z.object({ text: z.string() }),
    reply: z.object({ length: z.number() }),
  })
  const typedServer = await typed.serve(db.options, (payload) => ({ length: payload.text.length }), { description: 'measures text' })
  t.after(() => typedServer.close())
  const client = await clientFor(t, db)

  const [plain] = await client.services('svc.plain')
  assert.equal(plain?.responderId, described.responderId)
  assert.equal(plain?.description, 'echoes text')
  assert.equal(plain?.version, '1.2.3')
  assert.deepEqual(plain?.requestSchema, { type: 'string' })
  assert.equal(plain?.replySchema, undefined)
  assert.equal(plain?.pid, process.pid)
  assert.equal(plain?.concurrency, 10)
  assert.ok(plain?.startedAt instanceof Date)
  assert.deepEqual({ ...plain?.stats, at: null, ageMs: null }, { requests: 0, errors: 0, averageMs: null, p99Ms: null, lastError: null, at: null, ageMs: null })

  const [zod] = await client.services('svc.typed')
  assert.equal(zod?.description, 'measures text')
  const requestSchema = zod?.requestSchema as { type?: string; properties?: Record<string, unknown> }
  assert.equal(requestSchema.type, 'object')
  assert.deepEqual(requestSchema.properties?.text, { type: 'string' })
  assert.equal((zod?.replySchema as { type?: string }).type, 'object')

  // A validator that cannot describe itself (valibot without its converter): served without schemas.
  const plainValibot = defineService({ name: 'svc.valibot', request: v.string() })
  const valibotServer = await plainValibot.serve(client, (text) => text, { version: '0.1.0' })
  const [valibot] = await client.services('svc.valibot')
  assert.deepEqual([valibot?.version, valibot?.requestSchema, valibot?.replySchema], ['0.1.0', undefined, undefined])
  await valibotServer.close()

  const every = await client.services()
  assert.deepEqual(every.map((responder) => responder.channel), ['svc.plain', 'svc.typed'])
  assert.deepEqual(await client.services('svc.nobody'), [])

  // Bad descriptions are refused before anything is registered.
  for (const options of [{ description: 7 }, { version: 'a\u0000b' }, { requestSchema: 'not a schema' }, { replySchema: { big: 'x'.repeat(300_000) } }]) {
    const error = await rejection(client.serve('svc.bad', () => 1, options as never))
    assert.ok(error instanceof InvalidOptionError, `${JSON.stringify(options).slice(0, 60)}: ${error.name}`)
  }
  assert.deepEqual(await client.services('svc.bad'), [])
})

test('stats ride on the lease renewal: requests, errors, average and p99 handler time, last error', { timeout: 30_000 }, async (t) => {
  const server = await serverFor(t, db, 'svc.stats', (payload: string) => {
    if (payload === 'fail') throw Object.assign(new Error('refused on purpose'), { code: 'REFUSED' })
    return payload
  })
  const client = await clientFor(t, db)
  for (const payload of ['a', 'b', 'fail', 'c']) await client.request('svc.stats', payload).catch(() => undefined)
  const [responder] = await waitFor(async () => {
    const rows = await client.services('svc.stats')
    return rows[0]?.stats.requests === 4 ? rows : undefined
  }, { message: 'the stats of 4 requests are written' })
  assert.equal(responder?.responderId, server.responderId)
  const { stats } = responder!
  assert.equal(stats.errors, 1)
  assert.equal(stats.lastError?.code, 'REFUSED')
  assert.equal(stats.lastError?.message, 'refused on purpose')
  assert.ok(typeof stats.averageMs === 'number' && stats.averageMs >= 0)
  assert.ok(typeof stats.p99Ms === 'number' && stats.p99Ms >= 0)
  assert.ok(stats.at instanceof Date)
  assert.ok(typeof stats.ageMs === 'number')
})

test('ping, info and stats while every handler slot is busy: ping is answered by each responder without its handler', { timeout: 30_000 }, async (t) => {
  const channel = 'svc.busy'
  const release = deferred()
  const started: string[] = []
  const handler = async (payload: string, ctx: HandlerContext) => {
    started.push(`${ctx.id}:${payload}`)
    await release.promise
    return payload
  }
  const first = await serverFor(t, db, channel, handler, { concurrency: 2, description: 'busy service' })
  const second = await serverFor(t, db, channel, handler, { concurrency: 2 })
  const client = await clientFor(t, db)
  // Every slot of both responders busy: two requests each, by a scatter-gather twice.
  const held = [0, 1].map(() => (async () => {
    for await (const outcome of client.requestAll(channel, 'hold', { timeoutMs: 20_000 })) void outcome
  })())
  await waitFor(() => first.running === 2 && second.running === 2, { message: 'every slot busy' })

  const pings = await client.ping(channel, { timeoutMs: 10_000 })
  assert.equal(pings.length, 2)
  assert.deepEqual(pings.map((ping) => ping.responder.id).sort(), [first.responderId, second.responderId].sort())
  for (const ping of pings) {
    assert.equal(ping.error, undefined, String(ping.error))
    assert.equal(ping.running, 2)
    assert.equal(ping.concurrency, 2)
    assert.ok(ping.roundTripMs > 0)
  }
  const info = await client.services(channel)
  assert.equal(info.length, 2)
  assert.equal(info.find((responder) => responder.responderId === first.responderId)?.description, 'busy service')
  // No handler ran for the ping, info or stats.
  assert.equal(started.length, 4)
  assert.ok(started.every((entry) => entry.endsWith(':hold')))

  release.resolve()
  await Promise.all(held)
  await assert.rejects(client.ping('svc.nobody'), NoRespondersError)
})
