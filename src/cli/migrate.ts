/** `pgrr migrate`: installs or upgrades the protocol in a schema. */
import { migrate } from '../migrate.ts'
import { commonOptions, commonOptionsHelp, connectionFrom, databaseOptions, databaseOptionsHelp, parseCommandArgs } from './arguments.ts'
import { writeOut, type Command } from './command.ts'
import { exitCodes } from './exit-codes.ts'

const help = `Usage: pgrr migrate [options]

Installs the request-reply protocol (tables and SQL functions) in the schema, or upgrades it. Safe to run
any number of times, also from several processes at once.

Options:
${databaseOptionsHelp}
  --json                 print the result as JSON
${commonOptionsHelp}`

const options = { ...commonOptions, ...databaseOptions, json: { type: 'boolean' } } as const

export const migrateCommand: Command = {
  name: 'migrate',
  summary: 'install or upgrade the protocol in a schema',
  help,
  async run(argv) {
    const { values } = parseCommandArgs('migrate', argv, options, false)
    if (values.help) {
      await writeOut(`${help}\n`)
      return exitCodes.ok
    }
    const connection = connectionFrom(values, process.env, 'pgrr migrate')
    const result = await migrate(connection)
    if (values.json) {
      await writeOut(`${JSON.stringify(result)}\n`)
    } else if (result.applied.length === 0) {
      await writeOut(`schema ${JSON.stringify(result.schema)} is up to date (version ${result.toVersion})\n`)
    } else {
      await writeOut(
        `migrated schema ${JSON.stringify(result.schema)} from version ${result.fromVersion} to ${result.toVersion}` +
          ` (applied ${result.applied.join(', ')})\n`,
      )
    }
    return exitCodes.ok
  },
}
