/** `pgrr serve`: runs a handler module as a responder until SIGTERM/SIGINT, then drains. */
import { existsSync } from 'node:fs'
import { createServer, type Server as HttpServer } from 'node:http'
import { constants } from 'node:os'
import path from 'node:path'
import type { Registry } from 'prom-client'
import { serve } from '../index.ts'
import type { Logger } from '../logger.ts'
import { MissingDependencyError } from '../errors.ts'
import { createMetrics, type BacklogOptions, type Metrics } from '../metrics.ts'
import type { Handler, HandlerContext } from '../responder/handler.ts'
import {
  commonOptions,
  commonOptionsHelp,
  connectionFrom,
  databaseOptions,
  databaseOptionsHelp,
  parseCommandArgs,
  parseInteger,
} from './arguments.ts'
import { writeOut, type Command } from './command.ts'
import { CliError, exitCodes, UsageError } from './exit-codes.ts'
import { importFile } from './import-file.ts'
import { createLogger, logLevels, type LogFormat, type LogLevel } from './logger.ts'

const help = `Usage: pgrr serve <channel> --handler <file> [options]

Answers the requests sent to <channel> with a handler module: its default export (or its export named
"handler") is called as (payload, ctx) => reply for each request; returning sends the reply, throwing sends
an error reply (the error's message, and its code when it has a string one). The file may be .js, .mjs or
.ts (TypeScript needs the package tsx installed). Several processes may serve one channel: each request goes
to one.

Logs go to stderr; payloads are never logged unless --log-payloads is given. The first SIGTERM or SIGINT
drains (stops taking requests, lets running handlers finish, up to --drain-timeout) and exits 0; a second
one exits at once.

With --metrics-port, Prometheus metrics are served at http://<host>:<port>/metrics: requests handled by
outcome, handler and queue-wait durations, handlers running, claim batch sizes, reconnects, the channel's
backlog read from the database at each scrape, and the process's own metrics (see docs/observability.md).
They need the package prom-client installed.

Options:
  --handler <file>       module exporting the handler (required)
  --concurrency <n>      most handlers running at once (default: 10)
  --drain-timeout <ms>   on stop, how long to wait for running handlers before aborting them (default: 30000)
  --log-format <f>       text (default) or json (one JSON object per line)
  --log-level <l>        debug, info (default), warn or error; debug logs every request
  --log-payloads         log every request at info level with its payload, headers and reply (cut at
                         2000 characters); payloads may hold personal data: for debugging only
  --metrics-port <port>  serve Prometheus metrics on this port (0: any free port, logged)
  --metrics-host <host>  address the metrics server listens on (default: 127.0.0.1)
${databaseOptionsHelp}
${commonOptionsHelp}`

const options = {
  ...commonOptions,
  ...databaseOptions,
  handler: { type: 'string' },
  concurrency: { type: 'string' },
  'drain-timeout': { type: 'string' },
  'log-format': { type: 'string' },
  'log-level': { type: 'string' },
  'log-payloads': { type: 'boolean' },
  'metrics-port': { type: 'string' },
  'metrics-host': { type: 'string' },
} as const

export const serveCommand: Command = {
  name: 'serve',
  summary: 'answer requests on a channel with a handler module',
  help,
  async run(argv) {
    const { values, positionals } = parseCommandArgs('serve', argv, options, true)
    if (values.help) {
      await writeOut(`${help}\n`)
      return exitCodes.ok
    }
    if (positionals.length !== 1) throw new UsageError('serve: expected one channel name (pgrr serve <channel> --handler <file>)')
    const channel = positionals[0] as string
    if (values.handler === undefined) throw new UsageError('serve: --handler <file> is required')
    const concurrency = parseInteger('--concurrency', values.concurrency, 1, 100_000) ?? 10
    const drainTimeoutMs = parseInteger('--drain-timeout', values['drain-timeout'], 1)
    const logFormat = oneOf('--log-format', values['log-format'] ?? 'text', ['text', 'json'] as const) as LogFormat
    const logLevel = oneOf('--log-level', values['log-level'] ?? 'info', logLevels) as LogLevel
    const metricsPort = parseInteger('--metrics-port', values['metrics-port'], 0, 65535)
    const metricsHost = values['metrics-host'] ?? '127.0.0.1'
    if (values['metrics-host'] !== undefined && metricsPort === undefined) {
      throw new UsageError('serve: --metrics-host needs --metrics-port')
    }
    const connection = connectionFrom(values, process.env, `pgrr serve ${channel}`.slice(0, 63))

    const handler = await loadHandler(values.handler)
    const logger = createLogger({ format: logFormat, level: logLevel })
    const stop = watchSignals(logger)
    // Nothing else may keep the process alive once connections are up; serve must never end silently.
    const keepAlive = setInterval(() => {}, 1 << 30)
    let metrics: Metrics | undefined
    let metricsServer: HttpServer | undefined
    try {
      if (metricsPort !== undefined) {
        metrics = metricsFor({ ...connection, channels: [channel], logger, applicationName: 'pgrr serve metrics' })
        // Listening before serving: a port in use fails the command before it takes any request.
        metricsServer = await listenForScrapes(metrics.registry, metricsHost, metricsPort, logger)
      }
      const telemetry = metrics === undefined ? {} : { telemetry: metrics.telemetry }
      const server = await serve({ ...connection, logger, poolSize: 1, ...telemetry }, channel, logged(handler, logger, values['log-payloads'] ?? false, logLevel === 'debug'), {
        concurrency,
        drainTimeoutMs,
      })
      stop.ready = true
      logger.info(
        { channel, schema: connection.schema, concurrency, responderId: server.responderId, pid: process.pid },
        `serving ${channel} (concurrency ${concurrency}, responder id ${server.responderId ?? '?'})`,
      )
      if (metricsServer !== undefined) {
        const url = metricsUrl(metricsServer)
        logger.info({ metrics: url }, `metrics on ${url}`)
      }
      const signal = await stop.signalled
      logger.info(
        { signal, running: server.running },
        `${signal}: draining, ${server.running} handler(s) running (send it again to exit at once)`,
      )
      await server.drain()
      logger.info('drained; exiting')
      return exitCodes.ok
    } finally {
      clearInterval(keepAlive)
      stop.dispose()
      if (metricsServer !== undefined) {
        metricsServer.closeAllConnections()
        metricsServer.close()
      }
      await metrics?.close()
    }
  },
}

/** A plain node:http server answering GET /metrics from the registry, and 404 elsewhere. */
async function listenForScrapes(registry: Registry, host: string, port: number, logger: Logger): Promise<HttpServer> {
  const server = createServer((request, response) => {
    const pathname = (request.url ?? '/').split('?', 1)[0]
    if (pathname !== '/metrics') {
      response.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end('not found: the metrics are at /metrics\n')
      return
    }
    if (request.method !== 'GET' && request.method !== 'HEAD') {
      response.writeHead(405, { allow: 'GET, HEAD' }).end()
      return
    }
    registry.metrics().then(
      (text) => {
        response.writeHead(200, { 'content-type': registry.contentType })
        response.end(request.method === 'HEAD' ? undefined : text)
      },
      (error: unknown) => {
        logger.error({ err: error }, 'collecting metrics failed')
        response.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' }).end('collecting metrics failed\n')
      },
    )
  })
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(port, host, () => {
        server.off('error', reject)
        resolve()
      })
    })
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error)
    throw new CliError(`cannot serve metrics on ${host}:${port}: ${message}`, exitCodes.error, { cause: error })
  }
  // A scraper's keep-alive connection must not keep the process up after the drain.
  server.unref()
  return server
}

function metricsUrl(server: HttpServer): string {
  const address = server.address()
  if (address === null || typeof address === 'string') return String(address)
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address
  return `http://${host}:${address.port}/metrics`
}

/** Loads the handler module and picks its handler function, with messages that say what to fix. */
/** The metrics of --metrics-port; prom-client is an optional peer dependency, named by the option. */
function metricsFor(backlog: BacklogOptions): Metrics {
  try {
    return createMetrics({ processMetrics: true, backlog })
  } catch (error) {
    if (!(error instanceof MissingDependencyError)) throw error
    throw new CliError(`--metrics-port needs the package ${error.packageName}: npm install ${error.packageName}`, exitCodes.error, { cause: error })
  }
}

async function loadHandler(file: string): Promise<Handler> {
  const resolved = path.resolve(file)
  if (!existsSync(resolved)) throw new CliError(`handler file not found: ${resolved}`, exitCodes.error)
  let exported: Record<string, unknown>
  try {
    exported = await importFile(resolved)
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error)
    // Compile errors span lines (esbuild: "Transform failed with 1 error:" then the location): keep one line.
    const oneLine = message.split('\n').map((line) => line.trim()).filter(Boolean).join(' ')
    throw new CliError(`cannot load handler ${file}: ${oneLine.slice(0, 500)}`, exitCodes.error, { cause: error })
  }
  // A CommonJS module (or a .ts file compiled as one) arrives wrapped in `default`.
  const nested = (exported.default ?? {}) as Record<string, unknown>
  const candidate = [exported.default, exported.handler, nested.default, nested.handler].find((value) => typeof value === 'function')
  if (candidate !== undefined) return candidate as Handler
  if (exported.default !== undefined) {
    throw new CliError(`the default export of ${file} is ${describeType(exported.default)}, not a handler function`, exitCodes.error)
  }
  throw new CliError(
    `${file} exports no handler: use \`export default async (payload, ctx) => reply\` or export a function named "handler"`,
    exitCodes.error,
  )
}

/**
 * Logs each request at debug level, without the payload or the reply; with `payloads`, at info level with
 * the payload, the headers and the reply. (A handler's failure is logged by the library itself, at error
 * level.) The library itself never sees a logger that could log payloads: this wrapper is the only place
 * they are logged. Nothing is done per request when nothing would be logged.
 */
function logged(handler: Handler, logger: Logger, payloads: boolean, debug: boolean): Handler {
  if (!payloads && !debug) return handler
  const perRequest = (fields: object, msg: string) => (payloads ? logger.info(fields, msg) : logger.debug(fields, msg))
  return async (payload, context) => {
    const startedAt = performance.now()
    const ids = { id: context.id, attempt: context.attempt }
    perRequest(payloads ? { ...ids, headers: context.headers, payload: clip(payload) } : ids, 'request started')
    try {
      const reply = await handler(payload, context)
      const fields = payloads ? { id: context.id, ms: elapsed(startedAt), reply: clip(reply) } : { id: context.id, ms: elapsed(startedAt) }
      perRequest(fields, endedBefore(context) ?? 'request replied')
      return reply
    } catch (error) {
      const fields = { id: context.id, ms: elapsed(startedAt), ...(payloads ? { payload: clip(payload) } : {}) }
      perRequest(fields, endedBefore(context) ?? 'request failed')
      throw error
    }
  }
}

/** What ended a request before its handler did, when something did: its reply is then discarded. */
function endedBefore(context: HandlerContext): string | undefined {
  if (!context.signal.aborted) return undefined
  const code = (context.signal.reason as { code?: string } | undefined)?.code
  if (code === 'CANCELLED') return 'request cancelled by its caller: the reply is discarded'
  if (code === 'TIMEOUT') return 'request past its deadline: the reply is discarded, the caller saw a timeout'
  return 'request given up by the responder (it closed or lost its session): the reply is discarded'
}

const maxLoggedChars = 2000

/** A payload or reply as logged: as is when short, else its JSON text cut to 2000 characters. */
function clip(value: unknown): unknown {
  let text: string
  try {
    text = typeof value === 'string' ? value : (JSON.stringify(value) ?? String(value))
  } catch {
    return '(not serialisable)'
  }
  if (text.length <= maxLoggedChars) return value
  return `${text.slice(0, maxLoggedChars)}… (${text.length} characters)`
}

interface SignalWatch {
  /** Set once serving: a signal before that exits at once, as there is nothing to drain. */
  ready: boolean
  /** Resolves with the first SIGTERM/SIGINT once ready. */
  signalled: Promise<NodeJS.Signals>
  dispose(): void
}

function watchSignals(logger: Logger): SignalWatch {
  let resolveSignalled!: (signal: NodeJS.Signals) => void
  let received = false
  const watch: SignalWatch = {
    ready: false,
    signalled: new Promise((resolve) => (resolveSignalled = resolve)),
    dispose: () => {
      process.off('SIGINT', onSignal)
      process.off('SIGTERM', onSignal)
    },
  }
  const onSignal = (signal: NodeJS.Signals): void => {
    if (received || !watch.ready) {
      if (received) logger.warn({ signal }, `${signal} again: exiting without waiting for running handlers`)
      process.exit(128 + constants.signals[signal])
    }
    received = true
    resolveSignalled(signal)
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  return watch
}

function oneOf<T extends string>(option: string, value: string, allowed: readonly T[]): T {
  if (!(allowed as readonly string[]).includes(value)) {
    throw new UsageError(`${option} must be one of ${allowed.join(', ')}, got ${JSON.stringify(value)}`)
  }
  return value as T
}

function describeType(value: unknown): string {
  if (value === null) return 'null'
  return Array.isArray(value) ? 'an array' : `a value of type ${typeof value}`
}

function elapsed(startedAt: number): number {
  return Math.round((performance.now() - startedAt) * 10) / 10
}
