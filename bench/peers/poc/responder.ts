// The proof of concept's responder (an Elixir GenServer in the original): LISTENs on one channel and handles
// one notification at a time, each in one transaction that claims the row, runs the handler and writes the
// response. Serial by design: that is one of the flaws being measured.
import postgres from 'postgres'
import { quoteIdentifier, withApplicationName } from '../../database-url.ts'
import type { ResponderSession } from '../../peer.ts'

export async function startPocResponder(options: {
  databaseUrl: string
  schema: string
  channel: string
  handler: (request: string) => string
}): Promise<ResponderSession> {
  const sql = postgres(withApplicationName(options.databaseUrl, 'poc-responder'), { max: 1, onnotice: () => {} })
  const table = `${quoteIdentifier(options.schema)}.request_reply`
  const queue: number[] = []
  let draining = false
  let closed = false

  const handleOne = (id: number) =>
    sql.begin(async (transaction) => {
      const rows = await transaction.unsafe<Array<{ request: string }>>(
        `select request from ${table} where id = $1 and state = 'sending' for update skip locked`,
        [id],
      )
      const row = rows[0]
      if (!row) return
      await transaction.unsafe(`update ${table} set state = 'processing' where id = $1`, [id])
      await transaction.unsafe('select pg_try_advisory_lock($1)', [id])
      const response = options.handler(row.request)
      await transaction.unsafe(`update ${table} set response = $2, state = 'replied' where id = $1`, [id, response])
      await transaction.unsafe('select pg_advisory_unlock($1)', [id])
    })

  const drain = async (): Promise<void> => {
    if (draining) return
    draining = true
    while (!closed) {
      const id = queue.shift()
      if (id === undefined) break
      // The PoC logs a failed request and moves on, leaving its caller to poll forever.
      await handleOne(id).catch(() => {})
    }
    draining = false
  }

  const listening = await sql.listen(options.channel, (payload) => {
    queue.push(Number(payload))
    void drain()
  })

  return {
    async close() {
      closed = true
      await listening.unlisten()
      await sql.end({ timeout: 2 })
    },
  }
}
