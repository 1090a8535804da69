-- 07_claim.sql: a responder takes pending requests from the queue, as many as it has free slots.
--
-- Pending requests are those not handed over (see 06_send.sql), those a responder declined, and those put
-- back after their responder was gone (04_liveness.sql). The claim marks each as the responder's, durably,
-- before any handler runs: at-most-once delivery. A responder claims when its service channel's NOTIFY
-- says that requests are queued, and when the poll of its client (pgrr_pending_channels, below) finds some
-- that no NOTIFY announced to it.
-- Locks: row locks (FOR UPDATE SKIP LOCKED: competing responders never wait on each other); for each
-- claimed request made from SQL, its request lock (session level, exclusive), which its awaiter blocks on
-- until the reply commits (09_reply.sql, 10_await.sql); the channel's claim bell, rung (03_bells.sql).
-- NOTIFY: none.

-- Tries to take the request lock of request id at session level, without waiting (see pgrr_claim). A
-- function so the claim can take it once per updated row from its RETURNING list.
create function :SCHEMA.pgrr_hold_request_lock(p_id bigint) returns boolean
language sql volatile
as $$ select pg_catalog.pg_try_advisory_lock(:SCHEMA.pgrr_ns_request(), :SCHEMA.pgrr_request_key(p_id)) $$;

-- pgrr_claim(responder, channel, limit): take up to limit pending requests of the channel, oldest first, and
-- at most pgrr_claim_max_bytes() of payloads (rows are added while the payloads before them sum to
-- less than that, so always at least one): a backlog of huge payloads cannot make one claim exhaust the
-- responder's memory. Raises 42501 unless this session registered the responder, for this channel.
-- FOR UPDATE SKIP LOCKED lets competing responders claim concurrently without waiting on each other; each
-- claimed row of an SQL caller gets its request lock (session level, exclusive) inside this same
-- transaction, so the lock is held before anyone can see the row as claimed. Returns the remaining time
-- to the deadline and the time spent waiting since the request was made, both in ms.
create function :SCHEMA.pgrr_claim(p_responder int, p_channel_id int, p_limit int)
returns table (id bigint, payload text, payload_json boolean, headers jsonb, attempt int,
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
     where q.channel_id = p_channel_id and q.responder_id is null and q.state = 'pending'
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
  returning q.id, q.payload, q.payload_json, q.headers, q.attempt,
            greatest(0, ceil(extract(epoch from q.deadline - clock_timestamp()) * 1000))::int as remaining_ms,
            greatest(0, floor(extract(epoch from clock_timestamp() - q.created_at) * 1000))::int as queued_ms,
            -- Only an SQL caller waits on the lock; a TypeScript caller hears of its reply by NOTIFY.
            case when q.reply_to is null then :SCHEMA.pgrr_hold_request_lock(q.id) else true end as locked,
            q.reply_to is null as sql_caller
  loop
    if r.locked then
      id := r.id; payload := r.payload; payload_json := r.payload_json; headers := r.headers;
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

-- pgrr_pending_channels(channels): those of the given channels that have pending requests (as pgrr_claim
-- takes them, whatever their deadline). What a client polls with, once per poll interval for all the
-- channels its responders serve, as the safety net for a lost NOTIFY: only the responders of the channels
-- returned then claim. Tells no more than each channel's NOTIFYs do. Locks: none.
create function :SCHEMA.pgrr_pending_channels(p_channels int[]) returns setof int
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
set enable_seqscan = off
set plan_cache_mode = force_generic_plan
as $$
begin
  return query
    select c.id
      from unnest(p_channels) as c(id)
     where exists (select 1 from :SCHEMA.pgrr_request q
                    where q.channel_id = c.id and q.responder_id is null and q.state = 'pending');
end
$$;
