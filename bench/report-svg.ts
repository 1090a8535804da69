// The picture for docs/benchmarks.svg: latency CDFs per system, one panel per concurrency, log-scale x. The y
// axis is in "nines" (0, 90 %, 99 %, 99.9 %) rather than linear, so that p99 is as readable as p50: on a
// linear axis the whole tail is squeezed into the top pixel rows.
// Hand-written SVG (no plotting dependency): a few dozen lines of arithmetic beat a charting library here.
import { CURVE_NINES } from './percentile.ts'
import type { LatencyCurve } from './result.ts'
import type { SystemName } from './systems.ts'

const PANEL_WIDTH = 460
const PANEL_HEIGHT = 320
const MARGIN = { top: 68, right: 24, bottom: 96, left: 56 }
const Y_TICKS: Array<[fraction: number, label: string]> = [
  [0, '0%'],
  [0.5, 'p50'],
  [0.9, 'p90'],
  [0.99, 'p99'],
  [0.999, 'p99.9'],
]
const PANEL_GAP = 40

const STYLE: Record<SystemName, { color: string; dash?: string; width: number }> = {
  'floor-notify': { color: '#555555', dash: '6 4', width: 1.5 },
  'floor-select1': { color: '#999999', dash: '2 3', width: 1.5 },
  'pgrr-ts': { color: '#d62728', width: 2.5 },
  'pgrr-sql': { color: '#ff7f0e', width: 2.5 },
  'floor-pg': { color: '#555555', dash: '1 2', width: 1.5 },
  'pgrr-protocol': { color: '#e377c2', dash: '4 2', width: 1.5 },
  poc: { color: '#8c564b', width: 1.5 },
  nats: { color: '#1f77b4', width: 1.5 },
  rabbitmq: { color: '#2ca02c', width: 1.5 },
  redis: { color: '#9467bd', width: 1.5 },
  pgboss: { color: '#17becf', dash: '5 2', width: 1.5 },
  'graphile-worker': { color: '#bcbd22', dash: '5 2', width: 1.5 },
  dbos: { color: '#7f7f7f', dash: '5 2', width: 1.5 },
  'bullmq-pg': { color: '#9edae5', dash: '5 2', width: 1.5 },
  absurd: { color: '#c5b0d5', dash: '5 2', width: 1.5 },
}

function decadeLabel(us: number): string {
  if (us >= 1_000_000) return `${us / 1_000_000} s`
  if (us >= 1000) return `${us / 1000} ms`
  return `${us} µs`
}

function escapeXml(text: string): string {
  return text.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;')
}

/**
 * One panel per entry of `concurrencies` (those with curves), sharing one x axis so that panels compare.
 * `caption` goes under the title (date, machine).
 */
export function renderLatencySvg(curves: LatencyCurve[], concurrencies: number[], caption: string): string {
  const panels = concurrencies.filter((concurrency) => curves.some((curve) => curve.concurrency === concurrency && curve.points.length > 0))
  const shown = curves.filter((curve) => panels.includes(curve.concurrency) && curve.points.length > 0)
  const latencies = shown.flatMap((curve) => curve.points.map(([us]) => us)).filter((us) => us > 0)
  const minDecade = Math.floor(Math.log10(Math.min(...latencies, 100)))
  const maxDecade = Math.ceil(Math.log10(Math.max(...latencies, 1000)))
  const width = MARGIN.left + Math.max(1, panels.length) * (PANEL_WIDTH + PANEL_GAP) - PANEL_GAP + MARGIN.right
  const height = MARGIN.top + PANEL_HEIGHT + MARGIN.bottom

  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${MARGIN.left}" y="20" font-size="15" font-weight="bold">Request-reply latency per system: cumulative distribution, log scales</text>`,
    `<text x="${MARGIN.left}" y="37" fill="#555">${escapeXml(caption)}</text>`,
  ]
  if (panels.length === 0) parts.push(`<text x="${MARGIN.left}" y="${MARGIN.top + 40}">no measurements</text>`)

  panels.forEach((concurrency, index) => {
    const left = MARGIN.left + index * (PANEL_WIDTH + PANEL_GAP)
    const top = MARGIN.top
    const x = (us: number): number =>
      left + ((Math.log10(Math.max(us, 10 ** minDecade)) - minDecade) / (maxDecade - minDecade)) * PANEL_WIDTH
    const nines = (fraction: number): number => -Math.log10(1 - Math.min(fraction, 1 - 10 ** -CURVE_NINES)) / CURVE_NINES
    const y = (fraction: number): number => top + (1 - nines(fraction)) * PANEL_HEIGHT

    parts.push(`<g>`)
    parts.push(`<text x="${left + PANEL_WIDTH / 2}" y="${top - 12}" text-anchor="middle" font-weight="bold">concurrency ${concurrency}</text>`)
    parts.push(`<rect x="${left}" y="${top}" width="${PANEL_WIDTH}" height="${PANEL_HEIGHT}" fill="none" stroke="#ccc"/>`)
    for (let decade = minDecade; decade <= maxDecade; decade++) {
      for (let step = 1; step < 10; step++) {
        const us = step * 10 ** decade
        if (decade === maxDecade && step > 1) break
        const gridX = x(us).toFixed(1)
        parts.push(`<line x1="${gridX}" y1="${top}" x2="${gridX}" y2="${top + PANEL_HEIGHT}" stroke="${step === 1 ? '#ccc' : '#eee'}"/>`)
        if (step === 1) {
          parts.push(`<text x="${gridX}" y="${top + PANEL_HEIGHT + 16}" text-anchor="middle">${decadeLabel(10 ** decade)}</text>`)
        }
      }
    }
    for (const [fraction, label] of Y_TICKS) {
      const gridY = y(fraction).toFixed(1)
      const emphasis = fraction === 0.5 || fraction === 0.99
      parts.push(`<line x1="${left}" y1="${gridY}" x2="${left + PANEL_WIDTH}" y2="${gridY}" stroke="${emphasis ? '#bbb' : '#eee'}"${emphasis ? ' stroke-dasharray="4 3"' : ''}/>`)
      parts.push(`<text x="${left - 6}" y="${(y(fraction) + 4).toFixed(1)}" text-anchor="end">${label}</text>`)
    }
    for (const curve of shown.filter((candidate) => candidate.concurrency === concurrency)) {
      const style = STYLE[curve.system]
      const path = curve.points.map(([us, fraction], point) => `${point === 0 ? 'M' : 'L'}${x(us).toFixed(1)} ${y(fraction).toFixed(1)}`).join(' ')
      parts.push(
        `<path d="${path}" fill="none" stroke="${style.color}" stroke-width="${style.width}"${style.dash ? ` stroke-dasharray="${style.dash}"` : ''}><title>${curve.system} c=${concurrency}</title></path>`,
      )
    }
    parts.push(`<text x="${left + PANEL_WIDTH / 2}" y="${top + PANEL_HEIGHT + 34}" text-anchor="middle" fill="#555">latency per request (caller side)</text>`)
    parts.push(`</g>`)
  })

  const systems = [...new Set(shown.map((curve) => curve.system))]
  const legendTop = MARGIN.top + PANEL_HEIGHT + 56
  systems.forEach((system, index) => {
    const style = STYLE[system]
    const legendX = MARGIN.left + (index % 4) * 190
    const legendY = legendTop + Math.floor(index / 4) * 18
    parts.push(
      `<line x1="${legendX}" y1="${legendY - 4}" x2="${legendX + 28}" y2="${legendY - 4}" stroke="${style.color}" stroke-width="${style.width}"${style.dash ? ` stroke-dasharray="${style.dash}"` : ''}/>`,
    )
    parts.push(`<text x="${legendX + 34}" y="${legendY}">${system}</text>`)
  })
  parts.push('</svg>')
  return parts.join('\n') + '\n'
}
