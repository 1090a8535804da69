// batch-sketch with a row per caller batch instead of a row per request (a measuring aid): the batch's
// requests in one array column, claimed together, answered together by deleting the row with one NOTIFY
// carrying every reply (several when they exceed what one NOTIFY holds). What the table costs when its
// writes are paid once per batch.
import { randomBytes } from 'node:crypto'
import { transform } from '../payload.ts'
import type { Peer, PeerConfig } from '../peer.ts'
import { PEER_SCHEMAS } from '../systems.ts'
import { batcher, notifyChunks, openBatchCaller, startSketchResponder, type Waiter } from './batching.ts'

const SCHEMA = PEER_SCHEMAS['batch-row-sketch']
const TABLE = `${SCHEMA}.batch`

const SEND = {
  name: 'batch_row_send',
  text: `with inserted as (insert into ${TABLE} (id, reply_channel, payloads) values ($1, $2, $3::text[]))
         select pg_notify($4, json_build_array($1)::text)`,
}

function requestChannel(config: PeerConfig): string {
  return `${config.service}_batch_row_sketch`
}

export const peer: Peer = {
  async openCaller(config) {
    const batches = new Map<string, { waiting: Waiter[]; left: number }>()
    // A reply NOTIFY: the batch's id, a space, a JSON array of [index in the batch, reply].
    const caller = await openBatchCaller(config, 'batch-row-sketch-caller', (payload) => {
      const space = payload.indexOf(' ')
      const id = payload.slice(0, space)
      const batch = batches.get(id)
      if (batch === undefined) return
      const replies = JSON.parse(payload.slice(space + 1)) as [number, string][]
      for (const [index, reply] of replies) batch.waiting[index]?.resolve(reply)
      batch.left -= replies.length
      if (batch.left <= 0) batches.delete(id)
    })
    const prefix = randomBytes(6).toString('hex')
    let nextId = 0
    const send = batcher<{ payload: string } & Waiter>(caller.senders, async (client, batch) => {
      const id = `${prefix}${nextId++}`
      batches.set(id, { waiting: batch, left: batch.length })
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
      // $2: per batch, one or more '<id> <JSON array of [index, reply]>' (notifyChunks).
      reply: {
        name: 'batch_row_reply',
        text: `with deleted as (delete from ${TABLE} t where t.id = any($1::text[]) returning t.reply_channel, t.id)
               select count(pg_notify(d.reply_channel, r.chunk)) as notified
                 from deleted d join unnest($2::text[]) as r(chunk) on split_part(r.chunk, ' ', 1) = d.id`,
      },
      answer: (row) => ({
        id: row.id,
        answers: notifyChunks(row.payloads.map((payload, index) => [index, transform(payload)]), (json) => `${row.id} ${json}`),
      }),
    }),
}
