/**
 * The formats of streamed replies that SQL and TypeScript must agree on (sql/protocol/14_stream.sql), as
 * src/wire.ts is for the rest: what travels on a caller's part channel, and the credits on a responder's
 * control channel. The decoders take whatever arrives (any login may NOTIFY any channel) and never throw.
 */

/**
 * One part on a caller's part channel: pgrr_part_entry ([id, 'p', n, is_json, part]), or
 * pgrr_part_short_entry ([id, 'p', n]) for a part too large for the NOTIFY, read with pgrr_stream_fetch.
 */
export type PartEntry = [id: string, kind: 'p', n: number, json?: boolean, part?: string]

/** Whether `value` is a pgrr_part_entry or a pgrr_part_short_entry. */
export function isPartEntry(value: unknown): value is PartEntry {
  if (!Array.isArray(value) || typeof value[0] !== 'string' || value[1] !== 'p' || !Number.isSafeInteger(value[2]) || (value[2] as number) < 1) {
    return false
  }
  return value.length === 3 || (value.length === 5 && typeof value[3] === 'boolean' && typeof value[4] === 'string')
}

/** A part channel's NOTIFY: a JSON array of part entries; the entries that are not one are left out. */
export function decodeParts(payload: string): { entries: PartEntry[]; malformed: number } | undefined {
  let values: unknown
  try {
    values = JSON.parse(payload)
  } catch {
    return undefined
  }
  if (!Array.isArray(values)) return undefined
  const entries = values.filter(isPartEntry)
  return { entries, malformed: values.length - entries.length }
}

/** A credit (pgrr_credit_entry): the caller of stream `id` consumed its first `consumed` parts; ms left. */
export interface Credit {
  id: string
  consumed: number
  remainingMs: number
}

const creditPattern = /^c(-?\d{1,20}):(\d{1,10}):(\d{1,15})$/

/**
 * A responder's control NOTIFY that is a credit (`c<id>:<consumed>:<ms left>`), or undefined: then it is a
 * cancellation (ids, comma separated: src/wire.ts decodeCancelledIds).
 */
export function decodeCredit(payload: string): Credit | undefined {
  const match = creditPattern.exec(payload)
  if (match === null) return undefined
  return { id: match[1]!, consumed: Number(match[2]), remainingMs: Number(match[3]) }
}
