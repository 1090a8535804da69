// batch-sketch with a row per caller batch instead of a row per request (a measuring aid): the batch's
// requests in one array column, claimed together, answered together by deleting the row with one NOTIFY
// carrying every reply. What the table costs when its writes are paid once per batch.
import { randomBytes } from 'node:crypto'
import type pg from 'pg'
import { transform } from '../payload.ts'
import type { Peer, PeerConfig } from '../peer.ts'
import { PEER_SCHEMAS } from '../systems.ts'
import { batcher, openClients } from './batch-sketch.ts'
import { openClient } from './floor-pg.ts'

const TABLE = `${PEER_SCHEMAS['batch-row-sketch']}.batch`

const SEND = {
  name: 'batch_row_send',
  text: `with inserted as (insert into ${TABLE} (id, reply_channel, payloads) values ($1, $2, $3::text[]))
         select pg_notify($4, $1)`,
}
const CLAIM = {
  name: 'batch_row_claim',
  text: `update ${TABLE} set claimed = true where id = any($1::text[]) and not claimed
         returning id, reply_channel, payloads`,
}
const REPLY = {
  name: 'batch_row_reply',
  text: `with deleted as (delete from ${TABLE} t using unnest($1::text[], $2::text[]) as r(id, replies)
                       where t.id = r.id returning t.reply_channel, r.id, r.replies)
         select count(pg_notify(reply_channel, id || ' ' || replies)) as notified from deleted`,
}

function requestChannel(config: PeerConfig): string {
  return `${config.service}_batch_row_sketch`
}

export const peer: Peer = {
  async openCaller(config) {
    const [listen, senders] = await Promise.all([
      openClient(config.databaseUrl, 'batch-row-sketch-caller-listen'),
      openClients(config.databaseUrl, 'batch-row-sketch-caller'),
    ])
    const replyChannel = `${config.service}_batch_row_sketch_${process.pid}`
    const prefix = randomBytes(6).toString('hex')
    type Waiting = { resolve: (reply: string) => void; reject: (error: unknown) => void }
    const batches = new Map<string, Waiting[]>()
    let nextId = 0
    listen.on('notification', ({ payload = '' }) => {
      const space = payload.indexOf(' ')
      const id = payload.slice(0, space)
      const replies = JSON.parse(payload.slice(space + 1)) as string[]
      batches.get(id)?.forEach((waiting, index) => waiting.resolve(replies[index] as string))
      batches.delete(id)
    })
    await listen.query(`listen "${replyChannel}"`)
    const send = batcher<{ payload: string } & Waiting>(senders, async (client, batch) => {
      const id = `${prefix}${nextId++}`
      batches.set(id, batch)
      try {
        await client.query({ ...SEND, values: [id, replyChannel, batch.map((entry) => entry.payload), requestChannel(config)] })
      } catch (error) {
        batches.delete(id)
        for (const entry of batch) entry.reject(error)
      }
    })
    return {
      call(payload) {
        return new Promise<string>((resolve, reject) => send({ payload, resolve, reject }))
      },
      async close() {
        await Promise.all([listen.end(), ...senders.map((client) => client.end())])
      },
    }
  },

  async startResponder(config) {
    const [listen, workers] = await Promise.all([
      openClient(config.databaseUrl, 'batch-row-sketch-responder-listen'),
      openClients(config.databaseUrl, 'batch-row-sketch-responder'),
    ])
    const [first] = workers as [pg.Client]
    await first.query(`create schema if not exists ${PEER_SCHEMAS['batch-row-sketch']}`)
    await first.query(`create unlogged table if not exists ${TABLE} (
      id text primary key, reply_channel text not null, payloads text[] not null, claimed boolean not null default false)`)
    type Work = { claim: string } | { id: string; replies: string }
    const work = batcher<Work>(workers, async (client, batch) => {
      const claims: string[] = []
      const ids: string[] = []
      const replies: string[] = []
      for (const item of batch) {
        if ('claim' in item) claims.push(item.claim)
        else {
          ids.push(item.id)
          replies.push(item.replies)
        }
      }
      // A failure shows up as a timeout on the caller's side.
      if (ids.length > 0) await client.query({ ...REPLY, values: [ids, replies] }).catch(() => {})
      if (claims.length === 0) return
      const claimed = await client
        .query<{ id: string; payloads: string[] }>({ ...CLAIM, values: [claims] })
        .catch(() => ({ rows: [] as { id: string; payloads: string[] }[] }))
      for (const row of claimed.rows) work({ id: row.id, replies: JSON.stringify(row.payloads.map(transform)) })
    })
    listen.on('notification', ({ payload = '' }) => work({ claim: payload }))
    await listen.query(`listen "${requestChannel(config)}"`)
    const { rows } = await first.query<{ server_version: string }>('show server_version')
    return {
      serverVersion: rows[0]?.server_version,
      async close() {
        await Promise.all([listen.end(), ...workers.map((client) => client.end())])
      },
    }
  },
}
