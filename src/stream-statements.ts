/**
 * The statements of streamed replies (sql/protocol/14_stream.sql), one per protocol function, rendered
 * once per schema, as src/statements.ts renders the others.
 */
import { quoteIdentifier } from './database.ts'

export type StreamStatements = ReturnType<typeof renderStreamStatements>

export function renderStreamStatements(schema: string) {
  const s = quoteIdentifier(schema)
  return {
    open: `select id, status from ${s}.pgrr_stream_open($1::text, $2::text, $3::text, $4::text, $5::bool, $6::int, $7::text, $8::int)`,
    send: `select ord, status, n, consumed, max_in_flight from ${s}.pgrr_stream_send($1::int, $2::bigint[], $3::text[], $4::bool[])`,
    credit: `select id, consumed, remaining_ms from ${s}.pgrr_stream_credit($1::int, $2::bigint[])`,
    ack: `select ${s}.pgrr_stream_ack($1::bigint[], $2::int[], $3::int[])`,
    fetch: `select n, part, part_json from ${s}.pgrr_stream_fetch($1::bigint, $2::int)`,
    finish: `select n, part, part_json from ${s}.pgrr_stream_finish($1::bigint, $2::int, $3::bool)`,
  }
}
