-- The request-reply protocol: the functions, one file per mechanism (sql/protocol/NN_name.sql), installed
-- together, in file order, as one unit by the migrator (src/migrate.ts), which records its version in
-- pgrr_protocol. The tables are in sql/migrations/. docs/architecture.md is the map: the mechanisms, their
-- files on both sides, the lock namespaces and the NOTIFY channels.
--
-- 01_keys.sql: the lock namespaces and keys, request ids, the NOTIFY prefix, limits, validation, and the
-- lock primitives the other files build on. Nothing here takes a lock that outlives the call.
--
-- Lock namespaces (always the two-key form; key 1 is a namespace derived from the schema name, so that two
-- installs never share a key). Any login may take any advisory lock: a lock held says that some session
-- holds it, not which one (see 04_liveness.sql for what is checked against the sessions themselves).
--   request    (pgrr_ns_request(), pgrr_request_key(id)): held by the responder that claimed a request
--              made from SQL, from the claim to the commit of its reply (07_claim.sql, 09_reply.sql); its
--              SQL awaiter blocks on it (10_await.sql).
--   responder  (pgrr_ns_responder(), responder id): held by the session a responder registered on, from
--              its registration until it is released or the session ends (05_registration.sql): what says
--              that the responder still has what was given to it (04_liveness.sql).
--   bell       (pgrr_ns_bell(), pgrr_bell_key(channel id, 0 to 2)): a channel's claim bell, rung by
--              claims, which SQL awaiters of pending requests block on (03_bells.sql).
--   reply bell (pgrr_ns_reply_bell(), pgrr_reply_bell_key(responder id, lane, 0 to 3)): a responder's reply
--              bells, rung by its replies to SQL callers, which SQL awaiters of requests handed to it block
--              on (03_bells.sql).
--
-- Every plpgsql function runs with plan_cache_mode = force_generic_plan: their statements take array
-- parameters, and with the default the planner re-plans them on every call (pgrr_send: 309 µs a call
-- instead of 51 µs, measured with pgbench). SQL-language functions are only used where they inline.
-- A generic plan is made once per session, at the first call, and kept: the functions that look requests
-- up by id also run with enable_seqscan = off, because a plan made while the table was empty or small
-- scans it sequentially ("id = any ($1)" on an empty table: a sequential scan), and that plan stays while
-- the table grows under load (measured: 0.6 ms a call at 5,000 rows, 1.4 ms at 10,000; pgrr_reply_one
-- 5.4 ms instead of 0.5 at 20,000). For the same reason no statement joins its input to the table in a
-- way the planner may turn around: such a join, planned on an empty table, scanned the whole primary key
-- and compared every row with every input row (see pgrr_reply: a LATERAL probe per input row; pgrr_claim:
-- by ctid). test/core-plans.test.ts makes every plan on an empty table and then checks that no call reads
-- rows it did not name.
-- Those functions also run with jit = off: a scan that has no index to use still appears in a plan made
-- with enable_seqscan = off (pgrr_reap's branch over every claimed request, skipped at run time), costed
-- at ten billion, far above jit_above_cost, so every call compiled the plan: pgrr_reap of three ids took
-- 66-112 ms instead of 0.25 ms (psql \timing). So do the two that scan the whole table
-- (pgrr_handed, pgrr_sweep_older_than), whose cost passes the threshold on a large backlog: compiling
-- never pays for itself in statements this short.
--
-- Placeholders, substituted by the migrator: :SCHEMA is the quoted schema name, :SCHEMA_LITERAL the same
-- name as a quoted string literal. Every function pins search_path and qualifies every name it uses, so a
-- caller's search_path can neither break nor hijack it. Nothing is created outside :SCHEMA (roles are
-- created by the migrator only when asked, see 13_roles.sql).

-- Lock namespaces. Immutable, so plans fold them into constants.
create function :SCHEMA.pgrr_ns_request() returns int
language sql immutable parallel safe
as $$ select pg_catalog.hashtext(:SCHEMA_LITERAL || '/pgrr/request') $$;

create function :SCHEMA.pgrr_ns_responder() returns int
language sql immutable parallel safe
as $$ select pg_catalog.hashtext(:SCHEMA_LITERAL || '/pgrr/responder') $$;

create function :SCHEMA.pgrr_ns_bell() returns int
language sql immutable parallel safe
as $$ select pg_catalog.hashtext(:SCHEMA_LITERAL || '/pgrr/bell') $$;

create function :SCHEMA.pgrr_ns_reply_bell() returns int
language sql immutable parallel safe
as $$ select pg_catalog.hashtext(:SCHEMA_LITERAL || '/pgrr/reply-bell') $$;

-- Second lock key of a channel's bell of a parity (0 or 1), and of its holder token (2): see 03_bells.sql.
create function :SCHEMA.pgrr_bell_key(p_channel_id int, p_parity int) returns int
language sql immutable parallel safe
as $$ select p_channel_id * 4 + p_parity $$;

-- Second lock key of a request: the low 32 bits of its id, as an int. Derived from the id, the request's
-- secret (see 13_roles.sql), so that no other session can know a request's key before it is claimed: keyed on
-- the seq, which the service channel's NOTIFYs show, a session could hold the keys of the next requests
-- (any login may take any advisory lock) and so keep them from ever being claimed.
-- Two requests in flight share a key with a chance of 2^-32. That costs promptness, never an outcome: a
-- claim never waits for a key (a request whose key is held stays pending, for a later claim); one session
-- may hold a key for two requests it claimed (advisory locks count their holds, and each reply releases
-- one); every waiter re-reads the row at least once a second (see pgrr_await); pgrr_reply also requires the
-- responder's own session; and a claimed request whose responder's session is gone is reaped whoever holds
-- its key (see pgrr_reap).
create function :SCHEMA.pgrr_request_key(p_id bigint) returns int
language sql immutable parallel safe
as $$ select (((p_id + 2147483648) & 4294967295) - 2147483648)::int $$;

-- A new request id: 62 random bits (the last 8 bytes of a version 4 UUID, whose top two bits are fixed),
-- so that ids cannot be guessed. Volatile, so every row gets its own.
create function :SCHEMA.pgrr_random_id() returns bigint
language sql volatile parallel safe
as $$
  select ('x' || pg_catalog.encode(pg_catalog.substr(pg_catalog.uuid_send(pg_catalog.gen_random_uuid()), 9, 8), 'hex'))::bit(64)::bigint
         & 4611686018427387903
$$;

-- Most payload bytes one claim returns (see pgrr_claim).
create function :SCHEMA.pgrr_claim_max_bytes() returns bigint
language sql immutable parallel safe
as $$ select 8388608::bigint $$;

-- What fits in a NOTIFY, whose payload PostgreSQL limits to 8000 bytes: an entry (a handed or addressed
-- request, a reply; 02_wire.sql) of at most pgrr_notify_entry_max_bytes() travels inside one, alone or
-- packed with others, its brackets and commas included; a request's payload is tried for a handoff only
-- up to pgrr_notify_payload_max_bytes() (its entry is then built, and measured against the former).
create function :SCHEMA.pgrr_notify_entry_max_bytes() returns int
language sql immutable parallel safe
as $$ select 7900 $$;

create function :SCHEMA.pgrr_notify_payload_max_bytes() returns int
language sql immutable parallel safe
as $$ select 7800 $$;

-- Largest request payload or reply of a channel without a limit of its own.
create function :SCHEMA.pgrr_default_max_payload_bytes() returns int
language sql immutable parallel safe
as $$ select 67108864 $$;

-- Prefix of every NOTIFY channel of this schema, so that two installs in one database never wake each
-- other's processes. Service channel: <prefix>.s<channel id> (06_send.sql); a responder's control channel
-- <prefix>.w<responder id> (11_caller.sql) and inbox <prefix>.h<random> (05_registration.sql, 06_send.sql);
-- a TypeScript caller's replies: <prefix>.c<random> (09_reply.sql).
create function :SCHEMA.pgrr_notify_prefix() returns text
language sql immutable parallel safe
as $$ select 'pgrr.' || pg_catalog.to_hex(pg_catalog.hashtext(:SCHEMA_LITERAL)) $$;

-- Valid service names: 1 to 63 bytes (the identifier limit), no control characters (C0, DEL, C1).
create function :SCHEMA.pgrr_valid_channel(p_channel text) returns boolean
language sql immutable parallel safe
as $$
  select p_channel is not null
     and octet_length(p_channel) between 1 and 63
     and p_channel !~ '[\u0001-\u001f\u007f-\u009f]'
$$;

-- Headers as stored: the text parsed as jsonb when it is a flat JSON object of strings, else null (also
-- for text jsonb cannot hold, such as the escape \u0000). Called only for non-null headers, so the
-- subtransaction of its exception block costs nothing on requests without headers.
create function :SCHEMA.pgrr_parse_headers(p_headers text) returns jsonb
language plpgsql immutable
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_generic_plan
as $$
declare
  v jsonb;
begin
  v := p_headers::jsonb;
  if jsonb_typeof(v) = 'object'
     and not exists (select 1 from jsonb_each(v) e where jsonb_typeof(e.value) <> 'string') then
    return v;
  end if;
  return null;
exception
  when others then return null;
end
$$;

-- pgrr_lock_is_free(ns, key): true when no session holds the advisory lock (ns, key) exclusively.
-- Takes it in shared mode inside a subtransaction that is then rolled back, so nothing stays held
-- whatever the caller's transaction does next. Locks: none after return.
create function :SCHEMA.pgrr_lock_is_free(p_ns int, p_key int) returns boolean
language plpgsql volatile
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_generic_plan
as $$
begin
  if pg_try_advisory_xact_lock_shared(p_ns, p_key) then
    raise exception using errcode = 'PRLCK';
  end if;
  return false;
exception
  when sqlstate 'PRLCK' then return true;
end
$$;

-- pgrr_lock_is_free_now(ns, key): pgrr_lock_is_free without the subtransaction (and the raise that ends
-- it), for the awaiters' look at the reply bells, where it runs up to four times per wake-up: the shared
-- hold is a session lock released by the very next call of the same expression (no interrupt is served
-- between the two, and both only touch the lock table). Locks: none after return.
create function :SCHEMA.pgrr_lock_is_free_now(p_ns int, p_key int) returns boolean
language sql volatile
as $$
  select case when pg_catalog.pg_try_advisory_lock_shared(p_ns, p_key)
              then pg_catalog.pg_advisory_unlock_shared(p_ns, p_key) else false end
$$;

-- pgrr_wait_lock(ns, key, timeout_ms): block until no session holds (ns, key) exclusively, or the timeout.
-- Returns true when the lock was free (then released again at once), false on timeout. Uses the same
-- rolled-back subtransaction, which also restores lock_timeout. Locks: none after return.
create function :SCHEMA.pgrr_wait_lock(p_ns int, p_key int, p_timeout_ms int) returns boolean
language plpgsql volatile
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_generic_plan
as $$
begin
  perform set_config('lock_timeout', greatest(p_timeout_ms, 1)::text, true);
  perform pg_advisory_xact_lock_shared(p_ns, p_key);
  raise exception using errcode = 'PRLCK';
exception
  when sqlstate 'PRLCK' then return true;
  when lock_not_available then return false;
end
$$;
