/**
 * A request as the client first makes it, before it is admitted and sent: its options checked (channel,
 * timeout, attempts, headers), its payload encoded, its telemetry started. Throws the typed error of the
 * first option that is wrong; nothing has been sent then.
 */
import { assertChannelName } from '../channel-name.ts'
import { CancelledError, InvalidOptionError } from '../errors.ts'
import { durationOption, integerOption } from '../option-values.ts'
import type { RequestOptions } from '../options.ts'
import { encodePayload } from '../payload.ts'
import type { RequestObservation, Telemetry } from '../telemetry.ts'
import type { PendingRequest } from './pending-request.ts'

/** Largest header map, as JSON: what pgrr_send accepts (06_send.sql). */
const maxHeaderBytes = 65536

/** What a client contributes to each request it makes. */
export interface RequestDefaults {
  readonly defaultTimeoutMs: number
  readonly telemetry: Telemetry
}

export function prepareRequest(
  defaults: RequestDefaults,
  channel: string,
  payload: unknown,
  options: RequestOptions,
  resolve: (value: unknown) => void,
  reject: (error: Error) => void,
): PendingRequest {
  assertChannelName(channel)
  const timeoutMs = durationOption(options.timeoutMs ?? defaults.defaultTimeoutMs, 'timeoutMs')
  const maxAttempts = options.maxAttempts === undefined ? null : integerOption(options.maxAttempts, 'maxAttempts', 100)
  const encoded = encodePayload(payload)
  let headers = options.headers
  let observation: RequestObservation | undefined
  if (defaults.telemetry.requestStarted !== undefined) {
    headers = { ...headers }
    observation = defaults.telemetry.requestStarted({ channel, headers })
  }
  return {
    channel,
    payload: encoded.text,
    json: encoded.json,
    headers: encodeHeaders(headers),
    observation,
    maxAttempts,
    timeoutMs,
    startedAt: performance.now(),
    admitted: false,
    settled: false,
    resolve,
    reject,
    signal: options.signal,
  }
}

/** Headers as they travel: JSON text of strings, at most 64 KiB; `InvalidOptionError` otherwise. */
export function encodeHeaders(headers: Record<string, string> | undefined): string | null {
  if (headers === undefined) return null
  for (const [key, value] of Object.entries(headers)) {
    if (typeof value !== 'string') throw new InvalidOptionError(`header ${JSON.stringify(key)} must be a string`)
  }
  const text = encodePayload(headers, 'headers').text
  const bytes = Buffer.byteLength(text)
  if (bytes > maxHeaderBytes) throw new InvalidOptionError(`headers take ${bytes} bytes as JSON, over the limit of ${maxHeaderBytes}`)
  return text
}

export function abortError(signal: AbortSignal): CancelledError {
  return new CancelledError('the request was cancelled', { cause: signal.reason })
}
