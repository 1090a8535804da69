/**
 * The formats SQL and TypeScript must agree on: what travels in NOTIFY payloads, and the claim's byte cap.
 * Each names its SQL twin in sql/protocol/02_wire.sql (or 01_keys.sql); a change on one side is a change on
 * the other. The decoders take whatever arrives on a channel (any login may NOTIFY any channel): they never
 * throw on hostile input, and say what they could not read.
 */

/** Headers as they travel: a flat JSON object of strings (see pgrr_parse_headers). */
export type Headers = Record<string, string>

/**
 * What a request addressed to one responder is (pgrr_addressed_entry, sql/protocol/15_scatter.sql): 'all',
 * a request of a scatter-gather that the handler runs; 'ping', answered by the responder itself.
 */
export type AddressedKind = 'all' | 'ping'

/**
 * One request handed to a responder (pgrr_handoff_entry): id, whether the payload is JSON, payload, headers
 * (or null), and the time left in ms when it was sent; a request addressed to it (pgrr_addressed_entry)
 * has its kind last.
 */
export type HandoffEntry = [id: string, json: boolean, payload: string, headers: Headers | null, timeoutMs: number, kind?: AddressedKind]

/** Whether `value` is a pgrr_handoff_entry or a pgrr_addressed_entry. */
export function isHandoffEntry(value: unknown): value is HandoffEntry {
  return (
    Array.isArray(value) &&
    (value.length === 5 || (value.length === 6 && (value[5] === 'all' || value[5] === 'ping'))) &&
    typeof value[0] === 'string' &&
    typeof value[1] === 'boolean' &&
    typeof value[2] === 'string' &&
    (value[3] === null || (typeof value[3] === 'object' && !Array.isArray(value[3]))) &&
    typeof value[4] === 'number'
  )
}

/**
 * A responder's inbox NOTIFY (pgrr_send_one, pgrr_send, pgrr_handoff_at_commit): a JSON array of
 * pgrr_handoff_entry. Undefined when it is anything else: none of it is run then.
 */
export function decodeHandoffs(message: string): HandoffEntry[] | undefined {
  let entries: unknown
  try {
    entries = JSON.parse(message)
  } catch {
    return undefined
  }
  return Array.isArray(entries) && entries.every(isHandoffEntry) ? entries : undefined
}

/**
 * The outcome of one request in a caller's reply NOTIFY: pgrr_reply_entry ([id, 'r', is_json, body] or
 * [id, 'f', code, message], headers last when there are any), pgrr_reply_short_entry (the same without body
 * and headers: the reply is too large for a NOTIFY and is fetched), or pgrr_lost_entry ([id, 'l'], lost with
 * its responder). A body is null when the responder wrote none.
 */
export type ReplyEntry =
  | [id: string, kind: 'r', json: boolean | null, body?: string | null, headers?: Headers]
  | [id: string, kind: 'f', code: string | null, message?: string | null, headers?: Headers]
  | [id: string, kind: 'l']

/** Whether `value` is a pgrr_reply_entry, a pgrr_reply_short_entry or a pgrr_lost_entry. */
export function isReplyEntry(value: unknown): value is ReplyEntry {
  if (!Array.isArray(value) || typeof value[0] !== 'string') return false
  switch (value[1]) {
    case 'l':
      return value.length === 2
    case 'r':
      if (value[2] !== null && typeof value[2] !== 'boolean') return false
      break
    case 'f':
      if (value[2] !== null && typeof value[2] !== 'string') return false
      break
    default:
      return false
  }
  // A short entry ends here; a full one carries its body, and its headers when there are any.
  if (value.length === 3) return true
  if (value.length > 5 || (value[3] !== null && typeof value[3] !== 'string')) return false
  return value.length === 4 || (typeof value[4] === 'object' && value[4] !== null && !Array.isArray(value[4]))
}

/**
 * A caller's reply NOTIFY (pgrr_reply, pgrr_reply_one, pgrr_reap): a JSON array of reply entries. Undefined
 * when it is not a JSON array; its elements are checked one by one ({@link isReplyEntry}), so that one bad
 * entry does not cost the others.
 */
export function decodeReplies(payload: string): unknown[] | undefined {
  let entries: unknown
  try {
    entries = JSON.parse(payload)
  } catch {
    return undefined
  }
  return Array.isArray(entries) ? entries : undefined
}

/**
 * A responder's control NOTIFY (pgrr_cancel, 11_caller.sql): the ids of the cancelled requests, comma
 * separated. An id that is not one of the responder's requests matches none of them.
 */
export function decodeCancelledIds(payload: string): string[] {
  return payload.split(',')
}

/** Most payload bytes one claim returns: pgrr_claim_max_bytes() in sql/protocol/01_keys.sql. */
export const claimMaxBytes = 8 * 1024 * 1024

/**
 * Whether pgrr_claim stopped at its byte cap (then more requests may be pending, as after a full batch): it
 * adds rows while the payloads before them sum to less than pgrr_claim_max_bytes().
 */
export function claimStoppedAtByteCap(rows: readonly { readonly payload: string }[]): boolean {
  let units = 0
  for (const row of rows) units += row.payload.length
  // A UTF-16 unit is at most 3 bytes of UTF-8: below this, the cap was not reached (the common case).
  if (rows.length === 0 || units * 3 < claimMaxBytes) return false
  let bytes = 0
  for (const row of rows) bytes += Buffer.byteLength(row.payload)
  return bytes >= claimMaxBytes
}
