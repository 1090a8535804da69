/**
 * The statements the library runs, one per protocol function, rendered once per schema. Values are always
 * parameters; the schema is the only substituted identifier. Each runs as a named prepared statement
 * (see query() in database.ts).
 */
import { quoteIdentifier } from './database.ts'

export type Statements = ReturnType<typeof renderStatements>

export function renderStatements(schema: string) {
  const s = quoteIdentifier(schema)
  return {
    notifyPrefix: `select ${s}.pgrr_notify_prefix() as prefix`,
    send: `select ord, id, status from ${s}.pgrr_send($1::text, $2::text[], $3::text[], $4::bool[], $5::int[], $6::text[], $7::int[])`,
    sendOne: `select id, status from ${s}.pgrr_send_one($1::text, $2::text, $3::text, $4::bool, $5::int, $6::text, $7::int)`,
    ack: `select ${s}.pgrr_ack($1::bigint[])`,
    cancel: `select ${s}.pgrr_cancel($1::bigint[])`,
    fetch: `select id, state, reply, reply_json, error_code, error_message, reply_headers from ${s}.pgrr_fetch($1::bigint[])`,
    reap: `select id, state from ${s}.pgrr_reap($1::bigint[])`,
    sweep: `select ${s}.pgrr_sweep() as deleted`,
    // VACUUM cannot run inside a function; SKIP_LOCKED lets concurrent responders skip rather than queue.
    vacuum: `vacuum (skip_locked) ${s}.pgrr_request`,
    register: `select responder_id, channel_id, service_channel, control_channel, inbox_channel from ${s}.pgrr_register($1::text, $2::text, $3::int, $4::int)`,
    unregister: `select ${s}.pgrr_unregister($1::int)`,
    release: `select ${s}.pgrr_release($1::int)`,
    renew: `select ${s}.pgrr_renew($1::int, $2::int[], $3::jsonb[], $4::bigint[])`,
    pendingChannels: `select channel_id from ${s}.pgrr_pending_channels($1::int[]) as channel_id`,
    claim: `select id, payload, payload_json, headers, attempt, remaining_ms, queued_ms from ${s}.pgrr_claim($1::int, $2::int, $3::int)`,
    handed: `select id, payload, payload_json, headers, attempt, remaining_ms, queued_ms, kind from ${s}.pgrr_handed($1::int)`,
    decline: `select ${s}.pgrr_decline($1::int, $2::bigint[])`,
    reply: `select notified, late::text[] as late, elsewhere::text[] as elsewhere from ${s}.pgrr_reply($1::int, $2::bigint[], $3::bool[], $4::text[], $5::bool[], $6::text[], $7::text[], $8::int[])`,
    replyOne: `select ${s}.pgrr_reply_one($1::int, $2::bigint, $3::bool, $4::text, $5::bool, $6::text, $7::text) as outcome`,
    // Scatter-gather and services that describe themselves (15_scatter.sql, 16_services.sql).
    sendAll: `select responder_id, host, pid, id, status from ${s}.pgrr_send_all($1::text, $2::text, $3::text, $4::bool, $5::int, $6::text, $7::int, $8::text)`,
    registerDescribed: `select r.responder_id, r.channel_id, r.service_channel, r.control_channel, r.inbox_channel, ${s}.pgrr_describe(r.responder_id, $5::jsonb)
      from ${s}.pgrr_register($1::text, $2::text, $3::int, $4::int) r`,
    services: `select channel, responder_id, host, pid, concurrency, started_at, accepting, info, stats, stats_at, now from ${s}.pgrr_services($1::text)`,
  }
}
