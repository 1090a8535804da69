-- 08_handoff.sql: requests handed to a responder by the send (06_send.sql): the NOTIFY of an SQL caller's
-- at its commit, and what the responder does with them besides running them: find those whose NOTIFY it
-- missed, and give back those it will not run.
--
-- A handed request is claimed by its responder from the send on, with no request lock: the responder lock
-- says whether it is still in hand (04_liveness.sql). Its SQL awaiter waits on the responder's reply bells
-- (03_bells.sql).
-- Locks: row locks, in id order (as pgrr_cancel and pgrr_reply take them). NOTIFY: an SQL caller's handed
-- request, on its responder's inbox at the commit that made it; requests given back, on their service
-- channel.

-- pgrr_handoff_at_commit(): the trigger that hands an SQL caller's request over when the transaction that
-- made it commits. request() stores it as handed to a live responder it picked, as a TypeScript client's is,
-- but its NOTIFY would go out only at that commit, which may come long after: the responder picked may be
-- gone by then, and the deadline past. So the NOTIFY is sent here, at the commit, once both are checked
-- again: still live and in time, the responder is NOTIFYed the request with the time it has left now;
-- otherwise the request goes back to the queue (pending, announced on its service channel), where no claim
-- takes it once its deadline has passed. A deferred constraint trigger runs at commit, inside the
-- committing transaction, and only for the rows its WHEN names: a TypeScript client's sends pay nothing for
-- it. (SET CONSTRAINTS ALL IMMEDIATE in the caller's transaction would run it at the end of request()'s
-- statement instead: the check is then as old as the statement.)
-- The common path is one statement: each statement run here pays its executor's set-up on every call (each
-- call is in a transaction of its own), and this trigger is on every SQL caller's path. As two look-ups
-- (the request, then its responder), an assignment and a NOTIFY its body cost 130,000 CPU instructions per
-- request; as this one statement, 107,000 (callgrind, PostgreSQL 15). The entry is made from the row as
-- inserted (NEW: a request's id, payload, headers and deadline never change), and the request is read as
-- it is now only to know that it is still handed over (this transaction may have cancelled or consumed
-- it since). The entry needs no size check: pgrr_send_one handed the request over only when the same entry
-- with the whole timeout fitted, and the time left now has no more digits.
create function :SCHEMA.pgrr_handoff_at_commit() returns trigger
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
set enable_seqscan = off
set jit = off
set plan_cache_mode = force_generic_plan
as $$
begin
  perform pg_notify(l.inbox, '[' || :SCHEMA.pgrr_handoff_entry(new.id, new.payload_json, new.payload, new.headers,
                                                            greatest(1, ceil(extract(epoch from new.deadline - clock_timestamp()) * 1000))::int) || ']')
     from :SCHEMA.pgrr_live_responder l
    where l.id = new.responder_id and new.deadline > clock_timestamp()
      and exists (select from :SCHEMA.pgrr_request q where q.id = new.id and q.state = 'claimed' and q.handed);
  if found then
    return null;
  end if;
  update :SCHEMA.pgrr_request q
     set state = 'pending', responder_id = null, claimed_at = null, attempt = q.attempt - 1, handed = false
   where q.id = new.id and q.state = 'claimed' and q.handed;
  if found then
    perform pg_notify(:SCHEMA.pgrr_notify_prefix() || '.s' || new.channel_id, '');
  end if;
  return null;
end
$$;

create constraint trigger pgrr_handoff_at_commit after insert on :SCHEMA.pgrr_request
  deferrable initially deferred for each row
  when (new.handed and new.reply_to is null and new.kind is null)
  execute function :SCHEMA.pgrr_handoff_at_commit();

-- pgrr_handed(responder): the requests handed to this responder (see pgrr_send) that are still in its
-- hands, with what pgrr_claim returns for a claimed one, and the kind of those addressed to it
-- (15_scatter.sql). The responder runs those it has not heard of:
-- their NOTIFY went out while its LISTEN session was away. Raises 42501 unless this session registered
-- the responder.
create function :SCHEMA.pgrr_handed(p_responder int)
returns table (id bigint, payload text, payload_json boolean, headers jsonb, attempt int,
               remaining_ms int, queued_ms int, kind text)
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
  select q.id, q.payload, q.payload_json, q.headers, q.attempt,
         greatest(0, ceil(extract(epoch from q.deadline - clock_timestamp()) * 1000))::int,
         0, q.kind
    from :SCHEMA.pgrr_request q
   where q.responder_id = p_responder and q.handed and q.state = 'claimed';
end
$$;

-- pgrr_decline(responder, ids): gives back requests handed to this responder that it will not run (no
-- free slot, or it is stopping): they become pending again, as if never handed, and the service channel
-- is notified so that any responder claims them (and the reply bells of their lanes ring, for SQL
-- awaiters); those the caller cancelled meanwhile are deleted; those addressed to this responder
-- (15_scatter.sql) end lost.
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
  -- A request addressed to this responder (15_scatter.sql) is never queued for another: it ends lost.
  for r in
    update :SCHEMA.pgrr_request q
       set state = 'lost', finished_at = clock_timestamp()
     where q.id = any (p_ids) and q.responder_id = p_responder and q.handed and q.state = 'claimed' and q.kind is not null
    returning q.id, q.reply_to, q.seq
  loop
    if r.reply_to is not null then
      perform pg_notify(r.reply_to, '[' || :SCHEMA.pgrr_lost_entry(r.id) || ']');
    else
      perform :SCHEMA.pgrr_ring_reply(p_responder, :SCHEMA.pgrr_reply_lane(r.seq));
    end if;
  end loop;
  for r in
    with given as materialized (
      update :SCHEMA.pgrr_request q
         set state = 'pending', responder_id = null, claimed_at = null, attempt = q.attempt - 1, handed = false
       where q.id = any (p_ids) and q.responder_id = p_responder and q.handed and q.state = 'claimed' and q.kind is null
      returning q.channel_id, q.seq, q.reply_to
    )
    select distinct g.channel_id, null::int as lane from given g
    -- SQL awaiters of these requests wait on this responder's reply bells: ring their lanes, so that they
    -- see at once that the request waits in the table again.
    union all
    select distinct null::int, :SCHEMA.pgrr_reply_lane(g.seq) from given g where g.reply_to is null
  loop
    if r.lane is not null then
      perform :SCHEMA.pgrr_ring_reply(p_responder, r.lane);
    else
      perform pg_notify(:SCHEMA.pgrr_notify_prefix() || '.s' || r.channel_id, '');
    end if;
  end loop;
end
$$;
