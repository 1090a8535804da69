-- 11_caller.sql: what a caller does besides sending and awaiting: cancel, acknowledge (delete what it
-- read), and fetch (replies too large for a NOTIFY, and every request in flight after a reconnect).
--
-- Each acts on the calling login's own requests only: another login's request is invisible, the same as an
-- unknown id (ids are secrets: see 13_roles.sql).
-- Locks: row locks, in id order (as pgrr_reply and pgrr_decline take them). NOTIFY: pgrr_cancel, on the
-- control channel of each responder holding a cancelled request (the ids, comma separated), so that its
-- handler's abort signal fires.

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
