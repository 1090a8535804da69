// The benchmark's command line (bench/options.ts): the fleet scenario's options, the matrix's own, and what
// they refuse.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { COTENANCY_DEFAULTS, FLEET_DEFAULTS, parseBenchArgs } from '../bench/options.ts'

const env = { DATABASE_URL: 'postgres://u@h:1/d' }

test('--scenario fleet: its defaults, the matrix options it shares, and 0 as the reference', () => {
  const parsed = parseBenchArgs(['--scenario', 'fleet'], env)
  assert.equal(parsed.kind, 'fleet')
  if (parsed.kind !== 'fleet') return
  assert.deepEqual(parsed.options.systems, FLEET_DEFAULTS.systems)
  assert.deepEqual(parsed.options.concurrency, [1, 64])
  assert.deepEqual(parsed.fleet, { sizes: [0, 10, 50], kinds: ['clients', 'clients-listening', 'responders'] })
  assert.equal(parsed.options.databaseUrl, env.DATABASE_URL)

  const custom = parseBenchArgs(
    ['--scenario', 'fleet', '--fleet', '20,5', '--fleet-kinds', 'responders-other-db', '--systems', 'floor-notify', '--runs', '3', '--count', '500'],
    env,
  )
  assert.equal(custom.kind, 'fleet')
  if (custom.kind !== 'fleet') return
  assert.deepEqual(custom.fleet, { sizes: [0, 20, 5], kinds: ['responders-other-db'] })
  assert.deepEqual(custom.options.systems, ['floor-notify'])
  assert.equal(custom.options.runs, 3)
  assert.equal(custom.options.count, 500)
})

test('the plain matrix is unchanged by the scenario options; --channels spreads pgrr-ts, pgrr-sql and nats only', () => {
  const parsed = parseBenchArgs([], env)
  assert.equal(parsed.kind, 'bench')
  if (parsed.kind !== 'bench') return
  assert.deepEqual(parsed.options.concurrency, [1, 16, 64])
  assert.equal(parsed.options.channels, 1)
  const spread = parseBenchArgs(['--systems', 'pgrr-ts,pgrr-sql,nats', '--channels', '100'], env)
  assert.equal(spread.kind === 'bench' && spread.options.channels, 100)
  assert.throws(() => parseBenchArgs(['--channels', '100'], env), /--channels: only pgrr-ts, pgrr-sql and nats .*floor-notify/)
  assert.throws(() => parseBenchArgs(['--systems', 'pgrr-ts,batch-sketch', '--payload-bytes', '9000'], env), /--payload-bytes: batch-sketch carry bodies inside their NOTIFYs/)
  assert.throws(() => parseBenchArgs(['--systems', 'nats', '--channels', '0'], env), /--channels: expected a positive integer/)
  assert.throws(() => parseBenchArgs(['--long', '--channels', '2'], env), /--channels: only for the matrix/)
})

test('--serve-concurrency sets the pgrr responder\'s concurrency, for pgrr-ts and pgrr-sql only', () => {
  const parsed = parseBenchArgs(['--systems', 'pgrr-ts'], env)
  assert.equal(parsed.kind === 'bench' && parsed.options.serveConcurrency, 64)
  const ten = parseBenchArgs(['--systems', 'pgrr-ts,pgrr-sql', '--serve-concurrency', '10'], env)
  assert.equal(ten.kind === 'bench' && ten.options.serveConcurrency, 10)
  assert.throws(() => parseBenchArgs(['--serve-concurrency', '10'], env), /--serve-concurrency: only pgrr-ts and pgrr-sql .*floor-notify/)
  assert.throws(() => parseBenchArgs(['--systems', 'pgrr-ts', '--serve-concurrency', '0'], env), /--serve-concurrency: expected a positive integer/)
  assert.throws(() => parseBenchArgs(['--functions', '--serve-concurrency', '2'], env), /--serve-concurrency: only for the matrix/)
})

test('fleet options: bad values and misplaced flags are refused with a message naming the flag', () => {
  const refused: Array<[string[], RegExp]> = [
    [['--scenario', 'nope'], /--scenario: unknown scenario "nope"/],
    [['--rate', '100'], /--rate: only with --scenario cotenancy/],
    [['--scenario', 'fleet', '--phase-seconds', '5'], /--phase-seconds: only with --scenario cotenancy/],
    [['--scenario', 'cotenancy', '--fleet', '10'], /--fleet: only with --scenario fleet/],
    [['--scenario', 'cotenancy', '--rate', '0'], /--rate: expected a positive integer/],
    [['--fleet', '10'], /--fleet: only with --scenario fleet/],
    [['--fleet-kinds', 'clients'], /--fleet-kinds: only with --scenario fleet/],
    [['--scenario', 'fleet', '--fleet', '10,-1'], /--fleet: expected integers from 0/],
    [['--scenario', 'fleet', '--fleet', '10,,5'], /--fleet: expected integers from 0/],
    [['--scenario', 'fleet', '--fleet', '10,10'], /--fleet: a size appears twice/],
    [['--scenario', 'fleet', '--fleet-kinds', 'pods'], /--fleet-kinds: unknown kind "pods"/],
    [['--scenario', 'fleet', '--write-docs'], /--scenario: does not take --write-docs/],
    [['--scenario', 'fleet', '--long'], /--scenario: does not take --long/],
  ]
  for (const [argv, message] of refused) assert.throws(() => parseBenchArgs(argv, env), message, argv.join(' '))
})

test('--scenario cotenancy: the rate measured unless given, pgbench TPC-B scale 10 with 8 clients', () => {
  const parsed = parseBenchArgs(['--scenario', 'cotenancy'], { ...env, PGBENCH: '/opt/pgbench' })
  assert.equal(parsed.kind, 'cotenancy')
  if (parsed.kind !== 'cotenancy') return
  assert.deepEqual(parsed.options.systems, COTENANCY_DEFAULTS.systems)
  assert.deepEqual(parsed.cotenancy, { rate: null, phaseSeconds: 20, pgbenchScale: 10, pgbenchClients: 8, pgbenchPath: '/opt/pgbench' })
  const given = parseBenchArgs(['--scenario', 'cotenancy', '--rate', '4000', '--phase-seconds', '25', '--runs', '2'], env)
  assert.equal(given.kind, 'cotenancy')
  if (given.kind !== 'cotenancy') return
  assert.equal(given.cotenancy.rate, 4000)
  assert.equal(given.cotenancy.phaseSeconds, 25)
  assert.equal(given.options.runs, 2)
})
