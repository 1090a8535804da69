// Child side of the IPC channel: turns `process.on('message')` into awaitable "next message" calls, and makes
// the child exit when its parent goes away so that no benchmark process can outlive the orchestrator.

export class Inbox<T extends { type: string }> {
  private readonly queued: T[] = []
  private waiter: ((message: T) => void) | null = null

  constructor() {
    if (!process.send) throw new Error('this file runs as a child of bench/run.ts (it needs an IPC channel)')
    process.on('message', (message) => this.push(message as T))
    // The orchestrator dying (even by SIGKILL) closes the channel: that is our cue to go too.
    process.on('disconnect', () => process.exit(1))
  }

  next(): Promise<T> {
    const message = this.queued.shift()
    if (message) return Promise.resolve(message)
    return new Promise((resolve) => {
      this.waiter = resolve
    })
  }

  private push(message: T): void {
    const waiter = this.waiter
    if (waiter) {
      this.waiter = null
      waiter(message)
    } else {
      this.queued.push(message)
    }
  }
}

/** Sends to the orchestrator; a no-op once the channel is gone (we are about to exit anyway). */
export function sendToParent(message: { type: string }): void {
  if (process.connected && process.send) process.send(message)
}

export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error)
}
