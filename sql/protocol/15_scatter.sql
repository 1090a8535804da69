-- 15_scatter.sql: scatter-gather: one request to every live responder of a channel (or to some of them),
-- each addressed to its responder, which alone may run it.
--
-- Contract. pgrr_send_all stores one request per live responder of the channel (pgrr_live_responder, the
-- one definition of live; accepting ones first when p_max leaves some out), each stored as already
-- claimed by its responder (handed, attempt 1 of 1, kind 'all' or 'ping': see migration 0004) and NOTIFYed
-- on that responder's inbox with its payload. Such a request is never given to another responder:
--   - it is never pending, so no claim (07_claim.sql) takes it;
--   - max_attempts 1, so a reap (04_liveness.sql) never puts it back in the queue: when its responder is
--     gone it ends lost (ResponderLostError, PR004);
--   - a responder that gives it back (pgrr_decline, 08_handoff.sql) ends it lost instead of queueing it;
--   - an SQL caller's is NOTIFYed at its commit by pgrr_addressed_at_commit (below), which ends it lost
--     when its responder is no longer live then (pgrr_handoff_at_commit, which would queue it, skips it).
-- A responder runs a request of kind 'all' with its handler when a slot is free (waiting for one, never
-- declining it), and answers one of kind 'ping' itself at once, without the handler or a slot
-- (src/responder/addressed.ts). Replies, cancellation, fetch and acknowledgement are those of any request
-- (09_reply.sql, 11_caller.sql), per id.
-- The payload travels inside the NOTIFY (there is no queue to fetch it from): an entry over 7,900 bytes is
-- refused as too_large (PR008).
-- Locks: a shared try-lock (transaction level) on the responder lock of each live responder of the
-- channel (pgrr_live_responder). NOTIFY: each addressed responder's inbox, a JSON array of one
-- pgrr_addressed_entry (a TypeScript caller's at once, an SQL caller's at its commit).

-- One request addressed to a responder, as it travels in the responder's inbox: pgrr_handoff_entry
-- (02_wire.sql) with the request's kind last ('all' or 'ping'). src/wire.ts reads both.
create function :SCHEMA.pgrr_addressed_entry(p_id bigint, p_json boolean, p_payload text, p_headers jsonb,
                                             p_timeout_ms int, p_kind text) returns text
language sql stable
as $$
  select pg_catalog.json_build_array(p_id::text, p_json, p_payload, p_headers, p_timeout_ms, p_kind)::text
$$;

-- pgrr_send_all(reply_to, channel, payload, json, timeout_ms, headers, max, kind): the requests of a
-- scatter-gather (see above). p_max: at most this many responders (null: all); below 1 raises 22023, as
-- does a kind other than 'all' and 'ping' or an invalid reply channel. Returns one row per responder
-- addressed: its id, host and pid, the request's id, and status 'ok'; or a single row with a null
-- responder and the status of pgrr_send_status (no_responders, invalid_channel, too_large, ...).
create function :SCHEMA.pgrr_send_all(
  p_reply_to text, p_channel text, p_payload text, p_json boolean, p_timeout_ms int, p_headers text,
  p_max int, p_kind text
) returns table (responder_id int, host text, pid int, id bigint, status text)
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
set enable_seqscan = off
set jit = off
set plan_cache_mode = force_generic_plan
as $$
declare
  v_channel_id int;
  v_max_bytes int;
  v_headers jsonb;
  v_status text;
  v_entry text;
  v_id bigint;
  v_timeout_ms constant int := greatest(coalesce(p_timeout_ms, 30000), 1);
  r record;
begin
  if p_reply_to is not null and octet_length(p_reply_to) not between 1 and 63 then
    raise exception 'pgrr: invalid reply channel name (1 to 63 bytes)' using errcode = '22023';
  end if;
  if p_max is not null and p_max < 1 then
    raise exception 'pgrr: max must be at least 1, got %', p_max using errcode = '22023';
  end if;
  if p_kind is null or p_kind not in ('all', 'ping') then
    raise exception 'pgrr: invalid kind of addressed request %', coalesce(quote_literal(p_kind), 'NULL') using errcode = '22023';
  end if;
  select c.id, c.max_payload_bytes into v_channel_id, v_max_bytes from :SCHEMA.pgrr_channel c where c.name = p_channel;
  if p_headers is not null then
    v_headers := :SCHEMA.pgrr_parse_headers(p_headers);
  end if;
  v_status := :SCHEMA.pgrr_send_status(
    v_channel_id is not null or :SCHEMA.pgrr_valid_channel(p_channel),
    exists (select 1 from :SCHEMA.pgrr_live_responder l where l.channel_id = v_channel_id),
    p_payload, p_headers, v_headers, v_max_bytes);
  if v_status = 'ok'
     and octet_length(:SCHEMA.pgrr_addressed_entry(0, coalesce(p_json, false), p_payload, v_headers, v_timeout_ms, p_kind)) > :SCHEMA.pgrr_notify_entry_max_bytes() then
    v_status := 'too_large';
  end if;
  if v_status <> 'ok' then
    status := v_status;
    return next;
    return;
  end if;
  for r in
    select l.id, l.inbox, w.host, w.pid
      from :SCHEMA.pgrr_live_responder l
      join :SCHEMA.pgrr_responder w on w.id = l.id
     where l.channel_id = v_channel_id
     order by l.accepting desc, random()
     limit p_max
  loop
    v_id := :SCHEMA.pgrr_random_id();
    insert into :SCHEMA.pgrr_request
           (id, channel_id, payload, payload_json, headers, reply_to, deadline, max_attempts,
            state, responder_id, claimed_at, attempt, handed, kind)
    values (v_id, v_channel_id, p_payload, coalesce(p_json, false), v_headers, p_reply_to,
            clock_timestamp() + make_interval(secs => v_timeout_ms / 1000.0), 1,
            'claimed', r.id, clock_timestamp(), 1, true, p_kind);
    if p_reply_to is not null then
      v_entry := :SCHEMA.pgrr_addressed_entry(v_id, coalesce(p_json, false), p_payload, v_headers, v_timeout_ms, p_kind);
      perform pg_notify(r.inbox, '[' || v_entry || ']');
    end if;
    responder_id := r.id; host := r.host; pid := r.pid; id := v_id; status := 'ok';
    return next;
  end loop;
  if not found then
    -- Every live responder seen above was gone by the loop's own look (a race with its death).
    responder_id := null; host := null; pid := null; id := null; status := 'no_responders';
    return next;
  end if;
end
$$;

-- pgrr_addressed_at_commit(): the trigger that NOTIFYs an SQL caller's addressed request when the
-- transaction that made it commits (as pgrr_handoff_at_commit does for an ordinary one, 08_handoff.sql):
-- still live and in time, its responder is NOTIFYed the request with the time it has left now; otherwise
-- the request ends lost, never queued (it is that responder's alone).
create function :SCHEMA.pgrr_addressed_at_commit() returns trigger
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
set enable_seqscan = off
set jit = off
set plan_cache_mode = force_generic_plan
as $$
declare
  r record;
  v_inbox text;
begin
  select q.id, q.responder_id, q.payload, q.payload_json, q.headers, q.deadline, q.kind into r
    from :SCHEMA.pgrr_request q
   where q.id = new.id and q.state = 'claimed' and q.handed;
  if not found then
    return null;
  end if;
  select l.inbox into v_inbox from :SCHEMA.pgrr_live_responder l where l.id = r.responder_id;
  if v_inbox is not null and r.deadline > clock_timestamp() then
    perform pg_notify(v_inbox, '[' || :SCHEMA.pgrr_addressed_entry(r.id, r.payload_json, r.payload, r.headers,
        greatest(1, ceil(extract(epoch from r.deadline - clock_timestamp()) * 1000))::int, r.kind) || ']');
    return null;
  end if;
  update :SCHEMA.pgrr_request q set state = 'lost', finished_at = clock_timestamp() where q.id = r.id;
  return null;
end
$$;

create constraint trigger pgrr_addressed_at_commit after insert on :SCHEMA.pgrr_request
  deferrable initially deferred for each row
  when (new.kind is not null and new.reply_to is null)
  execute function :SCHEMA.pgrr_addressed_at_commit();

-- request_all(channel, payload [, timeout [, headers [, max]]]): the SQL caller's scatter-gather: one
-- request to every live responder of the channel (or to max of them, accepting ones first), each run once
-- by its responder alone. Returns one row per request: its id (await it with await_reply, one by one, in
-- any order) and the id of its responder. Raises as request() does (PR001 when no responder is live,
-- PR007, PR008, 22023), and 22023 for max below 1. Locks and NOTIFY: those of pgrr_send_all, at commit.
create function :SCHEMA.request_all(
  channel text, payload text, timeout interval default null, headers jsonb default null, max int default null
) returns table (id bigint, responder_id int)
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_generic_plan
as $$
declare
  r record;
begin
  for r in
    select s.responder_id, s.id, s.status
      from :SCHEMA.pgrr_send_all(null, channel, payload, false, :SCHEMA.pgrr_timeout_ms(timeout), headers::text, max, 'all') s
  loop
    if r.status <> 'ok' then
      perform :SCHEMA.pgrr_raise_send_status(r.status, channel);
    end if;
    id := r.id;
    responder_id := r.responder_id;
    return next;
  end loop;
end
$$;

-- request_all(channel, payload jsonb, ...): the same for a JSON payload (await_reply_json reads JSON replies).
create function :SCHEMA.request_all(
  channel text, payload jsonb, timeout interval default null, headers jsonb default null, max int default null
) returns table (id bigint, responder_id int)
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_generic_plan
as $$
declare
  r record;
begin
  for r in
    select s.responder_id, s.id, s.status
      from :SCHEMA.pgrr_send_all(null, channel, payload::text, true, :SCHEMA.pgrr_timeout_ms(timeout), headers::text, max, 'all') s
  loop
    if r.status <> 'ok' then
      perform :SCHEMA.pgrr_raise_send_status(r.status, channel);
    end if;
    id := r.id;
    responder_id := r.responder_id;
    return next;
  end loop;
end
$$;
