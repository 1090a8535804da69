-- 03_bells.sql: the claim bell of a channel, which wakes the SQL awaiters of pending requests the moment a
-- claim commits, instead of a sleep. (TypeScript callers hear of their replies by NOTIFY and never use it.)
--
-- Locks: (pgrr_ns_bell(), pgrr_bell_key(channel id, parity)), parity 0 or 1, exclusive, session level.
-- One responder per channel, the bell holder (it holds the token (pgrr_ns_bell(), pgrr_bell_key(channel
-- id, 2))), holds one of the two bells and rings it on every claim that takes a request made from SQL: in
-- the claim's transaction it takes the other bell and moves the one it held to transaction scope, so that
-- one is released exactly when the claim commits. SQL awaiters of a pending request block on the bell that
-- is held, and wake the moment a claim commits (see pgrr_await, 10_await.sql). No table records which bell
-- is current (a row updated on every claim grows a long version chain whenever an old transaction holds
-- back cleanup): the holder keeps its parity in a session setting, and awaiters look for the held one.
-- Every step of the holder is a try-lock: a session squatting on a bell's key only makes awaiters nap
-- instead (they wait on it at most 16 ms at a time).
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
  v_setting constant text := 'pgrr.bell_' || to_hex(:SCHEMA.pgrr_ns_bell()) || '_' || p_channel_id;
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
