// batch-sketch with a row per caller batch instead of a row per request (a measuring aid): the batch's
// requests in one array column, claimed together, answered together by deleting the row with one NOTIFY
// carrying every reply. What the table costs when its writes are paid once per batch.
import { randomBytes } from 'node:crypto'
import { transform } from '../payload.ts'
import type { Peer, PeerConfig } from '../peer.ts'
import { PEER_SCHEMAS } from '../systems.ts'
import { batcher, openBatchCaller, startSketchResponder, type Waiter } from './batching.ts'

const SCHEMA = PEER_SCHEMAS['batch-row-sketch']
const TABLE = `${SCHEMA}.batch`

const SEND = {
  name: 'batch_row_send',
  text: `with inserted as (insert into ${TABLE} (id, reply_channel, payloads) values ($1, $2, $3::text[]))
         select pg_notify($4, $1)`,
}

function requestChannel(config: PeerConfig): string {
  return `${config.service}_batch_row_sketch`
}

export const peer: Peer = {
  async openCaller(config) {
    const batches = new Map<string, Waiter[]>()
    // A reply NOTIFY: the batch's id, a space, the JSON array of its replies in order.
    const caller = await openBatchCaller(config, 'batch-row-sketch-caller', (payload) => {
      const space = payload.indexOf(' ')
      const id = payload.slice(0, space)
      const replies = JSON.parse(payload.slice(space + 1)) as string[]
      batches.get(id)?.forEach((waiting, index) => waiting.resolve(replies[index] as string))
      batches.delete(id)
    })
    const prefix = randomBytes(6).toString('hex')
    let nextId = 0
    const send = batcher<{ payload: string } & Waiter>(caller.senders, async (client, batch) => {
      const id = `${prefix}${nextId++}`
      batches.set(id, batch)
      try {
        await client.query({ ...SEND, values: [id, caller.replyChannel, batch.map((entry) => entry.payload), requestChannel(config)] })
      } catch (error) {
        batches.delete(id)
        for (const entry of batch) entry.reject(error)
      }
    })
    return {
      call: (payload) => new Promise<string>((resolve, reject) => send({ payload, resolve, reject })),
      close: caller.close,
    }
  },

  startResponder: (config) =>
    startSketchResponder<{ id: string; payloads: string[] }>(config, {
      role: 'batch-row-sketch-responder',
      schema: SCHEMA,
      createTable: `create unlogged table if not exists ${TABLE} (
        id text primary key, reply_channel text not null, payloads text[] not null, claimed boolean not null default false)`,
      requestChannel: requestChannel(config),
      claim: {
        name: 'batch_row_claim',
        text: `update ${TABLE} set claimed = true where id = any($1::text[]) and not claimed returning id, payloads`,
      },
      reply: {
        name: 'batch_row_reply',
        text: `with deleted as (delete from ${TABLE} t using unnest($1::text[], $2::text[]) as r(id, replies)
                             where t.id = r.id returning t.reply_channel, r.id, r.replies)
               select count(pg_notify(reply_channel, id || ' ' || replies)) as notified from deleted`,
      },
      ids: (payload) => [payload],
      answer: (row) => ({ id: row.id, answer: JSON.stringify(row.payloads.map(transform)) }),
    }),
}
