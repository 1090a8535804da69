// The results as a table: aligned text for the terminal, Markdown for the docs. Same columns in both.
import type { BenchResult } from './result.ts'

const HEADER = [
  'system',
  'c',
  'n',
  'p50',
  'p99',
  'req/s',
  'errors',
  'p50 ×floor',
  'req/s ×floor',
  'node CPU µs/req',
  'server CPU µs/req',
  'note',
]
/** Columns that hold numbers, right-aligned. */
const NUMERIC = new Set([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])

export function formatLatency(us: number | null): string {
  if (us === null) return '-'
  if (us < 1000) return `${Math.round(us)} µs`
  if (us < 100_000) return `${(us / 1000).toFixed(2)} ms`
  return `${Math.round(us / 1000)} ms`
}

function formatNumber(value: number | null, decimals = 0): string {
  return value === null ? '-' : value.toFixed(decimals)
}

function formatRatio(value: number | null): string {
  return value === null ? '-' : `${value < 10 ? value.toFixed(2) : value.toFixed(0)}×`
}

const NOTE_CHARS = 120

function note(result: BenchResult): string {
  const text = result.skipped
    ? `skipped: ${result.skipped}`
    : result.failed
      ? `failed: ${result.failed}`
      : result.errorSamples?.length
        ? `errors: ${result.errorSamples[0]}`
        : result.warmupErrors
          ? `${result.warmupErrors} errors in warm-up`
          : ''
  // One line per row, whatever the error looked like.
  const line = text.replace(/\s+/g, ' ').trim()
  return line.length > NOTE_CHARS ? `${line.slice(0, NOTE_CHARS - 1)}…` : line
}

export function tableRows(results: BenchResult[]): string[][] {
  return results.map((result) => [
    result.system,
    String(result.concurrency),
    result.skipped ? '-' : String(result.count),
    formatLatency(result.p50Us),
    formatLatency(result.p99Us),
    formatNumber(result.requestsPerSec, result.requestsPerSec !== null && result.requestsPerSec < 100 ? 1 : 0),
    result.skipped ? '-' : String(result.errors),
    formatRatio(result.p50VsFloor),
    formatRatio(result.requestsPerSecVsFloor),
    formatNumber(result.clientCpuUsPerRequest),
    formatNumber(result.serverCpuUsPerRequest),
    note(result),
  ])
}

export function formatTextTable(results: BenchResult[]): string {
  const rows = [HEADER, ...tableRows(results)]
  const widths = HEADER.map((_, column) => Math.max(...rows.map((row) => (row[column] ?? '').length)))
  return rows
    .map((row) =>
      row
        .map((cell, column) => (NUMERIC.has(column) ? cell.padStart(widths[column] ?? 0) : cell.padEnd(widths[column] ?? 0)))
        .join('  ')
        .trimEnd(),
    )
    .join('\n')
}

export function formatMarkdownTable(results: BenchResult[]): string {
  const escape = (cell: string): string => cell.replaceAll('|', '\\|')
  const lines = [
    `| ${HEADER.join(' | ')} |`,
    `| ${HEADER.map((_, column) => (NUMERIC.has(column) ? '---:' : '---')).join(' | ')} |`,
    ...tableRows(results).map((row) => `| ${row.map(escape).join(' | ')} |`),
  ]
  return lines.join('\n')
}
