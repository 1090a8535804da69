/**
 * A responder's handler statistics, for `pgrr stats` and `client.services()` (sql/protocol/16_services.sql):
 * kept in memory as handlers finish, and written to the responder's row on its next lease renewal when they
 * changed (lease.ts, every 500 ms): nothing is written per request.
 */
import type { Result } from './handler.ts'

/** How many of the latest handler times the p99 is taken over. */
const recentCount = 1000

/** What a responder reports of its handler, as stored in pgrr_responder.stats. */
export interface HandlerStats {
  /** Requests whose handler ended (replied, failed or timed out) since the responder registered. */
  requests: number
  /** Of those, the ones that ended with an error reply (a timeout included). */
  errors: number
  /** Average handler time in milliseconds over all of them; null before the first. */
  averageMs: number | null
  /** 99th percentile of the handler time over the latest 1,000, in milliseconds; null before the first. */
  p99Ms: number | null
  /** The last error reply: its code, its message (at most 500 characters) and when (ISO 8601). */
  lastError: { code: string; message: string; at: string } | null
}

/** The statistics of one responder's handler, and which of their versions was last written. */
export class ServiceStats {
  #requests = 0
  #errors = 0
  #totalMs = 0
  readonly #recent = new Float64Array(recentCount)
  #recentNext = 0
  #recentFilled = 0
  #lastError: HandlerStats['lastError'] = null
  #version = 0
  #writtenVersion = 0

  /** A handler ended after `durationMs` with `result`. */
  record(durationMs: number, result: Result): void {
    const ms = Math.max(0, durationMs)
    this.#requests++
    this.#totalMs += ms
    this.#recent[this.#recentNext] = ms
    this.#recentNext = (this.#recentNext + 1) % recentCount
    this.#recentFilled = Math.min(recentCount, this.#recentFilled + 1)
    if (result.failed) {
      this.#errors++
      this.#lastError = { code: result.code ?? 'HANDLER_ERROR', message: result.body.slice(0, 500), at: new Date().toISOString() }
    }
    this.#version++
  }

  /** The statistics now. */
  current(): HandlerStats {
    let p99Ms: number | null = null
    if (this.#recentFilled > 0) {
      const sorted = this.#recent.slice(0, this.#recentFilled).sort()
      p99Ms = round(sorted[Math.min(sorted.length - 1, Math.ceil(sorted.length * 0.99) - 1)]!)
    }
    return {
      requests: this.#requests,
      errors: this.#errors,
      averageMs: this.#requests === 0 ? null : round(this.#totalMs / this.#requests),
      p99Ms,
      lastError: this.#lastError,
    }
  }

  /** The statistics as JSON and their version, when they changed since the last write; else undefined. */
  unwritten(): { json: string; version: number } | undefined {
    if (this.#version === this.#writtenVersion) return undefined
    return { json: JSON.stringify(this.current()), version: this.#version }
  }

  /** Version `version` was written. */
  written(version: number): void {
    this.#writtenVersion = Math.max(this.#writtenVersion, version)
  }
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100
}
