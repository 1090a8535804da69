-- 04_liveness.sql: who is live, who is gone, and what happens to the requests of the gone.
--
-- Two facts, each defined once here and used everywhere:
--   live  (pgrr_live_responder): registered, not draining (pgrr_unregister), and its responder lock held.
--         Who is sent new requests (06_send.sql) and who `pgrr status` lists (src/status.ts). A live
--         responder is accepting while its lease runs (pgrr_lease(), renewed by pgrr_renew every half
--         second while its event loop turns): sends prefer accepting responders, so that one whose event
--         loop is blocked (a CPU-bound handler, a stopped process) is skipped within 1.5 s while its
--         session, which still holds its lock, says it is not dead. When none is accepting, a live one is
--         picked all the same: a busy responder is still better than no responder.
--   gone  (pgrr_responder_gone): its row deleted, its responder lock free, or the session that registered
--         it no longer exists. Whose requests are taken back (pgrr_reap) and whose rows are deleted
--         (pgrr_sweep_older_than). A draining responder is neither: it takes nothing new and keeps what
--         it holds.
-- The responder lock (pgrr_ns_responder(), responder id) is held by the session the responder registered
-- on, from its registration until it is released (pgrr_release) or the session ends: its release is how
-- death shows at once. Its key is easy to compute
-- (responder ids count up from 1), and any login may take any advisory lock, so a lock held proves less:
-- a session that takes it once the responder's session has ended makes a phantom, listed as live and sent
-- requests that nobody runs. So "gone" also checks the session itself (pid and the role it authenticated
-- as, against PostgreSQL's table of backends), which costs too much per request: pgrr_reap does it for the
-- requests it looks at, and every sweep deletes the rows of gone responders, after which no request goes
-- to them. Requests handed to a phantom before that end lost at their caller's next check, or are retried
-- when retryable.
-- Locks: shared try-locks (transaction level, or rolled back at once) on responder locks; row locks.
-- NOTIFY: a request put back in the queue, on its service channel; a lost request of a
-- TypeScript caller, on the caller's reply channel (pgrr_lost_entry).

-- Responders that are live (see above). A view, so that it is inlined into each query that picks a
-- responder; the shared try-lock (transaction level) fails while someone holds the responder lock, and a
-- successful one, on a dead row, is harmless to hold until commit.
create view :SCHEMA.pgrr_live_responder as
  select r.id, r.channel_id, r.inbox, r.concurrency, r.lease_until > pg_catalog.clock_timestamp() as accepting
    from :SCHEMA.pgrr_responder r
   where not r.unregistered
     and not pg_catalog.pg_try_advisory_xact_lock_shared(:SCHEMA.pgrr_ns_responder(), r.id);

revoke all on :SCHEMA.pgrr_live_responder from public;

-- How long a lease runs (see above): three renewals' worth, so that a late timer or two never lets it lapse.
create function :SCHEMA.pgrr_lease() returns interval
language sql immutable parallel safe
as $$ select interval '1.5 seconds' $$;

-- pgrr_responder_gone(responder, fresh): whether the responder is gone (see above). Reads PostgreSQL's
-- table of backends (pg_stat_get_activity: pid and role are shown to every role), which a transaction
-- copies at its first read and then keeps: with fresh, the copy is discarded first, so that the one read
-- is newer than the row the pid comes from (a session that registered after an older copy was made would
-- be missing from it); without, the caller has discarded it once for many calls. About 50 µs fresh: for
-- reaps and sweeps, never per request. (A session of another role that got the same pid from the
-- operating system is not the responder's; one of the same role cannot be told apart, and a login allowed
-- to serve a channel is trusted with its requests anyway.) Locks: none after return.
create function :SCHEMA.pgrr_responder_gone(p_responder int, p_fresh boolean default true) returns boolean
language plpgsql volatile
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_generic_plan
as $$
declare
  v_pid int;
  v_role oid;
begin
  select r.backend_pid, r.backend_role into v_pid, v_role from :SCHEMA.pgrr_responder r where r.id = p_responder;
  if not found or :SCHEMA.pgrr_lock_is_free(:SCHEMA.pgrr_ns_responder(), p_responder) then
    return true;
  end if;
  if p_fresh then
    perform pg_stat_clear_snapshot();
  end if;
  return not exists (select 1 from pg_stat_get_activity(v_pid) a where a.usesysid = v_role);
end
$$;

-- pgrr_reap(ids, requeue): takes back claimed requests whose responder is gone (see above), as they were
-- left without a reply. Each goes back to pending when it has attempts left (NOTIFY on its service
-- channel) or becomes lost (NOTIFY its TypeScript caller). A request with attempts left that was handed to
-- a responder whose lease ran out goes back to pending too (it may be run twice: that is what attempts
-- allow); one without waits for its responder, or ends at its deadline. p_ids null means every claimed request.
-- p_requeue false leaves the requests that have attempts left as they are: what an SQL awaiter asks for,
-- whose statement would hold the row it put back in the queue (locked, and pending only to itself) until
-- it ends; a reap that commits (a sweep, a TypeScript client's check) puts them back.
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
  -- Responders this call found alive, and gone: each is looked up once.
  v_alive int[] := '{}';
  v_gone int[] := '{}';
  v_stalled boolean;
begin
  for r in
    -- Two branches rather than "p_ids is null or id = any (p_ids)": in the generic plan the first probes the
    -- primary key, and the second is skipped unless p_ids is null (a sweep over every claimed request).
    select q.id, q.attempt, q.max_attempts, q.channel_id, q.reply_to, q.caller, q.responder_id, q.handed
      from :SCHEMA.pgrr_request q
     where q.state = 'claimed' and q.id = any (p_ids)
    union all
    select q.id, q.attempt, q.max_attempts, q.channel_id, q.reply_to, q.caller, q.responder_id, q.handed
      from :SCHEMA.pgrr_request q
     where q.state = 'claimed' and p_ids is null
  loop
    if r.handed and r.attempt < r.max_attempts and p_requeue
       and exists (select 1 from :SCHEMA.pgrr_responder w where w.id = r.responder_id and w.lease_until < clock_timestamp()) then
      -- Its responder stopped renewing its lease: a retryable request goes back to the queue.
      v_stalled := true;
    else
      v_stalled := false;
      continue when r.responder_id = any (v_alive);
    end if;
    if not v_stalled and r.responder_id <> all (v_gone) then
      if not :SCHEMA.pgrr_responder_gone(r.responder_id, cardinality(v_alive) + cardinality(v_gone) = 0) then
        v_alive := v_alive || r.responder_id;
        continue;
      end if;
      v_gone := v_gone || r.responder_id;
    end if;
    -- (The responder too: a request declined and claimed again by another has the same attempt.)
    if r.attempt < r.max_attempts then
      continue when not p_requeue;
      update :SCHEMA.pgrr_request q
         set state = 'pending', responder_id = null, claimed_at = null, handed = false
       where q.id = r.id and q.state = 'claimed' and q.attempt = r.attempt and q.responder_id = r.responder_id;
      if found then
        perform pg_notify(:SCHEMA.pgrr_notify_prefix() || '.s' || r.channel_id, '');
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
          perform pg_notify(r.reply_to, '[' || :SCHEMA.pgrr_lost_entry(r.id) || ']');
        end if;
        if r.caller = session_user then
          id := r.id; state := 'lost'; return next;
        end if;
      end if;
    end if;
  end loop;
end
$$;

-- pgrr_sweep_older_than(grace): deletes requests past their deadline by more than grace (nobody waits for
-- them any more), unless a responder that is not gone still holds them (its reply then ends them), and
-- the rows of gone responders, after which no request goes to them (a phantom ends here; pgrr_reap takes
-- back what went to it, with or without its row). Returns the number of requests deleted. Owner only: a
-- short grace deletes requests whose callers still wait; responders get pgrr_sweep(). One read of the
-- server's backends for the whole call: every few seconds, never per request.
create function :SCHEMA.pgrr_sweep_older_than(p_grace interval) returns int
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
set jit = off
set plan_cache_mode = force_generic_plan
as $$
declare
  v_count int;
begin
  perform pg_stat_clear_snapshot();
  delete from :SCHEMA.pgrr_request q
   where q.deadline < clock_timestamp() - p_grace
     and (q.state not in ('claimed', 'cancelled') or q.responder_id is null
          or :SCHEMA.pgrr_responder_gone(q.responder_id, false));
  get diagnostics v_count = row_count;
  -- The streams of requests gone (and their parts), by the same grace (14_stream.sql).
  perform :SCHEMA.pgrr_stream_sweep(p_grace);
  delete from :SCHEMA.pgrr_responder r where :SCHEMA.pgrr_responder_gone(r.id, false);
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
