// Competing responders under load: 3 responders (one in a child process) share one channel; 1000 requests at
// concurrency 50 are each answered exactly once, with the right reply, by exactly one responder; afterwards
// the request table empties (acknowledgements are batched and asynchronous). One process serving eight
// channels under the same load. Competing responders never stall.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { clientFor, runConcurrently, serverFor, startResponderProcess, useTestSchema, waitFor } from './helpers.ts'

const db = useTestSchema('load')

interface IdentityReply {
  responder: string
  id: string
  payload: { seq: number; text: string }
}

test(
  '3 responders x 1000 requests at concurrency 50: each answered once, by one responder',
  { timeout: 180_000 },
  async (t) => {
    const channel = 'load.identity'
    const handled = new Map<string, string[]>([['in-process-a', []], ['in-process-b', []]])
    for (const name of ['in-process-a', 'in-process-b']) {
      await serverFor(t, db, channel, (payload: IdentityReply['payload'], ctx) => {
        handled.get(name)!.push(ctx.id)
        return { responder: name, id: ctx.id, payload }
      })
    }
    const child = await startResponderProcess({ options: db.options, channel, behaviour: 'identity', name: 'child-process' })
    t.after(() => child.kill())
    const client = await clientFor(t, db, { poolSize: 4 })

    const total = 1000
    const replies: IdentityReply[] = new Array(total)
    const startedAt = performance.now()
    await runConcurrently(total, 50, async (seq) => {
      const payload = { seq, text: `request ${seq} ünï 🎉` }
      const reply = await client.request<IdentityReply>(channel, payload, { timeoutMs: 20_000 })
      assert.deepStrictEqual(reply.payload, payload, `the reply to request ${seq} carries its own payload`)
      replies[seq] = reply
    })
    const elapsedMs = performance.now() - startedAt

    handled.set('child-process', await child.handledIds())
    const replyIds = replies.map((reply) => reply.id)
    assert.equal(new Set(replyIds).size, total, 'every reply names a distinct request id')

    const handledBy = new Map<string, string>()
    for (const [responder, ids] of handled) {
      for (const id of ids) {
        const other = handledBy.get(id)
        assert.equal(other, undefined, `request ${id} handled by ${responder} and by ${String(other)}`)
        handledBy.set(id, responder)
      }
    }
    assert.equal(handledBy.size, total, 'handlers ran exactly once per request, 1000 in all')
    for (const reply of replies) {
      assert.equal(handledBy.get(reply.id), reply.responder, `request ${reply.id} was answered by the responder that handled it`)
    }
    const distribution = Object.fromEntries([...handled].map(([name, ids]) => [name, ids.length]))
    console.log(`1000 requests in ${Math.round(elapsedMs)} ms; handled per responder: ${JSON.stringify(distribution)}`)
    for (const [name, count] of Object.entries(distribution)) assert.ok(count > 0, `${name} handled none of the requests`)

    // Acknowledgements are batched and asynchronous: the table empties shortly after.
    await waitFor(async () => {
      const [row] = await db.sql.unsafe(`select count(*)::int as count from ${db.quoted}.pgrr_request`)
      return row!.count === 0
    }, { timeoutMs: 15_000, intervalMs: 100, message: 'the request table empties after the load' })
    await child.stop()
    assert.equal(child.child.exitCode, 0, 'the child responder drained and exited cleanly')
  },
)

// A regression test for pgrr_ring (the channel bell, sql/protocol/03_bells.sql): a responder taking over the bell used to
// read (generation, holder) without a row lock and then block in pg_advisory_lock on a bell the holder kept;
// claims hung forever or died with 40P01, and the requests they held were never answered.
test(
  'competing responders never stall: 5 rounds of 1000 requests over 3 responders',
  { timeout: 180_000 },
  async (t) => {
    const channel = 'load.stall'
    for (const name of ['a', 'b', 'c']) await serverFor(t, db, channel, (payload: number) => `${name}:${payload}`)
    const client = await clientFor(t, db, { poolSize: 4 })
    for (let round = 0; round < 5; round++) {
      await runConcurrently(1000, 50, async (seq) => {
        const reply = await client.request<string>(channel, seq, { timeoutMs: 5000 })
        assert.match(reply, new RegExp(`^[abc]:${seq}$`))
      })
    }
  },
)

test(
  'one process serving 8 channels: 2000 requests at concurrency 64, each answered once by its channel',
  { timeout: 180_000 },
  async (t) => {
    const channels = Array.from({ length: 8 }, (_, i) => `load.many.${i}`)
    const host = await clientFor(t, db, { poolSize: 2 })
    const handled = new Map<string, number>()
    for (const channel of channels) {
      await host.serve(channel, (payload: number, ctx) => {
        handled.set(ctx.id, (handled.get(ctx.id) ?? 0) + 1)
        return `${channel}:${payload}`
      })
    }
    const client = await clientFor(t, db, { poolSize: 4 })
    await runConcurrently(2000, 64, async (seq) => {
      const channel = channels[seq % channels.length]!
      assert.equal(await client.request<string>(channel, seq, { timeoutMs: 20_000 }), `${channel}:${seq}`)
    })
    assert.equal(handled.size, 2000, 'a handler ran for every request')
    assert.ok([...handled.values()].every((count) => count === 1), 'no handler ran twice')
    await waitFor(async () => {
      const [row] = await db.sql.unsafe(`select count(*)::int as count from ${db.quoted}.pgrr_request`)
      return row!.count === 0
    }, { timeoutMs: 15_000, intervalMs: 100, message: 'the request table empties after the load' })
  },
)
