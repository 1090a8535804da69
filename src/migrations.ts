/**
 * The migration files shipped with the library: `sql/NNNN_name.sql`, applied in order by `migrate()`.
 */
import { readdir, readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { quoteIdentifier, quoteLiteral } from './database.ts'

export interface Migration {
  version: number
  name: string
  text: string
}

const sqlDirectory = fileURLToPath(new URL('../sql/', import.meta.url))
const migrationFile = /^(\d{4})_[a-z0-9_]+\.sql$/

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

/**
 * Substitutes the schema placeholders of a migration file, in one pass (a name containing `:SCHEMA` must not
 * be substituted again) and by a function (a replacement string would expand the `$&`, `` $` `` and `$'` a
 * schema name may contain).
 */
export function renderMigration(text: string, schema: string): string {
  const literal = quoteLiteral(schema)
  const identifier = quoteIdentifier(schema)
  return text.replace(/:SCHEMA(_LITERAL)?\b/g, (_match, asLiteral: string | undefined) => (asLiteral === undefined ? identifier : literal))
}
