// `pgrr serve` observability: --log-format json writes one parseable JSON object per line, payloads appear
// only with --log-payloads, text logs are readable lines, and --metrics-port serves /metrics (node:http)
// from the responder's registry, backlog gauges included.
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { createServer } from 'node:net'
import { after, test, type TestContext } from 'node:test'
import { connect, type Client } from '../src/index.ts'
import { rejection, repoRoot, useTestSchema } from './helpers.ts'

const db = useTestSchema('obs_cli')
const handler = 'test/fixtures/observability-handler.ts'
const secret = 'secret-payload-7d1f'
const children = new Set<ChildProcess>()
after(() => {
  for (const child of children) child.kill('SIGKILL')
})

/** A `pgrr serve` process whose stderr is collected. */
class Serve {
  readonly child: ChildProcess
  stderr = ''
  readonly exited: Promise<number | null>
  #wake: (() => void) | undefined

  constructor(args: string[]) {
    this.child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'serve', ...args, '--handler', handler, '--schema', db.schema], {
      cwd: repoRoot,
      env: { ...process.env, DATABASE_URL: db.options.connectionString },
      stdio: ['ignore', 'ignore', 'pipe'],
    })
    children.add(this.child)
    this.child.stderr!.setEncoding('utf8').on('data', (text: string) => {
      this.stderr += text
      this.#wake?.()
    })
    this.exited = once(this.child, 'close').then(([code]) => {
      children.delete(this.child)
      this.#wake?.()
      return code as number | null
    })
  }

  async waitFor(pattern: RegExp, timeoutMs = 30_000): Promise<RegExpMatchArray> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const match = this.stderr.match(pattern)
      if (match !== null) return match
      if (this.child.exitCode !== null || Date.now() > deadline) {
        throw new Error(`pgrr serve did not print ${pattern} (exit ${this.child.exitCode}); stderr:\n${this.stderr}`)
      }
      await new Promise<void>((resolve) => {
        this.#wake = resolve
        setTimeout(resolve, 200)
      })
    }
  }

  /** SIGTERM, then the exit code (it drains first). */
  async stop(): Promise<number | null> {
    this.child.kill('SIGTERM')
    return this.exited
  }
}

async function startServe(t: TestContext, channel: string, extra: string[]): Promise<Serve> {
  const serve = new Serve([channel, ...extra])
  t.after(() => void (serve.child.exitCode === null && serve.child.kill('SIGKILL')))
  await serve.waitFor(/serving /)
  return serve
}

async function clientFor(t: TestContext): Promise<Client> {
  const client = await connect({ ...db.options, poolSize: 1 })
  t.after(() => client.close())
  return client
}

function jsonLines(stderr: string): Record<string, unknown>[] {
  const lines = stderr.split('\n').filter((line) => line.length > 0)
  return lines.map((line) => {
    try {
      return JSON.parse(line) as Record<string, unknown>
    } catch {
      assert.fail(`not a JSON line: ${line}`)
    }
  })
}

test('--log-format json: every line is a JSON object with time, level and msg; no payload is logged', { timeout: 60_000 }, async (t) => {
  const serve = await startServe(t, 'obs.c.json', ['--log-format', 'json', '--log-level', 'debug'])
  const client = await clientFor(t)
  assert.deepEqual(await client.request('obs.c.json', secret, { headers: { tenant: secret } }), { echo: secret })
  assert.equal((await rejection(client.request('obs.c.json', 'fail'))).code, 'REMOTE_ERROR')
  assert.equal(await serve.stop(), 0)

  const records = jsonLines(serve.stderr)
  for (const record of records) {
    assert.ok(typeof record.time === 'string' && !Number.isNaN(Date.parse(record.time)), JSON.stringify(record))
    assert.ok(['debug', 'info', 'warn', 'error'].includes(record.level as string), JSON.stringify(record))
    assert.equal(typeof record.msg, 'string')
  }
  const messages = records.map((record) => record.msg)
  assert.match(String(messages[0]), /^serving obs\.c\.json /)
  assert.ok(messages.includes('request started') && messages.includes('request replied'), messages.join(' | '))
  assert.equal(messages.at(-1), 'drained; exiting')
  // The library logs a handler's failure, at error level, with where it happened.
  const failed = records.find((record) => record.msg === 'handler failed')
  assert.equal(failed?.level, 'error')
  assert.deepEqual(failed?.err, { type: 'Error', message: 'failed on purpose', code: 'SECRET_FAIL' })
  assert.equal(failed?.channel, 'obs.c.json')
  assert.equal(failed?.attempt, 1)
  assert.ok(typeof failed?.id === 'string' && failed.id.length > 0)
  assert.ok(messages.includes('request failed'), 'and the request ends in a debug line of its own')
  assert.ok(!serve.stderr.includes(secret), 'neither the payload nor the headers are logged')
})

test('--log-level debug says when a request ended before its handler did: the reply is discarded, not "replied"', { timeout: 60_000 }, async (t) => {
  const serve = await startServe(t, 'obs.c.cancel', ['--log-format', 'json', '--log-level', 'debug'])
  const client = await clientFor(t)
  const controller = new AbortController()
  const request = rejection(client.request('obs.c.cancel', 'wait', { signal: controller.signal }))
  await serve.waitFor(/"msg":"request started"/)
  controller.abort()
  assert.equal((await request).code, 'CANCELLED')
  await serve.waitFor(/request cancelled by its caller: the reply is discarded/)
  assert.equal(await serve.stop(), 0)
  const messages = jsonLines(serve.stderr).map((record) => record.msg)
  assert.ok(!messages.includes('request replied'), messages.join(' | '))
})

test('--log-payloads logs each request at info level with its payload, headers and reply', { timeout: 60_000 }, async (t) => {
  const serve = await startServe(t, 'obs.c.payloads', ['--log-format', 'json', '--log-payloads'])
  const client = await clientFor(t)
  await client.request('obs.c.payloads', secret, { headers: { tenant: 'acme' } })
  await rejection(client.request('obs.c.payloads', 'fail'))
  await client.request('obs.c.payloads', 'x'.repeat(5000))
  assert.equal(await serve.stop(), 0)

  const records = jsonLines(serve.stderr)
  const started = records.filter((record) => record.msg === 'request started')
  assert.equal(started.length, 3)
  assert.deepEqual({ level: started[0]!.level, payload: started[0]!.payload, headers: started[0]!.headers }, { level: 'info', payload: secret, headers: { tenant: 'acme' } })
  const replied = records.find((record) => record.msg === 'request replied')
  assert.deepEqual(replied?.reply, { echo: secret })
  assert.equal(records.find((record) => record.msg === 'request failed')?.payload, 'fail')
  assert.equal(records.find((record) => record.msg === 'handler failed')?.level, 'error')
  assert.match(String(started[2]!.payload), /^x{2000}… \(5000 characters\)$/)
})

test('--log-format text (the default) writes readable lines, not JSON', { timeout: 60_000 }, async (t) => {
  const serve = await startServe(t, 'obs.c.text', [])
  assert.equal(await serve.stop(), 0)
  const lines = serve.stderr.trim().split('\n')
  assert.match(lines[0]!, /^\d{4}-\d\d-\d\dT\S+Z info {2}serving obs\.c\.text \(concurrency 10, responder id \d+\) channel=obs\.c\.text /)
  for (const line of lines) assert.throws(() => JSON.parse(line) as unknown)
})

test('serve keeps serving when the reader of its stderr goes away (`pgrr serve … 2>&1 | head -1`)', { timeout: 60_000 }, async (t) => {
  const serve = await startServe(t, 'obs.c.epipe', ['--log-level', 'debug'])
  // Nobody reads its stderr any more: each request it logs at debug level now meets EPIPE.
  serve.child.stderr!.destroy()
  const client = await clientFor(t)
  for (const payload of ['one', 'two', 'three']) assert.deepEqual(await client.request('obs.c.epipe', payload), { echo: payload })
  assert.equal(await serve.stop(), 0)
})

test('--metrics-port serves /metrics from the responder\'s registry', { timeout: 60_000 }, async (t) => {
  const serve = await startServe(t, 'obs.c.metrics', ['--metrics-port', '0', '--log-format', 'json'])
  const [, url] = (await serve.waitFor(/"metrics":"(http:\/\/127\.0\.0\.1:\d+\/metrics)"/)) as unknown as [string, string]
  const client = await clientFor(t)
  await client.request('obs.c.metrics', 'a')
  await rejection(client.request('obs.c.metrics', 'fail'))

  const response = await fetch(url)
  assert.equal(response.status, 200)
  assert.match(response.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/)
  const text = await response.text()
  assert.match(text, /^pgrr_handled_total\{channel="obs\.c\.metrics",outcome="ok"\} 1$/m)
  assert.match(text, /^pgrr_handled_total\{channel="obs\.c\.metrics",outcome="HANDLER_ERROR"\} 1$/m)
  assert.match(text, /^pgrr_backlog\{channel="obs\.c\.metrics"\} 0$/m)
  assert.match(text, /^pgrr_responders\{channel="obs\.c\.metrics"\} 1$/m)
  assert.match(text, /^process_cpu_user_seconds_total /m)

  assert.equal((await fetch(url.replace('/metrics', '/'))).status, 404)
  assert.equal((await fetch(url, { method: 'POST' })).status, 405)
  assert.equal(await serve.stop(), 0)
})

test('--metrics-port on a port in use fails before serving (exit 1); --metrics-host alone is a usage error', { timeout: 60_000 }, async (t) => {
  const blocker = createServer()
  await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve))
  t.after(() => void blocker.close())
  const port = (blocker.address() as { port: number }).port
  const busy = new Serve(['obs.c.busy', '--metrics-port', String(port)])
  assert.equal(await busy.exited, 1)
  assert.match(busy.stderr, new RegExp(`^pgrr: cannot serve metrics on 127\\.0\\.0\\.1:${port}: .*EADDRINUSE`, 'm'))
  assert.doesNotMatch(busy.stderr, /serving /)

  const usage = new Serve(['obs.c.busy', '--metrics-host', '0.0.0.0'])
  assert.equal(await usage.exited, 2)
  assert.match(usage.stderr, /--metrics-host needs --metrics-port/)
})
