/**
 * Payloads and replies on the wire: a string travels as text, any other JSON value as its JSON text with a
 * flag, so both round-trip exactly.
 */
import { InvalidPayloadError } from './errors.ts'

/** A payload as stored: the text and whether it is JSON. */
export interface EncodedPayload {
  text: string
  json: boolean
}

/** Encodes a payload or reply; throws `InvalidPayloadError` for what Postgres text or JSON cannot hold. */
export function encodePayload(value: unknown, what = 'payload'): EncodedPayload {
  if (typeof value === 'string') {
    if (value.includes('\u0000')) throw new InvalidPayloadError(`${what} text contains a NUL character, which PostgreSQL text cannot store`)
    // A lone surrogate has no UTF-8 form: it would come back as U+FFFD, not as what was sent.
    if (!value.isWellFormed()) throw new InvalidPayloadError(`${what} text contains a lone UTF-16 surrogate`)
    return { text: value, json: false }
  }
  let text: string | undefined
  try {
    text = JSON.stringify(value, refuseNonFinite)
  } catch (error) {
    if (error instanceof InvalidPayloadError) throw new InvalidPayloadError(`${what} ${error.message}`)
    throw new InvalidPayloadError(`${what} is not serialisable to JSON: ${(error as Error).message}`, { cause: error })
  }
  if (text === undefined) throw new InvalidPayloadError(`${what} must be a string or a JSON value, got ${typeof value}`)
  return { text, json: true }
}

/**
 * JSON has no NaN or Infinity: JSON.stringify would send null, at any depth, which is not what was given.
 * A replacer sees every value, after its toJSON.
 */
function refuseNonFinite(this: unknown, key: string, value: unknown): unknown {
  if (typeof value === 'number' && !Number.isFinite(value)) {
    throw new InvalidPayloadError(key === '' ? `must be a finite number, got ${value}` : `holds ${value} at ${JSON.stringify(key)}: JSON has no such number`)
  }
  return value
}

/** Decodes a stored payload or reply. */
export function decodePayload(text: string, json: boolean | null | undefined): unknown {
  return json ? JSON.parse(text) : text
}
