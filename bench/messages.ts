// The IPC vocabulary between the orchestrator (bench/run.ts) and its two children per system. The orchestrator
// drives the phases so that CPU is measured over the same window on both sides.

export interface CpuTime {
  userUs: number
  systemUs: number
}

/** What the caller measured in one phase. Latencies travel whole so the orchestrator can draw the CDF. */
export interface PhaseResult {
  latenciesUs: number[]
  /** Requests that did not produce the expected reply, including those cut off by the time cap. */
  errors: number
  /** Up to a few distinct error messages, for the report. */
  errorSamples: string[]
  elapsedMs: number
  timedOut: boolean
  cpu: CpuTime
}

export type OrchestratorToCaller =
  | { type: 'run'; concurrency: number; warmupCount: number; count: number; timeCapMs: number; payloadBytes: number }
  | { type: 'measure' }
  /** Sent after the server-side CPU was read: until then the caller keeps its connections (and backends) open. */
  | { type: 'release' }
  | { type: 'stop' }

export type CallerToOrchestrator =
  | { type: 'ready' }
  | { type: 'progress'; phase: 'warm-up' | 'measured'; done: number; total: number }
  | { type: 'warmed'; errors: number; errorSamples: string[] }
  | { type: 'result'; result: PhaseResult }
  | { type: 'failed'; message: string }

export type OrchestratorToResponder = { type: 'cpu-start' } | { type: 'cpu-stop' } | { type: 'stop' }

export type ResponderToOrchestrator =
  | { type: 'ready'; serverVersion?: string }
  | { type: 'cpu-started' }
  | { type: 'cpu'; cpu: CpuTime }
  | { type: 'failed'; message: string }
