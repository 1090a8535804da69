/**
 * A responder killed mid-stream (SIGKILL of its process, as in test/failure-responder-death.test.ts): the
 * TypeScript caller receives every part the responder wrote before it died, each once and in order, then
 * ResponderLostError; an SQL caller reading with await_part gets the same parts, then PR004. Nothing of the
 * streams is left once their callers are done (the SQL caller's error outcome stays for the sweeper, as
 * await_reply's does).
 */
import assert from 'node:assert/strict'
import { after, test } from 'node:test'
import postgres from 'postgres'
import { ResponderLostError } from '../src/index.ts'
import { killAll, LineProcess } from './fixtures/failure-process.ts'
import { clientFor, databaseUrl, useTestSchema, waitFor } from './helpers.ts'

const db = useTestSchema('stream_death')
after(killAll)

async function startStreamResponder(channel: string): Promise<LineProcess> {
  const child = new LineProcess('stream responder', ['test/fixtures/stream-responder.ts', JSON.stringify({ options: db.options, channel })])
  await child.nextLine('ready ')
  return child
}

test('SIGKILL mid-stream: the TypeScript caller gets the parts written before, then ResponderLostError', { timeout: 60_000 }, async (t) => {
  const channel = 'death.stream'
  const responder = await startStreamResponder(channel)
  const client = await clientFor(t, db)
  // 5 parts, then the handler waits; the window (8) is not the limit here.
  const stream = client.requestStream<{ n: number }>(channel, { count: 5 }, { timeoutMs: 30_000, maxPartsInFlight: 8 })
  const iterator = stream[Symbol.asyncIterator]()
  const first = await iterator.next()
  assert.deepEqual(first.value, { n: 1 })
  await responder.nextLine(/^sent \S+ 5$/)
  const exit = await responder.kill('SIGKILL')
  assert.equal(exit.signal, 'SIGKILL')
  const rest: unknown[] = []
  let error: unknown
  try {
    for (;;) {
      const step = await iterator.next()
      if (step.done === true) break
      rest.push(step.value)
    }
  } catch (caught) {
    error = caught
  }
  assert.deepEqual(rest, [{ n: 2 }, { n: 3 }, { n: 4 }, { n: 5 }])
  assert.ok(error instanceof ResponderLostError, `got ${String(error)}`)
  await waitFor(async () => {
    const [row] = await db.sql.unsafe(`select (select count(*) from ${db.quoted}.pgrr_stream)::int + (select count(*) from ${db.quoted}.pgrr_stream_part)::int
      + (select count(*) from ${db.quoted}.pgrr_request q join ${db.quoted}.pgrr_channel c on c.id = q.channel_id where c.name = '${channel}')::int as left`)
    return row?.left === 0
  }, { message: 'nothing of the stream left' })
})

test('SIGKILL mid-stream: an SQL caller reading with await_part gets the parts written before, then PR004', { timeout: 60_000 }, async (t) => {
  const channel = 'death.sqlstream'
  const responder = await startStreamResponder(channel)
  const sql = postgres(databaseUrl(), { max: 1, onnotice: () => {} })
  t.after(() => sql.end({ timeout: 1 }))
  const [request] = await sql.unsafe(`select ${db.quoted}.request_stream($1, '{"count":3}'::jsonb, interval '30 seconds') as id`, [channel])
  const id = String(request?.id)
  await responder.nextLine(`sent ${id} 3`)
  await responder.kill('SIGKILL')
  const parts: unknown[] = []
  let error: (Error & { code?: string }) | undefined
  try {
    for (;;) {
      const [row] = await sql.unsafe(`select part, is_final from ${db.quoted}.await_part($1)`, [id])
      if (row?.is_final === true) break
      parts.push(JSON.parse(String(row?.part)))
    }
  } catch (caught) {
    error = caught as Error & { code?: string }
  }
  assert.deepEqual(parts, [{ n: 1 }, { n: 2 }, { n: 3 }])
  assert.equal(error?.code, 'PR004', `got ${String(error)}`)
})
