/**
 * `pgrr bench`: runs the benchmark of bench/run.ts, which lives in the repository, not in the published
 * package. Loaded on demand so the CLI never depends on it at start-up.
 */
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { writeOut, type Command } from './command.ts'
import { CliError, exitCodes } from './exit-codes.ts'
import { importFile } from './import-file.ts'

// The same relative path from src/cli/ (tsx) and from dist/cli/ (built).
const benchEntry = new URL('../../bench/run.ts', import.meta.url)

const help = `Usage: pgrr bench [options]

Benchmarks pgrr against the PostgreSQL floors, the proof of concept and message brokers. The options are
those of bench/run.ts (passed through unchanged); the benchmark ships with the repository only, not with
the installed package.`

/** What pgrr bench needs from bench/run.ts: its command line, which parses argv and owns signals. */
interface BenchModule {
  main(argv: string[], command?: string): Promise<number>
}

export const benchCommand: Command = {
  name: 'bench',
  summary: 'run the benchmark (from a clone of the repository)',
  help,
  async run(argv) {
    const wantsHelp = argv.includes('--help') || argv.includes('-h')
    if (!existsSync(fileURLToPath(benchEntry))) {
      if (wantsHelp) {
        await writeOut(`${help}\n`)
        return exitCodes.ok
      }
      throw new CliError(
        'the benchmark is not part of the installed package: run it from a clone of the repository (npm run bench)',
        exitCodes.error,
      )
    }
    if (wantsHelp) await writeOut(`${help}\n\n`)
    const bench = (await importFile(benchEntry)) as Partial<BenchModule>
    if (typeof bench.main !== 'function') throw new CliError('bench/run.ts does not export main(argv)', exitCodes.error)
    return bench.main(argv, ['pgrr bench', ...argv].join(' '))
  },
}
