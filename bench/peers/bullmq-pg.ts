// BullMQ 6 on its PostgreSQL backend (createPostgresBackend), used for request-reply the way BullMQ documents
// it: the caller add()s a job to a Queue and awaits job.waitUntilFinished(queueEvents), which resolves with the
// processor's return value when the 'completed' event for that job arrives on a QueueEvents; a Worker in the
// responder process runs the processor. On Postgres, workers are woken and QueueEvents read their event table
// through LISTEN/NOTIFY. Jobs stay after completion (BullMQ's default); the schema goes at the end of the run.
import { createPostgresBackend, runMigrations, withBackend } from 'bullmq'
import pg from 'pg'
import { withApplicationName } from '../database-url.ts'
import { transform } from '../payload.ts'
import { PEER_POLL_MS, PEER_REQUEST_TIMEOUT_MS, PEER_SCHEMAS } from '../systems.ts'
import type { Peer, PeerConfig } from '../peer.ts'

// Typed classes bound to the Postgres backend, as BullMQ's guide does it for typed jobs.
const { Queue, QueueEvents, Worker } = withBackend(createPostgresBackend)

/**
 * Jobs the responder's Worker processes at once, in the 8 to 32 BullMQ's own figures use. 64 gave a third less
 * throughput here at c=64, with more CPU per request; 8 and 16 gave the same.
 */
const WORKER_CONCURRENCY = 16
const JOB_NAME = 'echo'
/**
 * How long a caller waits for a job's 'completed' event before reading the job itself. QueueEvents on Postgres
 * reads the event table past the highest id it has seen, and an event whose transaction commits after one with
 * a higher id is never read: at c=64 about 1 to 2 % of the waits here never saw their event although the job
 * was completed (a plain test of 512 jobs, 64 at a time, lost 4 to 12 of them, with a Worker concurrency of 1
 * as of 16). Waiting the full 10 s for those would make every c=64 phase end on its time cap; 1 s is five
 * times the c=64 median, so a rescued request still shows in the tail.
 */
const LOST_EVENT_MS = 1000

interface EchoJob {
  payload: string
}

function connection(config: PeerConfig, role: string): { connection: { connectionString: string; schema: string } } {
  return { connection: { connectionString: withApplicationName(config.databaseUrl, role), schema: PEER_SCHEMAS['bullmq-pg'] } }
}

export const peer: Peer = {
  async openCaller(config) {
    const queue = new Queue<EchoJob, string>(config.service, connection(config, 'bullmq-pg-caller'))
    // QueueEvents on Postgres reads its event table, then waits for the events NOTIFY for up to blockingTimeout
    // (10 s by default) before reading again. A NOTIFY that arrives between the read and the wait is missed (its
    // job wait, unlike this one, checks again once it listens), and at c=1 a request then waited out the whole
    // timeout. Bounding the wait at PEER_POLL_MS makes that a short poll, as with the other polling peers.
    const events = new QueueEvents<string>(config.service, { ...connection(config, 'bullmq-pg-events'), blockingTimeout: PEER_POLL_MS })
    await Promise.all([queue.waitUntilReady(), events.waitUntilReady()])
    return {
      async call(payload) {
        const job = await queue.add(JOB_NAME, { payload })
        const deadline = Date.now() + PEER_REQUEST_TIMEOUT_MS
        for (;;) {
          try {
            return await job.waitUntilFinished(events, LOST_EVENT_MS)
          } catch (error) {
            // No 'completed' event yet: it may have been skipped (see LOST_EVENT_MS), so read the job itself, as
            // BullMQ users do after a wait that timed out. A job still running is waited for again.
            const current = await queue.getJob(job.id ?? '')
            const state = await current?.getState()
            if (current && state === 'completed') return current.returnvalue
            if (state === 'failed' || Date.now() > deadline) throw error
          }
        }
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
