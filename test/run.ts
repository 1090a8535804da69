// `npm test [-- filter… | --node-test-flag…]`: runs test/**/*.test.ts with Node's test runner, one file at a
// time (the tests load the database and the machine may have two cores), reporting one line per file
// (test/reporter.mjs). Uses DATABASE_URL when it is set,
// otherwise a throwaway embedded PostgreSQL that is stopped at the end, on SIGINT/SIGTERM and on errors.
// Arguments starting with "-" go to `node --test` (e.g. --test-name-pattern=…); the others keep only the files
// whose path contains one of them.
import { spawn, type ChildProcess } from 'node:child_process'
import { readdir } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { startEmbeddedPostgres, type EmbeddedPostgres } from '../src/embedded-postgres.ts'

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const args = process.argv.slice(2)
const nodeFlags = args.filter((arg) => arg.startsWith('-'))
const filters = args.filter((arg) => !arg.startsWith('-'))
// One line per file (test/reporter.mjs), unless a reporter is asked for: `npm test -- --test-reporter=spec`.
const reporter = nodeFlags.some((flag) => flag.startsWith('--test-reporter')) ? [] : ['--test-reporter=./test/reporter.mjs']

const files = (await readdir(path.join(repoRoot, 'test'), { recursive: true }))
  .map((file) => path.join('test', file).split(path.sep).join('/'))
  .filter((file) => file.endsWith('.test.ts') && !file.includes('/node_modules/'))
  .filter((file) => filters.length === 0 || filters.some((filter) => file.includes(filter)))
  .sort()
if (files.length === 0) {
  console.error(`no test file matches ${filters.map((f) => JSON.stringify(f)).join(' or ')}`)
  process.exit(1)
}

// Installed before anything starts, so that a signal during startup also ends in stop() rather than in a dead
// process (the embedded server would still go away with this process, but without an orderly shutdown).
let runner: ChildProcess | undefined
let signalsReceived = 0
let firstSignal: NodeJS.Signals | undefined
const onSignal = (signal: NodeJS.Signals) => {
  signalsReceived++
  firstSignal ??= signal
  // A Ctrl-C reaches the runner too (same process group); a SIGTERM sent to this script alone is passed on.
  // The runner is left to finish, so that the server is stopped only after it; a second signal kills it.
  if (runner && runner.exitCode === null && runner.signalCode === null) {
    runner.kill(signalsReceived > 1 ? 'SIGKILL' : signal)
  } else if (signalsReceived > 1) {
    // Impatient during startup: leave at once; the embedded server goes away by itself when this process exits.
    process.exit(128 + os.constants.signals[signal])
  }
}
process.on('SIGINT', onSignal)
process.on('SIGTERM', onSignal)

let embedded: EmbeddedPostgres | undefined
let exitCode = 1
try {
  if (process.env.DATABASE_URL) {
    console.error(`tests use DATABASE_URL ${withoutPassword(process.env.DATABASE_URL)}`)
  } else {
    const startedAt = performance.now()
    embedded = await startEmbeddedPostgres()
    const ms = Math.round(performance.now() - startedAt)
    console.error(`tests use an embedded PostgreSQL on port ${embedded.port} (started in ${ms} ms; set DATABASE_URL to use another server)`)
  }
  if (signalsReceived === 0) exitCode = await runTests(embedded?.connectionString)
} catch (err) {
  console.error(err)
} finally {
  await embedded?.stop()
}
// An interrupted run fails the way the shell expects (130 for Ctrl-C), whatever the runner made of it.
process.exit(firstSignal ? 128 + os.constants.signals[firstSignal] : exitCode)

/** Runs `node --test` on the files and resolves with the exit code this script should use. */
function runTests(databaseUrl: string | undefined): Promise<number> {
  runner = spawn(
    process.execPath,
    // --disable-warning: the test files' processes would print a warning for each experimental Node API a test
    // uses on purpose (mock timers).
    ['--import', 'tsx', '--disable-warning=ExperimentalWarning', '--test', ...reporter, '--test-concurrency=1', ...nodeFlags, ...files],
    { cwd: repoRoot, stdio: 'inherit', env: databaseUrl ? { ...process.env, DATABASE_URL: databaseUrl } : process.env },
  )
  const child = runner
  return new Promise((resolve) => {
    child.once('error', (err) => {
      console.error(err)
      resolve(1)
    })
    child.once('exit', (code, signal) => {
      resolve(code ?? 128 + (signal ? os.constants.signals[signal] : 0))
    })
  })
}

function withoutPassword(url: string): string {
  try {
    const parsed = new URL(url)
    if (parsed.password) parsed.password = '***'
    return parsed.toString()
  } catch {
    return '(unparsable URL)'
  }
}
