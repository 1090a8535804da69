/**
 * A chaos caller process: sends `count` requests, `concurrency` at a time, and writes each one to the ledger
 * before it is sent and again when it settles (reply, wrong reply, or the error's code). A share of them is
 * at-least-once (maxAttempts 3); the rest use the default, at-most-once. Prints `finished` and exits 0 when all
 * settled and the client closed; exits 70 on an unhandled rejection or exception.
 * argv[2]: JSON { options, channel, name, count, concurrency, timeoutMs, retryEvery, maxWorkMs, ledgerDir }.
 */
import { createInterface } from 'node:readline'
import { connect, type Client } from '../../src/index.ts'
import { expectedReply, LedgerWriter, type ChaosPayload, type ChaosReply } from './ledger.ts'

interface CallerConfig {
  options: { connectionString: string; schema: string; applicationName: string }
  channel: string
  name: string
  count: number
  concurrency: number
  timeoutMs: number
  /** Every retryEvery-th request is at-least-once. */
  retryEvery: number
  maxWorkMs: number
  ledgerDir: string
}

const config = JSON.parse(process.argv[2] ?? '{}') as CallerConfig
for (const event of ['unhandledRejection', 'uncaughtException'] as const) {
  process.on(event, (error) => {
    process.stderr.write(`chaos caller ${config.name}: ${event}: ${(error as Error)?.stack ?? String(error)}\n`)
    process.exit(70)
  })
}

// The run never closes our stdin: its end means the run itself died, and nobody will read our ledger.
createInterface({ input: process.stdin }).on('close', () => process.exit(0))

const ledger = new LedgerWriter(config.ledgerDir, `calls-${config.name}-${process.pid}.log`)
// The database may be restarting right now: keep trying to connect (each attempt is bounded by the library).
let client: Client | undefined
for (let attempt = 1; ; attempt++) {
  try {
    client = await connect({ ...config.options, poolSize: 2 })
    break
  } catch (error) {
    if (attempt >= 30) throw error
    await new Promise((resolve) => setTimeout(resolve, 500))
  }
}

let next = 0
async function worker(): Promise<void> {
  while (next < config.count) {
    const n = next++
    const payload: ChaosPayload = { key: `${config.name}-${n}`, n, workMs: Math.floor(Math.random() * config.maxWorkMs) }
    const retry = n % config.retryEvery === 0
    ledger.write('sent', payload.key, retry ? 'retry' : 'once')
    try {
      const reply = await client!.request<ChaosReply>(config.channel, payload, {
        timeoutMs: config.timeoutMs,
        ...(retry && { maxAttempts: 3 }),
      })
      const expected = expectedReply(payload)
      ledger.write('done', payload.key, reply.key === expected.key && reply.sum === expected.sum ? 'reply' : 'wrong')
    } catch (error) {
      const code = (error as { code?: unknown }).code
      ledger.write('done', payload.key, typeof code === 'string' ? code : 'untyped')
      // As a real caller would: back off a little when nobody can answer, instead of burning through the
      // remaining requests in a few milliseconds each while responders or the server come back.
      if (code === 'NO_RESPONDERS' || code === 'CONNECTION') await new Promise((resolve) => setTimeout(resolve, 50 + Math.random() * 50))
    }
  }
}

await Promise.all(Array.from({ length: config.concurrency }, worker))
await client!.close()
ledger.close()
process.stdout.write('finished\n')
process.exit(0)
