/** The shape of a `pgrr` subcommand: one module per command exports one of these. */
export interface Command {
  readonly name: string
  /** One line for `pgrr --help`. */
  readonly summary: string
  /** What `pgrr <name> --help` prints. */
  readonly help: string
  /** Runs the command with the arguments after its name; resolves with the exit code. */
  run(argv: string[]): Promise<number>
}

/** Writes to stdout and resolves once the text is handed to the OS (a later exit() loses nothing). */
export function writeOut(text: string): Promise<void> {
  return new Promise((resolve) => process.stdout.write(text, () => resolve()))
}
