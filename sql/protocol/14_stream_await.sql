-- 14_stream_await.sql: an SQL caller reads a streamed reply (14_stream.sql) one part at a time, inside one
-- statement per part, as 10_await.sql waits for a reply.
--
-- An SQL session can wait inside a statement only by sleeping or by waiting on a lock: await_part blocks on
-- the responder's reply bell of the request's lane (03_bells.sql), which pgrr_stream_send rings with each
-- part for an SQL caller (and a reply to a handed request rings too, 09_reply.sql). Every wait is bounded
-- and followed by a look at the stream and a reap of the request (04_liveness.sql).
-- Locks: the part consumed and the stream's row, until the caller's transaction ends (a responder skips a
-- locked stream and waits for the credit); shared waits on the bell, none held after return. NOTIFY: a
-- credit on the responder's control channel for the part consumed (sent at commit).

-- await_part(id [, timeout]): an SQL caller reads its stream (request_stream()) one part at a time: the next
-- part (is_final false), consumed (deleted, and a credit sent to the responder), or, once every part was
-- read, the final reply (is_final true), consumed as await_reply consumes it. Waits up to timeout (default:
-- the request's deadline) for what comes next. Same errors as await_reply (PR002 timeout, PR003 the handler
-- failed, PR004 the responder's session ended: after the parts it wrote, PR005 unknown id, PR006 awaited in
-- the transaction that made the request, PR009 cancelled, 0A000 not READ COMMITTED). A request that is not
-- a stream returns its reply as the final one. Call it in a transaction of its own (autocommit, or a
-- COMMIT after each call, see docs/streams.md): the part it consumed is credited to the responder at commit.
-- Waiting: on the responder's reply bell of the request's lane, which each part for an SQL caller rings
-- (and each reply to a handed request, 09_reply.sql); each wait bounded (50 ms, growing to 1 s while
-- nothing comes; 50 ms at most for a request that was queued, whose reply rings no bell), then a look at
-- the stream and a reap of the request.
create function :SCHEMA.await_part(id bigint, timeout interval default null)
returns table (part text, is_final boolean)
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
set enable_seqscan = off
set jit = off
set plan_cache_mode = force_generic_plan
as $$
declare
  v_id constant bigint := await_part.id;
  r record;
  v_part record;
  v_reply record;
  v_until timestamptz;
  v_left_ms int;
  v_nap_ms int := 1;
  v_bell int;
  v_wait_ms int := 50;
begin
  loop
    select q.state, q.deadline, q.origin_xact, q.channel_id, q.seq, q.handed, q.reply_to, q.responder_id, s.consumed,
           s.id is not null as streamed
      into r
      from :SCHEMA.pgrr_request q
      left join :SCHEMA.pgrr_stream s on s.id = q.id
     where q.id = v_id and q.caller = session_user;
    if not found then
      raise exception 'pgrr: unknown request %', v_id using errcode = 'PR005',
        hint = 'The id was never issued (to this login), its reply was already consumed, or it expired.';
    end if;
    if v_until is null then
      if current_setting('transaction_isolation') <> 'read committed' then
        raise exception 'pgrr: await_part needs the READ COMMITTED isolation level, not %',
          current_setting('transaction_isolation') using errcode = '0A000';
      end if;
      if r.origin_xact = pg_current_xact_id_if_assigned() then
        raise exception 'pgrr: request % was made in this same transaction and cannot be answered before it commits', v_id
          using errcode = 'PR006', hint = 'Commit after request_stream() and call await_part() in a later transaction.';
      end if;
      v_until := clock_timestamp() + greatest(least(timeout, r.deadline - clock_timestamp()), interval '0');
    end if;
    if r.streamed then
      -- The next part, if written: consumed here (the caller's own stream, so its row is waited for).
      delete from :SCHEMA.pgrr_stream_part p where p.request_id = v_id and p.n = r.consumed + 1
      returning p.part into v_part;
      if found then
        update :SCHEMA.pgrr_stream s set consumed = r.consumed + 1 where s.id = v_id;
        if r.state = 'claimed' then
          perform pg_notify(:SCHEMA.pgrr_notify_prefix() || '.w' || r.responder_id,
                            :SCHEMA.pgrr_credit_entry(v_id, r.consumed + 1, :SCHEMA.pgrr_ms_until(r.deadline)));
        end if;
        part := v_part.part;
        is_final := false;
        return next;
        return;
      end if;
    end if;
    if r.state in ('replied', 'failed', 'lost', 'cancelled') then
      -- Every part was read (a part is written before the final reply and found above): the final outcome,
      -- consumed by pgrr_await as await_reply consumes it (an error rolls this back and stays readable).
      delete from :SCHEMA.pgrr_stream s where s.id = v_id;
      v_reply := :SCHEMA.pgrr_await(v_id, interval '0');
      part := v_reply.reply;
      is_final := true;
      return next;
      return;
    end if;
    v_left_ms := ceil(extract(epoch from v_until - clock_timestamp()) * 1000);
    if v_left_ms <= 0 then
      raise exception 'pgrr: timed out waiting for a part of request %', v_id using errcode = 'PR002';
    end if;
    if r.state = 'claimed' and r.reply_to is null then
      v_bell := :SCHEMA.pgrr_current_reply_bell(r.responder_id, :SCHEMA.pgrr_reply_lane(r.seq));
      if v_bell is not null and :SCHEMA.pgrr_wait_lock(:SCHEMA.pgrr_ns_reply_bell(),
                                   :SCHEMA.pgrr_reply_bell_key(r.responder_id, :SCHEMA.pgrr_reply_lane(r.seq), v_bell),
                                   least(case when r.handed then v_wait_ms else 50 end, v_left_ms)) then
        v_wait_ms := 50;
      else
        -- Nothing came (or no bell to wait on: the responder's session may be gone): look, and reap.
        v_wait_ms := least(v_wait_ms * 2, 1000);
        perform :SCHEMA.pgrr_reap(array[v_id], false);
        if v_bell is null then
          perform pg_sleep(least(v_nap_ms, v_left_ms) / 1000.0);
          v_nap_ms := least(v_nap_ms * 2, 16);
        end if;
      end if;
    else
      -- Pending (waiting for a claim), or a TypeScript client's request awaited from SQL: nap, and reap.
      if r.state = 'claimed' then
        perform :SCHEMA.pgrr_reap(array[v_id], false);
      end if;
      perform pg_sleep(least(v_nap_ms, v_left_ms) / 1000.0);
      v_nap_ms := least(v_nap_ms * 2, 16);
    end if;
  end loop;
end
$$;
