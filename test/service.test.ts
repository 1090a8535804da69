// Typed services: one declaration gives a typed caller and handler; Standard Schema validators (zod,
// valibot) run on both sides, and a failure is a typed error on the side that detects it.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import * as v from 'valibot'
import { z } from 'zod'
import { defineService, RemoteError, ValidationError } from '../src/index.ts'
import { clientFor, rejection, useTestSchema } from './helpers.ts'

const db = useTestSchema('service')

const wordCount = defineService({
  name: 'service.word-count',
  request: z.object({ text: z.string().min(1) }),
  reply: z.object({ words: z.number().int().nonnegative() }),
})

test('a zod-typed service round-trips and validates on the caller side', async (t) => {
  const client = await clientFor(t, db)
  const server = await wordCount.serve(client, ({ text }) => ({ words: text.split(/\s+/).filter(Boolean).length }))
  t.after(() => server.close())

  const reply = await wordCount.request(client, { text: 'one two  three' })
  assert.deepEqual(reply, { words: 3 })

  // Invalid on the caller side: rejected before anything is sent.
  const error = await rejection(wordCount.request(client, { text: '' }))
  assert.ok(error instanceof ValidationError, `${error.name}: ${error.message}`)
  assert.equal(error.code, 'VALIDATION')
  assert.deepEqual((error as unknown as ValidationError).issues[0]?.path, ['text'])
})

test('the responder rejects an invalid payload with INVALID_REQUEST, and an invalid reply with INVALID_REPLY', async (t) => {
  const client = await clientFor(t, db)
  const strict = defineService({ name: 'service.strict', request: z.object({ n: z.number() }), reply: z.number() })
  const server = await strict.serve(client, ({ n }) => (n < 0 ? ('negative' as unknown as number) : n * 2))
  t.after(() => server.close())

  assert.equal(await strict.request(client, { n: 21 }), 42)

  // A caller that bypasses the typed API sends a payload the responder's schema refuses.
  const invalidRequest = await rejection(client.request('service.strict', { n: 'not a number' }))
  assert.ok(invalidRequest instanceof RemoteError, `${invalidRequest.name}: ${invalidRequest.message}`)
  assert.equal(invalidRequest.remoteCode, 'INVALID_REQUEST')
  assert.match(invalidRequest.message, /n:/)

  // The handler returns something its reply schema refuses: the responder sends an error instead.
  const invalidReply = await rejection(strict.request(client, { n: -1 }))
  assert.ok(invalidReply instanceof RemoteError, `${invalidReply.name}: ${invalidReply.message}`)
  assert.equal(invalidReply.remoteCode, 'INVALID_REPLY')

  // The server kept serving.
  assert.equal(await strict.request(client, { n: 1 }), 2)
})

test('a valibot-typed service works the same, and validators may transform values', async (t) => {
  const client = await clientFor(t, db)
  const greet = defineService({
    name: 'service.greet',
    request: v.pipe(v.string(), v.trim(), v.minLength(1)),
    reply: v.string(),
  })
  const server = await greet.serve(db.options, (name) => `hello ${name}`)
  t.after(() => server.close())
  assert.equal(await greet.request(client, '  world  '), 'hello world')
  const error = await rejection(greet.request(client, '   '))
  assert.ok(error instanceof ValidationError)
})

test('without schemas the types come from the type parameters and nothing is validated', async (t) => {
  const client = await clientFor(t, db)
  const echo = defineService<{ value: number }, { value: number }>({ name: 'service.echo' })
  const server = await echo.serve(client, (payload) => payload)
  t.after(() => server.close())
  assert.deepEqual(await echo.request(client, { value: 7 }), { value: 7 })
})

test('zod transforms run once, on the receiving side: the request at the responder, the reply at the caller', async (t) => {
  const client = await clientFor(t, db)
  const parts = defineService({
    name: 'service.parts',
    request: z.string().transform((text) => text.split(',')),
    reply: z.number().int().transform((count) => `${count} parts`),
  })
  // The handler gets the request schema's output and returns the reply schema's input (checked by the types).
  const server = await parts.serve(client, (list: string[]) => list.length)
  t.after(() => server.close())
  const reply: string = await parts.request(client, 'a,b,c')
  assert.equal(reply, '3 parts')
  // @ts-expect-error callers pass the request schema's input, not its output
  await rejection(parts.request(client, ['a', 'b']))

  // A transform whose output its schema accepts again would show if it ran twice.
  const increment = defineService({
    name: 'service.increment',
    request: z.object({ n: z.number() }).transform(({ n }) => ({ n: n + 1 })),
    reply: z.number().transform((n) => n * 10),
  })
  const incrementServer = await increment.serve(client, ({ n }) => n)
  t.after(() => incrementServer.close())
  assert.equal(await increment.request(client, { n: 1 }), 20)
  // What travels is the input: a caller without the typed API sees the handler's reply as returned.
  assert.equal(await client.request('service.increment', { n: 1 }), 2)
  // The responder still refuses what its request schema refuses, and checks its handler's reply.
  const refused = await rejection(client.request('service.parts', 42))
  assert.equal((refused as unknown as RemoteError).remoteCode, 'INVALID_REQUEST')
})

test('valibot transforms run once, on the receiving side, the same way', async (t) => {
  const client = await clientFor(t, db)
  const lengths = defineService({
    name: 'service.lengths',
    request: v.pipe(v.string(), v.transform((text) => text.split(' ').map((word) => word.length))),
    reply: v.pipe(v.number(), v.transform((total) => total * 10)),
  })
  const server = await lengths.serve(db.options, (list: number[]) => list.reduce((sum, n) => sum + n, 0))
  t.after(() => server.close())
  const reply: number = await lengths.request(client, 'ab cde')
  assert.equal(reply, 50)

  const invalidReply = defineService({
    name: 'service.lengths-bad',
    request: v.pipe(v.string(), v.transform((text) => text.length)),
    reply: v.pipe(v.number(), v.integer(), v.transform((n) => `${n}`)),
  })
  const badServer = await invalidReply.serve(client, (length) => length / 2)
  t.after(() => badServer.close())
  assert.equal(await invalidReply.request(client, 'ab'), '1')
  const error = await rejection(invalidReply.request(client, 'abc'))
  assert.equal((error as unknown as RemoteError).remoteCode, 'INVALID_REPLY', `${error.name}: ${error.message}`)
})
