// The protocol's SQL functions without the library: a bare node-postgres loop sends each request with
// pgrr_send_one (acknowledgements gathered and sent together, as the client does) and hears the reply on its LISTEN
// connection; the responder registers with pgrr_register, hears handoffs on its inbox and answers each with
// pgrr_reply_one on its pipelined work session. No batching, timers, telemetry or recovery. Between
// floor-pg and this lies the cost of the SQL; between this and pgrr-ts, the library's own Node code.
import { randomBytes } from 'node:crypto'
import { hostname } from 'node:os'
import { renderStatements } from '../../src/statements.ts'
import { transform } from '../payload.ts'
import type { Peer } from '../peer.ts'
import { openClient } from './floor-pg.ts'

type ReplyEntry = [id: string, kind: string, json: boolean, body?: string]
type HandoffEntry = [id: string, json: boolean, payload: string, headers: unknown, timeoutMs: number]

const REQUEST_TIMEOUT_MS = 10_000
/** Acknowledgements ride along with a send once the oldest is this old (the client's rule). */
const ACK_AFTER_MS = 25

export const peer: Peer = {
  async openCaller(config) {
    const statements = renderStatements(config.pgrrSchema)
    const [listen, send] = await Promise.all([
      openClient(config.databaseUrl, 'pgrr-protocol-caller-listen'),
      openClient(config.databaseUrl, 'pgrr-protocol-caller', true),
    ])
    const { rows } = await send.query<{ prefix: string }>(statements.notifyPrefix)
    const replyChannel = `${rows[0]?.prefix}.c${randomBytes(8).toString('hex')}`
    const waiting = new Map<string, (reply: string) => void>()
    /** Replies heard before pgrr_send_one returned their id (the two travel on different sessions). */
    const early = new Map<string, string>()
    let acks: string[] = []
    let oldestAckAt = 0
    listen.on('notification', ({ payload = '' }) => {
      for (const [id, , , body = ''] of JSON.parse(payload) as ReplyEntry[]) {
        const resolve = waiting.get(id)
        if (resolve === undefined) early.set(id, body)
        else {
          waiting.delete(id)
          resolve(body)
        }
        if (acks.length === 0) oldestAckAt = performance.now()
        acks.push(id)
      }
    })
    await listen.query(`listen "${replyChannel}"`)
    return {
      async call(payload) {
        if (acks.length > 0 && performance.now() - oldestAckAt >= ACK_AFTER_MS) {
          // As the client does: the outcomes read, deleted together once they have gathered a while.
          const read = acks
          acks = []
          await send.query({ name: 'pgrr_protocol_ack', text: statements.ack, values: [read] })
        }
        const sent = await send.query<{ id: string; status: string }>({
          name: 'pgrr_protocol_send_one',
          text: statements.sendOne,
          values: [replyChannel, config.service, payload, false, REQUEST_TIMEOUT_MS, null, null],
        })
        const row = sent.rows[0]
        if (row?.status !== 'ok') throw new Error(`pgrr_send_one: ${row?.status}`)
        const heard = early.get(row.id)
        if (heard !== undefined) {
          early.delete(row.id)
          return heard
        }
        return new Promise<string>((resolve) => waiting.set(row.id, resolve))
      },
      async close() {
        await Promise.all([listen.end(), send.end()])
      },
    }
  },

  async startResponder(config) {
    const statements = renderStatements(config.pgrrSchema)
    const [listen, work] = await Promise.all([
      openClient(config.databaseUrl, 'pgrr-protocol-responder-listen'),
      openClient(config.databaseUrl, 'pgrr-protocol-responder', true),
    ])
    const { rows } = await work.query<{ responder_id: number; inbox_channel: string }>(statements.register, [
      config.service,
      hostname(),
      process.pid,
      64,
    ])
    const registration = rows[0]
    if (registration === undefined) throw new Error('pgrr_register returned nothing')
    listen.on('notification', ({ payload = '' }) => {
      for (const [id, , body] of JSON.parse(payload) as HandoffEntry[]) {
        work
          .query({
            name: 'pgrr_protocol_reply_one',
            text: statements.replyOne,
            values: [registration.responder_id, id, false, transform(body), false, null, null],
          })
          .catch(() => {})
      }
    })
    await listen.query(`listen "${registration.inbox_channel}"`)
    const version = await work.query<{ server_version: string }>('show server_version')
    return {
      serverVersion: version.rows[0]?.server_version,
      async close() {
        await Promise.all([listen.end(), work.end()])
      },
    }
  },
}
