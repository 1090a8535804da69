/**
 * `migrate()`: brings a schema to this library's tables and protocol, in one transaction under an advisory
 * lock, so that several processes may run it at once. The migrations (tables) not yet recorded are applied
 * in order; then, when the protocol installed differs from the library's (version or checksum), the old
 * one's functions are dropped and the new one is installed as a unit, and granted again to the roles it
 * was granted to. Refuses a schema newer than the library. `dryRun` returns the SQL instead of running it.
 */
import type pg from 'pg'
import { assertChannelName } from './channel-name.ts'
import { createPool, endPool, quoteIdentifier, quoteLiteral, withTransaction } from './database.ts'
import { toPgrrError } from './database-error.ts'
import { InvalidOptionError, SchemaVersionError } from './errors.ts'
import { latestVersion, loadMigrations, loadProtocol, renderSql } from './migrations.ts'
import type { ConnectionOptions } from './options.ts'

export { latestVersion }

const minimumServerVersion = 130000

/**
 * Roles that {@link migrate} grants the protocol to. Each is created (NOLOGIN) when it does not exist, which
 * needs the CREATEROLE privilege; make logins members of them (`grant <role> to <login>`). They are
 * recorded, and every later protocol is granted to them again.
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
  /**
   * Change nothing: resolve with the SQL that would run (`sql`), for review. Reads the schema's state to
   * know what is missing. @default false
   */
  dryRun?: boolean
}

/** Outcome of {@link migrate}. */
export interface MigrateResult {
  schema: string
  /** Migration version before: 0 for a fresh schema. */
  fromVersion: number
  /** Migration version after: the latest this library knows. */
  toVersion: number
  /** Names of the migration files applied now. */
  applied: string[]
  /** The protocol before (null: none installed) and after, and whether it was installed now. */
  protocol: { fromVersion: number | null; toVersion: number; installed: boolean }
  /** Present when `roles` were given: the roles granted, and those that had to be created. */
  roles?: { caller?: string; responder?: string; channels: string[]; created: string[] }
  /** With `dryRun`: the SQL that would run, one transaction. */
  sql?: string
}

/**
 * The functions and views of a protocol in a schema: the names it owns (`pgrr_*`, and the SQL API's own).
 * What an upgrade drops before it installs the new protocol, and what is revoked from PUBLIC after.
 */
const apiFunctionNames = ['request', 'await_reply', 'await_reply_json', 'await_reply_full', 'request_all', 'request_stream', 'await_part']
const protocolFunctionsQuery = (schemaLiteral: string) => `
  select p.proname as name, pg_catalog.pg_get_function_identity_arguments(p.oid) as arguments, p.prokind
    from pg_catalog.pg_proc p
   where p.pronamespace = pg_catalog.to_regnamespace(pg_catalog.quote_ident(${schemaLiteral}))
     and (p.proname like 'pgrr\\_%' or p.proname = any (array[${apiFunctionNames.map(quoteLiteral).join(', ')}]))`

/** The schema's state: its migration version and installed protocol. */
interface SchemaState {
  version: number
  protocol: { version: number; checksum: string } | null
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
  const pool = createPool(options, 1)
  try {
    const [server] = (await pool.query<{ version: number }>(`select current_setting('server_version_num')::int as version`)).rows
    if ((server?.version ?? 0) < minimumServerVersion) {
      throw new SchemaVersionError(`PostgreSQL 13 or newer is required, this server is ${server?.version}`)
    }
    if (options.dryRun === true) {
      const client = await pool.connect()
      try {
        const script: string[] = []
        const result = await run(client, schema, roles, (text) => script.push(text), true)
        return { ...result, sql: `begin;\n\n${script.map((text) => `${text.trim().replace(/;$/, "")};`).join('\n\n')}\n\ncommit;\n` }
      } finally {
        client.release()
      }
    }
    return await withTransaction(pool, (tx) =>
      run(tx, schema, roles, async (text, values) => {
        await tx.query(text, values)
      }, false),
    )
  } catch (error) {
    throw toPgrrError(error)
  } finally {
    await endPool(pool)
  }
}

type Execute = (text: string, values?: unknown[]) => unknown

/**
 * The migration, statement by statement, through `execute`: run in the caller's transaction, or collected
 * for a dry run (then `readOnly`: the state is read as it is, without the lock or the bootstrap table).
 */
async function run(
  db: pg.PoolClient,
  schema: string,
  roles: MigrateRoles | undefined,
  execute: Execute,
  readOnly: boolean,
): Promise<MigrateResult> {
  const s = quoteIdentifier(schema)
  const literal = quoteLiteral(schema)
  const [migrations, protocol, latest] = await Promise.all([loadMigrations(), loadProtocol(), latestVersion()])
  // Serialise concurrent migrators of this schema; the lock ends with the transaction.
  await execute(`select pg_advisory_xact_lock(hashtext('pgrr/migrate'), hashtext(${literal}))`)
  await execute(`create schema if not exists ${s}`)
  await execute(`create table if not exists ${s}.pgrr_migration (
  version int primary key,
  name text not null,
  applied_at timestamptz not null default now()
)`)
  const state = await readState(db, schema)
  if (state.version > latest) {
    throw new SchemaVersionError(
      `schema ${JSON.stringify(schema)} is at version ${state.version}, newer than this library knows (${latest}): upgrade pg-request-reply`,
    )
  }
  if (state.protocol !== null && state.protocol.version > protocol.version) {
    throw new SchemaVersionError(
      `schema ${JSON.stringify(schema)} has protocol ${state.protocol.version}, newer than this library's (${protocol.version}): upgrade pg-request-reply`,
    )
  }
  const applied: string[] = []
  for (const migration of migrations) {
    if (migration.version <= state.version) continue
    // No parameters: the simple query protocol, which runs a file of many statements.
    await execute(renderSql(migration.text, schema))
    await execute(`insert into ${s}.pgrr_migration (version, name) values (${migration.version}, ${quoteLiteral(migration.name)})`)
    applied.push(migration.name)
  }
  const install = state.protocol === null || state.protocol.version !== protocol.version || state.protocol.checksum !== protocol.checksum
  if (install) {
    // The previous protocol's triggers, views and functions go first: what the new one does not define must
    // not stay callable, and one it defines again may have changed its signature or return type.
    const dropped = (await db.query<ProtocolFunction>(protocolFunctionsQuery(literal))).rows
    const views = (await db.query<{ name: string }>(
      `select c.relname as name from pg_catalog.pg_class c
        where c.relnamespace = pg_catalog.to_regnamespace(pg_catalog.quote_ident(${literal})) and c.relkind = 'v' and c.relname like 'pgrr\\_%'`,
    )).rows
    const triggers = (await db.query<{ name: string; relation: string }>(
      `select t.tgname as name, c.relname as relation from pg_catalog.pg_trigger t join pg_catalog.pg_class c on c.oid = t.tgrelid
        where c.relnamespace = pg_catalog.to_regnamespace(pg_catalog.quote_ident(${literal})) and c.relname like 'pgrr\\_%'
          and t.tgname like 'pgrr\\_%' and not t.tgisinternal`,
    )).rows
    for (const trigger of triggers) await execute(`drop trigger ${quoteIdentifier(trigger.name)} on ${s}.${quoteIdentifier(trigger.relation)}`)
    for (const view of views) await execute(`drop view ${s}.${quoteIdentifier(view.name)}`)
    for (const fn of dropped) await execute(`drop ${routineKind(fn)} ${s}.${quoteIdentifier(fn.name)}(${fn.arguments})`)
    for (const file of protocol.files) await execute(renderSql(file.text, schema))
    // Every function of the protocol is the owner's alone until granted (functions are executable by
    // PUBLIC by default).
    await execute(`do $$
declare
  f record;
begin
  for f in ${protocolFunctionsQuery(literal).trim()} loop
    execute pg_catalog.format('revoke all on %s %s.%I(%s) from public', case when f.prokind = 'p' then 'procedure' else 'function' end,
                              pg_catalog.quote_ident(${literal}), f.name, f.arguments);
  end loop;
end
$$`)
    await execute(`insert into ${s}.pgrr_protocol (version, checksum) values (${protocol.version}, ${quoteLiteral(protocol.checksum)})
  on conflict (singleton) do update set version = excluded.version, checksum = excluded.checksum, installed_at = now()`)
    // Granted again to the roles it was granted to.
    await execute(`select case r.kind when 'caller' then ${s}.pgrr_grant_caller(a.rolname) else ${s}.pgrr_grant_responder(a.rolname) end
  from ${s}.pgrr_role r join pg_catalog.pg_roles a on a.oid = r.role`)
  }
  const result: MigrateResult = {
    schema,
    fromVersion: state.version,
    toVersion: latest,
    applied,
    protocol: { fromVersion: state.protocol?.version ?? (state.version > 0 ? 1 : null), toVersion: protocol.version, installed: install },
  }
  if (roles !== undefined) result.roles = await grantRoles(db, schema, roles, execute, readOnly)
  return result
}

/** The migration version and the protocol recorded in the schema (none for a fresh schema or 0.1.0's). */
async function readState(db: pg.PoolClient, schema: string): Promise<SchemaState> {
  const s = quoteIdentifier(schema)
  const [tables] = (await db.query<{ migration: boolean; protocol: boolean }>(
    `select to_regclass($1) is not null as migration, to_regclass($2) is not null as protocol`,
    [`${s}.pgrr_migration`, `${s}.pgrr_protocol`],
  )).rows
  let version = 0
  if (tables?.migration) {
    const [row] = (await db.query<{ version: number }>(`select coalesce(max(version), 0)::int as version from ${s}.pgrr_migration`)).rows
    version = Number(row?.version ?? 0)
  }
  let protocol: SchemaState['protocol'] = null
  if (tables?.protocol) {
    const [row] = (await db.query<{ version: number; checksum: string }>(`select version, checksum from ${s}.pgrr_protocol`)).rows
    if (row !== undefined) protocol = row
  }
  return { version, protocol }
}

interface ProtocolFunction {
  name: string
  /** pg_get_function_identity_arguments: what tells overloads apart in a DROP. */
  arguments: string
  prokind: string
}

function routineKind(fn: ProtocolFunction): string {
  return fn.prokind === 'p' ? 'procedure' : 'function'
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
  db: pg.PoolClient,
  schema: string,
  roles: MigrateRoles,
  execute: Execute,
  readOnly: boolean,
): Promise<NonNullable<MigrateResult['roles']>> {
  const s = quoteIdentifier(schema)
  const created: string[] = []
  for (const role of new Set([roles.caller, roles.responder])) {
    if (role === undefined) continue
    if (readOnly) {
      if (!(await roleExists(db, role))) {
        await execute(`create role ${quoteIdentifier(role)} nologin`)
        created.push(role)
      }
    } else if (await createRoleIfMissing(db, role)) {
      created.push(role)
    }
  }
  if (roles.caller !== undefined) await execute(`select ${s}.pgrr_grant_caller(${quoteLiteral(roles.caller)})`)
  if (roles.responder !== undefined) await execute(`select ${s}.pgrr_grant_responder(${quoteLiteral(roles.responder)})`)
  const channels = [...(roles.channels ?? [])]
  for (const channel of channels) await execute(`select ${s}.pgrr_grant_channel(${quoteLiteral(channel)}, ${quoteLiteral(roles.responder!)})`)
  const result: NonNullable<MigrateResult['roles']> = { channels, created }
  if (roles.caller !== undefined) result.caller = roles.caller
  if (roles.responder !== undefined) result.responder = roles.responder
  return result
}

async function roleExists(db: pg.PoolClient, role: string): Promise<boolean> {
  const [row] = (await db.query<{ found: boolean }>(`select exists (select 1 from pg_catalog.pg_roles where rolname = $1) as found`, [role])).rows
  return row?.found === true
}

/** Creates `role` (NOLOGIN) unless it exists; true when it created it. Safe when migrators race. */
async function createRoleIfMissing(tx: pg.PoolClient, role: string): Promise<boolean> {
  if (await roleExists(tx, role)) return false
  await tx.query('savepoint pgrr_create_role')
  try {
    await tx.query(`create role ${quoteIdentifier(role)} nologin`)
    await tx.query('release savepoint pgrr_create_role')
    return true
  } catch (error) {
    await tx.query('rollback to savepoint pgrr_create_role')
    const code = (error as { code?: string }).code
    // 42710 duplicate_object, 23505 unique_violation: another migrator created it meanwhile.
    if ((code === '42710' || code === '23505') && (await roleExists(tx, role))) return false
    if (code === '42501') {
      throw new InvalidOptionError(
        `role ${JSON.stringify(role)} does not exist and this login may not create it (CREATEROLE): create it first, or migrate as a login that may`,
      )
    }
    throw error
  }
}
