/**
 * Argument parsing shared by the commands: `node:util` parseArgs in strict mode, its errors turned into
 * usage errors, and the options every database command takes.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util'
import type { ConnectionOptions } from '../options.ts'
import { UsageError } from './exit-codes.ts'

type OptionSpecs = NonNullable<ParseArgsConfig['options']>

/** Options of every command. */
export const commonOptions = {
  help: { type: 'boolean', short: 'h' },
  verbose: { type: 'boolean' },
} as const satisfies OptionSpecs

/** Options of every command that touches the database. */
export const databaseOptions = {
  'database-url': { type: 'string' },
  schema: { type: 'string' },
} as const satisfies OptionSpecs

/** Help lines for {@link commonOptions} and {@link databaseOptions}. */
export const databaseOptionsHelp = `  --database-url <url>   PostgreSQL connection string (default: $DATABASE_URL, else the PG* variables)
  --schema <name>        schema the protocol is installed in (default: public)`

export const commonOptionsHelp = `  --verbose              print stack traces of errors
  -h, --help             show this help`

/** parseArgs, strict, with its errors as {@link UsageError}s that name the command. */
export function parseCommandArgs<T extends OptionSpecs>(
  command: string,
  argv: string[],
  options: T,
  allowPositionals: boolean,
): ReturnType<typeof parseArgs<{ args: string[]; options: T; strict: true; allowPositionals: boolean }>> {
  try {
    return parseArgs({ args: argv, options, strict: true, allowPositionals })
  } catch (error) {
    // parseArgs errors carry ERR_PARSE_ARGS_* codes and messages that already say what was wrong.
    const message = error instanceof Error ? error.message : String(error)
    throw new UsageError(`${command}: ${firstLine(message)}`)
  }
}

/** Connection options from `--database-url`/`DATABASE_URL` and `--schema`. */
export function connectionFrom(
  values: { 'database-url'?: string; schema?: string },
  env: NodeJS.ProcessEnv,
  applicationName: string,
): ConnectionOptions & { schema: string } {
  const connectionString = values['database-url'] ?? (env.DATABASE_URL || undefined)
  const schema = values.schema ?? 'public'
  if (schema.length === 0) throw new UsageError('--schema must not be empty')
  if (connectionString !== undefined) assertUrl(connectionString)
  return { connectionString, schema, applicationName }
}

/** A whole number of at least `min`, for options such as `--timeout 200`. */
export function parseInteger(option: string, text: string | undefined, min = 1, max = 2_147_483_647): number | undefined {
  if (text === undefined) return undefined
  const value = Number(text)
  if (!/^\s*\d+\s*$/.test(text) || !Number.isSafeInteger(value) || value < min || value > max) {
    throw new UsageError(`${option} must be a whole number from ${min} to ${max}, got ${JSON.stringify(text)}`)
  }
  return value
}

/** `k=v` pairs of repeated `--header` options. */
export function parseHeaders(pairs: string[] | undefined): Record<string, string> | undefined {
  if (pairs === undefined || pairs.length === 0) return undefined
  const headers: Record<string, string> = {}
  for (const pair of pairs) {
    const at = pair.indexOf('=')
    if (at <= 0) throw new UsageError(`--header must look like key=value, got ${JSON.stringify(pair)}`)
    headers[pair.slice(0, at)] = pair.slice(at + 1)
  }
  return headers
}

/** The URL without its password, for messages. */
export function redactUrl(url: string | undefined): string {
  if (url === undefined) return '(from the PG* environment variables)'
  try {
    const parsed = new URL(url)
    if (parsed.password !== '') parsed.password = '***'
    return parsed.toString()
  } catch {
    return '(unparsable URL)'
  }
}

function assertUrl(url: string): void {
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    throw new UsageError('the database URL is not a valid URL (expected postgres://user@host:port/database)')
  }
  if (parsed.protocol !== 'postgres:' && parsed.protocol !== 'postgresql:') {
    throw new UsageError(`the database URL must start with postgres:// or postgresql://, got ${parsed.protocol}//`)
  }
}

function firstLine(text: string): string {
  return text.split('\n', 1)[0] ?? text
}
