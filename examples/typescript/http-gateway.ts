/**
 * An HTTP endpoint that calls a worker through pg-request-reply: `GET /uppercase?text=…` answers with the
 * reply of the `uppercase` service. One client serves the whole process (it multiplexes every request on
 * one LISTEN connection and a small pool); the library's outcomes become HTTP statuses, and an HTTP client
 * that goes away cancels its request at the worker too.
 *
 *   DATABASE_URL=postgres://… [PGRR_SCHEMA=public] [PORT=8080] node --import tsx examples/typescript/http-gateway.ts
 *   curl 'http://127.0.0.1:8080/uppercase?text=hello'        # HELLO
 *
 * In your project, import from 'pg-request-reply' instead of the repository's source.
 */
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { connect, PgrrError, RemoteError } from '../../src/index.ts'

const client = await connect({ connectionString: process.env.DATABASE_URL, schema: process.env.PGRR_SCHEMA ?? 'public' })

/** HTTP status per error code; anything else is a 500. */
const statusOf: Record<string, number> = {
  NO_RESPONDERS: 503, // nobody serves the channel right now: worth a retry later
  TOO_MANY_REQUESTS: 503,
  CONNECTION: 503,
  TIMEOUT: 504,
  REMOTE_ERROR: 502, // the worker's handler threw
  RESPONDER_LOST: 502, // the worker died while handling it
  INVALID_PAYLOAD: 400,
  PAYLOAD_TOO_LARGE: 413,
}

const server = http.createServer((req, res) => {
  void handle(req, res).catch((error: unknown) => {
    res.writeHead(500).end()
    console.error(error)
  })
})

async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://localhost')
  if (req.method !== 'GET' || url.pathname !== '/uppercase') {
    res.writeHead(404).end()
    return
  }
  const gone = new AbortController()
  res.once('close', () => gone.abort()) // after the response too, when it no longer matters
  try {
    const reply = await client.request('uppercase', url.searchParams.get('text') ?? '', { timeoutMs: 2000, signal: gone.signal })
    res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' }).end(`${String(reply)}\n`)
  } catch (error) {
    if (!(error instanceof PgrrError)) throw error
    // The worker's own error code is its business to expose or not; here it is passed on.
    const detail = error instanceof RemoteError ? `${error.code} ${error.remoteCode}` : error.code
    res.writeHead(statusOf[error.code] ?? 500, { 'content-type': 'text/plain; charset=utf-8' }).end(`${detail}\n`)
  }
}

server.listen(Number(process.env.PORT ?? 8080), '127.0.0.1', () => {
  console.log(`listening on http://127.0.0.1:${(server.address() as AddressInfo).port}`)
})

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    console.log(`${signal}: closing`)
    server.close()
    void client.close()
  })
}
