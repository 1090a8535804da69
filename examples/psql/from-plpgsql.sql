-- Calling a pg-request-reply service from plpgsql: a procedure that waits for the reply, and a trigger
-- that sends a request with the row it writes.
--
--   psql "$DATABASE_URL" -X -q -f from-plpgsql.sql                # the protocol in schema public
--   PGOPTIONS='-c search_path=myschema' psql "$DATABASE_URL" -X -q -f from-plpgsql.sql
--
-- It creates a procedure call_service, a table document and its trigger in the first schema of the
-- search_path, then uses them with the service uppercase (start a responder first, e.g. the TypeScript one).
--
-- The rule that shapes both: a request becomes visible to responders only when the transaction that made it
-- commits (it is handed to its responder at that commit), and await_reply() must run in a later transaction
-- (in the same one it fails at once, PR006).
-- So a plain function cannot ask and wait (it runs inside one transaction), and a trigger can only send: it
-- runs inside the transaction that writes the row.
\set ON_ERROR_STOP on
set client_min_messages = warning;  -- no notices from the "if exists" and "if not exists" below
\pset tuples_only on
\pset format unaligned

-- 1. A procedure: commits between the two calls. CALL it outside a transaction block (psql's autocommit,
--    not inside BEGIN), and without a SET clause on the procedure: either one forbids the COMMIT.
create or replace procedure call_service(channel text, payload text, inout reply text default null)
language plpgsql
as $$
declare
  request_id bigint;
begin
  request_id := request(channel, payload);  -- PR001 at once when nobody serves the channel
  commit;                                   -- at this commit the request is handed to a responder
  reply := await_reply(request_id);         -- a later transaction: waits for the reply (or its error)
end
$$;

call call_service('uppercase', 'from a procedure');

-- 2. A trigger: the request goes with the row (rolled back with it: no row, no request) and its id is kept
--    in the row. Whoever needs the answer awaits it in a later transaction. Note that request() fails with
--    PR001 when nobody serves the channel, which fails the insert: catch it in the trigger
--    (exception when sqlstate 'PR001') if the row must be written all the same.
create table if not exists document (
  id bigint generated always as identity primary key,
  body text not null,
  summary_request bigint,
  summary text
);

create or replace function document_request_summary() returns trigger
language plpgsql
as $$
begin
  new.summary_request := request('uppercase', new.body);
  return new;
end
$$;

drop trigger if exists document_request_summary on document;
create trigger document_request_summary before insert on document
  for each row execute function document_request_summary();

insert into document (body) values ('from a trigger') returning id as document_id, summary_request \gset
-- The insert has committed (autocommit): a later transaction waits for the reply and stores it.
select await_reply(:summary_request) as summary \gset
update document set summary = :'summary' where id = :document_id;
select body, summary from document where id = :document_id;
