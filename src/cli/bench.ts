/**
 * `pgrr bench`: runs the benchmark of bench/run.ts, which lives in the repository, not in the published
 * package. Loaded on demand so the CLI never depends on it at start-up.
 */
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { writeOut, type Command } from './command.ts'
import { CliError, exitCodes, UsageError } from './exit-codes.ts'
import { importFile } from './import-file.ts'

// The same relative path from src/cli/ (tsx) and from dist/cli/ (built).
const benchEntry = new URL('../../bench/run.ts', import.meta.url)

const help = `Usage: pgrr bench [options]

Benchmarks pgrr against the PostgreSQL floors, the proof of concept and message brokers. The options are
those of bench/run.ts (passed through unchanged), and those of every command: --verbose prints stack traces
of errors; --schema is accepted and ignored, as the benchmark works in schemas of its own (pgrr_bench,
pgrr_bench_poc, pgrr_bench_fn, pgrr_bench_long), which it creates and drops. The benchmark ships with the
repository only, not with the installed package.`

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
    const { benchArgs, schema } = withoutCommonOptions(argv)
    if (schema !== undefined) process.stderr.write(`pgrr bench: --schema ${schema} is ignored: the benchmark uses schemas of its own\n`)
    return bench.main(benchArgs, ['pgrr bench', ...argv].join(' '))
  },
}

/** The arguments for bench/run.ts: without --verbose (main.ts reads it) and --schema (ignored). */
function withoutCommonOptions(argv: string[]): { benchArgs: string[]; schema: string | undefined } {
  const benchArgs: string[] = []
  let schema: string | undefined
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!
    if (arg === '--') {
      benchArgs.push(...argv.slice(i))
      break
    }
    if (arg === '--verbose') continue
    if (arg.startsWith('--schema=')) {
      schema = arg.slice('--schema='.length)
    } else if (arg === '--schema') {
      if (i + 1 >= argv.length) throw new UsageError('bench: option \'--schema <value>\' argument missing')
      schema = argv[++i]
    } else {
      benchArgs.push(arg)
    }
  }
  return { benchArgs, schema }
}
