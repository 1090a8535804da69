/**
 * OpenTelemetry tracing: a {@link Telemetry} that gives every request a CLIENT span on the caller and a
 * SERVER span, its child, on the responder. The caller's trace context travels in the request's headers as a
 * W3C `traceparent` (and `tracestate`), so SQL callers can join a trace too by passing one in
 * `request(channel, payload, timeout, headers)`.
 *
 * `@opentelemetry/api` is an optional peer dependency: it is loaded when `createTracing()` is called, and
 * `createTracing()` throws when it is not installed. Nothing else in the library needs it.
 */
import type * as OpenTelemetry from '@opentelemetry/api'
import { requireOptional } from './optional-dependency.ts'
import type { Outcome, Telemetry } from './telemetry.ts'

type Api = typeof OpenTelemetry

/**
 * An OpenTelemetry `Tracer`. Typed loosely so that this library's type declarations do not need
 * `@opentelemetry/api` where tracing is not used; pass what `trace.getTracer()` returns.
 */
export interface TracerLike {
  startSpan(name: string, ...rest: never[]): unknown
}

/** Options of {@link createTracing}. */
export interface TracingOptions {
  /** The tracer spans are started with. @default trace.getTracer('pg-request-reply') (the global provider) */
  tracer?: TracerLike
}

const instrumentationName = 'pg-request-reply'
const traceparentPattern = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:-.*)?$/

/**
 * Creates the tracing {@link Telemetry}. Pass it as the `telemetry` option (alone or with the metrics':
 * `telemetry: [metrics.telemetry, createTracing()]`) of the callers and of the responders.
 *
 * Caller: a CLIENT span `pgrr request <channel>`, child of the active context, from `request()` to the
 * outcome; its context is written to the request's headers (the registered propagator's fields, and
 * always `traceparent`). Responder: a SERVER span `pgrr handle <channel>`, child of the context found in the
 * headers (a new trace without one), current while the handler runs, so the handler's own spans nest in it.
 * Both end with status ERROR and `error.type` set to the error code when the outcome is not `ok`.
 *
 * Throws `MissingDependencyError` (code `MISSING_DEPENDENCY`) when `@opentelemetry/api` is not installed.
 */
export function createTracing(options: TracingOptions = {}): Telemetry {
  const api = loadApi()
  const tracer = (options.tracer as OpenTelemetry.Tracer | undefined) ?? api.trace.getTracer(instrumentationName)
  return {
    requestStarted(info) {
      const parent = api.context.active()
      const span = tracer.startSpan(
        `pgrr request ${info.channel}`,
        {
          kind: api.SpanKind.CLIENT,
          attributes: { 'messaging.system': 'pgrr', 'messaging.destination.name': info.channel },
        },
        parent,
      )
      const spanContext = span.spanContext()
      if (api.trace.isSpanContextValid(spanContext)) {
        api.propagation.inject(api.trace.setSpan(parent, span), info.headers)
        // Whatever propagator the process registered (often none), responders read traceparent; one the
        // caller put in the headers itself is replaced, as this span is the responder's parent.
        info.headers.traceparent = formatTraceparent(spanContext)
        const state = spanContext.traceState?.serialize()
        if (state) info.headers.tracestate = state
      }
      return { end: (outcome, error) => finish(api, span, outcome, error) }
    },

    handlerStarted(info) {
      const parent = extract(api, info.headers)
      const span = tracer.startSpan(
        `pgrr handle ${info.channel}`,
        {
          kind: api.SpanKind.SERVER,
          attributes: {
            'messaging.system': 'pgrr',
            'messaging.destination.name': info.channel,
            'messaging.message.id': info.id,
            'pgrr.attempt': info.attempt,
            'pgrr.queued_ms': info.queuedMs,
          },
        },
        parent,
      )
      const active = api.trace.setSpan(parent, span)
      return {
        run: (fn) => api.context.with(active, fn),
        end: (outcome, error) => finish(api, span, outcome, error),
      }
    },
  }
}

function finish(api: Api, span: OpenTelemetry.Span, outcome: Outcome, error: unknown): void {
  span.setAttribute('pgrr.outcome', outcome)
  if (outcome !== 'ok') {
    span.setAttribute('error.type', outcome)
    const message = error instanceof Error ? error.message : typeof error === 'string' ? error : outcome
    if (error instanceof Error) span.recordException(error)
    span.setStatus({ code: api.SpanStatusCode.ERROR, message })
  }
  span.end()
}

/** The caller's context from the headers: the registered propagator first, then `traceparent` itself. */
function extract(api: Api, headers: Readonly<Record<string, string>>): OpenTelemetry.Context {
  const extracted = api.propagation.extract(api.ROOT_CONTEXT, headers)
  if (api.trace.getSpanContext(extracted) !== undefined) return extracted
  const spanContext = parseTraceparent(api, headers.traceparent, headers.tracestate)
  return spanContext === undefined ? extracted : api.trace.setSpanContext(extracted, spanContext)
}

function formatTraceparent(spanContext: OpenTelemetry.SpanContext): string {
  const flags = (spanContext.traceFlags & 0xff).toString(16).padStart(2, '0')
  return `00-${spanContext.traceId}-${spanContext.spanId}-${flags}`
}

/** A W3C traceparent (version 00 and later versions' first four fields), or undefined when invalid. */
function parseTraceparent(api: Api, traceparent: string | undefined, tracestate: string | undefined): OpenTelemetry.SpanContext | undefined {
  const match = traceparent === undefined ? null : traceparentPattern.exec(traceparent.trim())
  if (match === null) return undefined
  const [, version, traceId, spanId, flags] = match as unknown as [string, string, string, string, string]
  if (version === 'ff' || (version === '00' && traceparent!.trim().length !== 55)) return undefined
  const spanContext: OpenTelemetry.SpanContext = {
    traceId,
    spanId,
    traceFlags: Number.parseInt(flags, 16) & 1,
    isRemote: true,
    ...(tracestate ? { traceState: api.createTraceState(tracestate) } : {}),
  }
  return api.trace.isSpanContextValid(spanContext) ? spanContext : undefined
}

function loadApi(): Api {
  // Loaded on demand: an optional peer dependency. Its CommonJS build is the one Node resolves for import
  // too, and it keeps its registrations on globalThis, so this sees the application's providers.
  return requireOptional<Api>('@opentelemetry/api', 'createTracing() needs the package @opentelemetry/api: npm install @opentelemetry/api')
}
