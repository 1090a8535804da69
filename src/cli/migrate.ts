/** `pgrr migrate`: installs or upgrades the protocol in a schema, and grants it to roles. */
import { migrate, type MigrateRoles } from '../migrate.ts'
import { commonOptions, commonOptionsHelp, connectionFrom, databaseOptions, databaseOptionsHelp, parseCommandArgs } from './arguments.ts'
import { writeOut, type Command } from './command.ts'
import { exitCodes, UsageError } from './exit-codes.ts'

const help = `Usage: pgrr migrate [options]

Installs the request-reply protocol (tables and SQL functions) in the schema, or upgrades it: the table
migrations not yet applied, then the protocol's functions as a unit when the installed protocol differs,
in one transaction. Safe to run any number of times, also from several processes at once. Nothing is
created outside the schema. Refuses a schema migrated by a newer version. After an upgrade, restart the
processes of the previous version: their calls fail from then on (SQL callers are not affected).

The tables and functions belong to the login that runs this; no other role may use them until granted.
--caller-role and --responder-role create those roles (NOLOGIN) when missing and grant them what callers
and responders need; then make logins members: GRANT <role> TO <login>. Callers cannot read the tables
and read only their own replies; responders serve only the channels granted to them (--responder-channel,
or later with grantChannel()). See docs/security.md.

Options:
  --caller-role <role>        role whose members may make requests (request, await_reply, clients)
  --responder-role <role>     role whose members may serve granted channels
  --responder-channel <name>  a channel the responder role may serve; repeatable
${databaseOptionsHelp}
  --dry-run                   print the SQL it would run (one transaction) and change nothing
  --json                      print the result as JSON
${commonOptionsHelp}`

const options = {
  ...commonOptions,
  ...databaseOptions,
  json: { type: 'boolean' },
  'dry-run': { type: 'boolean' },
  'caller-role': { type: 'string' },
  'responder-role': { type: 'string' },
  'responder-channel': { type: 'string', multiple: true },
} as const

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
    const channels = values['responder-channel'] ?? []
    if (channels.length > 0 && values['responder-role'] === undefined) {
      throw new UsageError('migrate: --responder-channel needs --responder-role (the channels are granted to that role)')
    }
    let roles: MigrateRoles | undefined
    if (values['caller-role'] !== undefined || values['responder-role'] !== undefined) {
      roles = { caller: values['caller-role'], responder: values['responder-role'], channels }
    }
    const result = await migrate({ ...connection, roles, dryRun: values['dry-run'] === true })
    if (values['dry-run'] === true && !values.json) {
      await writeOut(result.sql ?? '')
      return exitCodes.ok
    }
    if (values.json) {
      await writeOut(`${JSON.stringify(result)}\n`)
      return exitCodes.ok
    }
    const lines: string[] = []
    if (result.applied.length === 0 && !result.protocol.installed) {
      lines.push(`schema ${JSON.stringify(result.schema)} is up to date (version ${result.toVersion}, protocol ${result.protocol.toVersion})`)
    } else {
      if (result.applied.length > 0) {
        lines.push(
          `migrated schema ${JSON.stringify(result.schema)} from version ${result.fromVersion} to ${result.toVersion}` +
            ` (applied ${result.applied.join(', ')})`,
        )
      }
      if (result.protocol.installed) {
        const from = result.protocol.fromVersion === null ? '' : ` (was ${result.protocol.fromVersion})`
        lines.push(`installed protocol ${result.protocol.toVersion}${from}`)
      }
    }
    for (const role of result.roles?.created ?? []) lines.push(`created role ${JSON.stringify(role)} (NOLOGIN)`)
    if (result.roles?.caller !== undefined) lines.push(`granted the caller functions to ${JSON.stringify(result.roles.caller)}`)
    if (result.roles?.responder !== undefined) {
      const granted = result.roles.channels.map((channel) => JSON.stringify(channel)).join(', ')
      lines.push(
        `granted the responder functions to ${JSON.stringify(result.roles.responder)}` +
          (granted === '' ? ' (no channel granted yet)' : `, channels ${granted}`),
      )
    }
    await writeOut(`${lines.join('\n')}\n`)
    return exitCodes.ok
  },
}
