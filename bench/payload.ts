// The one request body every system sends, and the one transformation every responder applies,
// so that the systems differ only in how the bytes travel.

/** Size of every request body by default, in bytes (ASCII, so characters = bytes); `--payload-bytes` changes it. */
export const PAYLOAD_BYTES = 100

/** The smallest body that still holds its sequence number and some filler. */
export const MIN_PAYLOAD_BYTES = 24

const FILLER = 'the quick brown fox jumps over the lazy dog while the benchmark counts microseconds '.repeat(3)

/**
 * A request body of exactly `bytes` bytes (default {@link PAYLOAD_BYTES}). It starts with the sequence number
 * so that every request is distinct: a reply routed to the wrong caller is detected as an error, not counted
 * as a success.
 */
export function makePayload(sequence: number, bytes: number = PAYLOAD_BYTES): string {
  const head = `req ${sequence} `
  const fill = bytes - head.length
  return head + (fill <= FILLER.length ? FILLER.slice(0, fill) : FILLER.repeat(Math.ceil(fill / FILLER.length)).slice(0, fill))
}

/** What every responder does with a request: cheap, deterministic, and checkable by the caller. */
export function transform(payload: string): string {
  return payload.toUpperCase()
}
