// Installs the proof of concept's SQL into its own schema and drops it again, so that it never meets pgrr's.
import { readFile } from 'node:fs/promises'
import type { Sql } from 'postgres'
import { quoteIdentifier } from '../../database-url.ts'

const SQL_FILE = new URL('./poc.sql', import.meta.url)

export async function installPoc(sql: Sql, schema: string): Promise<void> {
  const text = (await readFile(SQL_FILE, 'utf8')).replaceAll('__schema__', quoteIdentifier(schema))
  await sql.begin(async (transaction) => {
    await transaction.unsafe(`drop schema if exists ${quoteIdentifier(schema)} cascade`)
    await transaction.unsafe(`create schema ${quoteIdentifier(schema)}`)
    // Several statements, no parameters: sent as one simple-protocol query.
    await transaction.unsafe(text)
  })
}

export async function dropPoc(sql: Sql, schema: string): Promise<void> {
  await sql.unsafe(`drop schema if exists ${quoteIdentifier(schema)} cascade`)
}
