/**
 * The SQL shipped with the library, as `migrate()` applies it:
 * - `sql/migrations/NNNN_name.sql`: tables, types and indexes, applied in order, each once, recorded in
 *   `<schema>.pgrr_migration`; never edited once released.
 * - `sql/protocol/NN_name.sql`: the functions, one file per mechanism, installed together as one unit, the
 *   protocol, identified by {@link protocolVersion} and recorded in `<schema>.pgrr_protocol`.
 */
import { createHash } from 'node:crypto'
import { readdir, readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { quoteIdentifier, quoteLiteral } from './database.ts'

/**
 * The protocol this library speaks. A client or responder refuses to start against another one (see
 * schema-version.ts); `migrate()` installs this one. Release 0.1.0 was protocol 1. Raised with every
 * release whose protocol differs from the last.
 */
export const protocolVersion = 7

export interface SqlFile {
  name: string
  text: string
}

export interface Migration extends SqlFile {
  version: number
}

export interface Protocol {
  version: number
  /** sha256 of the files, in order: a protocol edited without a new version is installed again too. */
  checksum: string
  files: SqlFile[]
}

const sqlDirectory = new URL('../sql/', import.meta.url)
const migrationFile = /^(\d{4})_[a-z0-9_]+\.sql$/
const protocolFile = /^\d{2}_[a-z0-9_]+\.sql$/

async function readSqlFiles(folder: string, pattern: RegExp): Promise<SqlFile[]> {
  const directory = fileURLToPath(new URL(`${folder}/`, sqlDirectory))
  const names = (await readdir(directory)).filter((name) => pattern.test(name)).sort()
  return Promise.all(names.map(async (name) => ({ name, text: await readFile(directory + name, 'utf8') })))
}

let migrations: Promise<Migration[]> | undefined
let protocol: Promise<Protocol> | undefined

/** The migrations shipped with this version, in order. */
export function loadMigrations(): Promise<Migration[]> {
  migrations ??= readSqlFiles('migrations', migrationFile).then((files) =>
    files.map((file) => ({ ...file, version: Number(migrationFile.exec(file.name)?.[1]) })),
  )
  return migrations
}

/** The protocol shipped with this version: its files in order, its version and checksum. */
export function loadProtocol(): Promise<Protocol> {
  protocol ??= readSqlFiles('protocol', protocolFile).then((files) => {
    const hash = createHash('sha256')
    for (const file of files) hash.update(`${file.name}\n${file.text}\n`)
    return { version: protocolVersion, checksum: hash.digest('hex'), files }
  })
  return protocol
}

/** The schema version this library needs: the number of its newest migration. */
export async function latestVersion(): Promise<number> {
  return (await loadMigrations()).at(-1)?.version ?? 0
}

/**
 * Substitutes the schema placeholders of a SQL file, in one pass (a name containing `:SCHEMA` must not be
 * substituted again) and by a function (a replacement string would expand the `$&`, `` $` `` and `$'` a
 * schema name may contain).
 */
export function renderSql(text: string, schema: string): string {
  const literal = quoteLiteral(schema)
  const identifier = quoteIdentifier(schema)
  return text.replace(/:SCHEMA(_LITERAL)?\b/g, (_match, asLiteral: string | undefined) => (asLiteral === undefined ? identifier : literal))
}
