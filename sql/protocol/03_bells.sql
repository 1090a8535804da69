-- 03_bells.sql: the locks that wake SQL awaiters the moment what they wait for commits, instead of a sleep.
-- An SQL session can wait inside a statement only by sleeping or by waiting on a lock. (TypeScript callers
-- hear of their replies by NOTIFY and never use these.)
--
-- Claim bell of a channel: (pgrr_ns_bell(), pgrr_bell_key(channel id, parity)), parity 0 or 1, exclusive,
-- session level. One responder per channel, the bell holder (it holds the token (pgrr_ns_bell(),
-- pgrr_bell_key(channel id, 2))), holds one of the two bells and rings it on every claim that takes a
-- request made from SQL: in the claim's transaction it takes the other bell and moves the one it held to
-- transaction scope, so that one is released exactly when the claim commits. SQL awaiters of a pending
-- request block on the bell that is held, and wake the moment a claim commits.
-- Reply bells of a responder: (pgrr_ns_reply_bell(), pgrr_reply_bell_key(responder id, lane, k)), exclusive,
-- session level: for each of 16 lanes (a request's lane is its seq modulo 16), four bells, k 0 to 3. Each
-- responder holds one bell of every lane from registration on (05_registration.sql), and moves to the next
-- in every reply transaction that answers a request of that lane handed to it by an SQL caller (who has no
-- request lock to wait on, 08_handoff.sql): it takes bell k + 1 and moves bell k to transaction scope, so k
-- is released exactly when that reply commits. An awaiter of a handed request finds the current bell of
-- its lane (the one held, or the older of two held in a row: a reply committing), re-reads the request, and
-- blocks on that bell. Four bells rather than two, so that "the older of two held" is always defined;
-- lanes, so that a reply wakes only the awaiters of its lane (with one bell per responder, SQL callers at
-- c=16 fell from 2.3k to 1.0k requests/s).
-- No table records which bell is current (a row updated on every claim or reply grows a long version chain
-- whenever an old transaction holds back cleanup): the holder keeps it in a session setting, and awaiters
-- look for the held one. Every step of a responder is a try-lock: a session squatting on a bell's key only
-- makes awaiters wait for their timeout instead (16 ms on a claim bell, 50 ms growing to 1 s on a reply
-- bell, see 10_await.sql).
-- NOTIFY: none.

-- pgrr_wait_bell(channel, timeout_ms): 'free' at once when no bell of the channel is held (no holder);
-- otherwise waits on the held one until it rings ('rang') or the timeout ('timeout'). Each test runs in a
-- subtransaction of its own, so no shared hold lingers to make the holder's ring fail. Locks: none after
-- return.
create function :SCHEMA.pgrr_wait_bell(p_channel_id int, p_timeout_ms int) returns text
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  v_key int;
begin
  if not :SCHEMA.pgrr_lock_is_free(:SCHEMA.pgrr_ns_bell(), :SCHEMA.pgrr_bell_key(p_channel_id, 0)) then
    v_key := :SCHEMA.pgrr_bell_key(p_channel_id, 0);
  elsif not :SCHEMA.pgrr_lock_is_free(:SCHEMA.pgrr_ns_bell(), :SCHEMA.pgrr_bell_key(p_channel_id, 1)) then
    v_key := :SCHEMA.pgrr_bell_key(p_channel_id, 1);
  else
    return 'free';
  end if;
  if :SCHEMA.pgrr_wait_lock(:SCHEMA.pgrr_ns_bell(), v_key, p_timeout_ms) then
    return 'rang';
  end if;
  return 'timeout';
end
$$;

-- The session setting that holds which claim bell (0 or 1) of a channel the holder's session holds (see
-- above). Casts, not text || int, so that it is inlined (see pgrr_reply_bell_setting).
create function :SCHEMA.pgrr_bell_setting(p_channel_id int) returns text
language sql immutable
as $$ select 'pgrr.bell_' || pg_catalog.to_hex(:SCHEMA.pgrr_ns_bell()) || '_' || p_channel_id::text $$;

-- pgrr_ring(responder, channel): called by pgrr_claim after it claimed requests made from SQL (reply_to
-- null). The bell holder rings (see above);
-- a responder that is not the holder becomes it when nobody is (it takes the token, then a bell).
-- Never waits for a lock: every advisory lock is a try-lock (an awaiter testing a bell holds it shared for
-- an instant; the ring is then skipped, and awaiters wake at their nap's end instead). The holder's parity
-- lives in a session setting, so a ring writes no row.
create function :SCHEMA.pgrr_ring(p_responder int, p_channel_id int) returns void
language plpgsql volatile
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_generic_plan
as $$
declare
  v_setting constant text := :SCHEMA.pgrr_bell_setting(p_channel_id);
  v_parity int := nullif(current_setting(v_setting, true), '')::int;
begin
  if v_parity is null then
    if not pg_try_advisory_lock(:SCHEMA.pgrr_ns_bell(), :SCHEMA.pgrr_bell_key(p_channel_id, 2)) then
      return;
    end if;
    if pg_try_advisory_lock(:SCHEMA.pgrr_ns_bell(), :SCHEMA.pgrr_bell_key(p_channel_id, 0)) then
      v_parity := 0;
    elsif pg_try_advisory_lock(:SCHEMA.pgrr_ns_bell(), :SCHEMA.pgrr_bell_key(p_channel_id, 1)) then
      v_parity := 1;
    else
      perform pg_advisory_unlock(:SCHEMA.pgrr_ns_bell(), :SCHEMA.pgrr_bell_key(p_channel_id, 2));
      return;
    end if;
    perform set_config(v_setting, v_parity::text, false);
    return;
  end if;
  if not pg_try_advisory_lock(:SCHEMA.pgrr_ns_bell(), :SCHEMA.pgrr_bell_key(p_channel_id, 1 - v_parity)) then
    return;
  end if;
  -- The setting is rolled back with an aborted transaction, the session locks are not: when this session
  -- no longer holds the bell the setting names, it already held the other one (now twice), so it gives
  -- that hold back, and the setting follows the locks again.
  if not (pg_try_advisory_xact_lock(:SCHEMA.pgrr_ns_bell(), :SCHEMA.pgrr_bell_key(p_channel_id, v_parity))
          and pg_advisory_unlock(:SCHEMA.pgrr_ns_bell(), :SCHEMA.pgrr_bell_key(p_channel_id, v_parity))) then
    perform pg_advisory_unlock(:SCHEMA.pgrr_ns_bell(), :SCHEMA.pgrr_bell_key(p_channel_id, 1 - v_parity));
  end if;
  perform set_config(v_setting, (1 - v_parity)::text, false);
end
$$;

-- The lanes of reply bells (see above), and the lane of a request.
create function :SCHEMA.pgrr_reply_lanes() returns int
language sql immutable parallel safe
as $$ select 16 $$;

create function :SCHEMA.pgrr_reply_lane(p_seq bigint) returns int
language sql immutable parallel safe
as $$ select (p_seq % :SCHEMA.pgrr_reply_lanes())::int $$;

-- Second lock key of a responder's reply bell k (0 to 3) of a lane: (responder id * 16 + lane) * 4 + k
-- modulo 2^32, as an int. Keys of two responders collide only when their ids differ by a multiple of
-- 2^26; awaiters then wake more often, never later than their timeout.
create function :SCHEMA.pgrr_reply_bell_key(p_responder int, p_lane int, p_k int) returns int
language sql immutable parallel safe
as $$
  select ((((p_responder::bigint * :SCHEMA.pgrr_reply_lanes() + p_lane) * 4 + p_k + 2147483648) & 4294967295) - 2147483648)::int
$$;

-- The session setting that holds which reply bell (0 to 3) of a lane the responder's session holds (see
-- above). Casts, not text || int: that operator is stable, and an immutable SQL function whose body is not
-- is never inlined; it was run as a function of its own, parsed and planned once per transaction
-- (about 20 µs of each reply to an SQL caller and of each await_reply).
create function :SCHEMA.pgrr_reply_bell_setting(p_responder int, p_lane int) returns text
language sql immutable
as $$ select 'pgrr.reply_bell_' || pg_catalog.to_hex(:SCHEMA.pgrr_ns_reply_bell()) || '_' || p_responder::text || '_' || p_lane::text $$;

-- pgrr_ring_reply(responder, lane): called in a reply transaction that answered a handed request of an SQL
-- caller, for its lane. Takes the responder's next reply bell of the lane and moves the current one to
-- transaction scope (released at commit, waking its awaiters). Never waits: an awaiter looking at the
-- next bell holds it for an instant, so the try-lock is tried a few times in a row; when someone still
-- holds it (a squatter), the ring is skipped and awaiters wake at their timeout. The session must be the
-- responder's (the callers check it). Locks: see above.
create function :SCHEMA.pgrr_ring_reply(p_responder int, p_lane int) returns void
language plpgsql volatile
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_generic_plan
as $$
declare
  v_setting constant text := :SCHEMA.pgrr_reply_bell_setting(p_responder, p_lane);
  v_k int := nullif(current_setting(v_setting, true), '')::int;
begin
  if v_k is null then
    return;
  end if;
  for v_try in 1..20 loop
    if pg_try_advisory_lock(:SCHEMA.pgrr_ns_reply_bell(), :SCHEMA.pgrr_reply_bell_key(p_responder, p_lane, (v_k + 1) % 4)) then
      -- As in pgrr_ring: a setting rolled back with an aborted reply names a bell this session no longer
      -- holds, and the next one is then held twice; give that hold back so that locks and setting agree.
      if not (pg_try_advisory_xact_lock(:SCHEMA.pgrr_ns_reply_bell(), :SCHEMA.pgrr_reply_bell_key(p_responder, p_lane, v_k))
              and pg_advisory_unlock(:SCHEMA.pgrr_ns_reply_bell(), :SCHEMA.pgrr_reply_bell_key(p_responder, p_lane, v_k))) then
        perform pg_advisory_unlock(:SCHEMA.pgrr_ns_reply_bell(), :SCHEMA.pgrr_reply_bell_key(p_responder, p_lane, (v_k + 1) % 4));
      end if;
      perform set_config(v_setting, ((v_k + 1) % 4)::text, false);
      return;
    end if;
  end loop;
end
$$;

-- pgrr_current_reply_bell(responder, lane, after): which of the responder's reply bells (0 to 3) of the
-- lane its next reply there to an SQL caller releases: the one held, or the older of two consecutive ones
-- held (a reply is committing). Null when that cannot be told (none held: the responder is gone; or a
-- session squats on its keys). after: the bell the awaiter last waited on, or null; the one after it is
-- looked at first, and when it is held it is the answer (current, or the older of two), with no look at
-- the others, one of which the responder is about to take. Locks: none after return (see
-- pgrr_lock_is_free_now).
create function :SCHEMA.pgrr_current_reply_bell(p_responder int, p_lane int, p_after int default null) returns int
language plpgsql volatile
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_generic_plan
as $$
declare
  v_held boolean[] := array[false, false, false, false];
  v_count int := 0;
  -- Computed first: passed as an expression, the key would be too costly to inline the look twice.
  v_next constant int := (p_after + 1) % 4;
begin
  if v_next is not null
     and not :SCHEMA.pgrr_lock_is_free_now(:SCHEMA.pgrr_ns_reply_bell(), :SCHEMA.pgrr_reply_bell_key(p_responder, p_lane, v_next)) then
    return v_next;
  end if;
  for k in 0..3 loop
    if not :SCHEMA.pgrr_lock_is_free_now(:SCHEMA.pgrr_ns_reply_bell(), :SCHEMA.pgrr_reply_bell_key(p_responder, p_lane, k)) then
      v_held[k + 1] := true;
      v_count := v_count + 1;
    end if;
  end loop;
  for k in 0..3 loop
    if v_held[k + 1] and (v_count = 1 or (v_count = 2 and v_held[(k + 1) % 4 + 1])) then
      return k;
    end if;
  end loop;
  return null;
end
$$;

