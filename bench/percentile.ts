// Exact percentiles from the full sorted sample: at our counts (at most tens of thousands per scenario)
// sorting is cheaper than getting an HDR histogram's bucket maths right.

/** Latency summary of one measured phase, in microseconds. */
export interface LatencySummary {
  p50Us: number
  p90Us: number
  p99Us: number
  p999Us: number
  maxUs: number
  meanUs: number
}

/** Nearest-rank percentile of an ascending sample; `p` in 0..100. NaN for an empty sample. */
export function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return Number.NaN
  const rank = Math.ceil((p / 100) * sorted.length)
  const index = Math.min(sorted.length - 1, Math.max(0, rank - 1))
  return sorted[index] as number
}

/** Median (nearest rank: the lower middle value of an even count) of an unsorted sample; NaN when empty. */
export function median(values: ArrayLike<number>): number {
  return percentile(sortLatencies(values), 50)
}

export function sortLatencies(latenciesUs: ArrayLike<number>): Float64Array {
  // Float64Array sorts numerically, unlike Array.prototype.sort's default string order.
  return Float64Array.from(latenciesUs).sort()
}

export function summarize(sorted: Float64Array): LatencySummary {
  let total = 0
  for (const value of sorted) total += value
  return {
    p50Us: percentile(sorted, 50),
    p90Us: percentile(sorted, 90),
    p99Us: percentile(sorted, 99),
    p999Us: percentile(sorted, 99.9),
    maxUs: sorted.length === 0 ? Number.NaN : (sorted[sorted.length - 1] as number),
    meanUs: sorted.length === 0 ? Number.NaN : total / sorted.length,
  }
}

/** Deepest percentile the curves resolve: 99.9 %, i.e. three "nines". */
export const CURVE_NINES = 3

/**
 * Latency at cumulative fractions spaced evenly in "nines" (0, 90 %, 99 %, 99.9 %: the fraction 1 − 10^−y for y
 * evenly spaced from 0 to {@link CURVE_NINES}), so that the tail gets as many points as the body: the shape of
 * an HDR percentile plot, without shipping every sample around.
 */
export function cdfCurve(sorted: Float64Array, points = 150): Array<[latencyUs: number, fraction: number]> {
  if (sorted.length === 0) return []
  const curve: Array<[number, number]> = []
  for (let i = 0; i <= points; i++) {
    const fraction = 1 - 10 ** (-(i / points) * CURVE_NINES)
    curve.push([percentile(sorted, fraction * 100), fraction])
  }
  return curve
}
