// Roles and isolation, with real logins (connection strings with user=): migrate({ roles }) grants a caller
// role and a responder role; the functions are the only way in. Every forbidden action fails with a
// permission error (42501) or the protocol's own error (PR005 for another login's request).
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { after, test } from 'node:test'
import postgres from 'postgres'
import { grantChannel, revokeChannel } from '../src/channel-config.ts'
import { connect, migrate, serve, type Server } from '../src/index.ts'
import { runPgrr } from './fixtures/security-cli.ts'
import { databaseUrl, deferred, rejection, useTestSchema, waitFor, type AdminSql } from './helpers.ts'

const db = useTestSchema('sec_roles')
const prefix = `pgrr_test_sec_${randomBytes(3).toString('hex')}_`
const password = randomBytes(12).toString('hex')
const role = {
  callers: `${prefix}callers`,
  responders: `${prefix}responders`,
  alice: `${prefix}alice`,
  bob: `${prefix}bob`,
  svc: `${prefix}svc`,
  rogue: `${prefix}rogue`,
  both: `${prefix}both`,
  outsider: `${prefix}outsider`,
}
type Login = 'alice' | 'bob' | 'svc' | 'rogue' | 'both' | 'outsider'

/** A connection string of the test database for one of the logins. */
function urlOf(login: Login): string {
  const url = new URL(databaseUrl())
  url.username = role[login]
  url.password = password
  return url.toString()
}

const sessions: AdminSql[] = []
const closers: (() => Promise<unknown>)[] = []

/** A postgres.js instance logged in as `login` (closed at the end of the file). */
function sqlAs(login: Login, max = 1): AdminSql {
  const sql: AdminSql = postgres(urlOf(login), { max, onnotice: () => {}, connection: { application_name: 'pgrr-test-sec' } })
  sessions.push(sql)
  return sql
}

let setUpOnce: Promise<void> | undefined
let admin: AdminSql | undefined

/** Migrates with roles and creates the logins. Run by each test: the schema's hook must have run first. */
function setUp(): Promise<void> {
  setUpOnce ??= (async () => {
    admin = postgres(databaseUrl(), { max: 1, onnotice: () => {} })
    const first = await migrate({ ...db.options, roles: { caller: role.callers, responder: role.responders, channels: ['team.echo'] } })
    assert.deepStrictEqual(first.roles?.created.sort(), [role.callers, role.responders].sort())
    for (const login of ['alice', 'bob', 'svc', 'rogue', 'both', 'outsider'] as const) {
      await admin.unsafe(`create role "${role[login]}" login password '${password}'`)
    }
    await admin.unsafe(`grant "${role.callers}" to "${role.alice}", "${role.bob}", "${role.both}"`)
    await admin.unsafe(`grant "${role.responders}" to "${role.svc}", "${role.rogue}", "${role.both}"`)
    await grantChannel(db.options, 'svc.echo', role.svc)
    await grantChannel(db.options, 'svc.slow', role.svc)
    await grantChannel(db.options, 'svc.raw', role.svc)
    await grantChannel(db.options, 'both.echo', role.both)
  })()
  return setUpOnce
}

after(async () => {
  for (const close of closers.reverse()) await close().catch(() => undefined)
  await Promise.all(sessions.map((sql) => sql.end({ timeout: 1 })))
  if (admin === undefined) return
  for (const name of Object.values(role)) {
    await admin.unsafe(`drop owned by "${name}"`).catch(() => undefined)
    await admin.unsafe(`drop role if exists "${name}"`)
  }
  await admin.end({ timeout: 1 })
})

/** Passes when `promise` rejects with a permission error (SQLSTATE 42501). */
async function denied(promise: Promise<unknown>, what: string): Promise<void> {
  const error = await rejection(promise)
  const code = String(error.code ?? '')
  const causeCode = String((error.cause as { code?: string } | undefined)?.code ?? '')
  assert.ok(
    code === '42501' || code === 'PERMISSION_DENIED' || causeCode === '42501',
    `${what}: expected a permission error (42501), got ${code}: ${error.message}`,
  )
}

/** Passes when `promise` rejects with SQLSTATE `sqlState`. */
async function failsWith(promise: Promise<unknown>, sqlState: string, what: string): Promise<void> {
  const error = await rejection(promise)
  assert.equal(error.code, sqlState, `${what}: ${error.message}`)
}

/** A responder started with `serve()` as `login`, closed at the end of the file. */
async function serveAs(login: Login, channel: string, handler: (payload: unknown) => unknown): Promise<Server> {
  const server = await serve({ connectionString: urlOf(login), schema: db.schema }, channel, handler)
  closers.push(() => server.close())
  return server
}

test('migrate({ roles }) is idempotent, creates missing roles NOLOGIN, and records nothing new the second time', async () => {
  await setUp()
  const again = await migrate({ ...db.options, roles: { caller: role.callers, responder: role.responders } })
  assert.deepStrictEqual(again.roles, { caller: role.callers, responder: role.responders, channels: [], created: [] })
  assert.deepStrictEqual(again.applied, [])
  const rows = await admin!.unsafe(`select rolname, rolcanlogin from pg_roles where rolname = any ($1::text[]) order by rolname`, [
    [role.callers, role.responders],
  ])
  assert.deepStrictEqual(rows.map((row) => ({ ...row })), [
    { rolname: role.callers, rolcanlogin: false },
    { rolname: role.responders, rolcanlogin: false },
  ])
})

test('no login but the owner can read or write the tables or sequences, directly or with SET ROLE', async () => {
  await setUp()
  const s = db.quoted
  const tables = ['pgrr_request', 'pgrr_channel', 'pgrr_channel_grant', 'pgrr_responder']
  const [sequences] = await admin!.unsafe(`select
      pg_get_serial_sequence('${s}.pgrr_request', 'seq') as request,
      pg_get_serial_sequence('${s}.pgrr_channel', 'id') as channel,
      pg_get_serial_sequence('${s}.pgrr_responder', 'id') as responder`)
  for (const login of ['alice', 'svc', 'both', 'outsider'] as const) {
    const sql = sqlAs(login)
    for (const table of tables) {
      await denied(sql.unsafe(`select * from ${s}.${table} limit 1`), `${login} select ${table}`)
      await denied(sql.unsafe(`delete from ${s}.${table}`), `${login} delete ${table}`)
      await denied(sql.unsafe(`insert into ${s}.${table} default values`), `${login} insert ${table}`)
    }
    await denied(sql.unsafe(`update ${s}.pgrr_request set state = 'replied'`), `${login} update pgrr_request`)
    await denied(sql.unsafe(`truncate ${s}.pgrr_request`), `${login} truncate pgrr_request`)
    for (const sequence of Object.values(sequences!)) {
      await denied(sql.unsafe(`select nextval($1::regclass)`, [sequence]), `${login} nextval ${String(sequence)}`)
    }
    await denied(sql.unsafe(`insert into ${s}.pgrr_migration (version, name) values (99, 'x')`), `${login} insert pgrr_migration`)
    if (login === 'outsider') {
      await denied(sql.unsafe(`select * from ${s}.pgrr_migration`), 'outsider select pgrr_migration')
    } else {
      // The version check of clients: the migration bookkeeping, no request data.
      await sql.unsafe(`select version from ${s}.pgrr_migration`)
    }
  }
  // SET ROLE to the group roles from a superuser session changes nothing.
  for (const group of [role.callers, role.responders]) {
    await denied(
      admin!.begin(async (tx) => {
        await tx.unsafe(`set local role "${group}"`)
        await tx.unsafe(`select * from ${s}.pgrr_request`)
      }),
      `set role ${group}`,
    )
  }
})

test('each role may execute its own functions only; helpers and administration are the owner\'s', async () => {
  await setUp()
  const s = db.quoted
  const callerCalls: [string, unknown[]][] = [
    [`select ${s}.request('x.none', 'p'::text)`, []],
    [`select ${s}.request('x.none', '{}'::jsonb)`, []],
    [`select ${s}.await_reply(1)`, []],
    [`select ${s}.await_reply_json(1)`, []],
    [`select * from ${s}.pgrr_send(null, '{x.none}', '{p}', '{f}', '{1000}', '{NULL}', '{NULL}')`, []],
    [`select ${s}.pgrr_ack('{1}')`, []],
    [`select ${s}.pgrr_cancel('{1}')`, []],
    [`select * from ${s}.pgrr_fetch('{1}')`, []],
  ]
  const responderCalls: [string, unknown[]][] = [
    [`select * from ${s}.pgrr_register('svc.echo', 'h', 1, 1)`, []],
    [`select * from ${s}.pgrr_claim(1, 1, 1)`, []],
    [`select ${s}.pgrr_reply(1, '{1}', '{f}', '{x}', '{f}', '{NULL}')`, []],
    [`select ${s}.pgrr_unregister(1)`, []],
    [`select ${s}.pgrr_renew(1, '{1}', null, '{{0,0,0,0,0}}')`, []],
    [`select ${s}.pgrr_sweep()`, []],
  ]
  const ownerCalls: [string, unknown[]][] = [
    [`select * from ${s}.pgrr_configure_channel('svc.echo', 10)`, []],
    [`select ${s}.pgrr_grant_channel('svc.echo', $1)`, [role.rogue]],
    [`select ${s}.pgrr_revoke_channel('svc.echo', $1)`, [role.svc]],
    [`select ${s}.pgrr_grant_caller($1)`, [role.outsider]],
    [`select ${s}.pgrr_grant_responder($1)`, [role.outsider]],
    [`select ${s}.pgrr_lock_is_free(1, 1)`, []],
    [`select ${s}.pgrr_wait_lock(1, 1, 1)`, []],
    [`select ${s}.pgrr_wait_bell(1, 1)`, []],
    [`select ${s}.pgrr_hold_request_lock(1)`, []],
    [`select ${s}.pgrr_release_request_lock(1)`, []],
    [`select ${s}.pgrr_ring(1, 1)`, []],
    [`select * from ${s}.pgrr_await(1, null)`, []],
    [`select ${s}.pgrr_random_id()`, []],
    [`select ${s}.pgrr_parse_headers('{}')`, []],
    [`select ${s}.pgrr_timeout_ms(null)`, []],
    [`select ${s}.pgrr_raise_send_status('ok', 'x')`, []],
    [`select ${s}.pgrr_valid_channel('x')`, []],
    [`select ${s}.pgrr_ns_request()`, []],
  ]
  const alice = sqlAs('alice')
  const svc = sqlAs('svc')
  const outsider = sqlAs('outsider')
  for (const [statement, parameters] of [...responderCalls, ...ownerCalls]) await denied(alice.unsafe(statement, parameters as never[]), `caller: ${statement}`)
  for (const [statement, parameters] of [...callerCalls, ...ownerCalls]) await denied(svc.unsafe(statement, parameters as never[]), `responder: ${statement}`)
  for (const [statement, parameters] of [...callerCalls, ...responderCalls, ...ownerCalls]) {
    await denied(outsider.unsafe(statement, parameters as never[]), `outsider: ${statement}`)
  }
  // What each role may run does run (the outcomes are the protocol's own).
  await failsWith(alice.unsafe(`select ${s}.request('x.none', 'p'::text)`), 'PR001', 'caller request')
  await failsWith(alice.unsafe(`select ${s}.await_reply(1)`), 'PR005', 'caller await_reply')
  await alice.unsafe(`select ${s}.pgrr_fetch('{1}'), ${s}.pgrr_ack('{1}'), ${s}.pgrr_cancel('{1}'), ${s}.pgrr_reap('{1}'), ${s}.pgrr_notify_prefix()`)
  await svc.unsafe(`select ${s}.pgrr_sweep(), ${s}.pgrr_reap(null), ${s}.pgrr_notify_prefix()`)
  // And a client of a login without either role cannot even start.
  await denied(connect({ connectionString: urlOf('outsider'), schema: db.schema, poolSize: 1 }), 'outsider connect()')
})

test('a caller reads only replies to its own requests: another login can neither await, fetch, ack nor cancel them', async () => {
  await setUp()
  const s = db.quoted
  await serveAs('svc', 'svc.echo', (payload) => ({ echoed: payload }))
  const aliceClient = await connect({ connectionString: urlOf('alice'), schema: db.schema, poolSize: 1 })
  closers.push(() => aliceClient.close())
  assert.deepStrictEqual(await aliceClient.request('svc.echo', 'from ts'), { echoed: 'from ts' })

  const alice = sqlAs('alice')
  const bob = sqlAs('bob')
  const [{ id }] = (await alice.unsafe(`select ${s}.request('svc.echo', 'secret payload'::text)::text as id`)) as unknown as [{ id: string }]
  await waitFor(async () => {
    const [row] = await admin!.unsafe(`select state from ${s}.pgrr_request where id = $1`, [id])
    return row?.state === 'replied'
  }, { message: 'the reply is written' })

  await failsWith(bob.unsafe(`select ${s}.await_reply($1::bigint, '1 s')`, [id]), 'PR005', 'bob await_reply')
  await failsWith(bob.unsafe(`select ${s}.await_reply_json($1::bigint, '1 s')`, [id]), 'PR005', 'bob await_reply_json')
  assert.deepStrictEqual([...(await bob.unsafe(`select * from ${s}.pgrr_fetch($1::bigint[])`, [[id]]))], [], 'bob fetches nothing')
  assert.deepStrictEqual([...(await bob.unsafe(`select * from ${s}.pgrr_reap($1::bigint[])`, [[id]]))], [], 'bob reaps nothing of it')
  await bob.unsafe(`select ${s}.pgrr_ack($1::bigint[]), ${s}.pgrr_cancel($1::bigint[])`, [[id]])
  const [row] = await admin!.unsafe(`select state from ${s}.pgrr_request where id = $1`, [id])
  assert.equal(row?.state, 'replied', 'bob\'s ack and cancel changed nothing')

  // The same for the other login's own TypeScript client: its requests are not visible to alice either.
  const [fetched] = await alice.unsafe(`select reply from ${s}.pgrr_fetch($1::bigint[])`, [[id]])
  assert.equal(fetched?.reply, JSON.stringify({ echoed: 'secret payload' }), 'alice can fetch her own')
  const [{ reply }] = (await alice.unsafe(`select ${s}.await_reply($1::bigint) as reply`, [id])) as unknown as [{ reply: string }]
  assert.deepStrictEqual(JSON.parse(reply), { echoed: 'secret payload' })
  await failsWith(alice.unsafe(`select ${s}.await_reply($1::bigint)`, [id]), 'PR005', 'consumed')
})

test('request ids are unguessable: random 62-bit numbers, so neighbours of an id are unknown ids', async () => {
  await setUp()
  const s = db.quoted
  await serveAs('svc', 'svc.echo', (payload) => ({ echoed: payload })).catch(() => undefined)
  const alice = sqlAs('alice')
  const other = sqlAs('alice') // another session of the same login
  const ids: bigint[] = []
  for (let i = 0; i < 20; i++) {
    const [{ id }] = (await alice.unsafe(`select ${s}.request('svc.echo', $1::text)::text as id`, [`n${i}`])) as unknown as [{ id: string }]
    ids.push(BigInt(id))
  }
  assert.equal(new Set(ids).size, ids.length, 'distinct')
  assert.ok(ids.every((id) => id > 0n && id < 2n ** 62n), 'positive, below 2^62')
  const sorted = [...ids].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
  const gaps = sorted.slice(1).map((id, i) => id - sorted[i]!)
  assert.ok(gaps.every((gap) => gap > 2n ** 20n), `not sequential: ${sorted.join(', ')}`)
  for (const id of ids.slice(0, 5)) {
    for (const guess of [id - 1n, id + 1n, id ^ 1n]) {
      await failsWith(other.unsafe(`select ${s}.await_reply($1::bigint, '100 ms')`, [guess.toString()]), 'PR005', `guess ${guess}`)
    }
  }
  // The real ids still work (for whoever holds them, of this login).
  for (const id of ids) await other.unsafe(`select ${s}.await_reply($1::bigint, '10 s')`, [id.toString()])
})

test('a responder may serve only channels granted to its login (directly or through a role); new channels are closed', async () => {
  await setUp()
  const s = db.quoted
  // Not granted: refused, by serve() and by SQL, and nothing is created.
  await denied(serve({ connectionString: urlOf('rogue'), schema: db.schema }, 'svc.echo', () => 'impostor'), 'rogue serve svc.echo')
  const rogue = sqlAs('rogue')
  await denied(rogue.unsafe(`select * from ${s}.pgrr_register('svc.echo', 'h', 1, 1)`), 'rogue register svc.echo')
  await denied(rogue.unsafe(`select * from ${s}.pgrr_register('brand.new', 'h', 1, 1)`), 'rogue register brand.new')
  const [created] = await admin!.unsafe(`select count(*)::int as n from ${s}.pgrr_channel where name = 'brand.new'`)
  assert.equal(created?.n, 0, 'a refused registration creates no channel')

  // Granted to the responders role (migrate's `channels`): any member may serve it.
  const team = await serveAs('rogue', 'team.echo', () => 'team reply')
  const aliceClient = await connect({ connectionString: urlOf('alice'), schema: db.schema, poolSize: 1 })
  closers.push(() => aliceClient.close())
  assert.equal(await aliceClient.request('team.echo', 'x'), 'team reply')

  // Revoked: the next registration is refused; the responder already registered keeps serving.
  await revokeChannel(db.options, 'team.echo', role.responders)
  await denied(serve({ connectionString: urlOf('rogue'), schema: db.schema }, 'team.echo', () => 'again'), 'rogue after revoke')
  assert.equal(await aliceClient.request('team.echo', 'y'), 'team reply')
  await team.close()
  await grantChannel(db.options, 'team.echo', role.responders)

  // A login with both roles asks and answers.
  const both = await connect({ connectionString: urlOf('both'), schema: db.schema, poolSize: 1 })
  closers.push(() => both.close())
  await both.serve('both.echo', (payload) => `both: ${String(payload)}`)
  assert.equal(await both.request('both.echo', 'z'), 'both: z')
})

test('a responder id works only in the session that registered it: no claiming, answering or unregistering for another', async () => {
  await setUp()
  const s = db.quoted
  const release = deferred()
  const claimed = deferred()
  const svcServer = await serveAs('svc', 'svc.slow', async () => {
    claimed.resolve()
    await release.promise
    return 'genuine'
  })
  const [svcRow] = await admin!.unsafe(`select r.id, r.channel_id from ${s}.pgrr_responder r where r.id = $1`, [svcServer.responderId!])
  const svcId = Number(svcRow!.id)
  const slowChannelId = Number(svcRow!.channel_id)

  const aliceClient = await connect({ connectionString: urlOf('alice'), schema: db.schema, poolSize: 1 })
  closers.push(() => aliceClient.close())
  const reply = aliceClient.request('svc.slow', 'wait for it', { timeoutMs: 20_000 })
  await claimed.promise
  const [claimedRow] = await admin!.unsafe(`select id::text as id from ${s}.pgrr_request where responder_id = $1 and state = 'claimed'`, [svcId])
  const requestId = claimedRow!.id as string

  // The rogue registers where it may, on a session of its own, then tries to act as svc.
  const rogue = sqlAs('rogue')
  await rogue.reserve().then(async (session) => {
    try {
      const [own] = await session.unsafe(`select responder_id, channel_id from ${s}.pgrr_register('team.echo', 'h', 1, 1)`)
      const rogueId = Number(own!.responder_id)
      await denied(session.unsafe(`select * from ${s}.pgrr_claim($1, $2, 10)`, [svcId, slowChannelId]), 'claim with svc\'s id')
      await denied(session.unsafe(`select * from ${s}.pgrr_claim($1, $2, 10)`, [rogueId, slowChannelId]), 'claim another channel')
      const [{ notified }] = (await session.unsafe(
        `select (${s}.pgrr_reply($1, $2::bigint[], '{f}', '{forged}', '{f}', '{NULL}')).notified as notified`,
        [svcId, [requestId]],
      )) as unknown as [{ notified: number }]
      assert.equal(notified, 0, 'a forged reply is ignored')
      await session.unsafe(`select ${s}.pgrr_reply($1, $2::bigint[], '{f}', '{forged}', '{f}', '{NULL}')`, [rogueId, [requestId]])
      // The single-reply entry point (for handed requests, as this one is) refuses the same way.
      for (const responderId of [svcId, rogueId]) {
        const [{ written }] = (await session.unsafe(
          `select ${s}.pgrr_reply_one($1, $2::bigint, false, 'forged', false, null, null) as written`,
          [responderId, requestId],
        )) as unknown as [{ written: string }]
        assert.equal(written, 'gone', `a forged single reply as responder ${responderId} is ignored`)
      }
      await session.unsafe(`select ${s}.pgrr_unregister($1), ${s}.pgrr_renew($1, array[$1::int], null, '{{666,666,0,0,0}}')`, [svcId])
      await session.unsafe(`select ${s}.pgrr_unregister($1)`, [rogueId])
    } finally {
      session.release()
    }
  })
  const [state] = await admin!.unsafe(`select state from ${s}.pgrr_request where id = $1`, [requestId])
  assert.equal(state?.state, 'claimed', 'the request is still svc\'s')
  const [svcAfter] = await admin!.unsafe(`select handled_total from ${s}.pgrr_responder where id = $1`, [svcId])
  assert.ok(svcAfter !== undefined && Number(svcAfter.handled_total) !== 666, 'svc\'s row is neither deleted nor overwritten')
  release.resolve()
  assert.equal(await reply, 'genuine')
  assert.equal(await aliceClient.request('svc.slow', 'again'), 'genuine', 'svc is still live')
})

test('reaping as a caller returns only its own requests (ids of others are secrets), yet reaps them all', async () => {
  await setUp()
  const s = db.quoted
  // bob's request is handed to svc's raw session (its only live responder), which then ends without replying.
  const svc = sqlAs('svc')
  const session = await svc.reserve()
  const [reg] = await session.unsafe(`select responder_id, channel_id from ${s}.pgrr_register('svc.raw', 'h', 1, 1)`)
  const bob = sqlAs('bob')
  const [{ id }] = (await bob.unsafe(`select ${s}.request('svc.raw', 'to be lost'::text)::text as id`)) as unknown as [{ id: string }]
  const [held] = await admin!.unsafe(`select state, handed, responder_id from ${s}.pgrr_request where id = $1`, [id])
  assert.deepStrictEqual({ ...held }, { state: 'claimed', handed: true, responder_id: reg!.responder_id }, 'handed to the raw session')
  await session.unsafe('select pg_terminate_backend(pg_backend_pid())').catch(() => undefined)
  session.release()

  const alice = sqlAs('alice')
  await waitFor(async () => {
    const reaped = await alice.unsafe(`select id::text as id, state from ${s}.pgrr_reap(null)`)
    assert.deepStrictEqual([...reaped].filter((row) => row.id === id), [], 'bob\'s id is not returned to alice')
    const [row] = await admin!.unsafe(`select state from ${s}.pgrr_request where id = $1`, [id])
    return row?.state === 'lost'
  }, { message: 'the request is reaped' })
  await failsWith(bob.unsafe(`select ${s}.await_reply($1::bigint)`, [id]), 'PR004', 'bob learns it was lost')
})

test('pgrr serve refused a channel says so in one line, prefixed once', { timeout: 60_000 }, async () => {
  await setUp()
  const serve = await runPgrr(['serve', 'svc.echo', '--handler', 'test/fixtures/security-echo-handler.ts', '--schema', db.schema], {
    DATABASE_URL: urlOf('rogue'),
  })
  assert.equal(serve.code, 1, serve.stderr)
  // The SQL error's own "pgrr: " is not doubled.
  assert.equal(serve.stderr, `pgrr: role ${role.rogue} may not serve channel 'svc.echo'\n`)
})
