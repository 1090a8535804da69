/**
 * pg-request-reply: synchronous request-reply over PostgreSQL alone.
 *
 * ```ts
 * const server = await serve({ connectionString }, 'greet', async (name) => `hello ${name}`)
 * const client = await connect({ connectionString })
 * await client.request('greet', 'world') // 'hello world'
 * ```
 */
import { connect, type Client } from './client.ts'
import type { ClientOptions, ServeOptions } from './options.ts'
import type { Handler, Server } from './server.ts'

export { connect, Client } from './client.ts'
export { Server } from './server.ts'
export type { Handler, HandlerContext, ServerState } from './server.ts'
export { migrate, latestVersion, type MigrateResult } from './migrate.ts'
export type { ClientOptions, ConnectionOptions, RequestOptions, ServeOptions } from './options.ts'
export type { Logger, LogFn } from './logger.ts'
export * from './errors.ts'

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
export { combineTelemetry } from './telemetry.ts'
export type { Telemetry, RequestObservation, HandlerObservation, RequestInfo, HandlerInfo, Outcome } from './telemetry.ts'
