// DBOS Transact (durable workflows on Postgres) in the layout its documentation gives for a separate worker
// service: the responder process launches DBOS with the workflow registered and a queue; the caller process,
// which runs no workflows, enqueues each request with DBOSClient.enqueue() and waits with handle.getResult().
// Both ends poll the system database: the queue's dispatcher for new workflows, getResult() for the outcome
// (both every second by default; here every PEER_POLL_MS).
import { DBOS, DBOSClient, type DLogger } from '@dbos-inc/dbos-sdk'
import { withApplicationName } from '../database-url.ts'
import { transform } from '../payload.ts'
import { PEER_POLL_MS, PEER_SCHEMAS } from '../systems.ts'
import type { Peer } from '../peer.ts'

/** The DBOS application both sides belong to. */
const APPLICATION = 'pgrr-bench'
const WORKFLOW = 'echo'
/** Workflows the responder process runs at once: our highest concurrency. */
const WORKER_CONCURRENCY = 64

/** DBOS logs everything to the console by default; here only errors, to stderr (shown if a child dies). */
const quiet: DLogger = {
  info: () => {},
  debug: () => {},
  warn: () => {},
  error: (error) => process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n`),
}

export const peer: Peer = {
  async openCaller(config) {
    const client = await DBOSClient.create({
      systemDatabaseUrl: withApplicationName(config.databaseUrl, 'dbos-caller'),
      systemDatabaseSchemaName: PEER_SCHEMAS.dbos,
      applicationName: APPLICATION,
      logger: quiet,
    })
    return {
      async call(payload) {
        const handle = await client.enqueue<(payload: string) => Promise<string>>({ workflowName: WORKFLOW, queueName: config.service }, payload)
        return handle.getResult({ pollingIntervalMs: PEER_POLL_MS })
      },
      close: () => client.destroy(),
    }
  },

  async startResponder(config) {
    DBOS.setConfig({
      name: APPLICATION,
      systemDatabaseUrl: withApplicationName(config.databaseUrl, 'dbos-responder'),
      systemDatabaseSchemaName: PEER_SCHEMAS.dbos,
      logger: quiet,
    })
    DBOS.registerWorkflow(async (payload: string) => transform(payload), { name: WORKFLOW })
    // launch() creates the system schema (DBOS's migrations) and starts the queue dispatcher.
    await DBOS.launch()
    await DBOS.registerQueue(config.service, {
      workerConcurrency: WORKER_CONCURRENCY,
      minPollingIntervalMs: PEER_POLL_MS,
      onConflict: 'always_update',
    })
    return { close: () => DBOS.shutdown() }
  },
}
