-- 08_handoff.sql: what a responder does with the requests handed to it (see 06_send.sql) besides
-- running them: find those whose NOTIFY it missed, and give back those it will not run.
--
-- A handed request is claimed by its responder from the send on, with no request lock (its caller is a
-- TypeScript client, who hears of the reply by NOTIFY): the responder lock says whether it is still in hand
-- (04_liveness.sql).
-- Locks: row locks, in id order (as pgrr_cancel and pgrr_reply take them). NOTIFY: a declined request, on its
-- service channel (the lowest seq given back).

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
-- is notified so that any responder claims them; those the caller cancelled meanwhile are deleted.
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
      returning q.channel_id, q.seq
    )
    select g.channel_id, min(g.seq) as seq from given g group by g.channel_id
  loop
    perform pg_notify(:SCHEMA.pgrr_notify_prefix() || '.s' || r.channel_id, r.seq::text);
  end loop;
end
$$;
