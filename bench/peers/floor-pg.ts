// The NOTIFY ping-pong of floor-notify, but with node-postgres (the library's driver) and the library's layout
// of connections: each side LISTENs on one connection and sends on another (the caller's plain, the
// responder's in pipeline mode, like a responder's work session), with named prepared statements. Between
// this and pgrr-protocol lies the cost of the protocol's SQL; between floor-notify and this, the driver's.
import pg from 'pg'
import { withApplicationName } from '../database-url.ts'
import { transform } from '../payload.ts'
import type { Peer, PeerConfig } from '../peer.ts'

const NOTIFY = { name: 'floor_pg_notify', text: 'select pg_notify($1, $2)' }

function requestChannel(config: PeerConfig): string {
  return `${config.service}_floor_pg`
}

/** A connected client; `pipeline` sends each statement at once, behind those still running. */
export async function openClient(databaseUrl: string, role: string, pipeline = false): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: withApplicationName(databaseUrl, role), pipeline } as pg.ClientConfig)
  client.on('error', () => {})
  await client.connect()
  return client
}

export const peer: Peer = {
  async openCaller(config) {
    const [listen, send] = await Promise.all([
      openClient(config.databaseUrl, 'floor-pg-caller-listen'),
      openClient(config.databaseUrl, 'floor-pg-caller', true),
    ])
    const replyChannel = `${config.service}_floor_pg_reply_${process.pid}`
    const pending = new Map<string, (reply: string) => void>()
    let nextId = 0
    listen.on('notification', ({ payload = '' }) => {
      const space = payload.indexOf(' ')
      const id = payload.slice(0, space)
      pending.get(id)?.(payload.slice(space + 1))
      pending.delete(id)
    })
    await listen.query(`listen "${replyChannel}"`)
    return {
      call(payload) {
        const id = String(nextId++)
        return new Promise<string>((resolve, reject) => {
          pending.set(id, resolve)
          send.query({ ...NOTIFY, values: [requestChannel(config), `${replyChannel} ${id} ${payload}`] }).catch((error: unknown) => {
            pending.delete(id)
            reject(error)
          })
        })
      },
      async close() {
        await Promise.all([listen.end(), send.end()])
      },
    }
  },

  async startResponder(config) {
    const [listen, send] = await Promise.all([
      openClient(config.databaseUrl, 'floor-pg-responder-listen'),
      openClient(config.databaseUrl, 'floor-pg-responder', true),
    ])
    listen.on('notification', ({ payload = '' }) => {
      const first = payload.indexOf(' ')
      const second = payload.indexOf(' ', first + 1)
      const reply = `${payload.slice(first + 1, second)} ${transform(payload.slice(second + 1))}`
      // A lost reply shows up as a timeout on the caller's side.
      send.query({ ...NOTIFY, values: [payload.slice(0, first), reply] }).catch(() => {})
    })
    await listen.query(`listen "${requestChannel(config)}"`)
    const { rows } = await send.query<{ server_version: string }>('show server_version')
    return {
      serverVersion: rows[0]?.server_version,
      async close() {
        await Promise.all([listen.end(), send.end()])
      },
    }
  },
}
