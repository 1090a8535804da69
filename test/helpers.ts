/**
 * Shared helpers of the test files. Every file works in a schema of its own (`useTestSchema`), migrated
 * fresh, dropped at the end unless a test failed (then it is kept and its name printed, to look at).
 * Responders in other processes come from `startResponderProcess`; they end with their test, and can never
 * outlive the test process (they exit when their stdin closes).
 */
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { randomBytes } from 'node:crypto'
import path from 'node:path'
import { createInterface } from 'node:readline'
import { after, afterEach, before, test, type TestContext, type TestOptions } from 'node:test'
import { fileURLToPath } from 'node:url'
import postgres from 'postgres'
import { connect, migrate, serve, type Client, type ClientOptions, type Handler, type Server, type ServeOptions } from '../src/index.ts'

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')

/** The database under test: DATABASE_URL (`npm test` sets it, or starts an embedded server that does). */
export function databaseUrl(): string {
  const url = process.env.DATABASE_URL
  if (!url) {
    throw new Error('DATABASE_URL is not set: run the tests with `npm test` (which starts an embedded PostgreSQL) or set it to a test database')
  }
  return url
}

/** An admin connection of the tests, outside the library. */
// eslint-disable-next-line @typescript-eslint/no-empty-object-type
export type AdminSql = postgres.Sql<{}>

export interface TestSchema {
  /** The schema name, `pgrr_test_<name>_<random>`. */
  readonly schema: string
  /** The schema name quoted as an identifier, for SQL text. */
  readonly quoted: string
  /** Options for `connect()`, `serve()`, `migrate()`. */
  readonly options: { connectionString: string; schema: string }
  /** An admin postgres.js connection (at most 2 sessions). */
  readonly sql: AdminSql
  /** Drops the schema and closes `sql`. */
  drop(): Promise<void>
  /** Closes `sql` and leaves the schema in place. */
  keep(): Promise<void>
}

const knownBugs = new Set<string>()

/**
 * A test of a known library bug: `test(name, { todo: reason })`, whose expected failure does not count as a
 * failed test for keeping schemas. `reason` says what the bug is.
 */
export function knownBug(name: string, reason: string, options: TestOptions, fn: (t: TestContext) => Promise<void>): void
export function knownBug(name: string, reason: string, fn: (t: TestContext) => Promise<void>): void
export function knownBug(
  name: string,
  reason: string,
  optionsOrFn: TestOptions | ((t: TestContext) => Promise<void>),
  maybeFn?: (t: TestContext) => Promise<void>,
): void {
  const [options, fn] = typeof optionsOrFn === 'function' ? [{}, optionsOrFn] : [optionsOrFn, maybeFn!]
  knownBugs.add(name)
  void test(name, { ...options, todo: `library bug: ${reason}` }, fn)
}

/**
 * Whether the test of an afterEach context failed; an expected failure of a known bug does not count.
 * (`passed` exists since Node 20.12, but @types/node 20 does not declare it.)
 */
function failedTest(t: { name: string }): boolean {
  return (t as { passed?: boolean }).passed === false && !knownBugs.has(t.name)
}

/** Creates a fresh schema, migrated unless `{ migrated: false }`. */
export async function createTestSchema(name: string, { migrated = true } = {}): Promise<TestSchema> {
  const connectionString = databaseUrl()
  const schema = `pgrr_test_${name.toLowerCase().replace(/[^a-z0-9_]/g, '_')}_${randomBytes(4).toString('hex')}`
  const quoted = `"${schema}"`
  if (migrated) await migrate({ connectionString, schema })
  const sql: AdminSql = postgres(connectionString, { max: 2, onnotice: () => {}, connection: { application_name: 'pgrr-test-admin' } })
  let ended = false
  const end = async () => {
    if (ended) return
    ended = true
    await sql.end({ timeout: 5 })
  }
  return {
    schema,
    quoted,
    options: { connectionString, schema },
    sql,
    async drop() {
      await sql.unsafe(`drop schema if exists ${quoted} cascade`)
      await end()
    },
    keep: end,
  }
}

/**
 * Creates schemas on demand (for tests that need several, or unmigrated ones); after the file, drops them
 * all, or keeps them (and prints their names) when any test failed.
 */
export function useSchemaFactory(): (name: string, options?: { migrated?: boolean }) => Promise<TestSchema> {
  const created: TestSchema[] = []
  let failed = false
  afterEach((t) => {
    if (failedTest(t)) failed = true
  })
  after(async () => {
    for (const schema of created) {
      if (failed) {
        console.log(`kept schema ${schema.schema} of the failed test(s) for inspection`)
        await schema.keep()
      } else {
        await schema.drop()
      }
    }
  })
  return async (name, options) => {
    const schema = await createTestSchema(name, options)
    created.push(schema)
    return schema
  }
}

/**
 * The schema of a test file: created before the first test, dropped after the last one, or kept (and its
 * name printed) when any test failed. The returned object is usable inside tests.
 */
export function useTestSchema(name: string): TestSchema {
  const create = useSchemaFactory()
  let current: TestSchema | undefined
  before(async () => {
    current = await create(name)
  })
  const ready = (): TestSchema => {
    if (current === undefined) throw new Error('the test schema is used before its before() hook ran')
    return current
  }
  return {
    get schema() { return ready().schema },
    get quoted() { return ready().quoted },
    get options() { return ready().options },
    get sql() { return ready().sql },
    drop: () => ready().drop(),
    keep: () => ready().keep(),
  }
}

/** A client of the test schema (pool of 2), closed after the test. */
export async function clientFor(t: TestContext, db: TestSchema, options: ClientOptions = {}): Promise<Client> {
  const client = await connect({ ...db.options, poolSize: 2, ...options })
  t.after(() => client.close())
  return client
}

/** A responder with a client of its own (`serve()`), closed after the test. */
export async function serverFor<Payload = unknown, Reply = unknown>(
  t: TestContext,
  db: TestSchema,
  channel: string,
  handler: Handler<Payload, Reply>,
  serveOptions: ServeOptions = {},
): Promise<Server> {
  const server = await serve(db.options, channel, handler, serveOptions)
  t.after(() => server.close())
  return server
}

/**
 * Polls `predicate` until it returns a truthy value, which it resolves with; fails the test after
 * `timeoutMs`. Only for state that has no event to wait on (rows in the database, a session going away).
 */
export async function waitFor<T>(
  predicate: () => T | Promise<T>,
  { timeoutMs = 10_000, intervalMs = 50, message = 'condition' }: { timeoutMs?: number; intervalMs?: number; message?: string } = {},
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await predicate()
    if (value) return value as NonNullable<T>
    if (Date.now() > deadline) assert.fail(`${message}: not reached within ${timeoutMs} ms`)
    await new Promise((resolve) => setTimeout(resolve, intervalMs))
  }
}

/** A promise with its resolve and reject exposed, to signal events between a test and its handlers. */
export interface Deferred<T> {
  promise: Promise<T>
  resolve: (value: T) => void
  reject: (error: unknown) => void
}

export function deferred<T = void>(): Deferred<T> {
  let resolve!: (value: T) => void
  let reject!: (error: unknown) => void
  const promise = new Promise<T>((res, rej) => {
    resolve = res
    reject = rej
  })
  return { promise, resolve, reject }
}

/** Resolves with the error `promise` rejects with; fails the test if it fulfils. */
export async function rejection(promise: Promise<unknown>): Promise<Error & Record<string, unknown>> {
  try {
    const value = await promise
    assert.fail(`expected a rejection, got ${JSON.stringify(value)?.slice(0, 200)}`)
  } catch (error) {
    if (error instanceof assert.AssertionError) throw error
    assert.ok(error instanceof Error, `rejected with a non-Error: ${String(error)}`)
    return error as Error & Record<string, unknown>
  }
}

/** Settles every promise and returns the errors, in order (an empty array when all fulfilled). */
export async function collectErrors(promises: Iterable<Promise<unknown>>): Promise<Error[]> {
  const results = await Promise.allSettled(promises)
  return results.flatMap((result) => (result.status === 'rejected' ? [result.reason as Error] : []))
}

/** Resolves with the reason once `signal` aborts. */
export function aborted(signal: AbortSignal): Promise<unknown> {
  if (signal.aborted) return Promise.resolve(signal.reason)
  return new Promise((resolve) => signal.addEventListener('abort', () => resolve(signal.reason), { once: true }))
}

/** Runs `fn` over indexes 0 to `count - 1`, `concurrency` calls at a time; stops at the first error. */
export async function runConcurrently(count: number, concurrency: number, fn: (index: number) => Promise<void>): Promise<void> {
  let next = 0
  let failed = false
  const worker = async () => {
    while (next < count && !failed) {
      try {
        await fn(next++)
      } catch (error) {
        failed = true
        throw error
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker))
}

/** What the responder of `test/fixtures/core-responder.ts` does with each request. */
export type ResponderBehaviour =
  /** replies with the payload */
  | 'echo'
  /** replies `{ responder: name, id: ctx.id, payload }` */
  | 'identity'
  /** prints `handling <id>` and waits for its signal, then rejects with its reason */
  | 'hang'
  /** prints `started <id>`, keeps its event loop busy for the payload's `blockMs` (or waits `waitMs`), prints
   * `finished <id>`, then replies `late:<payload.tag>` */
  | 'busy'

export interface ResponderProcessOptions {
  options: { connectionString: string; schema: string }
  channel: string
  behaviour: ResponderBehaviour
  /** Reported in `identity` replies. @default 'child' */
  name?: string
  concurrency?: number
}

/** A responder running in a child process. */
export interface ResponderProcess {
  readonly responderId: number
  readonly child: ChildProcess
  /** The next stdout line starting with `prefix` (lines printed earlier and not yet taken count). */
  nextLine(prefix: string, timeoutMs?: number): Promise<string>
  /** The ids of the requests its handler was called for, in order. */
  handledIds(): Promise<string[]>
  /** SIGKILL; resolves once it exited. */
  kill(): Promise<void>
  /** Graceful: closes its stdin (it drains and exits); SIGKILL if it is still there after 10 s. */
  stop(): Promise<void>
}

const children = new Set<ChildProcess>()
// A safety net only: tests kill their children in finally / t.after.
process.once('exit', () => {
  for (const child of children) child.kill('SIGKILL')
})

/** Starts a responder in a child process and resolves once it printed `ready <responderId>`. */
export async function startResponderProcess(config: ResponderProcessOptions): Promise<ResponderProcess> {
  const fixture = path.join(repoRoot, 'test', 'fixtures', 'core-responder.ts')
  const child = spawn(process.execPath, ['--import', 'tsx', fixture, JSON.stringify(config)], {
    cwd: repoRoot,
    stdio: ['pipe', 'pipe', 'pipe'],
  })
  children.add(child)
  let stderr = ''
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk
  })
  const exited = once(child, 'exit').then(() => {
    children.delete(child)
  })
  const buffered: string[] = []
  const waiters: { prefix: string; resolve: (line: string) => void; reject: (error: Error) => void }[] = []
  createInterface({ input: child.stdout! }).on('line', (line) => {
    const index = waiters.findIndex((waiter) => line.startsWith(waiter.prefix))
    if (index >= 0) waiters.splice(index, 1)[0]!.resolve(line)
    else buffered.push(line)
  })
  void exited.then(() => {
    for (const waiter of waiters.splice(0)) {
      waiter.reject(new Error(`the responder process exited (${child.exitCode ?? child.signalCode}) before printing "${waiter.prefix}…"; stderr:\n${stderr}`))
    }
  })
  const alive = () => child.exitCode === null && child.signalCode === null

  const nextLine = (prefix: string, timeoutMs = 30_000): Promise<string> => {
    const index = buffered.findIndex((line) => line.startsWith(prefix))
    if (index >= 0) return Promise.resolve(buffered.splice(index, 1)[0]!)
    if (!alive()) return Promise.reject(new Error(`the responder process has exited; stderr:\n${stderr}`))
    return new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => {
        const at = waiters.indexOf(waiter)
        if (at >= 0) waiters.splice(at, 1)
        reject(new Error(`the responder process printed no "${prefix}…" line within ${timeoutMs} ms; stderr:\n${stderr}`))
      }, timeoutMs)
      const waiter = {
        prefix,
        resolve: (line: string) => {
          clearTimeout(timer)
          resolve(line)
        },
        reject: (error: Error) => {
          clearTimeout(timer)
          reject(error)
        },
      }
      waiters.push(waiter)
    })
  }

  const kill = async () => {
    if (alive()) child.kill('SIGKILL')
    await exited
  }

  let ready: string
  try {
    ready = await nextLine('ready ')
  } catch (error) {
    await kill()
    throw error
  }
  return {
    responderId: Number(ready.slice('ready '.length)),
    child,
    nextLine,
    async handledIds() {
      child.stdin?.write('report\n')
      const line = await nextLine('report ')
      return JSON.parse(line.slice('report '.length)) as string[]
    },
    kill,
    async stop() {
      if (!alive()) return exited
      child.stdin?.end()
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000)
      await exited
      clearTimeout(timer)
    },
  }
}

/** Rows of `pgrr_request` for one channel of the schema, oldest first, as plain objects. */
export async function requestRows(db: TestSchema, channel: string): Promise<{ id: string; state: string }[]> {
  const rows = await db.sql.unsafe(
    `select q.id, q.state from ${db.quoted}.pgrr_request q join ${db.quoted}.pgrr_channel c on c.id = q.channel_id
      where c.name = $1 order by q.id`,
    [channel],
  )
  return rows.map((row) => ({ id: String(row.id), state: String(row.state) }))
}

/**
 * Everything handed to a responder, heard on its inbox too. `sync()` resolves once every NOTIFY committed
 * before it has been heard: it sends '[]', the marker of the tests, and waits for it.
 */
export async function overhearInbox(
  t: TestContext,
  db: TestSchema,
  responderId: number,
): Promise<{ heard: string[]; sync(): Promise<void> }> {
  const [{ inbox }] = (await db.sql.unsafe(`select inbox from ${db.quoted}.pgrr_responder where id = $1`, [responderId])) as unknown as [{ inbox: string }]
  const heard: string[] = []
  let marker = deferred()
  const listening = await db.sql.listen(inbox, (payload) => {
    if (payload === '[]') marker.resolve()
    else heard.push(payload)
  })
  t.after(() => listening.unlisten())
  return {
    heard,
    async sync() {
      marker = deferred()
      await db.sql`select pg_notify(${inbox}, '[]')`
      await marker.promise
    },
  }
}

/** A session of the test's own login (the owner), on a connection of its own, ended after the test. */
export async function ownSession(t: TestContext, name: string): Promise<postgres.ReservedSql> {
  const sql: AdminSql = postgres(databaseUrl(), { max: 1, onnotice: () => {}, connection: { application_name: `pgrr-test-${name}` } })
  const session = await sql.reserve()
  t.after(async () => {
    session.release()
    await sql.end({ timeout: 1 })
  })
  return session
}

/**
 * Registers a responder of `channel` on `session` (see ownSession) as process `pid` of host `host`, as
 * pgrr_register does for a responder: the session then holds its responder lock.
 */
export async function registerOn(
  db: TestSchema, session: postgres.ReservedSql, channel: string, host = 'host', pid = 1,
): Promise<{ responder: number; channelId: number }> {
  const [row] = await session.unsafe<{ responder_id: number; channel_id: number }[]>(
    `select responder_id, channel_id from ${db.quoted}.pgrr_register($1, $2, $3, 4)`,
    [channel, host, pid],
  )
  return { responder: row!.responder_id, channelId: row!.channel_id }
}
