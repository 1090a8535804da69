// Caller process: `node --import tsx bench/caller.ts <system> <config-json>`, spawned by bench/run.ts.
// For each scenario it opens a session sized for the concurrency, warms up, waits for the orchestrator's go,
// runs the measured phase and reports latencies plus its own CPU time over that phase only.
import { Inbox, errorMessage, sendToParent } from './inbox.ts'
import { runLoad } from './load.ts'
import { loadPeer } from './peer-modules.ts'
import type { CallerToOrchestrator, OrchestratorToCaller } from './messages.ts'
import type { PeerConfig } from './peer.ts'

const PROGRESS_INTERVAL_MS = 200
const CLOSE_TIMEOUT_MS = 5000

const [system, configJson] = process.argv.slice(2)
if (!system || !configJson) throw new Error('usage: caller.ts <system> <config-json>')
const config = JSON.parse(configJson) as PeerConfig
const inbox = new Inbox<OrchestratorToCaller>()
const send = (message: CallerToOrchestrator): void => sendToParent(message)

const peer = await loadPeer(system)
let sequence = 0
send({ type: 'ready' })

for (;;) {
  const message = await inbox.next()
  if (message.type === 'stop') break
  if (message.type !== 'run') continue
  try {
    await runScenario(message)
  } catch (error) {
    send({ type: 'failed', message: errorMessage(error) })
  }
}
process.exit(0)

async function runScenario(run: Extract<OrchestratorToCaller, { type: 'run' }>): Promise<void> {
  const session = await peer.openCaller(config, run.concurrency)
  try {
    const warm = await runLoad({
      count: run.warmupCount,
      concurrency: run.concurrency,
      timeCapMs: run.timeCapMs,
      firstSequence: sequence,
      payloadBytes: run.payloadBytes,
      call: (payload, worker) => session.call(payload, worker),
      onProgress: throttledProgress('warm-up', run.warmupCount),
    })
    sequence += run.warmupCount
    send({ type: 'warmed', errors: warm.errors, errorSamples: warm.errorSamples })

    const go = await inbox.next()
    if (go.type !== 'measure') throw new Error(`expected "measure", got "${go.type}"`)
    const cpuBefore = process.cpuUsage()
    const measured = await runLoad({
      count: run.count,
      concurrency: run.concurrency,
      timeCapMs: run.timeCapMs,
      firstSequence: sequence,
      payloadBytes: run.payloadBytes,
      call: (payload, worker) => session.call(payload, worker),
      onProgress: throttledProgress('measured', run.count),
    })
    const cpu = process.cpuUsage(cpuBefore)
    sequence += run.count
    send({ type: 'result', result: { ...measured, cpu: { userUs: cpu.user, systemUs: cpu.system } } })
    // Closing now would end our backends before the orchestrator has read their CPU time.
    const release = await inbox.next()
    if (release.type !== 'release') throw new Error(`expected "release", got "${release.type}"`)
  } finally {
    // A session whose requests were cut off by the cap may never close cleanly; do not hang on it.
    await Promise.race([session.close().catch(() => undefined), delay(CLOSE_TIMEOUT_MS)])
  }
}

function throttledProgress(phase: 'warm-up' | 'measured', total: number): (done: number) => void {
  let lastSentAt = 0
  return (done) => {
    const now = Date.now()
    if (done === total || now - lastSentAt >= PROGRESS_INTERVAL_MS) {
      lastSentAt = now
      send({ type: 'progress', phase, done, total })
    }
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref())
}
