/**
 * `serve()`: a responder on a client of its own, for processes that only respond.
 */
import { connect, type Client } from './client/client.ts'
import type { ClientOptions, ServeOptions } from './options.ts'
import type { Handler } from './responder/handler.ts'
import type { Server } from './responder/server.ts'

/**
 * Starts a responder for `channel` on a client of its own; closing (or draining) the server closes that
 * client too. To run several responders and callers over one LISTEN connection, use `connect()` and
 * `client.serve()` instead.
 */
export async function serve<Payload = unknown, Reply = unknown>(
  options: ClientOptions,
  channel: string,
  handler: Handler<Payload, Reply>,
  serveOptions: ServeOptions = {},
): Promise<Server> {
  const client: Client = await connect({ poolSize: 2, ...options })
  try {
    const server = await client.serve(channel, handler, serveOptions)
    server.onClose(() => client.close())
    return server
  } catch (error) {
    await client.close()
    throw error
  }
}
