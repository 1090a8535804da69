// The catalogue of systems under test: what each one is, where its peer code lives, and what it needs
// before it can run. The orchestrator reads this; the child processes only need `peerModule`.

export const SYSTEM_NAMES = [
  'floor-notify',
  'floor-select1',
  'pgrr-ts',
  'pgrr-sql',
  'floor-pg',
  'pgrr-protocol',
  'batch-sketch',
  'floor-batch',
  'batch-row-sketch',
  'poc',
  'nats',
  'rabbitmq',
  'redis',
  'pgboss',
  'graphile-worker',
  'dbos',
  'bullmq-pg',
  'absurd',
] as const

export type SystemName = (typeof SYSTEM_NAMES)[number]

export type ServerKind = 'postgres' | 'nats' | 'rabbitmq' | 'redis'

export interface SystemSpec {
  name: SystemName
  /** One line for the report. */
  description: string
  /** Module exporting `peer`, relative to bench/; null for a system that cannot run here (see `unavailable`). */
  peerModule: string | null
  hasResponder: boolean
  server: ServerKind
  /** Setup the orchestrator does (once) before the system can run. */
  needs: 'pgrr-schema' | 'poc-schema' | null
  /**
   * Most requests worth sending in a phase of about `phaseSeconds`: only for systems whose rate is known to
   * be far below the others, so that they finish inside the time cap instead of being cut off by it.
   */
  maxCount: ((concurrency: number, phaseSeconds: number) => number) | null
  /**
   * The schema this system's library creates its tables and functions in (its responder creates it on start).
   * The orchestrator drops it before the system runs (leftovers of an interrupted run), after, and at the end
   * of the run whatever happened.
   */
  schema?: string
  /** Why this system cannot run on this machine at all: it is reported as skipped with this reason. */
  unavailable?: string
  /**
   * A measuring aid rather than a system anyone would choose: run only when named in `--systems`, not by
   * default. The layers between the floor and pgrr-ts (the driver, the protocol's SQL, the library's code).
   */
  diagnostic?: true
}

// The PoC's await_reply sleeps 100 ms between polls, so each caller completes about 10 requests per second
// at best; 9 leaves headroom for the serial responder falling behind.
const POC_REQUESTS_PER_CALLER_SECOND = 9

/** The schemas of the Postgres peers, one each (see `SystemSpec.schema`); the peers read their name here. */
export const PEER_SCHEMAS = {
  pgboss: 'pgrr_bench_pgboss',
  'graphile-worker': 'pgrr_bench_graphile_worker',
  dbos: 'pgrr_bench_dbos',
  'bullmq-pg': 'pgrr_bench_bullmq',
  'batch-sketch': 'pgrr_bench_batch_sketch',
  'batch-row-sketch': 'pgrr_bench_batch_row_sketch',
} as const

/**
 * How often a peer polls where its library waits by polling and lets us choose (pg-boss's getJobById loop, DBOS's
 * queue and getResult): 10 ms, where the defaults (0.5 to 2 s) would add half a second or more to every request.
 * At c=64 that is 6,400 polls a second asked for; pg-boss gave about the same throughput with 2, 10, 25 and 50 ms
 * here (within the noise of a loaded machine).
 */
export const PEER_POLL_MS = 10
/** A peer's per-request timeout: far above any latency we expect, below the scenario's time cap. */
export const PEER_REQUEST_TIMEOUT_MS = 10_000

/**
 * A `maxCount` for a peer that polls or queues: about `perCaller` requests per second per caller, at most
 * `ceiling` per second in all, over the phase. The figures are what the peer reached here at c=1 and at c=64,
 * lowered so that a phase still ends well inside its cap (1.5× the quick phase, 3× the full one) on a loaded
 * machine; a faster machine only sends the same count quicker.
 */
function rateCapped(perCaller: number, ceiling: number): (concurrency: number, phaseSeconds: number) => number {
  return (concurrency, phaseSeconds) => Math.ceil(Math.min(perCaller * concurrency, ceiling) * phaseSeconds)
}

export const SYSTEMS: Record<SystemName, SystemSpec> = {
  'floor-notify': {
    name: 'floor-notify',
    description: 'raw LISTEN/NOTIFY ping-pong between two processes (postgres.js)',
    peerModule: './peers/floor-notify.ts',
    hasResponder: true,
    server: 'postgres',
    needs: null,
    maxCount: null,
  },
  'floor-select1': {
    name: 'floor-select1',
    description: '`select 1` round trips from the caller, no responder (postgres.js)',
    peerModule: './peers/floor-select1.ts',
    hasResponder: false,
    server: 'postgres',
    needs: null,
    maxCount: null,
  },
  'pgrr-ts': {
    name: 'pgrr-ts',
    description: 'this project: TypeScript client.request() → TypeScript serve()',
    peerModule: './peers/pgrr-ts.ts',
    hasResponder: true,
    server: 'postgres',
    needs: 'pgrr-schema',
    maxCount: null,
  },
  'pgrr-sql': {
    name: 'pgrr-sql',
    description: 'this project: SQL request() + await_reply(), one connection per caller → TypeScript serve()',
    peerModule: './peers/pgrr-sql.ts',
    hasResponder: true,
    server: 'postgres',
    needs: 'pgrr-schema',
    maxCount: null,
  },
  'floor-pg': {
    name: 'floor-pg',
    description: 'floor-notify with node-postgres and the library\'s connection layout (a measuring aid)',
    peerModule: './peers/floor-pg.ts',
    hasResponder: true,
    server: 'postgres',
    needs: null,
    maxCount: null,
    diagnostic: true,
  },
  'pgrr-protocol': {
    name: 'pgrr-protocol',
    description: 'this project\'s SQL functions driven by a bare node-postgres loop, no library (a measuring aid)',
    peerModule: './peers/pgrr-protocol.ts',
    hasResponder: true,
    server: 'postgres',
    needs: 'pgrr-schema',
    maxCount: null,
    diagnostic: true,
  },
  'batch-sketch': {
    name: 'batch-sketch',
    description: 'the plainest batching design on a table: a multi-row INSERT and a NOTIFY per batch, claim by UPDATE, reply by DELETE … RETURNING (a measuring aid)',
    peerModule: './peers/batch-sketch.ts',
    hasResponder: true,
    server: 'postgres',
    needs: null,
    schema: PEER_SCHEMAS['batch-sketch'],
    maxCount: null,
    diagnostic: true,
  },
  'floor-batch': {
    name: 'floor-batch',
    description: 'batch-sketch without the table: a NOTIFY per caller batch carrying its requests, one per caller carrying its replies (a measuring aid)',
    peerModule: './peers/floor-batch.ts',
    hasResponder: true,
    server: 'postgres',
    needs: null,
    maxCount: null,
    diagnostic: true,
  },
  'batch-row-sketch': {
    name: 'batch-row-sketch',
    description: 'batch-sketch with a row per caller batch instead of a row per request, answered as a whole (a measuring aid)',
    peerModule: './peers/batch-row-sketch.ts',
    hasResponder: true,
    server: 'postgres',
    needs: null,
    schema: PEER_SCHEMAS['batch-row-sketch'],
    maxCount: null,
    diagnostic: true,
  },
  poc: {
    name: 'poc',
    description: 'the proof of concept: pg_stat_activity check, serial responder, await_reply polling every 100 ms',
    peerModule: './peers/poc/peer.ts',
    hasResponder: true,
    server: 'postgres',
    needs: 'poc-schema',
    maxCount: (concurrency, phaseSeconds) => Math.ceil(POC_REQUESTS_PER_CALLER_SECOND * concurrency * phaseSeconds),
  },
  nats: {
    name: 'nats',
    description: 'nats.js request() → queue-group subscriber',
    peerModule: './peers/nats.ts',
    hasResponder: true,
    server: 'nats',
    needs: null,
    maxCount: null,
  },
  rabbitmq: {
    name: 'rabbitmq',
    description: 'amqplib RPC: work queue + direct reply-to (amq.rabbitmq.reply-to)',
    peerModule: './peers/rabbitmq.ts',
    hasResponder: true,
    server: 'rabbitmq',
    needs: null,
    maxCount: null,
  },
  redis: {
    name: 'redis',
    description: 'node-redis RPC: LPUSH to a list, responder BLMPOP in batches, reply by PUBLISH to the caller',
    peerModule: './peers/redis.ts',
    hasResponder: true,
    server: 'redis',
    needs: null,
    maxCount: null,
  },
  pgboss: {
    name: 'pgboss',
    description: 'pg-boss 12: send() to a queue with notify on, worker woken by NOTIFY; caller polls getJobById() for the output',
    peerModule: './peers/pgboss.ts',
    hasResponder: true,
    server: 'postgres',
    needs: null,
    schema: PEER_SCHEMAS.pgboss,
    maxCount: rateCapped(30, 150),
  },
  'graphile-worker': {
    name: 'graphile-worker',
    description: 'graphile-worker: addJob(), the task NOTIFYs the reply to the caller\'s LISTEN channel',
    peerModule: './peers/graphile-worker.ts',
    hasResponder: true,
    server: 'postgres',
    needs: null,
    schema: PEER_SCHEMAS['graphile-worker'],
    maxCount: rateCapped(40, 150),
  },
  dbos: {
    name: 'dbos',
    description: 'DBOS Transact: DBOSClient.enqueue() of a workflow run by the responder, then handle.getResult()',
    peerModule: './peers/dbos.ts',
    hasResponder: true,
    server: 'postgres',
    needs: null,
    schema: PEER_SCHEMAS.dbos,
    maxCount: rateCapped(15, 120),
  },
  'bullmq-pg': {
    name: 'bullmq-pg',
    description: 'BullMQ 6 on its PostgreSQL backend: queue.add(), then job.waitUntilFinished(queueEvents)',
    peerModule: './peers/bullmq-pg.ts',
    hasResponder: true,
    server: 'postgres',
    needs: null,
    schema: PEER_SCHEMAS['bullmq-pg'],
    maxCount: rateCapped(25, 100),
  },
  absurd: {
    name: 'absurd',
    description: 'Absurd: spawn() a task, then awaitTaskResult()',
    peerModule: null,
    hasResponder: true,
    server: 'postgres',
    needs: null,
    maxCount: null,
    // absurd-sdk ships no SQL: the schema comes from absurdctl, a Python tool installed from PyPI or a GitHub
    // release, neither of which this machine reaches (npm and Debian only), and we do not copy their SQL in.
    unavailable:
      'its database schema is installed by absurdctl (Python, from PyPI or a GitHub release); absurd-sdk on npm ships no SQL, and this machine reaches only npm and Debian',
  },
}

/** What `--systems` defaults to: every system but the measuring aids. */
export const DEFAULT_SYSTEMS: SystemName[] = SYSTEM_NAMES.filter((name) => SYSTEMS[name].diagnostic !== true)

export function isSystemName(name: string): name is SystemName {
  return (SYSTEM_NAMES as readonly string[]).includes(name)
}
