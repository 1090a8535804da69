/**
 * The `pgrr` command line, run as real child processes (`node --import tsx src/cli/main.ts …`) against
 * DATABASE_URL, in a schema of this file that is dropped at the end. Tests synchronise on what the
 * processes print (the "serving" line, the handler's "holding" line, serve's debug log), never on sleeps.
 */
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { readdir } from 'node:fs/promises'
import { createServer, type Server, type Socket } from 'node:net'
import path from 'node:path'
import { after, before, describe, test } from 'node:test'
import { fileURLToPath } from 'node:url'
import postgres from 'postgres'
import { latestVersion } from '../src/index.ts'
import { protocolVersion } from '../src/migrations.ts'

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const handlerFixture = 'test/fixtures/cli-handler.ts'
const databaseUrl = process.env.DATABASE_URL
if (!databaseUrl) throw new Error('DATABASE_URL is not set: run with `npm test`, or set it to a test database')
const schema = `pgrr_test_cli_${randomBytes(4).toString('hex')}`
const timeout = 60_000

/** Every child started, so that `after` can kill what a failed test left running. */
const children = new Set<ChildProcess>()

interface Exit {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
}

/** A running `pgrr` process whose output is collected and can be waited for. */
class Cli {
  readonly child: ChildProcess
  stdout = ''
  stderr = ''
  readonly exited: Promise<Exit>
  readonly #waiters = new Set<() => void>()

  constructor(args: string[], options: { input?: string | Buffer; env?: NodeJS.ProcessEnv } = {}) {
    this.child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], {
      cwd: repoRoot,
      env: { ...process.env, DATABASE_URL: databaseUrl, ...options.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    })
    children.add(this.child)
    this.child.stdout?.setEncoding('utf8').on('data', (text: string) => this.#append('stdout', text))
    this.child.stderr?.setEncoding('utf8').on('data', (text: string) => this.#append('stderr', text))
    this.child.stdin?.on('error', () => {})
    this.child.stdin?.end(options.input)
    this.exited = new Promise((resolve, reject) => {
      this.child.once('error', reject)
      this.child.once('close', (code, signal) => {
        children.delete(this.child)
        resolve({ code, signal, stdout: this.stdout, stderr: this.stderr })
        this.#notify()
      })
    })
  }

  /** Resolves once stderr (from character `from` on) matches; rejects if the process exits first. */
  async waitForStderr(pattern: RegExp, from = 0): Promise<RegExpMatchArray> {
    for (;;) {
      const match = this.stderr.slice(from).match(pattern)
      if (match !== null) return match
      if (this.child.exitCode !== null || this.child.signalCode !== null) {
        throw new Error(`pgrr exited (${this.child.exitCode ?? this.child.signalCode}) before printing ${pattern}; stderr:\n${this.stderr}`)
      }
      await new Promise<void>((resolve) => this.#waiters.add(resolve))
    }
  }

  #append(stream: 'stdout' | 'stderr', text: string): void {
    this[stream] += text
    this.#notify()
  }

  #notify(): void {
    const waiters = [...this.#waiters]
    this.#waiters.clear()
    for (const wake of waiters) wake()
  }
}

function pgrr(args: string[], options?: { input?: string | Buffer; env?: NodeJS.ProcessEnv }): Promise<Exit> {
  return new Cli(args, options).exited
}

/** Asserts the exit code, showing the output when it differs. */
function assertExit(result: Exit, code: number): void {
  assert.equal(result.code, code, `expected exit code ${code}, got ${result.code ?? result.signal}\nstdout: ${result.stdout}\nstderr: ${result.stderr}`)
}

/** Starts `pgrr serve` and resolves once it says it is serving. */
async function startServe(channel: string, extra: string[] = []): Promise<Cli> {
  const cli = new Cli(['serve', channel, '--handler', handlerFixture, '--schema', schema, ...extra])
  await cli.waitForStderr(/serving /)
  return cli
}

const admin = postgres(databaseUrl, { max: 1, onnotice: () => {} })

after(async () => {
  for (const child of children) child.kill('SIGKILL')
  await admin.unsafe(`drop schema if exists "${schema}" cascade`)
  await admin.end({ timeout: 5 })
})

describe('help and usage', () => {
  test('pgrr --help lists the commands and the exit codes', { timeout }, async () => {
    const result = await pgrr(['--help'])
    assertExit(result, 0)
    for (const command of ['migrate', 'serve', 'request', 'demo', 'bench']) assert.match(result.stdout, new RegExp(`\\n  ${command} `))
    assert.match(result.stdout, /Exit codes:/)
    assert.match(result.stdout, /\n +3 +no responders/)
    assert.match(result.stdout, /\n +10 +invalid payload/)
  })

  test('pgrr --version prints the package version', { timeout }, async () => {
    const result = await pgrr(['--version'])
    assertExit(result, 0)
    assert.match(result.stdout, /^\d+\.\d+\.\d+/)
  })

  const expected: Record<string, string[]> = {
    migrate: ['--database-url', '--schema', '--json'],
    serve: ['--handler', '--concurrency', '--drain-timeout', '--log-format', '--schema'],
    request: ['--timeout', '--json', '--header', '--database-url', '--schema'],
    demo: ['--database-url', '--schema', '--requests'],
    bench: ['Usage: pgrr bench'],
  }
  for (const [command, mentions] of Object.entries(expected)) {
    test(`pgrr ${command} --help exits 0 and mentions its options`, { timeout }, async () => {
      const result = await pgrr([command, '--help'])
      assertExit(result, 0)
      for (const mention of mentions) assert.ok(result.stdout.includes(mention), `${command} --help should mention ${mention}`)
    })
  }

  test('pgrr demo --help says what it connects to without a URL, and its default schema', { timeout }, async () => {
    const result = await pgrr(['demo', '--help'])
    assertExit(result, 0)
    assert.match(result.stdout, /default: \$DATABASE_URL; without either, an embedded\s+PostgreSQL is started/)
    assert.doesNotMatch(result.stdout, /else the PG\* variables/)
    assert.match(result.stdout, /--schema <name> .*default: pgrr_demo_<random>/)
  })

  test('usage errors exit 2 with one line on stderr', { timeout }, async () => {
    for (const args of [['frobnicate'], ['request', 'greet'], ['request', 'greet', 'x', '--bogus'], ['request', 'greet', 'x', '--timeout', 'soon']]) {
      const result = await pgrr(args)
      assertExit(result, 2)
      assert.match(result.stderr, /^pgrr: .+\n$/)
    }
  })
})

test('bench takes --verbose and --schema like every command (--schema is ignored: it has schemas of its own)', { timeout }, async () => {
  // A batch of 2: the batch statements run too (their parameters follow the protocol's functions).
  const result = await pgrr(['bench', '--functions', '--rounds', '1', '--calls', '2', '--batch', '2', '--schema', schema, '--verbose'])
  assertExit(result, 0)
  assert.match(result.stdout, /^step +requests\/call +µs\/call +µs\/request$/m)
  for (const step of ['send', 'reply', 'ack', 'send, queued', 'claim']) assert.match(result.stdout, new RegExp(`^${step} +2 `, 'm'))
  assert.match(result.stderr, new RegExp(`^pgrr bench: --schema ${schema} is ignored: the benchmark uses schemas of its own$`, 'm'))
})

describe('migrate', () => {
  test('request before migrating exits 8 (schema not migrated)', { timeout }, async () => {
    const result = await pgrr(['request', 'greet', 'x', '--schema', schema])
    assertExit(result, 8)
    assert.match(result.stderr, /^pgrr: .*pgrr migrate/)
  })

  test('--dry-run prints the SQL and changes nothing', { timeout }, async () => {
    const dry = await pgrr(['migrate', '--schema', schema, '--dry-run'])
    assertExit(dry, 0)
    assert.match(dry.stdout, /^begin;\n/)
    assert.match(dry.stdout, /create unlogged table .*\.pgrr_request/)
    assert.match(dry.stdout, /create function .*\.await_reply\(/)
    assert.match(dry.stdout, /\ncommit;\n$/)
    const [row] = await admin`select to_regnamespace(${schema}) is null as absent`
    assert.equal(row?.absent, true, 'the schema was not created')
  })

  test('migrates once, then says it is up to date', { timeout }, async () => {
    const latest = await latestVersion()
    const migrations = (await readdir(path.join(repoRoot, 'sql', 'migrations'))).filter((name) => name.endsWith('.sql')).sort()
    const first = await pgrr(['migrate', '--schema', schema])
    assertExit(first, 0)
    assert.equal(
      first.stdout,
      `migrated schema "${schema}" from version 0 to ${latest} (applied ${migrations.join(', ')})\ninstalled protocol ${protocolVersion}\n`,
    )
    const second = await pgrr(['migrate', '--schema', schema, '--json'])
    assertExit(second, 0)
    assert.deepEqual(JSON.parse(second.stdout), {
      schema,
      fromVersion: latest,
      toVersion: latest,
      applied: [],
      protocol: { fromVersion: protocolVersion, toVersion: protocolVersion, installed: false },
    })
    const third = await pgrr(['migrate', '--schema', schema])
    assert.equal(third.stdout, `schema "${schema}" is up to date (version ${latest}, protocol ${protocolVersion})\n`)
  })
})

describe('serve and request', () => {
  let server: Cli
  before(async () => {
    server = await startServe('greet', ['--log-level', 'debug'])
  })
  after(async () => {
    server.child.kill('SIGTERM')
    assertExit(await server.exited, 0)
  })

  test('request prints exactly the reply', { timeout }, async () => {
    const result = await pgrr(['request', 'greet', 'world', '--schema', schema])
    assertExit(result, 0)
    assert.equal(result.stdout, 'hello world\n')
  })

  test('headers reach the handler', { timeout }, async () => {
    const result = await pgrr(['request', 'greet', 'world', '--schema', schema, '--header', 'greeting=hola'])
    assertExit(result, 0)
    assert.equal(result.stdout, 'hola world\n')
  })

  test('--json sends JSON and prints the reply as JSON', { timeout }, async () => {
    const result = await pgrr(['request', 'greet', '{"n":[1,2]}', '--json', '--schema', schema, '--header', 'k=v=w'])
    assertExit(result, 0)
    assert.equal(result.stdout, '{"echo":{"n":[1,2]},"headers":{"k":"v=w"}}\n')
  })

  test('stdin that is not UTF-8 is refused with exit 10, not sent with replacement characters; a BOM is kept', { timeout }, async () => {
    const invalid = await pgrr(['request', 'greet', '-', '--schema', schema], { input: Buffer.from([0x61, 0xff, 0xfe, 0x62]) })
    assertExit(invalid, 10)
    assert.equal(invalid.stderr, 'pgrr: the payload read from stdin is not valid UTF-8 (payloads are text)\n')
    const bom = await pgrr(['request', 'greet', '-', '--schema', schema], { input: '\uFEFFmarked' })
    assertExit(bom, 0)
    assert.equal(bom.stdout, 'hello \uFEFFmarked\n')
  })

  test('--json refuses a number out of the range of a double (it would travel as null) with exit 10', { timeout }, async () => {
    for (const payload of ['1e400', '{"n":[1,-1e400]}']) {
      const result = await pgrr(['request', 'greet', payload, '--json', '--schema', schema])
      assertExit(result, 10)
      assert.match(result.stderr, /^pgrr: --json: the payload has a number out of the range of a double/)
    }
  })

  test('a payload of - is read from stdin', { timeout }, async () => {
    const result = await pgrr(['request', 'greet', '-', '--schema', schema], { input: 'from stdin' })
    assertExit(result, 0)
    assert.equal(result.stdout, 'hello from stdin\n')
  })

  test('invalid JSON with --json exits 10', { timeout }, async () => {
    const result = await pgrr(['request', 'greet', '{nope', '--json', '--schema', schema])
    assertExit(result, 10)
    assert.match(result.stderr, /not valid JSON/)
  })

  test('an invalid channel name exits 10', { timeout }, async () => {
    const result = await pgrr(['request', '', 'x', '--schema', schema])
    assertExit(result, 10)
    assert.match(result.stderr, /^pgrr: invalid channel name/)
  })

  test('a handler error exits 5 with its code and message', { timeout }, async () => {
    const result = await pgrr(['request', 'greet', 'fail', '--schema', schema])
    assertExit(result, 5)
    assert.equal(result.stdout, '')
    assert.equal(result.stderr, 'pgrr: the handler failed (BOOM): the handler failed on purpose\n')
  })

  test('--timeout on a slow handler exits 4', { timeout }, async () => {
    // Long enough that the CLI has connected and sent before it runs out, also on a loaded machine (otherwise
    // the message says it was still connecting: another path).
    const result = await pgrr(['request', 'greet', 'slow:30000', '--timeout', '5000', '--schema', schema])
    assertExit(result, 4)
    assert.match(result.stderr, /^pgrr: no reply within 5000 ms\n$/)
  })

  test('SIGINT while waiting cancels the request and exits 9', { timeout }, async () => {
    const from = server.stderr.length
    const request = new Cli(['request', 'greet', 'slow:30000', '--schema', schema])
    // serve logs each request it starts at debug level: then the request is in flight.
    await server.waitForStderr(/request started/, from)
    request.child.kill('SIGINT')
    const result = await request.exited
    assertExit(result, 9)
    assert.match(result.stderr, /cancelled/)
  })
})

describe('errors of request and serve', () => {
  test('request with no responder exits 3', { timeout }, async () => {
    const result = await pgrr(['request', 'nobody-serves-this', 'x', '--schema', schema])
    assertExit(result, 3)
    assert.equal(result.stdout, '')
    assert.equal(result.stderr, 'pgrr: no responders on channel "nobody-serves-this"\n')
  })

  test('an unreachable database exits 7', { timeout }, async () => {
    const result = await pgrr(['request', 'greet', 'x', '--database-url', 'postgres://postgres@127.0.0.1:1/test'])
    assertExit(result, 7)
    assert.match(result.stderr, /^pgrr: database connection failed/)
  })

  test('a server that refuses SSL when the URL asks for it exits 7, in one line (and its warning in one)', { timeout }, async () => {
    // Answers the SSLRequest with N, as a PostgreSQL server without SSL does.
    const server = createServer((socket) => socket.on('error', () => {}).once('data', () => socket.end('N')))
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    try {
      const port = (server.address() as { port: number }).port
      const result = await pgrr(['request', 'greet', 'x', '--database-url', `postgres://postgres@127.0.0.1:${port}/test?sslmode=require`])
      assertExit(result, 7)
      const lines = result.stderr.split('\n')
      assert.equal(lines.pop(), '', result.stderr)
      assert.equal(lines.at(-1), 'pgrr: database connection failed: The server does not support SSL connections')
      // node-postgres warns that sslmode=require means verify-full to it: one line, like errors.
      assert.ok(lines.length <= 2, result.stderr)
      for (const line of lines.slice(0, -1)) assert.match(line, /^pgrr: warning: SECURITY WARNING: /)
    } finally {
      server.close()
    }
  })

  test('serve refuses a module without a handler, and a missing file, with exit 1', { timeout }, async () => {
    const none = await pgrr(['serve', 'greet', '--handler', 'test/fixtures/cli-handler-none.mjs', '--schema', schema])
    assertExit(none, 1)
    assert.match(none.stderr, /^pgrr: test\/fixtures\/cli-handler-none\.mjs exports no handler/)
    const missing = await pgrr(['serve', 'greet', '--handler', 'test/fixtures/cli-no-such-file.ts', '--schema', schema])
    assertExit(missing, 1)
    assert.match(missing.stderr, /^pgrr: handler file not found/)
  })
})

describe('request against a server that accepts connections and never answers', () => {
  let silent: Server
  let url = ''
  const sockets = new Set<Socket>()
  before(async () => {
    silent = createServer((socket) => {
      sockets.add(socket)
      socket.on('error', () => {}).on('close', () => sockets.delete(socket)).resume()
    })
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve))
    url = `postgres://postgres@127.0.0.1:${(silent.address() as { port: number }).port}/test`
  })
  after(() => {
    for (const socket of sockets) socket.destroy()
    silent.close()
  })

  test('--timeout counts the connection: exit 4', { timeout }, async () => {
    const result = await pgrr(['request', 'greet', 'x', '--timeout', '300', '--database-url', url])
    assertExit(result, 4)
    assert.equal(result.stderr, 'pgrr: no reply within 300 ms (still connecting to the database)\n')
  })

  test('status cannot connect: exit 7 (a connection error), whatever the driver says', { timeout }, async () => {
    const result = await pgrr(['status', '--database-url', url])
    assertExit(result, 7)
    assert.match(result.stderr, /^pgrr: .*connection/)
  })

  test('SIGINT while connecting cancels: exit 9, and the connection is closed', { timeout }, async () => {
    const accepted = once(silent, 'connection') as Promise<[Socket]>
    const request = new Cli(['request', 'greet', 'x', '--database-url', url])
    const [socket] = await accepted
    const closed = once(socket, 'close')
    request.child.kill('SIGINT')
    const result = await request.exited
    assertExit(result, 9)
    assert.equal(result.stderr, 'pgrr: cancelled while connecting to the database (interrupted by SIGINT)\n')
    await closed
  })
})

test('serve drains on SIGTERM: the request in flight gets its reply, serve exits 0', { timeout }, async () => {
  const server = await startServe('drain', ['--log-format', 'json'])
  const ready = JSON.parse(server.stderr.split('\n')[0] ?? '') as { level: string; msg: string; channel: string; responderId: number }
  assert.equal(ready.level, 'info')
  assert.equal(ready.channel, 'drain')
  assert.match(ready.msg, /^serving drain \(concurrency 10, responder id \d+\)$/)

  const request = new Cli(['request', 'drain', 'hold', '--schema', schema])
  // The fixture prints this once it holds the request; it replies only after this process gets SIGTERM.
  await server.waitForStderr(/cli-handler: holding request/)
  server.child.kill('SIGTERM')
  const [served, replied] = await Promise.all([server.exited, request.exited])
  assertExit(replied, 0)
  assert.equal(replied.stdout, 'released\n')
  assertExit(served, 0)
  assert.match(served.stderr, /"msg":"drained; exiting"/)
})

test('demo runs against DATABASE_URL, prints replies and drops its schema', { timeout }, async () => {
  const result = await pgrr(['demo', '--requests', '40'])
  assertExit(result, 0)
  assert.match(result.stdout, /uppercase\("hello, postgres"\)\s+\S+ (?:µs|ms)\s+→ "HELLO, POSTGRES"/)
  assert.match(result.stdout, /→ "FROM PLAIN SQL"/)
  assert.match(result.stdout, /RemoteError EMPTY_INPUT/)
  assert.match(result.stdout, /NoRespondersError/)
  assert.match(result.stdout, /TimeoutError/)
  assert.match(result.stdout, /TypeScript +40 requests +p50/)
  const demoSchema = /schema "(pgrr_demo_[0-9a-f]+)"/.exec(result.stdout)?.[1]
  assert.ok(demoSchema, 'the demo names its schema')
  assert.match(result.stdout, /cleaned up: .*dropped/)
  const [row] = await admin`select count(*)::int as n from pg_namespace where nspname = ${demoSchema}`
  assert.equal(row?.n, 0)
})
