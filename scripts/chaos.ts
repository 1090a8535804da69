/**
 * Chaos run: thousands of requests from several caller processes to several responder processes while
 * responders are SIGKILLed (and replaced), sessions are terminated with pg_terminate_backend, and (on a private
 * server only) the server is restarted or crashed, all at random moments. Then the ledger is checked:
 *   - every request ended exactly once, in a correct reply or a typed error (which codes, how many);
 *   - no at-most-once request was executed twice (at-least-once ones, maxAttempts 3, may run again);
 *   - no row is left past its deadline once the sweeper ran;
 *   - no process crashed (callers exit 0, responders exit 0 when drained; only the ones we killed did not).
 * Exit code 0 when all hold, 1 otherwise.
 *
 *   node --import tsx scripts/chaos.ts [--requests n] [--duration s] [--callers n] [--responders n]
 *        [--concurrency n] [--responder-concurrency n] [--work-ms n] [--timeout ms] [--database-url url]
 *        [--no-restarts] [--keep]
 *
 * Without --database-url it starts a private embedded PostgreSQL and also restarts and crashes it. With one it
 * works in a schema of its own there and only kills processes and terminates its own sessions (application
 * names `pgrr-chaos-<run>-…`), never touching other users of that server.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'
import postgres from 'postgres'
import { migrate } from '../src/index.ts'
import { readLedger, type LedgerSummary } from './chaos/ledger.ts'
import { PrivatePostgres } from './chaos/private-postgres.ts'

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')

export interface ChaosOptions {
  requests: number
  /** Longest the chaos phase lasts, in seconds (the run ends earlier when every request settled). */
  durationS: number
  callers: number
  responders: number
  /** Requests in flight per caller. */
  concurrency: number
  /** Handlers at once per responder. */
  responderConcurrency: number
  /** A handler works a random time up to this, in ms. */
  workMs: number
  timeoutMs: number
  /** An existing server (no restarts); otherwise a private embedded one. */
  databaseUrl?: string
  restarts: boolean
  keep: boolean
}

export interface ChaosResult {
  ledger: LedgerSummary
  actions: Record<string, number>
  leftoverRows: number
  rowsPastDeadline: number
  /** pg_total_relation_size of the request table (with its indexes) at the start and at the end, in bytes. */
  tableBytes: { before: number; after: number }
  crashes: string[]
  violations: string[]
  durationMs: number
}

/** Error codes a request may end with under this chaos; anything else is a violation. */
const allowedCodes = new Set(['CONNECTION', 'TIMEOUT', 'RESPONDER_LOST', 'NO_RESPONDERS'])

interface Proc {
  name: string
  child: ChildProcess
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  killedOnPurpose: boolean
  stderr: string
}

function start(name: string, script: string, config: unknown): Proc {
  const child = spawn(process.execPath, ['--import', 'tsx', script, JSON.stringify(config)], {
    cwd: repoRoot,
    stdio: ['pipe', 'pipe', 'pipe'],
  })
  const proc: Proc = {
    name,
    child,
    killedOnPurpose: false,
    stderr: '',
    exited: new Promise((resolve) => child.once('close', (code, signal) => resolve({ code, signal }))),
  }
  child.stdin?.on('error', () => {})
  child.stderr?.setEncoding('utf8').on('data', (text: string) => {
    proc.stderr = (proc.stderr + text).slice(-4000)
  })
  return proc
}

function line(proc: Proc, text: string, timeoutMs = 60_000): Promise<void> {
  return new Promise((resolve, reject) => {
    const reader = createInterface({ input: proc.child.stdout! })
    const timer = setTimeout(() => reject(new Error(`${proc.name}: no "${text}" within ${timeoutMs} ms; stderr: ${proc.stderr}`)), timeoutMs)
    reader.on('line', (got) => {
      if (got !== text) return
      clearTimeout(timer)
      resolve()
    })
    void proc.exited.then((exit) => {
      clearTimeout(timer)
      reject(new Error(`${proc.name} exited (${exit.code ?? exit.signal}) before "${text}"; stderr: ${proc.stderr}`))
    })
  })
}

const pick = <T>(items: T[]): T => items[Math.floor(Math.random() * items.length)]!
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

export async function runChaos(options: ChaosOptions, log: (text: string) => void = console.log): Promise<ChaosResult> {
  const startedAt = performance.now()
  const run = randomBytes(3).toString('hex')
  const schema = `pgrr_chaos_${run}`
  const channel = 'chaos'
  const ledgerDir = mkdtempSync(path.join(os.tmpdir(), 'pgrr-chaos-'))
  const privateServer = options.databaseUrl === undefined ? await PrivatePostgres.start() : undefined
  const connectionString = options.databaseUrl ?? privateServer!.connectionString
  const restarts = options.restarts && privateServer !== undefined
  const appPrefix = `pgrr-chaos-${run}`
  log(`chaos ${run}: ${options.requests} requests, ${options.callers} callers x ${options.concurrency} in flight, ${options.responders} responders; ` +
    `${privateServer ? `private server on port ${privateServer.port}${restarts ? ' (restarts and crashes)' : ''}` : 'shared server (no restarts)'}; ledger ${ledgerDir}`)
  await migrate({ connectionString, schema })
  const admin = postgres(connectionString, { max: 1, onnotice: () => {}, connection: { application_name: `${appPrefix}-admin` } })
  const tableBytes = async () => Number((await admin.unsafe(`select pg_total_relation_size('"${schema}".pgrr_request')::bigint as n`))[0]?.n)
  const bytesBefore = await tableBytes()

  const responders: Proc[] = []
  const finished: Proc[] = []
  let responderCount = 0
  const startResponder = async (): Promise<Proc> => {
    const name = `r${responderCount++}`
    const proc = start(name, 'scripts/chaos/responder.ts', {
      options: { connectionString, schema, applicationName: `${appPrefix}-${name}` },
      channel,
      name,
      concurrency: options.responderConcurrency,
      sweepIntervalMs: 500,
      ledgerDir,
    })
    responders.push(proc)
    await line(proc, 'ready')
    return proc
  }
  for (let i = 0; i < options.responders; i++) await startResponder()

  const perCaller = Math.ceil(options.requests / options.callers)
  const callers = Array.from({ length: options.callers }, (_, i) =>
    start(`c${i}`, 'scripts/chaos/caller.ts', {
      options: { connectionString, schema, applicationName: `${appPrefix}-c${i}` },
      channel,
      name: `c${i}`,
      count: Math.min(perCaller, options.requests - i * perCaller),
      concurrency: options.concurrency,
      timeoutMs: options.timeoutMs,
      retryEvery: 5,
      maxWorkMs: options.workMs,
      ledgerDir,
    }),
  )
  let callersDone = false
  const callersExited = Promise.all(callers.map((c) => c.exited)).then(() => (callersDone = true))

  // The chaos: one action every 100-600 ms until the callers are done or the duration is over.
  const actions: Record<string, number> = {}
  const act = (name: string) => (actions[name] = (actions[name] ?? 0) + 1)
  const chaosUntil = Date.now() + options.durationS * 1000
  while (!callersDone && Date.now() < chaosUntil) {
    await Promise.race([sleep(100 + Math.random() * 500), callersExited])
    if (callersDone) break
    const roll = Math.random()
    try {
      if (roll < 0.35) {
        const live = responders.filter((r) => r.child.exitCode === null && r.child.signalCode === null)
        if (live.length > 0) {
          const victim = pick(live)
          victim.killedOnPurpose = true
          victim.child.kill('SIGKILL')
          await victim.exited
          act('SIGKILL responder')
          await startResponder()
        }
      } else if (roll < 0.6) {
        const target = pick([...callers, ...responders].filter((p) => p.child.exitCode === null && p.child.signalCode === null))
        if (target !== undefined) {
          await admin`select pg_terminate_backend(pid) from pg_stat_activity where application_name = ${`${appPrefix}-${target.name}`}`
          act(`terminate sessions of a ${target.name.startsWith('c') ? 'caller' : 'responder'}`)
        }
      } else if (roll < 0.7) {
        await admin`select pg_terminate_backend(pid) from pg_stat_activity where application_name like ${`${appPrefix}-%`} and pid <> pg_backend_pid()`
        act('terminate every session')
      } else if (restarts && roll < 0.75) {
        await privateServer!.stopServer('fast')
        await sleep(Math.random() * 1000)
        await privateServer!.startServer()
        act('restart the server')
      } else if (restarts && roll < 0.78) {
        await privateServer!.stopServer(Math.random() < 0.5 ? 'kill' : 'immediate')
        await privateServer!.startServer()
        act('crash the server')
      }
    } catch (error) {
      log(`chaos action failed (ignored): ${String(error)}`)
    }
  }
  log(`chaos phase over after ${Math.round((performance.now() - startedAt) / 1000)} s: ${JSON.stringify(actions)}`)

  const violations: string[] = []
  // Every request has a finite timeout: the callers must finish soon after the last one was sent.
  const callerGrace = options.timeoutMs * 3 + 30_000
  const callersFinished = await Promise.race([callersExited.then(() => true), sleep(callerGrace).then(() => false)])
  if (!callersFinished) violations.push(`callers still running ${callerGrace} ms after the chaos ended`)

  // The sweeper deletes rows 5 s past their deadline; responders sweep every 500 ms.
  const rowsPastDeadline = async () => {
    const [row] = await admin.unsafe(
      `select count(*)::int as past, (select count(*)::int from "${schema}".pgrr_request) as total
         from "${schema}".pgrr_request where deadline < clock_timestamp() - interval '7 seconds'`,
    )
    return { past: Number(row?.past), total: Number(row?.total) }
  }
  let rows = await rowsPastDeadline()
  const sweepUntil = Date.now() + options.timeoutMs + 15_000
  while ((rows.total > 0 || rows.past > 0) && Date.now() < sweepUntil) {
    await sleep(250)
    rows = await rowsPastDeadline()
  }
  if (rows.past > 0) violations.push(`${rows.past} rows left more than 7 s past their deadline`)

  // Graceful stop: responders drain and exit 0.
  for (const r of responders) r.child.stdin?.end()
  const crashes: string[] = []
  for (const proc of [...callers, ...responders]) {
    const exit = await Promise.race([proc.exited, sleep(20_000).then(() => undefined)])
    if (exit === undefined) {
      crashes.push(`${proc.name} did not exit within 20 s (killed); its last log lines: ${proc.stderr.trim().split('\n').slice(-5).join(' | ')}`)
      proc.child.kill('SIGKILL')
      await proc.exited
    } else if (!proc.killedOnPurpose && (exit.code !== 0 || exit.signal !== null)) {
      crashes.push(`${proc.name} exited ${exit.code ?? exit.signal}: ${proc.stderr.trim().split('\n').slice(-3).join(' | ')}`)
    }
    finished.push(proc)
  }
  violations.push(...crashes)

  const ledger = readLedger(ledgerDir)
  if (ledger.sent !== options.requests) violations.push(`${ledger.sent} requests in the ledger, ${options.requests} planned`)
  if (ledger.neverEnded > 0) violations.push(`${ledger.neverEnded} requests never ended`)
  if (ledger.endedTwice > 0) violations.push(`${ledger.endedTwice} requests ended twice`)
  if (ledger.wrong > 0) violations.push(`${ledger.wrong} wrong replies`)
  if (ledger.duplicateExecutions > 0) violations.push(`${ledger.duplicateExecutions} at-most-once requests executed twice`)
  if (ledger.repliedWithoutExecution > 0) violations.push(`${ledger.repliedWithoutExecution} replies without an execution`)
  for (const [code, count] of Object.entries(ledger.errors)) {
    if (!allowedCodes.has(code)) violations.push(`${count} requests ended with ${code}`)
  }

  const bytesAfter = await tableBytes()
  await admin.unsafe(`drop schema "${schema}" cascade`).catch(() => undefined)
  await admin.end({ timeout: 1 })
  await privateServer?.stop()
  if (!options.keep) rmSync(ledgerDir, { recursive: true, force: true })
  return {
    ledger,
    actions,
    leftoverRows: rows.total,
    rowsPastDeadline: rows.past,
    tableBytes: { before: bytesBefore, after: bytesAfter },
    crashes,
    violations,
    durationMs: Math.round(performance.now() - startedAt),
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      requests: { type: 'string', default: '20000' },
      duration: { type: 'string', default: '120' },
      callers: { type: 'string', default: '3' },
      responders: { type: 'string', default: '4' },
      concurrency: { type: 'string', default: '100' },
      'responder-concurrency': { type: 'string', default: '16' },
      'work-ms': { type: 'string', default: '20' },
      timeout: { type: 'string', default: '5000' },
      'database-url': { type: 'string' },
      'no-restarts': { type: 'boolean', default: false },
      keep: { type: 'boolean', default: false },
    },
  })
  const result = await runChaos({
    requests: Number(values.requests),
    durationS: Number(values.duration),
    callers: Number(values.callers),
    responders: Number(values.responders),
    concurrency: Number(values.concurrency),
    responderConcurrency: Number(values['responder-concurrency']),
    workMs: Number(values['work-ms']),
    timeoutMs: Number(values.timeout),
    ...(values['database-url'] !== undefined && { databaseUrl: values['database-url'] }),
    restarts: !values['no-restarts'],
    keep: values.keep,
  })
  const { ledger } = result
  const codes = Object.entries(ledger.errors).map(([code, count]) => `${code} ${count}`).join(', ') || 'none'
  console.log(
    [
      `sent ${ledger.sent}, replied ${ledger.replied}, errors: ${codes}`,
      `wrong replies ${ledger.wrong}, ended twice ${ledger.endedTwice}, never ended ${ledger.neverEnded}`,
      `executions ${ledger.executions}, at-most-once executed twice ${ledger.duplicateExecutions}, at-least-once retried ${ledger.retried}`,
      `leftover rows ${result.leftoverRows} (past their deadline: ${result.rowsPastDeadline}); ` +
        `request table with indexes: ${result.tableBytes.before} bytes before, ${result.tableBytes.after} after`,
      `chaos: ${JSON.stringify(result.actions)}`,
      `crashes: ${result.crashes.length === 0 ? 'none' : result.crashes.join('; ')}`,
      `duration ${result.durationMs} ms`,
      result.violations.length === 0 ? 'OK: every promise held' : `VIOLATIONS:\n  ${result.violations.join('\n  ')}`,
    ].join('\n'),
  )
  process.exit(result.violations.length === 0 ? 0 : 1)
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) await main()
