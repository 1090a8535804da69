-- 14_stream.sql: streamed replies. A handler sends parts before its final reply; the caller reads them in
-- order, exactly once, and the responder waits when the caller is slow.
--
-- Contract. A streamed request is an ordinary request (06_send.sql: handed or queued, claimed, replied,
-- cancelled, reaped, swept) made by pgrr_stream_open (TypeScript) or request_stream() (SQL), which also
-- makes its pgrr_stream row in the same transaction, so every responder that can see the request sees that
-- it is a stream. Always at-most-once (max_attempts 1): a retry would send the parts again.
--   parts     The responder holding the request writes parts (pgrr_stream_send); the database numbers them
--             1, 2, 3… in the order written, and stores each in pgrr_stream_part until the caller consumed
--             it. A TypeScript caller is sent each part on its part channel (pgrr_part_entry, the part
--             inside when the entry fits in 1500 bytes, else pgrr_part_short_entry and the caller reads it,
--             pgrr_stream_fetch); an SQL caller reads them with await_part() (14_stream_await.sql). The
--             final reply is written as any other (09_reply.sql), after the last part: a part after it is
--             refused ('finished').
--   window    At most max_in_flight parts (default 64) are written and not consumed: beyond, the part is
--             refused ('window') and the responder waits for a credit. The caller acknowledges what it
--             consumed (pgrr_stream_ack, or await_part itself), which deletes those parts and NOTIFYs the
--             responder's control channel with a credit; the responder may also read its credits
--             (pgrr_stream_credit), since a NOTIFY is a hint.
--   deadline  The request's deadline covers the whole stream; the caller may push it later between parts
--             (pgrr_stream_ack's extension: its idle timeout), never earlier.
--   end       The caller reads the parts left and deletes the stream (pgrr_stream_finish) once the final
--             outcome is known, or when it gives up (with the cancellation). A stream whose caller went away
--             is deleted by the sweep (pgrr_stream_sweep, from pgrr_sweep_older_than) once its request is
--             gone and its deadline is past by the sweep's grace: nothing is left behind in the tables.
-- Bad input: a part over the channel's max_payload_bytes is refused ('too_large') and nothing is stored;
-- the stream goes on. Security: as 13_roles.sql: the caller's functions act on the calling login's streams
-- only (an id of another login is unknown), the responder's on the requests its own session holds.
-- Locks: row locks. A responder never waits for one: it takes the stream's row lock with SKIP LOCKED and
-- calls a locked stream 'busy' (it waits for a credit, as for 'window'); callers wait for them briefly.
-- NOTIFY: parts on a TypeScript caller's part channel (<prefix>.t<random>: a JSON array of part entries,
-- each NOTIFY under 8000 bytes); credits on the responder's control channel (<prefix>.w<responder id>:
-- c<id>:<consumed>:<ms left before the deadline>); an SQL caller's awaiter is woken by the responder's
-- reply bell of the request's lane (03_bells.sql), rung by each part.

-- One part in a TypeScript caller's part NOTIFY: [id, 'p', n, is_json, part]; and the short form [id, 'p', n]
-- when the entry would exceed 1500 bytes (the caller reads the part with pgrr_stream_fetch).
-- src/stream-wire.ts reads them.
create function :SCHEMA.pgrr_part_entry(p_id bigint, p_n int, p_json boolean, p_part text) returns text
language sql stable
as $$ select pg_catalog.json_build_array(p_id::text, 'p', p_n, p_json, p_part)::text $$;

create function :SCHEMA.pgrr_part_short_entry(p_id bigint, p_n int) returns text
language sql stable
as $$ select pg_catalog.json_build_array(p_id::text, 'p', p_n)::text $$;

-- A credit on a responder's control channel (see above): c<id>:<consumed>:<ms left before the deadline>.
-- Never confused with a cancellation on the same channel, which is a list of ids (digits and commas).
create function :SCHEMA.pgrr_credit_entry(p_id bigint, p_consumed int, p_remaining_ms bigint) returns text
language sql stable
as $$ select 'c' || p_id::text || ':' || p_consumed::text || ':' || greatest(p_remaining_ms, 0)::text $$;

-- Milliseconds from now to a deadline (0 once past), as credits and pgrr_stream_credit tell them.
create function :SCHEMA.pgrr_ms_until(p_deadline timestamptz) returns bigint
language sql volatile
as $$ select greatest(ceil(extract(epoch from p_deadline - pg_catalog.clock_timestamp()) * 1000), 0)::bigint $$;

-- pgrr_stream_open(reply_to, part_to, channel, payload, json, timeout_ms, headers, max_in_flight): a
-- TypeScript caller's streamed request: pgrr_send_one (same statuses, same handoff), at most once, and its
-- stream row. p_part_to: the caller's part channel (1 to 63 bytes, or null: an SQL caller); p_max_in_flight
-- 1 to 100000 (null: 64); anything else raises 22023.
create function :SCHEMA.pgrr_stream_open(
  p_reply_to text, p_part_to text, p_channel text, p_payload text, p_json boolean, p_timeout_ms int, p_headers text,
  p_max_in_flight int, out id bigint, out status text
)
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
set enable_seqscan = off
set jit = off
set plan_cache_mode = force_generic_plan
as $$
declare
  v_sent record;
begin
  if p_part_to is not null and octet_length(p_part_to) not between 1 and 63 then
    raise exception 'pgrr: invalid part channel name (1 to 63 bytes)' using errcode = '22023';
  end if;
  if p_max_in_flight is not null and p_max_in_flight not between 1 and 100000 then
    raise exception 'pgrr: max_in_flight must be between 1 and 100000, got %', p_max_in_flight using errcode = '22023';
  end if;
  v_sent := :SCHEMA.pgrr_send_one(p_reply_to, p_channel, p_payload, p_json, p_timeout_ms, p_headers, 1);
  id := v_sent.id;
  status := v_sent.status;
  if status = 'ok' then
    insert into :SCHEMA.pgrr_stream (id, part_to, max_in_flight, deadline)
    select q.id, p_part_to, coalesce(p_max_in_flight, 64), q.deadline from :SCHEMA.pgrr_request q where q.id = v_sent.id;
  end if;
end
$$;

-- request_stream(channel, payload [, timeout [, headers [, max_in_flight]]]): request() for a streamed
-- reply, read with await_part(). Same errors as request(); max_in_flight out of 1..100000 raises 22023.
create function :SCHEMA.request_stream(
  channel text, payload text, timeout interval default null, headers jsonb default null, max_in_flight int default 64
) returns bigint
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_generic_plan
as $$
declare
  v_sent record;
begin
  v_sent := :SCHEMA.pgrr_stream_open(null, null, channel, payload, false, :SCHEMA.pgrr_timeout_ms(timeout), headers::text, max_in_flight);
  if v_sent.status is distinct from 'ok' then
    perform :SCHEMA.pgrr_raise_send_status(v_sent.status, channel);
  end if;
  return v_sent.id;
end
$$;

create function :SCHEMA.request_stream(
  channel text, payload jsonb, timeout interval default null, headers jsonb default null, max_in_flight int default 64
) returns bigint
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_generic_plan
as $$
declare
  v_sent record;
begin
  v_sent := :SCHEMA.pgrr_stream_open(null, null, channel, payload::text, true, :SCHEMA.pgrr_timeout_ms(timeout), headers::text, max_in_flight);
  if v_sent.status is distinct from 'ok' then
    perform :SCHEMA.pgrr_raise_send_status(v_sent.status, channel);
  end if;
  return v_sent.id;
end
$$;

-- pgrr_stream_send(responder, ids, parts, json): the responder writes parts, in array order (several of
-- one stream are numbered in that order). One output row per element: (ord, status, n, consumed,
-- max_in_flight), status one of
--   ok          written as part n;
--   window      max_in_flight parts are in flight: wait for a credit (consumed, max_in_flight tell where
--               the caller is), then send it again;
--   busy        the stream's row is locked by its caller (an acknowledgement being written): the same;
--   too_large   the part is over the channel's max_payload_bytes (nothing stored; the stream goes on);
--   invalid     a null part;
--   late        the request's deadline has passed;
--   finished    its final reply (or error) was written: no part may follow it;
--   not_stream  the request is this responder's but its caller asked for one reply, not a stream (or has
--               finished reading the stream);
--   gone        the request is not in this responder's hands (cancelled, lost, unknown), or this session
--               did not register the responder.
-- Locks: the stream row, FOR UPDATE SKIP LOCKED, until commit (the caller's pgrr_stream_finish waits for it,
-- so a part written as it ends is deleted with the rest); the reply bell of an SQL caller's lane is rung.
-- NOTIFY: a TypeScript caller's part channel, several entries to a NOTIFY.
create function :SCHEMA.pgrr_stream_send(p_responder int, p_ids bigint[], p_parts text[], p_json boolean[])
returns table (ord int, status text, n int, consumed int, max_in_flight int)
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
set enable_seqscan = off
set jit = off
set plan_cache_mode = force_generic_plan
as $$
declare
  v_max_bytes int;
  v_id bigint;
  v_exists boolean;
  v_now constant timestamptz := clock_timestamp();
  q record;
  s record;
  v_entry text;
  v_to text;
  v_message text := '';
  v_rung int[] := '{}';
  -- Streams with a part refused for want of room in this call: their later parts are refused too, so that
  -- none overtakes it (a credit committing meanwhile would let it).
  v_refused bigint[] := '{}';
begin
  select coalesce(c.max_payload_bytes, :SCHEMA.pgrr_default_max_payload_bytes()) into v_max_bytes
    from :SCHEMA.pgrr_responder w
    join :SCHEMA.pgrr_channel c on c.id = w.channel_id
   where w.id = p_responder and w.backend_pid = pg_backend_pid() and w.login = session_user;
  for i in 1 .. coalesce(cardinality(p_ids), 0) loop
    ord := i;
    n := null;
    consumed := null;
    max_in_flight := null;
    v_id := p_ids[i];
    -- The stream's row first, locked: a caller's pgrr_stream_finish deletes it before the parts, so a part
    -- is either refused here or deleted there.
    select x.sent, x.consumed, x.max_in_flight, x.part_to into s
      from :SCHEMA.pgrr_stream x where x.id = v_id for update skip locked;
    v_exists := found or exists (select 1 from :SCHEMA.pgrr_stream x where x.id = v_id);
    select r.state, r.responder_id, r.deadline, r.seq into q from :SCHEMA.pgrr_request r where r.id = v_id;
    if v_max_bytes is null or not found or q.responder_id is distinct from p_responder then
      status := 'gone';
    elsif q.state in ('replied', 'failed') then
      status := 'finished';
    elsif q.state <> 'claimed' then
      status := 'gone';
    elsif not v_exists then
      status := 'not_stream';
    elsif s.sent is null or v_id = any (v_refused) then
      status := 'busy';
      v_refused := v_refused || v_id;
    elsif q.deadline < v_now then
      status := 'late';
    elsif p_parts[i] is null then
      status := 'invalid';
    elsif octet_length(p_parts[i]) > v_max_bytes then
      status := 'too_large';
    elsif s.sent >= s.consumed + s.max_in_flight then
      status := 'window';
      v_refused := v_refused || v_id;
      consumed := s.consumed;
      max_in_flight := s.max_in_flight;
    else
      n := s.sent + 1;
      update :SCHEMA.pgrr_stream x set sent = n where x.id = v_id;
      insert into :SCHEMA.pgrr_stream_part (request_id, n, part, part_json) values (v_id, n, p_parts[i], coalesce(p_json[i], false));
      status := 'ok';
      consumed := s.consumed;
      max_in_flight := s.max_in_flight;
      if s.part_to is not null then
        v_entry := :SCHEMA.pgrr_part_entry(v_id, n, coalesce(p_json[i], false), p_parts[i]);
        if octet_length(v_entry) > 1500 then
          v_entry := :SCHEMA.pgrr_part_short_entry(v_id, n);
        end if;
        -- Entries for one part channel go together, up to 6000 + 1500 bytes a NOTIFY.
        if v_to is distinct from s.part_to or octet_length(v_message) > 6000 then
          if v_to is not null then
            perform pg_notify(v_to, '[' || v_message || ']');
          end if;
          v_to := s.part_to;
          v_message := v_entry;
        else
          v_message := v_message || ',' || v_entry;
        end if;
      elsif :SCHEMA.pgrr_reply_lane(q.seq) <> all (v_rung) then
        -- An SQL caller waits on this responder's reply bell of the request's lane (see await_part).
        v_rung := v_rung || :SCHEMA.pgrr_reply_lane(q.seq);
        perform :SCHEMA.pgrr_ring_reply(p_responder, :SCHEMA.pgrr_reply_lane(q.seq));
      end if;
    end if;
    return next;
  end loop;
  if v_to is not null then
    perform pg_notify(v_to, '[' || v_message || ']');
  end if;
end
$$;

-- pgrr_stream_credit(responder, ids): where the callers of these streams are (what their credit NOTIFYs
-- say), for a responder waiting for a credit: (id, consumed, ms left before the deadline). Only requests
-- this session's responder holds. Locks: none.
create function :SCHEMA.pgrr_stream_credit(p_responder int, p_ids bigint[])
returns table (id bigint, consumed int, remaining_ms bigint)
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
set enable_seqscan = off
set jit = off
set plan_cache_mode = force_generic_plan
as $$
begin
  return query
  select s.id, s.consumed, :SCHEMA.pgrr_ms_until(q.deadline)
    from :SCHEMA.pgrr_stream s
    join :SCHEMA.pgrr_request q on q.id = s.id
    join :SCHEMA.pgrr_responder w on w.id = q.responder_id
   where s.id = any (p_ids) and q.responder_id = p_responder and q.state = 'claimed'
     and w.backend_pid = pg_backend_pid() and w.login = session_user;
end
$$;

-- pgrr_stream_ack(ids, consumed, extend_ms): a TypeScript caller consumed parts 1 to consumed[i] of stream
-- ids[i]: they are deleted, and the responder is sent a credit on its control channel. extend_ms[i], when
-- not null: the request's deadline becomes at least now + extend_ms (the caller's idle timeout), never
-- earlier. The calling login's own streams only. Locks: row locks, in id order.
create function :SCHEMA.pgrr_stream_ack(p_ids bigint[], p_consumed int[], p_extend_ms int[]) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
set enable_seqscan = off
set jit = off
set plan_cache_mode = force_generic_plan
as $$
declare
  r record;
  v_consumed int;
  v_deadline timestamptz;
  v_responder int;
  v_state text;
begin
  for r in
    select t.id, t.consumed, t.extend_ms from unnest(p_ids, p_consumed, p_extend_ms) as t(id, consumed, extend_ms) order by t.id
  loop
    select q.responder_id, q.state, q.deadline into v_responder, v_state, v_deadline
      from :SCHEMA.pgrr_request q where q.id = r.id and q.caller = session_user;
    if found and r.extend_ms is not null and r.extend_ms > 0 and v_state in ('pending', 'claimed') then
      update :SCHEMA.pgrr_request q
         set deadline = greatest(q.deadline, clock_timestamp() + make_interval(secs => r.extend_ms / 1000.0))
       where q.id = r.id and q.state in ('pending', 'claimed')
      returning q.deadline into v_deadline;
    end if;
    update :SCHEMA.pgrr_stream s
       set consumed = greatest(s.consumed, least(r.consumed, s.sent)),
           deadline = greatest(s.deadline, coalesce(v_deadline, s.deadline))
     where s.id = r.id and s.caller = session_user
    returning s.consumed into v_consumed;
    continue when not found;
    delete from :SCHEMA.pgrr_stream_part p where p.request_id = r.id and p.n <= v_consumed;
    if v_state = 'claimed' then
      perform pg_notify(:SCHEMA.pgrr_notify_prefix() || '.w' || v_responder, :SCHEMA.pgrr_credit_entry(r.id, v_consumed, :SCHEMA.pgrr_ms_until(v_deadline)));
    end if;
  end loop;
end
$$;

-- pgrr_stream_fetch(id, after): the parts of the calling login's stream id numbered after `after`, in
-- order (those whose NOTIFY carried no body, or was missed). Locks: none.
create function :SCHEMA.pgrr_stream_fetch(p_id bigint, p_after int)
returns table (n int, part text, part_json boolean)
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
set enable_seqscan = off
set jit = off
set plan_cache_mode = force_generic_plan
as $$
begin
  return query
  select p.n, p.part, p.part_json
    from :SCHEMA.pgrr_stream_part p
   where p.request_id = p_id and p.n > p_after
     and exists (select 1 from :SCHEMA.pgrr_stream s where s.id = p_id and s.caller = session_user)
   order by p.n;
end
$$;

-- pgrr_stream_finish(id, after, cancel): the calling login's stream ends: returns its parts numbered after
-- `after`, in order, and deletes the stream and every part. With cancel, the request is cancelled first
-- (pgrr_cancel: the handler's signal fires). Locks: the stream's row (waiting for a part being written),
-- then its parts.
create function :SCHEMA.pgrr_stream_finish(p_id bigint, p_after int, p_cancel boolean)
returns table (n int, part text, part_json boolean)
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
set enable_seqscan = off
set jit = off
set plan_cache_mode = force_generic_plan
as $$
begin
  if p_cancel then
    perform :SCHEMA.pgrr_cancel(array[p_id]);
  end if;
  delete from :SCHEMA.pgrr_stream s where s.id = p_id and s.caller = session_user;
  if not found then
    return;
  end if;
  -- A statement of its own: its snapshot sees a part committed while the delete above waited.
  return query
  with gone as (
    delete from :SCHEMA.pgrr_stream_part p where p.request_id = p_id returning p.n, p.part, p.part_json
  )
  select g.n, g.part, g.part_json from gone g where g.n > p_after order by g.n;
end
$$;

-- pgrr_stream_sweep(grace): deletes the streams (and their parts) whose request is gone and whose deadline
-- is past by more than grace: nobody reads them any more (their caller went away). Run by
-- pgrr_sweep_older_than (04_liveness.sql), with its grace. Returns how many streams it deleted.
create function :SCHEMA.pgrr_stream_sweep(p_grace interval) returns int
language plpgsql volatile
set search_path = pg_catalog, pg_temp
set jit = off
set plan_cache_mode = force_generic_plan
as $$
declare
  v_count int;
begin
  with gone as (
    delete from :SCHEMA.pgrr_stream s
     where s.deadline < clock_timestamp() - p_grace
       and not exists (select 1 from :SCHEMA.pgrr_request q where q.id = s.id)
    returning s.id
  ),
  parts as (
    delete from :SCHEMA.pgrr_stream_part p using gone g where p.request_id = g.id
  )
  select count(*) into v_count from gone;
  return v_count;
end
$$;
