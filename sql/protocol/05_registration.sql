-- 05_registration.sql: a responder announces itself, keeps its lease running (with its counters), and drains.
--
-- A responder is a row of pgrr_responder and the session that registered it: that session holds its
-- responder lock until the registration ends (see 04_liveness.sql), and only that session may use the
-- responder id: every responder entry point checks pgrr_registered_here (backend pid and login). A process
-- keeps all its registrations on one session (one per channel it serves); one of them ends with
-- pgrr_release while the others go on, all of them with the session.
-- Responders serve only channels granted to them, closed by default: pgrr_register refuses (42501) a login
-- that is neither the owner (or a member of it), a superuser, nor a member of a role granted the channel in
-- pgrr_channel_grant (12_admin.sql). Revoking does not stop a responder already registered; it stops its
-- next registration.
-- Locks: the responder lock (session level, exclusive), taken by pgrr_register, released by pgrr_release
-- or when the session ends; and the first reply bell of every lane (03_bells.sql). NOTIFY: none, except
-- pgrr_release's reap (04_liveness.sql).

-- pgrr_register(channel, host, pid, concurrency): a responder announces itself. Refuses (42501) a login
-- that may not serve the channel (see above). Creates the service if new, inserts the responder row and
-- takes its responder lock and its first reply bells on the calling session, which must stay dedicated to
-- its process's registrations: from the commit on, it is live (pgrr_live_responder). Returns the NOTIFY channels to LISTEN on: the service's,
-- the responder's control channel (cancellations) and its inbox (requests handed to it, see pgrr_send);
-- the responder then calls pgrr_handed, for what was handed to it before its LISTEN.
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
    insert into :SCHEMA.pgrr_responder (channel_id, host, pid, concurrency, inbox, backend_role, lease_until)
      values (v_channel_id, p_host, p_pid, p_concurrency,
              :SCHEMA.pgrr_notify_prefix() || '.h' || lpad(to_hex(:SCHEMA.pgrr_random_id()), 16, '0'),
              (select a.usesysid from pg_stat_get_activity(pg_backend_pid()) a),
              clock_timestamp() + :SCHEMA.pgrr_lease())
      returning pgrr_responder.id, pgrr_responder.inbox into v_responder_id, inbox_channel;
    exit when pg_try_advisory_lock(:SCHEMA.pgrr_ns_responder(), v_responder_id);
    delete from :SCHEMA.pgrr_responder r where r.id = v_responder_id;
    v_responder_id := null;
  end loop;
  if v_responder_id is null then
    raise exception 'pgrr: could not take a responder lock (other sessions hold the keys of new responder ids)'
      using errcode = '55P03';
  end if;
  -- Bell 0 of every lane (see reply bells, 03_bells.sql): its awaiters wait on it until the first reply
  -- there. A key another session holds already leaves that lane without a bell (its awaiters nap instead);
  -- it is never waited for.
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
-- What proves, in the responder's own calls, that a responder id is the caller's.
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

-- pgrr_renew(responder [, responders [, stats [, counters]]]): the leases of a process's registrations run
-- on (see 04_liveness.sql), and what they report is written: what a client runs every half second while its
-- event loop turns, one statement for all the channels it serves (a lease says that the process turns, not
-- that a session does). responders (null: responder alone) names the registrations to renew: responder,
-- which this session must have registered (else nothing is done), and others of the same process (the same
-- login, host and pid as responder's registration, the rule pgrr_reply writes by); any other is ignored.
-- By position in responders:
--   stats     a registration's handler statistics (16_services.sql) when they changed since they were last
--             written, else null; each a JSON object of at most 64 KiB (else 22023, and nothing is renewed).
--   counters  a row of five per registration, for `pgrr status`: handled and failed since it started,
--             handled and failed in the last minute, handlers running (a row of nulls: none; with counters,
--             reported_at is now). Kept in memory by the responder: nothing is written per request.
-- The lease renewal rewrites the row anyway: what rides on it costs no row version of its own.
-- Locks: the rows renewed.
create function :SCHEMA.pgrr_renew(
  p_responder int, p_responders int[] default null, p_stats jsonb[] default null, p_counters bigint[] default null
) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_generic_plan
as $$
declare
  v_host text;
  v_pid int;
begin
  if exists (select 1 from unnest(p_stats) s
              where s is not null and (jsonb_typeof(s) <> 'object' or octet_length(s::text) > 65536)) then
    raise exception 'pgrr: a responder''s stats must be a JSON object of at most 64 KiB' using errcode = '22023';
  end if;
  select w.host, w.pid into v_host, v_pid
    from :SCHEMA.pgrr_responder w
   where w.id = p_responder and w.backend_pid = pg_backend_pid() and w.login = session_user;
  if not found then
    return;
  end if;
  update :SCHEMA.pgrr_responder r
     set lease_until = clock_timestamp() + :SCHEMA.pgrr_lease(),
         stats = coalesce(p_stats[t.n], r.stats),
         stats_at = case when p_stats[t.n] is null then r.stats_at else clock_timestamp() end,
         handled_total = coalesce(p_counters[t.n][1], r.handled_total),
         failed_total = coalesce(p_counters[t.n][2], r.failed_total),
         handled_last_minute = coalesce(p_counters[t.n][3]::int, r.handled_last_minute),
         failed_last_minute = coalesce(p_counters[t.n][4]::int, r.failed_last_minute),
         running = coalesce(p_counters[t.n][5]::int, r.running),
         reported_at = case when p_counters[t.n][1] is null then r.reported_at else clock_timestamp() end
    from unnest(coalesce(p_responders, array[p_responder])) with ordinality as t(id, n)
   where r.id = t.id and r.login = session_user and r.host is not distinct from v_host and r.pid is not distinct from v_pid;
end
$$;

-- pgrr_unregister(responder): stop being live (drain): no new request goes to this responder (see
-- pgrr_live_responder), whoever holds its responder lock. The row and the lock stay until the
-- registration ends (pgrr_release, or the session's end, after which the sweep deletes the row): the
-- requests in flight, claimed or handed, are still this registration's to answer. Does nothing for a responder id this session did not register.
create function :SCHEMA.pgrr_unregister(p_responder int) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_generic_plan
as $$
begin
  update :SCHEMA.pgrr_responder r
     set unregistered = true
   where r.id = p_responder and r.backend_pid = pg_backend_pid() and r.login = session_user and not r.unregistered;
end
$$;

-- pgrr_release(responder): ends one registration of this session while the session goes on with its
-- others: what the end of the session does for all of them, for this one alone. Gives back its responder
-- lock first (an awaiter woken by any lock below finds it gone), deletes its row (from here on it is gone,
-- 04_liveness.sql), then gives back every lock of this session in the protocol's namespaces that no
-- registration left on it accounts for: the released one's reply bells, its channel's claim bell unless
-- another registration of that channel is here (03_bells.sql), the request locks of the SQL callers'
-- requests it claimed (07_claim.sql), and any lock a failed statement left behind (session locks survive a
-- rollback: a claim or a registration cut off part-way). Then reaps what it still held (pgrr_reap: back to
-- the queue, or lost). Null, or a responder id this session did not register: only the locks nothing
-- accounts for. Its own transaction: the locks go at once, the row and the reap at commit; an awaiter that
-- wakes in between finds its request claimed by a responder whose lock is free, which is gone, and reaps it
-- itself. A lock held twice for a request still claimed here (2^-32, 01_keys.sql) keeps its second hold.
-- Locks: gives back this session's advisory locks named above (read in pg_locks, every hold of each);
-- row locks of the requests reaped. NOTIFY: pgrr_reap's.
create function :SCHEMA.pgrr_release(p_responder int) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
set jit = off
set plan_cache_mode = force_generic_plan
as $$
declare
  v_channel_id int;
  r record;
begin
  select w.channel_id into v_channel_id
    from :SCHEMA.pgrr_responder w
   where w.id = p_responder and w.backend_pid = pg_backend_pid() and w.login = session_user;
  if found then
    perform pg_advisory_unlock(:SCHEMA.pgrr_ns_responder(), p_responder);
    delete from :SCHEMA.pgrr_responder w where w.id = p_responder;
    for v_lane in 0..:SCHEMA.pgrr_reply_lanes() - 1 loop
      perform set_config(:SCHEMA.pgrr_reply_bell_setting(p_responder, v_lane), '', false);
    end loop;
    if not exists (select 1 from :SCHEMA.pgrr_responder w
                    where w.channel_id = v_channel_id and w.backend_pid = pg_backend_pid() and w.login = session_user) then
      perform set_config(:SCHEMA.pgrr_bell_setting(v_channel_id), '', false);
    end if;
  end if;
  -- Every lock of the session in the four namespaces, less those the registrations left here account for:
  -- their responder locks, reply bells and channels' claim bells, and the request locks of the SQL callers'
  -- requests they claimed (a handed one has none). Keys made by the functions that define them; pg_locks
  -- shows them as oids, which cast to and from int without loss.
  for r in
    with here as (
      select w.id, w.channel_id from :SCHEMA.pgrr_responder w
       where w.backend_pid = pg_backend_pid() and w.login = session_user
    )
    select l.classid::int as ns, l.objid::int as key
      from pg_locks l
     where l.locktype = 'advisory' and l.pid = pg_backend_pid() and l.mode = 'ExclusiveLock' and l.objsubid = 2
       and l.classid in (:SCHEMA.pgrr_ns_request()::oid, :SCHEMA.pgrr_ns_responder()::oid,
                         :SCHEMA.pgrr_ns_bell()::oid, :SCHEMA.pgrr_ns_reply_bell()::oid)
    except
    select :SCHEMA.pgrr_ns_responder(), h.id from here h
    except
    select :SCHEMA.pgrr_ns_reply_bell(), :SCHEMA.pgrr_reply_bell_key(h.id, lane, k)
      from here h, generate_series(0, :SCHEMA.pgrr_reply_lanes() - 1) lane, generate_series(0, 3) k
    except
    select :SCHEMA.pgrr_ns_bell(), :SCHEMA.pgrr_bell_key(c.channel_id, parity)
      from (select distinct h.channel_id from here h) c, generate_series(0, 2) parity
    except
    select :SCHEMA.pgrr_ns_request(), :SCHEMA.pgrr_request_key(q.id)
      from :SCHEMA.pgrr_request q join here h on h.id = q.responder_id
     where q.state in ('claimed', 'cancelled') and q.reply_to is null and not q.handed
  loop
    -- Every hold of it (advisory locks count them; an unlock of a lock not held would warn).
    for v_try in 1..100 loop
      exit when not exists (select 1 from pg_locks l
                             where l.locktype = 'advisory' and l.pid = pg_backend_pid() and l.mode = 'ExclusiveLock'
                               and l.objsubid = 2 and l.classid = r.ns::oid and l.objid = r.key::oid);
      perform pg_advisory_unlock(r.ns, r.key);
    end loop;
  end loop;
  if v_channel_id is not null then
    perform :SCHEMA.pgrr_reap(array(select q.id from :SCHEMA.pgrr_request q
                                     where q.responder_id = p_responder and q.state = 'claimed'));
  end if;
end
$$;
