/**
 * A chaos responder process: serve() on the chaos channel; every handler start is written to the ledger before
 * anything else. Prints `ready` once serving; drains and exits 0 when its stdin ends; exits 70 on an unhandled
 * rejection or exception (the run counts that as a crash).
 * argv[2]: JSON { options, channel, name, concurrency, sweepIntervalMs, ledgerDir }.
 */
import { createInterface } from 'node:readline'
import { serve, type HandlerContext, type LogFn } from '../../src/index.ts'
import { expectedReply, LedgerWriter, type ChaosPayload, type ChaosReply } from './ledger.ts'

interface ResponderConfig {
  options: { connectionString: string; schema: string; applicationName: string }
  channel: string
  name: string
  concurrency: number
  sweepIntervalMs: number
  ledgerDir: string
}

const config = JSON.parse(process.argv[2] ?? '{}') as ResponderConfig
for (const event of ['unhandledRejection', 'uncaughtException'] as const) {
  process.on(event, (error) => {
    process.stderr.write(`chaos responder ${config.name}: ${event}: ${(error as Error)?.stack ?? String(error)}\n`)
    process.exit(70)
  })
}

const ledger = new LedgerWriter(config.ledgerDir, `exec-${config.name}-${process.pid}.log`)

async function handle(payload: ChaosPayload, ctx: HandlerContext): Promise<ChaosReply> {
  ledger.write('exec', payload.key, ctx.id, ctx.attempt, config.name)
  await new Promise((resolve) => setTimeout(resolve, payload.workMs))
  return expectedReply(payload)
}

// What the library logs at warn and error goes to stderr, which the run shows for processes that misbehave.
const log = (level: string): LogFn =>
  ((obj: object | string, message?: string) => {
    const err = typeof obj === 'object' ? (obj as { err?: { code?: string; message?: string } }).err : undefined
    const text = typeof obj === 'string' ? obj : `${message ?? ''}${err ? ` (${err.code ?? ''} ${err.message ?? ''})` : ''}`
    process.stderr.write(`${new Date().toISOString()} ${level} ${text}\n`)
  }) as LogFn
const logger = { debug: () => {}, info: log('info'), warn: log('warn'), error: log('error') }

const server = await serve({ ...config.options, logger }, config.channel, handle, {
  concurrency: config.concurrency,
  sweepIntervalMs: config.sweepIntervalMs,
  drainTimeoutMs: 5000,
})
process.stdout.write('ready\n')

createInterface({ input: process.stdin }).on('close', () => {
  void server.drain().then(() => {
    ledger.close()
    process.exit(0)
  })
})
