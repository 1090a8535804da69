/**
 * `pgrr ping`, `pgrr info`, `pgrr stats`: services that describe themselves. Ping travels to every live
 * responder of a channel and back (each answers itself, without its handler); info and stats read what the
 * responders wrote to their rows (sql/protocol/16_services.sql).
 */
import { connect, type Client } from '../client/client.ts'
import type { PingResult, ServiceResponder } from '../client/services.ts'
import { NoRespondersError } from '../errors.ts'
import {
  commonOptions,
  commonOptionsHelp,
  connectionFrom,
  databaseOptions,
  databaseOptionsHelp,
  parseCommandArgs,
  parseInteger,
} from './arguments.ts'
import { writeOut, type Command } from './command.ts'
import { classify, exitCodes, UsageError } from './exit-codes.ts'

const defaultPingTimeoutMs = 5000

const pingHelp = `Usage: pgrr ping <channel> [options]

Sends a ping to every live responder of <channel> and prints, as each answers, its id, host and pid, its
round trip in milliseconds (from the send to its reply) and how many of its handler slots were busy. Each
responder answers a ping itself, without its handler and without waiting for a free slot. Responders that
do not answer within --timeout are listed as timed out.

Options:
  --timeout <ms>         wait this long for the slowest responder (default: ${defaultPingTimeoutMs})
  --json                 print one JSON array: {responder: {id, host, pid}, roundTripMs, running,
                         concurrency} or {responder, roundTripMs, error: {code, message}} per responder
${databaseOptionsHelp}
${commonOptionsHelp}

Exit codes: 0 every responder answered, 3 no responders, 4 one did not answer in time, 6 one ended
without answering (see pgrr --help).`

const infoHelp = `Usage: pgrr info [channel] [options]

Prints what every live responder (of <channel>, or of every channel) says it is: its description and
version, the JSON Schemas of its request and reply, its host, pid and concurrency, and when it started.
Read from the database: nothing is sent to the responders.

Options:
  --json                 print one JSON array of responders
${databaseOptionsHelp}
${commonOptionsHelp}

Exit code 3 when a channel is named and no responder of it is live.`

const statsHelp = `Usage: pgrr stats [channel] [options]

Prints, per live responder (of <channel>, or of every channel): the requests its handler has ended since it
started, the errors among them, the average handler time, the 99th percentile of the latest 1,000, and its
last error. Responders write these on their lease renewal, every 500 ms, when they changed: while a
responder's event loop turns they lag its handlers by at most about half a second (the age is printed).

Options:
  --json                 print one JSON array of responders
${databaseOptionsHelp}
${commonOptionsHelp}

Exit code 3 when a channel is named and no responder of it is live.`

const pingOptions = { ...commonOptions, ...databaseOptions, timeout: { type: 'string' }, json: { type: 'boolean' } } as const
const readOptions = { ...commonOptions, ...databaseOptions, json: { type: 'boolean' } } as const

export const pingCommand: Command = {
  name: 'ping',
  summary: 'ping every live responder of a channel and print its round trip',
  help: pingHelp,
  async run(argv) {
    const { values, positionals } = parseCommandArgs('ping', argv, pingOptions, true)
    if (values.help) {
      await writeOut(`${pingHelp}\n`)
      return exitCodes.ok
    }
    if (positionals.length !== 1) throw new UsageError('ping: expected one channel (pgrr ping <channel>)')
    const timeoutMs = parseInteger('--timeout', values.timeout) ?? defaultPingTimeoutMs
    return withClient(connectionFrom(values, process.env, 'pgrr ping'), async (client) => {
      const results = await client.ping(positionals[0]!, { timeoutMs })
      await writeOut(values.json ? `${JSON.stringify(results.map(pingJson))}\n` : results.map(formatPing).join(''))
      const failed = results.find((result) => result.error !== undefined)
      return failed === undefined ? exitCodes.ok : classify(failed.error).exitCode
    })
  },
}

export const infoCommand: Command = {
  name: 'info',
  summary: 'show what each live responder says it is (description, version, schemas)',
  help: infoHelp,
  run: (argv) => readCommand('info', infoHelp, argv, formatInfo),
}

export const statsCommand: Command = {
  name: 'stats',
  summary: "show each live responder's requests, errors and handler times",
  help: statsHelp,
  run: (argv) => readCommand('stats', statsHelp, argv, formatStats),
}

async function readCommand(name: string, help: string, argv: string[], format: (responder: ServiceResponder) => string): Promise<number> {
  const { values, positionals } = parseCommandArgs(name, argv, readOptions, true)
  if (values.help) {
    await writeOut(`${help}\n`)
    return exitCodes.ok
  }
  if (positionals.length > 1) throw new UsageError(`${name}: expected at most one channel (pgrr ${name} [channel])`)
  const channel = positionals[0]
  return withClient(connectionFrom(values, process.env, `pgrr ${name}`), async (client) => {
    const responders = await client.services(channel)
    if (channel !== undefined && responders.length === 0) throw new NoRespondersError(channel)
    if (values.json) {
      await writeOut(`${JSON.stringify(responders)}\n`)
      return exitCodes.ok
    }
    const lines: string[] = []
    let last: string | undefined
    for (const responder of responders) {
      if (responder.channel !== last) lines.push(`${JSON.stringify(responder.channel)}\n`)
      last = responder.channel
      lines.push(format(responder))
    }
    await writeOut(lines.length === 0 ? 'no live responders\n' : lines.join(''))
    return exitCodes.ok
  })
}

async function withClient(connection: ReturnType<typeof connectionFrom>, run: (client: Client) => Promise<number>): Promise<number> {
  const client = await connect({ ...connection, poolSize: 1 })
  try {
    return await run(client)
  } finally {
    await client.close()
  }
}

function who(responder: { id: number; host: string | null; pid: number | null }): string {
  return `responder ${responder.id} (${responder.host ?? '?'}, pid ${responder.pid ?? '?'})`
}

function formatPing(result: PingResult): string {
  if (result.error !== undefined) return `${who(result.responder)}: ${result.error.code.toLowerCase()}: ${result.error.message}\n`
  return `${who(result.responder)}: ${result.roundTripMs.toFixed(2)} ms, ${result.running}/${result.concurrency} handlers busy\n`
}

function pingJson(result: PingResult): unknown {
  if (result.error === undefined) return result
  return { responder: result.responder, roundTripMs: result.roundTripMs, error: { code: result.error.code, message: result.error.message } }
}

function formatInfo(responder: ServiceResponder): string {
  const lines = [
    `  ${who({ id: responder.responderId, host: responder.host, pid: responder.pid })}, concurrency ${responder.concurrency ?? '?'}, started ${responder.startedAt.toISOString()}`,
    `    description: ${responder.description ?? '(none)'}`,
    `    version: ${responder.version ?? '(none)'}`,
  ]
  if (responder.requestSchema !== undefined) lines.push(`    request schema: ${JSON.stringify(responder.requestSchema)}`)
  if (responder.replySchema !== undefined) lines.push(`    reply schema: ${JSON.stringify(responder.replySchema)}`)
  return `${lines.join('\n')}\n`
}

function formatStats(responder: ServiceResponder): string {
  const { stats } = responder
  const ms = (value: number | null) => (value === null ? '-' : `${value.toFixed(2)} ms`)
  const age = stats.ageMs === null ? 'nothing handled yet' : `as of ${(stats.ageMs / 1000).toFixed(1)} s ago`
  const lines = [
    `  ${who({ id: responder.responderId, host: responder.host, pid: responder.pid })}: ${stats.requests} requests, ${stats.errors} errors, average ${ms(stats.averageMs)}, p99 ${ms(stats.p99Ms)} (${age})`,
  ]
  if (stats.lastError !== null) lines.push(`    last error ${stats.lastError.at}: ${stats.lastError.code}: ${stats.lastError.message}`)
  return `${lines.join('\n')}\n`
}
