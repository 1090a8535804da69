// The pictures of the curves in docs/benchmarks.md (fleet size, payload size, channels…): one line chart per
// curve, drawn from a JSON file of measured points, so that the figures of a table and its picture come from
// the same numbers:
//
//   node --import tsx bench/report-curves.ts IN.json OUT_DIR     (writes OUT_DIR/benchmarks-<id>.svg)
//
// IN.json is { "curves": [ { "id", "title", "caption"?, "x": axis, "y": axis, "series": [ { "name",
// "points": [[x, y], …] } ] } ] }, an axis being { "label", "log"?, "values"?, "labels"? }: `values` puts the
// ticks there (the measured sizes, say) and `labels` names them ("4 KB"). A series named after a system of
// bench/systems.ts gets the colour and dash of docs/benchmarks.svg. Hand-written SVG like that picture, on a
// white background of its own, so that it reads the same in GitHub's light and dark themes.
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { STYLE, escapeXml } from './report-svg.ts'

export interface CurveAxis {
  label: string
  /** Log scale (every value must then be above 0). @default false */
  log?: boolean
  /** Where the ticks go; by default decades (log) or round steps (linear). */
  values?: number[]
  /** Names of the ticks of `values`, in the same order. */
  labels?: string[]
}

export interface CurveSeries {
  name: string
  points: Array<[x: number, y: number]>
}

export interface Curve {
  /** Names the file, benchmarks-<id>.svg: lowercase letters, digits and dashes. */
  id: string
  title: string
  /** A line under the title: the date, the machine, the command. */
  caption?: string
  x: CurveAxis
  y: CurveAxis
  series: CurveSeries[]
}

const WIDTH = 720
const PLOT_HEIGHT = 320
const MARGIN = { left: 80, right: 30, bottom: 60 }
/** Colours for series that are not systems of the benchmark. */
const PALETTE = ['#d62728', '#1f77b4', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#17becf', '#7f7f7f']

interface Look {
  color: string
  width: number
  dash?: string
}

function lookOf(name: string, index: number): Look {
  const system = (STYLE as Record<string, Look | undefined>)[name]
  return system ?? { color: PALETTE[index % PALETTE.length]!, width: 2 }
}

/** A number as a tick shows it: 1500 → 1.5k, 2000000 → 2M, 0.25 → 0.25. */
export function shortNumber(value: number): string {
  const trim = (n: number) => String(Number(n.toPrecision(3)))
  if (Math.abs(value) >= 1e6) return `${trim(value / 1e6)}M`
  if (Math.abs(value) >= 1e3) return `${trim(value / 1e3)}k`
  return trim(value)
}

/** The ticks of an axis over [min, max]: its own values, else decades (log) or steps of 1, 2 or 5 × 10^k. */
function ticksOf(axis: CurveAxis, min: number, max: number): Array<[value: number, label: string]> {
  if (axis.values !== undefined) return axis.values.map((value, i) => [value, axis.labels?.[i] ?? shortNumber(value)])
  const ticks: number[] = []
  if (axis.log) {
    for (let decade = Math.floor(Math.log10(min)); decade <= Math.ceil(Math.log10(max)); decade++) {
      // With fewer than three decades in view, 2 and 5 of each decade get a tick too.
      for (const step of Math.log10(max / min) < 3 ? [1, 2, 5] : [1]) ticks.push(step * 10 ** decade)
    }
  } else {
    const rough = (max - min) / 6
    const magnitude = 10 ** Math.floor(Math.log10(rough))
    const step = [1, 2, 5, 10].map((k) => k * magnitude).find((candidate) => candidate >= rough) ?? rough
    for (let value = Math.ceil(min / step) * step; value <= max + step * 1e-9; value += step) ticks.push(Number(value.toPrecision(12)))
  }
  return ticks.filter((value) => value >= min * (1 - 1e-9) && value <= max * (1 + 1e-9)).map((value) => [value, shortNumber(value)])
}

/** The range an axis shows: the data and its ticks, with a little room on a log axis; linear axes start at 0. */
function rangeOf(axis: CurveAxis, data: number[]): [number, number] {
  const all = [...data, ...(axis.values ?? [])]
  if (axis.log) {
    if (all.some((value) => !(value > 0))) throw new Error(`the log axis "${axis.label}" has a value that is not above 0`)
    const min = Math.min(...all)
    const max = Math.max(...all)
    return [min / 1.25, max * 1.25]
  }
  const max = Math.max(...all)
  return [Math.min(0, ...all), max > 0 ? max * 1.08 : 1]
}

/** Legend rows: entries laid out left to right, wrapped at the plot's width. */
function legend(series: CurveSeries[], left: number, top: number, width: number): { parts: string[]; height: number } {
  const parts: string[] = []
  let x = left
  let y = top
  series.forEach((entry, index) => {
    const look = lookOf(entry.name, index)
    const entryWidth = 44 + entry.name.length * 7
    if (x > left && x + entryWidth > left + width) {
      x = left
      y += 18
    }
    parts.push(`<line x1="${x}" y1="${y - 4}" x2="${x + 28}" y2="${y - 4}" ${stroke(look)}/>`)
    parts.push(`<circle cx="${x + 14}" cy="${y - 4}" r="3" fill="${look.color}"/>`)
    parts.push(`<text x="${x + 34}" y="${y}">${escapeXml(entry.name)}</text>`)
    x += entryWidth
  })
  return { parts, height: y - top + 18 }
}

function stroke(look: Look): string {
  return `stroke="${look.color}" stroke-width="${look.width}"${look.dash ? ` stroke-dasharray="${look.dash}"` : ''}`
}

/** One curve as an SVG line chart: a title, a legend, both axes with their ticks and labels, a line per series. */
export function renderCurveSvg(curve: Curve): string {
  if (!/^[a-z0-9-]+$/.test(curve.id)) throw new Error(`curve id "${curve.id}": use lowercase letters, digits and dashes`)
  const points = curve.series.flatMap((entry) => entry.points)
  if (points.length === 0) throw new Error(`curve "${curve.id}" has no points`)
  const plotWidth = WIDTH - MARGIN.left - MARGIN.right
  const legendTop = curve.caption ? 66 : 48
  const key = legend(curve.series, MARGIN.left, legendTop, plotWidth)
  const top = legendTop + key.height + 8
  const height = top + PLOT_HEIGHT + MARGIN.bottom
  const [xMin, xMax] = rangeOf(curve.x, points.map(([x]) => x))
  const [yMin, yMax] = rangeOf(curve.y, points.map(([, y]) => y))
  const scale = (axis: CurveAxis, value: number, min: number, max: number) =>
    axis.log ? Math.log10(value / min) / Math.log10(max / min) : (value - min) / (max - min)
  const px = (x: number) => MARGIN.left + scale(curve.x, x, xMin, xMax) * plotWidth
  const py = (y: number) => top + (1 - scale(curve.y, y, yMin, yMax)) * PLOT_HEIGHT

  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" font-family="sans-serif" font-size="12">`,
    `<metadata id="pgrr-bench-curve">${escapeXml(JSON.stringify(curve))}</metadata>`,
    `<rect width="${WIDTH}" height="${height}" fill="white"/>`,
    `<text x="${MARGIN.left}" y="24" font-size="16" font-weight="bold">${escapeXml(curve.title)}</text>`,
    ...(curve.caption ? [`<text x="${MARGIN.left}" y="44" fill="#555">${escapeXml(curve.caption)}</text>`] : []),
    ...key.parts,
    `<rect x="${MARGIN.left}" y="${top}" width="${plotWidth}" height="${PLOT_HEIGHT}" fill="none" stroke="#bbb"/>`,
  ]
  for (const [value, label] of ticksOf(curve.x, xMin, xMax)) {
    const x = px(value).toFixed(1)
    parts.push(`<line x1="${x}" y1="${top}" x2="${x}" y2="${top + PLOT_HEIGHT}" stroke="#eee"/>`)
    parts.push(`<text x="${x}" y="${top + PLOT_HEIGHT + 16}" text-anchor="middle">${escapeXml(label)}</text>`)
  }
  for (const [value, label] of ticksOf(curve.y, yMin, yMax)) {
    const y = py(value).toFixed(1)
    parts.push(`<line x1="${MARGIN.left}" y1="${y}" x2="${MARGIN.left + plotWidth}" y2="${y}" stroke="#eee"/>`)
    parts.push(`<text x="${MARGIN.left - 6}" y="${(py(value) + 4).toFixed(1)}" text-anchor="end">${escapeXml(label)}</text>`)
  }
  const scaleNote = (axis: CurveAxis) => (axis.log ? ' (log scale)' : '')
  const yLabelX = 22
  const yLabelY = top + PLOT_HEIGHT / 2
  parts.push(`<text x="${MARGIN.left + plotWidth / 2}" y="${top + PLOT_HEIGHT + 40}" text-anchor="middle" fill="#555">${escapeXml(curve.x.label + scaleNote(curve.x))}</text>`)
  parts.push(`<text x="${yLabelX}" y="${yLabelY}" text-anchor="middle" fill="#555" transform="rotate(-90 ${yLabelX} ${yLabelY})">${escapeXml(curve.y.label + scaleNote(curve.y))}</text>`)

  curve.series.forEach((entry, index) => {
    const look = lookOf(entry.name, index)
    const sorted = [...entry.points].sort(([a], [b]) => a - b)
    const path = sorted.map(([x, y], i) => `${i === 0 ? 'M' : 'L'}${px(x).toFixed(1)} ${py(y).toFixed(1)}`).join(' ')
    parts.push(`<path d="${path}" fill="none" ${stroke(look)} stroke-linejoin="round"><title>${escapeXml(entry.name)}</title></path>`)
    for (const [x, y] of sorted) {
      parts.push(`<circle cx="${px(x).toFixed(1)}" cy="${py(y).toFixed(1)}" r="3" fill="${look.color}"><title>${escapeXml(`${entry.name}: ${x}, ${y}`)}</title></circle>`)
    }
  })
  parts.push('</svg>')
  return parts.join('\n') + '\n'
}

async function main(argv: string[]): Promise<void> {
  const [input, outDir] = argv
  if (input === undefined || outDir === undefined) throw new Error('usage: node --import tsx bench/report-curves.ts IN.json OUT_DIR')
  const { curves } = JSON.parse(await readFile(input, 'utf8')) as { curves: Curve[] }
  await mkdir(outDir, { recursive: true })
  for (const curve of curves) {
    const path = join(outDir, `benchmarks-${curve.id}.svg`)
    await writeFile(path, renderCurveSvg(curve))
    process.stdout.write(`${path}\n`)
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await main(process.argv.slice(2))
}
