/**
 * Migrations: the numbered files of `sql/` applied in order, each once, recorded in
 * `<schema>.pgrr_migration`. Safe when several processes migrate at once (one transaction under an
 * advisory lock); refuses a schema migrated by a newer version of this library.
 */
import { readdir, readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { createSql, quoteIdentifier, quoteLiteral, type Sql } from './connection.ts'
import { toPgrrError } from './database-error.ts'
import { SchemaVersionError } from './errors.ts'
import type { ConnectionOptions } from './options.ts'

/** Outcome of {@link migrate}. */
export interface MigrateResult {
  schema: string
  /** Version before: 0 for a fresh schema. */
  fromVersion: number
  /** Version after: the latest this library knows. */
  toVersion: number
  /** Names of the files applied now. */
  applied: string[]
}

interface Migration {
  version: number
  name: string
  text: string
}

const sqlDirectory = fileURLToPath(new URL('../sql/', import.meta.url))
const migrationFile = /^(\d{4})_[a-z0-9_]+\.sql$/
const minimumServerVersion = 130000

/** The migrations shipped with this version, in order. */
export async function loadMigrations(): Promise<Migration[]> {
  const names = (await readdir(sqlDirectory)).filter((name) => migrationFile.test(name)).sort()
  return Promise.all(
    names.map(async (name) => ({
      version: Number(migrationFile.exec(name)?.[1]),
      name,
      text: await readFile(sqlDirectory + name, 'utf8'),
    })),
  )
}

/** The schema version this library needs: the number of its newest migration. */
export async function latestVersion(): Promise<number> {
  const migrations = await loadMigrations()
  return migrations.at(-1)?.version ?? 0
}

/** Substitutes the schema placeholders of a migration file. */
export function renderMigration(text: string, schema: string): string {
  return text.replace(/:SCHEMA_LITERAL\b/g, quoteLiteral(schema)).replace(/:SCHEMA\b/g, quoteIdentifier(schema))
}

/**
 * Installs or upgrades the protocol in `options.schema` (default `public`), creating the schema if needed.
 * Idempotent. Throws `SchemaVersionError` when the schema was migrated by a newer version of this library.
 */
export async function migrate(options: ConnectionOptions): Promise<MigrateResult> {
  const schema = options.schema ?? 'public'
  const sql = createSql(options, { max: 1, dedicated: false })
  try {
    return await migrateWith(sql, schema)
  } catch (error) {
    throw toPgrrError(error)
  } finally {
    await sql.end({ timeout: 5 })
  }
}

/** {@link migrate} on an existing postgres.js instance. */
export async function migrateWith(sql: Sql, schema: string): Promise<MigrateResult> {
  const migrations = await loadMigrations()
  const latest = migrations.at(-1)?.version ?? 0
  const [server] = await sql`select current_setting('server_version_num')::int as version`
  if ((server?.version ?? 0) < minimumServerVersion) {
    throw new SchemaVersionError(`PostgreSQL 13 or newer is required, this server is ${server?.version}`)
  }
  return sql.begin(async (tx) => {
    // Serialise concurrent migrators of this schema; the lock ends with the transaction.
    await tx`select pg_advisory_xact_lock(hashtext('pgrr/migrate'), hashtext(${schema}))`
    await tx.unsafe(`create schema if not exists ${quoteIdentifier(schema)}`)
    await tx.unsafe(`create table if not exists ${quoteIdentifier(schema)}.pgrr_migration (
      version int primary key,
      name text not null,
      applied_at timestamptz not null default now()
    )`)
    const [row] = await tx.unsafe(`select coalesce(max(version), 0)::int as version from ${quoteIdentifier(schema)}.pgrr_migration`)
    const fromVersion = Number(row?.version ?? 0)
    if (fromVersion > latest) {
      throw new SchemaVersionError(
        `schema ${JSON.stringify(schema)} is at version ${fromVersion}, newer than this library knows (${latest}): upgrade pg-request-reply`,
      )
    }
    const applied: string[] = []
    for (const migration of migrations) {
      if (migration.version <= fromVersion) continue
      await tx.unsafe(renderMigration(migration.text, schema))
      await tx.unsafe(`insert into ${quoteIdentifier(schema)}.pgrr_migration (version, name) values ($1, $2)`, [
        migration.version,
        migration.name,
      ])
      applied.push(migration.name)
    }
    return { schema, fromVersion, toVersion: latest, applied }
  })
}

/**
 * Throws `SchemaVersionError` unless `schema` was migrated to exactly the version this library needs.
 * Called by clients at start, so a missing or stale install fails with a clear message.
 */
export async function assertMigrated(sql: Sql, schema: string): Promise<void> {
  const latest = await latestVersion()
  const table = `${quoteIdentifier(schema)}.pgrr_migration`
  const [found] = await sql`select to_regclass(${table}) is not null as ok`
  if (!found?.ok) {
    throw new SchemaVersionError(`schema ${JSON.stringify(schema)} has no pg-request-reply install: run \`pgrr migrate\` or migrate()`)
  }
  const [version] = await sql.unsafe(`select coalesce(max(version), 0)::int as version from ${table}`)
  const current = Number(version?.version ?? 0)
  if (current < latest) {
    throw new SchemaVersionError(`schema ${JSON.stringify(schema)} is at version ${current}, this library needs ${latest}: run \`pgrr migrate\``)
  }
  if (current > latest) {
    throw new SchemaVersionError(`schema ${JSON.stringify(schema)} is at version ${current}, newer than this library knows (${latest}): upgrade pg-request-reply`)
  }
}
