// The one request body every system sends, and the one transformation every responder applies,
// so that the systems differ only in how the bytes travel.

/** Size of every request body, in bytes (ASCII, so characters = bytes). */
export const PAYLOAD_BYTES = 100

const FILLER = 'the quick brown fox jumps over the lazy dog while the benchmark counts microseconds '.repeat(3)

/**
 * A request body of exactly {@link PAYLOAD_BYTES} bytes. It starts with the sequence number so that every
 * request is distinct: a reply routed to the wrong caller is detected as an error, not counted as a success.
 */
export function makePayload(sequence: number): string {
  const head = `req ${sequence} `
  return head + FILLER.slice(0, PAYLOAD_BYTES - head.length)
}

/** What every responder does with a request: cheap, deterministic, and checkable by the caller. */
export function transform(payload: string): string {
  return payload.toUpperCase()
}
