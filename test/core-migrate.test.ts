// migrate(): idempotent, safe when several processes race on a fresh schema, refuses a newer schema; and
// connect() refuses a schema that is not migrated (or migrated by a newer version).
import assert from 'node:assert/strict'
import { readdir } from 'node:fs/promises'
import path from 'node:path'
import { test } from 'node:test'
import { connect, latestVersion, migrate, SchemaVersionError } from '../src/index.ts'
import { protocolVersion } from '../src/migrations.ts'
import { collectErrors, rejection, repoRoot, useSchemaFactory } from './helpers.ts'

const createSchema = useSchemaFactory()

test('4 concurrent migrate() on a fresh schema all succeed; each version is recorded once', async () => {
  const db = await createSchema('migrate_race', { migrated: false })
  const files = (await readdir(path.join(repoRoot, 'sql', 'migrations'))).filter((name) => /^\d{4}_.*\.sql$/.test(name)).sort()
  const latest = await latestVersion()
  assert.equal(latest, Number(files.at(-1)?.slice(0, 4)))

  const runs = Array.from({ length: 4 }, () => migrate(db.options))
  assert.deepStrictEqual(await collectErrors(runs), [])
  const results = await Promise.all(runs)
  const appliers = results.filter((result) => result.applied.length > 0)
  assert.equal(appliers.length, 1, `exactly one migrator applied the files: ${JSON.stringify(results)}`)
  assert.deepStrictEqual(appliers[0]!.applied, files)
  assert.equal(appliers[0]!.fromVersion, 0)
  assert.deepStrictEqual(appliers[0]!.protocol, { fromVersion: null, toVersion: protocolVersion, installed: true })
  assert.equal(results.filter((result) => result.protocol.installed).length, 1, 'the protocol was installed once')
  for (const result of results) {
    assert.equal(result.schema, db.schema)
    assert.equal(result.toVersion, latest)
    if (result !== appliers[0]) assert.equal(result.fromVersion, latest)
  }

  const rows = await db.sql.unsafe(`select version, name from ${db.quoted}.pgrr_migration order by version`)
  assert.deepStrictEqual(
    rows.map((row) => ({ version: row.version as number, name: row.name as string })),
    files.map((name) => ({ version: Number(name.slice(0, 4)), name })),
  )

  // Idempotent: once more, nothing to do.
  const again = await migrate(db.options)
  assert.deepStrictEqual(again, {
    schema: db.schema,
    fromVersion: latest,
    toVersion: latest,
    applied: [],
    protocol: { fromVersion: protocolVersion, toVersion: protocolVersion, installed: false },
  })
  const [{ count }] = await db.sql.unsafe(`select count(*)::int as count from ${db.quoted}.pgrr_migration`) as unknown as [{ count: number }]
  assert.equal(count, files.length)

  // And the result works.
  const client = await connect({ ...db.options, poolSize: 1 })
  await client.close()
})

test('connect() to a schema that is not migrated rejects SchemaVersionError', async () => {
  const missing = await createSchema('migrate_missing', { migrated: false }) // never created in the database
  const missingError = await rejection(connect({ ...missing.options, poolSize: 1 }))
  assert.ok(missingError instanceof SchemaVersionError, `${missingError.name}: ${missingError.message}`)
  assert.equal(missingError.code, 'SCHEMA_VERSION')

  await missing.sql.unsafe(`create schema ${missing.quoted}`)
  const emptyError = await rejection(connect({ ...missing.options, poolSize: 1 }))
  assert.ok(emptyError instanceof SchemaVersionError, `${emptyError.name}: ${emptyError.message}`)
  assert.match(emptyError.message, /migrate/)
})

test('a schema at version 999 makes migrate() and connect() reject SchemaVersionError', async () => {
  const db = await createSchema('migrate_future')
  await db.sql.unsafe(`insert into ${db.quoted}.pgrr_migration (version, name) values (999, '0999_future.sql')`)
  const migrateError = await rejection(migrate(db.options))
  assert.ok(migrateError instanceof SchemaVersionError, `${migrateError.name}: ${migrateError.message}`)
  assert.equal(migrateError.code, 'SCHEMA_VERSION')
  assert.match(migrateError.message, /999/)
  const connectError = await rejection(connect({ ...db.options, poolSize: 1 }))
  assert.ok(connectError instanceof SchemaVersionError, `${connectError.name}: ${connectError.message}`)
  // migrate() changed nothing.
  const [{ count }] = await db.sql.unsafe(`select count(*)::int as count from ${db.quoted}.pgrr_migration where version = 999`) as unknown as [{ count: number }]
  assert.equal(count, 1)
})
