// BullMQ 6 on its PostgreSQL backend (createPostgresBackend), used for request-reply the way BullMQ documents
// it: the caller add()s a job to a Queue and awaits job.waitUntilFinished(queueEvents), which resolves with the
// processor's return value when the 'completed' event for that job arrives on a QueueEvents; a Worker in the
// responder process runs the processor. On Postgres, workers are woken and QueueEvents read their event table
// through LISTEN/NOTIFY. Jobs stay after completion (BullMQ's default); the schema goes at the end of the run.
import { createPostgresBackend, runMigrations, withBackend } from 'bullmq'
import pg from 'pg'
import { withApplicationName } from '../database-url.ts'
import { transform } from '../payload.ts'
import { PEER_REQUEST_TIMEOUT_MS, PEER_SCHEMAS } from '../systems.ts'
import type { Peer, PeerConfig } from '../peer.ts'

// Typed classes bound to the Postgres backend, as BullMQ's guide does it for typed jobs.
const { Queue, QueueEvents, Worker } = withBackend(createPostgresBackend)

/**
 * Jobs the responder's Worker processes at once, in the 8 to 32 BullMQ's own figures use. 64 gave a third less
 * throughput here at c=64, with more CPU per request; 8 and 16 gave the same.
 */
const WORKER_CONCURRENCY = 16
const JOB_NAME = 'echo'

interface EchoJob {
  payload: string
}

function connection(config: PeerConfig, role: string): { connection: { connectionString: string; schema: string } } {
  return { connection: { connectionString: withApplicationName(config.databaseUrl, role), schema: PEER_SCHEMAS['bullmq-pg'] } }
}

export const peer: Peer = {
  async openCaller(config) {
    const queue = new Queue<EchoJob, string>(config.service, connection(config, 'bullmq-pg-caller'))
    const events = new QueueEvents<string>(config.service, connection(config, 'bullmq-pg-events'))
    await Promise.all([queue.waitUntilReady(), events.waitUntilReady()])
    return {
      async call(payload) {
        const job = await queue.add(JOB_NAME, { payload })
        return job.waitUntilFinished(events, PEER_REQUEST_TIMEOUT_MS)
      },
      async close() {
        await Promise.all([queue.close(), events.close()])
      },
    }
  },

  async startResponder(config) {
    // BullMQ's connections do not migrate: its documentation has one deployment step run the migrations.
    const admin = new pg.Client({ connectionString: withApplicationName(config.databaseUrl, 'bullmq-pg-migrate') })
    await admin.connect()
    try {
      await runMigrations(admin, PEER_SCHEMAS['bullmq-pg'])
    } finally {
      await admin.end()
    }
    const worker = new Worker<EchoJob, string>(
      config.service,
      async (job) => transform(job.data.payload),
      { ...connection(config, 'bullmq-pg-responder'), concurrency: WORKER_CONCURRENCY },
    )
    // Without a listener an 'error' event would end the process; a failed job shows as the caller's error.
    worker.on('error', () => {})
    await worker.waitUntilReady()
    return { close: () => worker.close(true) }
  },
}
