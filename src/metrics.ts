/**
 * Prometheus metrics (prom-client): a {@link Telemetry} that counts and times requests on the caller side
 * and handlers on the responder side, plus, when given a connection, gauges of each channel's backlog read
 * from the database at scrape time. Pass `metrics.telemetry` as the `telemetry` option of `connect()` or
 * `serve()` (one instance for every client of a process) and serve `metrics.registry` on `/metrics`.
 *
 * Labels are bounded: `channel` (the services an application uses), `outcome` (`ok` or one of the
 * library's error codes; a handler's own error code counts as `HANDLER_ERROR`) and `component`.
 */
import type { Registry } from 'prom-client'
import type * as PromClient from 'prom-client'
import type { PgrrErrorCode } from './errors.ts'
import { integerOption } from './option-values.ts'
import { requireOptional } from './optional-dependency.ts'
import type { ConnectionOptions } from './options.ts'
import { StatusReader, type ChannelCounts } from './status.ts'
import type { Outcome, Telemetry } from './telemetry.ts'

/** Reading each channel's backlog from the database when the registry is scraped. */
export interface BacklogOptions extends ConnectionOptions {
  /** Only these channels. @default every channel of the schema */
  channels?: readonly string[]
  /**
   * Longest a scrape waits for the query, connecting included (also the query's statement timeout). On
   * timeout or error the backlog series are left out of that scrape and `pgrr_backlog_errors_total` counts
   * it. @default 2000
   */
  timeoutMs?: number
}

/** Options of {@link createMetrics}. */
export interface MetricsOptions {
  /** Registry to register the metrics in (prom-client's global `register` works too). @default a new Registry */
  registry?: Registry
  /** Prefix of every metric name. @default 'pgrr_' */
  prefix?: string
  /** Bucket upper bounds, in seconds, of the duration histograms. @default 1 ms to 30 s */
  durationBuckets?: readonly number[]
  /**
   * Also collect prom-client's default metrics of the Node.js process (`process_cpu_seconds_total`,
   * `nodejs_eventloop_lag_seconds`, ...; not prefixed) in the registry. @default false
   */
  processMetrics?: boolean
  /**
   * Where to read the backlog gauges from (`pgrr_backlog`, `pgrr_backlog_oldest_seconds`, `pgrr_claimed`,
   * `pgrr_responders`): a connection of its own (one session, opened at the first scrape) that needs a role
   * allowed to read the tables (the schema owner). @default none: no backlog gauges
   */
  backlog?: BacklogOptions
}

/** What {@link createMetrics} returns. */
export interface Metrics {
  /** The hook points: pass as the `telemetry` option of `connect()` / `serve()`. */
  readonly telemetry: Telemetry
  /** The registry holding the metrics: `await registry.metrics()` is the text to serve on `/metrics`. */
  readonly registry: Registry
  /**
   * Closes the backlog connection, if any, without waiting for a query or a connection attempt under way
   * (they are cut short). Idempotent.
   */
  close(): Promise<void>
}

const defaultDurationBuckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]
const batchBuckets = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]

const libraryCodes: ReadonlySet<string> = new Set<PgrrErrorCode | 'HANDLER_ERROR' | 'INVALID_REPLY'>([
  'NO_RESPONDERS',
  'TIMEOUT',
  'REMOTE_ERROR',
  'RESPONDER_LOST',
  'CANCELLED',
  'CONNECTION',
  'CLOSED',
  'INVALID_CHANNEL',
  'INVALID_PAYLOAD',
  'PAYLOAD_TOO_LARGE',
  'TOO_MANY_REQUESTS',
  'UNKNOWN_REQUEST',
  'SAME_TRANSACTION',
  'SCHEMA_VERSION',
  'INVALID_OPTION',
  'HANDLER_ERROR',
  'INVALID_REPLY',
])

/**
 * The label of an outcome: `ok`, a code of the library, or `otherwise` for codes it does not know (a
 * handler's own error codes are unbounded, so they would explode the number of series).
 */
export function outcomeLabel(outcome: Outcome, otherwise = 'ERROR'): string {
  return outcome === 'ok' || libraryCodes.has(outcome) ? outcome : otherwise
}

/**
 * Creates the metrics and the {@link Telemetry} that feeds them. Needs the package `prom-client` (an
 * optional peer dependency): throws `MissingDependencyError` (code `MISSING_DEPENDENCY`) without it.
 *
 * ```ts
 * const metrics = createMetrics({ backlog: { connectionString } })
 * const client = await connect({ connectionString, telemetry: metrics.telemetry })
 * http.createServer(async (req, res) => res.end(await metrics.registry.metrics())).listen(9464)
 * ```
 */
export function createMetrics(options: MetricsOptions = {}): Metrics {
  const { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } = loadPromClient()
  const registry = options.registry ?? new Registry()
  const prefix = options.prefix ?? 'pgrr_'
  const buckets = [...(options.durationBuckets ?? defaultDurationBuckets)]
  const registers = [registry]
  const name = (suffix: string) => `${prefix}${suffix}`

  const requests = new Counter({
    name: name('requests_total'),
    help: 'Requests sent by callers, by outcome (ok or an error code)',
    labelNames: ['channel', 'outcome'] as const,
    registers,
  })
  const requestsInFlight = new Gauge({
    name: name('requests_in_flight'),
    help: 'Requests sent by callers and waiting for their outcome',
    labelNames: ['channel'] as const,
    registers,
  })
  const requestDuration = new Histogram({
    name: name('request_duration_seconds'),
    help: 'Round trip of requests as the caller sees it, from request() to its outcome',
    labelNames: ['channel', 'outcome'] as const,
    buckets,
    registers,
  })
  const handled = new Counter({
    name: name('handled_total'),
    help: 'Requests handled by responders, by outcome (ok or an error code; HANDLER_ERROR for codes of the handler)',
    labelNames: ['channel', 'outcome'] as const,
    registers,
  })
  const handlersRunning = new Gauge({
    name: name('handlers_running'),
    help: 'Handlers running now',
    labelNames: ['channel'] as const,
    registers,
  })
  const handlerDuration = new Histogram({
    name: name('handler_duration_seconds'),
    help: 'Time from the start of a handler to its outcome',
    labelNames: ['channel', 'outcome'] as const,
    buckets,
    registers,
  })
  const queueWait = new Histogram({
    name: name('queue_wait_seconds'),
    help: 'Time requests waited in the table before a responder claimed them',
    labelNames: ['channel'] as const,
    buckets,
    registers,
  })
  /** Sizes of the batches one kind of statement carries. */
  const batchSizes = <Label extends string>(suffix: string, help: string, labelNames: readonly Label[]) =>
    new Histogram<Label>({ name: name(suffix), help, labelNames, buckets: batchBuckets, registers })
  const claimBatch = batchSizes('claim_batch_size', 'Requests claimed by one claim statement', ['channel'])
  const sendBatch = batchSizes('send_batch_size', 'Requests written by one send statement of a client', [])
  const replyBatch = batchSizes('reply_batch_size', 'Outcomes written by one reply statement of a responder', ['channel'])
  const lateReplies = new Counter({
    name: name('late_replies_total'),
    help: 'Replies that came after their request\'s deadline (a blocked event loop, a stopped process): discarded, the caller timed out',
    labelNames: ['channel'] as const,
    registers,
  })
  const reconnects = new Counter({
    name: name('reconnects_total'),
    help: 'Connections that came back after a loss: listener (a client LISTEN session) or responder (a responder session)',
    labelNames: ['component'] as const,
    registers,
  })

  const backlog = options.backlog === undefined ? undefined : createBacklogGauges(options.backlog, name, registers)
  if (options.processMetrics) collectDefaultMetrics({ register: registry })

  const telemetry: Telemetry = {
    requestStarted({ channel }) {
      requestsInFlight.inc({ channel })
      const startedAt = performance.now()
      return {
        end(outcome) {
          const labels = { channel, outcome: outcomeLabel(outcome) }
          requestsInFlight.dec({ channel })
          requests.inc(labels)
          requestDuration.observe(labels, (performance.now() - startedAt) / 1000)
        },
      }
    },
    handlerStarted({ channel, queuedMs }) {
      handlersRunning.inc({ channel })
      queueWait.observe({ channel }, queuedMs / 1000)
      const startedAt = performance.now()
      return {
        run: (fn) => fn(),
        end(outcome) {
          const labels = { channel, outcome: outcomeLabel(outcome, 'HANDLER_ERROR') }
          handlersRunning.dec({ channel })
          handled.inc(labels)
          handlerDuration.observe(labels, (performance.now() - startedAt) / 1000)
        },
      }
    },
    reconnected(component) {
      reconnects.inc({ component })
    },
    claimed(channel, count) {
      claimBatch.observe({ channel }, count)
    },
    sent(count) {
      sendBatch.observe(count)
    },
    replied(channel, count) {
      replyBatch.observe({ channel }, count)
    },
    repliedLate(channel, count) {
      lateReplies.inc({ channel }, count)
    },
  }

  return {
    telemetry,
    registry,
    close: async () => backlog?.close(),
  }
}

/**
 * Gauges filled at scrape time from one query (status.ts), on a connection of their own. A slow database
 * never stacks queries up: a scrape that finds the previous query still running waits for that one.
 */
function createBacklogGauges(
  options: BacklogOptions,
  name: (suffix: string) => string,
  registers: Registry[],
): { close(): Promise<void> } {
  const timeoutMs = integerOption(options.timeoutMs ?? 2000, 'backlog.timeoutMs')
  const { Counter, Gauge } = loadPromClient()
  const reader = new StatusReader({ ...options, timeoutMs })
  const errors = new Counter({
    name: name('backlog_errors_total'),
    help: 'Scrapes whose backlog query failed or timed out (the backlog gauges were left out of them)',
    registers,
    // Read after this scrape's query, so that a failure shows in the scrape it happened in.
    async collect() {
      await shared()
    },
  })
  const logger = options.logger
  let query: Promise<ChannelCounts[]> | undefined
  let scrape: Promise<ChannelCounts[] | undefined> | undefined
  let closed = false
  let failing = false

  /** The counts for this scrape, or undefined (counted and logged once) when the query failed or is late. */
  const read = async (): Promise<ChannelCounts[] | undefined> => {
    // A query still running from an earlier, timed-out scrape is awaited again rather than doubled.
    query ??= reader.counts().finally(() => (query = undefined))
    let timer: NodeJS.Timeout | undefined
    const late = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`the backlog query took longer than ${timeoutMs} ms`)), timeoutMs)
    })
    try {
      const counts = await Promise.race([query, late])
      if (failing) logger?.info('metrics: reading the backlog works again')
      failing = false
      return counts
    } catch (error) {
      errors.inc()
      // Once per run of failures: a scraper retries every few seconds.
      if (!failing) logger?.warn({ err: error }, 'metrics: reading the backlog failed (the backlog gauges are left out until it works)')
      failing = true
      return undefined
    } finally {
      clearTimeout(timer)
    }
  }
  // A scrape calls the collect functions of all its metrics in one synchronous loop: they share one read.
  const shared = (): Promise<ChannelCounts[] | undefined> => {
    if (closed) return Promise.resolve(undefined)
    if (scrape === undefined) {
      scrape = read()
      queueMicrotask(() => (scrape = undefined))
    }
    return scrape
  }

  const gauge = (suffix: string, help: string, value: (counts: ChannelCounts) => number | null) =>
    new Gauge({
      name: name(suffix),
      help,
      labelNames: ['channel'] as const,
      registers,
      async collect() {
        this.reset()
        const counts = await shared()
        if (counts === undefined) return
        for (const row of counts) {
          const v = value(row)
          if (v !== null) this.set({ channel: row.channel }, v)
        }
      },
    })

  gauge('backlog', 'Requests waiting to be claimed, per channel (read from the database at scrape time)', (c) => c.backlog)
  gauge('backlog_oldest_seconds', 'Age of the oldest request waiting to be claimed (absent when none waits)', (c) =>
    c.oldestPendingMs === null ? null : c.oldestPendingMs / 1000,
  )
  gauge('claimed', 'Requests claimed by a responder and not yet answered (read from the database)', (c) => c.inFlight)
  gauge('responders', 'Live responders per channel (read from the database)', (c) => c.liveResponders)

  return {
    async close() {
      if (closed) return
      closed = true
      await reader.close()
    },
  }
}

/**
 * prom-client, loaded on first use: an optional peer dependency, and importing the library must not cost
 * its load time (tens of ms) to applications that do not use metrics.
 */
function loadPromClient(): typeof PromClient {
  return requireOptional<typeof PromClient>('prom-client', 'createMetrics() needs the package prom-client: npm install prom-client')
}
