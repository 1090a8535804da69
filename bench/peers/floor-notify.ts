// The floor of a LISTEN/NOTIFY-based RPC: the caller NOTIFYs the responder's channel with
// "<reply channel> <id> <payload>", the responder NOTIFYs the reply channel with "<id> <reply>". No table, no
// transaction, no delivery guarantee: whatever pgrr adds on top is measured against this.
import postgres from 'postgres'
import { withApplicationName } from '../database-url.ts'
import { transform } from '../payload.ts'
import type { Peer, PeerConfig } from '../peer.ts'

interface Pending {
  resolve: (reply: string) => void
  reject: (error: unknown) => void
}

/**
 * Connections used to send NOTIFYs, per side (besides the LISTEN connection). One, pipelined by postgres.js,
 * is the fastest we measured (1, 2, 4, 10, 64 tried): every transaction that NOTIFYs takes one
 * database-wide lock at commit, so parallel connections only queue on it; at c=64 one connection gave
 * ~16k req/s where 4 gave ~10k and 10 gave ~9k.
 */
export const NOTIFY_POOL_SIZE = 1

function requestChannel(config: PeerConfig): string {
  return `${config.service}_floor`
}

export const peer: Peer = {
  async openCaller(config) {
    const sql = postgres(withApplicationName(config.databaseUrl, 'floor-notify-caller'), {
      max: NOTIFY_POOL_SIZE,
      onnotice: () => {},
    })
    const replyChannel = `${config.service}_floor_reply_${process.pid}`
    const pending = new Map<number, Pending>()
    let nextId = 0

    const listening = await sql.listen(replyChannel, (message) => {
      const space = message.indexOf(' ')
      const id = Number(message.slice(0, space))
      const waiter = pending.get(id)
      if (!waiter) return
      pending.delete(id)
      waiter.resolve(message.slice(space + 1))
    })

    return {
      call(payload) {
        const id = nextId++
        return new Promise<string>((resolve, reject) => {
          pending.set(id, { resolve, reject })
          sql.notify(requestChannel(config), `${replyChannel} ${id} ${payload}`).catch((error: unknown) => {
            pending.delete(id)
            reject(error)
          })
        })
      },
      async close() {
        await listening.unlisten()
        await sql.end({ timeout: 2 })
      },
    }
  },

  async startResponder(config) {
    const sql = postgres(withApplicationName(config.databaseUrl, 'floor-notify-responder'), {
      max: NOTIFY_POOL_SIZE,
      onnotice: () => {},
    })
    const listening = await sql.listen(requestChannel(config), (message) => {
      const firstSpace = message.indexOf(' ')
      const secondSpace = message.indexOf(' ', firstSpace + 1)
      const replyChannel = message.slice(0, firstSpace)
      const id = message.slice(firstSpace + 1, secondSpace)
      // A lost reply shows up as a timeout on the caller's side; nothing to do here.
      sql.notify(replyChannel, `${id} ${transform(message.slice(secondSpace + 1))}`).catch(() => {})
    })
    const [{ server_version: serverVersion }] = await sql<[{ server_version: string }]>`show server_version`
    return {
      serverVersion,
      async close() {
        await listening.unlisten()
        await sql.end({ timeout: 2 })
      },
    }
  },
}
