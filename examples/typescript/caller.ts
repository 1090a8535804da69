/**
 * A caller: sends one request and prints the reply; the exit code tells the outcome apart (the same as
 * examples/python/caller.py: 0 reply, 3 no responders, 4 timeout, 5 remote error, 6 responder lost, 1 other).
 *
 *   DATABASE_URL=postgres://… [PGRR_SCHEMA=public] [DATABASE_SESSION_URL=postgres://…] \
 *     node --import tsx examples/typescript/caller.ts <channel> <payload>
 *
 * DATABASE_SESSION_URL is for DATABASE_URL pointing at a transaction-pooling PgBouncer: the LISTEN session
 * then connects there directly (see docs/poolers.md). In your project, import from 'pg-request-reply'.
 */
import { connect, PgrrError, RemoteError } from '../../src/index.ts'

const [channel, payload] = process.argv.slice(2)
if (channel === undefined || payload === undefined) {
  console.error('usage: caller.ts <channel> <payload>')
  process.exit(2)
}

const client = await connect({
  connectionString: process.env.DATABASE_URL,
  sessionConnectionString: process.env.DATABASE_SESSION_URL,
  schema: process.env.PGRR_SCHEMA ?? 'public',
})
const exitCodes: Record<string, number> = { NO_RESPONDERS: 3, TIMEOUT: 4, REMOTE_ERROR: 5, RESPONDER_LOST: 6 }
try {
  console.log(await client.request(channel, payload, { timeoutMs: 30_000 }))
} catch (error) {
  if (!(error instanceof PgrrError)) throw error
  console.error(error instanceof RemoteError ? `remote error ${error.remoteCode}: ${error.message}` : `${error.code}: ${error.message}`)
  process.exitCode = exitCodes[error.code] ?? 1
} finally {
  await client.close()
}
