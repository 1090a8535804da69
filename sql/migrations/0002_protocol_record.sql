-- 0002_protocol_record.sql: what an install records about its protocol, a responder's lease, and the one
-- table difference between a database migrated by release 0.1.0 and a fresh one.
--
-- pgrr_protocol: the protocol (sql/protocol/) installed in this schema: its version, which clients compare
-- with their own at start, and a checksum of its files, so that the migrator re-installs it whenever either
-- differs from the library's.
-- pgrr_role: the roles the protocol was granted to (migrate({ roles }), `pgrr migrate --caller-role ...`):
-- the migrator grants every new protocol to them again. A database migrated by 0.1.0 kept that only in the
-- privileges of its functions, which the new protocol replaces: they are read here, before that happens.

create table :SCHEMA.pgrr_protocol (
  -- One row.
  singleton boolean primary key default true check (singleton),
  version int not null,
  checksum text not null,
  installed_at timestamptz not null default now()
);

create table :SCHEMA.pgrr_role (
  role regrole not null,
  kind text not null check (kind in ('caller', 'responder')),
  primary key (role, kind)
);

-- The roles 0.1.0 granted the protocol to: those that may run request() (callers) and pgrr_register()
-- (responders), other than the owner. Nothing on a fresh install.
insert into :SCHEMA.pgrr_role (role, kind)
select distinct a.grantee::regrole, f.kind
  from (values ('caller', pg_catalog.to_regprocedure(pg_catalog.quote_ident(:SCHEMA_LITERAL) || '.request(text, text, interval, jsonb)')),
               ('responder', pg_catalog.to_regprocedure(pg_catalog.quote_ident(:SCHEMA_LITERAL) || '.pgrr_register(text, text, int, int)'))) as f(kind, fn)
  join pg_catalog.pg_proc p on p.oid = f.fn
  cross join lateral pg_catalog.aclexplode(p.proacl) a
 where a.privilege_type = 'EXECUTE' and a.grantee <> p.proowner and a.grantee <> 0;

-- 0.1.0 checked channel names with a function of its protocol; the check now says the same without one, so
-- that the protocol can be replaced as a unit.
alter table :SCHEMA.pgrr_channel drop constraint pgrr_channel_name_check;
alter table :SCHEMA.pgrr_channel add constraint pgrr_channel_name_check
  check (octet_length(name) between 1 and 63 and name !~ '[\u0001-\u001f\u007f-\u009f]');

-- A responder's lease: renewed by the responder every half second while its event loop turns
-- (pgrr_renew); sends prefer responders whose lease has not run out (see 04_liveness.sql). Responders of
-- 0.1.0 never renew it.
alter table :SCHEMA.pgrr_responder add column lease_until timestamptz not null default '-infinity';

revoke all on table :SCHEMA.pgrr_protocol, :SCHEMA.pgrr_role from public;
