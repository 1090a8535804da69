/**
 * Per-channel settings and responder grants: thin wrappers over pgrr_configure_channel,
 * pgrr_grant_channel and pgrr_revoke_channel. These are administration: only the schema's owner (the login
 * that ran `migrate()`) or a superuser may call them.
 */
import { assertChannelName } from './channel-name.ts'
import { createPool, endPool, query, quoteIdentifier } from './database.ts'
import { toPgrrError } from './database-error.ts'
import { InvalidOptionError } from './errors.ts'
import type { ConnectionOptions } from './options.ts'

/** Limits of a channel. An omitted setting keeps its current value (a new channel starts with the defaults). */
export interface ChannelSettings {
  /**
   * Largest request payload and largest reply the channel accepts, in bytes (of UTF-8 text, or of JSON
   * text), from 1 to 1073741823. A larger request fails with `PayloadTooLargeError` (SQL: PR008) before it is
   * stored; a larger reply reaches its caller as a `RemoteError` with code `INVALID_REPLY`. Headers are
   * limited to 64 KiB on every channel. @default 67108864 (64 MiB)
   */
  maxPayloadBytes?: number
  /** Attempts of requests that do not set `maxAttempts`, from 1 (at-most-once) to 100. @default 1 */
  maxAttempts?: number
}

/** The settings of a channel in effect after {@link configureChannel}. */
export interface ChannelConfiguration {
  channel: string
  maxPayloadBytes: number
  maxAttempts: number
}

/**
 * Sets limits of `channel`, creating it if it is new. Throws `InvalidChannelError`, `InvalidOptionError`
 * for settings out of range, `ConnectionError`, or the database's permission error (SQLSTATE 42501) when
 * the login is not the schema's owner.
 */
export async function configureChannel(
  options: ConnectionOptions,
  channel: string,
  settings: ChannelSettings = {},
): Promise<ChannelConfiguration> {
  assertChannelName(channel)
  const maxPayloadBytes = optionalInteger(settings.maxPayloadBytes, 'maxPayloadBytes', 1, 1_073_741_823)
  const maxAttempts = optionalInteger(settings.maxAttempts, 'maxAttempts', 1, 100)
  const rows = await run<{ max_payload_bytes: number; max_attempts: number }>(
    options,
    (s) => `select max_payload_bytes, max_attempts from ${s}.pgrr_configure_channel($1::text, $2::int, $3::int)`,
    [channel, maxPayloadBytes, maxAttempts],
  )
  const row = rows[0]!
  return { channel, maxPayloadBytes: row.max_payload_bytes, maxAttempts: row.max_attempts }
}

/**
 * Lets members of `role` serve `channel` (responders of other roles are refused, see docs/security.md).
 * Creates the channel if it is new. Idempotent.
 */
export async function grantChannel(options: ConnectionOptions, channel: string, role: string): Promise<void> {
  assertChannelName(channel)
  assertRoleName(role)
  await run(options, (s) => `select ${s}.pgrr_grant_channel($1::text, $2::name)`, [channel, role])
}

/** Undoes {@link grantChannel}. Responders already registered keep serving until they register again. */
export async function revokeChannel(options: ConnectionOptions, channel: string, role: string): Promise<void> {
  assertChannelName(channel)
  assertRoleName(role)
  await run(options, (s) => `select ${s}.pgrr_revoke_channel($1::text, $2::name)`, [channel, role])
}

async function run<Row>(options: ConnectionOptions, statement: (schema: string) => string, parameters: unknown[]): Promise<Row[]> {
  const pool = createPool(options, 1)
  try {
    // Not prepared: administration runs rarely, and the text names the schema.
    return await query<Row>(pool, statement(quoteIdentifier(options.schema ?? 'public')), parameters, false)
  } catch (error) {
    throw toPgrrError(error)
  } finally {
    await endPool(pool)
  }
}

function optionalInteger(value: number | undefined, name: string, min: number, max: number): number | null {
  if (value === undefined) return null
  if (!(Number.isInteger(value) && value >= min && value <= max)) {
    throw new InvalidOptionError(`${name} must be an integer from ${min} to ${max}, got ${String(value)}`)
  }
  return value
}

function assertRoleName(role: unknown): asserts role is string {
  if (typeof role !== 'string' || role.length === 0 || Buffer.byteLength(role) > 63 || role.includes('\u0000') || !role.isWellFormed()) {
    throw new InvalidOptionError(`role must be a role name of 1 to 63 bytes, got ${JSON.stringify(role)}`)
  }
}
