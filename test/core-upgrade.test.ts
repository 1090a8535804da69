// Upgrades: a database migrated by release 0.1.0 (installed from its own file, kept as a fixture) is brought
// to this library's tables and protocol by migrate(): roles, grants and channel settings kept, requests
// pending at the time still answered; the result is the same schema as a fresh install. A client of this
// library refuses a 0.1.0 schema (or a newer one) with SchemaVersionError, never "function does not exist";
// responders of this version that try to start while the upgrade runs start once it has committed.
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import { after, test } from 'node:test'
import postgres from 'postgres'
import { connect, migrate, SchemaVersionError, serve, type Server } from '../src/index.ts'
import { protocolVersion, renderSql } from '../src/migrations.ts'
import { collectErrors, databaseUrl, rejection, repoRoot, useSchemaFactory, type AdminSql, type TestSchema } from './helpers.ts'

const createSchema = useSchemaFactory()
const prefix = `pgrr_test_upg_${randomBytes(3).toString('hex')}_`
const roles = { callers: `${prefix}callers`, responders: `${prefix}responders`, caller: `${prefix}caller`, responder: `${prefix}svc` }
const admin: AdminSql = postgres(databaseUrl(), { max: 1, onnotice: () => {} })

after(async () => {
  for (const name of [roles.caller, roles.responder, roles.callers, roles.responders]) {
    await admin.unsafe(`drop owned by "${name}" cascade`).catch(() => undefined)
    await admin.unsafe(`drop role if exists "${name}"`)
  }
  await admin.end({ timeout: 5 })
})

/** Installs release 0.1.0 into `db`'s (empty) schema exactly as its migrator did. */
async function installRelease010(db: TestSchema): Promise<void> {
  const text = await readFile(path.join(repoRoot, 'test', 'fixtures', 'release-0.1.0', '0001_initial.sql'), 'utf8')
  await db.sql.begin(async (tx) => {
    await tx.unsafe(`create schema ${db.quoted}`)
    await tx.unsafe(`create table ${db.quoted}.pgrr_migration (version int primary key, name text not null, applied_at timestamptz not null default now())`)
    await tx.unsafe(renderSql(text, db.schema))
    await tx.unsafe(`insert into ${db.quoted}.pgrr_migration (version, name) values (1, '0001_initial.sql')`)
  })
}

/** A connection string of the test database as `user`. */
function urlAs(user: string): string {
  const url = new URL(databaseUrl())
  url.username = user
  return url.toString()
}

/** Everything that makes up a schema's install, with the schema's name taken out, for comparing two. */
async function describeSchema(db: TestSchema): Promise<Record<string, unknown>> {
  const strip = (text: string) => text.replaceAll(db.quoted, 'S').replaceAll(db.schema, 'S')
  const columns = await db.sql`
    select c.relname, c.relkind, c.relpersistence, a.attname, format_type(a.atttypid, a.atttypmod) as type, a.attnotnull,
           pg_get_expr(d.adbin, d.adrelid) as default_value, a.attidentity, c.reloptions::text as options
      from pg_class c join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
      left join pg_attrdef d on d.adrelid = c.oid and d.adnum = a.attnum
     where c.relnamespace = ${db.schema}::regnamespace and c.relkind in ('r', 'v')
     order by c.relname, a.attname`
  const constraints = await db.sql`
    select conrelid::regclass::text as relation, conname, pg_get_constraintdef(oid) as definition
      from pg_constraint where connamespace = ${db.schema}::regnamespace order by 1, 2`
  const indexes = await db.sql`select indexname, indexdef from pg_indexes where schemaname = ${db.schema} order by indexname`
  const functions = await db.sql`
    select p.oid::regprocedure::text as signature, pg_get_functiondef(p.oid) as definition, p.proacl::text as acl
      from pg_proc p where p.pronamespace = ${db.schema}::regnamespace order by 1`
  const tables = await db.sql`
    select relname, relacl::text as acl from pg_class
     where relnamespace = ${db.schema}::regnamespace and relkind in ('r', 'v', 'S') order by relname`
  return JSON.parse(strip(JSON.stringify({ columns, constraints, indexes, functions, tables })))
}

test('a 0.1.0 schema: connect() and serve() refuse it with SchemaVersionError naming pgrr migrate', async () => {
  const db = await createSchema('upg_refuse', { migrated: false })
  await installRelease010(db)
  for (const start of [() => connect({ ...db.options, poolSize: 1 }), () => serve(db.options, 'upg.x', () => 1)]) {
    const error = await rejection(start())
    assert.ok(error instanceof SchemaVersionError, `${error.name}: ${error.message}`)
    assert.match(error.message, /pgrr migrate/)
    assert.match(error.message, /protocol 1\b/)
  }
})

test('upgrading 0.1.0 keeps roles, grants, channel settings and pending requests, and equals a fresh install', async (t) => {
  const db = await createSchema('upg_010', { migrated: false })
  await installRelease010(db)
  // The 0.1.0 install in use: roles granted, a login of each, a channel granted and configured.
  await admin.unsafe(`create role "${roles.callers}" nologin; create role "${roles.responders}" nologin`)
  await admin.unsafe(`create role "${roles.caller}" login in role "${roles.callers}"; create role "${roles.responder}" login in role "${roles.responders}"`)
  await db.sql.unsafe(`select ${db.quoted}.pgrr_grant_caller($1), ${db.quoted}.pgrr_grant_responder($2)`, [roles.callers, roles.responders])
  await db.sql.unsafe(`select ${db.quoted}.pgrr_grant_channel('upg.echo', $1)`, [roles.responders])
  await db.sql.unsafe(`select * from ${db.quoted}.pgrr_configure_channel('upg.echo', 100000, 3)`)

  // Requests pending at the upgrade: made by the caller login while a 0.1.0 responder session was live,
  // too large to be handed to it (0.1.0 queued payloads over 4,000 bytes); then that session ends.
  const oldResponder = postgres(urlAs(roles.responder), { max: 1, onnotice: () => {} })
  const caller = postgres(urlAs(roles.caller), { max: 1, onnotice: () => {} })
  t.after(() => oldResponder.end({ timeout: 5 }))
  t.after(() => caller.end({ timeout: 5 }))
  await oldResponder.unsafe(`select * from ${db.quoted}.pgrr_register('upg.echo', 'old', 1, 1)`)
  const payloads = ['a', 'b', 'c'].map((letter) => letter.repeat(5000))
  const ids: string[] = []
  for (const payload of payloads) {
    const [row] = await caller.unsafe(`select ${db.quoted}.request('upg.echo', $1::text, interval '60 s')::text as id`, [payload])
    ids.push(row!.id as string)
  }
  await oldResponder.end({ timeout: 5 })
  const pending = await db.sql.unsafe(`select count(*)::int as n from ${db.quoted}.pgrr_request where state = 'pending'`)
  assert.equal(pending[0]?.n, 3)

  const result = await migrate(db.options)
  assert.deepStrictEqual(result.protocol, { fromVersion: 1, toVersion: protocolVersion, installed: true })
  assert.equal(result.fromVersion, 1)
  assert.ok(result.applied.length > 0)

  // Roles kept: recorded, and granted the new protocol.
  const recorded = await db.sql.unsafe(`select a.rolname as role, r.kind from ${db.quoted}.pgrr_role r join pg_roles a on a.oid = r.role order by 2`)
  assert.deepStrictEqual(recorded.map((row) => ({ ...row })), [
    { role: roles.callers, kind: 'caller' },
    { role: roles.responders, kind: 'responder' },
  ])
  // Channel grant and settings kept.
  const [channel] = await db.sql.unsafe(`select max_payload_bytes, max_attempts from ${db.quoted}.pgrr_channel where name = 'upg.echo'`)
  assert.deepStrictEqual({ ...channel }, { max_payload_bytes: 100000, max_attempts: 3 })
  const grants = await db.sql.unsafe(`select g.grantee::text as grantee from ${db.quoted}.pgrr_channel_grant g`)
  assert.deepStrictEqual(grants.map((row) => row.grantee), [roles.responders])

  // A responder of this version, as the responder login (so the channel grant is what lets it serve),
  // answers the requests that were pending, and the caller login reads them with the new await_reply.
  const server: Server = await serve({ connectionString: urlAs(roles.responder), schema: db.schema }, 'upg.echo', (payload: string) => `${payload.length}:${payload[0]}`)
  t.after(() => server.close())
  for (const [index, id] of ids.entries()) {
    const [row] = await caller.unsafe(`select ${db.quoted}.await_reply($1::bigint, interval '20 s') as reply`, [id])
    assert.equal(row?.reply, `5000:${'abc'[index]}`)
  }
  // And new requests, from SQL and TypeScript, as the caller login.
  const [sent] = await caller.unsafe(`select ${db.quoted}.request('upg.echo', 'new'::text) as id`)
  const [reply] = await caller.unsafe(`select ${db.quoted}.await_reply($1) as reply`, [sent!.id])
  assert.equal(reply?.reply, '3:n')
  const client = await connect({ connectionString: urlAs(roles.caller), schema: db.schema, poolSize: 1 })
  t.after(() => client.close())
  assert.equal(await client.request('upg.echo', 'typescript'), '10:t')

  // The same install as a fresh one (tables, constraints, indexes, functions, privileges).
  const fresh = await createSchema('upg_fresh', { migrated: false })
  await migrate({ ...fresh.options, roles: { caller: roles.callers, responder: roles.responders } })
  const [upgradedShape, freshShape] = [await describeSchema(db), await describeSchema(fresh)]
  assert.deepStrictEqual(upgradedShape, freshShape)
})

test('responders of this version waiting to start while the upgrade runs start once it has committed', async (t) => {
  const db = await createSchema('upg_wait', { migrated: false })
  await installRelease010(db)
  const servers: Server[] = []
  t.after(() => Promise.all(servers.map((server) => server.close())))
  const refusals: Error[] = []
  let migrated = false
  // Each starts as soon as it can: it retries on SchemaVersionError (the only error allowed) until it runs.
  const start = async (): Promise<void> => {
    for (;;) {
      try {
        servers.push(await serve(db.options, 'upg.wait', (payload: number) => payload))
        return
      } catch (error) {
        if (!(error instanceof SchemaVersionError)) throw error
        refusals.push(error)
        if (migrated && refusals.length > 1000) throw error
        await new Promise((resolve) => setTimeout(resolve, 5))
      }
    }
  }
  const starting = [start(), start(), start()]
  // Wait until every one has been refused at least once, then upgrade (twice at once: they race).
  while (refusals.length < 3) await new Promise((resolve) => setTimeout(resolve, 5))
  const upgrades = [migrate(db.options), migrate(db.options)]
  assert.deepStrictEqual(await collectErrors(upgrades), [])
  migrated = true
  const results = await Promise.all(upgrades)
  assert.equal(results.filter((result) => result.protocol.installed).length, 1, 'one of the racing migrators installed the protocol')
  assert.deepStrictEqual(await collectErrors(starting), [])
  assert.equal(servers.length, 3)
  const client = await connect({ ...db.options, poolSize: 1 })
  t.after(() => client.close())
  const replies = await Promise.all(Array.from({ length: 30 }, (_, i) => client.request('upg.wait', i)))
  assert.deepStrictEqual(replies, Array.from({ length: 30 }, (_, i) => i))
  for (const error of refusals) assert.match(error.message, /pgrr migrate/)
})

test('a protocol newer than the library is refused by migrate() and connect(); an edited one is installed again', async () => {
  const db = await createSchema('upg_newer')
  await db.sql.unsafe(`update ${db.quoted}.pgrr_protocol set checksum = 'edited'`)
  const again = await migrate(db.options)
  assert.deepStrictEqual(again.protocol, { fromVersion: protocolVersion, toVersion: protocolVersion, installed: true })
  assert.equal((await migrate(db.options)).protocol.installed, false)

  await db.sql.unsafe(`update ${db.quoted}.pgrr_protocol set version = ${protocolVersion + 1}`)
  const migrateError = await rejection(migrate(db.options))
  assert.ok(migrateError instanceof SchemaVersionError, `${migrateError.name}: ${migrateError.message}`)
  assert.match(migrateError.message, /newer/)
  const connectError = await rejection(connect({ ...db.options, poolSize: 1 }))
  assert.ok(connectError instanceof SchemaVersionError, `${connectError.name}: ${connectError.message}`)
  assert.match(connectError.message, /upgrade pg-request-reply/)
})

test('the dry run of an upgrade lists the old functions it drops and changes nothing', async () => {
  const db = await createSchema('upg_dry', { migrated: false })
  await installRelease010(db)
  const before = await describeSchema(db)
  const { sql } = await migrate({ ...db.options, dryRun: true })
  assert.match(sql ?? '', /drop function .*\."pgrr_ring_reply"\(p_responder integer, p_lane integer\);/)
  assert.match(sql ?? '', /0002_/)
  assert.deepStrictEqual(await describeSchema(db), before)
})
