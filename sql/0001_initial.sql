-- 0001_initial.sql: the request-reply protocol.
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
-- created by the migrator only when asked, see Security).
--
-- Life of a request (states of pgrr_request.state):
--   pending   inserted by request()/pgrr_send() when it could not be handed over (too large, a burst);
--             NOTIFY on the service channel wakes responders
--   claimed   handed to one responder by the send itself, the usual case (pgrr_send_one, pgrr_send:
--             handed = true; no request lock: the responder's holder lock, and its session, say whether
--             it is still in hand; pgrr_decline makes it pending again). Or taken by one from the queue
--             (pgrr_claim); that responder's session holds the request lock
--   replied   reply written (pgrr_reply, pgrr_reply_one); a request lock is released at that commit, and
--             an SQL caller's reply bell rings
--   failed    the handler threw; error_code/error_message hold what it said
--   lost      the claiming session ended without replying and no attempts were left
--   cancelled the caller gave up (timeout, abort) while a responder held it
-- The caller consumes what it reads: await_reply deletes a replied row (an error it raises is rolled back
-- with the raise, so failed/lost rows stay readable), the TypeScript client acknowledges every outcome;
-- pgrr_sweep deletes whatever outlived its deadline and is no longer held by a responder.
--
-- Locks (always the two-key form; key 1 is a namespace derived from the schema name). Any login may take any
-- advisory lock, and most of these keys are easy to compute: a lock held says that some session holds it,
-- not which one (see Squatters, under Security).
--   request lock   (pgrr_ns_request(), pgrr_request_key(id)) exclusive, session level, held by the claiming
--                  responder from claim to the commit of its reply. Awaiters block on it in shared mode, a
--                  second at most at a time. Keyed on the request's secret id, so that no other session can
--                  take a request's key before its claim (see pgrr_request_key).
--   responder lock (pgrr_ns_responder(), responder id) exclusive, session level, held by a live responder's
--                  session. It is the presence signal: request() tests it with a shared try-lock (see
--                  pgrr_live_responder). Released by pgrr_unregister, which first marks the row
--                  unregistered (a draining responder takes no new requests, whoever holds the key then).
--   holder lock    (pgrr_ns_holder(), responder id) exclusive, session level, held by the responder's session
--                  from registration until the session ends, draining included: requests handed to the
--                  responder (see pgrr_send) are in its hands while it is held, and that session exists.
--   bell locks     (pgrr_ns_bell(), channel id * 4 + parity), parity 0 or 1, exclusive, session level.
--                  One responder per channel, the bell holder (it holds the token (pgrr_ns_bell(), channel
--                  id * 4 + 2)), holds one of the two bells and rings it on every claim that takes a request made from SQL
--                  (TypeScript callers hear of their replies by NOTIFY and never wait on it): in the claim's
--                  transaction it takes the other bell and moves the one it held to transaction scope, so
--                  that one is released exactly when the claim commits. SQL awaiters of a pending request
--                  block on the bell that is held instead of sleeping, and wake the moment a claim commits.
--                  No table records which bell is current (a row updated on every claim would grow a long
--                  version chain whenever an old transaction holds back cleanup): the holder keeps its
--                  parity in a session setting, and awaiters look for the held one.
--   reply bells    (pgrr_ns_reply_bell(), pgrr_reply_bell_key(responder id, lane, k)), exclusive, session
--                  level: for each of 16 lanes (a request's lane is its seq modulo 16), four bells, k 0 to 3.
--                  Each responder holds one bell of every lane from registration on, and moves to the next in
--                  every reply transaction that answers a request of that lane handed to it by an SQL caller
--                  (who has no request lock to wait on): it takes bell k + 1 and moves bell k to transaction
--                  scope, so k is released exactly when that reply commits. An awaiter of a handed request
--                  finds the current bell of its lane (the one held, or the older of two held in a row: a
--                  reply committing), re-reads the request, and blocks on that bell. Lanes keep a reply from
--                  waking the awaiters of every other request of the responder. Which bell is current is in
--                  session settings, as above; every step is a try-lock, so a session squatting on a bell
--                  only makes awaiters wait for their timeout instead (see pgrr_await).
--
-- Security. The database may be shared with other teams' code: the request table must not become a way to
-- read other people's data or to impersonate a service.
--   The functions are the only way in. No role but the owner (the role that ran the migration) has any
--   privilege on the tables or sequences, and EXECUTE is revoked from PUBLIC on every function (see the
--   end of this file). The entry points are SECURITY DEFINER: they run as the owner, with search_path pinned
--   to pg_catalog, pg_temp (pg_temp last, so a temporary object cannot shadow anything; every name of ours
--   is schema-qualified anyway), and none runs dynamic SQL. Internal helpers stay SECURITY INVOKER and
--   executable by the owner only: they run inside the entry points, as the owner.
--   Two sets of entry points, granted to roles by pgrr_grant_caller(role) and pgrr_grant_responder(role)
--   (migrate({ roles }) or `pgrr migrate --caller-role x --responder-role y` create NOLOGIN roles when
--   missing and call these): callers get request, await_reply(_json) and what the TypeScript client uses
--   (pgrr_send, pgrr_send_one, pgrr_ack, pgrr_cancel, pgrr_fetch, pgrr_reap); responders get pgrr_register,
--   pgrr_claim, pgrr_reply, pgrr_reply_one, pgrr_handed, pgrr_decline, pgrr_unregister, pgrr_report,
--   pgrr_sweep, pgrr_reap. Both get USAGE on the schema,
--   pgrr_notify_prefix() and SELECT on pgrr_migration (the version check of clients). A login that both
--   asks and answers is made a member of both roles.
--   Who is asking: session_user, recorded on each request (pgrr_request.caller) and responder
--   (pgrr_responder.login). Inside a SECURITY DEFINER function current_user is the owner for every caller,
--   so it identifies nobody; PostgreSQL does not tell a definer function which role was current before
--   the call. session_user is the role the session logged in as, and only a superuser can change it (SET
--   ROLE changes current_user only), so it cannot be forged. Hence: one login per application; sessions of
--   one login are told apart by the request id.
--   A request's id is its secret: 62 random bits from gen_random_uuid() (a cryptographic generator), so
--   that another session of the same login cannot guess the id of a request it did not make. Claims are
--   ordered by a separate sequential column (seq); request locks are keyed on the id (see Squatters).
--   Requests of another login are invisible: await_reply, await_reply_json, pgrr_fetch, pgrr_ack,
--   pgrr_cancel and the acknowledgements of pgrr_send act only on the caller's own requests; an id of
--   another login is 'unknown' (PR005), the same as a wrong one, so ids cannot be probed across logins
--   either.
--   Responders serve only channels granted to them, closed by default: pgrr_register refuses (42501) a
--   login that is neither the owner (or a member of it), a superuser, nor a member of a role granted the
--   channel in pgrr_channel_grant (pgrr_grant_channel / pgrr_revoke_channel, owner only). Revoking does not
--   stop a responder already registered; it stops its next registration. A responder id is usable only by
--   the session that registered it (pgrr_claim, pgrr_report, pgrr_unregister check backend pid and login),
--   and pgrr_reply writes only outcomes of the requests of the responder that the calling session
--   registered, and of a claimed one only while that session holds its request lock, so a responder can
--   neither claim another channel's requests nor answer for another responder.
--   NOTIFY channels are not secret (anyone may LISTEN or NOTIFY): they carry empty wake-ups, request ids
--   (useless without being their caller) and, on a TypeScript caller's reply channel, replies. That
--   channel's name ends in 64 random bits and is stored only in the request table.
--   Squatters. Any login of the database may take any advisory lock (pg_advisory_lock is executable by
--   PUBLIC), with no privilege on this schema at all. Request locks are keyed on the request's secret id
--   (pgrr_request_key): no other session can tell which key a request will lock, so none can keep a
--   queued request from being claimed (keys held at random hit a given request with a chance of 2^-32
--   each). Responder and holder locks are keyed on the responder id, which anyone can guess (ids count up
--   from 1). A session that takes them once the responder's session has ended makes a phantom: listed as
--   live, handed requests that nobody runs, never reaped. So what those locks say is checked against the
--   sessions themselves, which costs too much to do per request: pgrr_reap takes back a request whose lock
--   is held while the session that registered its responder no longer exists (pgrr_registration_gone,
--   pgrr_session_gone: that session's pid and the role it authenticated as, against PostgreSQL's table of
--   backends), and every sweep deletes the row of such a responder, after which no request goes to it.
--   Requests handed to a phantom before that end lost at their caller's next check (a TypeScript client's
--   checkIntervalMs; an SQL awaiter's next look, within a second), or are retried when retryable (by the
--   TypeScript client's check, or by the next sweep: an SQL awaiter never puts a request back in the queue
--   itself, its statement would keep the row locked and unclaimable until it ends), and the phantom is
--   gone at the next sweep of any responder of the schema (every sweepIntervalMs, 5 s by default). A
--   responder that drains marks its row unregistered before it releases its responder lock, so a session
--   that takes the lock then gets nothing sent to it; the draining responder's session still holds its
--   holder lock and runs what it holds, and nothing of it is reaped while that session exists. (A session
--   of the responder's own role that the operating system gave the same pid cannot be told from it; a
--   login allowed to serve a channel is trusted with its requests anyway.) A session squatting on channel
--   bells or reply bells only delays awaiters (see pgrr_await), one squatting on the keys of the next
--   responder ids only makes pgrr_register skip them (see there).
--   What no function here can prevent: any login of the database can deny service, for instance by filling
--   the NOTIFY queue (pg_notify, and so every request, then fails), by using up the connections, by
--   holding the keys of every next responder id (registrations then fail), or by keeping a transaction
--   open (VACUUM cannot clean up behind it). What it cannot do: read another login's requests or replies,
--   answer in a responder's stead, or make requests vanish silently (handed to a responder that is not
--   there, and never taken back) for longer than a sweep interval.
--
-- Hostile input. Every entry point takes values only as parameters; channel names never become
-- identifiers (NOTIFY channels are built from numeric ids). A channel name is 1 to 63 bytes without
-- control characters (pgrr_valid_channel), else PR007. A request's payload and a reply are limited to the
-- channel's max_payload_bytes (pgrr_configure_channel; default 64 MiB): PR008 for requests, an
-- INVALID_REPLY failure for replies. Headers must be a flat JSON object of strings of at most 64 KiB. One claim returns
-- at most pgrr_claim_max_bytes() of payloads (always at least one request), so a backlog of huge payloads
-- cannot make one claim exhaust a responder's memory. Nothing a caller stores can make a responder's
-- reply statement fail (reply channels are validated when the request is made).

create schema if not exists :SCHEMA;

-- Lock namespaces. Immutable, so plans fold them into constants.
create function :SCHEMA.pgrr_ns_request() returns int
language sql immutable parallel safe
as $$ select pg_catalog.hashtext(:SCHEMA_LITERAL || '/pgrr/request') $$;

create function :SCHEMA.pgrr_ns_responder() returns int
language sql immutable parallel safe
as $$ select pg_catalog.hashtext(:SCHEMA_LITERAL || '/pgrr/responder') $$;

create function :SCHEMA.pgrr_ns_holder() returns int
language sql immutable parallel safe
as $$ select pg_catalog.hashtext(:SCHEMA_LITERAL || '/pgrr/holder') $$;

create function :SCHEMA.pgrr_ns_bell() returns int
language sql immutable parallel safe
as $$ select pg_catalog.hashtext(:SCHEMA_LITERAL || '/pgrr/bell') $$;

-- Second lock key of a channel's bell of a parity (0 or 1), and of its holder token (2): see bell locks.
create function :SCHEMA.pgrr_bell_key(p_channel_id int, p_parity int) returns int
language sql immutable parallel safe
as $$ select p_channel_id * 4 + p_parity $$;

create function :SCHEMA.pgrr_ns_reply_bell() returns int
language sql immutable parallel safe
as $$ select pg_catalog.hashtext(:SCHEMA_LITERAL || '/pgrr/reply-bell') $$;

-- The lanes of reply bells (see reply bells), and the lane of a request.
create function :SCHEMA.pgrr_reply_lanes() returns int
language sql immutable parallel safe
as $$ select 16 $$;

create function :SCHEMA.pgrr_reply_lane(p_seq bigint) returns int
language sql immutable parallel safe
as $$ select (p_seq % :SCHEMA.pgrr_reply_lanes())::int $$;

-- Second lock key of a responder's reply bell k (0 to 3) of a lane: (responder id * 16 + lane) * 4 + k
-- modulo 2^32, as an int. Keys of two responders collide only when their ids differ by a multiple of
-- 2^26; awaiters then wake more often, never later than their timeout.
create function :SCHEMA.pgrr_reply_bell_key(p_responder int, p_lane int, p_k int) returns int
language sql immutable parallel safe
as $$
  select ((((p_responder::bigint * :SCHEMA.pgrr_reply_lanes() + p_lane) * 4 + p_k + 2147483648) & 4294967295) - 2147483648)::int
$$;

-- Second lock key of a request: the low 32 bits of its id, as an int. Derived from the id, the request's
-- secret (see Security), so that no other session can know a request's key before it is claimed: keyed on
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

-- The id of the request at position p_ord of a batch (see pgrr_send): 62 bits of a hash of p_seed, one
-- random UUID drawn for the whole statement, and the position. As unguessable as pgrr_random_id's to every
-- session but the one that sent the batch, whose own requests they all are; one UUID per statement instead
-- of one per request takes 7% off a batch of 32 (gen_random_uuid costs about 0.9 µs a call, measured).
create function :SCHEMA.pgrr_batch_id(p_seed uuid, p_ord int) returns bigint
language sql immutable parallel safe
as $$ select pg_catalog.uuid_hash_extended(p_seed, p_ord) & 4611686018427387903 $$;

-- Most payload bytes one claim returns (see pgrr_claim).
create function :SCHEMA.pgrr_claim_max_bytes() returns bigint
language sql immutable parallel safe
as $$ select 8388608::bigint $$;

-- Largest request payload or reply of a channel without a limit of its own.
create function :SCHEMA.pgrr_default_max_payload_bytes() returns int
language sql immutable parallel safe
as $$ select 67108864 $$;

-- Prefix of every NOTIFY channel of this schema, so that two installs in one database never wake each
-- other's processes. Service channel: <prefix>.s<channel id>; responder control: <prefix>.w<responder id>;
-- a TypeScript caller's replies: <prefix>.c<random>.
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

-- Services. Written when a responder first registers (or by pgrr_configure_channel, pgrr_grant_channel);
-- read by every request. Logged, so that settings survive a crash even though requests do not.
create table :SCHEMA.pgrr_channel (
  id int generated by default as identity primary key,
  name text not null unique check (:SCHEMA.pgrr_valid_channel(name)),
  -- Largest accepted request payload and reply in bytes; null means pgrr_default_max_payload_bytes().
  max_payload_bytes int check (max_payload_bytes between 1 and 1073741823),
  -- Attempts for requests that do not say; 1 is at-most-once.
  max_attempts int not null default 1 check (max_attempts between 1 and 100),
  created_at timestamptz not null default now()
);

-- Roles whose members may serve a channel (see Security). Logged, like the channels.
create table :SCHEMA.pgrr_channel_grant (
  channel_id int not null references :SCHEMA.pgrr_channel (id) on delete cascade,
  grantee regrole not null,
  primary key (channel_id, grantee)
);

-- Live (and recently dead) responders. A row is live while its session holds the responder lock and has not
-- unregistered (see pgrr_live_responder).
create unlogged table :SCHEMA.pgrr_responder (
  id int generated by default as identity primary key,
  channel_id int not null references :SCHEMA.pgrr_channel (id),
  host text,
  pid int,
  concurrency int,
  backend_pid int not null default pg_backend_pid(),
  -- The session's login: with backend_pid, what proves that a call comes from the registering session.
  login text not null default session_user,
  -- The role the registering session authenticated as (pg_stat_activity.usesysid, which every role may read
  -- of every session, and which SET SESSION AUTHORIZATION does not change): with backend_pid, what tells
  -- whether that session still exists (see pgrr_session_gone).
  backend_role oid,
  -- Set by pgrr_unregister: the responder drains and takes no new request, whoever holds its responder lock
  -- from then on (see Security).
  unregistered boolean not null default false,
  started_at timestamptz not null default now(),
  -- Counters the responder reports every few seconds (pgrr_report), for `pgrr status`: kept in memory by
  -- the responder and written to its own row, so they cost nothing per request.
  handled_total bigint not null default 0,
  failed_total bigint not null default 0,
  handled_last_minute int not null default 0,
  failed_last_minute int not null default 0,
  running int not null default 0,
  reported_at timestamptz,
  -- NOTIFY channel on which requests are handed to this responder directly (see pgrr_send). Its name ends
  -- in 62 random bits: it carries payloads, and anyone may LISTEN to a channel whose name they know.
  inbox text not null
);
create index on :SCHEMA.pgrr_responder (channel_id);

-- Requests in flight. UNLOGGED: no WAL, so no fsync per commit; after a server crash it is empty and every
-- caller still waiting gets an error (unknown request or connection loss), never a hang.
-- No CHECK constraints: PostgreSQL re-reads and compiles a table's check expressions in every statement
-- that writes to it, and with two of them here that was a quarter of the cost of a single-request insert
-- (measured: 44 -> 17 µs per insert and commit). The functions are the only writers (see Security): the
-- states listed above and reply_to's length (checked by pgrr_send) are theirs to keep.
create unlogged table :SCHEMA.pgrr_request (
  -- Random (pgrr_random_id, pgrr_batch_id): the id is the request's secret, see Security.
  id bigint primary key,
  -- Claim order and request lock key. The identity sequence of an unlogged table is unlogged too
  -- (PostgreSQL 15+): no WAL flush per commit.
  seq bigint generated always as identity,
  channel_id int not null,
  -- pending, claimed, replied, failed, lost or cancelled (see "Life of a request").
  state text not null default 'pending',
  payload text not null,
  payload_json boolean not null default false,
  headers jsonb,
  -- NOTIFY channel of a TypeScript caller (1 to 63 bytes); null for SQL callers, who wait on locks instead.
  reply_to text,
  -- The login that made the request: the only one that can read or consume it. Text, not name: a name
  -- takes 64 bytes in every row.
  caller text not null default session_user,
  -- Top-level transaction that inserted the row: await_reply in that same transaction fails at once.
  origin_xact xid8 not null default pg_current_xact_id(),
  created_at timestamptz not null default clock_timestamp(),
  deadline timestamptz not null,
  attempt int not null default 0,
  max_attempts int not null default 1,
  -- The responder that claimed it or was handed it; null exactly while the request is pending.
  responder_id int,
  claimed_at timestamptz,
  -- Handed to responder_id by pgrr_send instead of claimed: no request lock is held for it (the responder
  -- never ran a claim); the responder's holder lock tells whether it is still in hand.
  handed boolean not null default false,
  reply text,
  reply_json boolean,
  -- Headers the handler set on its reply (a flat JSON object of strings), or null.
  reply_headers jsonb,
  error_code text,
  error_message text,
  finished_at timestamptz
) with (fillfactor = 70, autovacuum_vacuum_threshold = 500, autovacuum_vacuum_scale_factor = 0.05);

-- The claim scans this index in seq order, from the responder's cursor (see pgrr_claim). Partial: it holds
-- only pending rows, so it stays a page or two (a claimed row's entry is dead at once, and dead entries on
-- the page new requests go to are removed instead of splitting it), and the cursor skips the dead entries
-- that an open transaction somewhere keeps from being removed. Its predicate is on responder_id, not on
-- state: an update that leaves every indexed column alone can be HOT (no new index entry, and the old
-- version is pruned within its page), and only the claim changes responder_id. So a reply, the update
-- every request gets, is HOT whenever its page has room (fillfactor 70 keeps room), as are cancellations.
create index pgrr_request_pending_idx on :SCHEMA.pgrr_request (channel_id, seq) where responder_id is null;

-- The status pgrr_send gives a request (see its contract), from what it looked up: whether the channel
-- name is valid, whether the channel exists with a live responder, the payload, the headers as given and as
-- parsed (null when invalid), and the channel's payload limit (null: the default). One definition for the
-- batch and the single-request paths; an SQL expression, so it inlines.
create function :SCHEMA.pgrr_send_status(
  p_valid boolean, p_live boolean, p_payload text, p_headers_text text, p_headers jsonb, p_max_bytes int
) returns text
language sql immutable
as $$
  select case
           when not p_valid then 'invalid_channel'
           when not coalesce(p_live, false) then 'no_responders'
           when p_payload is null then 'invalid_payload'
           when p_headers_text is not null and p_headers is null then 'invalid_headers'
           when octet_length(p_payload) > coalesce(p_max_bytes, :SCHEMA.pgrr_default_max_payload_bytes())
                or octet_length(p_headers_text) > 65536 then 'too_large'
           else 'ok'
         end
$$;

-- One request handed to a responder, as it travels in the responder's inbox NOTIFY (see pgrr_send_one):
-- a JSON array of id (as a string), whether the payload is JSON, payload, headers (an object or null),
-- the time left in ms, and the deadline in ms since the epoch by the database's clock, or null. The
-- deadline is for a request made inside a longer transaction (an SQL caller's): its NOTIFY goes out only
-- at that commit, when less time may be left than the entry says, or none; the responder compares it
-- with its estimate of the database's clock and never starts a handler past it. An inbox message is a
-- JSON array of these.
-- Stable, like json_build_array: an SQL function is inlined into its caller's plan only when it is not
-- declared less volatile than its body, and one that is not inlined is parsed and planned on every call.
create function :SCHEMA.pgrr_handoff_entry(p_id bigint, p_json boolean, p_payload text, p_headers jsonb, p_timeout_ms int,
                                           p_deadline timestamptz)
returns text
language sql stable
as $$
  select pg_catalog.json_build_array(p_id::text, p_json, p_payload, p_headers, p_timeout_ms,
                                     floor(extract(epoch from p_deadline) * 1000)::bigint)::text
$$;

-- Responders that are live: a responder is live while it has not unregistered and someone holds its
-- responder lock, which makes this shared try-lock (transaction level) fail. A successful try-lock means a
-- dead row; holding that lock to commit is harmless. The lock is trusted only until a sweep: its key is
-- easy to compute, and a session that takes it once the responder's session has ended makes the row look
-- live again; the sweep deletes every row whose session is gone (see pgrr_sweep_older_than). The
-- unregistered flag closes the other way in: a key released by a responder that drains and taken by
-- someone else. A view, so that it is inlined into each query that picks a responder.
create view :SCHEMA.pgrr_live_responder as
  select r.id, r.channel_id, r.inbox, r.concurrency
    from :SCHEMA.pgrr_responder r
   where not r.unregistered
     and not pg_catalog.pg_try_advisory_xact_lock_shared(:SCHEMA.pgrr_ns_responder(), r.id);

-- pgrr_send_one: pgrr_send for a single request, with scalar arguments (the same contract, and what
-- request() and a TypeScript client with one request per turn of its event loop use). Its own function,
-- not a branch of the batch: each statement a function runs costs an executor start-up on every call, and
-- a request that is its transaction's only call pays for every expression's set-up too, so this path is
-- kept to three statements (the acknowledgements, one look-up of channel and responder, the insert).
-- Returns (id, status) as pgrr_send does for one element.
-- A request whose payload fits in a NOTIFY goes straight to a live responder picked at random: it is
-- stored as claimed by that responder (handed) and NOTIFYed on its inbox (a one-entry array of
-- pgrr_handoff_entry), so no claim statement stands between the two hops. The responder declines it
-- (pgrr_decline: back to pending) when it has no free slot or is stopping. Other requests are stored
-- pending, and the NOTIFY on the service channel carries their seq (see pgrr_claim).
-- Locks: a shared try-lock (transaction level) on the responder lock of each candidate responder.
create function :SCHEMA.pgrr_send_one(
  p_reply_to text, p_channel text, p_payload text, p_json boolean, p_timeout_ms int, p_headers text,
  p_max_attempts int, p_ack bigint[], out id bigint, out status text
)
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
set enable_seqscan = off
set jit = off
set plan_cache_mode = force_generic_plan
as $$
declare
  v_channel_id int;
  v_max_bytes int;
  v_max_attempts int;
  v_responder int;
  v_inbox text;
  v_headers jsonb;
  v_message text;
  v_seq bigint;
  v_deadline timestamptz;
begin
  -- Checked here so that no stored request can make a responder's NOTIFY, and so its reply, fail. Then the
  -- acknowledgements. (pgrr_send opens with the same two steps: in a function of their own, the call
  -- alone would add a tenth to the cost of this one, measured.)
  if p_reply_to is not null and octet_length(p_reply_to) not between 1 and 63 then
    raise exception 'pgrr: invalid reply channel name (1 to 63 bytes)' using errcode = '22023';
  end if;
  if cardinality(p_ack) > 0 then
    delete from :SCHEMA.pgrr_request q
     where q.id = any (p_ack) and q.state in ('replied', 'failed', 'lost') and q.caller = session_user;
  end if;
  -- The channel and a live responder of it, picked at random.
  select c.id, c.max_payload_bytes, c.max_attempts, r.id, r.inbox
    into v_channel_id, v_max_bytes, v_max_attempts, v_responder, v_inbox
    from :SCHEMA.pgrr_channel c
    left join lateral (
      select r.id, r.inbox from :SCHEMA.pgrr_live_responder r where r.channel_id = c.id order by random() limit 1
    ) r on true
   where c.name = p_channel;
  if p_headers is not null then
    v_headers := :SCHEMA.pgrr_parse_headers(p_headers);
  end if;
  -- Every stored channel name is valid (pgrr_channel checks it): the name is tested only when none matched.
  -- Each expression here costs its set-up once per transaction, so the common path keeps few.
  status := :SCHEMA.pgrr_send_status(v_channel_id is not null or :SCHEMA.pgrr_valid_channel(p_channel),
                                     v_responder is not null, p_payload, p_headers, v_headers, v_max_bytes);
  if status <> 'ok' then
    return;
  end if;
  id := :SCHEMA.pgrr_random_id();
  v_deadline := clock_timestamp() + make_interval(secs => greatest(coalesce(p_timeout_ms, 30000), 1) / 1000.0);
  -- Handed over when the request fits in a NOTIFY (an SQL caller then waits on the responder's reply bell),
  -- and when this statement opened its transaction (began within 10 ms of it: the extended protocol starts
  -- the transaction a moment before the statement): the handoff NOTIFY goes out at commit, and in a
  -- transaction that goes on (an SQL caller's own) the picked responder may be gone by then. Such a request
  -- waits in the table for a claim instead. A transaction that goes on long after a request() made right
  -- at its start is not told apart: its entry carries the deadline, which the responder checks.
  v_message := case when octet_length(p_payload) <= 4000 and statement_timestamp() - transaction_timestamp() < interval '10 ms' then
                 '[' || :SCHEMA.pgrr_handoff_entry(id, coalesce(p_json, false), p_payload, v_headers,
                                                   greatest(coalesce(p_timeout_ms, 30000), 1), v_deadline) || ']'
               end;
  if octet_length(v_message) > 7900 then
    v_message := null;
  end if;
  insert into :SCHEMA.pgrr_request
         (id, channel_id, payload, payload_json, headers, reply_to, deadline, max_attempts,
          state, responder_id, claimed_at, attempt, handed)
  values (id, v_channel_id, p_payload, coalesce(p_json, false), v_headers, p_reply_to, v_deadline,
          least(greatest(coalesce(p_max_attempts, v_max_attempts, 1), 1), 100),
          case when v_message is null then 'pending' else 'claimed' end,
          case when v_message is not null then v_responder end,
          case when v_message is not null then clock_timestamp() end,
          case when v_message is null then 0 else 1 end,
          v_message is not null)
  returning pgrr_request.seq into v_seq;
  perform pg_notify(case when v_message is null then :SCHEMA.pgrr_notify_prefix() || '.s' || v_channel_id else v_inbox end,
                    coalesce(v_message, v_seq::text));
end
$$;

-- pgrr_send: insert a batch of requests (the TypeScript client's path; request() is built on it).
-- Contract: one output row per input element, in input order: (ord, id, status) with status one of
--   ok, invalid_channel, no_responders, invalid_payload (null payload), invalid_headers (not a flat JSON
--   object of strings), too_large (payload over the channel's limit, or headers over 64 KiB); id is null
--   unless ok.
-- p_reply_to: the caller's NOTIFY channel (1 to 63 bytes) or null; anything else raises 22023.
-- p_ack: ids of finished requests the caller has consumed; deleted first (piggy-backed acknowledgements).
-- p_max_attempts: clamped to 1..100. Security: requests are recorded as the session's login's (see
-- Security); acknowledgements delete only its own.
-- Locks: a shared try-lock (transaction level) on the responder lock of each candidate responder.
-- Handoff: a TypeScript caller's requests for one channel are handed together to a live responder of it
-- picked at random (stored as claimed by it, see pgrr_send_one), those that fit (payloads up to 1900
-- bytes), when they are no more than that responder's concurrency; the others are stored pending.
-- NOTIFY: for pending requests, one notification per service; its payload is the lowest seq inserted for
-- it, which lets responders start their claim there (see pgrr_claim). For handed ones, their entries on
-- the responder's inbox, several to a NOTIFY. A single request goes through pgrr_send_one.
create function :SCHEMA.pgrr_send(
  p_reply_to text,
  p_channels text[],
  p_payloads text[],
  p_json boolean[],
  p_timeout_ms int[],
  p_headers text[],
  p_max_attempts int[],
  p_ack bigint[]
) returns table (ord int, id bigint, status text)
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
set enable_seqscan = off
set jit = off
set plan_cache_mode = force_generic_plan
as $$
begin
  -- One request: pgrr_send_one, which is cheaper for it (and checks p_reply_to the same way).
  if cardinality(p_channels) = 1 then
    ord := 1;
    select o.id, o.status into id, status
      from :SCHEMA.pgrr_send_one(p_reply_to, p_channels[1], p_payloads[1], p_json[1], p_timeout_ms[1], p_headers[1],
                                 p_max_attempts[1], p_ack) o;
    return next;
    return;
  end if;
  -- As pgrr_send_one opens.
  if p_reply_to is not null and octet_length(p_reply_to) not between 1 and 63 then
    raise exception 'pgrr: invalid reply channel name (1 to 63 bytes)' using errcode = '22023';
  end if;
  if cardinality(p_ack) > 0 then
    delete from :SCHEMA.pgrr_request q
     where q.id = any (p_ack) and q.state in ('replied', 'failed', 'lost') and q.caller = session_user;
  end if;

  return query
  with input as materialized (
    select t.ord::int as ord, t.channel, t.payload, coalesce(t.is_json, false) as is_json,
           greatest(coalesce(t.timeout_ms, 30000), 1) as timeout_ms, t.headers as headers_text,
           case when t.headers is not null then :SCHEMA.pgrr_parse_headers(t.headers) end as headers,
           t.max_attempts
      from unnest(p_channels, p_payloads, p_json, p_timeout_ms, p_headers, p_max_attempts)
           with ordinality as t(channel, payload, is_json, timeout_ms, headers, max_attempts, ord)
  ),
  channels as materialized (
    -- Each channel's live responder picked at random (see pgrr_send_one), if any: it is handed the batch.
    select c.id, c.name, c.max_payload_bytes, c.max_attempts, r.id as responder, r.inbox, r.concurrency
      from :SCHEMA.pgrr_channel c
      left join lateral (
        select r.id, r.inbox, r.concurrency from :SCHEMA.pgrr_live_responder r where r.channel_id = c.id
         order by random() limit 1
      ) r on true
     where c.name in (select distinct i.channel from input i)
  ),
  checked as materialized (
    select i.*, ch.id as channel_id, ch.responder, ch.inbox, ch.concurrency,
           least(greatest(coalesce(i.max_attempts, ch.max_attempts, 1), 1), 100) as attempts,
           :SCHEMA.pgrr_send_status(:SCHEMA.pgrr_valid_channel(i.channel), ch.responder is not null, i.payload,
                                    i.headers_text, i.headers, ch.max_payload_bytes) as status
      from input i left join channels ch on ch.name = i.channel
  ),
  numbered as materialized (
    select c.*, x.id,
           -- Handoff candidates: a caller that hears replies by NOTIFY, an entry small enough that the
           -- entries packed into one NOTIFY below stay under its 8000-byte limit, and a transaction that
           -- began just now (see pgrr_send_one).
           case when p_reply_to is not null and x.id is not null and octet_length(c.payload) <= 1900
                     and statement_timestamp() - transaction_timestamp() < interval '10 ms' then
             -- No deadline: a statement of the TypeScript client is its own transaction, so the time left is
             -- counted from its commit, a moment away.
             :SCHEMA.pgrr_handoff_entry(x.id, c.is_json, c.payload, c.headers, c.timeout_ms, null)
           end as entry
      from (select pg_catalog.gen_random_uuid() as seed) r,
           checked c,
           lateral (select case when c.status = 'ok' then :SCHEMA.pgrr_batch_id(r.seed, c.ord) end as id) x
  ),
  planned as materialized (
    -- A channel's candidates are handed to its responder when they are no more than its concurrency (a
    -- larger burst waits in the table, where every responder claims from it).
    select c.*, coalesce(c.candidate and count(*) filter (where c.candidate) over (partition by c.channel_id) <= c.concurrency, false) as handed
      from (select n.*, coalesce(octet_length(n.entry) <= 2000, false) as candidate
              from numbered n
             where n.status = 'ok') c
  ),
  inserted as (
    insert into :SCHEMA.pgrr_request
           (id, channel_id, payload, payload_json, headers, reply_to, deadline, max_attempts,
            state, responder_id, claimed_at, attempt, handed)
    select p.id, p.channel_id, p.payload, p.is_json, p.headers, p_reply_to,
           clock_timestamp() + make_interval(secs => p.timeout_ms / 1000.0), p.attempts,
           case when p.handed then 'claimed' else 'pending' end,
           case when p.handed then p.responder end,
           case when p.handed then clock_timestamp() end,
           case when p.handed then 1 else 0 end,
           p.handed
      from planned p
    returning channel_id, seq, handed
  ),
  woken as materialized (
    select pg_notify(:SCHEMA.pgrr_notify_prefix() || '.s' || w.channel_id, w.seq::text)
      from (select i.channel_id, min(i.seq) as seq from inserted i where not i.handed group by i.channel_id) w
  ),
  -- Handed requests, as arrays of entries on their responder's inbox: at most 2000 bytes an entry, packed
  -- by running size into NOTIFYs of at most 5800 + 2000 bytes.
  packed as (
    select p.inbox, p.ord, p.entry,
           sum(octet_length(p.entry) + 1) over (partition by p.inbox order by p.ord) as running
      from planned p
     where p.handed
  ),
  delivered as materialized (
    select pg_notify(k.inbox, '[' || string_agg(k.entry, ',' order by k.ord) || ']')
      from packed k
     group by k.inbox, (k.running - 1) / 5800
  )
  select n.ord, n.id, n.status
    from numbered n, (select count(*) from woken) as notified, (select count(*) from delivered) as handed
   order by n.ord;
end
$$;

-- Milliseconds of a request() timeout: null means 30 s; anything but 1 ms to 2^31 - 1 ms (about 24.8 days)
-- raises 22023, before any conversion could overflow.
create function :SCHEMA.pgrr_timeout_ms(p_timeout interval) returns int
language plpgsql immutable
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_generic_plan
as $$
begin
  if p_timeout is null then
    return 30000;
  end if;
  if p_timeout <= interval '0' or p_timeout > interval '2147483647 milliseconds' then
    raise exception 'pgrr: timeout must be between 1 ms and 2147483647 ms, got %', p_timeout using errcode = '22023';
  end if;
  return greatest(ceil(extract(epoch from p_timeout) * 1000), 1)::int;
end
$$;

-- request(channel, payload [, timeout [, headers]]): send one request; returns its id for await_reply.
-- Fails at once (SQLSTATE PR001) when no live responder serves the channel, PR007 on an invalid channel
-- name, PR008 when the payload is larger than the channel allows (or the headers over 64 KiB), 22023 for a
-- timeout out of range or headers that are not a flat JSON object of strings. The request expires after timeout (default
-- 30 s). The id is random: it is what lets the same login, and only it, await the reply. Locks and
-- NOTIFY: those of pgrr_send.
create function :SCHEMA.request(
  channel text, payload text, timeout interval default null, headers jsonb default null
) returns bigint
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_generic_plan
as $$
declare
  v_sent record;
begin
  -- An assignment, not a SELECT … FROM the function: plpgsql evaluates it as an expression, without the
  -- query's executor start-up and the tuplestore of a function scan (30 µs of a 290 µs request() here).
  v_sent := :SCHEMA.pgrr_send_one(null, channel, payload, false, :SCHEMA.pgrr_timeout_ms(timeout), headers::text, null, null);
  if v_sent.status is distinct from 'ok' then
    perform :SCHEMA.pgrr_raise_send_status(v_sent.status, channel);
  end if;
  return v_sent.id;
end
$$;

-- request(channel, payload jsonb, ...): the same for a JSON payload; await_reply_json returns JSON replies.
create function :SCHEMA.request(
  channel text, payload jsonb, timeout interval default null, headers jsonb default null
) returns bigint
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_generic_plan
as $$
declare
  v_sent record;
begin
  -- An assignment, as in request(channel, text, …).
  v_sent := :SCHEMA.pgrr_send_one(null, channel, payload::text, true, :SCHEMA.pgrr_timeout_ms(timeout), headers::text, null, null);
  if v_sent.status is distinct from 'ok' then
    perform :SCHEMA.pgrr_raise_send_status(v_sent.status, channel);
  end if;
  return v_sent.id;
end
$$;

-- Turns a pgrr_send status into the matching error. Kept apart so both request() overloads say the same.
create function :SCHEMA.pgrr_raise_send_status(p_status text, p_channel text) returns void
language plpgsql immutable
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_generic_plan
as $$
begin
  case p_status
    when 'ok' then return;
    when 'no_responders' then
      raise exception 'pgrr: no responders on channel %', quote_literal(p_channel) using errcode = 'PR001';
    when 'invalid_channel' then
      raise exception 'pgrr: invalid channel name %', coalesce(quote_literal(p_channel), 'NULL')
        using errcode = 'PR007', hint = 'A channel name is 1 to 63 bytes with no control characters.';
    when 'too_large' then
      raise exception 'pgrr: payload too large for channel %', quote_literal(p_channel) using errcode = 'PR008',
        hint = 'The channel''s max_payload_bytes (pgrr_configure_channel) bounds the payload; headers have 64 KiB.';
    when 'invalid_payload' then
      raise exception 'pgrr: payload must not be null' using errcode = '22004';
    when 'invalid_headers' then
      raise exception 'pgrr: headers must be a JSON object whose values are strings' using errcode = '22023';
    else
      raise exception 'pgrr: unexpected send status %', p_status using errcode = 'XX000';
  end case;
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

-- pgrr_wait_bell(channel, timeout_ms): 'free' at once when no bell of the channel is held (no holder);
-- otherwise waits on the held one until it rings ('rang') or the timeout ('timeout'). Each test runs in a
-- subtransaction of its own, so no shared hold lingers to make the holder's ring fail. Locks: none after
-- return.
create function :SCHEMA.pgrr_wait_bell(p_channel_id int, p_timeout_ms int) returns text
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  v_key int;
begin
  if not :SCHEMA.pgrr_lock_is_free(:SCHEMA.pgrr_ns_bell(), :SCHEMA.pgrr_bell_key(p_channel_id, 0)) then
    v_key := :SCHEMA.pgrr_bell_key(p_channel_id, 0);
  elsif not :SCHEMA.pgrr_lock_is_free(:SCHEMA.pgrr_ns_bell(), :SCHEMA.pgrr_bell_key(p_channel_id, 1)) then
    v_key := :SCHEMA.pgrr_bell_key(p_channel_id, 1);
  else
    return 'free';
  end if;
  if :SCHEMA.pgrr_wait_lock(:SCHEMA.pgrr_ns_bell(), v_key, p_timeout_ms) then
    return 'rang';
  end if;
  return 'timeout';
end
$$;

-- pgrr_ring(responder, channel): called by pgrr_claim after it claimed requests made from SQL (reply_to
-- null). The bell holder rings (see bell
-- locks); a responder that is not the holder becomes it when nobody is (it takes the token, then a bell).
-- Never waits for a lock: every advisory lock is a try-lock (an awaiter testing a bell holds it shared for
-- an instant; the ring is then skipped, and awaiters wake at their nap's end instead). The holder's parity
-- lives in a session setting, so a ring writes no row.
create function :SCHEMA.pgrr_ring(p_responder int, p_channel_id int) returns void
language plpgsql volatile
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_generic_plan
as $$
declare
  v_setting constant text := 'pgrr.bell_' || to_hex(:SCHEMA.pgrr_ns_bell()) || '_' || p_channel_id;
  v_parity int := nullif(current_setting(v_setting, true), '')::int;
begin
  if v_parity is null then
    if not pg_try_advisory_lock(:SCHEMA.pgrr_ns_bell(), :SCHEMA.pgrr_bell_key(p_channel_id, 2)) then
      return;
    end if;
    if pg_try_advisory_lock(:SCHEMA.pgrr_ns_bell(), :SCHEMA.pgrr_bell_key(p_channel_id, 0)) then
      v_parity := 0;
    elsif pg_try_advisory_lock(:SCHEMA.pgrr_ns_bell(), :SCHEMA.pgrr_bell_key(p_channel_id, 1)) then
      v_parity := 1;
    else
      perform pg_advisory_unlock(:SCHEMA.pgrr_ns_bell(), :SCHEMA.pgrr_bell_key(p_channel_id, 2));
      return;
    end if;
    perform set_config(v_setting, v_parity::text, false);
    return;
  end if;
  if not pg_try_advisory_lock(:SCHEMA.pgrr_ns_bell(), :SCHEMA.pgrr_bell_key(p_channel_id, 1 - v_parity)) then
    return;
  end if;
  -- The setting is rolled back with an aborted transaction, the session locks are not: when this session
  -- no longer holds the bell the setting names, it already held the other one (now twice), so it gives
  -- that hold back, and the setting follows the locks again.
  if not (pg_try_advisory_xact_lock(:SCHEMA.pgrr_ns_bell(), :SCHEMA.pgrr_bell_key(p_channel_id, v_parity))
          and pg_advisory_unlock(:SCHEMA.pgrr_ns_bell(), :SCHEMA.pgrr_bell_key(p_channel_id, v_parity))) then
    perform pg_advisory_unlock(:SCHEMA.pgrr_ns_bell(), :SCHEMA.pgrr_bell_key(p_channel_id, 1 - v_parity));
  end if;
  perform set_config(v_setting, (1 - v_parity)::text, false);
end
$$;

-- The session setting that holds which reply bell (0 to 3) of a lane the responder's session holds (see
-- reply bells). Casts, not text || int: that operator is stable, and an immutable SQL function whose body
-- is not is never inlined; it was run as a function of its own, parsed and planned once per transaction
-- (about 20 µs of each reply to an SQL caller and of each await_reply).
create function :SCHEMA.pgrr_reply_bell_setting(p_responder int, p_lane int) returns text
language sql immutable
as $$ select 'pgrr.reply_bell_' || pg_catalog.to_hex(:SCHEMA.pgrr_ns_reply_bell()) || '_' || p_responder::text || '_' || p_lane::text $$;

-- pgrr_ring_reply(responder, lane): called in a reply transaction that answered a handed request of an SQL
-- caller, for its lane. Takes the responder's next reply bell of the lane and moves the current one to
-- transaction scope (released at commit, waking its awaiters). Never waits: an awaiter looking at the
-- next bell holds it for an instant, so the try-lock is tried a few times in a row; when someone still
-- holds it (a squatter), the ring is skipped and awaiters wake at their timeout. The session must be the
-- responder's (the callers check it). Locks: see reply bells.
create function :SCHEMA.pgrr_ring_reply(p_responder int, p_lane int) returns void
language plpgsql volatile
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_generic_plan
as $$
declare
  v_setting constant text := :SCHEMA.pgrr_reply_bell_setting(p_responder, p_lane);
  v_k int := nullif(current_setting(v_setting, true), '')::int;
begin
  if v_k is null then
    return;
  end if;
  for v_try in 1..20 loop
    if pg_try_advisory_lock(:SCHEMA.pgrr_ns_reply_bell(), :SCHEMA.pgrr_reply_bell_key(p_responder, p_lane, (v_k + 1) % 4)) then
      -- As in pgrr_ring: a setting rolled back with an aborted reply names a bell this session no longer
      -- holds, and the next one is then held twice; give that hold back so that locks and setting agree.
      if not (pg_try_advisory_xact_lock(:SCHEMA.pgrr_ns_reply_bell(), :SCHEMA.pgrr_reply_bell_key(p_responder, p_lane, v_k))
              and pg_advisory_unlock(:SCHEMA.pgrr_ns_reply_bell(), :SCHEMA.pgrr_reply_bell_key(p_responder, p_lane, v_k))) then
        perform pg_advisory_unlock(:SCHEMA.pgrr_ns_reply_bell(), :SCHEMA.pgrr_reply_bell_key(p_responder, p_lane, (v_k + 1) % 4));
      end if;
      perform set_config(v_setting, ((v_k + 1) % 4)::text, false);
      return;
    end if;
  end loop;
end
$$;

-- pgrr_current_reply_bell(responder, lane, after): which of the responder's reply bells (0 to 3) of the
-- lane its next reply there to an SQL caller releases: the one held, or the older of two consecutive ones
-- held (a reply is committing). Null when that cannot be told (none held: the responder is gone; or a
-- session squats on its keys). after: the bell the awaiter last waited on, or null; the one after it is
-- looked at first, and when it is held it is the answer (current, or the older of two), with no look at
-- the others, one of which the responder is about to take. Locks: none after return (see
-- pgrr_lock_is_free_now).
create function :SCHEMA.pgrr_current_reply_bell(p_responder int, p_lane int, p_after int default null) returns int
language plpgsql volatile
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_generic_plan
as $$
declare
  v_held boolean[] := array[false, false, false, false];
  v_count int := 0;
  -- Computed first: passed as an expression, the key would be too costly to inline the look twice.
  v_next constant int := (p_after + 1) % 4;
begin
  if v_next is not null
     and not :SCHEMA.pgrr_lock_is_free_now(:SCHEMA.pgrr_ns_reply_bell(), :SCHEMA.pgrr_reply_bell_key(p_responder, p_lane, v_next)) then
    return v_next;
  end if;
  for k in 0..3 loop
    if not :SCHEMA.pgrr_lock_is_free_now(:SCHEMA.pgrr_ns_reply_bell(), :SCHEMA.pgrr_reply_bell_key(p_responder, p_lane, k)) then
      v_held[k + 1] := true;
      v_count := v_count + 1;
    end if;
  end loop;
  for k in 0..3 loop
    if v_held[k + 1] and (v_count = 1 or (v_count = 2 and v_held[(k + 1) % 4 + 1])) then
      return k;
    end if;
  end loop;
  return null;
end
$$;

-- Whether the lock that keeps a claimed (or cancelled) request in its responder's hands is free: its
-- request lock, or, for a request handed to a responder (which holds no request lock for it), that
-- responder's holder lock. Free means the responder's session no longer holds it. Held proves less: the
-- keys are not secret (responder ids count up from 1), so after that session ended another may have taken
-- it (see pgrr_registration_gone). Locks: none after return (see pgrr_lock_is_free).
create function :SCHEMA.pgrr_in_hand_lock_is_free(p_handed boolean, p_id bigint, p_responder int) returns boolean
language sql volatile
as $$
  select case when p_handed then :SCHEMA.pgrr_lock_is_free(:SCHEMA.pgrr_ns_holder(), p_responder)
              else :SCHEMA.pgrr_lock_is_free(:SCHEMA.pgrr_ns_request(), :SCHEMA.pgrr_request_key(p_id)) end
$$;

-- Whether the session that registered a responder (pgrr_responder.backend_pid and backend_role) has ended:
-- no backend with that pid runs as the role it authenticated as. (A session of another role that got the
-- same pid from the operating system is not it. One of the same role cannot be told apart, see Security.)
-- Reads PostgreSQL's table of backends (pg_stat_get_activity: pid and role are shown to every role; the
-- start time of another role's session is not), which a transaction copies at its first read and then
-- keeps: the copy is discarded first, so that the one read here is newer than the row the caller took the
-- pid from (a session that registered after an older copy was made would be missing from it). About 50 µs:
-- for reaps, never per request (sweeps read the table once for every responder, see
-- pgrr_sweep_older_than). Locks: none.
create function :SCHEMA.pgrr_session_gone(p_pid int, p_role oid) returns boolean
language plpgsql volatile
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_generic_plan
as $$
begin
  perform pg_stat_clear_snapshot();
  return not exists (select 1 from pg_stat_get_activity(p_pid) a where a.usesysid = p_role);
end
$$;

-- Whether a responder's registration is gone: its row was deleted (a sweep deletes it once its session has
-- ended), or its session has ended. What its locks cannot tell once someone else may hold them. Locks:
-- none.
create function :SCHEMA.pgrr_registration_gone(p_responder int) returns boolean
language plpgsql volatile
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_generic_plan
as $$
declare
  v_pid int;
  v_role oid;
begin
  select r.backend_pid, r.backend_role into v_pid, v_role from :SCHEMA.pgrr_responder r where r.id = p_responder;
  return not found or :SCHEMA.pgrr_session_gone(v_pid, v_role);
end
$$;

-- pgrr_reap(ids): find claimed requests in nobody's hands any more, i.e. whose responder's session ended
-- without replying: the lock that keeps them in hand is free (see pgrr_in_hand_lock_is_free), or it is held
-- while the session of their responder is gone (pgrr_registration_gone): someone else took the key, a
-- squatter (see Security), or another request that shares it. A request whose responder's session still
-- exists is left to it, whatever its locks say: a draining responder still runs what it holds. Each goes
-- back to pending when it has attempts left (NOTIFY on its service channel) or becomes lost (NOTIFY its
-- TypeScript caller). p_ids null means every claimed request. p_requeue false leaves the requests that
-- have attempts left as they are: what an SQL awaiter asks for, whose statement would hold the row it put
-- back in the queue (locked, and pending only to itself) until it ends; a reap that commits (a sweep, a
-- TypeScript client's check) puts them back.
-- Returns the ids it changed and their new state, of the calling login's own requests only (ids are
-- secrets). Safe to run anywhere, any number of times at once: every change is conditional on the state,
-- attempt and responder it read, and is what the protocol would do anyway.
create function :SCHEMA.pgrr_reap(p_ids bigint[] default null, p_requeue boolean default true)
returns table (id bigint, state text)
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
set enable_seqscan = off
set jit = off
set plan_cache_mode = force_generic_plan
as $$
declare
  r record;
  -- Responders whose session this call found to exist (their requests with a lock held are in hand), and
  -- those it found gone: each is looked up once (pgrr_registration_gone reads the server's backends).
  v_alive int[] := '{}';
  v_gone int[] := '{}';
begin
  for r in
    -- Two branches rather than "p_ids is null or id = any (p_ids)": in the generic plan the first probes the
    -- primary key, and the second is skipped unless p_ids is null (a sweep over every claimed request).
    select q.id, q.seq, q.attempt, q.max_attempts, q.channel_id, q.reply_to, q.caller, q.handed, q.responder_id
      from :SCHEMA.pgrr_request q
     where q.state = 'claimed' and q.id = any (p_ids)
    union all
    select q.id, q.seq, q.attempt, q.max_attempts, q.channel_id, q.reply_to, q.caller, q.handed, q.responder_id
      from :SCHEMA.pgrr_request q
     where q.state = 'claimed' and p_ids is null
  loop
    if not :SCHEMA.pgrr_in_hand_lock_is_free(r.handed, r.id, r.responder_id) then
      continue when r.responder_id = any (v_alive);
      if r.responder_id <> all (v_gone) then
        if not :SCHEMA.pgrr_registration_gone(r.responder_id) then
          v_alive := v_alive || r.responder_id;
          continue;
        end if;
        v_gone := v_gone || r.responder_id;
      end if;
    end if;
    -- (The responder too: a request declined and claimed again by another has the same attempt.)
    if r.attempt < r.max_attempts then
      continue when not p_requeue;
      update :SCHEMA.pgrr_request q
         set state = 'pending', responder_id = null, claimed_at = null, handed = false
       where q.id = r.id and q.state = 'claimed' and q.attempt = r.attempt and q.responder_id = r.responder_id;
      if found then
        -- The payload is the request's seq: responders claim from there (see pgrr_claim).
        perform pg_notify(:SCHEMA.pgrr_notify_prefix() || '.s' || r.channel_id, r.seq::text);
        if r.caller = session_user then
          id := r.id; state := 'pending'; return next;
        end if;
      end if;
    else
      update :SCHEMA.pgrr_request q
         set state = 'lost', finished_at = clock_timestamp()
       where q.id = r.id and q.state = 'claimed' and q.attempt = r.attempt and q.responder_id = r.responder_id;
      if found then
        if r.reply_to is not null then
          perform pg_notify(r.reply_to, json_build_array(json_build_array(r.id::text, 'l'))::text);
        end if;
        if r.caller = session_user then
          id := r.id; state := 'lost'; return next;
        end if;
      end if;
    end if;
  end loop;
end
$$;

-- await_reply(id [, timeout]): wait for the reply of request id and consume it.
-- Returns the reply text (JSON replies as their JSON text). Raises:
--   PR002 timeout (the wait, or the request's own deadline, ran out; past its deadline the request is
--         never claimed and the sweeper deletes it; also a failure with code PGRR_DEADLINE, which a
--         responder writes when the deadline passes while its handler runs),
--   0A000 called in a transaction that is not READ COMMITTED (its one snapshot would never see the reply),
--   PR003 the handler failed (message = its message, detail = its error code),
--   PR004 the responder's session ended while handling it, PR005 unknown or already consumed id, or a
--         request of another login (see Security),
--   PR006 awaited inside the transaction that made the request (it can never be answered there),
--   PR009 the request was cancelled.
-- Waits without a polling floor. A request handed to a responder (see pgrr_send_one, the usual case) is
-- waited for on that responder's reply bell, which its next reply to an SQL caller releases. A pending one
-- blocks once on the channel's bell, which rings when a claim of the bell holder commits; once claimed it
-- blocks on the request lock, which the responder releases exactly when its reply commits. Between those
-- it naps (1 ms, doubling to 16 ms): after the first ring (a claim that did not take this request: a
-- backlog) and when no bell is held. No wait on a reply bell or a request lock lasts more than a second
-- without a look at the request and a reap (pgrr_reap): the lock may be held by someone other than the
-- responder (a squatter, or another request with the same key; see Security).
-- An error outcome is not consumed: the raise rolls back every change of the statement, so it stays
-- readable (the same error again) until the sweeper deletes it.
-- One statement, no session state left behind: safe through a transaction-pooling PgBouncer.
-- The waiting itself is pgrr_await, which also tells whether the reply is JSON (for await_reply_json).
create function :SCHEMA.await_reply(id bigint, timeout interval default null) returns text
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_generic_plan
as $$
declare
  v_reply record;
begin
  -- An assignment, not a SELECT … FROM the function (see request()).
  v_reply := :SCHEMA.pgrr_await(await_reply.id, await_reply.timeout);
  return v_reply.reply;
end
$$;

-- pgrr_await(id, timeout): await_reply's contract (errors, waiting, consumption), returning the reply and
-- whether it is JSON. Internal: runs inside await_reply and await_reply_json, as the owner.
create function :SCHEMA.pgrr_await(p_id bigint, p_timeout interval, out reply text, out reply_json boolean,
                                   out reply_headers jsonb)
language plpgsql volatile
set search_path = pg_catalog, pg_temp
-- Planned once per session, maybe while the table is nearly empty: a sequential scan then looks cheapest
-- and stays in the cached plan as the table grows (see pgrr_reply). Every access here is by primary key.
set enable_seqscan = off
set jit = off
set plan_cache_mode = force_generic_plan
as $$
declare
  r record;
  v_id constant bigint := p_id;
  timeout constant interval := p_timeout;
  v_until timestamptz;
  v_left_ms int;
  v_nap_ms int := 1;
  v_belled boolean := false;
  -- The reply bell (0 to 3) found before the last look at the request, the one waited on last, and how
  -- long to block on it at most.
  v_bell int;
  v_last_bell int;
  v_bell_wait_ms int := 50;
  -- How long to block on the request lock at most (see below).
  v_lock_wait_ms int := 50;
begin
  loop
    select q.state, q.reply, q.reply_json, q.reply_headers, q.error_code, q.error_message, q.deadline,
           q.origin_xact, q.attempt, q.channel_id, q.seq, q.handed, q.reply_to, q.responder_id
      into r
      from :SCHEMA.pgrr_request q
     where q.id = v_id and q.caller = session_user;
    if not found then
      raise exception 'pgrr: unknown request %', v_id using errcode = 'PR005',
        hint = 'The id was never issued (to this login), its reply was already consumed, or it expired.';
    end if;
    if v_until is null then
      -- A snapshot taken once for the whole transaction would never see the reply.
      if current_setting('transaction_isolation') <> 'read committed' then
        raise exception 'pgrr: await_reply needs the READ COMMITTED isolation level, not %',
          current_setting('transaction_isolation') using errcode = '0A000';
      end if;
      if r.origin_xact = pg_current_xact_id_if_assigned() then
        raise exception 'pgrr: request % was made in this same transaction and cannot be answered before it commits', v_id
          using errcode = 'PR006', hint = 'Commit after request() and call await_reply() in a later transaction.';
      end if;
      -- Clamped to [now, deadline]: any interval, infinite or negative ones included, is a valid timeout.
      v_until := clock_timestamp()
                 + greatest(least(timeout, r.deadline - clock_timestamp()), interval '0');
    end if;

    case r.state
      when 'replied' then
        delete from :SCHEMA.pgrr_request q where q.id = v_id;
        reply := r.reply;
        reply_json := coalesce(r.reply_json, false);
        reply_headers := r.reply_headers;
        return;
      when 'failed' then
        delete from :SCHEMA.pgrr_request q where q.id = v_id;
        if r.error_code = 'PGRR_DEADLINE' then
          -- The responder gave up at the deadline: the caller's timeout, as for TypeScript callers.
          raise exception 'pgrr: request % reached its deadline', v_id using errcode = 'PR002';
        end if;
        raise exception '%', r.error_message using errcode = 'PR003', detail = coalesce(r.error_code, '');
      when 'lost' then
        delete from :SCHEMA.pgrr_request q where q.id = v_id;
        raise exception 'pgrr: the responder of request % ended without replying', v_id using errcode = 'PR004';
      when 'cancelled' then
        raise exception 'pgrr: request % was cancelled', v_id using errcode = 'PR009';
      else
        null;
    end case;

    v_left_ms := ceil(extract(epoch from v_until - clock_timestamp()) * 1000);
    if v_left_ms <= 0 then
      -- (Nothing to cancel: anything this statement wrote would roll back with the raise. A request past
      -- its deadline is never claimed, its responder's deadline timer aborts a running handler, and the
      -- sweeper deletes the row.)
      raise exception 'pgrr: timed out waiting for the reply to request %', v_id using errcode = 'PR002';
    end if;

    if r.state = 'pending' then
      -- Wait for the next claim on the channel's bell, once: a claim that did not take this request (a
      -- backlog) means more waiting anyway, and many awaiters woken by every claim would cost more than
      -- their naps. Nap when no responder holds a bell, or after the first ring.
      if not v_belled and :SCHEMA.pgrr_wait_bell(r.channel_id, least(16, v_left_ms)) <> 'free' then
        v_belled := true;
      else
        perform pg_sleep(least(v_nap_ms, v_left_ms) / 1000.0);
      end if;
      v_nap_ms := least(v_nap_ms * 2, 16);
    elsif r.handed and r.reply_to is null then
      -- Handed to its responder (see pgrr_send_one), which rings its reply bell of the request's lane when
      -- it answers an SQL caller there. Find the current bell, look at the request once more (the next
      -- turn), then block on that bell: a reply that commits after that look releases it (see reply bells).
      if v_bell is null then
        v_bell := :SCHEMA.pgrr_current_reply_bell(r.responder_id, :SCHEMA.pgrr_reply_lane(r.seq), v_last_bell);
        if v_bell is null then
          -- No bell to tell: the responder's session is gone (reap it), or a session squats on its keys.
          perform :SCHEMA.pgrr_reap(array[v_id], false);
          perform pg_sleep(least(v_nap_ms, v_left_ms) / 1000.0);
          v_nap_ms := least(v_nap_ms * 2, 16);
        end if;
      else
        -- Woken by a ring, or at the timeout: that grows while the responder answers nobody from SQL (a
        -- long handler), from 50 ms to 1 s, and bounds what a ring skipped (see pgrr_ring_reply) costs.
        if :SCHEMA.pgrr_wait_lock(:SCHEMA.pgrr_ns_reply_bell(),
                                  :SCHEMA.pgrr_reply_bell_key(r.responder_id, :SCHEMA.pgrr_reply_lane(r.seq), v_bell),
                                  least(v_bell_wait_ms, v_left_ms)) then
          -- It rang: the current bell is likely the next one (see pgrr_current_reply_bell).
          v_bell_wait_ms := 50;
          v_last_bell := v_bell;
        else
          -- Timed out: it may still be current, so the next look is a full one. And the responder's session
          -- may be gone while someone squats on its keys (its holder lock, a bell): reap it then.
          v_bell_wait_ms := least(v_bell_wait_ms * 2, 1000);
          v_last_bell := null;
          perform :SCHEMA.pgrr_reap(array[v_id], false);
        end if;
        v_bell := null;
      end if;
    elsif r.handed then
      -- Handed to a responder by a TypeScript caller's request (awaited from SQL by the same login): its
      -- reply goes by NOTIFY and rings nothing. Nap, and reap it if its responder's session is gone.
      perform :SCHEMA.pgrr_reap(array[v_id], false);
      perform pg_sleep(least(v_nap_ms, v_left_ms) / 1000.0);
      v_nap_ms := least(v_nap_ms * 2, 16);
    elsif :SCHEMA.pgrr_wait_lock(:SCHEMA.pgrr_ns_request(), :SCHEMA.pgrr_request_key(v_id),
                                 least(v_lock_wait_ms, v_left_ms)) then
      -- The lock is free: the reply has committed (the usual case: the next look finds it), or the
      -- responder's session is gone (the request is still claimed: reap it).
      if exists (select 1 from :SCHEMA.pgrr_request q where q.id = v_id and q.state = 'claimed') then
        perform :SCHEMA.pgrr_reap(array[v_id], false);
      end if;
    else
      -- Still held: the handler runs on (the usual case); or another request shares the key, and this one
      -- may have been answered meanwhile (see pgrr_request_key); or someone else took the key after the
      -- responder's session ended (reap it). So the wait is bounded, from 50 ms growing to 1 s, and each
      -- wait that times out is followed by a look at the request and a reap.
      v_lock_wait_ms := least(v_lock_wait_ms * 2, 1000);
      perform :SCHEMA.pgrr_reap(array[v_id], false);
    end if;
  end loop;
end
$$;

-- await_reply_json(id [, timeout]): await_reply for JSON: a JSON reply as jsonb, a text reply as a JSON
-- string. Same errors and waiting; a JSON reply that jsonb cannot hold (a string with the escape \u0000)
-- raises 22P05 and is not consumed (await_reply returns its text).
create function :SCHEMA.await_reply_json(id bigint, timeout interval default null) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_generic_plan
as $$
declare
  o record;
begin
  o := :SCHEMA.pgrr_await(await_reply_json.id, await_reply_json.timeout);
  return case when o.reply_json then o.reply::jsonb else to_jsonb(o.reply) end;
end
$$;

-- await_reply_full(id [, timeout]): await_reply with everything the responder sent: the reply text,
-- whether it is JSON, and the headers the handler set on its reply (a jsonb object, or null). Same errors
-- and waiting.
create function :SCHEMA.await_reply_full(id bigint, timeout interval default null)
returns table (reply text, reply_json boolean, headers jsonb)
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_generic_plan
as $$
declare
  o record;
begin
  o := :SCHEMA.pgrr_await(await_reply_full.id, await_reply_full.timeout);
  reply := o.reply;
  reply_json := o.reply_json;
  headers := o.reply_headers;
  return next;
end
$$;

-- pgrr_cancel(ids): the caller gives up on these requests (its own only). Pending ones are deleted (never
-- run); claimed ones become cancelled and their responders get a NOTIFY on their control channel (payload:
-- the ids, comma separated) so the handlers' abort signals fire; finished ones are deleted. One UPDATE
-- first, so that a claim committing concurrently is waited for and re-checked rather than missed.
create function :SCHEMA.pgrr_cancel(p_ids bigint[]) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
set enable_seqscan = off
set jit = off
set plan_cache_mode = force_generic_plan
as $$
declare
  r record;
begin
  -- Row locks in id order first, as pgrr_reply takes them: two batches over the same rows never deadlock.
  perform 1 from :SCHEMA.pgrr_request q
   where q.id = any (p_ids) and q.caller = session_user
   order by q.id
     for update;
  for r in
    with marked as (
      update :SCHEMA.pgrr_request q
         set state = 'cancelled', finished_at = clock_timestamp()
       where q.id = any (p_ids) and q.state in ('pending', 'claimed') and q.caller = session_user
      returning q.id, q.responder_id
    ),
    numbered as (
      select m.responder_id, m.id, row_number() over (partition by m.responder_id order by m.id) as n
        from marked m
       where m.responder_id is not null
    )
    -- At most 300 ids (20 bytes each at most) per NOTIFY: under the 8000-byte limit.
    select b.responder_id, string_agg(b.id::text, ',' order by b.id) as ids
      from numbered b
     group by b.responder_id, (b.n - 1) / 300
  loop
    perform pg_notify(:SCHEMA.pgrr_notify_prefix() || '.w' || r.responder_id, r.ids);
  end loop;
  delete from :SCHEMA.pgrr_request q
   where q.id = any (p_ids) and q.caller = session_user
     and (q.state in ('replied', 'failed', 'lost') or (q.state = 'cancelled' and q.responder_id is null));
end
$$;

-- pgrr_ack(ids): delete finished requests whose outcome the caller (this login) has read. Locks: row locks
-- only.
create function :SCHEMA.pgrr_ack(p_ids bigint[]) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
set enable_seqscan = off
set jit = off
set plan_cache_mode = force_generic_plan
as $$
begin
  delete from :SCHEMA.pgrr_request q
   where q.id = any (p_ids) and q.state in ('replied', 'failed', 'lost') and q.caller = session_user;
end
$$;

-- pgrr_fetch(ids): the current state of these requests, for replies too large to travel in a NOTIFY and
-- for the catch-up after a reconnect. Ids not returned no longer exist, or are not this login's.
create function :SCHEMA.pgrr_fetch(p_ids bigint[])
returns table (id bigint, state text, reply text, reply_json boolean, error_code text, error_message text,
               reply_headers jsonb)
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
set enable_seqscan = off
set jit = off
set plan_cache_mode = force_generic_plan
as $$
begin
  return query
  select q.id, q.state, q.reply, q.reply_json, q.error_code, q.error_message, q.reply_headers
    from :SCHEMA.pgrr_request q
   where q.id = any (p_ids) and q.caller = session_user;
end
$$;

-- pgrr_register(channel, host, pid, concurrency): a responder announces itself. Refuses (42501) a login
-- that may not serve the channel (see Security: a grant in pgrr_channel_grant to a role it is a member of,
-- or being the owner, a member of it, or a superuser). Creates the service if new, inserts the responder
-- row and takes its responder and holder locks and its first reply bell of each lane (session level,
-- exclusive) on the calling session, which
-- must stay dedicated to this responder: from the commit on, request() sees it as live, and only this
-- session may use the responder id. Returns the NOTIFY channels to LISTEN on: the service's, the
-- responder's control channel (cancellations) and its inbox (requests handed to it, see pgrr_send); the
-- responder then calls pgrr_handed, for what was handed to it before its LISTEN.
create function :SCHEMA.pgrr_register(p_channel text, p_host text, p_pid int, p_concurrency int)
returns table (responder_id int, channel_id int, service_channel text, control_channel text, inbox_channel text)
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_generic_plan
as $$
declare
  v_channel_id int;
  v_responder_id int;
begin
  perform :SCHEMA.pgrr_raise_send_status(
    case when :SCHEMA.pgrr_valid_channel(p_channel) then 'ok' else 'invalid_channel' end, p_channel);
  select c.id into v_channel_id from :SCHEMA.pgrr_channel c where c.name = p_channel;
  -- current_user is the owner here (SECURITY DEFINER).
  if not pg_has_role(session_user, current_user, 'member')
     and not exists (select 1 from :SCHEMA.pgrr_channel_grant g
                      where g.channel_id = v_channel_id and pg_has_role(session_user, g.grantee::oid, 'member')) then
    raise exception 'pgrr: role % may not serve channel %', quote_ident(session_user), quote_literal(p_channel)
      using errcode = '42501',
            hint = 'The schema owner grants a channel with pgrr_grant_channel(channel, role) (TypeScript: grantChannel).';
  end if;
  if v_channel_id is null then
    insert into :SCHEMA.pgrr_channel as c (name) values (p_channel)
      on conflict (name) do nothing;
    select c.id into v_channel_id from :SCHEMA.pgrr_channel c where c.name = p_channel;
  end if;
  -- Never wait for the responder lock: a session squatting on the next id's key would stall the
  -- registration. Take the next id instead, a few times.
  for v_try in 1..10 loop
    insert into :SCHEMA.pgrr_responder (channel_id, host, pid, concurrency, inbox, backend_role)
      values (v_channel_id, p_host, p_pid, p_concurrency,
              :SCHEMA.pgrr_notify_prefix() || '.h' || lpad(to_hex(:SCHEMA.pgrr_random_id()), 16, '0'),
              (select a.usesysid from pg_stat_get_activity(pg_backend_pid()) a))
      returning pgrr_responder.id, pgrr_responder.inbox into v_responder_id, inbox_channel;
    if pg_try_advisory_lock(:SCHEMA.pgrr_ns_holder(), v_responder_id) then
      exit when pg_try_advisory_lock(:SCHEMA.pgrr_ns_responder(), v_responder_id);
      perform pg_advisory_unlock(:SCHEMA.pgrr_ns_holder(), v_responder_id);
    end if;
    delete from :SCHEMA.pgrr_responder r where r.id = v_responder_id;
    v_responder_id := null;
  end loop;
  if v_responder_id is null then
    raise exception 'pgrr: could not take a responder lock (other sessions hold the keys of new responder ids)'
      using errcode = '55P03';
  end if;
  -- Bell 0 of every lane: its awaiters wait on it until the first reply there. A key another session holds
  -- already leaves that lane without a bell (its awaiters nap instead); it is never waited for.
  for v_lane in 0..:SCHEMA.pgrr_reply_lanes() - 1 loop
    if pg_try_advisory_lock(:SCHEMA.pgrr_ns_reply_bell(), :SCHEMA.pgrr_reply_bell_key(v_responder_id, v_lane, 0)) then
      perform set_config(:SCHEMA.pgrr_reply_bell_setting(v_responder_id, v_lane), '0', false);
    end if;
  end loop;
  responder_id := v_responder_id;
  channel_id := v_channel_id;
  service_channel := :SCHEMA.pgrr_notify_prefix() || '.s' || v_channel_id;
  control_channel := :SCHEMA.pgrr_notify_prefix() || '.w' || v_responder_id;
  return next;
end
$$;

-- Whether this session registered the responder (pgrr_register): the row names this backend and login.
-- What proves, in the responder's own calls, that a responder id is the caller's (see Security).
-- plpgsql, not SQL: an SQL function with a subquery is never inlined, and one that is not inlined is
-- parsed and planned on every call; plpgsql keeps its plan for the session.
create function :SCHEMA.pgrr_registered_here(p_responder int) returns boolean
language plpgsql stable
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_generic_plan
as $$
begin
  return exists (select 1 from :SCHEMA.pgrr_responder r
                  where r.id = p_responder and r.backend_pid = pg_backend_pid() and r.login = session_user);
end
$$;

-- pgrr_report(responder, ...): a responder's counters, written to its own row (see pgrr_responder). Does
-- nothing for a responder id this session did not register.
create function :SCHEMA.pgrr_report(
  p_responder int, p_handled_total bigint, p_failed_total bigint, p_handled_last_minute int,
  p_failed_last_minute int, p_running int
) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_generic_plan
as $$
begin
  update :SCHEMA.pgrr_responder r
     set handled_total = p_handled_total, failed_total = p_failed_total,
         handled_last_minute = p_handled_last_minute, failed_last_minute = p_failed_last_minute,
         running = p_running, reported_at = clock_timestamp()
   where r.id = p_responder and r.backend_pid = pg_backend_pid() and r.login = session_user;
end
$$;

-- pgrr_unregister(responder): stop being live (drain). Marks the row unregistered and releases the
-- responder lock: no request goes to this responder any more, even when another session takes that lock
-- (see pgrr_live_responder). The row stays, and so does the holder lock, until the session ends (the sweep
-- then deletes the row): the requests in flight, claimed or handed, are still this session's to answer.
-- Does nothing for a responder id this session did not register, nor a second time (the lock would not be
-- held any more).
create function :SCHEMA.pgrr_unregister(p_responder int) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_generic_plan
as $$
begin
  update :SCHEMA.pgrr_responder r
     set unregistered = true
   where r.id = p_responder and r.backend_pid = pg_backend_pid() and r.login = session_user and not r.unregistered;
  if found then
    perform pg_advisory_unlock(:SCHEMA.pgrr_ns_responder(), p_responder);
  end if;
end
$$;


-- Tries to take the request lock of request id at session level, without waiting (see pgrr_claim). A
-- function so the claim can take it once per updated row from its RETURNING list.
create function :SCHEMA.pgrr_hold_request_lock(p_id bigint) returns boolean
language sql volatile
as $$ select pg_catalog.pg_try_advisory_lock(:SCHEMA.pgrr_ns_request(), :SCHEMA.pgrr_request_key(p_id)) $$;

-- Moves the request lock of request id from session to transaction scope, if this session holds it: true
-- then, false (without waiting) when another session holds it or nobody did. With the registration, what
-- proves in pgrr_reply that the caller is the responder holding the request. One hold of the key only: a
-- session that holds it for two requests (see pgrr_request_key) keeps the other.
create function :SCHEMA.pgrr_release_request_lock(p_id bigint) returns boolean
language sql volatile
as $$
  select case when pg_catalog.pg_try_advisory_xact_lock(:SCHEMA.pgrr_ns_request(), :SCHEMA.pgrr_request_key(p_id))
              then pg_catalog.pg_advisory_unlock(:SCHEMA.pgrr_ns_request(), :SCHEMA.pgrr_request_key(p_id))
              else false end
$$;

-- pgrr_claim(responder, channel, limit, after_seq): take up to limit pending requests of the channel with a
-- seq above after_seq, oldest first,
-- and at most pgrr_claim_max_bytes() of payloads (rows are added while the payloads before them sum to
-- less than that, so always at least one): a backlog of huge payloads cannot make one claim exhaust the
-- responder's memory. Raises 42501 unless this session registered the responder, for this channel.
-- FOR UPDATE SKIP LOCKED lets competing responders claim concurrently without waiting on each other; each
-- claimed row gets its request lock (session level, exclusive) inside this same transaction, so the lock
-- is held before anyone can see the row as claimed. Returns the remaining time to the deadline and the
-- time spent waiting since the request was made, both in ms, and each row's seq.
-- after_seq is the responder's cursor: every NOTIFY of new pending requests carries the lowest seq it
-- announces, and the responder claims from there, so the index scan starts past the entries of requests
-- already claimed (dead, but kept while any transaction might still see them). A slow poll claims from 0
-- and so finds anything a cursor could have skipped (a request whose NOTIFY was lost).
create function :SCHEMA.pgrr_claim(p_responder int, p_channel_id int, p_limit int, p_after_seq bigint default 0)
returns table (id bigint, seq bigint, payload text, payload_json boolean, headers jsonb, attempt int,
               remaining_ms int, queued_ms int, locked boolean)
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
set enable_seqscan = off
set jit = off
set plan_cache_mode = force_generic_plan
as $$
declare
  r record;
  v_ring boolean := false;
begin
  if not exists (select 1 from :SCHEMA.pgrr_responder x
                  where x.id = p_responder and x.channel_id = p_channel_id
                    and x.backend_pid = pg_backend_pid() and x.login = session_user) then
    raise exception 'pgrr: responder % of channel % was not registered by this session', p_responder, p_channel_id
      using errcode = '42501';
  end if;
  for r in
  with candidates as (
    -- octet_length reads the stored size: a large payload is not detoasted to be measured.
    select q.id, q.ctid as tid, q.seq, octet_length(q.payload) as bytes
      from :SCHEMA.pgrr_request q
     where q.channel_id = p_channel_id and q.responder_id is null and q.state = 'pending' and q.seq > p_after_seq
       and q.deadline > clock_timestamp()
     order by q.seq
     limit p_limit
       for update skip locked
  ),
  picked as (
    -- Rows left out stay pending; their row locks end with this statement's transaction.
    select s.id, s.tid
      from (select c.id, c.tid, sum(c.bytes) over (order by c.seq rows between unbounded preceding and current row) - c.bytes
                          as before
              from candidates c) s
     where s.before < :SCHEMA.pgrr_claim_max_bytes()
  )
  -- By ctid: a row locked above is changed by nothing else, and its version is the one the lock returned.
  -- Joined by id instead, a generic plan made while the table looked empty scanned the whole primary key
  -- once per claim and compared every row with every picked one (see pgrr_reply).
  update :SCHEMA.pgrr_request q
     set state = 'claimed', responder_id = p_responder, claimed_at = clock_timestamp(),
         attempt = q.attempt + 1
    from picked
   where q.ctid = picked.tid and q.id = picked.id
  returning q.id, q.seq, q.payload, q.payload_json, q.headers, q.attempt,
            greatest(0, ceil(extract(epoch from q.deadline - clock_timestamp()) * 1000))::int as remaining_ms,
            greatest(0, floor(extract(epoch from clock_timestamp() - q.created_at) * 1000))::int as queued_ms,
            :SCHEMA.pgrr_hold_request_lock(q.id) as locked, q.reply_to is null as sql_caller
  loop
    if r.locked then
      id := r.id; seq := r.seq; payload := r.payload; payload_json := r.payload_json; headers := r.headers;
      attempt := r.attempt; remaining_ms := r.remaining_ms; queued_ms := r.queued_ms; locked := true;
      v_ring := v_ring or r.sql_caller;
      return next;
    else
      -- Another session holds this request's lock key: a responder that claimed another request with the
      -- same key (see pgrr_request_key), or a session that should not (it cannot have aimed at this
      -- request: the key comes from the secret id). Never wait on it (that would stall this claim, its
      -- row locks and the responder): leave the request pending, for a later claim.
      update :SCHEMA.pgrr_request q
         set state = 'pending', responder_id = null, claimed_at = null, attempt = q.attempt - 1
       where q.id = r.id;
    end if;
  end loop;
  -- Only SQL awaiters wait on the bell; TypeScript callers hear of their replies by NOTIFY.
  if v_ring then
    perform :SCHEMA.pgrr_ring(p_responder, p_channel_id);
  end if;
end
$$;

-- pgrr_handed(responder): the requests handed to this responder (see pgrr_send) that are still in its
-- hands, with what pgrr_claim returns for a claimed one. The responder runs those it has not heard of:
-- their NOTIFY went out while its LISTEN session was away. Raises 42501 unless this session registered
-- the responder.
create function :SCHEMA.pgrr_handed(p_responder int)
returns table (id bigint, seq bigint, payload text, payload_json boolean, headers jsonb, attempt int,
               remaining_ms int, queued_ms int)
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
set jit = off
set plan_cache_mode = force_generic_plan
as $$
begin
  if not :SCHEMA.pgrr_registered_here(p_responder) then
    raise exception 'pgrr: responder % was not registered by this session', p_responder using errcode = '42501';
  end if;
  return query
  select q.id, q.seq, q.payload, q.payload_json, q.headers, q.attempt,
         greatest(0, ceil(extract(epoch from q.deadline - clock_timestamp()) * 1000))::int,
         0
    from :SCHEMA.pgrr_request q
   where q.responder_id = p_responder and q.handed and q.state = 'claimed';
end
$$;

-- pgrr_decline(responder, ids): gives back requests handed to this responder that it will not run (no
-- free slot, or it is stopping): they become pending again, as if never handed, and the service channel
-- is notified so that any responder claims them (and the reply bells of their lanes ring, for SQL
-- awaiters); those the caller cancelled meanwhile are deleted.
-- Raises 42501 unless this session registered the responder; ids not handed to it are ignored. Row
-- locks in id order, as pgrr_cancel and pgrr_reply take them.
create function :SCHEMA.pgrr_decline(p_responder int, p_ids bigint[]) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
set enable_seqscan = off
set jit = off
set plan_cache_mode = force_generic_plan
as $$
declare
  r record;
begin
  if not :SCHEMA.pgrr_registered_here(p_responder) then
    raise exception 'pgrr: responder % was not registered by this session', p_responder using errcode = '42501';
  end if;
  perform 1 from :SCHEMA.pgrr_request q
   where q.id = any (p_ids) and q.responder_id = p_responder and q.handed
   order by q.id
     for update;
  delete from :SCHEMA.pgrr_request q
   where q.id = any (p_ids) and q.responder_id = p_responder and q.handed and q.state = 'cancelled';
  for r in
    with given as materialized (
      update :SCHEMA.pgrr_request q
         set state = 'pending', responder_id = null, claimed_at = null, attempt = q.attempt - 1, handed = false
       where q.id = any (p_ids) and q.responder_id = p_responder and q.handed and q.state = 'claimed'
      returning q.channel_id, q.seq, q.reply_to
    )
    select g.channel_id, min(g.seq) as seq, null::int as lane from given g group by g.channel_id
    -- SQL awaiters of these requests wait on this responder's reply bells: ring their lanes, so that they
    -- see at once that the request waits in the table again.
    union all
    select distinct null::int, null::bigint, :SCHEMA.pgrr_reply_lane(g.seq) from given g where g.reply_to is null
  loop
    if r.lane is not null then
      perform :SCHEMA.pgrr_ring_reply(p_responder, r.lane);
    else
      perform pg_notify(:SCHEMA.pgrr_notify_prefix() || '.s' || r.channel_id, r.seq::text);
    end if;
  end loop;
end
$$;

-- The entry of one outcome in a TypeScript caller's reply NOTIFY (see pgrr_reply): [id, 'r', is_json, body]
-- or [id, 'f', code, message], with the reply headers last when there are any; and the short form without
-- body and headers, sent instead when the entry would exceed 1500 bytes (the caller then fetches it).
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

-- The message stored for a reply (or error message) over its channel's max_payload_bytes.
create function :SCHEMA.pgrr_too_large_message(p_failed boolean, p_body text, p_max_bytes int, p_channel text)
returns text
language sql stable
as $$
  select pg_catalog.format('the %s of %s bytes is over the limit of %s bytes of channel %s',
                           case when p_failed then 'error message' else 'reply' end,
                           pg_catalog.octet_length(p_body), p_max_bytes, p_channel)
$$;

-- pgrr_reply_one(responder, id, failed, body, json, code [, headers]): pgrr_reply for one request that was
-- handed to this responder (see pgrr_send_one), with scalar arguments: the same outcome, stored and
-- NOTIFYed as pgrr_reply does, in two statements instead of one large one (the whole cost of a lone
-- reply is its statements' set-up). A request that was claimed goes through pgrr_reply, which moves its
-- request lock. Returns 1 when the outcome was written, else 0: the request is not in this responder's
-- hands, or this session did not register the responder, or the caller cancelled it (the row is then
-- deleted, as pgrr_reply does).
create function :SCHEMA.pgrr_reply_one(
  p_responder int, p_id bigint, p_failed boolean, p_body text, p_json boolean, p_code text, p_headers text default null
) returns int
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
-- As pgrr_reply: without it, a plan made while the table was nearly empty read the whole table per reply.
set enable_seqscan = off
set jit = off
set plan_cache_mode = force_generic_plan
as $$
declare
  v_max_bytes int;
  v_channel text;
  v_too_large boolean;
  v_failed boolean;
  v_headers jsonb;
  v_reply_to text;
  v_seq bigint;
  v_code text;
  v_entry text;
begin
  -- What proves that this session is the responder's (see Security), and its channel's limit.
  select coalesce(c.max_payload_bytes, :SCHEMA.pgrr_default_max_payload_bytes()), c.name into v_max_bytes, v_channel
    from :SCHEMA.pgrr_responder w
    join :SCHEMA.pgrr_channel c on c.id = w.channel_id
   where w.id = p_responder and w.backend_pid = pg_backend_pid() and w.login = session_user;
  if not found then
    return 0;
  end if;
  v_too_large := coalesce(octet_length(p_body) > v_max_bytes, false);
  v_failed := coalesce(p_failed, false) or v_too_large;
  if p_headers is not null and octet_length(p_headers) <= 65536 then
    v_headers := :SCHEMA.pgrr_parse_headers(p_headers);
  end if;
  update :SCHEMA.pgrr_request q
     set state = case when v_failed then 'failed' else 'replied' end,
         reply = case when v_failed then null else p_body end,
         reply_json = case when v_failed then null else coalesce(p_json, false) end,
         error_code = case when p_failed then p_code when v_too_large then 'INVALID_REPLY' end,
         error_message = case when v_too_large then :SCHEMA.pgrr_too_large_message(p_failed, p_body, v_max_bytes, v_channel)
                              when v_failed then p_body end,
         reply_headers = v_headers,
         finished_at = clock_timestamp()
   where q.id = p_id and q.responder_id = p_responder and q.handed and q.state = 'claimed'
  returning q.reply_to, q.seq, q.error_code,
            :SCHEMA.pgrr_reply_entry(q.id, v_failed, q.error_code, q.reply_json, coalesce(q.reply, q.error_message), v_headers)
    into v_reply_to, v_seq, v_code, v_entry;
  if not found then
    delete from :SCHEMA.pgrr_request q
     where q.id = p_id and q.responder_id = p_responder and q.handed and q.state = 'cancelled';
    return 0;
  end if;
  if v_reply_to is null then
    -- An SQL caller: it waits on this responder's reply bell of the request's lane.
    perform :SCHEMA.pgrr_ring_reply(p_responder, :SCHEMA.pgrr_reply_lane(v_seq));
  else
    if octet_length(v_entry) > 1500 then
      v_entry := :SCHEMA.pgrr_reply_short_entry(p_id, v_failed, v_code, p_json);
    end if;
    perform pg_notify(v_reply_to, '[' || v_entry || ']');
  end if;
  return 1;
end
$$;

-- pgrr_reply(responder, ids, failed, bodies, json, codes [, headers]): write the outcomes of handled
-- requests, with the headers each handler set on its reply (flat JSON objects of strings, or null).
-- Only this session's own responder's requests are written (the others are ignored): the session must be the
-- one that registered the responder, and hold the request lock of each claimed request (a handed one has
-- none), so that a session cannot answer for another responder, even one that took a request's lock after
-- its responder's session ended. Each of those locks moves from session to transaction scope first, so
-- awaiters wake exactly when this commits. Rows the caller cancelled meanwhile are deleted instead. A
-- reply (or error message) larger than the channel's max_payload_bytes is stored as a failure with code
-- INVALID_REPLY (or the handler's code) and a message that says so. NOTIFY: per TypeScript caller, JSON
-- arrays of entries [id, 'r', is_json, body (, headers)] / [id, 'f', code, message (, headers)]; a body or
-- message whose entry
-- would exceed 1500 bytes is left out (the caller fetches it); entries are grouped so that every payload
-- stays under the 8000-byte NOTIFY limit.
create function :SCHEMA.pgrr_reply(
  p_responder int, p_ids bigint[], p_failed boolean[], p_bodies text[], p_json boolean[], p_codes text[],
  p_headers text[] default null
) returns int
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
-- Its statement is planned once per session, maybe while the table is nearly empty; then a sequential scan
-- looks cheapest and stays in the cached plan as the table grows. Every access here is by primary key.
set enable_seqscan = off
set jit = off
set plan_cache_mode = force_generic_plan
as $$
declare
  r record;
  v_count int := 0;
  v_registered boolean;
  v_max_bytes int;
  v_channel text;
begin
  -- Every request of the responder belongs to the session that registered it; claimed ones also carry a
  -- request lock that the session holds, handed ones none. A responder serves one channel, so every
  -- request it holds has that channel's limit.
  select w.backend_pid = pg_backend_pid() and w.login = session_user,
         coalesce(c.max_payload_bytes, :SCHEMA.pgrr_default_max_payload_bytes()), c.name
    into v_registered, v_max_bytes, v_channel
    from :SCHEMA.pgrr_responder w
    join :SCHEMA.pgrr_channel c on c.id = w.channel_id
   where w.id = p_responder;
  v_registered := coalesce(v_registered, false);
  for r in
    -- Materialized, so that every join below probes the primary key once per input row: inline, the
    -- generic plan re-ran the unnest (bodies included) once per matching row, quadratic in the batch.
    with input as materialized (
      select t.id, coalesce(t.failed, false) as failed, t.body, coalesce(t.is_json, false) as is_json, t.code,
             case when t.headers is not null and octet_length(t.headers) <= 65536
                  then :SCHEMA.pgrr_parse_headers(t.headers) end as headers
        from unnest(p_ids, p_failed, p_bodies, p_json, p_codes, p_headers)
             as t(id, failed, body, is_json, code, headers)
    ),
    -- Row locks taken here, in id order, as pgrr_cancel takes them: a cancel of the same rows never
    -- deadlocks with this (a deadlock would cost the whole batch, and this session with it).
    -- Rows locked here are read as they are now (a cancel may have committed since this statement's
    -- snapshot): the steps below go by this state, not by what their own scans of the snapshot see.
    -- Their ctid lets the steps below fetch them without the index (a row this statement locked is
    -- changed by nothing else; one that a cancel changed after this statement's snapshot was taken is
    -- then not found by them, and stays for the sweeper).
    -- One primary-key probe per input row, in id order, whatever the table's statistics say: a lateral
    -- subquery that OFFSET 0 keeps from being merged into a join. As a plain join, the generic plan made
    -- while the table looked empty (just vacuumed, say) scanned the whole primary key and compared every
    -- row with every input row: O(table) per reply, and 46 x 46 rescans of the input for a batch of 46.
    owned as materialized (
      select i.*, q.tid, q.seq, q.handed, q.state
        from (select * from input order by id) i
        cross join lateral (
          select q.ctid as tid, q.seq, q.handed, q.state
            from :SCHEMA.pgrr_request q
           where q.id = i.id and q.responder_id = p_responder and q.state in ('claimed', 'cancelled')
             for update of q
          offset 0
        ) q
    ),
    held as materialized (
      select o.* from owned o
       where case when not v_registered then false
                  when o.handed then true
                  else :SCHEMA.pgrr_release_request_lock(o.id) end
    ),
    gone as (
      delete from :SCHEMA.pgrr_request q
       using held h
       where q.ctid = h.tid and q.id = h.id and h.state = 'cancelled'
    ),
    done as (
      update :SCHEMA.pgrr_request q
         set state = case when h.failed or x.too_large then 'failed' else 'replied' end,
             reply = case when h.failed or x.too_large then null else h.body end,
             reply_json = case when h.failed or x.too_large then null else h.is_json end,
             error_code = case when h.failed then h.code when x.too_large then 'INVALID_REPLY' end,
             error_message = case
               when x.too_large then :SCHEMA.pgrr_too_large_message(h.failed, h.body, v_max_bytes, v_channel)
               when h.failed then h.body
             end,
             reply_headers = h.headers,
             finished_at = clock_timestamp()
        from held h,
             lateral (select coalesce(octet_length(h.body) > v_max_bytes, false) as too_large) x
       where q.ctid = h.tid and q.id = h.id and h.state = 'claimed'
      returning q.id, q.seq, q.reply_to, q.handed, q.state = 'failed' as failed,
                case when q.state = 'failed' then q.error_message else q.reply end as body,
                q.reply_json as is_json, q.error_code as code, q.reply_headers as headers
    ),
    entries as (
      select d.reply_to, d.id, d.failed, d.code, d.is_json,
             :SCHEMA.pgrr_reply_entry(d.id, d.failed, d.code, d.is_json, d.body, d.headers) as full_entry
        from done d
       where d.reply_to is not null
    ),
    sized as (
      select e.reply_to, e.id, x.entry,
             sum(octet_length(x.entry) + 1) over (partition by e.reply_to order by e.id) as running
        from entries e,
             lateral (select case when octet_length(e.full_entry) <= 1500 then e.full_entry
                                  else :SCHEMA.pgrr_reply_short_entry(e.id, e.failed, e.code, e.is_json) end as entry) x
    )
    select s.reply_to, '[' || string_agg(s.entry, ',' order by s.id) || ']' as payload, null::int as lane
      from sized s
     group by s.reply_to, (s.running - 1) / 6000
    -- A row without reply_to for each lane where a handed request of an SQL caller was answered: ring it.
    union all
    select distinct null, null, :SCHEMA.pgrr_reply_lane(d.seq) from done d where d.reply_to is null and d.handed
  loop
    if r.reply_to is null then
      perform :SCHEMA.pgrr_ring_reply(p_responder, r.lane);
    else
      perform pg_notify(r.reply_to, r.payload);
      v_count := v_count + 1;
    end if;
  end loop;
  return v_count;
end
$$;

-- pgrr_sweep_older_than(grace): delete requests past their deadline by more than grace (nobody waits for
-- them any more) unless a live responder still holds them (its reply must find the row to release the
-- request lock; a handed request has no request lock to release, and its responder ended it at the
-- deadline), and responder rows whose session is gone: its holder lock is free, or held while the session
-- no longer exists (see pgrr_session_gone), by a session that took the key since. That ends a phantom,
-- a dead responder that a squatter on its keys keeps listed as live (see Security): no request goes to it
-- once its row is gone, and pgrr_reap takes back what went to it (it needs no row for that). Returns the
-- number of requests deleted. Owner only: a short grace deletes requests whose callers still wait;
-- responders get pgrr_sweep(). Costs one read of the server's backends, which is why it is done here,
-- every few seconds, and never per request.
create function :SCHEMA.pgrr_sweep_older_than(p_grace interval) returns int
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
set jit = off
set plan_cache_mode = force_generic_plan
as $$
declare
  v_count int;
begin
  delete from :SCHEMA.pgrr_request q
   where q.deadline < clock_timestamp() - p_grace
     and (q.state not in ('claimed', 'cancelled') or q.responder_id is null or q.handed
          or case when :SCHEMA.pgrr_in_hand_lock_is_free(false, q.id, q.responder_id) then true
                  else :SCHEMA.pgrr_registration_gone(q.responder_id) end);
  get diagnostics v_count = row_count;
  -- One read of the server's backends for every responder (a fresh one, see pgrr_session_gone).
  perform pg_stat_clear_snapshot();
  delete from :SCHEMA.pgrr_responder r
   where :SCHEMA.pgrr_lock_is_free(:SCHEMA.pgrr_ns_holder(), r.id)
      or r.id not in (select l.id
                        from :SCHEMA.pgrr_responder l
                        join pg_stat_get_activity(null) a on a.pid = l.backend_pid and a.usesysid = l.backend_role);
  return v_count;
end
$$;

-- pgrr_sweep(): pgrr_sweep_older_than with the fixed grace of 5 seconds; what responders run.
create function :SCHEMA.pgrr_sweep() returns int
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_generic_plan
as $$
begin
  return :SCHEMA.pgrr_sweep_older_than(interval '5 seconds');
end
$$;

-- Administration (the owner only: not granted to anyone).

-- pgrr_configure_channel(channel, max_payload_bytes, max_attempts): sets a channel's limits, creating the
-- channel if new (PR007 for an invalid name). A null argument leaves that setting as it is (a new channel
-- starts with no size limit of its own, i.e. pgrr_default_max_payload_bytes(), and 1 attempt).
-- max_payload_bytes (1 to 1073741823) bounds each request's payload (PR008) and each reply;
-- max_attempts (1 to 100) is the default of requests that do not set theirs. 22023 for values out of range.
-- Returns the settings in effect.
create function :SCHEMA.pgrr_configure_channel(
  p_channel text, p_max_payload_bytes int default null, p_max_attempts int default null
) returns table (channel_id int, max_payload_bytes int, max_attempts int)
language plpgsql volatile
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_generic_plan
as $$
begin
  perform :SCHEMA.pgrr_raise_send_status(
    case when :SCHEMA.pgrr_valid_channel(p_channel) then 'ok' else 'invalid_channel' end, p_channel);
  if p_max_payload_bytes not between 1 and 1073741823 then
    raise exception 'pgrr: max_payload_bytes must be between 1 and 1073741823, got %', p_max_payload_bytes
      using errcode = '22023';
  end if;
  if p_max_attempts not between 1 and 100 then
    raise exception 'pgrr: max_attempts must be between 1 and 100, got %', p_max_attempts using errcode = '22023';
  end if;
  return query
  with saved as (
    insert into :SCHEMA.pgrr_channel as c (name, max_payload_bytes, max_attempts)
      values (p_channel, p_max_payload_bytes, coalesce(p_max_attempts, 1))
      on conflict (name) do update
        set max_payload_bytes = coalesce(p_max_payload_bytes, c.max_payload_bytes),
            max_attempts = coalesce(p_max_attempts, c.max_attempts)
    returning c.id, c.max_payload_bytes, c.max_attempts
  )
  select s.id, coalesce(s.max_payload_bytes, :SCHEMA.pgrr_default_max_payload_bytes()), s.max_attempts from saved s;
end
$$;

-- pgrr_grant_channel(channel, role): members of role may serve channel (see pgrr_register). Creates the
-- channel if new. 42704 when the role does not exist. Idempotent.
create function :SCHEMA.pgrr_grant_channel(p_channel text, p_role name) returns void
language plpgsql volatile
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_generic_plan
as $$
declare
  v_role oid;
  v_channel_id int;
begin
  perform :SCHEMA.pgrr_raise_send_status(
    case when :SCHEMA.pgrr_valid_channel(p_channel) then 'ok' else 'invalid_channel' end, p_channel);
  select a.oid into v_role from pg_roles a where a.rolname = p_role;
  if v_role is null then
    raise exception 'pgrr: role % does not exist', quote_ident(p_role) using errcode = '42704';
  end if;
  insert into :SCHEMA.pgrr_channel as c (name) values (p_channel) on conflict (name) do nothing;
  select c.id into v_channel_id from :SCHEMA.pgrr_channel c where c.name = p_channel;
  insert into :SCHEMA.pgrr_channel_grant (channel_id, grantee) values (v_channel_id, v_role::regrole)
    on conflict do nothing;
end
$$;

-- pgrr_revoke_channel(channel, role): undoes pgrr_grant_channel. Responders already registered keep
-- serving until they register again. Idempotent.
create function :SCHEMA.pgrr_revoke_channel(p_channel text, p_role name) returns void
language plpgsql volatile
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_generic_plan
as $$
begin
  delete from :SCHEMA.pgrr_channel_grant g
   using :SCHEMA.pgrr_channel c, pg_roles a
   where g.channel_id = c.id and c.name = p_channel and a.rolname = p_role and g.grantee = a.oid::regrole;
end
$$;

-- pgrr_grant_caller(role) / pgrr_grant_responder(role): the privileges of a caller or a responder (see
-- Security) for role, which must exist. Run by the migrator for the roles it is given; idempotent. USAGE
-- on the schema is granted only when the role lacks it (so the public schema's ACL is left alone).
create function :SCHEMA.pgrr_grant_caller(p_role name) returns void
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  s constant text := quote_ident(:SCHEMA_LITERAL);
begin
  if not has_schema_privilege(p_role, :SCHEMA_LITERAL, 'USAGE') then
    execute format('grant usage on schema %s to %I', s, p_role);
  end if;
  execute format('grant select on table %s.pgrr_migration to %I', s, p_role);
  execute format(
    'grant execute on function %1$s.request(text, text, interval, jsonb), %1$s.request(text, jsonb, interval, jsonb), '
    '%1$s.await_reply(bigint, interval), %1$s.await_reply_json(bigint, interval), %1$s.await_reply_full(bigint, interval), '
    '%1$s.pgrr_send(text, text[], text[], boolean[], int[], text[], int[], bigint[]), '
    '%1$s.pgrr_send_one(text, text, text, boolean, int, text, int, bigint[]), %1$s.pgrr_ack(bigint[]), '
    '%1$s.pgrr_cancel(bigint[]), %1$s.pgrr_fetch(bigint[]), %1$s.pgrr_reap(bigint[], boolean), %1$s.pgrr_notify_prefix() '
    'to %2$I', s, p_role);
end
$$;

create function :SCHEMA.pgrr_grant_responder(p_role name) returns void
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  s constant text := quote_ident(:SCHEMA_LITERAL);
begin
  if not has_schema_privilege(p_role, :SCHEMA_LITERAL, 'USAGE') then
    execute format('grant usage on schema %s to %I', s, p_role);
  end if;
  execute format('grant select on table %s.pgrr_migration to %I', s, p_role);
  execute format(
    'grant execute on function %1$s.pgrr_register(text, text, int, int), %1$s.pgrr_unregister(int), '
    '%1$s.pgrr_report(int, bigint, bigint, int, int, int), %1$s.pgrr_claim(int, int, int, bigint), '
    '%1$s.pgrr_reply(int, bigint[], boolean[], text[], boolean[], text[], text[]), %1$s.pgrr_sweep(), '
    '%1$s.pgrr_reply_one(int, bigint, boolean, text, boolean, text, text), '
    '%1$s.pgrr_handed(int), %1$s.pgrr_decline(int, bigint[]), '
    '%1$s.pgrr_reap(bigint[], boolean), %1$s.pgrr_notify_prefix() '
    'to %2$I', s, p_role);
end
$$;

-- Privileges: the owner's only (see Security). Tables and sequences have no privileges for PUBLIC unless
-- default privileges gave some; functions are executable by PUBLIC by default.
revoke all on table :SCHEMA.pgrr_channel, :SCHEMA.pgrr_channel_grant, :SCHEMA.pgrr_responder,
  :SCHEMA.pgrr_request, :SCHEMA.pgrr_migration, :SCHEMA.pgrr_live_responder from public;

do $$
declare
  v_sequence text;
begin
  foreach v_sequence in array array[
    pg_catalog.pg_get_serial_sequence(pg_catalog.quote_ident(:SCHEMA_LITERAL) || '.pgrr_channel', 'id'),
    pg_catalog.pg_get_serial_sequence(pg_catalog.quote_ident(:SCHEMA_LITERAL) || '.pgrr_responder', 'id'),
    pg_catalog.pg_get_serial_sequence(pg_catalog.quote_ident(:SCHEMA_LITERAL) || '.pgrr_request', 'seq')
  ] loop
    execute pg_catalog.format('revoke all on sequence %s from public', v_sequence);
  end loop;
end
$$;

revoke all on function
  :SCHEMA.pgrr_ns_request(), :SCHEMA.pgrr_ns_responder(), :SCHEMA.pgrr_ns_holder(), :SCHEMA.pgrr_ns_bell(),
  :SCHEMA.pgrr_bell_key(int, int), :SCHEMA.pgrr_request_key(bigint), :SCHEMA.pgrr_random_id(),
  :SCHEMA.pgrr_batch_id(uuid, int),
  :SCHEMA.pgrr_ns_reply_bell(), :SCHEMA.pgrr_reply_lanes(), :SCHEMA.pgrr_reply_lane(bigint),
  :SCHEMA.pgrr_reply_bell_key(int, int, int), :SCHEMA.pgrr_reply_bell_setting(int, int),
  :SCHEMA.pgrr_ring_reply(int, int), :SCHEMA.pgrr_current_reply_bell(int, int, int),
  :SCHEMA.pgrr_claim_max_bytes(), :SCHEMA.pgrr_default_max_payload_bytes(), :SCHEMA.pgrr_notify_prefix(),
  :SCHEMA.pgrr_valid_channel(text), :SCHEMA.pgrr_parse_headers(text),
  :SCHEMA.pgrr_send_status(boolean, boolean, text, text, jsonb, int),
  :SCHEMA.pgrr_send(text, text[], text[], boolean[], int[], text[], int[], bigint[]),
  :SCHEMA.pgrr_send_one(text, text, text, boolean, int, text, int, bigint[]),
  :SCHEMA.pgrr_handoff_entry(bigint, boolean, text, jsonb, int, timestamptz),
  :SCHEMA.pgrr_timeout_ms(interval),
  :SCHEMA.request(text, text, interval, jsonb), :SCHEMA.request(text, jsonb, interval, jsonb),
  :SCHEMA.pgrr_raise_send_status(text, text), :SCHEMA.pgrr_lock_is_free(int, int), :SCHEMA.pgrr_lock_is_free_now(int, int),
  :SCHEMA.pgrr_wait_lock(int, int, int), :SCHEMA.pgrr_wait_bell(int, int), :SCHEMA.pgrr_ring(int, int),
  :SCHEMA.pgrr_reap(bigint[], boolean), :SCHEMA.await_reply(bigint, interval), :SCHEMA.await_reply_json(bigint, interval),
  :SCHEMA.await_reply_full(bigint, interval),
  :SCHEMA.pgrr_await(bigint, interval),
  :SCHEMA.pgrr_cancel(bigint[]), :SCHEMA.pgrr_ack(bigint[]), :SCHEMA.pgrr_fetch(bigint[]),
  :SCHEMA.pgrr_register(text, text, int, int), :SCHEMA.pgrr_report(int, bigint, bigint, int, int, int),
  :SCHEMA.pgrr_unregister(int), :SCHEMA.pgrr_registered_here(int),
  :SCHEMA.pgrr_hold_request_lock(bigint), :SCHEMA.pgrr_release_request_lock(bigint),
  :SCHEMA.pgrr_claim(int, int, int, bigint), :SCHEMA.pgrr_reply(int, bigint[], boolean[], text[], boolean[], text[], text[]),
  :SCHEMA.pgrr_reply_one(int, bigint, boolean, text, boolean, text, text),
  :SCHEMA.pgrr_reply_entry(bigint, boolean, text, boolean, text, jsonb), :SCHEMA.pgrr_reply_short_entry(bigint, boolean, text, boolean),
  :SCHEMA.pgrr_too_large_message(boolean, text, int, text),
  :SCHEMA.pgrr_handed(int), :SCHEMA.pgrr_decline(int, bigint[]),
  :SCHEMA.pgrr_in_hand_lock_is_free(boolean, bigint, int), :SCHEMA.pgrr_session_gone(int, oid),
  :SCHEMA.pgrr_registration_gone(int),
  :SCHEMA.pgrr_sweep(), :SCHEMA.pgrr_sweep_older_than(interval), :SCHEMA.pgrr_configure_channel(text, int, int),
  :SCHEMA.pgrr_grant_channel(text, name), :SCHEMA.pgrr_revoke_channel(text, name),
  :SCHEMA.pgrr_grant_caller(name), :SCHEMA.pgrr_grant_responder(name)
from public;
