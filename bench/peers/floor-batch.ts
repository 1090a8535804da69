// The batches of batch-sketch with no table (a measuring aid): each caller batch is one NOTIFY carrying its
// requests, each responder batch one NOTIFY per caller carrying its replies (several when they exceed what
// one NOTIFY holds). Between this and batch-sketch lies
// the cost of a row per request; between floor-notify and this, what batching NOTIFYs gains.
import { randomBytes } from 'node:crypto'
import { transform } from '../payload.ts'
import type { Peer, PeerConfig } from '../peer.ts'
import { batcher, notifyChunks, openBatchCaller, openClients, resolveEach, type Waiter } from './batching.ts'
import { openClient } from './floor-pg.ts'

/** One statement sending NOTIFYs: channels and payloads, pairwise. */
const NOTIFY_EACH = {
  name: 'floor_batch_notify_each',
  text: 'select count(pg_notify(channel, entries)) from unnest($1::text[], $2::text[]) as n(channel, entries)',
}

function requestChannel(config: PeerConfig): string {
  return `${config.service}_floor_batch`
}

export const peer: Peer = {
  async openCaller(config) {
    const waiting = new Map<string, Waiter>()
    const caller = await openBatchCaller(config, 'floor-batch-caller', (payload) => resolveEach(waiting, payload))
    const prefix = randomBytes(6).toString('hex')
    let nextId = 0
    const send = batcher<[string, string]>(caller.senders, async (client, batch) => {
      try {
        // Each NOTIFY: the caller's reply channel, a space, a JSON array of [id, payload].
        const chunks = notifyChunks(batch, (json) => `${caller.replyChannel} ${json}`)
        await client.query({ ...NOTIFY_EACH, values: [chunks.map(() => requestChannel(config)), chunks] })
      } catch (error) {
        for (const [id] of batch) waiting.get(id)?.reject(error)
      }
    })
    return {
      call(payload) {
        const id = `${prefix}${nextId++}`
        return new Promise<string>((resolve, reject) => {
          waiting.set(id, { resolve, reject })
          send([id, payload])
        })
      },
      close: caller.close,
    }
  },

  async startResponder(config) {
    const [listen, senders] = await Promise.all([
      openClient(config.databaseUrl, 'floor-batch-responder-listen'),
      openClients(config.databaseUrl, 'floor-batch-responder'),
    ])
    const reply = batcher<{ channel: string; entry: [string, string] }>(senders, async (client, batch) => {
      const perCaller = new Map<string, [string, string][]>()
      for (const { channel, entry } of batch) {
        const entries = perCaller.get(channel) ?? []
        entries.push(entry)
        perCaller.set(channel, entries)
      }
      const channels: string[] = []
      const payloads: string[] = []
      for (const [channel, entries] of perCaller) {
        for (const chunk of notifyChunks(entries)) {
          channels.push(channel)
          payloads.push(chunk)
        }
      }
      // A lost reply shows up as a timeout on the caller's side.
      await client.query({ ...NOTIFY_EACH, values: [channels, payloads] }).catch(() => {})
    })
    listen.on('notification', ({ payload = '' }) => {
      const space = payload.indexOf(' ')
      const channel = payload.slice(0, space)
      const batch = JSON.parse(payload.slice(space + 1)) as [string, string][]
      for (const [id, body] of batch) reply({ channel, entry: [id, transform(body)] })
    })
    await listen.query(`listen "${requestChannel(config)}"`)
    const { rows } = await senders[0]!.query<{ server_version: string }>('show server_version')
    return {
      serverVersion: rows[0]?.server_version,
      async close() {
        await Promise.all([listen.end(), ...senders.map((client) => client.end())])
      },
    }
  },
}
