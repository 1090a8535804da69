-- Call a pg-request-reply service from psql: request() sends, await_reply() waits for the reply.
--
--   psql "$DATABASE_URL" -X -q -v channel=uppercase -v payload=hello [-v schema=public] [-v timeout='5 seconds'] -f caller.sql
--
-- Prints the reply alone. psql runs each statement in its own transaction (autocommit), which is what
-- the protocol needs: the request must commit before await_reply() can be answered (in the same
-- transaction, e.g. with psql -1, await_reply fails at once with SQLSTATE PR006). On an error (PR001 no
-- responders, PR002 timeout, PR003 the handler failed, ...) psql prints it and exits with status 3.
\set ON_ERROR_STOP on
\if :{?schema}
\else
  \set schema public
\endif
\if :{?timeout}
\else
  \set timeout '30 seconds'
\endif

select :"schema".request(:'channel', :'payload', :'timeout') as request_id \gset

\pset tuples_only on
\pset format unaligned
select :"schema".await_reply(:request_id);
