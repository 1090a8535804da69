// OpenTelemetry tracing (src/tracing.ts) with the SDK's in-memory exporter: the caller's CLIENT span is the
// parent of the responder's SERVER span, the trace context travels as a W3C traceparent header (also from a
// SQL caller), and the SERVER span is current while the handler runs. Also: headers reach ctx.headers from
// TypeScript and from SQL callers, and createTracing() without @opentelemetry/api fails clearly.
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import path from 'node:path'
import { after, before, beforeEach, describe, test, type TestContext } from 'node:test'
import { context, SpanKind, SpanStatusCode, trace, type SpanContext } from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-base'
import { connect, serve, type Handler, type HandlerContext, type Telemetry } from '../src/index.ts'
import { createTracing } from '../src/tracing.ts'
import { deferred, rejection, repoRoot, useTestSchema } from './helpers.ts'

const db = useTestSchema('obs_tracing')
const exporter = new InMemorySpanExporter()
const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] })
const tracer = provider.getTracer('pgrr-test')

before(() => {
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable())
})
after(async () => {
  context.disable()
  await provider.shutdown()
})
beforeEach(() => exporter.reset())

async function responder(t: TestContext, channel: string, handler: Handler, telemetry?: Telemetry): Promise<void> {
  const server = await serve({ ...db.options, ...(telemetry ? { telemetry } : {}) }, channel, handler)
  t.after(() => server.close())
}

async function caller(t: TestContext, telemetry?: Telemetry) {
  const client = await connect({ ...db.options, poolSize: 1, ...(telemetry ? { telemetry } : {}) })
  t.after(() => client.close())
  return client
}

function spanNamed(name: string): ReadableSpan {
  const spans = exporter.getFinishedSpans().filter((span) => span.name === name)
  assert.equal(spans.length, 1, `one span named ${name}; finished: ${exporter.getFinishedSpans().map((s) => s.name).join(', ')}`)
  return spans[0]!
}

function parentOf(span: ReadableSpan): SpanContext | undefined {
  return span.parentSpanContext
}

interface Seen {
  ctx: HandlerContext
  active: SpanContext | undefined
}

test('TS caller → TS responder: CLIENT span, its traceparent header, and a SERVER child span current in the handler', { timeout: 60_000 }, async (t) => {
  const tracing = createTracing({ tracer })
  const seen = deferred<Seen>()
  await responder(t, 'obs.t.echo', async (payload: unknown, ctx) => {
    seen.resolve({ ctx, active: trace.getActiveSpan()?.spanContext() })
    // A span the handler makes nests in the SERVER span.
    tracer.startActiveSpan('inside handler', (span) => span.end())
    await new Promise((resolve) => setTimeout(resolve, 5))
    return payload
  }, tracing)
  const client = await caller(t, tracing)

  const rootContext = await tracer.startActiveSpan('test root', async (root) => {
    assert.equal(await client.request('obs.t.echo', 'traced', { headers: { tenant: 'acme' } }), 'traced')
    root.end()
    return root.spanContext()
  })

  const clientSpan = spanNamed('pgrr request obs.t.echo')
  const serverSpan = spanNamed('pgrr handle obs.t.echo')
  const inner = spanNamed('inside handler')
  const { ctx, active } = await seen.promise
  const traceId = rootContext.traceId

  assert.equal(clientSpan.kind, SpanKind.CLIENT)
  assert.equal(clientSpan.spanContext().traceId, traceId)
  assert.equal(parentOf(clientSpan)?.spanId, rootContext.spanId)
  assert.equal(clientSpan.status.code, SpanStatusCode.UNSET)
  assert.equal(clientSpan.attributes['messaging.system'], 'pgrr')
  assert.equal(clientSpan.attributes['messaging.destination.name'], 'obs.t.echo')
  assert.equal(clientSpan.attributes['pgrr.outcome'], 'ok')

  assert.equal(ctx.headers.traceparent, `00-${traceId}-${clientSpan.spanContext().spanId}-01`)
  assert.equal(ctx.headers.tenant, 'acme')

  assert.equal(serverSpan.kind, SpanKind.SERVER)
  assert.equal(serverSpan.spanContext().traceId, traceId)
  assert.equal(parentOf(serverSpan)?.spanId, clientSpan.spanContext().spanId)
  assert.equal(parentOf(serverSpan)?.isRemote, true)
  assert.deepEqual(
    {
      system: serverSpan.attributes['messaging.system'],
      channel: serverSpan.attributes['messaging.destination.name'],
      id: serverSpan.attributes['messaging.message.id'],
      attempt: serverSpan.attributes['pgrr.attempt'],
      outcome: serverSpan.attributes['pgrr.outcome'],
    },
    { system: 'pgrr', channel: 'obs.t.echo', id: ctx.id, attempt: 1, outcome: 'ok' },
  )
  assert.equal(typeof serverSpan.attributes['pgrr.queued_ms'], 'number')

  assert.equal(active?.spanId, serverSpan.spanContext().spanId, 'the SERVER span is the active span in the handler')
  assert.equal(parentOf(inner)?.spanId, serverSpan.spanContext().spanId)
})

test('failed requests end both spans with status ERROR and the error code', { timeout: 60_000 }, async (t) => {
  const tracing = createTracing({ tracer })
  await responder(t, 'obs.t.fail', () => {
    throw Object.assign(new Error('it broke'), { code: 'BOOM' })
  }, tracing)
  const client = await caller(t, tracing)
  assert.equal((await rejection(client.request('obs.t.fail', 'x'))).code, 'REMOTE_ERROR')
  assert.equal((await rejection(client.request('obs.t.nobody', 'x'))).code, 'NO_RESPONDERS')

  const clientSpan = spanNamed('pgrr request obs.t.fail')
  assert.equal(clientSpan.status.code, SpanStatusCode.ERROR)
  assert.equal(clientSpan.status.message, 'it broke')
  assert.equal(clientSpan.attributes['error.type'], 'REMOTE_ERROR')
  assert.equal(clientSpan.events[0]?.name, 'exception')
  const serverSpan = spanNamed('pgrr handle obs.t.fail')
  assert.equal(serverSpan.status.code, SpanStatusCode.ERROR)
  assert.equal(serverSpan.status.message, 'it broke')
  assert.equal(serverSpan.attributes['error.type'], 'BOOM')
  assert.equal(parentOf(serverSpan)?.spanId, clientSpan.spanContext().spanId)
  // Without a root span the CLIENT span starts a trace of its own.
  const lonely = spanNamed('pgrr request obs.t.nobody')
  assert.equal(parentOf(lonely), undefined)
  assert.equal(lonely.attributes['error.type'], 'NO_RESPONDERS')
})

test('a SQL caller passing a traceparent header gets a SERVER span with that parent', { timeout: 60_000 }, async (t) => {
  const tracing = createTracing({ tracer })
  const seen = deferred<HandlerContext>()
  await responder(t, 'obs.t.sql', (payload: unknown, ctx) => {
    seen.resolve(ctx)
    return `got ${String(payload)}`
  }, tracing)
  const traceId = '4bf92f3577b34da6a3ce929d0e0e4736'
  const spanId = '00f067aa0ba902b7'
  const traceparent = `00-${traceId}-${spanId}-01`
  const [sent] = await db.sql.unsafe(
    `select ${db.quoted}.request('obs.t.sql', 'from sql'::text, '10 s', jsonb_build_object('traceparent', $1::text, 'tracestate', 'vendor=x')) as id`,
    [traceparent],
  )
  const [reply] = await db.sql.unsafe(`select ${db.quoted}.await_reply($1::bigint) as reply`, [sent!.id])
  assert.equal(reply!.reply, 'got from sql')

  const ctx = await seen.promise
  assert.deepEqual(ctx.headers, { traceparent, tracestate: 'vendor=x' })
  const serverSpan = spanNamed('pgrr handle obs.t.sql')
  assert.equal(serverSpan.kind, SpanKind.SERVER)
  assert.equal(serverSpan.spanContext().traceId, traceId)
  assert.equal(parentOf(serverSpan)?.spanId, spanId)
  assert.equal(parentOf(serverSpan)?.traceState?.get('vendor'), 'x')
  assert.equal(serverSpan.attributes['messaging.message.id'], String(sent!.id))
})

test('a traceparent the TS caller put in its headers is replaced by its CLIENT span\'s', { timeout: 60_000 }, async (t) => {
  const tracing = createTracing({ tracer })
  const seen = deferred<HandlerContext>()
  await responder(t, 'obs.t.replace', (payload: unknown, ctx) => {
    seen.resolve(ctx)
    return payload
  }, tracing)
  const client = await caller(t, tracing)
  await client.request('obs.t.replace', 'x', { headers: { traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' } })
  const clientSpan = spanNamed('pgrr request obs.t.replace')
  const { traceId, spanId } = clientSpan.spanContext()
  assert.equal((await seen.promise).headers.traceparent, `00-${traceId}-${spanId}-01`)
  assert.equal(parentOf(spanNamed('pgrr handle obs.t.replace'))?.spanId, spanId)
})

test('an invalid traceparent is ignored: the SERVER span starts a new trace', { timeout: 60_000 }, async (t) => {
  const tracing = createTracing({ tracer })
  await responder(t, 'obs.t.bad', (payload: unknown) => payload, tracing)
  const client = await caller(t)
  assert.equal(await client.request('obs.t.bad', 'x', { headers: { traceparent: '00-00000000000000000000000000000000-00f067aa0ba902b7-01' } }), 'x')
  assert.equal(parentOf(spanNamed('pgrr handle obs.t.bad')), undefined)
})

describe('headers reach the handler (no telemetry)', () => {
  test('from a TypeScript caller', { timeout: 60_000 }, async (t) => {
    const seen: HandlerContext[] = []
    await responder(t, 'obs.h.ts', (payload: unknown, ctx) => {
      seen.push(ctx)
      return payload
    })
    const client = await caller(t)
    const headers = { tenant: 'acme', 'x-request-id': 'r-1', unicode: 'žluťoučký 🐘', empty: '' }
    await client.request('obs.h.ts', 'x', { headers })
    await client.request('obs.h.ts', { json: true }, { headers: { only: 'one' } })
    await client.request('obs.h.ts', 'y')
    assert.deepEqual(seen.map((ctx) => ctx.headers), [headers, { only: 'one' }, {}])
  })

  test('from a SQL caller (text and JSON payloads), and none when none were sent', { timeout: 60_000 }, async (t) => {
    const seen: HandlerContext[] = []
    await responder(t, 'obs.h.sql', (payload: unknown, ctx) => {
      seen.push(ctx)
      return payload
    })
    for (const statement of [
      `select ${db.quoted}.request('obs.h.sql', 'x'::text, '10 s', '{"tenant":"acme","trace":"t-1"}'::jsonb) as id`,
      `select ${db.quoted}.request('obs.h.sql', '{"n":1}'::jsonb, '10 s', '{"tenant":"json"}'::jsonb) as id`,
      `select ${db.quoted}.request('obs.h.sql', 'y'::text) as id`,
    ]) {
      const [row] = await db.sql.unsafe(statement)
      await db.sql.unsafe(`select ${db.quoted}.await_reply($1::bigint)`, [row!.id])
    }
    assert.deepEqual(seen.map((ctx) => ctx.headers), [{ tenant: 'acme', trace: 't-1' }, { tenant: 'json' }, {}])
  })
})

test('createTracing() without @opentelemetry/api installed throws an error that says what to install', { timeout: 30_000 }, async () => {
  const fixture = path.join(repoRoot, 'test', 'fixtures', 'observability-no-otel.ts')
  const child = spawn(process.execPath, ['--import', 'tsx', fixture], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', (text: string) => (stdout += text))
  child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text))
  const code = await new Promise<number | null>((resolve) => child.once('close', resolve))
  assert.equal(code, 0, stderr)
  assert.equal(stdout, 'createTracing() needs the package @opentelemetry/api: npm install @opentelemetry/api\n')
})
