// The plainest request-reply on a table that batches (a measuring aid): ids made by the caller, one multi-row
// INSERT and one NOTIFY of the ids per caller batch, the responder claiming by `UPDATE … WHERE id = ANY($1)`
// and replying by `DELETE … RETURNING` the rows, one NOTIFY per caller carrying its replies. No liveness,
// deadline, handoff, acknowledgement, size check or recovery: what a row per request costs when nothing else
// is asked of it. Both sides keep at most two statements running, each taking whatever queued meanwhile (as
// pgrr-ts does).
import { randomBytes } from 'node:crypto'
import type pg from 'pg'
import { transform } from '../payload.ts'
import type { Peer, PeerConfig } from '../peer.ts'
import { PEER_SCHEMAS } from '../systems.ts'
import { openClient } from './floor-pg.ts'

const TABLE = `${PEER_SCHEMAS['batch-sketch']}.request`
/** Statements running at once on each side, each on a connection of its own. */
export const STATEMENTS_AT_ONCE = 2

const SEND = {
  name: 'sketch_send',
  text: `with inserted as (insert into ${TABLE} (id, reply_channel, payload)
                          select id, $1, payload from unnest($2::text[], $3::text[]) as r(id, payload))
         select pg_notify($4, array_to_string($2, ' '))`,
}
const CLAIM = {
  name: 'sketch_claim',
  text: `update ${TABLE} set claimed = true where id = any($1::text[]) and not claimed
         returning id, reply_channel, payload`,
}
const REPLY = {
  name: 'sketch_reply',
  text: `with replies as (select * from unnest($1::text[], $2::text[]) as r(id, reply)),
              deleted as (delete from ${TABLE} t using replies r where t.id = r.id returning t.reply_channel, r.id, r.reply)
         select count(pg_notify(reply_channel, entries)) as notified
           from (select reply_channel, json_agg(json_build_array(id, reply))::text as entries
                   from deleted group by reply_channel) per_caller`,
}

function requestChannel(config: PeerConfig): string {
  return `${config.service}_batch_sketch`
}

/**
 * Runs `run` on batches of what was pushed: each of `clients` runs one batch at a time, and a push while all
 * are busy waits for the next batch.
 */
export function batcher<T>(clients: pg.Client[], run: (client: pg.Client, batch: T[]) => Promise<void>): (item: T) => void {
  const idle = [...clients]
  let queued: T[] = []
  const next = (): void => {
    const client = idle.pop()
    if (client === undefined) return
    const batch = queued
    queued = []
    void run(client, batch).finally(() => {
      idle.push(client)
      if (queued.length > 0) next()
    })
  }
  return (item) => {
    queued.push(item)
    if (queued.length === 1) next()
  }
}

export async function openClients(databaseUrl: string, role: string): Promise<pg.Client[]> {
  return await Promise.all(Array.from({ length: STATEMENTS_AT_ONCE }, () => openClient(databaseUrl, role)))
}

export const peer: Peer = {
  async openCaller(config) {
    const [listen, senders] = await Promise.all([
      openClient(config.databaseUrl, 'batch-sketch-caller-listen'),
      openClients(config.databaseUrl, 'batch-sketch-caller'),
    ])
    const replyChannel = `${config.service}_batch_sketch_${process.pid}`
    const prefix = randomBytes(6).toString('hex')
    const waiting = new Map<string, { resolve: (reply: string) => void; reject: (error: unknown) => void }>()
    let nextId = 0
    listen.on('notification', ({ payload = '' }) => {
      for (const [id, reply] of JSON.parse(payload) as [string, string][]) {
        waiting.get(id)?.resolve(reply)
        waiting.delete(id)
      }
    })
    await listen.query(`listen "${replyChannel}"`)
    const send = batcher<{ id: string; payload: string }>(senders, async (client, batch) => {
      const ids = batch.map((entry) => entry.id)
      try {
        await client.query({ ...SEND, values: [replyChannel, ids, batch.map((entry) => entry.payload), requestChannel(config)] })
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
      async close() {
        await Promise.all([listen.end(), ...senders.map((client) => client.end())])
      },
    }
  },

  async startResponder(config) {
    const [listen, workers] = await Promise.all([
      openClient(config.databaseUrl, 'batch-sketch-responder-listen'),
      openClients(config.databaseUrl, 'batch-sketch-responder'),
    ])
    const [first] = workers as [pg.Client]
    await first.query(`create schema if not exists ${PEER_SCHEMAS['batch-sketch']}`)
    await first.query(`create unlogged table if not exists ${TABLE} (
      id text primary key, reply_channel text not null, payload text not null, claimed boolean not null default false)`)
    // Claims and replies share the two connections: whichever is free takes the next batch of either.
    type Work = { claim: string } | { id: string; reply: string }
    const work = batcher<Work>(workers, async (client, batch) => {
      const claims: string[] = []
      const ids: string[] = []
      const replies: string[] = []
      for (const item of batch) {
        if ('claim' in item) claims.push(item.claim)
        else {
          ids.push(item.id)
          replies.push(item.reply)
        }
      }
      // A failure shows up as a timeout on the caller's side.
      if (ids.length > 0) await client.query({ ...REPLY, values: [ids, replies] }).catch(() => {})
      if (claims.length === 0) return
      const claimed = await client.query<{ id: string; payload: string }>({ ...CLAIM, values: [claims] }).catch(() => ({ rows: [] }))
      for (const row of claimed.rows) work({ id: row.id, reply: transform(row.payload) })
    })
    listen.on('notification', ({ payload = '' }) => {
      for (const id of payload.split(' ')) work({ claim: id })
    })
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
