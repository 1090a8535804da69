-- 0004_services.sql: requests addressed to one responder (scatter-gather), and what a responder says about
-- itself (services that describe themselves).
--
-- pgrr_request.kind: null for an ordinary request (any responder of the channel may run it, and it may
-- go back to the queue); otherwise the request was addressed to the responder in responder_id by
-- pgrr_send_all (sql/protocol/15_scatter.sql) and is never given to another one: 'all', a request of
-- requestAll() run by the handler, or 'ping', answered by the responder itself without the handler.
-- pgrr_responder.info: what the responder says it is, written once with its registration (description,
-- version, JSON Schemas of request and reply): sql/protocol/16_services.sql.
-- pgrr_responder.stats: its handler statistics, written on its lease renewals when they changed, and
-- stats_at, when (16_services.sql).

alter table :SCHEMA.pgrr_request add column kind text;

alter table :SCHEMA.pgrr_responder add column info jsonb;
alter table :SCHEMA.pgrr_responder add column stats jsonb;
alter table :SCHEMA.pgrr_responder add column stats_at timestamptz;
