// Prometheus metrics (src/metrics.ts) fed by a real client and responder: counters by outcome, in-flight
// gauges, histograms, claim, send and reply batches, reconnects after pg_terminate_backend, and the backlog gauges read from
// the database at scrape time (also when that read fails: the scrape still works).
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { createServer, type Socket } from 'node:net'
import { test, type TestContext } from 'node:test'
import { Registry } from 'prom-client'
import { connect, serve, type Handler, type Server, type ServeOptions } from '../src/index.ts'
import { createMetrics, type Metrics } from '../src/metrics.ts'
import { deferred, rejection, useTestSchema, waitFor } from './helpers.ts'

const db = useTestSchema('obs_metrics')

/** The value of one series, or undefined when it is absent. `name` may end in _count or _sum of a histogram. */
async function value(registry: Registry, name: string, labels: Record<string, string> = {}): Promise<number | undefined> {
  const suffix = /_(count|sum)$/.exec(name)?.[0]
  const metric = registry.getSingleMetric(name) ?? (suffix === undefined ? undefined : registry.getSingleMetric(name.slice(0, -suffix.length)))
  assert.ok(metric, `metric ${name} is registered`)
  const { values } = await metric.get()
  const wanted = Object.entries(labels)
  const found = values.find((v) => {
    const seriesName = (v as { metricName?: string }).metricName ?? name
    const keys = Object.keys(v.labels)
    return seriesName === name && keys.length === wanted.length && wanted.every(([k, l]) => String(v.labels[k]) === l)
  })
  return found?.value
}

function metricsFor(t: TestContext, options: Parameters<typeof createMetrics>[0] = {}): Metrics {
  const metrics = createMetrics(options)
  t.after(() => metrics.close())
  return metrics
}

async function serverWith(t: TestContext, metrics: Metrics, channel: string, handler: Handler, options: ServeOptions = {}): Promise<Server> {
  const server = await serve({ ...db.options, telemetry: metrics.telemetry }, channel, handler, options)
  t.after(() => server.close())
  return server
}

class CustomError extends Error {
  readonly code = 'E_CUSTOM_UNBOUNDED'
}

test('callers and responders count, time and gauge requests by channel and outcome', { timeout: 60_000 }, async (t) => {
  const metrics = metricsFor(t)
  const { registry } = metrics
  await serverWith(t, metrics, 'obs.m.work', async (payload: unknown, ctx) => {
    if (payload === 'fail') throw new CustomError('failed on purpose')
    if (payload === 'invalid') return undefined
    if (payload === 'hang') {
      return new Promise((_resolve, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason as Error), { once: true }))
    }
    return payload
  }, { concurrency: 4 })
  const client = await connect({ ...db.options, poolSize: 2, telemetry: metrics.telemetry })
  t.after(() => client.close())

  for (const payload of ['a', 'b', 'c']) assert.equal(await client.request('obs.m.work', payload), payload)
  assert.equal((await rejection(client.request('obs.m.work', 'fail'))).code, 'REMOTE_ERROR')
  assert.equal((await rejection(client.request('obs.m.work', 'invalid'))).code, 'REMOTE_ERROR')
  assert.equal((await rejection(client.request('obs.m.work', 'hang', { timeoutMs: 300 }))).code, 'TIMEOUT')
  assert.equal((await rejection(client.request('obs.m.nobody', 'x'))).code, 'NO_RESPONDERS')

  const work = { channel: 'obs.m.work' }
  assert.equal(await value(registry, 'pgrr_requests_total', { ...work, outcome: 'ok' }), 3)
  assert.equal(await value(registry, 'pgrr_requests_total', { ...work, outcome: 'REMOTE_ERROR' }), 2)
  assert.equal(await value(registry, 'pgrr_requests_total', { ...work, outcome: 'TIMEOUT' }), 1)
  assert.equal(await value(registry, 'pgrr_requests_total', { channel: 'obs.m.nobody', outcome: 'NO_RESPONDERS' }), 1)
  assert.equal(await value(registry, 'pgrr_requests_in_flight', work), 0)
  assert.equal(await value(registry, 'pgrr_request_duration_seconds_count', { ...work, outcome: 'ok' }), 3)

  // The hanging handler ends when its request is cancelled (or reaches its deadline).
  await waitFor(async () => (await value(registry, 'pgrr_handlers_running', work)) === 0, { message: 'no handler running' })
  assert.equal(await value(registry, 'pgrr_handled_total', { ...work, outcome: 'ok' }), 3)
  // A handler's own code is not a label value (unbounded): it counts as HANDLER_ERROR.
  assert.equal(await value(registry, 'pgrr_handled_total', { ...work, outcome: 'HANDLER_ERROR' }), 1)
  assert.equal(await value(registry, 'pgrr_handled_total', { ...work, outcome: 'INVALID_REPLY' }), 1)
  const hangOutcomes = ['CANCELLED', 'TIMEOUT'].map((outcome) => value(registry, 'pgrr_handled_total', { ...work, outcome }))
  assert.equal((await Promise.all(hangOutcomes)).reduce<number>((sum, v) => sum + (v ?? 0), 0), 1)
  assert.equal(await value(registry, 'pgrr_queue_wait_seconds_count', work), 6)
  assert.equal(await value(registry, 'pgrr_claim_batch_size_sum', work), 6)
  assert.equal(await value(registry, 'pgrr_handler_duration_seconds_count', { ...work, outcome: 'ok' }), 3)

  const text = await registry.metrics()
  assert.match(text, /^# TYPE pgrr_requests_total counter$/m)
  assert.match(text, /^pgrr_requests_total\{channel="obs.m.work",outcome="ok"\} 3$/m)
  assert.match(text, /^pgrr_handled_total\{channel="obs.m.work",outcome="HANDLER_ERROR"\} 1$/m)
  assert.doesNotMatch(text, /E_CUSTOM_UNBOUNDED/)
  // No backlog option: no backlog gauges.
  assert.doesNotMatch(text, /pgrr_backlog/)
})

test('send and reply statements carry many requests each, and their sizes add up to the requests', { timeout: 60_000 }, async (t) => {
  const metrics = metricsFor(t)
  const { registry } = metrics
  const channel = 'obs.m.batch'
  await serverWith(t, metrics, channel, (payload: unknown) => payload, { concurrency: 100 })
  const client = await connect({ ...db.options, poolSize: 2, telemetry: metrics.telemetry })
  t.after(() => client.close())
  const count = 40
  const payloads = Array.from({ length: count }, (_, k) => `p${k}`)
  // Made in one go: they wait together for the first send (or all go in it), and are handed over together.
  assert.deepEqual(await Promise.all(payloads.map((payload) => client.request(channel, payload))), payloads)
  assert.equal(await value(registry, 'pgrr_send_batch_size_sum'), count)
  const sends = (await value(registry, 'pgrr_send_batch_size_count')) ?? 0
  assert.ok(sends >= 1 && sends < count, `${sends} send statements for ${count} requests`)
  // The responder counts a reply statement once it has returned, which may be after the caller heard it.
  await waitFor(async () => (await value(registry, 'pgrr_reply_batch_size_sum', { channel })) === count, { message: 'every outcome counted' })
  const replies = (await value(registry, 'pgrr_reply_batch_size_count', { channel })) ?? 0
  assert.ok(replies >= 1 && replies < count, `${replies} reply statements for ${count} requests`)
  const text = await registry.metrics()
  assert.match(text, /^# TYPE pgrr_send_batch_size histogram$/m)
  assert.match(text, new RegExp(`^pgrr_reply_batch_size_count\\{channel="obs.m.batch"\\} ${replies}$`, 'm'))
})

test('a given registry and prefix are used, and one registry can be scraped by several clients', { timeout: 60_000 }, async (t) => {
  const registry = new Registry()
  const metrics = metricsFor(t, { registry, prefix: 'app_rpc_' })
  assert.equal(metrics.registry, registry)
  await serverWith(t, metrics, 'obs.m.prefix', (payload: unknown) => payload)
  const client = await connect({ ...db.options, poolSize: 1, telemetry: [metrics.telemetry] })
  t.after(() => client.close())
  await client.request('obs.m.prefix', 'x')
  assert.equal(await value(registry, 'app_rpc_requests_total', { channel: 'obs.m.prefix', outcome: 'ok' }), 1)
  assert.equal(await value(registry, 'app_rpc_handled_total', { channel: 'obs.m.prefix', outcome: 'ok' }), 1)
  assert.equal(registry.getSingleMetric('pgrr_requests_total'), undefined)
})

test('backlog gauges: waiting, claimed, oldest age and live responders, read at scrape time', { timeout: 60_000 }, async (t) => {
  const metrics = metricsFor(t, { backlog: { ...db.options, channels: ['obs.m.backlog'] } })
  const { registry } = metrics
  const release = deferred()
  const started = deferred()
  await serverWith(t, metrics, 'obs.m.backlog', async (payload: unknown) => {
    started.resolve()
    await release.promise
    return payload
  }, { concurrency: 1 })
  const client = await connect({ ...db.options, poolSize: 2 })
  t.after(() => client.close())
  const channel = { channel: 'obs.m.backlog' }

  assert.equal(await value(registry, 'pgrr_backlog', channel), 0)
  assert.equal(await value(registry, 'pgrr_responders', channel), 1)
  assert.equal(await value(registry, 'pgrr_backlog_oldest_seconds', channel), undefined)

  const replies = ['1', '2', '3'].map((payload) => client.request('obs.m.backlog', payload, { timeoutMs: 30_000 }))
  await started.promise
  await waitFor(async () => (await value(registry, 'pgrr_backlog', channel)) === 2, { message: 'backlog of 2' })
  assert.equal(await value(registry, 'pgrr_claimed', channel), 1)
  const oldest = await value(registry, 'pgrr_backlog_oldest_seconds', channel)
  assert.ok(oldest !== undefined && oldest >= 0 && oldest < 30, `oldest pending age ${oldest}`)
  const text = await registry.metrics()
  assert.match(text, /^pgrr_backlog\{channel="obs.m.backlog"\} 2$/m)

  release.resolve()
  assert.deepEqual(await Promise.all(replies), ['1', '2', '3'])
  await waitFor(async () => (await value(registry, 'pgrr_claimed', channel)) === 0, { message: 'nothing claimed' })
  assert.equal(await value(registry, 'pgrr_backlog', channel), 0)
  assert.equal(await value(registry, 'pgrr_backlog_errors_total'), 0)
})

test('a failing backlog read leaves the gauges out and counts the error; the scrape still works', { timeout: 60_000 }, async (t) => {
  const warnings: string[] = []
  const logger = { debug() {}, info() {}, error() {}, warn: (_obj: unknown, msg?: string) => void warnings.push(String(msg)) }
  const metrics = metricsFor(t, { backlog: { connectionString: db.options.connectionString, schema: 'pgrr_test_no_such_schema', logger } })
  const first = await metrics.registry.metrics()
  assert.match(first, /^pgrr_backlog_errors_total 1$/m)
  assert.doesNotMatch(first, /^pgrr_backlog\{/m)
  const second = await metrics.registry.metrics()
  assert.match(second, /^pgrr_backlog_errors_total 2$/m)
  assert.equal(warnings.length, 1, 'a run of failures is logged once')
  assert.match(warnings[0]!, /reading the backlog failed/)
})

test('a backlog read stuck connecting: the scrape ends after timeoutMs, close() cuts the attempt short', { timeout: 30_000 }, async (t) => {
  // A server that accepts connections and never answers.
  const sockets = new Set<Socket>()
  const silent = createServer((socket) => void sockets.add(socket.on('error', () => {}).resume()))
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve))
  // Whatever happened, the connection attempt ends here: the driver's timer will not.
  t.after(() => {
    for (const socket of sockets) socket.destroy()
    silent.close()
  })
  const port = (silent.address() as { port: number }).port
  // Only timers run by hand: the scrape's own, and the driver's connect timeout (10 s), which never fires.
  t.mock.timers.enable({ apis: ['setTimeout'] })
  const metrics = createMetrics({ backlog: { connectionString: `postgres://postgres@127.0.0.1:${port}/test`, timeoutMs: 1000 } })
  const accepted = once(silent, 'connection') as Promise<[Socket]>
  let scraped = false
  const scrape = metrics.registry.metrics().finally(() => (scraped = true))
  const [socket] = await accepted
  const closed = once(socket, 'close')
  const settle = () => new Promise((resolve) => setImmediate(resolve))
  t.mock.timers.tick(999)
  await settle()
  assert.equal(scraped, false, 'the scrape waits up to timeoutMs')
  t.mock.timers.tick(1)
  await settle()
  assert.equal(scraped, true, 'the scrape ends at timeoutMs')
  assert.match(await scrape, /^pgrr_backlog_errors_total 1$/m)
  // The connection attempt is still under way; close() does not wait for it (its timeout never fires here).
  await metrics.close()
  await closed
})

test('a reconnect of a responder session is counted (component responder)', { timeout: 60_000 }, async (t) => {
  const metrics = metricsFor(t)
  const server = await serverWith(t, metrics, 'obs.m.reconnect.r', (payload: unknown) => payload)
  const client = await connect({ ...db.options, poolSize: 1 })
  t.after(() => client.close())
  const firstId = server.responderId
  await db.sql.unsafe(`select pg_terminate_backend(r.backend_pid) from ${db.quoted}.pgrr_responder r where r.id = $1`, [firstId!])
  const counted = async () => ((await value(metrics.registry, 'pgrr_reconnects_total', { component: 'responder' })) ?? 0) === 1
  await waitFor(counted, { message: 'responder reconnect counted' })
  assert.notEqual(server.responderId, firstId)
  assert.equal(await client.request('obs.m.reconnect.r', 'after'), 'after')
  assert.equal(await value(metrics.registry, 'pgrr_reconnects_total', { component: 'listener' }), undefined)
})

test(
  'a reconnect of the LISTEN session is counted (component listener)',
  { timeout: 60_000 },
  async (t) => {
    const metrics = metricsFor(t)
    const applicationName = `pgrr-obs-listener-${randomBytes(4).toString('hex')}`
    const client = await connect({ ...db.options, poolSize: 1, applicationName, telemetry: metrics.telemetry })
    t.after(() => client.close())
    await db.sql`select pg_terminate_backend(pid) from pg_stat_activity where application_name = ${applicationName}`
    const counted = async () => ((await value(metrics.registry, 'pgrr_reconnects_total', { component: 'listener' })) ?? 0) >= 1
    await waitFor(counted, { timeoutMs: 30_000, message: 'listener reconnect counted' })
  },
)
