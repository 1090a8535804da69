// Orchestrator side of one child process (a caller or a responder): spawning, typed request/response over
// IPC with timeouts, and killing. Every child ever spawned is tracked so that nothing outlives the run.
import { spawn, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'

const STDERR_TAIL_CHARS = 2000
const liveChildren = new Set<ChildProcess>()

/** Kills every child still running; safe to call from a process 'exit' handler (synchronous). */
export function killAllChildren(): void {
  for (const child of liveChildren) child.kill('SIGKILL')
  liveChildren.clear()
}

export class ChildTimeoutError extends Error {}

/**
 * One line out of a dead child's stderr for the report: the last line naming an error (Node prints the
 * source excerpt first and the stack after it), else the last line.
 */
export function summarizeStderr(stderr: string): string {
  const lines = stderr.split('\n').map((line) => line.trim()).filter(Boolean)
  const errorLine = lines.findLast((line) => /^(\w+)?Error\b|^\w+Error:|Error:/.test(line) && !line.startsWith('at '))
  return (errorLine ?? lines.at(-1) ?? '').slice(0, 300)
}

interface Waiter<M> {
  resolve: (message: M) => void
  reject: (error: Error) => void
}

export class BenchChild<ToChild extends { type: string }, FromChild extends { type: string }> {
  readonly label: string
  private readonly process: ChildProcess
  private readonly queued: FromChild[] = []
  private waiter: Waiter<FromChild> | null = null
  private exitReason: string | null = null
  private readonly exited: Promise<void>
  private stderrTail = ''

  /**
   * `onProgress` receives 'progress' messages, which are never queued for `next()`. A child that is not
   * `runScoped` outlives the end of a matrix run (killAllChildren): its owner stops it (the fleet's idle
   * processes, which span several runs); it still exits when this process goes.
   */
  constructor(label: string, script: string, args: string[], onProgress: (message: FromChild) => void, { runScoped = true } = {}) {
    this.label = label
    const repoRoot = fileURLToPath(new URL('..', import.meta.url))
    this.process = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(new URL(script, import.meta.url)), ...args], {
      cwd: repoRoot,
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    })
    if (runScoped) liveChildren.add(this.process)
    // A send racing the child's exit fails with EPIPE, reported here rather than thrown.
    this.process.on('error', () => {})
    this.process.stderr?.setEncoding('utf8')
    this.process.stderr?.on('data', (chunk: string) => {
      this.stderrTail = (this.stderrTail + chunk).slice(-STDERR_TAIL_CHARS)
    })
    this.process.on('message', (message: FromChild) => {
      if (message.type === 'progress') return onProgress(message)
      const waiter = this.waiter
      if (waiter) {
        this.waiter = null
        waiter.resolve(message)
      } else {
        this.queued.push(message)
      }
    })
    this.exited = new Promise((resolve) => {
      this.process.on('exit', (code, signal) => {
        liveChildren.delete(this.process)
        const summary = summarizeStderr(this.stderrTail)
        this.exitReason = `${label} exited (${signal ?? `code ${code}`})${summary ? `: ${summary}` : ''}`
        this.waiter?.reject(new Error(this.exitReason))
        this.waiter = null
        resolve()
      })
    })
  }

  get alive(): boolean {
    return this.exitReason === null
  }

  send(message: ToChild): void {
    if (this.alive && this.process.connected) this.process.send(message)
  }

  /**
   * The next message, which must be of type `type`. A 'failed' message, an exit, a timeout or an abort
   * rejects instead.
   */
  async expect<T extends FromChild['type']>(type: T, timeoutMs: number, signal?: AbortSignal): Promise<Extract<FromChild, { type: T }>> {
    const message = await this.next(timeoutMs, signal, type)
    if (message.type === type) return message as Extract<FromChild, { type: T }>
    if (message.type === 'failed' && 'message' in message) throw new Error(`${this.label}: ${String(message.message)}`)
    throw new Error(`${this.label}: expected "${type}", got "${message.type}"`)
  }

  /** Asks the child to stop, and kills it if it has not exited within `graceMs`. */
  async stop(stopMessage: ToChild, graceMs: number): Promise<void> {
    if (!this.alive) return
    this.send(stopMessage)
    const timer = setTimeout(() => this.kill(), graceMs)
    await this.exited
    clearTimeout(timer)
  }

  kill(): void {
    if (this.alive) this.process.kill('SIGKILL')
  }

  async killAndWait(): Promise<void> {
    this.kill()
    await this.exited
  }

  private next(timeoutMs: number, signal: AbortSignal | undefined, expected: string): Promise<FromChild> {
    const message = this.queued.shift()
    if (message) return Promise.resolve(message)
    if (this.exitReason) return Promise.reject(new Error(this.exitReason))
    if (signal?.aborted) return Promise.reject(new Error('aborted'))
    return new Promise((resolve, reject) => {
      const finish = (): void => {
        clearTimeout(timer)
        signal?.removeEventListener('abort', onAbort)
      }
      const onAbort = (): void => {
        finish()
        this.waiter = null
        reject(new Error('aborted'))
      }
      const timer = setTimeout(() => {
        finish()
        this.waiter = null
        reject(new ChildTimeoutError(`${this.label}: no "${expected}" within ${timeoutMs} ms`))
      }, timeoutMs)
      signal?.addEventListener('abort', onAbort, { once: true })
      this.waiter = {
        resolve: (value) => {
          finish()
          resolve(value)
        },
        reject: (error) => {
          finish()
          reject(error)
        },
      }
    })
  }
}
