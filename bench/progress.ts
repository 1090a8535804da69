// The progress line on stderr (stdout is reserved for the table or the JSON). On a terminal it rewrites one
// line; otherwise (CI logs, redirected output) it prints a line at most every few seconds.

const NON_TTY_INTERVAL_MS = 3000

export class ProgressLine {
  private readonly tty = Boolean(process.stderr.isTTY)
  private lastPrintedAt = 0
  private lastLength = 0

  update(text: string): void {
    if (this.tty) {
      const padding = ' '.repeat(Math.max(0, this.lastLength - text.length))
      process.stderr.write(`\r${text}${padding}`)
      this.lastLength = text.length
      return
    }
    const now = Date.now()
    if (now - this.lastPrintedAt < NON_TTY_INTERVAL_MS) return
    this.lastPrintedAt = now
    process.stderr.write(`${text}\n`)
  }

  /** A line that must be seen (a scenario finished, a system skipped): always printed. */
  log(text: string): void {
    if (this.tty && this.lastLength > 0) {
      process.stderr.write(`\r${' '.repeat(this.lastLength)}\r`)
      this.lastLength = 0
    }
    process.stderr.write(`${text}\n`)
    this.lastPrintedAt = Date.now()
  }
}
