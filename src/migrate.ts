/**
 * Migrations: the numbered files of `sql/` applied in order, each once, recorded in
 * `<schema>.pgrr_migration`. Safe when several processes migrate at once (one transaction under an
 * advisory lock); refuses a schema migrated by a newer version of this library. Optionally grants the
 * protocol to a caller role and a responder role (see README, "Security").
 */
import type pg from 'pg'
import { assertChannelName } from './channel-name.ts'
import { createPool, endPool, quoteIdentifier, withTransaction } from './database.ts'
import { toPgrrError } from './database-error.ts'
import { InvalidOptionError, SchemaVersionError } from './errors.ts'
import { latestVersion, loadMigrations, renderMigration } from './migrations.ts'
import type { ConnectionOptions } from './options.ts'

export { latestVersion }

const minimumServerVersion = 130000

/**
 * Roles that {@link migrate} grants the protocol to. Each is created (NOLOGIN) when it does not exist, which
 * needs the CREATEROLE privilege; make logins members of them (`grant <role> to <login>`).
 */
export interface MigrateRoles {
  /**
   * Members may make requests: `request()`, `await_reply()`, `await_reply_json()` and what the TypeScript
   * client uses. They cannot read the tables, and read only replies to their own requests.
   */
  caller?: string
  /** Members may serve the channels granted to them (`channels`, or `grantChannel()` later). */
  responder?: string
  /** Channels the responder role may serve (granted once; see `grantChannel()`, `revokeChannel()`). */
  channels?: readonly string[]
}

/** Options of {@link migrate}. */
export interface MigrateOptions extends ConnectionOptions {
  /** Roles to create (if missing) and grant the protocol to. @default none: only the owner can use it */
  roles?: MigrateRoles
}

/** Outcome of {@link migrate}. */
export interface MigrateResult {
  schema: string
  /** Version before: 0 for a fresh schema. */
  fromVersion: number
  /** Version after: the latest this library knows. */
  toVersion: number
  /** Names of the files applied now. */
  applied: string[]
  /** Present when `roles` were given: the roles granted, and those that had to be created. */
  roles?: { caller?: string; responder?: string; channels: string[]; created: string[] }
}

/**
 * Installs or upgrades the protocol in `options.schema` (default `public`), creating the schema if needed;
 * nothing is created anywhere else. The functions are owned by the login that runs this, and nobody else
 * may use them until granted: pass `roles` to create and grant a caller and a responder role.
 * Idempotent. Throws `SchemaVersionError` when the schema was migrated by a newer version of this library,
 * `InvalidOptionError` for an unusable schema or role name, or a role that is missing and cannot be created.
 */
export async function migrate(options: MigrateOptions): Promise<MigrateResult> {
  const schema = options.schema ?? 'public'
  assertSchemaName(schema)
  const roles = options.roles === undefined ? undefined : checkRoles(options.roles)
  const migrations = await loadMigrations()
  const latest = migrations.at(-1)?.version ?? 0
  const pool = createPool(options, 1)
  const s = quoteIdentifier(schema)
  try {
    const [server] = (await pool.query<{ version: number }>(`select current_setting('server_version_num')::int as version`)).rows
    if ((server?.version ?? 0) < minimumServerVersion) {
      throw new SchemaVersionError(`PostgreSQL 13 or newer is required, this server is ${server?.version}`)
    }
    return await withTransaction(pool, async (tx) => {
      // Serialise concurrent migrators of this schema; the lock ends with the transaction.
      await tx.query(`select pg_advisory_xact_lock(hashtext('pgrr/migrate'), hashtext($1))`, [schema])
      await tx.query(`create schema if not exists ${s}`)
      await tx.query(`create table if not exists ${s}.pgrr_migration (
        version int primary key,
        name text not null,
        applied_at timestamptz not null default now()
      )`)
      const [row] = (await tx.query<{ version: number }>(`select coalesce(max(version), 0)::int as version from ${s}.pgrr_migration`)).rows
      const fromVersion = Number(row?.version ?? 0)
      if (fromVersion > latest) {
        throw new SchemaVersionError(
          `schema ${JSON.stringify(schema)} is at version ${fromVersion}, newer than this library knows (${latest}): upgrade pg-request-reply`,
        )
      }
      const applied: string[] = []
      for (const migration of migrations) {
        if (migration.version <= fromVersion) continue
        // No parameters: the simple query protocol, which runs a file of many statements.
        await tx.query(renderMigration(migration.text, schema))
        await tx.query(`insert into ${s}.pgrr_migration (version, name) values ($1, $2)`, [migration.version, migration.name])
        applied.push(migration.name)
      }
      const result: MigrateResult = { schema, fromVersion, toVersion: latest, applied }
      if (roles !== undefined) result.roles = await grantRoles(tx, schema, roles)
      return result
    })
  } catch (error) {
    throw toPgrrError(error)
  } finally {
    await endPool(pool)
  }
}

/**
 * Rejects schema names the migration files cannot carry: empty, longer than an identifier (63 bytes:
 * PostgreSQL would truncate it), with control characters, or with "$$" (the functions' bodies are
 * dollar-quoted and the name is substituted into them).
 */
function assertSchemaName(schema: unknown): asserts schema is string {
  if (typeof schema !== 'string' || schema.length === 0 || Buffer.byteLength(schema) > 63) {
    throw new InvalidOptionError(`schema must be a name of 1 to 63 bytes, got ${JSON.stringify(schema)}`)
  }
  // eslint-disable-next-line no-control-regex -- matching control characters is the point
  if (/[\u0000-\u001f\u007f-\u009f]/.test(schema) || schema.includes('$$') || !schema.isWellFormed()) {
    throw new InvalidOptionError(`schema ${JSON.stringify(schema)} must not contain control characters or "$$"`)
  }
}

/** Validates {@link MigrateRoles} before anything is sent. */
function checkRoles(roles: MigrateRoles): MigrateRoles {
  for (const [key, role] of [['caller', roles.caller], ['responder', roles.responder]] as const) {
    if (role === undefined) continue
    if (typeof role !== 'string' || role.length === 0 || Buffer.byteLength(role) > 63 || role.includes('\u0000') || !role.isWellFormed()) {
      throw new InvalidOptionError(`roles.${key} must be a role name of 1 to 63 bytes, got ${JSON.stringify(role)}`)
    }
  }
  const channels = [...(roles.channels ?? [])]
  if (channels.length > 0 && roles.responder === undefined) {
    throw new InvalidOptionError('roles.channels needs roles.responder: the channels are granted to the responder role')
  }
  for (const channel of channels) assertChannelName(channel)
  return { ...roles, channels }
}

/** Creates the missing roles (NOLOGIN) and grants them the protocol; inside the migration's transaction. */
async function grantRoles(
  tx: pg.PoolClient,
  schema: string,
  roles: MigrateRoles,
): Promise<NonNullable<MigrateResult['roles']>> {
  const s = quoteIdentifier(schema)
  const created: string[] = []
  for (const role of new Set([roles.caller, roles.responder])) {
    if (role !== undefined && (await createRoleIfMissing(tx, role))) created.push(role)
  }
  if (roles.caller !== undefined) await tx.query(`select ${s}.pgrr_grant_caller($1)`, [roles.caller])
  if (roles.responder !== undefined) await tx.query(`select ${s}.pgrr_grant_responder($1)`, [roles.responder])
  const channels = [...(roles.channels ?? [])]
  for (const channel of channels) await tx.query(`select ${s}.pgrr_grant_channel($1, $2)`, [channel, roles.responder!])
  const result: NonNullable<MigrateResult['roles']> = { channels, created }
  if (roles.caller !== undefined) result.caller = roles.caller
  if (roles.responder !== undefined) result.responder = roles.responder
  return result
}

/** Creates `role` (NOLOGIN) unless it exists; true when it created it. Safe when migrators race. */
async function createRoleIfMissing(tx: pg.PoolClient, role: string): Promise<boolean> {
  const exists = async () => {
    const [row] = (await tx.query<{ found: boolean }>(`select exists (select 1 from pg_catalog.pg_roles where rolname = $1) as found`, [role])).rows
    return row?.found === true
  }
  if (await exists()) return false
  await tx.query('savepoint pgrr_create_role')
  try {
    await tx.query(`create role ${quoteIdentifier(role)} nologin`)
    await tx.query('release savepoint pgrr_create_role')
    return true
  } catch (error) {
    await tx.query('rollback to savepoint pgrr_create_role')
    const code = (error as { code?: string }).code
    // 42710 duplicate_object, 23505 unique_violation: another migrator created it meanwhile.
    if ((code === '42710' || code === '23505') && (await exists())) return false
    if (code === '42501') {
      throw new InvalidOptionError(
        `role ${JSON.stringify(role)} does not exist and this login may not create it (CREATEROLE): create it first, or migrate as a login that may`,
      )
    }
    throw error
  }
}
