// The NOTIFY formats both sides read (src/wire.ts), against what their SQL twins make and against hostile
// input: any login may NOTIFY any channel, so a decoder must say what it cannot read and never throw. No
// database: the SQL side of each format is exercised by the integration tests.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import {
  claimMaxBytes,
  claimStoppedAtByteCap,
  decodeCancelledIds,
  decodeHandoffs,
  decodeReplies,
  isHandoffEntry,
  isReplyEntry,
} from '../src/wire.ts'

/** Payloads no JSON decoder may throw on, and that are not arrays of anything. */
const unreadable = ['', ' ', '[', '{}', 'null', '42', '"a,b"', 'true', '[1', 'undefined', '\u0000', '{"__proto__": []}']

test('decodeHandoffs reads what pgrr_handoff_entry makes', () => {
  // As json_build_array(p_id::text, p_json, p_payload, p_headers, p_timeout_ms) prints it.
  const message = '[["8214", false, "hello", null, 29998], ["77", true, "{\\"a\\": 1}", {"k": "v"}, 0]]'
  assert.deepEqual(decodeHandoffs(message), [
    ['8214', false, 'hello', null, 29998],
    ['77', true, '{"a": 1}', { k: 'v' }, 0],
  ])
  assert.deepEqual(decodeHandoffs('[]'), [])
})

test('decodeHandoffs refuses the whole message when anything in it is not a handoff entry', () => {
  for (const message of unreadable) assert.equal(decodeHandoffs(message), undefined, JSON.stringify(message))
  const good = '["1", false, "p", null, 100]'
  for (const bad of [
    '["1", false, "p", null]', // too short
    '["1", false, "p", null, 100, 5]', // too long
    '[1, false, "p", null, 100]', // id not a string
    '["1", "false", "p", null, 100]', // json flag not a boolean
    '["1", false, 7, null, 100]', // payload not a string
    '["1", false, "p", ["k"], 100]', // headers an array
    '["1", false, "p", "k", 100]', // headers a string
    '["1", false, "p", null, "100"]', // time left not a number
    'null',
    '{"0": "1", "1": false, "2": "p", "3": null, "4": 100, "length": 5}', // array-like, not an array
  ]) {
    assert.equal(decodeHandoffs(`[${good}, ${bad}]`), undefined, bad)
    assert.equal(isHandoffEntry(JSON.parse(bad)), false, bad)
  }
  assert.equal(isHandoffEntry(JSON.parse(good)), true)
})

test('isReplyEntry accepts every form pgrr_reply_entry, pgrr_reply_short_entry and pgrr_lost_entry make', () => {
  for (const entry of [
    ['1', 'r', true, '{"a":1}'],
    ['1', 'r', false, 'text', { h: 'v' }],
    ['1', 'r', false, null], // a responder may write a null body
    ['1', 'f', 'E_CODE', 'message'],
    ['1', 'f', null, 'message', { h: 'v' }],
    ['1', 'f', null, null],
    ['1', 'r', true], // short: fetched
    ['1', 'r', null], // short, from pgrr_reply_one given a null json flag
    ['1', 'f', 'E_CODE'],
    ['1', 'f', null],
    ['1', 'l'],
  ]) {
    assert.equal(isReplyEntry(entry), true, JSON.stringify(entry))
  }
})

test('isReplyEntry refuses anything else', () => {
  for (const entry of [
    null,
    'r',
    {},
    [],
    ['1'],
    [1, 'r', true, 'x'], // id not a string
    ['1', 'x', true, 'x'], // unknown kind
    ['1', 'l', 'extra'],
    ['1', 'r', 'yes', 'x'], // json flag not a boolean
    ['1', 'f', 7, 'x'], // code not a string
    ['1', 'r', true, 5], // body not a string
    ['1', 'r', true, 'x', null], // headers present but null
    ['1', 'r', true, 'x', ['k']], // headers an array
    ['1', 'f', 'E', 'x', 'k'], // headers a string
    ['1', 'r', true, 'x', {}, 'more'],
    { 0: '1', 1: 'l', length: 2 }, // array-like, not an array
  ]) {
    assert.equal(isReplyEntry(entry), false, JSON.stringify(entry))
  }
})

test('decodeReplies takes JSON arrays only, and leaves their elements to be checked one by one', () => {
  for (const payload of unreadable) assert.equal(decodeReplies(payload), undefined, JSON.stringify(payload))
  const entries = decodeReplies('[["1", "l"], null, ["2", "r", false, "ok"]]')
  assert.deepEqual(entries, [['1', 'l'], null, ['2', 'r', false, 'ok']])
  assert.deepEqual(entries?.filter(isReplyEntry), [['1', 'l'], ['2', 'r', false, 'ok']])
})

test('decodeCancelledIds splits what pgrr_cancel NOTIFYs, and anything else into ids that match no request', () => {
  assert.deepEqual(decodeCancelledIds('12'), ['12'])
  assert.deepEqual(decodeCancelledIds('12,3456,7'), ['12', '3456', '7'])
  assert.deepEqual(decodeCancelledIds(''), [''])
  assert.deepEqual(decodeCancelledIds('a,,b'), ['a', '', 'b'])
})


test('claimStoppedAtByteCap says whether the claimed payloads reached pgrr_claim_max_bytes()', () => {
  assert.equal(claimMaxBytes, 8 * 1024 * 1024)
  assert.equal(claimStoppedAtByteCap([]), false)
  const half = 'a'.repeat(claimMaxBytes / 2)
  assert.equal(claimStoppedAtByteCap([{ payload: half }]), false)
  assert.equal(claimStoppedAtByteCap([{ payload: half }, { payload: half.slice(1) }]), false, 'one byte short')
  assert.equal(claimStoppedAtByteCap([{ payload: half }, { payload: half }]), true, 'exactly the cap')
  // Counted in UTF-8 bytes, not in UTF-16 units: a third of the cap in 3-byte characters is the cap.
  const euros = '€'.repeat(claimMaxBytes / 4)
  assert.equal(claimStoppedAtByteCap([{ payload: euros }]), false, 'three quarters of the cap')
  assert.equal(claimStoppedAtByteCap([{ payload: euros }, { payload: '€'.repeat(Math.ceil(claimMaxBytes / 12)) }]), true)
  // A lone surrogate is 3 bytes in UTF-8 (as U+FFFD) and 1 unit here.
  assert.equal(claimStoppedAtByteCap([{ payload: '\uD800'.repeat(Math.ceil(claimMaxBytes / 3)) }]), true)
})
