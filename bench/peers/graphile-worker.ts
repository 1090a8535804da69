// graphile-worker (a job queue on Postgres) used for request-reply. It has no result API: a task's return
// value is dropped with the job. So the task sends its reply the cheapest way Postgres offers, a NOTIFY on the
// caller's own channel carrying "<id> <reply>", and the caller LISTENs there, one channel per caller process
// (as floor-notify does). The job itself goes in with addJob() and reaches a worker through graphile-worker's
// own NOTIFY on insert. The reply is at most once, like floor-notify's: a caller that is not listening loses
// it. A task that wrote its result to a table for the caller to read would be slower still.
import { Logger, makeWorkerUtils, run } from 'graphile-worker'
import pg from 'pg'
import { withApplicationName } from '../database-url.ts'
import { transform } from '../payload.ts'
import { PEER_REQUEST_TIMEOUT_MS, PEER_SCHEMAS } from '../systems.ts'
import type { Peer } from '../peer.ts'

/**
 * Jobs the responder runs at once (graphile-worker's `concurrency`, default 1). 4, 8, 16 and 64 gave the same
 * figures here within the noise of a loaded machine; 1 gave a lower c=64 throughput.
 */
const CONCURRENCY = 8
/** Connections each side may open; graphile-worker warns when its pool is smaller than its concurrency. */
const POOL_SIZE = CONCURRENCY + 4

interface EchoJob {
  replyChannel: string
  id: number
  payload: string
}

/** graphile-worker logs to the console by default; the benchmark's children keep stdout for nothing. */
const silent = new Logger(() => () => {})

export const peer: Peer = {
  async openCaller(config) {
    const connectionString = withApplicationName(config.databaseUrl, 'graphile-worker-caller')
    const utils = await makeWorkerUtils({ connectionString, schema: PEER_SCHEMAS['graphile-worker'], logger: silent })
    const listener = new pg.Client({ connectionString })
    await listener.connect()
    const replyChannel = `${config.service}_graphile_reply_${process.pid}`
    const pending = new Map<number, { resolve: (reply: string) => void; reject: (error: unknown) => void }>()
    listener.on('notification', (message) => {
      const text = message.payload ?? ''
      const space = text.indexOf(' ')
      const id = Number(text.slice(0, space))
      const waiter = pending.get(id)
      if (!waiter) return
      pending.delete(id)
      waiter.resolve(text.slice(space + 1))
    })
    await listener.query(`listen ${pg.escapeIdentifier(replyChannel)}`)
    let nextId = 0

    return {
      call(payload) {
        const id = nextId++
        return new Promise<string>((resolve, reject) => {
          const timer = setTimeout(() => {
            pending.delete(id)
            reject(new Error(`no reply within ${PEER_REQUEST_TIMEOUT_MS} ms`))
          }, PEER_REQUEST_TIMEOUT_MS)
          pending.set(id, {
            resolve: (reply) => {
              clearTimeout(timer)
              resolve(reply)
            },
            reject,
          })
          utils.addJob(config.service, { replyChannel, id, payload } satisfies EchoJob).catch((error: unknown) => {
            clearTimeout(timer)
            pending.delete(id)
            reject(error)
          })
        })
      },
      async close() {
        await listener.end()
        await utils.release()
      },
    }
  },

  async startResponder(config) {
    const connectionString = withApplicationName(config.databaseUrl, 'graphile-worker-responder')
    // run() installs graphile-worker's schema (its migrations) before it starts taking jobs.
    const runner = await run({
      connectionString,
      schema: PEER_SCHEMAS['graphile-worker'],
      concurrency: CONCURRENCY,
      maxPoolSize: POOL_SIZE,
      noHandleSignals: true,
      logger: silent,
      // No cron: without this graphile-worker looks for a crontab file in the working directory.
      parsedCronItems: [],
      taskList: {
        [config.service]: async (job, helpers) => {
          const { replyChannel, id, payload } = job as EchoJob
          await helpers.query('select pg_notify($1, $2)', [replyChannel, `${id} ${transform(payload)}`])
        },
      },
    })
    return { close: () => runner.stop() }
  },
}
