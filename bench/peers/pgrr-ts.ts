// This project end to end in TypeScript: client.request() → serve().
import { APPLICATION_NAME_PREFIX, withApplicationName } from '../database-url.ts'
import { transform } from '../payload.ts'
import { SERVE_CONCURRENCY } from '../options.ts'
import { requirePgrrCore } from './pgrr-core.ts'
import { roundRobin, serviceNames, type Peer, type PeerConfig, type ResponderSession } from '../peer.ts'

/** Per-request timeout: far above any latency we expect, well below the scenario's time cap. */
const REQUEST_TIMEOUT_MS = 10_000

export const peer: Peer = {
  async openCaller(config) {
    const core = await requirePgrrCore()
    const client = await core.connect({
      connectionString: withApplicationName(config.databaseUrl, 'pgrr-ts-caller'),
      schema: config.pgrrSchema,
      applicationName: `${APPLICATION_NAME_PREFIX}-pgrr-ts-caller`,
    })
    const service = roundRobin(serviceNames(config))
    return {
      async call(payload) {
        return (await client.request(service(), payload, { timeoutMs: REQUEST_TIMEOUT_MS })) as string
      },
      close: () => client.close(),
    }
  },

  startResponder: startPgrrResponder,
}

/**
 * The responder of both pgrr systems: the caller differs, the responder does not. With several channels
 * (`--channels`, pgrr-ts only), one client serves them all, each with the full concurrency.
 */
export async function startPgrrResponder(config: PeerConfig): Promise<ResponderSession> {
  const core = await requirePgrrCore()
  const options = {
    connectionString: withApplicationName(config.databaseUrl, 'pgrr-responder'),
    schema: config.pgrrSchema,
    applicationName: `${APPLICATION_NAME_PREFIX}-pgrr-responder`,
  }
  const handler = async (payload: unknown): Promise<string> => transform(String(payload))
  const names = serviceNames(config)
  const concurrency = config.serveConcurrency ?? SERVE_CONCURRENCY
  if (names.length === 1) {
    const server = await core.serve(options, config.service, handler, { concurrency })
    return { close: () => server.close() }
  }
  const client = await core.connect(options)
  for (const name of names) await client.serve(name, handler, { concurrency })
  return { close: () => client.close() }
}
