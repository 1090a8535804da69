/**
 * The chaos run, short: `scripts/chaos.ts` with 2000 requests from 2 caller processes to 3 responder processes
 * on DATABASE_URL, while responders are SIGKILLed and replaced and sessions are terminated at random moments
 * (no server restarts here: that needs the private server the script starts when run without a URL). The
 * script checks its ledger (every request ended once, in a right reply or a typed error; no at-most-once
 * request ran twice; no row left past its deadline; no process crashed) and exits 0 only when all held.
 */
import assert from 'node:assert/strict'
import { after, test } from 'node:test'
import type { ChaosOptions } from '../scripts/chaos.ts'
import { killAll, LineProcess, within } from './fixtures/failure-process.ts'
import { databaseUrl } from './helpers.ts'

after(killAll)

test(
  'chaos: 2000 requests while responders are killed and sessions terminated',
  { timeout: 240_000 },
  async () => {
    const options: Partial<ChaosOptions> = { requests: 2000, callers: 2, responders: 3, concurrency: 50, responderConcurrency: 4, workMs: 100 }
    const chaos = new LineProcess('chaos', [
      'scripts/chaos.ts',
      '--database-url', databaseUrl(),
      '--requests', String(options.requests),
      '--callers', String(options.callers),
      '--responders', String(options.responders),
      '--concurrency', String(options.concurrency),
      '--responder-concurrency', String(options.responderConcurrency),
      '--work-ms', String(options.workMs),
      '--duration', '60',
    ])
    const exit = await within(chaos.exited, 200_000, 'the chaos run')
    console.log(chaos.stdoutLines.join('\n'))
    assert.deepEqual(exit, { code: 0, signal: null }, `the chaos run found violations; stderr:\n${chaos.stderr.slice(-3000)}`)
  },
)
