-- 13_roles.sql: roles and grants, and the security model they are part of.
--
-- The database may be shared with other teams' code: the request table must not become a way to read
-- other people's data or to impersonate a service.
--   The functions are the only way in. No role but the owner (the role that ran the migration) has any
--   privilege on the tables or sequences, and the migrator revokes EXECUTE from PUBLIC on every function of
--   the protocol once it is installed. The entry points are SECURITY DEFINER: they run as the owner, with
--   search_path pinned to pg_catalog, pg_temp (pg_temp last, so a temporary object cannot shadow anything;
--   every name of ours is schema-qualified anyway), and none runs dynamic SQL. Internal helpers stay
--   SECURITY INVOKER and executable by the owner only: they run inside the entry points, as the owner.
--   Two sets of entry points, granted to roles by pgrr_grant_caller(role) and pgrr_grant_responder(role)
--   (migrate({ roles }) or `pgrr migrate --caller-role x --responder-role y` create NOLOGIN roles when
--   missing and call these). Both sets also get USAGE on the schema and SELECT on pgrr_migration and
--   pgrr_protocol (the version check of clients). Each grant is recorded in pgrr_role, and the migrator
--   grants every new protocol to the recorded roles again. A login that both asks and answers is made a
--   member of both roles.
--   Who is asking: session_user, recorded on each request (pgrr_request.caller) and responder
--   (pgrr_responder.login). Inside a SECURITY DEFINER function current_user is the owner for every caller,
--   so it identifies nobody. session_user is the role the session logged in as, and only a superuser can
--   change it (SET ROLE changes current_user only), so it cannot be forged. Hence: one login per
--   application; sessions of one login are told apart by the request id.
--   A request's id is its secret: 62 random bits from gen_random_uuid() (a cryptographic generator), so
--   that another session of the same login cannot guess the id of a request it did not make. Claims are
--   ordered by a separate sequential column (seq); request locks are keyed on the id (01_keys.sql).
--   Requests of another login are invisible: await_reply, pgrr_fetch, pgrr_ack and pgrr_cancel act only
--   on the caller's own requests; an id of another login is
--   'unknown' (PR005), the same as a wrong one, so ids cannot be probed across logins either.
--   Responders serve only channels granted to them (05_registration.sql), a responder id is usable only by
--   the session that registered it, and pgrr_reply writes only outcomes of requests held by that responder
--   or by another registration of the same login and process (host and pid, as registered), and of an SQL
--   caller's only on its own responder's session: a responder can neither claim another channel's requests
--   nor answer for another login's responder, and answering for another of its own login needs the secret
--   id of a request that responder holds. pgrr_renew renews leases (and writes counters and statistics)
--   by the same rule: of the calling session's registration and of others of the same login and process.
--   NOTIFY channels are not secret (anyone may LISTEN or NOTIFY): they carry wake-ups, request ids (useless
--   without being their caller), and, on channels whose names end in 62 or 64 random bits known only to
--   the owner and their listener, handed requests (a responder's inbox) and replies (a TypeScript caller's
--   reply channel).
--   Squatters: any login may take any advisory lock. Request locks are keyed on the secret id, so none can
--   keep a queued request from being claimed; what responder locks say is checked against the sessions
--   themselves (04_liveness.sql); squatting on a bell only makes awaiters nap (03_bells.sql).
--   What no function here can prevent: any login of the database can deny service, for instance by filling
--   the NOTIFY queue (pg_notify, and so every request, then fails), by using up the connections, by
--   holding the keys of every next responder id (registrations then fail), or by keeping a transaction
--   open (VACUUM cannot clean up behind it). What it cannot do: read another login's requests or replies,
--   answer in a responder's stead, or make requests vanish silently (handed to a responder that is not
--   there, and never taken back) for longer than a sweep interval.
-- Hostile input. Every entry point takes values only as parameters; channel names never become
-- identifiers (NOTIFY channels are built from numeric ids). A channel name is 1 to 63 bytes without control
-- characters (pgrr_valid_channel), else PR007. A request's payload and a reply are limited to the channel's
-- max_payload_bytes (pgrr_configure_channel; default 64 MiB): PR008 for requests, an INVALID_REPLY failure
-- for replies. Headers must be a flat JSON object of strings of at most 64 KiB. One claim returns at most
-- pgrr_claim_max_bytes() of payloads (always at least one request), so a backlog of huge payloads cannot
-- make one claim exhaust a responder's memory. Nothing a caller stores can make a responder's reply
-- statement fail (reply channels are validated when the request is made).
-- Locks: none. NOTIFY: none.

-- pgrr_grant_caller(role) / pgrr_grant_responder(role): the privileges of a caller or a responder for
-- role, which must exist. Run by the migrator for the roles it is given and those recorded; idempotent.
-- USAGE on the schema is granted only when the role lacks it (so the public schema's ACL is left alone).
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
  execute format('grant select on table %1$s.pgrr_migration, %1$s.pgrr_protocol to %2$I', s, p_role);
  execute format(
    'grant execute on function %1$s.request(text, text, interval, jsonb), %1$s.request(text, jsonb, interval, jsonb), '
    '%1$s.await_reply(bigint, interval), %1$s.await_reply_json(bigint, interval), %1$s.await_reply_full(bigint, interval), '
    '%1$s.pgrr_send(text, text[], text[], boolean[], int[], text[], int[]), '
    '%1$s.pgrr_send_one(text, text, text, boolean, int, text, int), %1$s.pgrr_ack(bigint[]), '
    '%1$s.pgrr_cancel(bigint[]), %1$s.pgrr_fetch(bigint[]), %1$s.pgrr_reap(bigint[], boolean), %1$s.pgrr_notify_prefix() '
    'to %2$I', s, p_role);
  -- Scatter-gather and the services' descriptions (15_scatter.sql, 16_services.sql).
  execute format(
    'grant execute on function %1$s.request_all(text, text, interval, jsonb, int), %1$s.request_all(text, jsonb, interval, jsonb, int), '
    '%1$s.pgrr_send_all(text, text, text, boolean, int, text, int, text), %1$s.pgrr_services(text) '
    'to %2$I', s, p_role);
  -- Streamed replies (14_stream.sql).
  execute format(
    'grant execute on function %1$s.request_stream(text, text, interval, jsonb, int), '
    '%1$s.request_stream(text, jsonb, interval, jsonb, int), %1$s.await_part(bigint, interval), '
    '%1$s.pgrr_stream_open(text, text, text, text, boolean, int, text, int), %1$s.pgrr_stream_ack(bigint[], int[], int[]), '
    '%1$s.pgrr_stream_fetch(bigint, int), %1$s.pgrr_stream_finish(bigint, int, boolean) '
    'to %2$I', s, p_role);
  insert into :SCHEMA.pgrr_role (role, kind) values ((select a.oid from pg_roles a where a.rolname = p_role)::regrole, 'caller') on conflict do nothing;
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
  execute format('grant select on table %1$s.pgrr_migration, %1$s.pgrr_protocol to %2$I', s, p_role);
  execute format(
    'grant execute on function %1$s.pgrr_register(text, text, int, int), %1$s.pgrr_unregister(int), %1$s.pgrr_release(int), '
    '%1$s.pgrr_renew(int, int[], jsonb[], bigint[]), %1$s.pgrr_claim(int, int, int), %1$s.pgrr_pending_channels(int[]), '
    '%1$s.pgrr_reply(int, bigint[], boolean[], text[], boolean[], text[], text[], int[]), %1$s.pgrr_sweep(), '
    '%1$s.pgrr_reply_one(int, bigint, boolean, text, boolean, text, text), '
    '%1$s.pgrr_handed(int), %1$s.pgrr_decline(int, bigint[]), '
    '%1$s.pgrr_reap(bigint[], boolean), %1$s.pgrr_notify_prefix() '
    'to %2$I', s, p_role);
  -- Services that describe themselves (16_services.sql).
  execute format(
    'grant execute on function %1$s.pgrr_describe(int, jsonb), %1$s.pgrr_services(text) '
    'to %2$I', s, p_role);
  -- Streamed replies (14_stream.sql).
  execute format(
    'grant execute on function %1$s.pgrr_stream_send(int, bigint[], text[], boolean[]), %1$s.pgrr_stream_credit(int, bigint[]) '
    'to %2$I', s, p_role);
  insert into :SCHEMA.pgrr_role (role, kind) values ((select a.oid from pg_roles a where a.rolname = p_role)::regrole, 'responder') on conflict do nothing;
end
$$;
