// Is a server listening? A plain TCP connect, so that a missing broker becomes a "skipped" note in a second
// instead of a driver's reconnect loop.
import { connect } from 'node:net'

const PROBE_TIMEOUT_MS = 1500

export function isReachable(serverUrl: string, defaultPort: number): Promise<boolean> {
  const url = new URL(serverUrl)
  const port = url.port ? Number(url.port) : defaultPort
  return new Promise((resolve) => {
    const socket = connect({ host: url.hostname, port, timeout: PROBE_TIMEOUT_MS })
    const finish = (reachable: boolean): void => {
      socket.destroy()
      resolve(reachable)
    }
    socket.once('connect', () => finish(true))
    socket.once('timeout', () => finish(false))
    socket.once('error', () => finish(false))
  })
}

/** host:port for messages. */
export function hostAndPort(serverUrl: string, defaultPort: number): string {
  const url = new URL(serverUrl)
  return `${url.hostname}:${url.port || defaultPort}`
}
