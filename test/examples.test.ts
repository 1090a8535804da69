/**
 * The examples of examples/, run as the README says: the Python caller (when an interpreter can import
 * psycopg2 or psycopg; tests skip otherwise), the psql scripts and the README's SQL example (when psql is
 * installed) against responders of this test file, and the TypeScript responder, caller and HTTP gateway as
 * processes of their own. Tests wait for the processes' output and exit, never on sleeps.
 */
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { before, test, type TestContext } from 'node:test'
import { repoRoot, serverFor, useTestSchema } from './helpers.ts'

const db = useTestSchema('examples')
const timeout = 60_000
const pythonCaller = path.join(repoRoot, 'examples', 'python', 'caller.py')
const psqlCaller = path.join(repoRoot, 'examples', 'psql', 'caller.sql')

/** An interpreter that can import a PostgreSQL driver, or why there is none. */
let python: { command: string; driver: string } | { missing: string }
let psql: boolean

before(async () => {
  python = await findPython()
  psql = (await run('psql', ['--version']).catch(() => undefined))?.code === 0
})

/** The Python interpreter, or undefined after marking the test skipped. */
function pythonFor(t: TestContext): string | undefined {
  if ('missing' in python) {
    t.skip(python.missing)
    return undefined
  }
  t.diagnostic(`${python.command} with ${python.driver}`)
  return python.command
}

function pythonCall(command: string, args: string[]): Promise<RunResult> {
  return run(command, [pythonCaller, '--dsn', db.options.connectionString, '--schema', db.schema, ...args])
}

const upper = (text: string) => text.toUpperCase()

test('python: a text reply, and a JSON one', { timeout }, async (t) => {
  const command = pythonFor(t)
  if (command === undefined) return
  await serverFor(t, db, 'ex_py_upper', upper)
  await serverFor(t, db, 'ex_py_json', (value: unknown) => ({ got: value, ok: true }))

  const text = await pythonCall(command, ['ex_py_upper', 'hello from python'])
  assert.equal(text.code, 0, text.stderr)
  assert.equal(text.stdout, 'HELLO FROM PYTHON\n')

  const json = await pythonCall(command, ['--json', 'ex_py_json', '{"n": [1, 2], "s": "é"}'])
  assert.equal(json.code, 0, json.stderr)
  assert.deepEqual(JSON.parse(json.stdout), { got: { n: [1, 2], s: 'é' }, ok: true })
})

test('python: no responders is told apart (PR001, exit code 3)', { timeout }, async (t) => {
  const command = pythonFor(t)
  if (command === undefined) return
  const result = await pythonCall(command, ['ex_py_nobody', 'hello'])
  assert.equal(result.code, 3, result.stderr)
  assert.equal(result.stdout, '')
  assert.equal(result.stderr, "no responders on channel 'ex_py_nobody'\n")
})

test('python: a handler error arrives with its code (PR003, exit code 5)', { timeout }, async (t) => {
  const command = pythonFor(t)
  if (command === undefined) return
  await serverFor(t, db, 'ex_py_fails', () => {
    throw Object.assign(new Error('no such thing'), { code: 'NOT_FOUND' })
  })
  const result = await pythonCall(command, ['ex_py_fails', 'x'])
  assert.equal(result.code, 5, result.stderr)
  assert.equal(result.stdout, '')
  assert.equal(result.stderr, 'remote error NOT_FOUND: no such thing\n')
})

test('python: a timeout (PR002, exit code 4)', { timeout }, async (t) => {
  const command = pythonFor(t)
  if (command === undefined) return
  await serverFor(t, db, 'ex_py_slow', (_payload: string, ctx) => {
    // Never replies: waits for the deadline to abort it.
    return new Promise((_resolve, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason as Error), { once: true }))
  })
  const result = await pythonCall(command, ['--timeout', '0.5', 'ex_py_slow', 'x'])
  assert.equal(result.code, 4, result.stderr)
  assert.equal(result.stderr, "timed out waiting for 'ex_py_slow'\n")
})

test('psql: the script prints the reply; an error stops it with exit code 3', { timeout }, async (t) => {
  if (!psql) return t.skip('psql is not installed')
  await serverFor(t, db, 'ex_psql_upper', upper)
  const args = (channel: string, payload: string) =>
    [db.options.connectionString, '-X', '-q', '-v', `channel=${channel}`, '-v', `payload=${payload}`, '-v', `schema=${db.schema}`, '-f', psqlCaller]

  const ok = await run('psql', args('ex_psql_upper', "it's psql"))
  assert.equal(ok.code, 0, ok.stderr)
  assert.equal(ok.stdout, "IT'S PSQL\n")

  const withTimeout = await run('psql', [...args('ex_psql_upper', 'with a timeout'), '-v', 'timeout=5 seconds'])
  assert.equal(withTimeout.code, 0, withTimeout.stderr)
  assert.equal(withTimeout.stdout, 'WITH A TIMEOUT\n')

  const failed = await run('psql', args('ex_psql_nobody', 'hello'))
  assert.equal(failed.code, 3)
  assert.equal(failed.stdout, '')
  assert.match(failed.stderr, /ERROR: {2}pgrr: no responders on channel 'ex_psql_nobody'/)
})

test('typescript: responder.ts serves, caller.ts calls it, SIGTERM drains the responder', { timeout }, async (t) => {
  const env = { ...process.env, DATABASE_URL: db.options.connectionString, PGRR_SCHEMA: db.schema }
  const responder = spawn(process.execPath, ['--import', 'tsx', 'examples/typescript/responder.ts', 'ex_ts_upper'], {
    cwd: repoRoot,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const exited = once(responder, 'exit') as Promise<[number | null, NodeJS.Signals | null]>
  t.after(async () => {
    if (responder.exitCode === null && responder.signalCode === null) responder.kill('SIGKILL')
    await exited
  })
  const output = lines(responder)
  assert.equal(await output.next('serving'), 'serving ex_ts_upper')

  const caller = (...args: string[]) => run(process.execPath, ['--import', 'tsx', 'examples/typescript/caller.ts', ...args], { cwd: repoRoot, env })
  const ok = await caller('ex_ts_upper', 'hello from typescript')
  assert.equal(ok.code, 0, ok.stderr)
  assert.equal(ok.stdout, 'HELLO FROM TYPESCRIPT\n')

  const failed = await caller('ex_ts_upper', '')
  assert.equal(failed.code, 5, failed.stderr)
  assert.match(failed.stderr, /^remote error EMPTY: request \d+: nothing to upper-case\n$/)

  // The other languages reach the same responder.
  if (!('missing' in python)) {
    const fromPython = await pythonCall(python.command, ['ex_ts_upper', 'python to typescript'])
    assert.equal(fromPython.code, 0, fromPython.stderr)
    assert.equal(fromPython.stdout, 'PYTHON TO TYPESCRIPT\n')
  }

  responder.kill('SIGTERM')
  assert.equal(await output.next('SIGTERM'), 'SIGTERM: draining')
  const [code, signal] = await exited
  assert.deepEqual({ code, signal }, { code: 0, signal: null }, output.stderr())

  const gone = await caller('ex_ts_upper', 'anyone?')
  assert.equal(gone.code, 3, gone.stderr)
  assert.match(gone.stderr, /^NO_RESPONDERS: /)
})

test('psql: the README\'s SQL example prints what its comments say', { timeout }, async (t) => {
  if (!psql) return t.skip('psql is not installed')
  await serverFor(t, db, 'uppercase', (value: unknown) => (typeof value === 'string' ? value.toUpperCase() : value))
  const snippet = await readmeSnippet('sql-example', 'sql')
  const dir = await mkdtemp(path.join(os.tmpdir(), 'pgrr-readme-sql-'))
  t.after(() => rm(dir, { recursive: true, force: true }))
  const file = path.join(dir, 'example.sql')
  await writeFile(file, snippet)
  // The snippet calls request() unqualified, as after `pgrr migrate` into public: here the test schema comes first.
  const env = { ...process.env, PGOPTIONS: `-c search_path=${db.schema}` }
  const result = await run('psql', [db.options.connectionString, '-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-f', file], { env })
  assert.equal(result.code, 0, result.stderr)
  const promised = [...snippet.matchAll(/-- (.+)$/gm)].map((match) => match[1]!.trim())
  assert.deepEqual(promised, ['HELLO FROM SQL', '"JSON TOO"'])
  assert.equal(result.stdout, `${promised.join('\n')}\n`)
})

test('plpgsql: a procedure waits for its reply; a trigger sends with its row, a later statement awaits it', { timeout }, async (t) => {
  if (!psql) return t.skip('psql is not installed')
  await serverFor(t, db, 'uppercase', upper)
  const env = { ...process.env, PGOPTIONS: `-c search_path=${db.schema}` }
  const args = [db.options.connectionString, '-X', '-q', '-f', path.join(repoRoot, 'examples', 'psql', 'from-plpgsql.sql')]
  const first = await run('psql', args, { env })
  assert.equal(first.code, 0, first.stderr)
  assert.equal(first.stdout, 'FROM A PROCEDURE\nfrom a trigger|FROM A TRIGGER\n')
  assert.equal(first.stderr, '')
  // It can run again (create or replace, if not exists), quietly.
  const again = await run('psql', args, { env })
  assert.equal(again.code, 0, again.stderr)
  assert.equal(again.stderr, '')
  // Each run stored its reply in the row its trigger sent the request for.
  const rows = await db.sql.unsafe(`select body, summary from ${db.quoted}.document order by id`)
  assert.deepEqual(rows.map((row) => [row.body, row.summary]), [['from a trigger', 'FROM A TRIGGER'], ['from a trigger', 'FROM A TRIGGER']])
})

test('typescript: the HTTP gateway maps outcomes to statuses and stops on SIGTERM', { timeout }, async (t) => {
  const env = { ...process.env, DATABASE_URL: db.options.connectionString, PGRR_SCHEMA: db.schema, PORT: '0' }
  const gateway = spawn(process.execPath, ['--import', 'tsx', 'examples/typescript/http-gateway.ts'], { cwd: repoRoot, env, stdio: ['ignore', 'pipe', 'pipe'] })
  const exited = once(gateway, 'exit') as Promise<[number | null, NodeJS.Signals | null]>
  t.after(async () => {
    if (gateway.exitCode === null && gateway.signalCode === null) gateway.kill('SIGKILL')
    await exited
  })
  const output = lines(gateway)
  const base = (await output.next('listening on ')).slice('listening on '.length)
  const get = async (pathAndQuery: string) => {
    const response = await fetch(`${base}${pathAndQuery}`)
    return { status: response.status, body: await response.text() }
  }

  assert.deepEqual(await get('/uppercase?text=hello'), { status: 503, body: 'NO_RESPONDERS\n' })
  await serverFor(t, db, 'uppercase', (text: string) => {
    if (text === 'boom') throw Object.assign(new Error('it broke'), { code: 'BOOM' })
    return text.toUpperCase()
  })
  assert.deepEqual(await get('/uppercase?text=hello%20http'), { status: 200, body: 'HELLO HTTP\n' })
  assert.deepEqual(await get('/uppercase?text=boom'), { status: 502, body: 'REMOTE_ERROR BOOM\n' })
  assert.equal((await get('/elsewhere')).status, 404)

  gateway.kill('SIGTERM')
  assert.equal(await output.next('SIGTERM'), 'SIGTERM: closing')
  const [code, signal] = await exited
  assert.deepEqual({ code, signal }, { code: 0, signal: null }, output.stderr())
})

/** The code block of README.md between `<!-- name:start … -->` and `<!-- name:end -->`, without its fences. */
async function readmeSnippet(name: string, language: string): Promise<string> {
  const readme = await readFile(path.join(repoRoot, 'README.md'), 'utf8')
  const marked = new RegExp(`<!-- ${name}:start[^>]*-->\\n\`\`\`${language}\\n([\\s\\S]*?)\`\`\`\\n<!-- ${name}:end -->`).exec(readme)
  assert.ok(marked?.[1], `README.md has no ${language} block marked ${name}`)
  return marked[1]
}

interface RunResult {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
}

/** Runs a command to its end (SIGKILL after 30 s) and collects its output. Rejects when it cannot start. */
function run(command: string, args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { ...options, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (text: string) => (stdout += text))
    child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text))
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000)
    child.once('error', (error) => {
      clearTimeout(timer)
      reject(error)
    })
    child.once('close', (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, stdout, stderr })
    })
  })
}

/** The stdout lines of a running process: `next(prefix)` resolves with the first line, not yet taken, that starts with it. */
function lines(child: ChildProcess): { next(prefix: string): Promise<string>; stderr(): string } {
  const seen: string[] = []
  let stderr = ''
  let buffer = ''
  const waiters = new Set<() => void>()
  const wake = () => {
    for (const waiter of [...waiters]) waiter()
  }
  child.stderr?.setEncoding('utf8').on('data', (text: string) => (stderr += text))
  child.stdout?.setEncoding('utf8').on('data', (text: string) => {
    buffer += text
    const parts = buffer.split('\n')
    buffer = parts.pop()!
    seen.push(...parts)
    wake()
  })
  child.once('exit', wake)
  return {
    stderr: () => stderr,
    next(prefix) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const index = seen.findIndex((line) => line.startsWith(prefix))
          if (index >= 0) {
            waiters.delete(check)
            resolve(seen.splice(index, 1)[0]!)
          } else if (child.exitCode !== null || child.signalCode !== null) {
            waiters.delete(check)
            reject(new Error(`the process exited (${child.exitCode ?? child.signalCode}) before printing "${prefix}…"; stderr:\n${stderr}`))
          }
        }
        waiters.add(check)
        check()
      })
    },
  }
}

/**
 * PYTHON when set (the only one tried then), else the first of python3, /usr/bin/python3 and python that
 * imports psycopg2 or psycopg (a pyenv python3 first on PATH may lack the driver the system's python3 has).
 */
async function findPython(): Promise<{ command: string; driver: string } | { missing: string }> {
  const candidates = process.env.PYTHON ? [process.env.PYTHON] : ['python3', '/usr/bin/python3', 'python']
  const probe = [
    'import importlib.util, sys',
    'found = [m for m in ("psycopg2", "psycopg") if importlib.util.find_spec(m)]',
    'print(found[0] if found else "")',
  ].join('\n')
  for (const command of candidates) {
    const result = await run(command, ['-c', probe]).catch(() => undefined)
    const driver = result?.code === 0 ? result.stdout.trim() : ''
    if (driver !== '') return { command, driver }
  }
  return { missing: `no Python that can import psycopg2 or psycopg (tried ${candidates.join(', ')}; apt-get install python3-psycopg2, or set PYTHON)` }
}
