-- 06_send.sql: a request is stored, and handed to a responder or announced to all of them.
--
-- Every request is a row of pgrr_request (its id, random, is the request's secret: see 13_roles.sql). The
-- send picks a live responder of the channel at random, an accepting one when there is one
-- (pgrr_live_responder), and refuses the request at once when there is none (no_responders, PR001). Then:
--   handoff  a request whose payload fits in a NOTIFY is stored as already claimed by that responder
--            (handed) and NOTIFYed on its inbox, the request itself inside (a JSON array of
--            pgrr_handoff_entry): no claim statement stands between the two hops. A TypeScript client's
--            statement is its own transaction: its NOTIFY is sent here and goes out at once, while the picked
--            responder is live. An SQL caller's transaction may go on: its NOTIFY is sent at its commit,
--            once the responder and the deadline have been checked again (pgrr_handoff_at_commit,
--            08_handoff.sql). The responder declines what it has no free slot for (pgrr_decline).
--   queue    any other request (too large; a batch larger than the picked responder's concurrency) is
--            stored pending and announced on the service channel: responders with free slots claim
--            (07_claim.sql).
-- Locks: a shared try-lock (transaction level) on the responder lock of each candidate responder.
-- NOTIFY: the inbox of the picked responder (a TypeScript client's handed requests, several to a NOTIFY), or
-- the service channel (pending ones, one per channel per statement).

-- The status pgrr_send gives a request (see its contract), from what it looked up: whether the channel
-- name is valid, whether the channel exists with a live responder, the payload, the headers as given and as
-- parsed (null when invalid), and the channel's payload limit (null: the default). One definition for the
-- batch and the single-request paths; an SQL expression, so it inlines.
create function :SCHEMA.pgrr_send_status(
  p_valid boolean, p_live boolean, p_payload text, p_headers_text text, p_headers jsonb, p_max_bytes int
) returns text
language sql immutable
as $$
  select case
           when not p_valid then 'invalid_channel'
           when not coalesce(p_live, false) then 'no_responders'
           when p_payload is null then 'invalid_payload'
           when octet_length(p_headers_text) > 65536 then 'headers_too_large'
           when p_headers_text is not null and p_headers is null then 'invalid_headers'
           when octet_length(p_payload) > coalesce(p_max_bytes, :SCHEMA.pgrr_default_max_payload_bytes()) then 'too_large'
           else 'ok'
         end
$$;

-- pgrr_send_one: pgrr_send for a single request, with scalar arguments (the same contract, and what
-- request() and a TypeScript client with one request per turn of its event loop use). Its own function,
-- not a branch of the batch: each statement a function runs costs an executor start-up on every call, and
-- a request that is its transaction's only call pays for every expression's set-up too, so this path is
-- kept to three statements (the acknowledgements, one look-up of channel and responder, the insert).
-- Returns (id, status) as pgrr_send does for one element.
-- Handed over (see above) when the payload is at most 7,800 bytes (its entry at most 7,900): NOTIFYed here for a TypeScript client
-- (p_reply_to), at commit for an SQL caller.
-- Locks: a shared try-lock (transaction level) on the responder lock of each candidate responder.
create function :SCHEMA.pgrr_send_one(
  p_reply_to text, p_channel text, p_payload text, p_json boolean, p_timeout_ms int, p_headers text,
  p_max_attempts int, out id bigint, out status text
)
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
set enable_seqscan = off
set jit = off
set plan_cache_mode = force_generic_plan
as $$
declare
  v_channel_id int;
  v_max_bytes int;
  v_max_attempts int;
  v_responder int;
  v_inbox text;
  v_headers jsonb;
  v_message text;
  v_timeout_ms constant int := greatest(coalesce(p_timeout_ms, 30000), 1);
begin
  -- Checked here so that no stored request can make a responder's NOTIFY, and so its reply, fail.
  -- (pgrr_send opens with the same check: in a function of its own, the call alone would add a tenth to
  -- the cost of this one, measured.)
  if p_reply_to is not null and octet_length(p_reply_to) not between 1 and 63 then
    raise exception 'pgrr: invalid reply channel name (1 to 63 bytes)' using errcode = '22023';
  end if;
  -- The channel and a live responder of it, picked at random.
  select c.id, c.max_payload_bytes, c.max_attempts, r.id, r.inbox
    into v_channel_id, v_max_bytes, v_max_attempts, v_responder, v_inbox
    from :SCHEMA.pgrr_channel c
    left join lateral (
      select r.id, r.inbox from :SCHEMA.pgrr_live_responder r where r.channel_id = c.id
       order by r.accepting desc, random() limit 1
    ) r on true
   where c.name = p_channel;
  if p_headers is not null then
    v_headers := :SCHEMA.pgrr_parse_headers(p_headers);
  end if;
  -- Every stored channel name is valid (pgrr_channel checks it): the name is tested only when none matched.
  -- Each expression here costs its set-up once per transaction, so the common path keeps few.
  status := :SCHEMA.pgrr_send_status(v_channel_id is not null or :SCHEMA.pgrr_valid_channel(p_channel),
                                     v_responder is not null, p_payload, p_headers, v_headers, v_max_bytes);
  if status <> 'ok' then
    return;
  end if;
  id := :SCHEMA.pgrr_random_id();
  v_message := case when octet_length(p_payload) <= :SCHEMA.pgrr_notify_payload_max_bytes() then
                 '[' || :SCHEMA.pgrr_handoff_entry(id, coalesce(p_json, false), p_payload, v_headers, v_timeout_ms) || ']'
               end;
  if octet_length(v_message) > :SCHEMA.pgrr_notify_entry_max_bytes() then
    v_message := null;
  end if;
  insert into :SCHEMA.pgrr_request
         (id, channel_id, payload, payload_json, headers, reply_to, deadline, max_attempts,
          state, responder_id, claimed_at, attempt, handed)
  values (id, v_channel_id, p_payload, coalesce(p_json, false), v_headers, p_reply_to,
          clock_timestamp() + make_interval(secs => v_timeout_ms / 1000.0),
          least(greatest(coalesce(p_max_attempts, v_max_attempts, 1), 1), 100),
          case when v_message is null then 'pending' else 'claimed' end,
          case when v_message is not null then v_responder end,
          case when v_message is not null then clock_timestamp() end,
          case when v_message is null then 0 else 1 end,
          v_message is not null);
  if v_message is null then
    perform pg_notify(:SCHEMA.pgrr_notify_prefix() || '.s' || v_channel_id, '');
  elsif p_reply_to is not null then
    perform pg_notify(v_inbox, v_message);
  end if;
end
$$;

-- pgrr_send: insert a batch of requests (the TypeScript client's path; request() is built on it).
-- Contract: one output row per input element, in input order: (ord, id, status) with status one of
--   ok, invalid_channel, no_responders, invalid_payload (null payload), headers_too_large (headers over 64
--   KiB), invalid_headers (not a flat JSON object of strings), too_large (payload over the channel's limit);
--   id is null unless ok.
-- p_reply_to: the caller's NOTIFY channel (1 to 63 bytes) or null; anything else raises 22023.
-- p_max_attempts: clamped to 1..100. Security: requests are recorded as the session's login's (see
-- 13_roles.sql); acknowledgements delete only its own.
-- Locks: a shared try-lock (transaction level) on the responder lock of each candidate responder.
-- Handoff: a TypeScript caller's requests for one channel are handed together to a live responder of it
-- picked at random (stored as claimed by it, see pgrr_send_one), those that fit in a NOTIFY (payloads up
-- to 7800 bytes, entries up to 7900), when they are no more than that responder's concurrency; the others are stored pending.
-- NOTIFY: for pending requests, one empty notification per service. For handed ones, their entries on the
-- responder's inbox, several to a NOTIFY. A single request goes through pgrr_send_one.
create function :SCHEMA.pgrr_send(
  p_reply_to text,
  p_channels text[],
  p_payloads text[],
  p_json boolean[],
  p_timeout_ms int[],
  p_headers text[],
  p_max_attempts int[]
) returns table (ord int, id bigint, status text)
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
set enable_seqscan = off
set jit = off
set plan_cache_mode = force_generic_plan
as $$
begin
  -- One request: pgrr_send_one, which is cheaper for it (and checks p_reply_to the same way).
  if cardinality(p_channels) = 1 then
    ord := 1;
    select o.id, o.status into id, status
      from :SCHEMA.pgrr_send_one(p_reply_to, p_channels[1], p_payloads[1], p_json[1], p_timeout_ms[1], p_headers[1],
                                 p_max_attempts[1]) o;
    return next;
    return;
  end if;
  -- As pgrr_send_one opens.
  if p_reply_to is not null and octet_length(p_reply_to) not between 1 and 63 then
    raise exception 'pgrr: invalid reply channel name (1 to 63 bytes)' using errcode = '22023';
  end if;

  return query
  with input as materialized (
    select t.ord::int as ord, t.channel, t.payload, coalesce(t.is_json, false) as is_json,
           greatest(coalesce(t.timeout_ms, 30000), 1) as timeout_ms, t.headers as headers_text,
           case when t.headers is not null then :SCHEMA.pgrr_parse_headers(t.headers) end as headers,
           t.max_attempts
      from unnest(p_channels, p_payloads, p_json, p_timeout_ms, p_headers, p_max_attempts)
           with ordinality as t(channel, payload, is_json, timeout_ms, headers, max_attempts, ord)
  ),
  channels as materialized (
    -- Each channel's live responder picked at random (see pgrr_send_one), if any: it is handed the batch.
    select c.id, c.name, c.max_payload_bytes, c.max_attempts, r.id as responder, r.inbox, r.concurrency
      from :SCHEMA.pgrr_channel c
      left join lateral (
        select r.id, r.inbox, r.concurrency from :SCHEMA.pgrr_live_responder r where r.channel_id = c.id
         order by r.accepting desc, random() limit 1
      ) r on true
     where c.name in (select distinct i.channel from input i)
  ),
  checked as materialized (
    select i.*, ch.id as channel_id, ch.responder, ch.inbox, ch.concurrency,
           least(greatest(coalesce(i.max_attempts, ch.max_attempts, 1), 1), 100) as attempts,
           :SCHEMA.pgrr_send_status(:SCHEMA.pgrr_valid_channel(i.channel), ch.responder is not null, i.payload,
                                    i.headers_text, i.headers, ch.max_payload_bytes) as status
      from input i left join channels ch on ch.name = i.channel
  ),
  numbered as materialized (
    select c.*, x.id,
           -- Handoff candidates: a caller that hears replies by NOTIFY, and an entry that fits in one NOTIFY
           -- (under its 8000-byte limit; see packed below).
           case when p_reply_to is not null and x.id is not null and octet_length(c.payload) <= :SCHEMA.pgrr_notify_payload_max_bytes() then
             :SCHEMA.pgrr_handoff_entry(x.id, c.is_json, c.payload, c.headers, c.timeout_ms)
           end as entry
      from checked c,
           lateral (select case when c.status = 'ok' then :SCHEMA.pgrr_random_id() end as id) x
  ),
  planned as materialized (
    -- A channel's candidates are handed to its responder when they are no more than its concurrency (a
    -- larger burst waits in the table, where every responder claims from it).
    select c.*, coalesce(c.candidate and count(*) filter (where c.candidate) over (partition by c.channel_id) <= c.concurrency, false) as handed
      from (select n.*, coalesce(octet_length(n.entry) <= :SCHEMA.pgrr_notify_entry_max_bytes(), false) as candidate
              from numbered n
             where n.status = 'ok') c
  ),
  inserted as (
    insert into :SCHEMA.pgrr_request
           (id, channel_id, payload, payload_json, headers, reply_to, deadline, max_attempts,
            state, responder_id, claimed_at, attempt, handed)
    select p.id, p.channel_id, p.payload, p.is_json, p.headers, p_reply_to,
           clock_timestamp() + make_interval(secs => p.timeout_ms / 1000.0), p.attempts,
           case when p.handed then 'claimed' else 'pending' end,
           case when p.handed then p.responder end,
           case when p.handed then clock_timestamp() end,
           case when p.handed then 1 else 0 end,
           p.handed
      from planned p
    returning channel_id, handed
  ),
  woken as materialized (
    select pg_notify(:SCHEMA.pgrr_notify_prefix() || '.s' || w.channel_id, '')
      from (select distinct i.channel_id from inserted i where not i.handed) w
  ),
  -- Handed requests, as arrays of entries on their responder's inbox: entries of at most 2000 bytes packed
  -- by running size into NOTIFYs of at most 5800 + 2000 bytes, larger ones (up to 7900) in one each.
  packed as (
    select p.inbox, p.ord, p.entry, octet_length(p.entry) > 2000 as alone,
           sum(case when octet_length(p.entry) <= 2000 then octet_length(p.entry) + 1 else 0 end)
             over (partition by p.inbox order by p.ord) as running
      from planned p
     where p.handed
  ),
  delivered as materialized (
    select pg_notify(k.inbox, '[' || string_agg(k.entry, ',' order by k.ord) || ']')
      from packed k
     group by k.inbox, k.alone, case when k.alone then k.ord else (k.running - 1) / 5800 end
  )
  select n.ord, n.id, n.status
    from numbered n, (select count(*) from woken) as notified, (select count(*) from delivered) as handed
   order by n.ord;
end
$$;

-- Milliseconds of a request() timeout: null means 30 s; anything but 1 ms to 2^31 - 1 ms (about 24.8 days)
-- raises 22023, before any conversion could overflow. An SQL expression, so that it inlines into
-- request(): as a PL/pgSQL function of its own it cost 12,700 CPU instructions of each request() (about
-- 3%), measured. The raise is pgrr_raise_invalid_timeout, called only for a timeout out of range.
create function :SCHEMA.pgrr_raise_invalid_timeout(p_timeout interval) returns int
language plpgsql immutable
set search_path = pg_catalog, pg_temp
as $$
begin
  raise exception 'pgrr: timeout must be between 1 ms and 2147483647 ms, got %', p_timeout using errcode = '22023';
end
$$;

create function :SCHEMA.pgrr_timeout_ms(p_timeout interval) returns int
language sql immutable
as $$
  select case when p_timeout is null then 30000
              when p_timeout <= interval '0' or p_timeout > interval '2147483647 milliseconds'
                then :SCHEMA.pgrr_raise_invalid_timeout(p_timeout)
              else greatest(pg_catalog.ceil(extract(epoch from p_timeout) * 1000), 1)::int
         end
$$;

-- request(channel, payload [, timeout [, headers]]): send one request; returns its id for await_reply.
-- Fails at once (SQLSTATE PR001) when no live responder serves the channel, PR007 on an invalid channel
-- name, PR008 when the payload is larger than the channel allows, 22023 for headers over 64 KiB, for a
-- timeout out of range or headers that are not a flat JSON object of strings. The request expires after timeout (default
-- 30 s). The id is random: it is what lets the same login, and only it, await the reply. Locks and
-- NOTIFY: those of pgrr_send.
create function :SCHEMA.request(
  channel text, payload text, timeout interval default null, headers jsonb default null
) returns bigint
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_generic_plan
as $$
declare
  v_sent record;
begin
  -- An assignment, not a SELECT … FROM the function: plpgsql evaluates it as an expression, without the
  -- query's executor start-up and the tuplestore of a function scan (30 µs of a 290 µs request() here).
  v_sent := :SCHEMA.pgrr_send_one(null, channel, payload, false, :SCHEMA.pgrr_timeout_ms(timeout), headers::text, null);
  if v_sent.status is distinct from 'ok' then
    perform :SCHEMA.pgrr_raise_send_status(v_sent.status, channel);
  end if;
  return v_sent.id;
end
$$;

-- request(channel, payload jsonb, ...): the same for a JSON payload; await_reply_json returns JSON replies.
create function :SCHEMA.request(
  channel text, payload jsonb, timeout interval default null, headers jsonb default null
) returns bigint
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_generic_plan
as $$
declare
  v_sent record;
begin
  -- An assignment, as in request(channel, text, …).
  v_sent := :SCHEMA.pgrr_send_one(null, channel, payload::text, true, :SCHEMA.pgrr_timeout_ms(timeout), headers::text, null);
  if v_sent.status is distinct from 'ok' then
    perform :SCHEMA.pgrr_raise_send_status(v_sent.status, channel);
  end if;
  return v_sent.id;
end
$$;

-- Turns a pgrr_send status into the matching error. Kept apart so both request() overloads say the same.
create function :SCHEMA.pgrr_raise_send_status(p_status text, p_channel text) returns void
language plpgsql immutable
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_generic_plan
as $$
begin
  case p_status
    when 'ok' then return;
    when 'no_responders' then
      raise exception 'pgrr: no responders on channel %', quote_literal(p_channel) using errcode = 'PR001';
    when 'invalid_channel' then
      raise exception 'pgrr: invalid channel name %', coalesce(quote_literal(p_channel), 'NULL')
        using errcode = 'PR007', hint = 'A channel name is 1 to 63 bytes with no control characters.';
    when 'too_large' then
      raise exception 'pgrr: payload too large for channel %', quote_literal(p_channel) using errcode = 'PR008',
        hint = 'The channel''s max_payload_bytes (pgrr_configure_channel) bounds the payload.';
    when 'headers_too_large' then
      raise exception 'pgrr: headers take more than 64 KiB' using errcode = '22023';
    when 'invalid_payload' then
      raise exception 'pgrr: payload must not be null' using errcode = '22004';
    when 'invalid_headers' then
      raise exception 'pgrr: headers must be a JSON object whose values are strings' using errcode = '22023';
    else
      raise exception 'pgrr: unexpected send status %', p_status using errcode = 'XX000';
  end case;
end
$$;
