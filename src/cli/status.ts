/** `pgrr status`: per channel, live responders, backlog, in-flight requests and rates; once or every N seconds. */
import { StatusReader, type ChannelStatus, type Status } from '../status.ts'
import {
  commonOptions,
  commonOptionsHelp,
  connectionFrom,
  databaseOptions,
  databaseOptionsHelp,
  parseCommandArgs,
} from './arguments.ts'
import { writeOut, type Command } from './command.ts'
import { exitCodes, UsageError } from './exit-codes.ts'

const defaultWatchSeconds = 2

const help = `Usage: pgrr status [channel...] [options]

Shows, for every channel (or the ones named): its live responders (id, host, pid, handlers running out of
its concurrency, uptime), its backlog (requests waiting to be claimed), the requests being handled, the age
of the oldest waiting request, and the requests and errors per second over the last minute (as reported by
the responders every few seconds); how full the server's NOTIFY queue is; and, when a transaction of the
database has been open for 10 s or more, which session holds it (while it is open, VACUUM cannot remove
dead rows: the request table grows and requests slow down). Sessions of other roles are seen only by a
superuser or a member of pg_read_all_stats.

A responder is live while its session holds its responder lock: a killed responder disappears at once. The
command reads the protocol's tables, so it needs the schema owner (or a superuser). A channel named that no
responder has ever registered for is said not to exist.

With --watch, a read that fails (the database is unreachable, the schema is gone) prints "status
unavailable" with the reason instead of the status, or with --json an object {"schema", "time", "error":
{"code", "message"}} (time from the local clock), and is tried again at the next interval. The command
stops when stdout is closed (pgrr status --watch | head -1).

Options:
  --json                 print the status as one JSON object (with --watch, one object per line)
  --watch [seconds]      print it again every <seconds> (default: ${defaultWatchSeconds}) until Ctrl-C; on a
                         terminal the screen is redrawn. Use --watch=<seconds> before a channel name
                         that is a number.
${databaseOptionsHelp}
${commonOptionsHelp}`

const options = {
  ...commonOptions,
  ...databaseOptions,
  json: { type: 'boolean' },
  watch: { type: 'string' },
} as const

export const statusCommand: Command = {
  name: 'status',
  summary: 'show responders, backlog and rates per channel',
  help,
  async run(argv) {
    const { values, positionals } = parseCommandArgs('status', optionalWatchValue(argv), options, true)
    if (values.help) {
      await writeOut(`${help}\n`)
      return exitCodes.ok
    }
    const watchSeconds = values.watch === undefined ? undefined : parseSeconds(values.watch)
    const connection = connectionFrom(values, process.env, 'pgrr status')
    const named = [...new Set(positionals)]
    const reader = new StatusReader({ ...connection, ...(named.length > 0 ? { channels: named } : {}) })
    const render = (status: Status) => (values.json ? `${JSON.stringify(status)}\n` : formatStatus(status, named))
    try {
      const first = await reader.read()
      if (watchSeconds === undefined) {
        await writeOut(render(first))
        return exitCodes.ok
      }
      const renderFailure = (error: unknown) => formatUnavailable(connection.schema, new Date(), error, values.json === true)
      await watch(reader, first, watchSeconds * 1000, render, renderFailure, values.json === true)
      return exitCodes.ok
    } finally {
      await reader.close()
    }
  },
}

/**
 * Prints the status every `intervalMs` until SIGINT or SIGTERM, or until stdout is closed (its reader went
 * away: EPIPE destroys it). A failed read prints what `renderFailure` makes of it, never the previous
 * status as if it were current, and is tried again at the next interval.
 */
async function watch(
  reader: StatusReader,
  first: Status,
  intervalMs: number,
  render: (status: Status) => string,
  renderFailure: (error: unknown) => string,
  json: boolean,
): Promise<void> {
  const redraw = process.stdout.isTTY && !json
  const stopped = new AbortController()
  const stop = () => stopped.abort()
  process.on('SIGINT', stop)
  process.on('SIGTERM', stop)
  process.stdout.on('close', stop)
  try {
    let text = render(first)
    for (;;) {
      if (process.stdout.destroyed) return
      await writeOut(redraw ? `\x1b[H\x1b[2J${text}` : `${text}${json ? '' : '\n'}`)
      await delay(intervalMs, stopped.signal)
      if (stopped.signal.aborted) return
      try {
        text = render(await reader.read())
      } catch (error) {
        text = renderFailure(error)
      }
      if (stopped.signal.aborted) return
    }
  } finally {
    process.off('SIGINT', stop)
    process.off('SIGTERM', stop)
    process.stdout.off('close', stop)
  }
}

/** What --watch prints instead of the status when a read fails. */
export function formatUnavailable(schema: string, time: Date, error: unknown, json: boolean): string {
  const message = error instanceof Error ? error.message : String(error)
  const code = (error as { code?: unknown } | null)?.code
  if (json) {
    return `${JSON.stringify({ schema, time, error: { code: typeof code === 'string' ? code : null, message } })}\n`
  }
  return `schema ${schema} at ${time.toISOString()}: status unavailable: ${message.split('\n', 1)[0]}\n`
}

/** Transactions open at least this long are pointed out in the human form (the JSON has the oldest always). */
export const OLD_TRANSACTION_MS = 10_000

/**
 * The human form: a summary table, then the live responders of each channel. `named`: the channels asked
 * for, if any; those that do not exist are named.
 */
export function formatStatus(status: Status, named: readonly string[] = []): string {
  const usage = (status.notificationQueueUsage * 100).toFixed(status.notificationQueueUsage > 0 && status.notificationQueueUsage < 0.001 ? 3 : 1)
  const lines = [`schema ${status.schema} at ${status.time.toISOString()}, NOTIFY queue ${usage}% used`]
  const oldest = status.oldestTransaction
  if (oldest !== null && oldest.ageMs >= OLD_TRANSACTION_MS) {
    lines.push(
      `a transaction open for ${formatDuration(oldest.ageMs)} (pid ${oldest.pid}` +
        `${oldest.applicationName === '' ? '' : `, ${oldest.applicationName}`}, ${oldest.state ?? 'state unknown'}) ` +
        'keeps VACUUM from removing dead rows: the request table grows and requests slow down until it ends',
    )
  }
  lines.push('')
  const found = new Set(status.channels.map((c) => c.channel))
  const missing = named.filter((channel) => !found.has(channel))
  if (missing.length > 0) {
    lines.push(
      `no channel named ${missing.map((channel) => JSON.stringify(channel)).join(', ')} in this schema ` +
        `(no responder has ever registered for ${missing.length === 1 ? 'it' : 'them'})`,
    )
  }
  if (status.channels.length === 0) {
    if (missing.length === 0) lines.push('no channels (no responder has registered in this schema yet)')
    return `${lines.join('\n')}\n`
  }
  if (missing.length > 0) lines.push('')
  const header = ['CHANNEL', 'RESPONDERS', 'BACKLOG', 'IN FLIGHT', 'OLDEST WAITING', 'REQ/S', 'ERR/S']
  const rows = status.channels.map((c) => [
    c.channel,
    String(c.responders.length),
    String(c.backlog),
    String(c.inFlight),
    c.oldestPendingMs === null ? '-' : formatDuration(c.oldestPendingMs),
    formatRate(c.requestsPerSecond),
    formatRate(c.errorsPerSecond),
  ])
  lines.push(...table([header, ...rows]))
  for (const channel of status.channels) lines.push('', ...responderLines(channel, status.time))
  return `${lines.join('\n')}\n`
}

function responderLines(channel: ChannelStatus, now: Date): string[] {
  if (channel.responders.length === 0) return [`${channel.channel}: no live responder`]
  const rows = channel.responders.map((r) => [
    `  id ${r.id}`,
    r.host ?? '?',
    `pid ${r.pid ?? '?'}`,
    `running ${r.running}/${r.concurrency ?? '?'}`,
    `up ${formatDuration(now.getTime() - r.since.getTime())}`,
    `handled ${r.handledTotal} (${r.failedTotal} failed)`,
    r.reportedAt === null ? 'no report yet' : `reported ${formatDuration(now.getTime() - r.reportedAt.getTime())} ago`,
  ])
  return [`${channel.channel}:`, ...table(rows)]
}

/** Columns padded to their widest cell; numbers right-aligned. */
function table(rows: string[][]): string[] {
  const widths: number[] = []
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)))
  return rows.map((row) =>
    row
      .map((cell, i) => (i > 0 && /^[\d.-]+$/.test(cell) ? cell.padStart(widths[i]!) : cell.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd(),
  )
}

function formatDuration(ms: number): string {
  const value = Math.max(0, ms)
  if (value < 1000) return `${Math.round(value)} ms`
  if (value < 60_000) return `${(value / 1000).toFixed(1)} s`
  const seconds = Math.floor(value / 1000)
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m ${seconds % 60}s`
  if (seconds < 86_400) return `${Math.floor(seconds / 3600)}h ${Math.floor((seconds % 3600) / 60)}m`
  return `${Math.floor(seconds / 86_400)}d ${Math.floor((seconds % 86_400) / 3600)}h`
}

function formatRate(perSecond: number): string {
  if (perSecond === 0) return '0'
  return perSecond >= 10 ? perSecond.toFixed(0) : perSecond.toFixed(2)
}

/** `--watch` takes an optional value: `--watch 5` and bare `--watch` become `--watch=5` and `--watch=2`. */
function optionalWatchValue(argv: string[]): string[] {
  const out: string[] = []
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!
    if (arg === '--') {
      out.push(...argv.slice(i))
      break
    }
    if (arg !== '--watch') {
      out.push(arg)
      continue
    }
    const next = argv[i + 1]
    if (next !== undefined && /^\d+(\.\d+)?$/.test(next)) {
      out.push(`--watch=${next}`)
      i++
    } else {
      out.push(`--watch=${defaultWatchSeconds}`)
    }
  }
  return out
}

function parseSeconds(text: string): number {
  const seconds = Number(text)
  if (!/^\d+(\.\d+)?$/.test(text) || !(seconds >= 0.1 && seconds <= 86_400)) {
    throw new UsageError(`--watch must be a number of seconds from 0.1 to 86400, got ${JSON.stringify(text)}`)
  }
  return seconds
}

function delay(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve()
    const done = () => {
      clearTimeout(timer)
      signal.removeEventListener('abort', done)
      resolve()
    }
    const timer = setTimeout(done, ms)
    signal.addEventListener('abort', done, { once: true })
  })
}
