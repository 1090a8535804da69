// Responder process: `node --import tsx bench/responder.ts <system> <config-json>`, spawned by bench/run.ts.
// Serves until told to stop; reports its CPU time between the orchestrator's cpu-start and cpu-stop, which
// bracket the caller's measured phase.
import { Inbox, errorMessage, sendToParent } from './inbox.ts'
import { loadPeer } from './peer-modules.ts'
import type { OrchestratorToResponder, ResponderToOrchestrator } from './messages.ts'
import type { PeerConfig } from './peer.ts'

const CLOSE_TIMEOUT_MS = 5000

const [system, configJson] = process.argv.slice(2)
if (!system || !configJson) throw new Error('usage: responder.ts <system> <config-json>')
const config = JSON.parse(configJson) as PeerConfig
const inbox = new Inbox<OrchestratorToResponder>()
const send = (message: ResponderToOrchestrator): void => sendToParent(message)

const peer = await loadPeer(system)
if (!peer.startResponder) throw new Error(`${system} has no responder`)
let session
try {
  session = await peer.startResponder(config)
} catch (error) {
  send({ type: 'failed', message: errorMessage(error) })
  process.exit(1)
}
send(session.serverVersion ? { type: 'ready', serverVersion: session.serverVersion } : { type: 'ready' })

let cpuBefore = process.cpuUsage()
for (;;) {
  const message = await inbox.next()
  if (message.type === 'stop') break
  if (message.type === 'cpu-start') {
    cpuBefore = process.cpuUsage()
    send({ type: 'cpu-started' })
  } else if (message.type === 'cpu-stop') {
    const cpu = process.cpuUsage(cpuBefore)
    send({ type: 'cpu', cpu: { userUs: cpu.user, systemUs: cpu.system } })
  }
}
await Promise.race([session.close().catch(() => undefined), new Promise((resolve) => setTimeout(resolve, CLOSE_TIMEOUT_MS).unref())])
process.exit(0)
