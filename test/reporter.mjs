/**
 * The reporter of `npm test` (a node:test custom reporter, test/run.ts passes it): one line per test file,
 * with its count of tests, what was skipped and why, and its time; a failed file also gets each failure's
 * name, error and stack, and what the file printed on stdout and stderr (hidden when it passes: warnings
 * that tests provoke on purpose are not news). The run ends with the counts, the last line being
 * `tests: N passed, N failed, N skipped`.
 *
 * `npm test -- --test-reporter=spec` replaces it with Node's own reporter, test by test. Plain JavaScript:
 * Node loads reporters before the TypeScript loader of `--import tsx` is in place.
 */
import path from 'node:path'
import { inspect } from 'node:util'

/**
 * What node:test sends a reporter (the fields this reads).
 * @typedef {{ type: string, data: { name?: string, file?: string, message?: string, skip?: string | boolean,
 *   todo?: string | boolean, details?: { duration_ms?: number, error?: any, type?: string } } }} TestEvent
 */

/**
 * What is known of one file: counts, distinct skip reasons, failures and the file's own output.
 * @typedef {{ passed: number, failed: number, skipped: number, todo: number, skipReasons: Set<string>,
 *   failures: string[], output: string[], done: boolean }} FileReport
 */

const useColor = process.stdout.isTTY === true && process.env.NO_COLOR === undefined
/** @param {number} code @param {string} text */
const paint = (code, text) => (useColor ? `\u001b[${code}m${text}\u001b[0m` : text)
/** @param {string} text */
const green = (text) => paint(32, text)
/** @param {string} text */
const red = (text) => paint(31, text)
/** @param {string} text */
const yellow = (text) => paint(33, text)
/** @param {string} text */
const dim = (text) => paint(2, text)

/**
 * @param {AsyncIterable<TestEvent>} source
 * @returns {AsyncGenerator<string>}
 */
export default async function* compactReporter(source) {
  /** @type {Map<string, FileReport>} */
  const files = new Map()
  /** @type {string[]} */
  const loose = []
  const startedAt = performance.now()
  /** @param {string} file @returns {FileReport} */
  const report = (file) => {
    let found = files.get(file)
    if (found === undefined) {
      found = { passed: 0, failed: 0, skipped: 0, todo: 0, skipReasons: new Set(), failures: [], output: [], done: false }
      files.set(file, found)
    }
    return found
  }

  for await (const event of source) {
    const { data } = event
    const file = data.file
    // The event that stands for a whole file is named after the file itself.
    const isFile = file !== undefined && data.name === file
    switch (event.type) {
      case 'test:pass':
      case 'test:fail': {
        if (file === undefined) break
        const entry = report(file)
        if (isFile) {
          // A file that failed outside any test (it crashed, or did not load).
          if (event.type === 'test:fail' && entry.failed === 0) {
            entry.failed++
            entry.failures.push(describeFailure('the file itself', data.details?.error))
          }
          break
        }
        if (data.details?.type === 'suite') break
        // A test whose subtests failed fails too: its subtests' failures are the ones to count and show.
        if (data.details?.error?.failureType === 'subtestsFailed') break
        if (data.todo !== undefined && data.todo !== false) {
          entry.todo++
        } else if (data.skip !== undefined && data.skip !== false) {
          entry.skipped++
          if (typeof data.skip === 'string') entry.skipReasons.add(data.skip)
        } else if (event.type === 'test:pass') {
          entry.passed++
        } else {
          entry.failed++
          entry.failures.push(describeFailure(data.name ?? '(unnamed test)', data.details?.error))
        }
        break
      }
      case 'test:stdout':
      case 'test:stderr':
      case 'test:diagnostic': {
        const line = (data.message ?? '').replace(/\n$/, '')
        if (file !== undefined) report(file).output.push(line)
        else if (event.type !== 'test:diagnostic') loose.push(line)
        break
      }
      case 'test:complete': {
        if (!isFile) break
        const entry = report(file)
        if (entry.done) break
        entry.done = true
        yield fileLines(file, entry, data.details?.duration_ms)
        break
      }
    }
  }

  let passed = 0
  let failed = 0
  let skipped = 0
  let todo = 0
  for (const [file, entry] of files) {
    // A file whose end the runner never reported (it was killed): say what is known.
    if (!entry.done) yield fileLines(file, entry, undefined)
    passed += entry.passed
    failed += entry.failed
    skipped += entry.skipped
    todo += entry.todo
  }
  if (loose.length > 0) yield `${loose.join('\n')}\n`
  const seconds = Math.round((performance.now() - startedAt) / 1000)
  const took = seconds >= 60 ? `${Math.floor(seconds / 60)} min ${seconds % 60} s` : `${seconds} s`
  const known = todo > 0 ? `; ${todo} known bug${todo === 1 ? '' : 's'} (todo)` : ''
  yield `\n${files.size} file${files.size === 1 ? '' : 's'} in ${took}${known}\n`
  yield `tests: ${passed} passed, ${failed} failed, ${skipped} skipped\n`
}

/**
 * The line of one file, and the details of its failures.
 * @param {string} file @param {FileReport} entry @param {number | undefined} durationMs
 */
function fileLines(file, entry, durationMs) {
  const name = path.relative(process.cwd(), file) || file
  const total = entry.passed + entry.failed + entry.skipped + entry.todo
  const counts = [`${total} test${total === 1 ? '' : 's'}`]
  if (entry.failed > 0) counts.push(red(`${entry.failed} failed`))
  if (entry.skipped > 0) {
    const reasons = [...entry.skipReasons]
    counts.push(yellow(`${entry.skipped} skipped${reasons.length > 0 ? ` (${reasons.join('; ')})` : ''}`))
  }
  if (entry.todo > 0) counts.push(`${entry.todo} todo`)
  const time = durationMs === undefined ? '' : dim(`  ${(durationMs / 1000).toFixed(1)} s`)
  const mark = entry.failed > 0 || !entry.done ? red('✖') : green('✔')
  const line = `${mark} ${name}  ${counts.join(', ')}${time}\n`
  if (entry.failed === 0 && entry.done) return line
  const output = entry.output.filter((text) => text.trim() !== '')
  return [
    line,
    ...entry.failures.map((failure) => `${indent(failure)}\n`),
    output.length > 0 ? `${indent(`output of ${name}:\n${output.join('\n')}`)}\n` : '',
    '\n',
  ].join('')
}

/**
 * A failed test: its name, then its error (node:test wraps the test's own error as the cause).
 * @param {string} name @param {unknown} error
 */
function describeFailure(name, error) {
  const wrapped = /** @type {{ cause?: unknown } | undefined} */ (error)
  const cause = wrapped?.cause ?? error
  // An assertion error's stack starts with its message and the values compared.
  const text = cause instanceof Error ? (cause.stack ?? `${cause.name}: ${cause.message}`) : inspect(cause, { depth: 4 })
  // Node's own frames (the test runner's) say nothing about the failure.
  const ownFrames = text.split('\n').filter((line) => !/^\s+at (?:.* \()?node:/.test(line))
  return `${red('✖')} ${name}\n${indent(ownFrames.join('\n'))}`
}

/** @param {string} text */
function indent(text) {
  return text
    .split('\n')
    .map((line) => `  ${line}`)
    .join('\n')
}
