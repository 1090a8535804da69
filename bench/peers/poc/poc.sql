-- The proof of concept's protocol, re-implemented from its description in /work/shared/DESIGN.md as the
-- baseline pgrr replaces. Its flaws are kept on purpose (they are what the benchmark measures); the one
-- deviation is marked below. __schema__ is replaced by the quoted schema name at install time.

-- One row per request, never logged: lost on a crash, and that is accepted.
create unlogged table __schema__.request_reply (
  id serial primary key,
  channel text not null,
  request text not null,
  response text,
  -- sending → processing → replied
  state text not null default 'sending'
);

-- request(channel, request) returns int
-- Refuses when no session looks like it is LISTENing on the channel, judged by scraping the last query text
-- of every session in pg_stat_activity (a substring match that ignores the database and races with the
-- insert, as in the PoC). Inserts the request and sends its id as the NOTIFY payload (delivered at commit).
create function __schema__.request(channel text, request text) returns int
language plpgsql as $$
declare
  new_id int;
begin
  if not exists (
    select 1 from pg_stat_activity
    where query ilike 'listen%' and query like '%' || request.channel || '%'
  ) then
    raise exception 'No listeners on channel %', request.channel;
  end if;
  insert into __schema__.request_reply (channel, request)
  values (request.channel, request.request)
  returning id into new_id;
  perform pg_notify(request.channel, new_id::text);
  return new_id;
end
$$;

-- await_reply(id) returns text
-- Polls every 100 ms, with no timeout: once the row is past 'sending' and the responder no longer holds the
-- advisory lock keyed by the bare id, deletes the row and returns the response.
create function __schema__.await_reply(request_id int) returns text
language plpgsql as $$
declare
  found_state text;
  found_response text;
begin
  loop
    select state, response into found_state, found_response
    from __schema__.request_reply where id = request_id;
    if found_state <> 'sending' and pg_try_advisory_lock(request_id) then
      delete from __schema__.request_reply where id = request_id;
      -- Deviation: we release the lock we just took. Keeping it (as a session lock on a pooled connection)
      -- would fill the shared lock table within a benchmark run, and "out of shared memory" is not a
      -- latency number.
      perform pg_advisory_unlock(request_id);
      return found_response;
    end if;
    perform pg_sleep(0.1);
  end loop;
end
$$;
