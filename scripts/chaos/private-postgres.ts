/**
 * A private PostgreSQL server that the chaos run and the failure tests may stop, crash and restart without
 * touching a shared one. It is created by `startEmbeddedPostgres()` (src/embedded-postgres.ts), which has no restart: to stop the
 * server this sends the postmaster a signal (its pid is in `postmaster.pid`), and to start it again it runs the
 * exact command line PostgreSQL recorded in `postmaster.opts` (same binary, data directory, port and settings),
 * as the owner of the data directory, through the same kind of wrapper as embedded-postgres.ts: a shell that
 * holds a pipe to this process and stops the server when that pipe closes, so a server started here never
 * outlives the test process either.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { readFileSync, statSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import net from 'node:net'
import path from 'node:path'
import postgres from 'postgres'
import { startEmbeddedPostgres, type EmbeddedPostgres } from '../../src/embedded-postgres.ts'

/**
 * How to stop the server:
 *   fast       SIGINT: clients are disconnected, a checkpoint is written; unlogged tables survive
 *   immediate  SIGQUIT (`pg_ctl stop -m immediate`): no checkpoint; the next start runs crash recovery
 *   kill       SIGKILL of the postmaster: a crash; its backends exit when they notice, then crash recovery
 */
export type StopMode = 'fast' | 'immediate' | 'kill'

const signals: Record<StopMode, NodeJS.Signals> = { fast: 'SIGINT', immediate: 'SIGQUIT', kill: 'SIGKILL' }

// As in embedded-postgres.ts: postgres runs in the background with its output in the log ($1); the watcher
// blocks on our pipe (fd 3) and sends SIGINT when it closes, i.e. when this process exits, even by SIGKILL.
const wrapperScript = `
log=$1; shift
exec 3<&0 </dev/null
"$@" 3<&- >>"$log" 2>&1 &
pg=$!
( read -r _ <&3; kill -INT "$pg" 2>/dev/null ) &
watcher=$!
exec 3<&-
wait "$pg"
code=$?
kill "$watcher" 2>/dev/null
exit "$code"
`

export class PrivatePostgres {
  readonly #embedded: EmbeddedPostgres
  #wrapper: ChildProcess | undefined
  #running = true

  private constructor(embedded: EmbeddedPostgres) {
    this.#embedded = embedded
  }

  static async start(): Promise<PrivatePostgres> {
    return new PrivatePostgres(await startEmbeddedPostgres())
  }

  get connectionString(): string {
    return this.#embedded.connectionString
  }

  get port(): number {
    return this.#embedded.port
  }

  get dataDir(): string {
    return this.#embedded.dataDir
  }

  /**
   * Stops the server (see {@link StopMode}); resolves once the postmaster is gone. (After `kill` its backends
   * may linger a moment: {@link startServer} retries until they are gone.)
   */
  async stopServer(mode: StopMode): Promise<void> {
    if (!this.#running) return
    const pid = await this.#postmasterPid()
    process.kill(pid, signals[mode])
    this.#running = false
    // Not our child (the wrapper's), so no exit event: poll, bounded.
    await waitUntil(async () => !(await alive(pid)), 20_000, `postgres ${pid} to exit`)
    this.#wrapper = undefined
  }

  /**
   * Starts the server again on the same data directory and port; resolves once it accepts connections. Retries
   * while the backends of a killed postmaster still hold its shared memory (postgres refuses to start then).
   */
  async startServer(): Promise<void> {
    if (this.#running) return
    for (let attempt = 1; ; attempt++) {
      const exited = this.#spawn()
      const outcome = await Promise.race([this.waitAccepting().then(() => 'up' as const), exited.then(() => 'exited' as const)])
      if (outcome === 'up' && this.#wrapper?.exitCode === null) break
      if (attempt >= 50) throw new Error(`postgres did not start again; see ${path.dirname(this.dataDir)}/postgres.log`)
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
    this.#running = true
  }

  /** Starts postgres through the wrapper; resolves when it exits. */
  #spawn(): Promise<void> {
    const opts = readFileSync(path.join(this.dataDir, 'postmaster.opts'), 'utf8').trim()
    const words = [...opts.matchAll(/"([^"]*)"|(\S+)/g)].map((m) => m[1] ?? m[2] ?? '')
    const owner = statSync(this.dataDir)
    const log = path.join(path.dirname(this.dataDir), 'postgres.log')
    const wrapper = spawn('/bin/sh', ['-c', wrapperScript, 'pgrr-failure-postgres', log, ...words], {
      cwd: path.dirname(this.dataDir),
      env: { PATH: process.env.PATH, LC_ALL: 'C' },
      detached: true,
      stdio: ['pipe', 'ignore', 'ignore'],
      uid: owner.uid,
      gid: owner.gid,
    })
    wrapper.stdin?.on('error', () => {})
    wrapper.unref()
    ;(wrapper.stdin as unknown as net.Socket | null)?.unref?.()
    this.#wrapper = wrapper
    return new Promise((resolve) => {
      wrapper.once('exit', () => resolve())
      wrapper.once('error', () => resolve())
    })
  }

  /** Resolves once a connection succeeds (polls: the server announces readiness to no one). */
  async waitAccepting(timeoutMs = 30_000): Promise<void> {
    const wrapper = this.#wrapper
    await waitUntil(async () => {
      if (wrapper !== undefined && wrapper.exitCode !== null) return true // the caller sees the exit
      const sql = postgres(this.connectionString, { max: 1, connect_timeout: 2, onnotice: () => {} })
      try {
        await sql`select 1`
        return true
      } catch {
        return false
      } finally {
        await sql.end({ timeout: 0 })
      }
    }, timeoutMs, `postgres on port ${this.port} to accept connections`)
  }

  /** Stops the server (fast) and deletes its data. */
  async stop(): Promise<void> {
    if (this.#wrapper !== undefined) await this.stopServer('fast')
    await this.#embedded.stop()
  }

  async #postmasterPid(): Promise<number> {
    const text = await readFile(path.join(this.dataDir, 'postmaster.pid'), 'utf8')
    const pid = Number.parseInt(text.split('\n')[0] ?? '', 10)
    if (!Number.isInteger(pid) || pid <= 0) throw new Error(`no postmaster pid in ${this.dataDir}/postmaster.pid`)
    return pid
  }
}

async function alive(pid: number): Promise<boolean> {
  try {
    process.kill(pid, 0)
  } catch {
    return false
  }
  // A zombie (exited, not yet reaped by its parent) no longer holds anything.
  const text = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '')
  return text !== '' && text.slice(text.lastIndexOf(')') + 2, text.lastIndexOf(')') + 3) !== 'Z'
}

async function waitUntil(predicate: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}
