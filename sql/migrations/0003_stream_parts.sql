-- 0003_stream_parts.sql: the tables of streamed replies (sql/protocol/14_stream.sql).
--
-- A streamed request is an ordinary row of pgrr_request (its final reply, its deadline, its responder) plus
-- one row of pgrr_stream (its window and counters) and the parts written and not yet consumed, in
-- pgrr_stream_part. Both UNLOGGED, like pgrr_request: a crash ends every stream with its request. Parts
-- never outlive their request: the caller deletes what it consumed (pgrr_stream_ack) and the rest when the
-- stream ends (pgrr_stream_finish); a sweep deletes the rows of requests that are gone (pgrr_stream_sweep).

-- One row per streamed request, made in the transaction that makes the request (pgrr_stream_open).
create unlogged table :SCHEMA.pgrr_stream (
  -- The request's id (pgrr_request.id): the same secret.
  id bigint primary key,
  -- The login that made the request (pgrr_request.caller): the only one that can read or consume its parts.
  caller text not null default session_user,
  -- The request's deadline, extended with it (pgrr_stream_ack): what the sweep goes by once the request's
  -- row is gone (its caller read the final reply and is reading the last parts).
  deadline timestamptz not null,
  -- NOTIFY channel of a TypeScript caller's parts (1 to 63 bytes), or null for an SQL caller (await_part).
  part_to text,
  -- Most parts written and not yet consumed: the responder waits beyond it (backpressure).
  max_in_flight int not null,
  -- Parts written by the responder: part n is the n-th, numbered from 1.
  sent int not null default 0,
  -- Parts the caller consumed (acknowledged): sent - consumed parts are in flight.
  consumed int not null default 0
) with (fillfactor = 70);

-- The parts written and not yet consumed.
create unlogged table :SCHEMA.pgrr_stream_part (
  request_id bigint not null,
  n int not null,
  part text not null,
  part_json boolean not null,
  primary key (request_id, n)
);

revoke all on table :SCHEMA.pgrr_stream, :SCHEMA.pgrr_stream_part from public;
