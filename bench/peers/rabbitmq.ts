// RabbitMQ RPC in the documented shape: requests on a work queue, replies over direct reply-to
// (amq.rabbitmq.reply-to: no reply queue to declare, replies go straight to the caller's channel). The
// responder acknowledges each request after sending its reply, with a prefetch window, like a real RPC server.
import { connect, type ConsumeMessage } from 'amqplib'
import { transform } from '../payload.ts'
import type { Peer } from '../peer.ts'

const DIRECT_REPLY_TO = 'amq.rabbitmq.reply-to'
/**
 * amqplib leaves Nagle's algorithm on by default; with it, a lone request waits for the peer's delayed ACK
 * (we measured ~45 requests/s at concurrency 1). Any latency-minded RPC client turns it off.
 */
const SOCKET_OPTIONS = { noDelay: true }
/** Unacknowledged deliveries the broker may push to the responder: above our highest concurrency. */
const RESPONDER_PREFETCH = 128

export const peer: Peer = {
  async openCaller(config) {
    const connection = await connect(config.amqpUrl, SOCKET_OPTIONS)
    const channel = await connection.createChannel()
    const pending = new Map<string, { resolve: (reply: string) => void; reject: (error: unknown) => void }>()
    const failAll = (error: unknown): void => {
      for (const waiter of pending.values()) waiter.reject(error)
      pending.clear()
    }
    channel.on('error', failAll)
    channel.on('close', () => failAll(new Error('channel closed')))
    // Direct reply-to requires consuming from the pseudo-queue, without acks, before publishing.
    await channel.consume(
      DIRECT_REPLY_TO,
      (message: ConsumeMessage | null) => {
        if (!message) return
        const id = String(message.properties.correlationId)
        const waiter = pending.get(id)
        if (!waiter) return
        pending.delete(id)
        waiter.resolve(message.content.toString())
      },
      { noAck: true },
    )
    let nextId = 0
    return {
      call(payload) {
        const id = String(nextId++)
        return new Promise<string>((resolve, reject) => {
          pending.set(id, { resolve, reject })
          channel.sendToQueue(config.service, Buffer.from(payload), { replyTo: DIRECT_REPLY_TO, correlationId: id })
        })
      },
      async close() {
        await channel.close().catch(() => {})
        await connection.close()
      },
    }
  },

  async startResponder(config) {
    const connection = await connect(config.amqpUrl, SOCKET_OPTIONS)
    const channel = await connection.createChannel()
    await channel.assertQueue(config.service, { durable: false })
    // Requests left over from an aborted run would be answered to callers that no longer exist.
    await channel.purgeQueue(config.service)
    await channel.prefetch(RESPONDER_PREFETCH)
    await channel.consume(
      config.service,
      (message: ConsumeMessage | null) => {
        if (!message) return
        channel.sendToQueue(String(message.properties.replyTo), Buffer.from(transform(message.content.toString())), {
          correlationId: message.properties.correlationId as string,
        })
        channel.ack(message)
      },
      { noAck: false },
    )
    return {
      serverVersion: String(connection.connection.serverProperties.version ?? 'unknown'),
      async close() {
        await channel.deleteQueue(config.service).catch(() => {})
        await channel.close().catch(() => {})
        await connection.close()
      },
    }
  },
}
