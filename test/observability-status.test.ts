// getStatus() (src/status.ts) and `pgrr status`: live responders (liveness = the responder lock is held,
// read from pg_locks), backlog and in-flight counts while a responder is busy, rates from the responders'
// reports, responders disappearing once closed, drained or killed, and the CLI's text, JSON and --watch.
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { hostname } from 'node:os'
import { test, type TestContext } from 'node:test'
import postgres from 'postgres'
import { formatStatus, formatUnavailable, OLD_TRANSACTION_MS } from '../src/cli/status.ts'
import { connect, serve, type Handler, type Server, type ServeOptions } from '../src/index.ts'
import { getStatus, type ChannelStatus } from '../src/status.ts'
import { createTestSchema, databaseUrl, deferred, rejection, repoRoot, startResponderProcess, useTestSchema, waitFor } from './helpers.ts'

const db = useTestSchema('obs_status')

async function responder(t: TestContext, channel: string, handler: Handler, options: ServeOptions = {}): Promise<Server> {
  const server = await serve(db.options, channel, handler, options)
  t.after(() => server.close())
  return server
}

async function channelStatus(channel: string): Promise<ChannelStatus> {
  const status = await getStatus({ ...db.options, channels: [channel] })
  assert.equal(status.channels.length, 1, `status of ${channel}: ${JSON.stringify(status.channels)}`)
  return status.channels[0]!
}

async function responderRows(channel: string): Promise<number> {
  const [row] = await db.sql.unsafe(
    `select count(*)::int as n from ${db.quoted}.pgrr_responder r join ${db.quoted}.pgrr_channel c on c.id = r.channel_id where c.name = $1`,
    [channel],
  )
  return row!.n as number
}

test('a live responder is listed with its id, host, pid and concurrency', { timeout: 60_000 }, async (t) => {
  const before = Date.now()
  const server = await responder(t, 'obs.s.live', (payload: unknown) => payload, { concurrency: 3 })
  const status = await getStatus({ ...db.options, channels: ['obs.s.live'] })
  assert.equal(status.schema, db.schema)
  assert.ok(status.notificationQueueUsage >= 0 && status.notificationQueueUsage <= 1)
  assert.ok(Math.abs(status.time.getTime() - Date.now()) < 60_000)
  const [channel] = status.channels
  assert.equal(channel?.channel, 'obs.s.live')
  assert.equal(channel.responders.length, 1)
  const [live] = channel.responders
  assert.deepEqual(
    { id: live!.id, host: live!.host, pid: live!.pid, concurrency: live!.concurrency },
    { id: server.responderId, host: hostname(), pid: process.pid, concurrency: 3 },
  )
  assert.ok(live!.since.getTime() >= before - 5000 && live!.since.getTime() <= Date.now() + 5000)
  assert.deepEqual({ backlog: channel.backlog, inFlight: channel.inFlight, oldest: channel.oldestPendingMs }, { backlog: 0, inFlight: 0, oldest: null })
})

test('backlog, in-flight count and oldest waiting age while the responder is busy', { timeout: 60_000 }, async (t) => {
  const release = deferred()
  await responder(t, 'obs.s.busy', async (payload: unknown) => {
    await release.promise
    return payload
  }, { concurrency: 1 })
  const client = await connect({ ...db.options, poolSize: 2 })
  t.after(() => client.close())
  const replies = ['1', '2', '3'].map((payload) => client.request('obs.s.busy', payload, { timeoutMs: 30_000 }))

  const busy = await waitFor(async () => {
    const channel = await channelStatus('obs.s.busy')
    return channel.backlog === 2 && channel.inFlight === 1 ? channel : undefined
  }, { message: 'backlog 2 and 1 in flight' })
  assert.ok(busy.oldestPendingMs !== null && busy.oldestPendingMs >= 0 && busy.oldestPendingMs < 30_000, `oldest ${busy.oldestPendingMs}`)
  assert.equal(busy.responders.length, 1)

  release.resolve()
  assert.deepEqual(await Promise.all(replies), ['1', '2', '3'])
  const idle = await channelStatus('obs.s.busy')
  assert.deepEqual({ backlog: idle.backlog, inFlight: idle.inFlight, oldest: idle.oldestPendingMs }, { backlog: 0, inFlight: 0, oldest: null })
})

test('requests and errors per second over the last minute come from the responders\' reports', { timeout: 60_000 }, async (t) => {
  await responder(t, 'obs.s.rates', (payload: unknown) => {
    if (payload === 'fail') throw new Error('no')
    return payload
  }, { sweepIntervalMs: 100 })
  const client = await connect({ ...db.options, poolSize: 1 })
  t.after(() => client.close())
  for (const payload of ['a', 'b', 'c', 'd', 'e']) await client.request('obs.s.rates', payload)
  await rejection(client.request('obs.s.rates', 'fail'))
  const channel = await waitFor(async () => {
    const status = await channelStatus('obs.s.rates')
    return status.responders[0]?.handledTotal === 6 ? status : undefined
  }, { message: 'the responder reported 6 handled' })
  assert.equal(channel.requestsPerSecond, 6 / 60)
  assert.equal(channel.errorsPerSecond, 1 / 60)
  const [live] = channel.responders
  assert.deepEqual({ failedTotal: live!.failedTotal, handledLastMinute: live!.handledLastMinute, running: live!.running }, { failedTotal: 1, handledLastMinute: 6, running: 0 })
  assert.ok(live!.reportedAt instanceof Date)
})

test('a responder disappears once closed (its row stays until a sweep, but its lock is gone) or drained', { timeout: 60_000 }, async (t) => {
  const first = await responder(t, 'obs.s.gone', (payload: unknown) => payload, { sweepIntervalMs: 600_000 })
  // No sweep during the test: it would delete the closed responder's row.
  const second = await responder(t, 'obs.s.gone', (payload: unknown) => payload, { sweepIntervalMs: 600_000 })
  assert.deepEqual((await channelStatus('obs.s.gone')).responders.map((r) => r.id), [first.responderId, second.responderId].sort((a, b) => a! - b!))

  await first.close()
  assert.deepEqual((await channelStatus('obs.s.gone')).responders.map((r) => r.id), [second.responderId])
  assert.equal(await responderRows('obs.s.gone'), 2, 'the closed responder\'s row is still there: liveness is the lock')

  await second.drain()
  assert.deepEqual((await channelStatus('obs.s.gone')).responders, [])
})

test('a responder whose process is killed disappears at once', { timeout: 60_000 }, async (t) => {
  const child = await startResponderProcess({ options: db.options, channel: 'obs.s.killed', behaviour: 'echo' })
  t.after(() => child.kill())
  assert.deepEqual((await channelStatus('obs.s.killed')).responders.map((r) => [r.id, r.pid]), [[child.responderId, child.child.pid]])
  await child.kill()
  await waitFor(async () => (await channelStatus('obs.s.killed')).responders.length === 0, { timeoutMs: 5000, message: 'the killed responder is gone' })
})

test('without a channel filter every channel of the schema is listed, by name', { timeout: 60_000 }, async (t) => {
  await responder(t, 'obs.s.all.b', (payload: unknown) => payload)
  await responder(t, 'obs.s.all.a', (payload: unknown) => payload)
  const names = (await getStatus(db.options)).channels.map((c) => c.channel)
  assert.deepEqual(names, [...names].sort())
  assert.ok(names.includes('obs.s.all.a') && names.includes('obs.s.all.b'), names.join(', '))
  const [unmigrated] = [await rejection(getStatus({ ...db.options, schema: 'pgrr_test_no_such_schema' }))]
  assert.equal(unmigrated!.code, 'SCHEMA_VERSION')
})

interface Run {
  code: number | null
  stdout: string
  stderr: string
}

/** Runs `pgrr status …`; `whenStdout` gets the output so far and may return true to send SIGINT. */
function pgrrStatus(args: string[], whenStdout?: (stdout: string) => boolean): Promise<Run> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'status', '--schema', db.schema, ...args], {
    cwd: repoRoot,
    env: { ...process.env, DATABASE_URL: db.options.connectionString },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let stdout = ''
  let stderr = ''
  let signalled = false
  const killer = setTimeout(() => child.kill('SIGKILL'), 30_000)
  child.stdout.setEncoding('utf8').on('data', (text: string) => {
    stdout += text
    if (!signalled && whenStdout?.(stdout)) {
      signalled = true
      child.kill('SIGINT')
    }
  })
  child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text))
  return new Promise((resolve) => {
    child.once('close', (code) => {
      clearTimeout(killer)
      resolve({ code, stdout, stderr })
    })
  })
}

test('pgrr status prints a table and the live responders; --json prints the same as JSON', { timeout: 60_000 }, async (t) => {
  const server = await responder(t, 'obs.s.cli', (payload: unknown) => payload, { concurrency: 4 })
  const text = await pgrrStatus(['obs.s.cli'])
  assert.equal(text.code, 0, text.stderr)
  const lines = text.stdout.split('\n')
  assert.match(lines[0]!, new RegExp(`^schema ${db.schema} at \\S+Z, NOTIFY queue \\d+\\.\\d+% used$`))
  assert.match(text.stdout, /^CHANNEL +RESPONDERS +BACKLOG +IN FLIGHT +OLDEST WAITING +REQ\/S +ERR\/S$/m)
  assert.match(text.stdout, /^obs\.s\.cli +1 +0 +0 +- +0 +0$/m)
  assert.match(text.stdout, new RegExp(`^  id ${server.responderId} +${hostname()} +pid ${process.pid} +running 0/4 +up `, 'm'))

  const json = await pgrrStatus(['obs.s.cli', '--json'])
  assert.equal(json.code, 0, json.stderr)
  const parsed = JSON.parse(json.stdout) as { schema: string; channels: ChannelStatus[] }
  assert.equal(parsed.schema, db.schema)
  assert.equal(parsed.channels[0]?.channel, 'obs.s.cli')
  assert.equal(parsed.channels[0]?.responders[0]?.id, server.responderId)
})

test('pgrr status --watch prints again every interval until SIGINT, then exits 0', { timeout: 60_000 }, async (t) => {
  await responder(t, 'obs.s.watch', (payload: unknown) => payload)
  const json = await pgrrStatus(['--watch', '0.2', '--json', 'obs.s.watch'], (stdout) => stdout.split('\n').length > 3)
  assert.equal(json.code, 0, json.stderr)
  const objects = json.stdout.trim().split('\n').map((line) => JSON.parse(line) as { channels: ChannelStatus[] })
  assert.ok(objects.length >= 3, `${objects.length} lines`)
  for (const status of objects) assert.equal(status.channels[0]?.channel, 'obs.s.watch')

  const text = await pgrrStatus(['obs.s.watch', '--watch=0.2'], (stdout) => stdout.split('CHANNEL').length > 2)
  assert.equal(text.code, 0, text.stderr)
  assert.ok(text.stdout.split('CHANNEL').length > 2)
})

/** A running `pgrr status --watch` whose stdout lines can be waited for. */
class Watch {
  readonly child: ChildProcess
  readonly lines: string[] = []
  stderr = ''
  readonly exited: Promise<number | null>
  #partial = ''
  #wake: (() => void) | undefined

  constructor(schema: string, args: string[]) {
    this.child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'status', '--schema', schema, ...args], {
      cwd: repoRoot,
      env: { ...process.env, DATABASE_URL: db.options.connectionString },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    this.child.stdout!.setEncoding('utf8').on('data', (text: string) => {
      const parts = (this.#partial + text).split('\n')
      this.#partial = parts.pop()!
      this.lines.push(...parts)
      this.#wake?.()
    })
    this.child.stderr!.setEncoding('utf8').on('data', (text: string) => (this.stderr += text))
    this.exited = once(this.child, 'close').then(([code]) => {
      this.#wake?.()
      return code as number | null
    })
  }

  /** Resolves with the index of the first line from `from` on that `predicate` accepts. */
  async waitForLine(predicate: (line: string) => boolean, from = 0): Promise<number> {
    for (;;) {
      const index = this.lines.findIndex((line, i) => i >= from && predicate(line))
      if (index !== -1) return index
      if (this.child.exitCode !== null || this.child.signalCode !== null) {
        throw new Error(`pgrr status exited (${this.child.exitCode ?? this.child.signalCode}); stdout:\n${this.lines.join('\n')}\nstderr:\n${this.stderr}`)
      }
      await new Promise<void>((resolve) => (this.#wake = resolve))
    }
  }
}

test('pgrr status --watch stops once its stdout is closed (pgrr status --watch | head -1)', { timeout: 60_000 }, async (t) => {
  const watch = new Watch(db.schema, ['--watch', '0.1'])
  t.after(() => void (watch.child.exitCode === null && watch.child.kill('SIGKILL')))
  await watch.waitForLine((line) => line.startsWith('schema '))
  // The reader goes away: the next status meets EPIPE.
  watch.child.stdout!.destroy()
  assert.equal(await watch.exited, 0, watch.stderr)
})

test('pgrr status --watch says the status is unavailable while reads fail, never repeating the last one', { timeout: 60_000 }, async (t) => {
  const gone = await createTestSchema('obs_status_gone')
  const away = `${gone.schema}_away`
  t.after(async () => {
    await gone.sql.unsafe(`alter schema "${away}" rename to ${gone.quoted}`).catch(() => undefined)
    await gone.drop()
  })
  const watch = new Watch(gone.schema, ['--watch', '0.1', '--json'])
  t.after(() => void (watch.child.exitCode === null && watch.child.kill('SIGKILL')))
  type Line = { schema: string; time: string; channels?: unknown[]; error?: { code: string | null; message: string } }
  const parse = (line: string) => JSON.parse(line) as Line
  await watch.waitForLine((line) => Array.isArray(parse(line).channels))

  // The schema disappears: reads fail from now on.
  await gone.sql.unsafe(`alter schema ${gone.quoted} rename to "${away}"`)
  const renamedAt = watch.lines.length
  // At most one read begun before the rename may still succeed; after it, every read fails.
  const failed = await watch.waitForLine((line) => parse(line).error !== undefined || watch.lines.length > renamedAt + 5, renamedAt)
  const first = parse(watch.lines[failed]!)
  assert.ok(first.error !== undefined, `a failed read prints an error object, not the last status again:\n${watch.lines.slice(renamedAt).join('\n')}`)
  assert.deepEqual(Object.keys(first).sort(), ['error', 'schema', 'time'])
  assert.equal(first.schema, gone.schema)
  assert.equal(first.error.code, 'SCHEMA_VERSION')
  assert.ok(!Number.isNaN(Date.parse(first.time)))
  await watch.waitForLine(() => true, failed + 2)

  // Back: the status is printed again.
  const restoring = watch.lines.length
  for (const line of watch.lines.slice(failed, restoring)) assert.ok(parse(line).error !== undefined, `while the schema is away: ${line}`)
  await gone.sql.unsafe(`alter schema "${away}" rename to ${gone.quoted}`)
  await watch.waitForLine((line) => Array.isArray(parse(line).channels), restoring)
  watch.child.kill('SIGINT')
  assert.equal(await watch.exited, 0, watch.stderr)

  // The human form says so in one line.
  const error = Object.assign(new Error('database connection failed: connect ECONNREFUSED'), { code: 'CONNECTION' })
  assert.equal(
    formatUnavailable('s', new Date('2026-01-02T03:04:05.000Z'), error, false),
    'schema s at 2026-01-02T03:04:05.000Z: status unavailable: database connection failed: connect ECONNREFUSED\n',
  )
})

test('pgrr status names the channels asked for that do not exist', { timeout: 60_000 }, async (t) => {
  await responder(t, 'obs.s.named', (payload: unknown) => payload)
  const none = await pgrrStatus(['obs.s.no-such', 'obs.s.nor-this'])
  assert.equal(none.code, 0, none.stderr)
  assert.match(none.stdout, /^no channel named "obs\.s\.no-such", "obs\.s\.nor-this" in this schema \(no responder has ever registered for them\)$/m)
  assert.doesNotMatch(none.stdout, /no channels|CHANNEL/)

  const some = await pgrrStatus(['obs.s.named', 'obs.s.no-such'])
  assert.equal(some.code, 0, some.stderr)
  assert.match(some.stdout, /^no channel named "obs\.s\.no-such" in this schema \(no responder has ever registered for it\)$/m)
  assert.match(some.stdout, /^obs\.s\.named +1 /m)
})

test('pgrr status: usage errors exit 2, an unmigrated schema exits 8', { timeout: 60_000 }, async () => {
  const usage = await pgrrStatus(['--watch', '--bogus'])
  assert.equal(usage.code, 2)
  assert.match(usage.stderr, /^pgrr: status: /)
  const badWatch = await pgrrStatus(['--watch=0'])
  assert.equal(badWatch.code, 2)
  const unmigrated = await pgrrStatus(['--schema', 'pgrr_test_no_such_schema'])
  assert.equal(unmigrated.code, 8, unmigrated.stderr)
})

test('the session whose open transaction holds back cleanup the longest is named, and pgrr status points it out', { timeout: 60_000 }, async (t) => {
  // onnotice: the cleanup's rollback, when the test got through, warns "there is no transaction in progress".
  const holder = postgres(databaseUrl(), { max: 1, onnotice: () => {}, connection: { application_name: 'pgrr-test-holder' } })
  const session = await holder.reserve()
  t.after(async () => {
    await session.unsafe('rollback').catch(() => undefined)
    session.release()
    await holder.end({ timeout: 5 })
  })
  const [{ pid }] = (await session.unsafe('select pg_backend_pid() as pid')) as [{ pid: number }]
  // A snapshot held by an open transaction: what keeps VACUUM from removing dead rows.
  await session.unsafe('begin isolation level repeatable read')
  await session.unsafe('select 1')
  // Transactions that began before this one (other test files') end soon; then this one is the oldest.
  const status = await waitFor(async () => {
    const read = await getStatus(db.options)
    return read.oldestTransaction?.pid === pid ? read : undefined
  }, { timeoutMs: 30_000, message: 'the holder is reported as the oldest transaction' })
  assert.equal(status.oldestTransaction!.applicationName, 'pgrr-test-holder')
  assert.equal(status.oldestTransaction!.state, 'idle in transaction')
  assert.ok(status.oldestTransaction!.ageMs >= 0 && status.oldestTransaction!.ageMs < 60_000, String(status.oldestTransaction!.ageMs))
  // The human form names it once it has been open for OLD_TRANSACTION_MS, and not before.
  const warning = new RegExp(`^a transaction open for 2m 5s \\(pid ${pid}, pgrr-test-holder, idle in transaction\\) keeps VACUUM from removing dead rows`, 'm')
  assert.match(formatStatus({ ...status, oldestTransaction: { ...status.oldestTransaction!, ageMs: 125_000 } }), warning)
  assert.doesNotMatch(
    formatStatus({ ...status, oldestTransaction: { ...status.oldestTransaction!, ageMs: OLD_TRANSACTION_MS - 1 } }),
    /keeps VACUUM/,
  )
  await session.unsafe('commit')
  await waitFor(async () => (await getStatus(db.options)).oldestTransaction?.pid !== pid, { message: 'the holder is no longer reported once it committed' })
  // READ COMMITTED holds no snapshot between statements, but a transaction that has an id holds back
  // cleanup all the same.
  await session.unsafe('begin')
  await session.unsafe('select pg_current_xact_id()')
  await waitFor(async () => (await getStatus(db.options)).oldestTransaction?.pid === pid, { timeoutMs: 30_000, message: 'a transaction with an id is reported' })
  await session.unsafe('rollback')
  await waitFor(async () => (await getStatus(db.options)).oldestTransaction?.pid !== pid, { message: 'the holder is no longer reported once it rolled back' })
})
