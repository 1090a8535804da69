-- 09_reply.sql: a responder writes the outcomes of the requests it handled, and wakes their callers.
--
-- Handlers run outside any transaction; their outcomes are written in batches (pgrr_reply), or alone for a
-- lone reply (pgrr_reply_one, a few statements instead of one large one). An outcome is written by the
-- session that registered its responder, or, for a TypeScript caller's request, by that of another
-- registration of the same process (same login, host and pid), so that one statement carries the outcomes
-- of every channel a process serves; a request made from SQL is answered on the session its responder
-- registered on (since protocol 7 by any registration of the process on that session: a client's
-- registrations share one), which holds what its awaiter waits on. A reply is a HOT update (the
-- pending index is keyed on the one column only a claim changes), and the caller deletes the row once it
-- has read it (10_await.sql, 11_caller.sql).
-- A reply (or error reply) for a request whose deadline has passed is refused, whatever the responder's
-- timers did (its event loop blocked by a CPU-bound handler, its process stopped): the request's outcome
-- stays the timeout its caller saw, for every reader (stored as a failure with code PGRR_DEADLINE), and the
-- responder is told (it logs it and counts it). The deadline and the moment of the reply are both read from
-- the database's clock.
-- Locks: row locks, in id order (as pgrr_cancel and pgrr_decline take them). For a request made from SQL,
-- what its awaiter waits on is released exactly when the reply commits: the request lock of a claimed one
-- moves from session to transaction scope, and a handed one's lane of reply bells rings (03_bells.sql).
-- NOTIFY: per TypeScript caller, its reply channel: JSON arrays of pgrr_reply_entry, small replies inside,
-- larger ones as pgrr_reply_short_entry (the caller fetches them); every payload under 8000 bytes.

-- Moves the request lock of request id from session to transaction scope, if this session holds it: true
-- then, false (without waiting) when another session holds it or nobody did. The outcome is written either
-- way: the registration on this session proves that the caller holds the request, and the hold may have
-- been given back by an earlier statement that failed after it (a rollback does not take back a session
-- lock it released); the awaiter then finds the lock free and reads the reply. One hold of the key only: a
-- session that holds it for two requests (see pgrr_request_key) keeps the other.
create function :SCHEMA.pgrr_release_request_lock(p_id bigint) returns boolean
language sql volatile
as $$
  select case when pg_catalog.pg_try_advisory_xact_lock(:SCHEMA.pgrr_ns_request(), :SCHEMA.pgrr_request_key(p_id))
              then pg_catalog.pg_advisory_unlock(:SCHEMA.pgrr_ns_request(), :SCHEMA.pgrr_request_key(p_id))
              else false end
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

-- The message stored for a reply refused because the request's deadline had passed (see above).
create function :SCHEMA.pgrr_late_message() returns text
language sql immutable
as $$ select 'the request reached its deadline before its reply was written'::text $$;

-- pgrr_reply_one(responder, id, failed, body, json, code [, headers]): pgrr_reply for one request, with
-- scalar arguments: the same outcome, stored, NOTIFYed and its request lock released as pgrr_reply does,
-- in a few statements instead of one large one (the whole cost of a lone reply is its statements'
-- set-up). Returns 'replied' when the outcome was written, 'late' when the deadline had passed (the
-- timeout is written instead, see above), 'gone' when the request is not in this responder's hands (or
-- this session did not register the responder), or the caller cancelled it (the row is then deleted, as
-- pgrr_reply does).
create function :SCHEMA.pgrr_reply_one(
  p_responder int, p_id bigint, p_failed boolean, p_body text, p_json boolean, p_code text, p_headers text default null
) returns text
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
  v_handed boolean;
  v_seq bigint;
  v_code text;
  v_entry text;
  v_late boolean;
  v_now constant timestamptz := clock_timestamp();
begin
  -- What proves that this session is the responder's (see 13_roles.sql), and its channel's limit.
  select coalesce(c.max_payload_bytes, :SCHEMA.pgrr_default_max_payload_bytes()), c.name into v_max_bytes, v_channel
    from :SCHEMA.pgrr_responder w
    join :SCHEMA.pgrr_channel c on c.id = w.channel_id
   where w.id = p_responder and w.backend_pid = pg_backend_pid() and w.login = session_user;
  if not found then
    return 'gone';
  end if;
  v_too_large := coalesce(octet_length(p_body) > v_max_bytes, false);
  v_failed := coalesce(p_failed, false) or v_too_large;
  if p_headers is not null and octet_length(p_headers) <= 65536 then
    v_headers := :SCHEMA.pgrr_parse_headers(p_headers);
  end if;
  update :SCHEMA.pgrr_request q
     set state = case when q.deadline < v_now or v_failed then 'failed' else 'replied' end,
         reply = case when q.deadline < v_now or v_failed then null else p_body end,
         reply_json = case when q.deadline < v_now or v_failed then null else coalesce(p_json, false) end,
         error_code = case when q.deadline < v_now then 'PGRR_DEADLINE' when p_failed then p_code when v_too_large then 'INVALID_REPLY' end,
         error_message = case when q.deadline < v_now then :SCHEMA.pgrr_late_message()
                              when v_too_large then :SCHEMA.pgrr_too_large_message(p_failed, p_body, v_max_bytes, v_channel)
                              when v_failed then p_body end,
         reply_headers = case when q.deadline < v_now then null else v_headers end,
         finished_at = v_now
   where q.id = p_id and q.responder_id = p_responder and q.state = 'claimed'
  returning q.reply_to, q.handed, q.seq, q.error_code, q.deadline < v_now and p_code is distinct from 'PGRR_DEADLINE',
            -- Built only when it may fit in a NOTIFY: escaping a large body into JSON costs, to be thrown away.
            case when coalesce(octet_length(coalesce(q.reply, q.error_message)), 0) <= :SCHEMA.pgrr_notify_entry_max_bytes() then
              :SCHEMA.pgrr_reply_entry(q.id, q.state = 'failed', q.error_code, q.reply_json, coalesce(q.reply, q.error_message),
                                       q.reply_headers)
            end
    into v_reply_to, v_handed, v_seq, v_code, v_late, v_entry;
  if not found then
    delete from :SCHEMA.pgrr_request q
     where q.id = p_id and q.responder_id = p_responder and q.state = 'cancelled'
    returning q.reply_to, q.handed into v_reply_to, v_handed;
    if found and v_reply_to is null and not v_handed then
      perform :SCHEMA.pgrr_release_request_lock(p_id);
    end if;
    return 'gone';
  end if;
  if v_reply_to is null then
    -- An SQL caller, who waits on this responder's reply bell of the request's lane (handed) or on the
    -- request lock (claimed): released when this commits.
    if v_handed then
      perform :SCHEMA.pgrr_ring_reply(p_responder, :SCHEMA.pgrr_reply_lane(v_seq));
    else
      perform :SCHEMA.pgrr_release_request_lock(p_id);
    end if;
  else
    if v_entry is null or octet_length(v_entry) > :SCHEMA.pgrr_notify_entry_max_bytes() then
      v_entry := :SCHEMA.pgrr_reply_short_entry(p_id, v_failed or v_late, v_code, p_json);
    end if;
    perform pg_notify(v_reply_to, '[' || v_entry || ']');
  end if;
  return case when v_late then 'late' else 'replied' end;
end
$$;

-- pgrr_reply(responder, ids, failed, bodies, json, codes [, headers [, responders]]): write the outcomes of
-- handled requests, with the headers each handler set on its reply (flat JSON objects of strings, or null).
-- The session must be the one that registered responder (as pgrr_claim checks); otherwise nothing is
-- written. responders names, per outcome, the responder that holds its request (null: responder): one
-- statement carries the outcomes of all the registrations of one process, however many channels it serves.
-- A request is written only when it is still held by the responder named for it, and that responder is
-- responder or one of the same process (the same login, host and pid as responder's registration); any
-- other is ignored. A request made from SQL needs the session its responder registered on (this one for
-- every registration of the same client, which share it), which holds what its awaiter waits on:
-- a claimed one's request lock, which moves from session to transaction scope first, so that its awaiter
-- wakes exactly when this commits (a handed one's reply bell of its responder rings instead). Those of a
-- responder registered on another session are left as they are and returned in elsewhere, for that
-- session to write.
-- Rows the caller cancelled meanwhile are deleted instead. A reply (or error message) larger than its
-- channel's max_payload_bytes is stored as a failure with code INVALID_REPLY (or the handler's code) and a
-- message that says so. NOTIFY: per TypeScript caller, JSON arrays of entries [id, 'r', is_json, body (,
-- headers)] / [id, 'f', code, message (, headers)]; a body or message whose entry would exceed 7900 bytes
-- is left out (the caller fetches it); entries of up to 1500 bytes are packed several to a NOTIFY, larger
-- ones sent one to a NOTIFY, so that every payload stays under the 8000-byte NOTIFY limit. Returns how many
-- NOTIFYs it sent, the ids of the replies it refused as late (see above), and the ids left for their own
-- responder's session.
create function :SCHEMA.pgrr_reply(
  p_responder int, p_ids bigint[], p_failed boolean[], p_bodies text[], p_json boolean[], p_codes text[],
  p_headers text[] default null, p_responders int[] default null,
  out notified int, out late bigint[], out elsewhere bigint[]
)
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
  v_host text;
  v_pid int;
  v_team int[];
  -- Per member of v_team: registered on this session (it holds the locks its SQL callers wait on).
  v_here boolean[];
  v_limits int[];
  v_channels text[];
  v_now constant timestamptz := clock_timestamp();
begin
  notified := 0;
  late := '{}';
  elsewhere := '{}';
  -- The responders whose requests this writes, with their channel's limit (a responder serves one channel):
  -- this session's own (every request of a responder belongs to the session that registered it; those made
  -- from SQL also carry a request lock that the session holds), none when this session did not register
  -- it; then those named of the same process, and whether each registered on this session. (Arrays looked
  -- up by position below, and a single responder's call makes no second look-up: as one table of
  -- responders joined to the input, a call cost 45-60 µs more of server time than protocol 3's, this way
  -- 25-40 µs for a lone outcome, 5 for 40.)
  select array[w.id], array[true], array[coalesce(c.max_payload_bytes, :SCHEMA.pgrr_default_max_payload_bytes())], array[c.name],
         w.host, w.pid
    into v_team, v_here, v_limits, v_channels, v_host, v_pid
    from :SCHEMA.pgrr_responder w
    join :SCHEMA.pgrr_channel c on c.id = w.channel_id
   where w.id = p_responder and w.backend_pid = pg_backend_pid() and w.login = session_user;
  if not found then
    return;
  end if;
  if p_responders is not null then
    select v_team || array_agg(w.id), v_here || array_agg(w.backend_pid = pg_backend_pid()),
           v_limits || array_agg(coalesce(c.max_payload_bytes, :SCHEMA.pgrr_default_max_payload_bytes())),
           v_channels || array_agg(c.name)
      into v_team, v_here, v_limits, v_channels
      from :SCHEMA.pgrr_responder w
      join :SCHEMA.pgrr_channel c on c.id = w.channel_id
     where w.id = any(p_responders) and w.id <> p_responder and w.login = session_user
       and w.host is not distinct from v_host and w.pid is not distinct from v_pid;
  end if;
  for r in
    -- Materialized, so that every join below probes the primary key once per input row: inline, the
    -- generic plan re-ran the unnest (bodies included) once per matching row, quadratic in the batch.
    with input as materialized (
      select t.id, k.responder, v_here[k.n] as here, v_limits[k.n] as max_bytes, v_channels[k.n] as channel,
             coalesce(t.failed, false) as failed, t.body, coalesce(t.is_json, false) as is_json, t.code,
             case when t.headers is not null and octet_length(t.headers) <= 65536
                  then :SCHEMA.pgrr_parse_headers(t.headers) end as headers
        from unnest(p_ids, p_failed, p_bodies, p_json, p_codes, p_headers, p_responders)
             as t(id, failed, body, is_json, code, headers, responder),
             lateral (select coalesce(t.responder, p_responder) as responder,
                             array_position(v_team, coalesce(t.responder, p_responder)) as n) k
       where k.n is not null
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
      select i.*, q.tid, q.seq, q.reply_to, q.handed, q.state
        from (select * from input order by id) i
        cross join lateral (
          select q.ctid as tid, q.seq, q.reply_to, q.handed, q.state
            from :SCHEMA.pgrr_request q
           where q.id = i.id and q.responder_id = i.responder and q.state in ('claimed', 'cancelled')
             for update of q
          offset 0
        ) q
    ),
    -- The rows this session writes: a TypeScript caller's, and an SQL caller's of a registration on this
    -- session, whose request lock (a claimed one's) moves to transaction scope here, written whatever that
    -- returns (see pgrr_release_request_lock; `is not null`, so that the call is not folded away).
    held as materialized (
      select o.* from owned o
       where case when o.reply_to is not null then true
                  when not o.here then false
                  when o.handed then true
                  else :SCHEMA.pgrr_release_request_lock(o.id) is not null end
    ),
    gone as (
      delete from :SCHEMA.pgrr_request q
       using held h
       where q.ctid = h.tid and q.id = h.id and h.state = 'cancelled'
    ),
    done as (
      update :SCHEMA.pgrr_request q
         set state = case when q.deadline < v_now or h.failed or x.too_large then 'failed' else 'replied' end,
             reply = case when q.deadline < v_now or h.failed or x.too_large then null else h.body end,
             reply_json = case when q.deadline < v_now or h.failed or x.too_large then null else h.is_json end,
             error_code = case when q.deadline < v_now then 'PGRR_DEADLINE' when h.failed then h.code when x.too_large then 'INVALID_REPLY' end,
             error_message = case
               when q.deadline < v_now then :SCHEMA.pgrr_late_message()
               when x.too_large then :SCHEMA.pgrr_too_large_message(h.failed, h.body, h.max_bytes, h.channel)
               when h.failed then h.body
             end,
             reply_headers = case when q.deadline < v_now then null else h.headers end,
             finished_at = v_now
        from held h,
             lateral (select coalesce(octet_length(h.body) > h.max_bytes, false) as too_large) x
       where q.ctid = h.tid and q.id = h.id and h.state = 'claimed'
      returning q.id, q.seq, q.responder_id as responder, q.reply_to, q.handed, q.state = 'failed' as failed,
                case when q.state = 'failed' then q.error_message else q.reply end as body,
                q.reply_json as is_json, q.error_code as code, q.reply_headers as headers,
                q.deadline < v_now and h.code is distinct from 'PGRR_DEADLINE' as late
    ),
    entries as (
      select d.reply_to, d.id, d.failed, d.code, d.is_json,
             -- Only when it may fit in a NOTIFY (see pgrr_reply_one).
             case when coalesce(octet_length(d.body), 0) <= :SCHEMA.pgrr_notify_entry_max_bytes() then
               :SCHEMA.pgrr_reply_entry(d.id, d.failed, d.code, d.is_json, d.body, d.headers)
             end as full_entry
        from done d
       where d.reply_to is not null
    ),
    sized as (
      select e.reply_to, e.id, x.entry, octet_length(x.entry) > 1500 as alone,
             sum(case when octet_length(x.entry) <= 1500 then octet_length(x.entry) + 1 else 0 end)
               over (partition by e.reply_to order by e.id) as running
        from entries e,
             lateral (select case when coalesce(octet_length(e.full_entry) <= :SCHEMA.pgrr_notify_entry_max_bytes(), false) then e.full_entry
                                  else :SCHEMA.pgrr_reply_short_entry(e.id, e.failed, e.code, e.is_json) end as entry) x
    )
    select s.reply_to, '[' || string_agg(s.entry, ',' order by s.id) || ']' as payload, null::int as responder,
           null::int as lane, null::bigint as late_id, null::bigint as elsewhere_id
      from sized s
     group by s.reply_to, s.alone, case when s.alone then s.id else (s.running - 1) / 6000 end
    -- A row without reply_to for each responder and lane where a handed request of an SQL caller was answered
    -- (all of them registered on this session): ring it.
    union all
    select distinct null, null, d.responder, :SCHEMA.pgrr_reply_lane(d.seq), null::bigint, null::bigint
      from done d where d.reply_to is null and d.handed
    -- One for each reply refused as late.
    union all
    select null, null, null, null, d.id, null from done d where d.late
    -- And one for each request of an SQL caller held by a responder registered on another session.
    union all
    select null, null, null, null, null, o.id from owned o where o.reply_to is null and not o.here
  loop
    if r.late_id is not null then
      late := late || r.late_id;
    elsif r.elsewhere_id is not null then
      elsewhere := elsewhere || r.elsewhere_id;
    elsif r.reply_to is null then
      perform :SCHEMA.pgrr_ring_reply(r.responder, r.lane);
    else
      perform pg_notify(r.reply_to, r.payload);
      notified := notified + 1;
    end if;
  end loop;
end
$$;
