/**
 * The logger the library writes to: any pino-compatible object. The library never writes to the console.
 */
export interface LogFn {
  (obj: object, msg?: string): void
  (msg: string): void
}

/** A pino-compatible logger: `logger.warn({ err }, 'message')`. */
export interface Logger {
  debug: LogFn
  info: LogFn
  warn: LogFn
  error: LogFn
}

const ignore: LogFn = () => {}

/** A logger that drops everything: the default. */
export const silentLogger: Logger = { debug: ignore, info: ignore, warn: ignore, error: ignore }
