// The wire format of an addressed request (pgrr_addressed_entry, sql/protocol/15_scatter.sql): what the SQL
// makes, src/wire.ts reads; an entry with any other kind, or a kind where none belongs, is refused whole.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { decodeHandoffs, isHandoffEntry } from '../src/wire.ts'
import { useTestSchema } from './helpers.ts'

const db = useTestSchema('scatter_wire')

test('decodeHandoffs reads what pgrr_addressed_entry makes, for both kinds', async () => {
  for (const kind of ['all', 'ping'] as const) {
    const [row] = await db.sql.unsafe<{ entry: string }[]>(
      `select ${db.quoted}.pgrr_addressed_entry(42, true, '{"a":1}', '{"k":"v"}'::jsonb, 1500, $1) as entry`,
      [kind],
    )
    assert.deepEqual(decodeHandoffs(`[${row!.entry}]`), [['42', true, '{"a":1}', { k: 'v' }, 1500, kind]])
  }
})

test('an entry whose sixth element is not a known kind is not a handoff entry', () => {
  for (const bad of ['["1", false, "p", null, 100, "other"]', '["1", false, "p", null, 100, null]', '["1", false, "p", null, 100, "all", 1]']) {
    assert.equal(isHandoffEntry(JSON.parse(bad)), false, bad)
    assert.equal(decodeHandoffs(`[${bad}]`), undefined, bad)
  }
  assert.equal(isHandoffEntry(JSON.parse('["1", false, "p", null, 100, "ping"]')), true)
})
