// A malicious or buggy handler cannot wedge its responder: whatever it throws, returns or never does, the
// caller gets a typed outcome (RemoteError with code INVALID_REPLY or HANDLER_ERROR, or TimeoutError when
// it never settles), the responder process neither crashes nor reports an uncaught error, and it keeps
// serving: an ordinary request right after each case succeeds. The handler runs in a child process
// (test/fixtures/security-handler.ts), so a crash there cannot take this process down.
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import path from 'node:path'
import { createInterface } from 'node:readline'
import { after, test } from 'node:test'
import { configureChannel } from '../src/channel-config.ts'
import { connect, PgrrError, RemoteError, TimeoutError, type Client } from '../src/index.ts'
import { repoRoot, useTestSchema } from './helpers.ts'

const db = useTestSchema('sec_handlers')
const channel = 'hostile.handler'
/** The channel's limit: replies and error messages above it are refused by the database (INVALID_REPLY). */
const maxPayloadBytes = 1024 * 1024

interface Child {
  process: ChildProcess
  lines: string[]
  exited: Promise<unknown>
}

let child: Child | undefined
let client: Client | undefined

async function startChild(): Promise<Child> {
  const fixture = path.join(repoRoot, 'test', 'fixtures', 'security-handler.ts')
  const proc = spawn(process.execPath, ['--import', 'tsx', fixture, JSON.stringify({ options: db.options, channel })], {
    cwd: repoRoot,
    stdio: ['pipe', 'pipe', 'pipe'],
  })
  const lines: string[] = []
  let stderr = ''
  proc.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk))
  const exited = once(proc, 'exit')
  const ready = new Promise<void>((resolve, reject) => {
    createInterface({ input: proc.stdout! }).on('line', (line) => {
      lines.push(line)
      if (line.startsWith('ready ')) resolve()
    })
    void exited.then(() => reject(new Error(`the hostile responder exited before it was ready; stderr:\n${stderr}`)))
  })
  const timer = setTimeout(() => proc.kill('SIGKILL'), 30_000)
  try {
    await ready
  } finally {
    clearTimeout(timer)
  }
  return { process: proc, lines, exited }
}

// Started by the first test: the schema's own before() hook must have run (hooks of the file's root may run
// in any order relative to each other).
let started: Promise<void> | undefined
function setUp(): Promise<void> {
  started ??= (async () => {
    await configureChannel(db.options, channel, { maxPayloadBytes })
    child = await startChild()
    client = await connect({ ...db.options, poolSize: 2 })
  })()
  return started
}

/**
 * Each case starts with a responder that serves: one that an earlier case broke (a known bug) is replaced,
 * so that a case's result does not depend on the cases before it.
 */
async function ensureServing(): Promise<void> {
  await setUp()
  const serving = await client!.request(channel, 'ok', { timeoutMs: 3000 }).then(
    (reply) => reply === 'fine',
    () => false,
  )
  if (serving && child!.process.exitCode === null) return
  await stopChild()
  child = await startChild()
}

async function stopChild(): Promise<void> {
  if (child === undefined || child.process.exitCode !== null || child.process.signalCode !== null) return
  child.process.kill('SIGKILL')
  await child.exited
}

after(async () => {
  await client?.close()
  await stopChild()
})

type Expected = { remote: readonly string[] } | { timeout: true }

const invalidReply = { remote: ['INVALID_REPLY'] } as const
const handlerError = { remote: ['HANDLER_ERROR'] } as const

const cases: [behaviour: string, expected: Expected][] = [
  ['throw-null', handlerError],
  ['throw-undefined', handlerError],
  ['throw-number', handlerError],
  ['throw-symbol', handlerError],
  ['throw-bigint', handlerError],
  ['throw-object-throwing-tostring', handlerError],
  ['throw-throwing-code-getter', handlerError],
  ['throw-throwing-message-getter', handlerError],
  ['throw-proxy', handlerError],
  ['throw-huge-message', { remote: ['E_HUGE'] }],
  ['throw-code-object', handlerError],
  ['throw-code-nul', { remote: ['E\uFFFD\uFFFD'] }],
  ['reject-null', handlerError],
  ['reject-proxy', handlerError],
  ['reject-throwing-code-getter', handlerError],
  ['return-undefined', invalidReply],
  ['return-bigint', invalidReply],
  ['return-cycle', invalidReply],
  ['return-function', invalidReply],
  ['return-symbol', invalidReply],
  ['return-throwing-tojson', invalidReply],
  ['return-proxy', { remote: ['HANDLER_ERROR', 'INVALID_REPLY'] }],
  ['return-nul-string', invalidReply],
  ['return-lone-surrogate', invalidReply],
  ['return-huge-string', invalidReply],
  ['return-thenable-throwing-then', { remote: ['HANDLER_ERROR', 'INVALID_REPLY'] }],
  ['return-thenable-then-throws', handlerError],
  ['return-thenable-never', { timeout: true }],
  ['never-resolves', { timeout: true }],
  ['resolve-bigint', invalidReply],
  ['resolve-undefined', invalidReply],
]

for (const [behaviour, expected] of cases) {
  const name = `handler ${behaviour}: ${'timeout' in expected ? 'TimeoutError' : `RemoteError ${expected.remote.join(' or ')}`}, and the responder keeps serving`
  test(name, async () => {
    await ensureServing()
    child!.lines.length = 0
    const timeoutMs = 'timeout' in expected ? 500 : 10_000
    const startedAt = Date.now()
    let outcome: unknown
    try {
      outcome = await client!.request(channel, behaviour, { timeoutMs })
    } catch (error) {
      outcome = error
    }
    const elapsedMs = Date.now() - startedAt
    assert.ok(outcome instanceof PgrrError, `a typed error, got ${String(outcome)}`)
    if ('timeout' in expected) {
      assert.ok(outcome instanceof TimeoutError, `${outcome.name}: ${outcome.message}`)
      assert.ok(elapsedMs < timeoutMs + 2000, `ended within its timeout (${elapsedMs} ms)`)
    } else {
      assert.ok(outcome instanceof RemoteError, `${outcome.name}: ${outcome.message}`)
      assert.ok(expected.remote.includes(outcome.remoteCode), `remote code ${JSON.stringify(outcome.remoteCode)}: ${outcome.message.slice(0, 200)}`)
      assert.ok(Buffer.byteLength(outcome.message) <= maxPayloadBytes, 'the message respects the channel limit')
    }
    assert.equal(await client!.request(channel, 'ok', { timeoutMs: 10_000 }), 'fine', 'an ordinary request succeeds afterwards')
    assert.equal(child!.process.exitCode, null, 'the responder process is still running')
    assert.deepStrictEqual(child!.lines.filter((line) => line.startsWith('error ')), [], 'no uncaught exception or unhandled rejection')
  })
}

test('after all of that, many ordinary requests at once still succeed', async () => {
  await ensureServing()
  const replies = await Promise.all(Array.from({ length: 50 }, () => client!.request(channel, 'ok', { timeoutMs: 10_000 })))
  assert.ok(replies.every((reply) => reply === 'fine'))
})
