// NATS request-reply as nats.js intends it: request() on a subject (replies come back on one muxed inbox
// subscription per connection), a queue-group subscriber that respond()s. At-most-once: no persistence.
import { connect, StringCodec } from 'nats'
import { transform } from '../payload.ts'
import { roundRobin, serviceNames, type Peer } from '../peer.ts'

const REQUEST_TIMEOUT_MS = 10_000
const codec = StringCodec()

function servers(natsUrl: string): string {
  const url = new URL(natsUrl)
  return `${url.hostname}:${url.port || 4222}`
}

export const peer: Peer = {
  async openCaller(config) {
    const connection = await connect({ servers: servers(config.natsUrl), name: 'pgrr-bench-caller' })
    const subject = roundRobin(serviceNames(config))
    return {
      async call(payload) {
        const message = await connection.request(subject(), codec.encode(payload), { timeout: REQUEST_TIMEOUT_MS })
        return codec.decode(message.data)
      },
      close: () => connection.close(),
    }
  },

  async startResponder(config) {
    const connection = await connect({ servers: servers(config.natsUrl), name: 'pgrr-bench-responder' })
    // A queue group, so that several responders would compete for requests like pgrr's do.
    for (const subject of serviceNames(config)) {
      connection.subscribe(subject, {
        queue: 'bench',
        callback: (error, message) => {
          if (error) return
          message.respond(codec.encode(transform(codec.decode(message.data))))
        },
      })
    }
    // The subscription exists on the server only once this round trip returns.
    await connection.flush()
    return {
      serverVersion: connection.info?.version ?? 'unknown',
      close: () => connection.close(),
    }
  },
}
