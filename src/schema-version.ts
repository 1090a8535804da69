/**
 * The check a client makes at start: is the protocol installed in its schema, at the version this library
 * needs? A clear `SchemaVersionError` beats an "undefined function" on the first request.
 */
import { query, quoteIdentifier, type Queryable } from './database.ts'
import { SchemaVersionError } from './errors.ts'
import { latestVersion } from './migrations.ts'

/** Throws `SchemaVersionError` unless `schema` was migrated to exactly the version this library needs. */
export async function assertMigrated(db: Queryable, schema: string, prepare = true): Promise<void> {
  const latest = await latestVersion()
  const table = `${quoteIdentifier(schema)}.pgrr_migration`
  const [found] = await query<{ ok: boolean }>(db, 'select to_regclass($1) is not null as ok', [table], prepare)
  if (!found?.ok) {
    throw new SchemaVersionError(`schema ${JSON.stringify(schema)} has no pg-request-reply install: run \`pgrr migrate\` or migrate()`)
  }
  const [row] = await query<{ version: number }>(db, `select coalesce(max(version), 0)::int as version from ${table}`, [], prepare)
  const current = Number(row?.version ?? 0)
  if (current < latest) {
    throw new SchemaVersionError(`schema ${JSON.stringify(schema)} is at version ${current}, this library needs ${latest}: run \`pgrr migrate\``)
  }
  if (current > latest) {
    throw new SchemaVersionError(`schema ${JSON.stringify(schema)} is at version ${current}, newer than this library knows (${latest}): upgrade pg-request-reply`)
  }
}
