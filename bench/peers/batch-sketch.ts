// The plainest request-reply on a table that batches (a measuring aid): ids made by the caller, one multi-row
// INSERT and one NOTIFY of the ids per caller batch, the responder claiming by `UPDATE … WHERE id = ANY($1)`
// and replying by `DELETE … RETURNING` the rows, one NOTIFY per caller carrying its replies. No liveness,
// deadline, handoff, acknowledgement, size check or recovery: what a row per request costs when nothing else
// is asked of it. Both sides keep at most two statements running, each taking whatever queued meanwhile (as
// pgrr-ts does).
import { randomBytes } from 'node:crypto'
import { transform } from '../payload.ts'
import type { Peer, PeerConfig } from '../peer.ts'
import { PEER_SCHEMAS } from '../systems.ts'
import { batcher, notifyChunks, openBatchCaller, resolveEach, startSketchResponder, type Waiter } from './batching.ts'

const SCHEMA = PEER_SCHEMAS['batch-sketch']
const TABLE = `${SCHEMA}.request`

const SEND = {
  name: 'sketch_send',
  text: `with inserted as (insert into ${TABLE} (id, reply_channel, payload)
                          select id, $1, payload from unnest($2::text[], $3::text[]) as r(id, payload))
         select count(pg_notify($4, ids)) from unnest($5::text[]) as ids`,
}

function requestChannel(config: PeerConfig): string {
  return `${config.service}_batch_sketch`
}

export const peer: Peer = {
  async openCaller(config) {
    const waiting = new Map<string, Waiter>()
    const caller = await openBatchCaller(config, 'batch-sketch-caller', (payload) => resolveEach(waiting, payload))
    const prefix = randomBytes(6).toString('hex')
    let nextId = 0
    const send = batcher<{ id: string; payload: string }>(caller.senders, async (client, batch) => {
      const ids = batch.map((entry) => entry.id)
      try {
        await client.query({
          ...SEND,
          values: [caller.replyChannel, ids, batch.map((entry) => entry.payload), requestChannel(config), notifyChunks(ids)],
        })
      } catch (error) {
        for (const id of ids) waiting.get(id)?.reject(error)
      }
    })
    return {
      call(payload) {
        const id = `${prefix}${nextId++}`
        return new Promise<string>((resolve, reject) => {
          waiting.set(id, { resolve, reject })
          send({ id, payload })
        })
      },
      close: caller.close,
    }
  },

  startResponder: (config) =>
    startSketchResponder<{ id: string; payload: string }>(config, {
      role: 'batch-sketch-responder',
      schema: SCHEMA,
      createTable: `create unlogged table if not exists ${TABLE} (
        id text primary key, reply_channel text not null, payload text not null, claimed boolean not null default false)`,
      requestChannel: requestChannel(config),
      claim: {
        name: 'sketch_claim',
        text: `update ${TABLE} set claimed = true where id = any($1::text[]) and not claimed returning id, payload`,
      },
      // Each caller's replies packed by running size into NOTIFYs under PostgreSQL's 8000 bytes (as pgrr_reply
      // packs them): entries up to 1500 bytes several to a NOTIFY of at most 6000 + 1500, larger ones alone.
      reply: {
        name: 'sketch_reply',
        text: `with deleted as (delete from ${TABLE} t using unnest($1::text[], $2::text[]) as r(id, reply)
                             where t.id = r.id returning t.reply_channel, r.id, r.reply),
                    entries as (select reply_channel, id, json_build_array(id, reply)::text as entry from deleted),
                    sized as (select e.*, octet_length(e.entry) > 1500 as alone,
                                     sum(case when octet_length(e.entry) <= 1500 then octet_length(e.entry) + 1 else 0 end)
                                       over (partition by e.reply_channel order by e.id) as running
                                from entries e)
               select count(pg_notify(reply_channel, entries)) as notified
                 from (select reply_channel, '[' || string_agg(entry, ',') || ']' as entries
                         from sized
                        group by reply_channel, alone, case when alone then id else ((running - 1) / 6000)::text end) per_notify`,
      },
      answer: (row) => ({ id: row.id, answers: [transform(row.payload)] }),
    }),
}
