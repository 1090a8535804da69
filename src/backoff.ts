/**
 * The wait before trying again after a lost connection or a failed attempt, for the LISTEN connection
 * (listener.ts) and a responder's registration (responder/register-again.ts): full jitter, a random wait up
 * to a ceiling that starts at 50 ms and doubles with each failure in a row, up to 5 s, so that processes
 * that lost the server together do not come back together, and one that keeps failing does not hammer it.
 */

/** Longest ceiling of a wait. */
const maxBackoffMs = 5000
/** Ceiling of the first wait. */
const firstBackoffMs = 50

/** The longest wait after `failures` failures in a row (0: the first try after a loss). */
export function backoffCeilingMs(failures: number): number {
  return Math.min(maxBackoffMs, firstBackoffMs * 2 ** failures)
}

/** A wait after `failures` failures in a row: random, up to its ceiling. */
export function retryDelayMs(failures: number): number {
  return Math.random() * backoffCeilingMs(failures)
}
