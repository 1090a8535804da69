/** `pgrr request`: sends one request and prints the reply on stdout. */
import { constants } from 'node:os'
import { connect, type Client } from '../client/client.ts'
import { CancelledError, TimeoutError } from '../errors.ts'
import type { ClientOptions } from '../options.ts'
import {
  commonOptions,
  commonOptionsHelp,
  connectionFrom,
  databaseOptions,
  databaseOptionsHelp,
  parseCommandArgs,
  parseHeaders,
  parseInteger,
} from './arguments.ts'
import { writeOut, type Command } from './command.ts'
import { CliError, exitCodes, UsageError } from './exit-codes.ts'

const defaultTimeoutMs = 30_000

const help = `Usage: pgrr request <channel> <payload> [options]

Sends <payload> to one responder of <channel>, waits for the reply and prints only the reply on stdout: a
text reply as is, followed by a newline; any other reply as JSON. A payload of - is read from stdin (sent
exactly as read; it must be UTF-8 text, exit code 10 otherwise); put -- before a payload that starts with a
dash. SIGINT (Ctrl-C) while connecting or waiting cancels the request (exit code 9).

Options:
  --timeout <ms>         give up after this long, connecting included (default: ${defaultTimeoutMs}); exit code 4
  --json                 parse <payload> as JSON and print the reply as JSON (a number out of the range of
                         a double is refused, exit code 10)
  --header <k=v>         a header for the handler (ctx.headers); repeatable
  --stream               ask for a streamed reply: print each part as it arrives, one line each (like
                         the reply), then the final reply; --timeout then covers the whole stream
${databaseOptionsHelp}
${commonOptionsHelp}

Exit codes: 3 no responders, 4 timeout, 5 the handler failed, 6 responder lost, 7 connection,
8 schema not migrated, 9 cancelled, 10 invalid payload or channel (see pgrr --help).`

const options = {
  ...commonOptions,
  ...databaseOptions,
  timeout: { type: 'string' },
  json: { type: 'boolean' },
  header: { type: 'string', multiple: true },
  stream: { type: 'boolean' },
} as const

export const requestCommand: Command = {
  name: 'request',
  summary: 'send one request and print the reply',
  help,
  async run(argv) {
    const { values, positionals } = parseCommandArgs('request', argv, options, true)
    if (values.help) {
      await writeOut(`${help}\n`)
      return exitCodes.ok
    }
    if (positionals.length !== 2) {
      throw new UsageError('request: expected a channel and a payload (pgrr request <channel> <payload>; - reads stdin)')
    }
    const [channel, payloadArgument] = positionals as [string, string]
    const timeoutMs = parseInteger('--timeout', values.timeout) ?? defaultTimeoutMs
    const headers = parseHeaders(values.header)
    const connection = connectionFrom(values, process.env, 'pgrr request')
    const text = payloadArgument === '-' ? await readStdin() : payloadArgument
    const payload: unknown = values.json ? parseJson(text) : text

    const cancel = new AbortController()
    const onSignal = (signal: NodeJS.Signals): void => {
      if (cancel.signal.aborted) process.exit(128 + constants.signals[signal])
      cancel.abort(new Error(`interrupted by ${signal}`))
    }
    process.on('SIGINT', onSignal)
    process.on('SIGTERM', onSignal)
    let client: Client | undefined
    try {
      // --timeout counts from here: a database that accepts the connection but never answers is given up
      // on like a responder that never replies.
      const startedAt = performance.now()
      client = await connectWithin({ ...connection, poolSize: 1 }, cancel.signal, timeoutMs)
      const remainingMs = Math.ceil(timeoutMs - (performance.now() - startedAt))
      if (remainingMs < 1) throw new TimeoutError(timeoutMs)
      const line = (value: unknown) => (typeof value === 'string' && !values.json ? `${value}\n` : `${JSON.stringify(value)}\n`)
      const requestOptions = { timeoutMs: remainingMs, headers, signal: cancel.signal }
      let reply: unknown
      try {
        if (values.stream) {
          // Each part is printed as it arrives (streams.md), then the final reply.
          const stream = client.requestStream(channel, payload, requestOptions)
          for await (const part of stream) await writeOut(line(part))
          reply = await stream.reply
        } else {
          reply = await client.request(channel, payload, requestOptions)
        }
      } catch (error) {
        // Said with the --timeout given, not with what was left of it after connecting.
        throw error instanceof TimeoutError ? new TimeoutError(timeoutMs) : error
      }
      await writeOut(line(reply))
      return exitCodes.ok
    } finally {
      // Closing also sends the cancellation of a request given up on, so it is awaited.
      await client?.close()
      process.off('SIGINT', onSignal)
      process.off('SIGTERM', onSignal)
    }
  },
}

/**
 * connect(), given up on when `signal` fires (CancelledError) or after `timeoutMs` (TimeoutError). The
 * attempt given up on is not left open: a client it still makes is closed.
 */
async function connectWithin(options: ClientOptions, signal: AbortSignal, timeoutMs: number): Promise<Client> {
  const connecting = connect(options)
  let timer: NodeJS.Timeout | undefined
  let onAbort = (): void => {}
  const givenUp = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new TimeoutError(timeoutMs, `no reply within ${timeoutMs} ms (still connecting to the database)`)), timeoutMs)
    onAbort = () => reject(new CancelledError(`cancelled while connecting to the database (${describeReason(signal.reason)})`))
    if (signal.aborted) onAbort()
    else signal.addEventListener('abort', onAbort, { once: true })
  })
  try {
    return await Promise.race([connecting, givenUp])
  } catch (error) {
    void connecting.then(
      (client) => client.close(),
      () => undefined,
    )
    throw error
  } finally {
    clearTimeout(timer)
    signal.removeEventListener('abort', onAbort)
  }
}

function describeReason(reason: unknown): string {
  return reason instanceof Error ? reason.message : String(reason)
}

function parseJson(text: string): unknown {
  let outOfRange = false
  let value: unknown
  try {
    // A number too large for a double parses as Infinity, which JSON.stringify would send as null.
    value = JSON.parse(text, (_key, item: unknown) => {
      if (typeof item === 'number' && !Number.isFinite(item)) outOfRange = true
      return item
    })
  } catch (error) {
    throw new CliError(`--json: the payload is not valid JSON: ${(error as Error).message}`, exitCodes.invalidInput)
  }
  if (outOfRange) {
    throw new CliError('--json: the payload has a number out of the range of a double (it would be sent as null)', exitCodes.invalidInput)
  }
  return value
}

/** Stdin as text, byte for byte (a byte order mark included); invalid UTF-8 is refused, not replaced. */
async function readStdin(): Promise<string> {
  const chunks: Buffer[] = []
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer)
  try {
    return new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(Buffer.concat(chunks))
  } catch {
    throw new CliError('the payload read from stdin is not valid UTF-8 (payloads are text)', exitCodes.invalidInput)
  }
}
