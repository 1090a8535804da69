/**
 * What a responder says it is (sql/protocol/16_services.sql, pgrr_describe): its description, version and
 * the JSON Schemas of its request and reply, from `serve()`'s options, written once with its registration.
 */
import { InvalidOptionError } from '../errors.ts'
import type { ServeOptions } from '../options.ts'

/** What a responder says it is, as stored in pgrr_responder.info. */
export interface ServiceInfo {
  description?: string
  version?: string
  /** JSON Schema of the request payload. */
  requestSchema?: unknown
  /** JSON Schema of the reply. */
  replySchema?: unknown
}

/** Largest info, as JSON: what pgrr_describe accepts. */
const maxInfoBytes = 262_144

/** The info of `options` as JSON, null when it says nothing; `InvalidOptionError` when it cannot travel. */
export function encodeServiceInfo(options: ServeOptions): string | null {
  const info: ServiceInfo = {}
  for (const key of ['description', 'version'] as const) {
    const value = options[key]
    if (value === undefined) continue
    if (typeof value !== 'string' || value.includes('\u0000') || !value.isWellFormed()) {
      throw new InvalidOptionError(`${key} must be a string PostgreSQL can store (no NUL character, no lone surrogate)`)
    }
    info[key] = value
  }
  for (const key of ['requestSchema', 'replySchema'] as const) {
    const value = options[key]
    if (value === undefined) continue
    if (typeof value !== 'object' && typeof value !== 'boolean') throw new InvalidOptionError(`${key} must be a JSON Schema (an object or a boolean)`)
    info[key] = value
  }
  if (Object.keys(info).length === 0) return null
  let json: string
  try {
    json = JSON.stringify(info)
  } catch (error) {
    throw new InvalidOptionError(`the service's description cannot be written as JSON: ${(error as Error).message}`)
  }
  if (json.includes('\\u0000')) throw new InvalidOptionError('the JSON Schemas must not hold a NUL character')
  const bytes = Buffer.byteLength(json)
  if (bytes > maxInfoBytes) throw new InvalidOptionError(`the service's description takes ${bytes} bytes as JSON, over the limit of ${maxInfoBytes}`)
  return json
}
