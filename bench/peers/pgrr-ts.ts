// This project end to end in TypeScript: client.request() → serve().
import { APPLICATION_NAME_PREFIX, withApplicationName } from '../database-url.ts'
import { transform } from '../payload.ts'
import { requirePgrrCore } from './pgrr-core.ts'
import type { Peer, PeerConfig, ResponderSession } from '../peer.ts'

/** Per-request timeout: far above any latency we expect, well below the scenario's time cap. */
const REQUEST_TIMEOUT_MS = 10_000
/** Handlers in flight per responder process: enough for the highest concurrency we run. */
export const RESPONDER_CONCURRENCY = 64

export const peer: Peer = {
  async openCaller(config) {
    const core = await requirePgrrCore()
    const client = await core.connect({
      connectionString: withApplicationName(config.databaseUrl, 'pgrr-ts-caller'),
      schema: config.pgrrSchema,
      applicationName: `${APPLICATION_NAME_PREFIX}-pgrr-ts-caller`,
    })
    return {
      async call(payload) {
        return (await client.request(config.service, payload, { timeoutMs: REQUEST_TIMEOUT_MS })) as string
      },
      close: () => client.close(),
    }
  },

  startResponder: startPgrrResponder,
}

/** The responder of both pgrr systems: the caller differs, the responder does not. */
export async function startPgrrResponder(config: PeerConfig): Promise<ResponderSession> {
  const core = await requirePgrrCore()
  const server = await core.serve(
    {
      connectionString: withApplicationName(config.databaseUrl, 'pgrr-responder'),
      schema: config.pgrrSchema,
      applicationName: `${APPLICATION_NAME_PREFIX}-pgrr-responder`,
    },
    config.service,
    async (payload) => transform(String(payload)),
    { concurrency: RESPONDER_CONCURRENCY },
  )
  return { close: () => server.close() }
}
