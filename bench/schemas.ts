// The database objects a run creates, and their removal: pgrr migrated into its own schema, the proof of
// concept installed into another, each Postgres peer's library in a schema of its own, all dropped at the end
// whatever happened. Also ends any backend the
// benchmark's children left behind (a killed caller's await_reply may still be sleeping in its backend).
import type { Sql } from 'postgres'
import { APPLICATION_NAME_PREFIX, quoteIdentifier, withApplicationName } from './database-url.ts'
import { installPoc, dropPoc } from './peers/poc/install.ts'
import type { PgrrCore } from './peers/pgrr-core.ts'

export class BenchSchemas {
  private pgrrMigrated = false
  private pocInstalled = false
  private readonly peerSchemas = new Set<string>()

  constructor(
    private readonly sql: Sql,
    private readonly databaseUrl: string,
    readonly pgrrSchema: string,
    readonly pocSchema: string,
  ) {}

  async preparePgrr(core: PgrrCore): Promise<void> {
    if (this.pgrrMigrated) return
    // Start from nothing: a schema left by an older core could be at another version.
    await this.sql.unsafe(`drop schema if exists ${quoteIdentifier(this.pgrrSchema)} cascade`)
    this.pgrrMigrated = true
    await core.migrate({ connectionString: withApplicationName(this.databaseUrl, 'migrate'), schema: this.pgrrSchema })
  }

  async preparePoc(): Promise<void> {
    if (this.pocInstalled) return
    this.pocInstalled = true
    await installPoc(this.sql, this.pocSchema)
  }

  async dropPoc(): Promise<void> {
    if (!this.pocInstalled) return
    await this.terminateLeftoverBackends()
    await dropPoc(this.sql, this.pocSchema)
    this.pocInstalled = false
  }

  /**
   * Readies a peer's schema for its library to create: drops whatever an interrupted run left there, and
   * remembers to drop it again at the end.
   */
  async preparePeerSchema(schema: string): Promise<void> {
    this.peerSchemas.add(schema)
    await this.sql.unsafe(`drop schema if exists ${quoteIdentifier(schema)} cascade`)
  }

  /** Drops a peer's schema once its processes are gone. */
  async dropPeerSchema(schema: string): Promise<void> {
    if (!this.peerSchemas.has(schema)) return
    await this.terminateLeftoverBackends()
    await this.sql.unsafe(`drop schema if exists ${quoteIdentifier(schema)} cascade`)
    this.peerSchemas.delete(schema)
  }

  /** Drops everything this run created. Never throws: it runs in `finally`, after the interesting error. */
  async dropAll(): Promise<string[]> {
    const problems: string[] = []
    await this.terminateLeftoverBackends().catch((error: unknown) => problems.push(String(error)))
    if (this.pocInstalled) await this.dropPoc().catch((error: unknown) => problems.push(`dropping ${this.pocSchema}: ${String(error)}`))
    for (const schema of this.peerSchemas) {
      await this.dropPeerSchema(schema).catch((error: unknown) => problems.push(`dropping ${schema}: ${String(error)}`))
    }
    if (this.pgrrMigrated) {
      await this.sql
        .unsafe(`drop schema if exists ${quoteIdentifier(this.pgrrSchema)} cascade`)
        .then(() => (this.pgrrMigrated = false))
        .catch((error: unknown) => problems.push(`dropping ${this.pgrrSchema}: ${String(error)}`))
    }
    return problems
  }

  private async terminateLeftoverBackends(): Promise<void> {
    await this.sql`
      select pg_terminate_backend(pid) from pg_stat_activity
      where application_name like ${`${APPLICATION_NAME_PREFIX}-%`} and pid <> pg_backend_pid()
        and datname = current_database()`
  }
}
