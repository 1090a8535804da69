/**
 * pg-request-reply: synchronous request-reply over PostgreSQL alone.
 *
 * ```ts
 * const server = await serve({ connectionString }, 'greet', async (name) => `hello ${name}`)
 * const client = await connect({ connectionString })
 * await client.request('greet', 'world') // 'hello world'
 * ```
 */
export { connect, Client } from './client/client.ts'
export type { RequestStream, RequestStreamOptions } from './client/stream.ts'
export { Server } from './responder/server.ts'
export { serve } from './serve.ts'
export { defineService } from './service.ts'
export type { Service, ServiceDefinition, ServiceHandler, StandardSchemaV1, InferInput, InferOutput } from './service.ts'
export type { Handler, HandlerContext } from './responder/handler.ts'
export type { ServerState } from './responder/server.ts'
export { migrate, latestVersion, type MigrateOptions, type MigrateResult, type MigrateRoles } from './migrate.ts'
export { configureChannel, grantChannel, revokeChannel, type ChannelConfiguration, type ChannelSettings } from './channel-config.ts'
export type { ClientOptions, ConnectionOptions, RequestOptions, ServeOptions } from './options.ts'
export type { RequestAllOptions, RequestAllResult, AddressedResponder } from './client/scatter.ts'
export type { ServiceResponder, PingOptions, PingResult } from './client/services.ts'
export type { ServiceInfo } from './responder/service-info.ts'
export type { HandlerStats } from './responder/service-stats.ts'
export type { Logger, LogFn } from './logger.ts'
export * from './errors.ts'

export { combineTelemetry } from './telemetry.ts'
export type { Telemetry, RequestObservation, HandlerObservation, RequestInfo, HandlerInfo, Outcome } from './telemetry.ts'
export { createMetrics, type Metrics, type MetricsOptions, type BacklogOptions } from './metrics.ts'
export { createTracing, type TracingOptions, type TracerLike } from './tracing.ts'
export { getStatus, type Status, type StatusOptions, type ChannelStatus, type ResponderStatus, type OldestTransaction } from './status.ts'
