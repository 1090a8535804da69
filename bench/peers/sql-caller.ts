// A caller that speaks only SQL: `select <schema>.request($1, $2)` then `select <schema>.await_reply($1)`, each
// concurrent caller on its own connection, as an application without a pgrr library would call it (and as
// the proof of concept is called). Shared by `pgrr-sql` and `poc`, whose SQL surfaces have the same shape.
import postgres from 'postgres'
import { quoteIdentifier, withApplicationName } from '../database-url.ts'
import { roundRobin, type CallerSession } from '../peer.ts'

export async function openSqlCaller(options: {
  databaseUrl: string
  role: string
  schema: string
  /** The channels requests go to, round robin (one for the proof of concept). */
  services: string[]
  concurrency: number
}): Promise<CallerSession> {
  const sql = postgres(withApplicationName(options.databaseUrl, options.role), { max: options.concurrency, onnotice: () => {} })
  // Reserved, not pooled: await_reply blocks its connection, and postgres.js would otherwise pipeline another
  // caller's query behind it on a busy connection.
  const connections = await Promise.all(Array.from({ length: options.concurrency }, () => sql.reserve()))
  const schema = quoteIdentifier(options.schema)
  const requestText = `select ${schema}.request($1, $2) as id`
  const awaitReplyText = `select ${schema}.await_reply($1) as reply`
  const service = roundRobin(options.services)

  return {
    async call(payload, worker) {
      const connection = connections[worker]
      if (!connection) throw new Error(`no connection for worker ${worker}`)
      const [sent] = await connection.unsafe<[{ id: string }]>(requestText, [service(), payload], { prepare: true })
      const [replied] = await connection.unsafe<[{ reply: string }]>(awaitReplyText, [sent.id], { prepare: true })
      return replied.reply
    },
    async close() {
      for (const connection of connections) connection.release()
      await sql.end({ timeout: 2 })
    },
  }
}
