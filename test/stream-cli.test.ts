/**
 * `pgrr request --stream`: each part printed on a line of its own as it arrives (text as is, other values as
 * JSON), then the final reply; a handler's error after some parts: the parts, then exit code 5.
 */
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { test } from 'node:test'
import { repoRoot, serverFor, useTestSchema } from './helpers.ts'

const db = useTestSchema('stream_cli')

async function pgrr(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], {
    cwd: repoRoot,
    env: { ...process.env, DATABASE_URL: db.options.connectionString },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk))
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk))
  const [code] = (await once(child, 'close')) as [number | null]
  return { code, stdout, stderr }
}

test('pgrr request --stream prints the parts as lines, then the reply; an error after parts exits 5', { timeout: 60_000 }, async (t) => {
  await serverFor(t, db, 'cli.tokens', async function* (prompt: string) {
    for (const word of prompt.split(' ')) yield word
    yield { words: prompt.split(' ').length }
    if (prompt.startsWith('fail')) throw new Error('no more')
    return 'done'
  })
  const ok = await pgrr(['request', 'cli.tokens', 'a b c', '--stream', '--schema', db.schema, '--timeout', '20000'])
  assert.equal(ok.code, 0, ok.stderr)
  assert.equal(ok.stdout, 'a\nb\nc\n{"words":3}\ndone\n')
  const failed = await pgrr(['request', 'cli.tokens', 'fail now', '--stream', '--schema', db.schema, '--timeout', '20000'])
  assert.equal(failed.code, 5, failed.stderr)
  assert.equal(failed.stdout, 'fail\nnow\n{"words":2}\n')
  assert.match(failed.stderr, /no more/)
})
