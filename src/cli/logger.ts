/**
 * The CLI's implementation of the library's {@link Logger}: readable lines or JSON lines on stderr. The
 * library logs errors under `err`; they are flattened to their message and code (the stack only at debug).
 */
import type { LogFn, Logger } from '../logger.ts'

export type LogFormat = 'text' | 'json'
export type LogLevel = 'debug' | 'info' | 'warn' | 'error'

export const logLevels: readonly LogLevel[] = ['debug', 'info', 'warn', 'error']

export interface CliLoggerOptions {
  format: LogFormat
  /** Records below this level are dropped. @default 'info' */
  level?: LogLevel
  /** @default process.stderr */
  write?: (line: string) => void
}

/** A {@link Logger} writing one line per record. */
export function createLogger(options: CliLoggerOptions): Logger {
  const minimum = logLevels.indexOf(options.level ?? 'info')
  const write = options.write ?? writeToStderr
  const make = (level: LogLevel): LogFn => {
    if (logLevels.indexOf(level) < minimum) return () => {}
    return ((objOrMsg: object | string, msg?: string) => {
      const fields = typeof objOrMsg === 'string' ? {} : objOrMsg
      const message = typeof objOrMsg === 'string' ? objOrMsg : (msg ?? '')
      write(options.format === 'json' ? jsonLine(level, message, fields) : textLine(level, message, fields))
    }) as LogFn
  }
  return { debug: make('debug'), info: make('info'), warn: make('warn'), error: make('error') }
}

/** Writes to stderr while it is open: once its reader has gone (EPIPE destroys it), logs are dropped. */
function writeToStderr(line: string): void {
  if (!process.stderr.destroyed) process.stderr.write(line)
}

function jsonLine(level: LogLevel, msg: string, fields: object): string {
  const record: Record<string, unknown> = { time: new Date().toISOString(), level, msg }
  for (const [key, value] of Object.entries(fields)) record[key] = key === 'err' ? errorFields(value, level) : value
  return `${safeStringify(record)}\n`
}

function textLine(level: LogLevel, msg: string, fields: object): string {
  let line = `${new Date().toISOString()} ${level.padEnd(5)} ${msg}`
  for (const [key, value] of Object.entries(fields)) {
    if (key === 'err') {
      const err = errorFields(value, level)
      line += ` err=${safeStringify(err.code === undefined ? err.message : `${err.code}: ${err.message}`)}`
      if (err.stack !== undefined) line += `\n${err.stack}`
    } else {
      line += ` ${key}=${typeof value === 'string' && /^[^\s"=]+$/.test(value) ? value : safeStringify(value)}`
    }
  }
  return `${line}\n`
}

function errorFields(error: unknown, level: LogLevel): { type?: string; message: string; code?: string; stack?: string } {
  if (!(error instanceof Error)) return { message: String(error) }
  const code = (error as { code?: unknown }).code
  return {
    type: error.name,
    message: error.message,
    ...(typeof code === 'string' ? { code } : {}),
    ...(level === 'debug' && error.stack !== undefined ? { stack: error.stack } : {}),
  }
}

function safeStringify(value: unknown): string {
  try {
    return JSON.stringify(value, (_key, v: unknown) => (typeof v === 'bigint' ? v.toString() : v)) ?? String(value)
  } catch {
    return String(value)
  }
}
