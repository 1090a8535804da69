// Installing into a shared database: with a schema of its own nothing is created or changed outside it;
// the recommended setup (a non-superuser owner, roles made by an administrator) works end to end; the CLI
// creates and grants roles; unusable schema and role names are refused before anything is sent.
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { after, test } from 'node:test'
import postgres from 'postgres'
import { grantChannel } from '../src/channel-config.ts'
import { connect, InvalidOptionError, migrate, serve } from '../src/index.ts'
import { runPgrr } from './fixtures/security-cli.ts'
import { databaseUrl, rejection, type AdminSql } from './helpers.ts'

const suffix = randomBytes(3).toString('hex')
const password = randomBytes(12).toString('hex')
const schemas: string[] = []
const roles: string[] = []
let adminSql: AdminSql | undefined

function admin(): AdminSql {
  adminSql ??= postgres(databaseUrl(), { max: 1, onnotice: () => {} })
  return adminSql
}

function newSchema(name: string): string {
  const schema = `pgrr_test_sec_${name}_${suffix}`
  schemas.push(schema)
  return schema
}

function newRole(name: string): string {
  const role = `pgrr_test_sec_${name}_${suffix}`
  roles.push(role)
  return role
}

function urlAs(role: string): string {
  const url = new URL(databaseUrl())
  url.username = role
  url.password = password
  return url.toString()
}

const quote = (name: string) => `"${name.replace(/"/g, '""')}"`

after(async () => {
  if (adminSql === undefined) return
  for (const schema of schemas) await admin().unsafe(`drop schema if exists ${quote(schema)} cascade`)
  for (const role of roles.reverse()) {
    await admin().unsafe(`drop owned by ${quote(role)}`).catch(() => undefined)
    await admin().unsafe(`drop role if exists ${quote(role)}`)
  }
  await admin().end({ timeout: 1 })
})

/** Everything of ours that could be in `public`, and public's ACL. */
async function publicSnapshot(): Promise<unknown> {
  const [row] = await admin().unsafe(`select
      (select coalesce(array_agg(proname::text order by proname::text), '{}') from pg_proc
        where pronamespace = 'public'::regnamespace
          and (proname like 'pgrr%' or proname in ('request', 'await_reply', 'await_reply_json'))) as functions,
      (select coalesce(array_agg(relname::text order by relname::text), '{}') from pg_class
        where relnamespace = 'public'::regnamespace and relname like 'pgrr%') as relations,
      (select coalesce(array_agg(typname::text order by typname::text), '{}') from pg_type
        where typnamespace = 'public'::regnamespace and typname like 'pgrr%') as types,
      (select nspacl::text from pg_namespace where nspname = 'public') as acl`)
  return row
}

test('migrate() with a schema of its own, roles included, creates and changes nothing outside it', async () => {
  const schema = newSchema('isolated')
  const before = await publicSnapshot()
  const result = await migrate({ connectionString: databaseUrl(), schema, roles: { caller: newRole('iso_callers'), responder: newRole('iso_resp') } })
  assert.equal(result.toVersion, result.applied.length > 0 ? result.toVersion : result.fromVersion)
  assert.deepStrictEqual(await publicSnapshot(), before)
  // Every relation made with the request table (indexes, its sequence) is in the schema (or TOAST).
  const [{ outside }] = (await admin().unsafe(
    `select count(*)::int as outside from pg_depend d join pg_class c on c.oid = d.objid and d.classid = 'pg_class'::regclass
      where d.refobjid = ($1::text)::regclass and c.relnamespace not in (($2::text)::regnamespace, 'pg_toast'::regnamespace)`,
    [`${quote(schema)}.pgrr_request`, quote(schema)],
  )) as unknown as [{ outside: number }]
  assert.equal(outside, 0)
})

test('the recommended setup: a non-superuser owner, roles made by an administrator, logins as members', async (t) => {
  const schema = newSchema('owned')
  const owner = newRole('owner')
  const callers = newRole('own_callers')
  const responders = newRole('own_resp')
  const app = newRole('own_app')
  const svc = newRole('own_svc')
  const [{ database }] = (await admin().unsafe('select current_database() as database')) as unknown as [{ database: string }]
  await admin().unsafe(`create role ${quote(owner)} login password '${password}'`)
  await admin().unsafe(`grant create on database ${quote(database)} to ${quote(owner)}`)
  t.after(() => admin().unsafe(`revoke create on database ${quote(database)} from ${quote(owner)}`))
  await admin().unsafe(`create role ${quote(callers)} nologin`)
  await admin().unsafe(`create role ${quote(responders)} nologin`)

  // The owner may not create roles: naming a missing one is a clear error, before anything is changed.
  const missing = await rejection(migrate({ connectionString: urlAs(owner), schema, roles: { caller: newRole('nonexistent') } }))
  assert.ok(missing instanceof InvalidOptionError, `${missing.name}: ${missing.message}`)
  assert.match(missing.message, /does not exist and this login may not create it/)
  const [{ exists }] = (await admin().unsafe(`select to_regnamespace($1) is not null as exists`, [quote(schema)])) as unknown as [{ exists: boolean }]
  assert.equal(exists, false, 'the failed migration left nothing behind')

  const result = await migrate({ connectionString: urlAs(owner), schema, roles: { caller: callers, responder: responders, channels: ['owned.echo'] } })
  assert.deepStrictEqual(result.roles, { caller: callers, responder: responders, channels: ['owned.echo'], created: [] })
  await admin().unsafe(`create role ${quote(app)} login password '${password}' in role ${quote(callers)}`)
  await admin().unsafe(`create role ${quote(svc)} login password '${password}' in role ${quote(responders)}`)
  await grantChannel({ connectionString: urlAs(owner), schema }, 'owned.other', svc)

  const echo = await serve({ connectionString: urlAs(svc), schema }, 'owned.echo', (payload) => `echo ${String(payload)}`)
  t.after(() => echo.close())
  const other = await serve({ connectionString: urlAs(svc), schema }, 'owned.other', (payload) => `other ${String(payload)}`)
  t.after(() => other.close())
  const client = await connect({ connectionString: urlAs(app), schema, poolSize: 1 })
  t.after(() => client.close())
  assert.equal(await client.request('owned.echo', 'a'), 'echo a')
  assert.equal(await client.request('owned.other', 'b'), 'other b')
  const sql = postgres(urlAs(app), { max: 1, onnotice: () => {} })
  t.after(() => sql.end({ timeout: 1 }))
  const [{ id }] = (await sql.unsafe(`select ${quote(schema)}.request('owned.echo', 'c'::text)::text as id`)) as unknown as [{ id: string }]
  const [{ reply }] = (await sql.unsafe(`select ${quote(schema)}.await_reply($1::bigint) as reply`, [id])) as unknown as [{ reply: string }]
  assert.equal(reply, 'echo c')
  // The functions run as their owner, who is no superuser.
  const [{ superuser }] = (await admin().unsafe(
    `select r.rolsuper as superuser from pg_proc p join pg_roles r on r.oid = p.proowner
      where p.oid = ($1::text)::regprocedure`,
    [`${quote(schema)}.pgrr_send(text, text[], text[], boolean[], int[], text[], int[])`],
  )) as unknown as [{ superuser: boolean }]
  assert.equal(superuser, false)
})

test('pgrr migrate --caller-role --responder-role --responder-channel creates and grants the roles', { timeout: 60_000 }, async () => {
  const schema = newSchema('cli')
  const callers = newRole('cli_callers')
  const responders = newRole('cli_resp')
  const env = { DATABASE_URL: databaseUrl() }
  const args = ['migrate', '--schema', schema, '--caller-role', callers, '--responder-role', responders, '--responder-channel', 'cli.one', '--responder-channel', "cli'two"]
  const first = await runPgrr([...args, '--json'], env)
  assert.equal(first.code, 0, first.stderr)
  const result = JSON.parse(first.stdout) as { roles: { created: string[]; channels: string[] } }
  assert.deepStrictEqual(result.roles.created.sort(), [callers, responders].sort())
  assert.deepStrictEqual(result.roles.channels, ['cli.one', "cli'two"])
  const second = await runPgrr(args, env)
  assert.equal(second.code, 0, second.stderr)
  assert.match(second.stdout, /up to date/)
  assert.match(second.stdout, new RegExp(`granted the caller functions to "${callers}"`))
  assert.match(second.stdout, /channels "cli.one", "cli'two"/)
  const grants = await admin().unsafe(`select c.name, g.grantee::text as grantee from ${quote(schema)}.pgrr_channel_grant g
      join ${quote(schema)}.pgrr_channel c on c.id = g.channel_id order by c.name collate "C"`)
  assert.deepStrictEqual(grants.map((row) => ({ ...row })), [
    { name: "cli'two", grantee: responders },
    { name: 'cli.one', grantee: responders },
  ])

  const usage = await runPgrr(['migrate', '--schema', schema, '--responder-channel', 'x'], env)
  assert.equal(usage.code, 2, usage.stderr)
  assert.match(usage.stderr, /--responder-channel needs --responder-role/)
  const help = await runPgrr(['migrate', '--help'], env)
  assert.match(help.stdout, /--caller-role/)
})

test('schema and role names that the migration cannot carry are refused before anything is sent', async () => {
  for (const schema of ['', 'a'.repeat(64), 'x$$y', 'tab\there', 'lone\uD800']) {
    const error = await rejection(migrate({ connectionString: databaseUrl(), schema }))
    assert.ok(error instanceof InvalidOptionError, `${JSON.stringify(schema)}: ${error.name}: ${error.message}`)
  }
  for (const rolesOption of [{ caller: '' }, { responder: 'r'.repeat(64) }, { caller: 'nul\u0000' }, { channels: ['x'] }]) {
    const error = await rejection(migrate({ connectionString: databaseUrl(), schema: newSchema('never'), roles: rolesOption }))
    assert.ok(error instanceof InvalidOptionError || error.name === 'InvalidChannelError', `${JSON.stringify(rolesOption)}: ${error.name}`)
  }
})

test('a schema name with quotes, spaces and a dollar sign works end to end', async (t) => {
  const schema = newSchema(`we"ird 'sch$ema`)
  await migrate({ connectionString: databaseUrl(), schema })
  const server = await serve({ connectionString: databaseUrl(), schema }, 'weird.echo', (payload) => payload)
  t.after(() => server.close())
  const client = await connect({ connectionString: databaseUrl(), schema, poolSize: 1 })
  t.after(() => client.close())
  assert.deepStrictEqual(await client.request('weird.echo', { ok: true }), { ok: true })
})

test('schema names with $&, $`, $\' and the placeholders themselves are installed under their own name', async (t) => {
  // Replacement patterns of String.replace, and the migration files' placeholders: none may be expanded.
  for (const [name, channel] of [['d$&o', 'dollar.amp'], ["b$`a$'ck", 'dollar.quotes'], ['p:SCHEMA_LITERAL:SCHEMA', 'placeholders']] as const) {
    const schema = newSchema(name)
    const result = await migrate({ connectionString: databaseUrl(), schema })
    assert.equal(result.schema, schema)
    const [installed] = await admin()`select count(*)::int as n from pg_proc p join pg_namespace n on n.oid = p.pronamespace
                                       where n.nspname = ${schema} and p.proname = 'request'`
    assert.equal(installed?.n, 2, `the request functions are in ${JSON.stringify(schema)}`)
    const server = await serve({ connectionString: databaseUrl(), schema }, channel, (payload) => payload)
    t.after(() => server.close())
    const client = await connect({ connectionString: databaseUrl(), schema, poolSize: 1 })
    t.after(() => client.close())
    assert.deepStrictEqual(await client.request(channel, { schema }), { schema })
    const [sent] = await admin().unsafe(`select ${quote(schema)}.request($1, 'from sql'::text) as id`, [channel])
    const [reply] = await admin().unsafe(`select ${quote(schema)}.await_reply($1) as reply`, [sent!.id])
    assert.equal(reply?.reply, 'from sql')
  }
})
