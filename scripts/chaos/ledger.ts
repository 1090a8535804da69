/**
 * The chaos run's ledger: append-only files, one per process, written with synchronous writes so that a line is
 * in the kernel before the next step (a SIGKILL right after loses nothing). Responders write one `exec` line
 * when a handler starts; callers write `sent` before a request and `done` when it settled.
 *
 *   exec <key> <requestId> <attempt> <responder>
 *   sent <key> <once|retry>
 *   done <key> <reply|wrong|CODE>
 */
import { closeSync, openSync, readdirSync, readFileSync, writeSync } from 'node:fs'
import path from 'node:path'

export class LedgerWriter {
  readonly #fd: number

  constructor(dir: string, file: string) {
    this.#fd = openSync(path.join(dir, file), 'a')
  }

  write(...fields: (string | number)[]): void {
    writeSync(this.#fd, `${fields.join(' ')}\n`)
  }

  close(): void {
    closeSync(this.#fd)
  }
}

/** The reply a responder gives to a payload, so that a caller can tell a right reply from a wrong one. */
export function expectedReply(payload: ChaosPayload): ChaosReply {
  return { key: payload.key, sum: payload.n * 2 + 1 }
}

export interface ChaosPayload {
  key: string
  n: number
  /** How long the handler works, in ms. */
  workMs: number
}

export interface ChaosReply {
  key: string
  sum: number
}

export interface LedgerSummary {
  sent: number
  /** Sent once each? Keys sent more than once are a bug of the caller itself. */
  sentTwice: number
  replied: number
  wrong: number
  /** Outcomes by error code. */
  errors: Record<string, number>
  /** Keys that ended more than once. */
  endedTwice: number
  /** Keys sent that never ended (a caller would have hung). */
  neverEnded: number
  executions: number
  /** At-most-once keys whose handler started more than once. */
  duplicateExecutions: number
  /** At-least-once keys that ran more than once (allowed, counted). */
  retried: number
  /** Keys replied to although no handler ever started for them. */
  repliedWithoutExecution: number
}

/** Reads every ledger file of `dir` and checks the promises. */
export function readLedger(dir: string): LedgerSummary {
  const sent = new Map<string, string>()
  const ended = new Map<string, string[]>()
  const executions = new Map<string, number>()
  let sentTwice = 0
  let executionCount = 0
  for (const file of readdirSync(dir)) {
    for (const line of readFileSync(path.join(dir, file), 'utf8').split('\n')) {
      const [kind, key, value] = line.split(' ')
      if (key === undefined) continue
      if (kind === 'sent') {
        if (sent.has(key)) sentTwice++
        sent.set(key, value ?? 'once')
      } else if (kind === 'done') {
        ended.set(key, [...(ended.get(key) ?? []), value ?? '?'])
      } else if (kind === 'exec') {
        executionCount++
        executions.set(key, (executions.get(key) ?? 0) + 1)
      }
    }
  }
  const summary: LedgerSummary = {
    sent: sent.size,
    sentTwice,
    replied: 0,
    wrong: 0,
    errors: {},
    endedTwice: 0,
    neverEnded: 0,
    executions: executionCount,
    duplicateExecutions: 0,
    retried: 0,
    repliedWithoutExecution: 0,
  }
  for (const [key, mode] of sent) {
    const outcomes = ended.get(key) ?? []
    if (outcomes.length === 0) summary.neverEnded++
    if (outcomes.length > 1) summary.endedTwice++
    const outcome = outcomes[0]
    if (outcome === 'reply') summary.replied++
    else if (outcome === 'wrong') summary.wrong++
    else if (outcome !== undefined) summary.errors[outcome] = (summary.errors[outcome] ?? 0) + 1
    const runs = executions.get(key) ?? 0
    if (runs > 1 && mode === 'once') summary.duplicateExecutions++
    if (runs > 1 && mode === 'retry') summary.retried++
    if (outcome === 'reply' && runs === 0) summary.repliedWithoutExecution++
  }
  return summary
}
