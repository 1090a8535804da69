// The catalogue of systems under test: what each one is, where its peer code lives, and what it needs
// before it can run. The orchestrator reads this; the child processes only need `peerModule`.

export const SYSTEM_NAMES = [
  'floor-notify',
  'floor-select1',
  'pgrr-ts',
  'pgrr-sql',
  'floor-pg',
  'pgrr-protocol',
  'poc',
  'nats',
  'rabbitmq',
  'redis',
] as const

export type SystemName = (typeof SYSTEM_NAMES)[number]

export type ServerKind = 'postgres' | 'nats' | 'rabbitmq' | 'redis'

export interface SystemSpec {
  name: SystemName
  /** One line for the report. */
  description: string
  /** Module exporting `peer`, relative to bench/. */
  peerModule: string
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
   * A measuring aid rather than a system anyone would choose: run only when named in `--systems`, not by
   * default. The layers between the floor and pgrr-ts (the driver, the protocol's SQL, the library's code).
   */
  diagnostic?: true
}

// The PoC's await_reply sleeps 100 ms between polls, so each caller completes about 10 requests per second
// at best; 9 leaves headroom for the serial responder falling behind.
const POC_REQUESTS_PER_CALLER_SECOND = 9

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
}

/** What `--systems` defaults to: every system but the measuring aids. */
export const DEFAULT_SYSTEMS: SystemName[] = SYSTEM_NAMES.filter((name) => SYSTEMS[name].diagnostic !== true)

export function isSystemName(name: string): name is SystemName {
  return (SYSTEM_NAMES as readonly string[]).includes(name)
}
