// An RPC over Redis, in the fastest design we found that still has a queue (competing responders, each
// request handled once): the caller LPUSHes "<reply channel> <id> <payload>" onto a list; the responder pops
// up to a batch at a time with BLMPOP and PUBLISHes each reply on the caller's own channel, which the caller
// SUBSCRIBEd to once. One subscriber connection multiplexes all of a caller's pending replies, like pgrr's
// LISTEN connection. (A reply list per request, BLPOPed by the caller, needs a blocked connection per request
// in flight.) Replies are at-most-once: one published while the caller is not subscribed is lost.
import { createClient } from 'redis'
import { transform } from '../payload.ts'
import type { Peer } from '../peer.ts'

/** Requests taken per BLMPOP: one round trip drains whatever is queued, up to our highest concurrency. */
const POP_BATCH = 64
/** BLMPOP timeout (seconds): how long close() may wait for the loop to notice. */
const POP_TIMEOUT_SECONDS = 0.5

function queueKey(service: string): string {
  return `${service}:requests`
}

export const peer: Peer = {
  async openCaller(config) {
    const commands = createClient({ url: config.redisUrl })
    const subscriber = commands.duplicate()
    await Promise.all([commands.connect(), subscriber.connect()])
    const replyChannel = `${config.service}:reply:${process.pid}`
    const pending = new Map<number, { resolve: (reply: string) => void; reject: (error: unknown) => void }>()
    await subscriber.subscribe(replyChannel, (message) => {
      const space = message.indexOf(' ')
      const id = Number(message.slice(0, space))
      const waiter = pending.get(id)
      if (!waiter) return
      pending.delete(id)
      waiter.resolve(message.slice(space + 1))
    })
    let nextId = 0
    return {
      call(payload) {
        const id = nextId++
        return new Promise<string>((resolve, reject) => {
          pending.set(id, { resolve, reject })
          commands.lPush(queueKey(config.service), `${replyChannel} ${id} ${payload}`).catch((error: unknown) => {
            pending.delete(id)
            reject(error)
          })
        })
      },
      async close() {
        await subscriber.unsubscribe(replyChannel).catch(() => {})
        subscriber.destroy()
        commands.destroy()
      },
    }
  },

  async startResponder(config) {
    // BLMPOP blocks its connection, so replies go out on a second one.
    const blocking = createClient({ url: config.redisUrl })
    const publisher = blocking.duplicate()
    await Promise.all([blocking.connect(), publisher.connect()])
    // Requests left over from an aborted run would be answered to callers that no longer exist.
    await publisher.del(queueKey(config.service))
    const info = await publisher.info('server')
    const serverVersion = /redis_version:(\S+)/.exec(info)?.[1] ?? 'unknown'

    let closed = false
    const loop = (async () => {
      while (!closed) {
        const popped = await blocking.blmPop(POP_TIMEOUT_SECONDS, queueKey(config.service), 'RIGHT', { COUNT: POP_BATCH })
        if (!popped) continue
        for (const item of popped[1] ?? []) {
          const text = String(item)
          const firstSpace = text.indexOf(' ')
          const secondSpace = text.indexOf(' ', firstSpace + 1)
          // Not awaited: node-redis pipelines the publishes, and a lost reply surfaces as the caller's timeout.
          publisher
            .publish(text.slice(0, firstSpace), `${text.slice(firstSpace + 1, secondSpace)} ${transform(text.slice(secondSpace + 1))}`)
            .catch(() => {})
        }
      }
    })()

    return {
      serverVersion,
      async close() {
        closed = true
        await loop.catch(() => {})
        await publisher.del(queueKey(config.service)).catch(() => {})
        blocking.destroy()
        publisher.destroy()
      },
    }
  },
}
