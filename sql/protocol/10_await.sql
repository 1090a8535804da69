-- 10_await.sql: an SQL caller waits for its reply inside one statement, and consumes it.
--
-- An SQL session can wait inside a statement only by sleeping or by waiting on a lock, so the SQL awaiter
-- blocks on locks that are released exactly when what it waits for commits (03_bells.sql): a request
-- handed to a responder, on that responder's reply bell of its lane, rung by its reply (08_handoff.sql,
-- 09_reply.sql); a pending request, on its channel's claim bell, rung by the next claim; a claimed request,
-- on its request lock, released by its reply (07_claim.sql). Every wait is bounded, and followed by a look
-- at the request and a reap of it (04_liveness.sql): a lock may be held by a squatter, or by another
-- request with the same key.
-- One statement, no session state left behind: safe through a transaction-pooling PgBouncer.
-- Locks: shared waits on those locks, none held after return. NOTIFY: none (a reap may NOTIFY).

-- await_reply(id [, timeout]): wait for the reply of request id and consume it.
-- Returns the reply text (JSON replies as their JSON text). Raises:
--   PR002 timeout (the wait, or the request's own deadline, ran out; past its deadline the request is
--         never claimed and the sweeper deletes it; also a failure with code PGRR_DEADLINE, which a
--         responder writes when the deadline passes while its handler runs),
--   0A000 called in a transaction that is not READ COMMITTED (its one snapshot would never see the reply),
--   PR003 the handler failed (message = its message, detail = its error code),
--   PR004 the responder's session ended while handling it, PR005 unknown or already consumed id, or a
--         request of another login (see 13_roles.sql),
--   PR006 awaited inside the transaction that made the request (it can never be answered there),
--   PR009 the request was cancelled.
-- Waits without a polling floor. A request handed to a responder (the usual case) is waited for on that
-- responder's reply bell, which its next reply to an SQL caller releases. A pending one blocks once on the
-- channel's bell, which rings when a claim of the bell holder commits; once claimed it blocks on the
-- request lock, which the responder releases exactly when its reply commits. Between those it naps (1 ms,
-- doubling to 16 ms): after the first ring (a claim that did not take this request: a backlog) and when no
-- bell is held. No wait on a reply bell or a request lock lasts more than a second without a look at the
-- request and a reap (pgrr_reap): the lock may be held by someone other than the responder (a squatter, or
-- another request with the same key). A TypeScript client's request, awaited from SQL by the same login,
-- has no lock to wait on: it is napped for.
-- An error outcome is not consumed: the raise rolls back every change of the statement, so it stays
-- readable (the same error again) until the sweeper deletes it.
-- One statement, no session state left behind: safe through a transaction-pooling PgBouncer.
-- The waiting itself is pgrr_await, which also tells whether the reply is JSON (for await_reply_json).
create function :SCHEMA.await_reply(id bigint, timeout interval default null) returns text
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_generic_plan
as $$
declare
  v_reply record;
begin
  -- An assignment, not a SELECT … FROM the function (see request()).
  v_reply := :SCHEMA.pgrr_await(await_reply.id, await_reply.timeout);
  return v_reply.reply;
end
$$;

-- pgrr_await(id, timeout): await_reply's contract (errors, waiting, consumption), returning the reply and
-- whether it is JSON. Internal: runs inside await_reply and await_reply_json, as the owner.
create function :SCHEMA.pgrr_await(p_id bigint, p_timeout interval, out reply text, out reply_json boolean,
                                   out reply_headers jsonb)
language plpgsql volatile
set search_path = pg_catalog, pg_temp
-- Planned once per session, maybe while the table is nearly empty: a sequential scan then looks cheapest
-- and stays in the cached plan as the table grows (see pgrr_reply). Every access here is by primary key.
set enable_seqscan = off
set jit = off
set plan_cache_mode = force_generic_plan
as $$
declare
  r record;
  v_id constant bigint := p_id;
  timeout constant interval := p_timeout;
  v_until timestamptz;
  v_left_ms int;
  v_nap_ms int := 1;
  v_belled boolean := false;
  -- The reply bell (0 to 3) found before the last look at the request, the one waited on last, and how
  -- long to block on it at most.
  v_bell int;
  v_last_bell int;
  v_bell_wait_ms int := 50;
  -- How long to block on the request lock at most (see below).
  v_lock_wait_ms int := 50;
begin
  loop
    select q.state, q.reply, q.reply_json, q.reply_headers, q.error_code, q.error_message, q.deadline,
           q.origin_xact, q.channel_id, q.seq, q.handed, q.reply_to, q.responder_id
      into r
      from :SCHEMA.pgrr_request q
     where q.id = v_id and q.caller = session_user;
    if not found then
      raise exception 'pgrr: unknown request %', v_id using errcode = 'PR005',
        hint = 'The id was never issued (to this login), its reply was already consumed, or it expired.';
    end if;
    if v_until is null then
      -- A snapshot taken once for the whole transaction would never see the reply.
      if current_setting('transaction_isolation') <> 'read committed' then
        raise exception 'pgrr: await_reply needs the READ COMMITTED isolation level, not %',
          current_setting('transaction_isolation') using errcode = '0A000';
      end if;
      if r.origin_xact = pg_current_xact_id_if_assigned() then
        raise exception 'pgrr: request % was made in this same transaction and cannot be answered before it commits', v_id
          using errcode = 'PR006', hint = 'Commit after request() and call await_reply() in a later transaction.';
      end if;
      -- Clamped to [now, deadline]: any interval, infinite or negative ones included, is a valid timeout.
      v_until := clock_timestamp()
                 + greatest(least(timeout, r.deadline - clock_timestamp()), interval '0');
    end if;

    case r.state
      when 'replied' then
        delete from :SCHEMA.pgrr_request q where q.id = v_id;
        reply := r.reply;
        reply_json := coalesce(r.reply_json, false);
        reply_headers := r.reply_headers;
        return;
      when 'failed' then
        delete from :SCHEMA.pgrr_request q where q.id = v_id;
        if r.error_code = 'PGRR_DEADLINE' then
          -- The responder gave up at the deadline: the caller's timeout, as for TypeScript callers.
          raise exception 'pgrr: request % reached its deadline', v_id using errcode = 'PR002';
        end if;
        raise exception '%', r.error_message using errcode = 'PR003', detail = coalesce(r.error_code, '');
      when 'lost' then
        delete from :SCHEMA.pgrr_request q where q.id = v_id;
        raise exception 'pgrr: the responder of request % ended without replying', v_id using errcode = 'PR004';
      when 'cancelled' then
        raise exception 'pgrr: request % was cancelled', v_id using errcode = 'PR009';
      else
        null;
    end case;

    v_left_ms := ceil(extract(epoch from v_until - clock_timestamp()) * 1000);
    if v_left_ms <= 0 then
      -- (Nothing to cancel: anything this statement wrote would roll back with the raise. A request past
      -- its deadline is never claimed, its responder's deadline timer aborts a running handler, and the
      -- sweeper deletes the row.)
      raise exception 'pgrr: timed out waiting for the reply to request %', v_id using errcode = 'PR002';
    end if;

    if r.state = 'pending' then
      -- Wait for the next claim on the channel's bell, once: a claim that did not take this request (a
      -- backlog) means more waiting anyway, and many awaiters woken by every claim would cost more than
      -- their naps. Nap when no responder holds a bell, or after the first ring.
      if not v_belled and :SCHEMA.pgrr_wait_bell(r.channel_id, least(16, v_left_ms)) <> 'free' then
        v_belled := true;
      else
        perform pg_sleep(least(v_nap_ms, v_left_ms) / 1000.0);
      end if;
      v_nap_ms := least(v_nap_ms * 2, 16);
    elsif r.handed and r.reply_to is null then
      -- Handed to its responder (see 08_handoff.sql), which rings its reply bell of the request's lane when
      -- it answers an SQL caller there. Find the current bell, look at the request once more (the next
      -- turn), then block on that bell: a reply that commits after that look releases it (see 03_bells.sql).
      if v_bell is null then
        v_bell := :SCHEMA.pgrr_current_reply_bell(r.responder_id, :SCHEMA.pgrr_reply_lane(r.seq), v_last_bell);
        if v_bell is null then
          -- No bell to tell: the responder's session is gone (reap it), or a session squats on its keys.
          perform :SCHEMA.pgrr_reap(array[v_id], false);
          perform pg_sleep(least(v_nap_ms, v_left_ms) / 1000.0);
          v_nap_ms := least(v_nap_ms * 2, 16);
        end if;
      else
        -- Woken by a ring, or at the timeout: that grows while the responder answers nobody from SQL (a
        -- long handler), from 50 ms to 1 s, and bounds what a ring skipped (see pgrr_ring_reply) costs.
        if :SCHEMA.pgrr_wait_lock(:SCHEMA.pgrr_ns_reply_bell(),
                                  :SCHEMA.pgrr_reply_bell_key(r.responder_id, :SCHEMA.pgrr_reply_lane(r.seq), v_bell),
                                  least(v_bell_wait_ms, v_left_ms)) then
          -- It rang: the current bell is likely the next one (see pgrr_current_reply_bell).
          v_bell_wait_ms := 50;
          v_last_bell := v_bell;
        else
          -- Timed out: it may still be current, so the next look is a full one. And the responder's session
          -- may be gone while someone squats on its keys (its responder lock, a bell): reap it then.
          v_bell_wait_ms := least(v_bell_wait_ms * 2, 1000);
          v_last_bell := null;
          perform :SCHEMA.pgrr_reap(array[v_id], false);
        end if;
        v_bell := null;
      end if;
    elsif r.reply_to is not null then
      -- In the hands of a responder for a TypeScript client's request (awaited from SQL by the same login): no
      -- lock to wait on, its reply goes by NOTIFY and rings nothing. Nap, and reap it if its responder is gone.
      perform :SCHEMA.pgrr_reap(array[v_id], false);
      perform pg_sleep(least(v_nap_ms, v_left_ms) / 1000.0);
      v_nap_ms := least(v_nap_ms * 2, 16);
    elsif :SCHEMA.pgrr_wait_lock(:SCHEMA.pgrr_ns_request(), :SCHEMA.pgrr_request_key(v_id),
                                 least(v_lock_wait_ms, v_left_ms)) then
      -- The lock is free: the reply has committed (the usual case: the next look finds it), or the
      -- responder's session is gone (the request is still claimed: reap it).
      if exists (select 1 from :SCHEMA.pgrr_request q where q.id = v_id and q.state = 'claimed') then
        perform :SCHEMA.pgrr_reap(array[v_id], false);
      end if;
    else
      -- Still held: the handler runs on (the usual case); or another request shares the key, and this one
      -- may have been answered meanwhile (see pgrr_request_key); or someone else took the key after the
      -- responder's session ended (reap it). So the wait is bounded, from 50 ms growing to 1 s, and each
      -- wait that times out is followed by a look at the request and a reap.
      v_lock_wait_ms := least(v_lock_wait_ms * 2, 1000);
      perform :SCHEMA.pgrr_reap(array[v_id], false);
    end if;
  end loop;
end
$$;

-- await_reply_json(id [, timeout]): await_reply for JSON: a JSON reply as jsonb, a text reply as a JSON
-- string. Same errors and waiting; a JSON reply that jsonb cannot hold (a string with the escape \u0000)
-- raises 22P05 and is not consumed (await_reply returns its text).
create function :SCHEMA.await_reply_json(id bigint, timeout interval default null) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_generic_plan
as $$
declare
  o record;
begin
  o := :SCHEMA.pgrr_await(await_reply_json.id, await_reply_json.timeout);
  return case when o.reply_json then o.reply::jsonb else to_jsonb(o.reply) end;
end
$$;

-- await_reply_full(id [, timeout]): await_reply with everything the responder sent: the reply text,
-- whether it is JSON, and the headers the handler set on its reply (a jsonb object, or null). Same errors
-- and waiting.
create function :SCHEMA.await_reply_full(id bigint, timeout interval default null)
returns table (reply text, reply_json boolean, headers jsonb)
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_generic_plan
as $$
declare
  o record;
begin
  o := :SCHEMA.pgrr_await(await_reply_full.id, await_reply_full.timeout);
  reply := o.reply;
  reply_json := o.reply_json;
  headers := o.reply_headers;
  return next;
end
$$;
