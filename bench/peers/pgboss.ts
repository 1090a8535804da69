// pg-boss (a job queue on Postgres) used for request-reply the way its documentation allows: the caller
// send()s a job; a worker, woken by NOTIFY (useListenNotify plus a queue created with notify: true, pg-boss's
// low-latency dispatch), returns the reply, which pg-boss stores as the job's output. pg-boss has no way to wait
// for a job (its onComplete() subscriptions went in version 10), so the caller polls getJobById() until the job
// is completed and reads the output.
import { PgBoss } from 'pg-boss'
import { withApplicationName } from '../database-url.ts'
import { transform } from '../payload.ts'
import { PEER_POLL_MS, PEER_REQUEST_TIMEOUT_MS, PEER_SCHEMAS } from '../systems.ts'
import type { Peer } from '../peer.ts'

/** Jobs the responder's worker fetches at once: our highest concurrency. */
const BATCH_SIZE = 64
/** Pool size of each side: pg-boss's default (10) would queue 64 callers' polls behind each other. */
const POOL_SIZE = 20

interface EchoJob {
  payload: string
}

interface EchoOutput {
  reply: string
}

export const peer: Peer = {
  async openCaller(config) {
    const boss = new PgBoss({
      connectionString: withApplicationName(config.databaseUrl, 'pgboss-caller'),
      schema: PEER_SCHEMAS.pgboss,
      max: POOL_SIZE,
      // The responder installed the schema and runs maintenance; this side only sends and reads.
      migrate: false,
      createSchema: false,
      supervise: false,
      schedule: false,
    })
    boss.on('error', () => {})
    await boss.start()
    return {
      async call(payload) {
        const id = await boss.send(config.service, { payload } satisfies EchoJob)
        if (!id) throw new Error('send() returned no job id')
        const deadline = Date.now() + PEER_REQUEST_TIMEOUT_MS
        for (;;) {
          const job = await boss.getJobById<EchoJob>(config.service, id)
          if (job?.state === 'completed') return (job.output as EchoOutput).reply
          if (job?.state === 'failed' || job?.state === 'cancelled') throw new Error(`job ${job.state}`)
          if (Date.now() > deadline) throw new Error(`no reply within ${PEER_REQUEST_TIMEOUT_MS} ms`)
          await delay(PEER_POLL_MS)
        }
      },
      close: () => boss.stop({ graceful: false, close: true }),
    }
  },

  async startResponder(config) {
    const boss = new PgBoss({
      connectionString: withApplicationName(config.databaseUrl, 'pgboss-responder'),
      schema: PEER_SCHEMAS.pgboss,
      max: POOL_SIZE,
      useListenNotify: true,
    })
    // Without a listener an 'error' event would end the process; a failed request shows as the caller's error.
    boss.on('error', () => {})
    await boss.start()
    await boss.createQueue(config.service, { notify: true })
    // One worker taking up to a batch per fetch and settling each job with its own output (perJobResults).
    // Every NOTIFY wakes every worker of the queue, so with localConcurrency 16 instead each request cost 16
    // fetches: about three times the server CPU per request, for no more throughput (measured here).
    await boss.work<EchoJob>(config.service, { batchSize: BATCH_SIZE, perJobResults: true, burstWhenBatchFull: true }, async (jobs) =>
      jobs.map((job) => ({ id: job.id, status: 'completed' as const, output: { reply: transform(job.data.payload) } satisfies EchoOutput })),
    )
    return { close: () => boss.stop({ graceful: false, close: true }) }
  },
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}
