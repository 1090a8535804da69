#!/usr/bin/env node
/**
 * `pgrr`: the command line. Dispatches to one module per command, prints errors as one line on stderr
 * (`pgrr: <message>`, the stack with --verbose) and exits with the code of the outcome (exit-codes.ts).
 */
import { readFileSync } from 'node:fs'
import { RemoteError } from '../errors.ts'
import { benchCommand } from './bench.ts'
import type { Command } from './command.ts'
import { demoCommand } from './demo.ts'
import { classify, exitCodes, exitCodeTable, UsageError } from './exit-codes.ts'
import { migrateCommand } from './migrate.ts'
import { requestCommand } from './request.ts'
import { serveCommand } from './serve.ts'
import { infoCommand, pingCommand, statsCommand } from './services.ts'
import { statusCommand } from './status.ts'

const commands: readonly Command[] = [
  migrateCommand, serveCommand, requestCommand, statusCommand, pingCommand, infoCommand, statsCommand, demoCommand, benchCommand,
]

function usage(): string {
  const width = Math.max(...commands.map((command) => command.name.length))
  return `Usage: pgrr <command> [options]

Synchronous request-reply over PostgreSQL alone.

Commands:
${commands.map((command) => `  ${command.name.padEnd(width)}  ${command.summary}`).join('\n')}

Run pgrr <command> --help for the options of a command. Every command that uses the database takes
--database-url <url> (default: $DATABASE_URL) and --schema <name> (default: public).

Options:
  -h, --help      show this help
  -V, --version   print the version
  --verbose       print stack traces of errors

Exit codes:
${exitCodeTable.map(([code, meaning]) => `  ${String(code).padStart(2)}  ${meaning}`).join('\n')}`
}

function version(): string {
  // The same relative path from src/cli/ and from dist/cli/.
  const text = readFileSync(new URL('../../package.json', import.meta.url), 'utf8')
  return (JSON.parse(text) as { version: string }).version
}

async function run(argv: string[]): Promise<number> {
  const [first, ...rest] = argv
  if (first === undefined || first === '--help' || first === '-h' || first === 'help') {
    const command = first === 'help' ? commands.find((c) => c.name === rest[0]) : undefined
    if (command !== undefined) return command.run(['--help'])
    const text = `${usage()}\n`
    if (first === undefined) {
      process.stderr.write(text)
      return exitCodes.usage
    }
    process.stdout.write(text)
    return exitCodes.ok
  }
  if (first === '--version' || first === '-V') {
    process.stdout.write(`${version()}\n`)
    return exitCodes.ok
  }
  const command = commands.find((c) => c.name === first)
  if (command === undefined) {
    throw new UsageError(
      first.startsWith('-') ? `unknown option ${first} (options go after the command)` : `unknown command ${JSON.stringify(first)}`,
    )
  }
  return command.run(rest)
}

function describe(error: Error): string {
  if (error instanceof RemoteError) return `the handler failed (${error.remoteCode}): ${error.message}`
  // The protocol's SQL errors begin with "pgrr: " themselves (for psql users); ours is added once.
  return error.message.split('\n', 1)[0]?.replace(/^pgrr: /, '') || error.name
}

/** The stack and the chain of causes, for --verbose. */
function details(error: unknown): string {
  const lines: string[] = []
  for (let current = error, depth = 0; current !== undefined && depth < 5; depth++) {
    lines.push(current instanceof Error ? (current.stack ?? `${current.name}: ${current.message}`) : String(current))
    current = current instanceof Error ? current.cause : undefined
    if (current !== undefined) lines.push('caused by:')
  }
  return lines.join('\n')
}

function helpCommandFor(name: string | undefined): string {
  return commands.some((command) => command.name === name) ? `pgrr ${name} --help` : 'pgrr --help'
}

// A reader that goes away (`pgrr demo | head`, `pgrr serve … 2>&1 | head`) must not crash us before
// cleanup, nor a responder with requests running: the rest of that stream's output is dropped (the
// logger stops writing to a stderr that is gone) and the command goes on and finishes normally.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code !== 'EPIPE' && error.code !== 'ERR_STREAM_DESTROYED') throw error
  })
}

const argv = process.argv.slice(2)
const endOfOptions = argv.indexOf('--')
const verbose = (endOfOptions === -1 ? argv : argv.slice(0, endOfOptions)).includes('--verbose')
// Node prints process warnings over several lines (node-postgres's about sslmode takes nine): the CLI says
// each in one line, like its errors, and all of it with --verbose.
process.removeAllListeners('warning')
process.on('warning', (warning) => {
  process.stderr.write(verbose ? `${warning.stack ?? warning.message}\n` : `pgrr: warning: ${warning.message.split('\n', 1)[0]}\n`)
})
let code: number
try {
  code = await run(argv)
} catch (error) {
  const classified = classify(error)
  code = classified.exitCode
  const hint = code === exitCodes.usage ? ` (see ${helpCommandFor(argv[0])})` : ''
  process.stderr.write(`pgrr: ${describe(classified.error)}${hint}\n`)
  if (verbose) process.stderr.write(`${details(error)}\n`)
}
// Exit once the output is flushed: a handle a user's handler module left open must not keep us alive.
if (process.stdout.destroyed) process.exit(code)
process.stdout.write('', () => process.stderr.write('', () => process.exit(code)))
