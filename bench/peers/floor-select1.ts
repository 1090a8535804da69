// The floor of any Postgres-based RPC: one `select 1` round trip per request, from the caller process alone.
// Nothing is echoed by a responder; the reply is computed locally so the harness's check still applies.
import postgres from 'postgres'
import { withApplicationName } from '../database-url.ts'
import { transform } from '../payload.ts'
import type { Peer } from '../peer.ts'

export const peer: Peer = {
  async openCaller(config, concurrency) {
    // One connection per concurrent caller, like a pool sized for its callers.
    const sql = postgres(withApplicationName(config.databaseUrl, 'floor-select1-caller'), { max: concurrency, onnotice: () => {} })
    return {
      async call(payload) {
        await sql`select 1`
        return transform(payload)
      },
      close: () => sql.end({ timeout: 2 }),
    }
  },
  startResponder: null,
}
