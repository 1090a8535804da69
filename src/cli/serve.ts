/** `pgrr serve`: runs a handler module as a responder until SIGTERM/SIGINT, then drains. */
import { existsSync } from 'node:fs'
import { constants } from 'node:os'
import path from 'node:path'
import { serve } from '../index.ts'
import type { Logger } from '../logger.ts'
import type { Handler } from '../server.ts'
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
.ts (TypeScript is loaded with tsx). Several processes may serve one channel: each request goes to one.

Logs go to stderr; payloads are never logged. The first SIGTERM or SIGINT drains (stops taking requests,
lets running handlers finish, up to --drain-timeout) and exits 0; a second one exits at once.

Options:
  --handler <file>       module exporting the handler (required)
  --concurrency <n>      most handlers running at once (default: 10)
  --drain-timeout <ms>   on stop, how long to wait for running handlers before aborting them (default: 30000)
  --log-format <f>       text (default) or json (one JSON object per line)
  --log-level <l>        debug, info (default), warn or error; debug logs every request
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
    const connection = connectionFrom(values, process.env, `pgrr serve ${channel}`.slice(0, 63))

    const handler = await loadHandler(values.handler)
    const logger = createLogger({ format: logFormat, level: logLevel })
    const stop = watchSignals(logger)
    // Nothing else may keep the process alive once connections are up; serve must never end silently.
    const keepAlive = setInterval(() => {}, 1 << 30)
    try {
      const server = await serve({ ...connection, logger, poolSize: 1 }, channel, logged(handler, logger), {
        concurrency,
        drainTimeoutMs,
      })
      stop.ready = true
      logger.info(
        { channel, schema: connection.schema, concurrency, responderId: server.responderId, pid: process.pid },
        `serving ${channel} (concurrency ${concurrency}, responder id ${server.responderId ?? '?'})`,
      )
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
    }
  },
}

/** Loads the handler module and picks its handler function, with messages that say what to fix. */
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

/** Logs each request at debug level and each failure at warn; never the payload or the reply. */
function logged(handler: Handler, logger: Logger): Handler {
  return async (payload, context) => {
    const startedAt = performance.now()
    logger.debug({ id: context.id, attempt: context.attempt }, 'request started')
    try {
      const reply = await handler(payload, context)
      logger.debug({ id: context.id, ms: elapsed(startedAt) }, 'request replied')
      return reply
    } catch (error) {
      logger.warn({ id: context.id, ms: elapsed(startedAt), err: error }, 'handler failed')
      throw error
    }
  }
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
