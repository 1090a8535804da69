// Every connection the benchmark opens carries an application_name starting with "pgrr-bench", so the
// orchestrator can find (and, at the end, terminate) exactly its own backends and nobody else's.

export const APPLICATION_NAME_PREFIX = 'pgrr-bench'

/** The database URL with `application_name=pgrr-bench-<role>` added, unless the URL already names one. */
export function withApplicationName(databaseUrl: string, role: string): string {
  return withApplicationNameExactly(databaseUrl, `${APPLICATION_NAME_PREFIX}-${role}`)
}

/**
 * The database URL with `application_name=<name>` added, unless the URL already names one: for connections
 * that must not be taken for a run's own (each run's cleanup terminates the `pgrr-bench-…` ones).
 */
export function withApplicationNameExactly(databaseUrl: string, name: string): string {
  const url = new URL(databaseUrl)
  if (!url.searchParams.has('application_name')) url.searchParams.set('application_name', name)
  return url.toString()
}

/** Double-quotes an identifier for SQL text (the one thing we ever substitute: a schema name). */
export function quoteIdentifier(name: string): string {
  return `"${name.replaceAll('"', '""')}"`
}
