// Idle processes of the fleet scenario (bench/scenarios/fleet.ts): `node --import tsx
// bench/scenarios/fleet-member.ts <kind> <count> <config-json>` opens `count` members of one kind, each with
// sessions of its own, as that many processes of a deployment would (several per Node process only to spare
// this 2-core machine the start of fifty: PostgreSQL sees sessions, not processes). Reports 'ready' once they
// are idle, with how many LISTEN on anything, and closes them on 'stop' (or when the orchestrator goes).
import { connect, serve, type Client, type Server } from '../../src/index.ts'
import { maxDurationMs } from '../../src/option-values.ts'
import { Inbox, errorMessage, sendToParent } from '../inbox.ts'
import type { FleetKind } from '../options.ts'

export interface FleetMemberConfig {
  databaseUrl: string
  schema: string
  applicationName: string
}

export type ToFleetMember = { type: 'stop' }
export type FromFleetMember = { type: 'ready'; listening: number } | { type: 'failed'; message: string } | { type: 'progress' }

/** The idle responders' channel: nobody sends on it. */
export const IDLE_CHANNEL = 'bench_fleet_idle'
const CLOSE_TIMEOUT_MS = 5000
/** Longest wait for idle clients to drop their LISTEN (their quiet period is 5 s). */
const QUIET_TIMEOUT_MS = 20_000

const [kind, countText, configJson] = process.argv.slice(2) as [FleetKind, string, string]
if (!kind || !countText || !configJson) throw new Error('usage: fleet-member.ts <kind> <count> <config-json>')
const config = JSON.parse(configJson) as FleetMemberConfig
const count = Number(countText)
const inbox = new Inbox<ToFleetMember>()
const send = (message: FromFleetMember): void => sendToParent(message)
const options = { connectionString: config.databaseUrl, schema: config.schema, applicationName: config.applicationName }

const clients: Client[] = []
const servers: Server[] = []

async function openClients(keepListening: boolean): Promise<void> {
  // Each client sends one request, as a pod that has served traffic has, so it LISTENed at least once.
  const warm = `bench_fleet_warm_${process.pid}`
  const responder = await serve(options, warm, async (payload) => payload, { concurrency: 16 })
  try {
    for (let index = 0; index < count; index++) {
      const client = await connect({ ...options, poolSize: 1, ...(keepListening ? { replyListenIdleMs: maxDurationMs } : {}) })
      clients.push(client)
      await client.request(warm, 'warm', { timeoutMs: 10_000 })
    }
  } finally {
    await responder.close()
  }
  // Only LISTEN sessions matter to NOTIFY; an idle pod's pooled connection would time out in a minute, and
  // this server has 100 connections in all: each client keeps its LISTEN session only.
  await new Promise((resolve) => setTimeout(resolve, 200))
  for (const client of clients) {
    const connection = await client.context.pool.connect()
    connection.release(true)
  }
}

async function listeningCount(): Promise<number> {
  const listeners = [...clients.map((client) => client.context.listener)]
  const channels = await Promise.all(listeners.map((listener) => listener.listeningChannels()))
  return channels.filter((list) => list.length > 0).length + servers.length
}

try {
  if (kind === 'clients' || kind === 'clients-listening') await openClients(kind === 'clients-listening')
  else {
    for (let index = 0; index < count; index++) servers.push(await serve(options, IDLE_CHANNEL, async (payload) => payload, { concurrency: 64 }))
  }
  let listening = await listeningCount()
  // Idle clients drop their LISTEN after their quiet period: ready once they have.
  const deadline = Date.now() + QUIET_TIMEOUT_MS
  while (kind === 'clients' && listening > 0 && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 250))
    listening = await listeningCount()
  }
  send({ type: 'ready', listening })
} catch (error) {
  send({ type: 'failed', message: errorMessage(error) })
  process.exit(1)
}

await inbox.next()
const closing = Promise.all([...clients.map((client) => client.close()), ...servers.map((server) => server.close())])
await Promise.race([closing.catch(() => undefined), new Promise((resolve) => setTimeout(resolve, CLOSE_TIMEOUT_MS).unref())])
process.exit(0)
