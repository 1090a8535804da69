// A closed-loop load: `concurrency` workers each keep exactly one request in flight until `count` requests
// have been issued. Closed-loop is what a pool of synchronous callers does, and it keeps the number of
// outstanding requests equal to the concurrency we report.
import { makePayload, transform } from './payload.ts'
import { errorMessage } from './inbox.ts'
import type { PhaseResult } from './messages.ts'

export interface LoadOptions {
  count: number
  concurrency: number
  /** Hard cap on the phase: when it expires, every request not yet answered counts as an error. */
  timeCapMs: number
  /** Sequence number of the first payload, so that no two requests of a caller process are alike. */
  firstSequence: number
  /** Size of every request body. */
  payloadBytes: number
  call: (payload: string, worker: number) => Promise<string>
  onProgress: (done: number) => void
}

const MAX_ERROR_SAMPLES = 5

export async function runLoad(options: LoadOptions): Promise<Omit<PhaseResult, 'cpu'>> {
  const { count, concurrency, call } = options
  const latenciesUs: number[] = []
  const errorSamples = new Set<string>()
  let issued = 0
  let done = 0
  let stopped = false

  const noteError = (message: string): void => {
    if (errorSamples.size < MAX_ERROR_SAMPLES) errorSamples.add(message)
  }

  const work = async (worker: number): Promise<void> => {
    while (!stopped && issued < count) {
      const payload = makePayload(options.firstSequence + issued, options.payloadBytes)
      issued++
      const expected = transform(payload)
      const startedAt = process.hrtime.bigint()
      try {
        const reply = await call(payload, worker)
        // Replies that arrive after the cap belong to a phase that is over: neither success nor latency.
        if (stopped) return
        if (reply === expected) {
          latenciesUs.push(Number(process.hrtime.bigint() - startedAt) / 1000)
        } else {
          noteError(`unexpected reply: ${JSON.stringify(reply).slice(0, 60)}`)
        }
      } catch (error) {
        if (stopped) return
        noteError(errorMessage(error))
      }
      done++
      options.onProgress(done)
    }
  }

  const startedAt = process.hrtime.bigint()
  let capTimer: NodeJS.Timeout | undefined
  const capReached = new Promise<'capped'>((resolve) => {
    capTimer = setTimeout(() => resolve('capped'), options.timeCapMs)
  })
  const workers = Array.from({ length: Math.min(concurrency, count) }, (_, worker) => work(worker))
  const outcome = await Promise.race([Promise.all(workers).then(() => 'finished' as const), capReached])
  clearTimeout(capTimer)
  stopped = true
  const elapsedMs = Number(process.hrtime.bigint() - startedAt) / 1e6

  const timedOut = outcome === 'capped'
  if (timedOut) noteError(`time cap of ${options.timeCapMs} ms reached after ${latenciesUs.length}/${count} replies`)
  return {
    latenciesUs,
    // Everything that did not come back right counts: wrong replies, failures, and (on a cap) requests still in
    // flight or never sent. A slow system must not look clean just because it was cut short.
    errors: count - latenciesUs.length,
    errorSamples: [...errorSamples],
    elapsedMs,
    timedOut,
  }
}
