// Loads this project's core (src/index.ts) at run time, against the API contract below rather than its
// compiled types: the benchmark must build, lint and run (reporting "core not built yet") while the core is
// still being written, and keep working unchanged once it lands.
import { access } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'

export interface PgrrConnectionOptions {
  connectionString: string
  schema: string
  /** Lets the orchestrator find the bench's backends (server CPU, cleanup); the URL carries it too. */
  applicationName?: string
}

export interface PgrrClient {
  request(service: string, payload: unknown, options?: { timeoutMs?: number }): Promise<unknown>
  /** A responder sharing this client's LISTEN session. */
  serve(service: string, handler: (payload: unknown, context: unknown) => Promise<unknown>, serveOptions: { concurrency: number }): Promise<PgrrServer>
  close(): Promise<void>
}

export interface PgrrServer {
  close(): Promise<void>
}

export interface PgrrCore {
  migrate(options: PgrrConnectionOptions): Promise<unknown>
  connect(options: PgrrConnectionOptions): Promise<PgrrClient>
  serve(
    options: PgrrConnectionOptions,
    service: string,
    handler: (payload: unknown, context: unknown) => Promise<unknown>,
    serveOptions: { concurrency: number },
  ): Promise<PgrrServer>
}

export const CORE_NOT_BUILT = 'core not built yet'

const CORE_URL = new URL('../../src/index.ts', import.meta.url)

/** The core, or the reason it cannot be used (a missing file or missing exports: {@link CORE_NOT_BUILT}). */
export async function loadPgrrCore(): Promise<{ core: PgrrCore } | { unavailable: string }> {
  try {
    await access(fileURLToPath(CORE_URL))
  } catch {
    return { unavailable: CORE_NOT_BUILT }
  }
  let module: Partial<Record<keyof PgrrCore, unknown>>
  try {
    module = (await import(CORE_URL.href)) as Partial<Record<keyof PgrrCore, unknown>>
  } catch (error) {
    return { unavailable: `core failed to load: ${error instanceof Error ? error.message : String(error)}` }
  }
  if (typeof module.connect !== 'function' || typeof module.serve !== 'function' || typeof module.migrate !== 'function') {
    return { unavailable: CORE_NOT_BUILT }
  }
  return { core: module as unknown as PgrrCore }
}

/** For the child processes, where the orchestrator has already checked that the core is there. */
export async function requirePgrrCore(): Promise<PgrrCore> {
  const loaded = await loadPgrrCore()
  if ('unavailable' in loaded) throw new Error(loaded.unavailable)
  return loaded.core
}
