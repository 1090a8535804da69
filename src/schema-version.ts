/**
 * The check a client or responder makes at start: are this library's tables and protocol installed in its
 * schema? A clear `SchemaVersionError` naming `pgrr migrate` beats a "function does not exist" on the first
 * request, or a function of another protocol that does something else.
 */
import { query, quoteIdentifier, type Queryable } from './database.ts'
import { SchemaVersionError } from './errors.ts'
import { latestVersion, protocolVersion } from './migrations.ts'

/**
 * Throws `SchemaVersionError` unless `schema` has exactly this library's migrations and protocol. A schema
 * migrated by release 0.1.0 has no protocol record: its protocol is 1.
 */
export async function assertMigrated(db: Queryable, schema: string, prepare = true): Promise<void> {
  const latest = await latestVersion()
  const s = quoteIdentifier(schema)
  const [tables] = await query<{ migration: boolean; protocol: boolean }>(
    db,
    'select to_regclass($1) is not null as migration, to_regclass($2) is not null as protocol',
    [`${s}.pgrr_migration`, `${s}.pgrr_protocol`],
    prepare,
  )
  if (!tables?.migration) {
    throw new SchemaVersionError(`schema ${JSON.stringify(schema)} has no pg-request-reply install: run \`pgrr migrate\` or migrate()`)
  }
  const [row] = await query<{ version: number; protocol: number | null }>(
    db,
    tables.protocol
      ? `select (select coalesce(max(version), 0)::int from ${s}.pgrr_migration) as version, (select version from ${s}.pgrr_protocol) as protocol`
      : `select coalesce(max(version), 0)::int as version, case when max(version) > 0 then 1 end as protocol from ${s}.pgrr_migration`,
    [],
    prepare,
  )
  const version = Number(row?.version ?? 0)
  const protocol = row?.protocol ?? null
  if (version > latest || (protocol !== null && protocol > protocolVersion)) {
    throw new SchemaVersionError(
      `schema ${JSON.stringify(schema)} was migrated by a newer pg-request-reply (version ${version}, protocol ${protocol}; this library knows ${latest} and ${protocolVersion}): upgrade pg-request-reply`,
    )
  }
  if (version < latest || protocol !== protocolVersion) {
    throw new SchemaVersionError(
      `schema ${JSON.stringify(schema)} is at version ${version} with protocol ${protocol ?? 'none'}, this library needs version ${latest} with protocol ${protocolVersion}: run \`pgrr migrate\``,
    )
  }
}
