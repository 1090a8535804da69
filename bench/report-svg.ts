// The picture for docs/benchmarks.svg: latency CDFs per system, one panel per concurrency, log-scale x. The y
// axis is in "nines" (0, 90 %, 99 %, 99.9 %) rather than linear, so that p99 is as readable as p50: on a
// linear axis the whole tail is squeezed into the top pixel rows.
// Hand-written SVG (no plotting dependency): a few dozen lines of arithmetic beat a charting library here.
// Every curve is named on the picture next to its p99 (labels nudged apart when they would overlap), the
// legend groups the systems, and the two pgrr curves differ in colour, dash and marker, so that they stay
// apart where they overlap. The curves' points are embedded as JSON (<metadata>), so the picture can be
// redrawn without running the benchmark again:
//
//   node --import tsx bench/report-svg.ts [--in docs/benchmarks.svg] [--out docs/benchmarks.svg]
//
// which also reads pictures drawn before the points were embedded (their paths, mapped back through the axes).
import { readFile, writeFile } from 'node:fs/promises'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'
import { CURVE_NINES } from './percentile.ts'
import type { LatencyCurve } from './result.ts'
import type { SystemName } from './systems.ts'

const PANEL_WIDTH = 440
const PANEL_HEIGHT = 300
const PANEL_GAP = 100
const MARGIN = { top: 150, right: 64, bottom: 58, left: 74 }
const Y_TICKS: Array<[fraction: number, label: string]> = [
  [0, '0'],
  [0.5, 'p50'],
  [0.9, 'p90'],
  [0.99, 'p99'],
  [0.999, 'p99.9'],
]
const LABEL_HEIGHT = 13
const CLEARANCE = 3
const MAX_CROSSINGS = 3
/** Where the pgrr curves get a marker (dot or square). */
const MARKED_FRACTIONS = [0.5, 0.9, 0.99]
/** Where a label may go: next to the curve's point at one of these fractions, the first ones preferred. */
const FRACTIONS = [0.99, 0.9, 0.5, 0.999, 0.95, 0.75, 0.3]

type Marker = 'circle' | 'square'
export interface Style {
  /** Name on the picture, next to the curve. */
  label: string
  /** Name in the legend. */
  legend: string
  group: 'pgrr' | 'floor' | 'broker' | 'queue' | 'other'
  color: string
  width: number
  dash?: string
  marker?: Marker
}

export const STYLE: Record<SystemName, Style> = {
  'pgrr-ts': { label: 'pgrr TS', legend: 'TypeScript caller (client.request)', group: 'pgrr', color: '#d62728', width: 3, marker: 'circle' },
  'pgrr-sql': { label: 'pgrr SQL', legend: 'SQL caller (request + await_reply)', group: 'pgrr', color: '#08306b', width: 2.5, dash: '7 3', marker: 'square' },
  'floor-notify': { label: 'floor', legend: 'floor: LISTEN/NOTIFY ping-pong', group: 'floor', color: '#555555', width: 1.5, dash: '6 4' },
  'floor-select1': { label: 'SELECT 1', legend: 'SELECT 1 round trip', group: 'floor', color: '#999999', width: 1.5, dash: '2 3' },
  'floor-pg': { label: 'floor (pg)', legend: 'floor with node-postgres (aid)', group: 'floor', color: '#555555', width: 1.5, dash: '1 2' },
  'pgrr-protocol': { label: 'protocol', legend: 'protocol SQL alone (aid)', group: 'pgrr', color: '#e377c2', width: 1.5, dash: '4 2' },
  'batch-sketch': { label: 'sketch', legend: 'plainest batching on a table (aid)', group: 'other', color: '#8c6d31', width: 1.5, dash: '4 2' },
  'batch-row-sketch': { label: 'sketch (row per batch)', legend: 'sketch, a row per batch (aid)', group: 'other', color: '#bd9e39', width: 1.5, dash: '4 2' },
  'floor-batch': { label: 'floor (batched)', legend: 'NOTIFYs batched, no table (aid)', group: 'floor', color: '#555555', width: 1.5, dash: '8 2' },
  nats: { label: 'NATS', legend: 'NATS request-reply', group: 'broker', color: '#17becf', width: 1.5 },
  rabbitmq: { label: 'RabbitMQ', legend: 'RabbitMQ (direct reply-to)', group: 'broker', color: '#2ca02c', width: 1.5 },
  redis: { label: 'Redis', legend: 'Redis (list + pub/sub)', group: 'broker', color: '#9467bd', width: 1.5 },
  poc: { label: 'proof of concept', legend: 'proof of concept (polling)', group: 'other', color: '#8c564b', width: 1.5 },
  pgboss: { label: 'pg-boss', legend: 'pg-boss (send, poll getJobById)', group: 'queue', color: '#bcbd22', width: 1.5, dash: '5 2' },
  'graphile-worker': { label: 'graphile-worker', legend: 'graphile-worker (reply by NOTIFY)', group: 'queue', color: '#7f7f7f', width: 1.5, dash: '5 2' },
  dbos: { label: 'DBOS', legend: 'DBOS (enqueue, getResult)', group: 'queue', color: '#ff7f0e', width: 1.5, dash: '5 2' },
  'bullmq-pg': { label: 'BullMQ (pg)', legend: 'BullMQ on PostgreSQL (waitUntilFinished)', group: 'queue', color: '#9edae5', width: 1.5, dash: '5 2' },
  absurd: { label: 'Absurd', legend: 'Absurd (awaitTaskResult)', group: 'queue', color: '#c5b0d5', width: 1.5, dash: '5 2' },
}
const GROUPS: Array<[Style['group'], string]> = [
  ['pgrr', 'pg-request-reply'],
  ['floor', 'PostgreSQL alone (floors)'],
  ['broker', 'message brokers'],
  ['queue', 'PostgreSQL job queues and workflow engines'],
  ['other', 'other'],
]

function decadeLabel(us: number): string {
  if (us >= 1_000_000) return `${us / 1_000_000} s`
  if (us >= 1000) return `${us / 1000} ms`
  return `${us} µs`
}

export function escapeXml(text: string): string {
  return text.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;')
}

function strokeOf(style: Style): string {
  return `stroke="${style.color}" stroke-width="${style.width}"${style.dash ? ` stroke-dasharray="${style.dash}"` : ''}`
}

function markerAt(style: Style, x: number, y: number): string {
  // A hollow square larger than the dot: where the two pgrr curves meet, the dot shows inside the square.
  if (style.marker === 'circle') return `<circle cx="${x.toFixed(1)}" cy="${y.toFixed(1)}" r="2.8" fill="${style.color}"/>`
  if (style.marker === 'square') {
    return `<rect x="${(x - 5).toFixed(1)}" y="${(y - 5).toFixed(1)}" width="10" height="10" fill="none" stroke="${style.color}" stroke-width="1.8"/>`
  }
  return ''
}

/** The latency of `curve` at `fraction` (its first point at or above it), or undefined. */
function latencyAt(curve: LatencyCurve, fraction: number): number | undefined {
  return curve.points.find(([, f]) => f >= fraction - 1e-9)?.[0]
}

/**
 * One panel per entry of `concurrencies` (those with curves), sharing one x axis so that panels compare.
 * `caption` goes under the title (date, machine).
 */
export function renderLatencySvg(curves: LatencyCurve[], concurrencies: number[], caption: string): string {
  const panels = concurrencies.filter((concurrency) => curves.some((curve) => curve.concurrency === concurrency && curve.points.length > 0))
  const shown = curves.filter((curve) => panels.includes(curve.concurrency) && curve.points.length > 0)
  const latencies = shown.flatMap((curve) => curve.points.map(([us]) => us)).filter((us) => us > 0)
  // The x axis spans the measured latencies with a little room, not whole decades: more width for the curves.
  const minLog = Math.log10(Math.min(...latencies, 1000)) - 0.15
  const maxLog = Math.log10(Math.max(...latencies, 10_000)) + 0.15
  const width = MARGIN.left + Math.max(1, panels.length) * (PANEL_WIDTH + PANEL_GAP) - PANEL_GAP + MARGIN.right
  const height = MARGIN.top + PANEL_HEIGHT + MARGIN.bottom
  const systems = [...new Set(shown.map((curve) => curve.system))]

  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<metadata id="pgrr-bench-curves">${escapeXml(JSON.stringify({ caption, concurrencies: panels, curves: shown.map(rounded) }))}</metadata>`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${MARGIN.left}" y="22" font-size="16" font-weight="bold">Request-reply latency: the share of requests answered within a given time</text>`,
    `<text x="${MARGIN.left}" y="40" fill="#555">${escapeXml(caption)}. Further left is faster; a curve that turns right low down has a long tail.</text>`,
  ]
  parts.push(...legend(systems, MARGIN.left, 64))
  if (panels.length === 0) parts.push(`<text x="${MARGIN.left}" y="${MARGIN.top + 40}">no measurements</text>`)

  panels.forEach((concurrency, index) => {
    const left = MARGIN.left + index * (PANEL_WIDTH + PANEL_GAP)
    const top = MARGIN.top
    const x = (us: number): number => left + ((Math.log10(Math.max(us, 10 ** minLog)) - minLog) / (maxLog - minLog)) * PANEL_WIDTH
    const nines = (fraction: number): number => -Math.log10(1 - Math.min(fraction, 1 - 10 ** -CURVE_NINES)) / CURVE_NINES
    const y = (fraction: number): number => top + (1 - nines(fraction)) * PANEL_HEIGHT
    const title = concurrency === 1 ? 'one request at a time (concurrency 1)' : `${concurrency} requests in flight (concurrency ${concurrency})`

    parts.push(`<g data-concurrency="${concurrency}">`)
    parts.push(`<text x="${left + PANEL_WIDTH / 2}" y="${top - 10}" text-anchor="middle" font-size="13" font-weight="bold">${title}</text>`)
    parts.push(`<rect x="${left}" y="${top}" width="${PANEL_WIDTH}" height="${PANEL_HEIGHT}" fill="none" stroke="#bbb"/>`)
    for (let decade = Math.floor(minLog); decade <= Math.ceil(maxLog); decade++) {
      for (let step = 1; step < 10; step++) {
        const us = step * 10 ** decade
        if (Math.log10(us) < minLog || Math.log10(us) > maxLog) continue
        const gridX = x(us).toFixed(1)
        parts.push(`<line x1="${gridX}" y1="${top}" x2="${gridX}" y2="${top + PANEL_HEIGHT}" stroke="${step === 1 ? '#ccc' : '#f0f0f0'}"/>`)
        if (step === 1) parts.push(`<text x="${gridX}" y="${top + PANEL_HEIGHT + 16}" text-anchor="middle">${decadeLabel(us)}</text>`)
      }
    }
    for (const [fraction, label] of Y_TICKS) {
      const gridY = y(fraction).toFixed(1)
      const emphasis = fraction === 0.5 || fraction === 0.99
      parts.push(`<line x1="${left}" y1="${gridY}" x2="${left + PANEL_WIDTH}" y2="${gridY}" stroke="${emphasis ? '#bbb' : '#eee'}"${emphasis ? ' stroke-dasharray="4 3"' : ''}/>`)
      parts.push(`<text x="${left - 6}" y="${(y(fraction) + 4).toFixed(1)}" text-anchor="end">${label}</text>`)
    }
    const axisX = left - 44
    const axisY = top + PANEL_HEIGHT / 2
    parts.push(`<text x="${axisX}" y="${axisY}" text-anchor="middle" fill="#555" transform="rotate(-90 ${axisX} ${axisY})">share of requests (percentile)</text>`)
    parts.push(`<text x="${left + PANEL_WIDTH / 2}" y="${top + PANEL_HEIGHT + 36}" text-anchor="middle" fill="#555">round trip as the caller sees it (log scale)</text>`)

    // Thin curves first, the two pgrr curves last (on top): the SQL one, then the TypeScript one and its dots.
    const order = (system: SystemName) => ['pgrr-sql', 'pgrr-ts'].indexOf(system)
    const here = shown.filter((candidate) => candidate.concurrency === concurrency).sort((a, b) => order(a.system) - order(b.system))
    for (const curve of here) {
      const style = STYLE[curve.system]
      const path = curve.points.map(([us, fraction], point) => `${point === 0 ? 'M' : 'L'}${x(us).toFixed(1)} ${y(fraction).toFixed(1)}`).join(' ')
      parts.push(`<path d="${path}" fill="none" ${strokeOf(style)} stroke-linejoin="round"><title>${curve.system} c=${concurrency}</title></path>`)
      if (style.marker) {
        for (const fraction of MARKED_FRACTIONS) {
          const us = latencyAt(curve, fraction)
          if (us !== undefined) parts.push(markerAt(style, x(us), y(fraction)))
        }
      }
    }
    // Labels may use the room right of the panel: up to the next panel's tick labels, or the right margin.
    const room = index === panels.length - 1 ? MARGIN.right - 4 : PANEL_GAP - 64
    parts.push(...curveLabels(here, x, y, { left, top, right: left + PANEL_WIDTH + room, bottom: top + PANEL_HEIGHT }))
    parts.push(`</g>`)
  })
  parts.push('</svg>')
  return parts.join('\n') + '\n'
}

/** The legend: one column per group of systems present, each as wide as its text, lines drawn as on the panels. */
function legend(systems: SystemName[], left: number, top: number): string[] {
  const parts: string[] = []
  let columnX = left
  for (const [group, title] of GROUPS) {
    const members = systems.filter((system) => STYLE[system].group === group)
    if (members.length === 0) continue
    parts.push(`<text x="${columnX.toFixed(1)}" y="${top}" font-weight="bold">${escapeXml(title)}</text>`)
    members.forEach((system, row) => {
      const style = STYLE[system]
      const rowY = top + 18 + row * 17
      parts.push(`<line x1="${columnX.toFixed(1)}" y1="${rowY - 4}" x2="${(columnX + 30).toFixed(1)}" y2="${rowY - 4}" ${strokeOf(style)}/>`)
      if (style.marker) parts.push(markerAt(style, columnX + 15, rowY - 4))
      parts.push(`<text x="${(columnX + 38).toFixed(1)}" y="${rowY}">${escapeXml(style.legend)}</text>`)
    })
    const widest = Math.max(title.length * 7.2, ...members.map((system) => 38 + STYLE[system].legend.length * 6.8))
    columnX += widest + 28
  }
  return parts
}

interface Box {
  x1: number
  y1: number
  x2: number
  y2: number
}

type Segment = readonly [x1: number, y1: number, x2: number, y2: number]

/**
 * A name next to each curve, on the free spot closest to one of its points (at the fractions of
 * {@link FRACTIONS}, the first ones preferred): right or left of the point, or a little further away with a
 * leader line back to it (and a dot on the point). Free means inside the panel (or the room right of it), on
 * no label already placed and clear of every other curve, so that no label can be read as another curve's;
 * a leader line that crosses other curves is allowed, at a high cost per crossing. The pgrr curves are placed
 * first, so that theirs get the closest spots; a curve with no free spot is named by the legend alone.
 */
function curveLabels(
  curves: LatencyCurve[],
  x: (us: number) => number,
  y: (fraction: number) => number,
  panel: { left: number; top: number; right: number; bottom: number },
): string[] {
  const parts: string[] = []
  // The markers of the pgrr curves are obstacles from the start.
  const placed: Box[] = curves.flatMap((curve) =>
    STYLE[curve.system].marker === undefined
      ? []
      : MARKED_FRACTIONS.flatMap((fraction) => {
          const us = latencyAt(curve, fraction)
          return us === undefined ? [] : [grown({ x1: x(us), y1: y(fraction), x2: x(us), y2: y(fraction) }, 6)]
        }),
  )
  const segmentsOf = new Map(
    curves.map((curve) => {
      const pixels = curve.points.map(([us, fraction]) => [x(us), y(fraction)] as const)
      return [curve, pixels.slice(1).map(([x2, y2], i): Segment => [pixels[i]![0], pixels[i]![1], x2, y2])] as const
    }),
  )
  const isPgrr = (curve: LatencyCurve) => STYLE[curve.system].group === 'pgrr'
  const ordered = [...curves].sort((a, b) => Number(isPgrr(b)) - Number(isPgrr(a)) || (latencyAt(a, 0.99) ?? 0) - (latencyAt(b, 0.99) ?? 0))
  for (const curve of ordered) {
    const style = STYLE[curve.system]
    const textWidth = labelWidth(style.label, style.group === 'pgrr')
    const others = curves.filter((other) => other !== curve).flatMap((other) => segmentsOf.get(other) ?? [])
    const free = (box: Box) =>
      box.x1 >= panel.left + 2 && box.x2 <= panel.right && box.y1 >= panel.top + 2 && box.y2 <= panel.bottom - 2 &&
      !placed.some((other) => overlaps(other, box)) &&
      !others.some((segment) => segmentMeetsBox(segment, grown(box, CLEARANCE)))
    // The free candidate closest to its point (ties: the earlier fraction) wins.
    let found: { box: Box; leader: Segment | undefined; point: readonly [number, number]; cost: number } | undefined
    FRACTIONS.forEach((fraction, rank) => {
      const us = latencyAt(curve, fraction)
      if (us === undefined) return
      const pointX = x(us)
      const pointY = y(fraction)
      for (let rows = -6; rows <= 6; rows++) {
        for (const shift of [0, 20, 40, 60, 80]) {
          for (const side of [1, -1]) {
            const cost = Math.hypot(shift, rows * LABEL_HEIGHT) + rank * 3
            if (found !== undefined && cost >= found.cost) continue
            const textX = side === 1 ? pointX + 8 + shift : pointX - 8 - shift - textWidth
            const baseline = pointY + 4 + rows * LABEL_HEIGHT
            const box = { x1: textX - 2, y1: baseline - LABEL_HEIGHT + 3, x2: textX + textWidth + 2, y2: baseline + 3 }
            // The leader starts a few pixels out, so that it does not "cross" curves that meet at the point.
            const endX = side === 1 ? box.x1 : box.x2
            const endY = (box.y1 + box.y2) / 2
            const length = Math.hypot(endX - pointX, endY - pointY)
            const leader: Segment | undefined =
              rows === 0 && shift === 0 ? undefined : [pointX + ((endX - pointX) * 4) / length, pointY + ((endY - pointY) * 4) / length, endX, endY]
            if (!free(box)) continue
            // A leader line across other curves is a last resort: each one crossed costs as much as a long leader.
            const crossed = leader === undefined ? 0 : others.filter((segment) => segmentsCross(segment, leader)).length
            if (crossed <= MAX_CROSSINGS && cost + crossed * 60 < (found?.cost ?? Infinity)) found = { box, leader, point: [pointX, pointY], cost: cost + crossed * 60 }
          }
        }
      }
    })
    if (found === undefined) continue
    const { box, leader } = found
    placed.push(box)
    if (leader !== undefined) {
      const [x1, y1, x2, y2] = leader.map((value) => value.toFixed(1))
      parts.push(`<line x1="${x1}" y1="${y1}" x2="${x2}" y2="${y2}" stroke="${style.color}" stroke-width="0.9"/>`)
      parts.push(`<circle cx="${found.point[0].toFixed(1)}" cy="${found.point[1].toFixed(1)}" r="2.2" fill="${style.color}"/>`)
    }
    parts.push(
      `<text x="${(box.x1 + 2).toFixed(1)}" y="${(box.y2 - 3).toFixed(1)}" font-size="11" font-weight="${style.group === 'pgrr' ? 'bold' : 'normal'}" fill="${style.color}" stroke="white" stroke-width="3" paint-order="stroke">${escapeXml(style.label)}</text>`,
    )
  }
  return parts
}

/** About how wide a label is drawn (11 px sans-serif), for laying labels out without measuring text. */
function labelWidth(text: string, bold: boolean): number {
  const width = [...text].reduce((sum, char) => sum + (char === ' ' ? 3.5 : /[A-Z0-9]/.test(char) ? 7.6 : /[il1.]/.test(char) ? 3.2 : 6.4), 0)
  return bold ? width * 1.1 : width
}

function overlaps(a: Box, b: Box): boolean {
  return a.x1 < b.x2 && b.x1 < a.x2 && a.y1 < b.y2 && b.y1 < a.y2
}

function grown(box: Box, by: number): Box {
  return { x1: box.x1 - by, y1: box.y1 - by, x2: box.x2 + by, y2: box.y2 + by }
}

/** Whether a segment has a point inside the box: an end inside, or a crossing of one of its sides. */
function segmentMeetsBox(segment: Segment, box: Box): boolean {
  const [x1, y1, x2, y2] = segment
  const inside = (px: number, py: number) => px > box.x1 && px < box.x2 && py > box.y1 && py < box.y2
  if (inside(x1, y1) || inside(x2, y2)) return true
  if (Math.max(x1, x2) < box.x1 || Math.min(x1, x2) > box.x2 || Math.max(y1, y2) < box.y1 || Math.min(y1, y2) > box.y2) return false
  const sides: Segment[] = [
    [box.x1, box.y1, box.x2, box.y1],
    [box.x2, box.y1, box.x2, box.y2],
    [box.x2, box.y2, box.x1, box.y2],
    [box.x1, box.y2, box.x1, box.y1],
  ]
  return sides.some((side) => segmentsCross(segment, side))
}

/** Whether two segments intersect (touching counts). */
function segmentsCross(a: Segment, b: Segment): boolean {
  const orientation = (px: number, py: number, qx: number, qy: number, rx: number, ry: number) =>
    Math.sign((qx - px) * (ry - py) - (qy - py) * (rx - px))
  const [ax1, ay1, ax2, ay2] = a
  const [bx1, by1, bx2, by2] = b
  const d1 = orientation(bx1, by1, bx2, by2, ax1, ay1)
  const d2 = orientation(bx1, by1, bx2, by2, ax2, ay2)
  const d3 = orientation(ax1, ay1, ax2, ay2, bx1, by1)
  const d4 = orientation(ax1, ay1, ax2, ay2, bx2, by2)
  if (d1 !== d2 && d3 !== d4) return true
  // Collinear and overlapping.
  const within = (p: number, q: number, r: number) => r >= Math.min(p, q) && r <= Math.max(p, q)
  return (
    (d1 === 0 && within(bx1, bx2, ax1) && within(by1, by2, ay1)) ||
    (d2 === 0 && within(bx1, bx2, ax2) && within(by1, by2, ay2)) ||
    (d3 === 0 && within(ax1, ax2, bx1) && within(ay1, ay2, by1)) ||
    (d4 === 0 && within(ax1, ax2, bx2) && within(ay1, ay2, by2))
  )
}

/** A curve with its latencies to 4 significant digits, for the embedded JSON. */
function rounded(curve: LatencyCurve): LatencyCurve {
  return { ...curve, points: curve.points.map(([us, fraction]) => [Number(us.toPrecision(4)), Number(fraction.toPrecision(6))]) }
}

/** What a picture holds: its caption, panels and curves. */
export interface DrawnCurves {
  caption: string
  concurrencies: number[]
  curves: LatencyCurve[]
}

/**
 * The curves of a picture drawn by {@link renderLatencySvg}: the embedded JSON when there is one, else (a
 * picture from before it was embedded) the paths, mapped back through the axes read from the picture.
 */
export function curvesFromSvg(svg: string): DrawnCurves {
  const embedded = /<metadata id="pgrr-bench-curves">([^<]*)<\/metadata>/.exec(svg)
  if (embedded?.[1] !== undefined) {
    const json = embedded[1].replaceAll('&lt;', '<').replaceAll('&gt;', '>').replaceAll('&amp;', '&')
    return JSON.parse(json) as DrawnCurves
  }
  const caption = /<text [^>]*fill="#555">([^<]*)<\/text>/.exec(svg)?.[1]?.replaceAll('&amp;', '&') ?? ''
  const panels = [...svg.matchAll(/<rect x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" height="([\d.]+)" fill="none"/g)].map((match) => ({
    left: Number(match[1]),
    top: Number(match[2]),
    width: Number(match[3]),
    height: Number(match[4]),
  }))
  const titles = [...svg.matchAll(/>concurrency (\d+)<\/text>/g)].map((match) => Number(match[1]))
  const decades = [...svg.matchAll(/<text x="[\d.]+" y="[\d.]+" text-anchor="middle">([\d.]+) (µs|ms|s)<\/text>/g)].map((match) =>
    Math.round(Math.log10(Number(match[1]) * { µs: 1, ms: 1e3, s: 1e6 }[match[2] as 'µs' | 'ms' | 's'])),
  )
  if (panels.length === 0 || panels.length !== titles.length || decades.length < 2) {
    throw new Error('not a picture of bench/report-svg.ts: no panels, or no axis labels')
  }
  const minDecade = Math.min(...decades)
  const maxDecade = Math.max(...decades)
  const curves: LatencyCurve[] = []
  for (const match of svg.matchAll(/<path d="([^"]+)"[^>]*><title>([\w-]+) c=(\d+)<\/title>/g)) {
    const concurrency = Number(match[3])
    const panel = panels[titles.indexOf(concurrency)]
    if (panel === undefined) continue
    const points = [...match[1]!.matchAll(/[ML]([\d.]+) ([\d.]+)/g)].map(([, px, py]): [number, number] => {
      const us = 10 ** (minDecade + ((Number(px) - panel.left) / panel.width) * (maxDecade - minDecade))
      const nines = 1 - (Number(py) - panel.top) / panel.height
      return [us, 1 - 10 ** (-nines * CURVE_NINES)]
    })
    curves.push({ system: match[2] as SystemName, concurrency, points })
  }
  return { caption, concurrencies: titles, curves }
}

async function main(argv: string[]): Promise<void> {
  const fallback = fileURLToPath(new URL('../docs/benchmarks.svg', import.meta.url))
  const { values } = parseArgs({ args: argv, options: { in: { type: 'string' }, out: { type: 'string' } }, strict: true })
  const drawn = curvesFromSvg(await readFile(values.in ?? fallback, 'utf8'))
  await writeFile(values.out ?? values.in ?? fallback, renderLatencySvg(drawn.curves, drawn.concurrencies, drawn.caption))
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await main(process.argv.slice(2))
}
