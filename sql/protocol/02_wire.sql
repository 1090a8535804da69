-- 02_wire.sql: the formats of what travels in NOTIFY payloads, which the TypeScript side reads and must
-- agree on: src/wire.ts mirrors this file, each of its decoders naming the function here it reads.
--   service channel <prefix>.s<channel id>   empty: pending requests wait (06_send.sql, 04_liveness.sql,
--                                            08_handoff.sql); responders with free slots claim
--   inbox <prefix>.h<random>                 a JSON array of pgrr_handoff_entry (06_send.sql, 08_handoff.sql),
--                                            or of one pgrr_addressed_entry (15_scatter.sql)
--   control <prefix>.w<responder id>         the ids of cancelled requests, comma separated (11_caller.sql)
--   reply channel <prefix>.c<random>         a JSON array of pgrr_reply_entry / pgrr_reply_short_entry
--                                            (09_reply.sql), or [id, 'l'] for a request lost with its
--                                            responder (04_liveness.sql)
-- Every NOTIFY payload stays under PostgreSQL's limit of 8000 bytes. (Several identical NOTIFYs of one
-- transaction are folded into one: for the empty ones, that is what is meant.)
-- The entry functions are SQL functions declared stable, like json_build_array: an SQL function is
-- inlined into its caller's plan only when it is not declared less volatile than its body, and one that is
-- not inlined is parsed and planned on every call.

-- One request handed to a responder, as it travels in the responder's inbox NOTIFY (see pgrr_send): a JSON
-- array of id (as a string), whether the payload is JSON, payload, headers (an object or null), and the
-- time left in ms when it was sent. The NOTIFY goes out at the commit of the statement that sends it (a
-- TypeScript client's statement is its own transaction; an SQL caller's is sent at its commit, see
-- 08_handoff.sql), so the time left is counted from its arrival.
create function :SCHEMA.pgrr_handoff_entry(p_id bigint, p_json boolean, p_payload text, p_headers jsonb, p_timeout_ms int)
returns text
language sql stable
as $$
  select pg_catalog.json_build_array(p_id::text, p_json, p_payload, p_headers, p_timeout_ms)::text
$$;

-- The entry of one outcome in a TypeScript caller's reply NOTIFY (see pgrr_reply): [id, 'r', is_json, body]
-- or [id, 'f', code, message], with the reply headers last when there are any; and the short form without
-- body and headers, sent instead when the entry would exceed 7900 bytes (the caller then fetches it).
create function :SCHEMA.pgrr_reply_entry(p_id bigint, p_failed boolean, p_code text, p_json boolean, p_body text,
                                         p_headers jsonb) returns text
language sql stable
as $$
  select case when p_failed and p_headers is null then pg_catalog.json_build_array(p_id::text, 'f', p_code, p_body)::text
              when p_failed then pg_catalog.json_build_array(p_id::text, 'f', p_code, p_body, p_headers)::text
              when p_headers is null then pg_catalog.json_build_array(p_id::text, 'r', p_json, p_body)::text
              else pg_catalog.json_build_array(p_id::text, 'r', p_json, p_body, p_headers)::text
         end
$$;

create function :SCHEMA.pgrr_reply_short_entry(p_id bigint, p_failed boolean, p_code text, p_json boolean) returns text
language sql stable
as $$
  select case when p_failed then pg_catalog.json_build_array(p_id::text, 'f', p_code)::text
              else pg_catalog.json_build_array(p_id::text, 'r', p_json)::text
         end
$$;

-- The entry of a request lost with its responder (see pgrr_reap): [id, 'l'].
create function :SCHEMA.pgrr_lost_entry(p_id bigint) returns text
language sql stable
as $$ select pg_catalog.json_build_array(p_id::text, 'l')::text $$;
