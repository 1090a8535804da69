-- 16_services.sql: services that describe themselves: what a responder is, how its handler has done, and
-- who may read it.
--
-- Contract. What a responder is (its description, version and the JSON Schemas of its request and reply,
-- as it was served) is written once, in the statement that registers it (pgrr_describe beside
-- pgrr_register), to its own row: pgrr_responder.info. Its handler statistics (requests, errors, average
-- and p99 handler time, last error) are kept in its memory and written to its row on its lease renewal
-- (pgrr_renew, 05_registration.sql, every 500 ms, one statement for all of a process's registrations)
-- when they changed since the last one: no row is written per request, and they are at most about half a
-- second old while the responder's event loop turns. pgrr_services reads both, for the live responders
-- only (pgrr_live_responder, the one definition of live). Ping is not here: it travels to each responder as
-- an addressed request (15_scatter.sql).
-- Only the session that registered a responder writes its info (backend pid and login, as every responder
-- entry point checks), and its stats that one or another registration of its process (see pgrr_renew);
-- anything else is ignored.
-- Locks: row locks of the responder's own row (pgrr_describe; pgrr_renew); a shared try-lock
-- (transaction level) per responder read (pgrr_live_responder). NOTIFY: none.

-- pgrr_describe(responder, info): what the responder says it is: a JSON object of at most 256 KiB (else
-- 22023), or null. Does nothing for a responder id this session did not register.
create function :SCHEMA.pgrr_describe(p_responder int, p_info jsonb) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_generic_plan
as $$
begin
  if p_info is not null and (jsonb_typeof(p_info) <> 'object' or octet_length(p_info::text) > 262144) then
    raise exception 'pgrr: a responder''s info must be a JSON object of at most 256 KiB' using errcode = '22023';
  end if;
  update :SCHEMA.pgrr_responder r
     set info = p_info
   where r.id = p_responder and r.backend_pid = pg_backend_pid() and r.login = session_user;
end
$$;

-- pgrr_services(channel): the live responders of the channel (null: of every channel), with what they
-- say they are and their statistics. Granted to callers and responders: what runs where is not a secret
-- of the tables (a caller learns that a channel has responders from its first request anyway), and the
-- rows are read only through this function. stats_at says how old the statistics are; now is the
-- database's clock at the read, to compare it with.
create function :SCHEMA.pgrr_services(p_channel text default null)
returns table (channel text, responder_id int, host text, pid int, concurrency int, started_at timestamptz,
               accepting boolean, info jsonb, stats jsonb, stats_at timestamptz, now timestamptz)
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_generic_plan
as $$
begin
  return query
  select c.name, w.id, w.host, w.pid, w.concurrency, w.started_at, l.accepting, w.info, w.stats, w.stats_at,
         clock_timestamp()
    from :SCHEMA.pgrr_live_responder l
    join :SCHEMA.pgrr_responder w on w.id = l.id
    join :SCHEMA.pgrr_channel c on c.id = l.channel_id
   where p_channel is null or c.name = p_channel
   order by c.name, w.id;
end
$$;
