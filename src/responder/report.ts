/**
 * A responder's counters, written to its row every sweep interval for `pgrr status` (pgrr_report,
 * 05_registration.sql). The sweeps themselves are the client's, shared by its responders (sweeps.ts).
 */
import type { JobCounters } from './jobs.ts'
import type { ResponderContext } from './registration.ts'

export interface ReportOptions extends ResponderContext {
  /** Whether the server runs (nothing is written otherwise). */
  readonly running: () => boolean
  readonly counters: () => JobCounters
}

/** Writes the responder's counters every `intervalMs` until the returned stop() is called. */
export function startReports(options: ReportOptions, intervalMs: number): () => void {
  const timer = setInterval(() => void reportCounters(options), intervalMs)
  timer.unref()
  return () => clearInterval(timer)
}

/** Writes one responder's counters to its row. */
async function reportCounters(options: ReportOptions): Promise<void> {
  const session = options.registration()
  if (!options.running() || session === undefined) return
  const counters = options.counters()
  try {
    await options.query(options.statements.report, [
      session.responderId,
      counters.handledTotal,
      counters.failedTotal,
      counters.handledLastMinute,
      counters.failedLastMinute,
      counters.running,
    ])
  } catch (error) {
    options.logger.debug({ err: error }, 'report failed')
  }
}
