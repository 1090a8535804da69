-- 12_admin.sql: the owner's settings of channels: limits, and which roles may serve them. Not granted to
-- anyone (see 13_roles.sql). Locks: row locks. NOTIFY: none.

-- pgrr_configure_channel(channel, max_payload_bytes, max_attempts): sets a channel's limits, creating the
-- channel if new (PR007 for an invalid name). A null argument leaves that setting as it is (a new channel
-- starts with no size limit of its own, i.e. pgrr_default_max_payload_bytes(), and 1 attempt).
-- max_payload_bytes (1 to 1073741823) bounds each request's payload (PR008) and each reply;
-- max_attempts (1 to 100) is the default of requests that do not set theirs. 22023 for values out of range.
-- Returns the settings in effect.
create function :SCHEMA.pgrr_configure_channel(
  p_channel text, p_max_payload_bytes int default null, p_max_attempts int default null
) returns table (channel_id int, max_payload_bytes int, max_attempts int)
language plpgsql volatile
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_generic_plan
as $$
begin
  perform :SCHEMA.pgrr_raise_send_status(
    case when :SCHEMA.pgrr_valid_channel(p_channel) then 'ok' else 'invalid_channel' end, p_channel);
  if p_max_payload_bytes not between 1 and 1073741823 then
    raise exception 'pgrr: max_payload_bytes must be between 1 and 1073741823, got %', p_max_payload_bytes
      using errcode = '22023';
  end if;
  if p_max_attempts not between 1 and 100 then
    raise exception 'pgrr: max_attempts must be between 1 and 100, got %', p_max_attempts using errcode = '22023';
  end if;
  return query
  with saved as (
    insert into :SCHEMA.pgrr_channel as c (name, max_payload_bytes, max_attempts)
      values (p_channel, p_max_payload_bytes, coalesce(p_max_attempts, 1))
      on conflict (name) do update
        set max_payload_bytes = coalesce(p_max_payload_bytes, c.max_payload_bytes),
            max_attempts = coalesce(p_max_attempts, c.max_attempts)
    returning c.id, c.max_payload_bytes, c.max_attempts
  )
  select s.id, coalesce(s.max_payload_bytes, :SCHEMA.pgrr_default_max_payload_bytes()), s.max_attempts from saved s;
end
$$;

-- pgrr_grant_channel(channel, role): members of role may serve channel (see pgrr_register). Creates the
-- channel if new. 42704 when the role does not exist. Idempotent.
create function :SCHEMA.pgrr_grant_channel(p_channel text, p_role name) returns void
language plpgsql volatile
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_generic_plan
as $$
declare
  v_role oid;
  v_channel_id int;
begin
  perform :SCHEMA.pgrr_raise_send_status(
    case when :SCHEMA.pgrr_valid_channel(p_channel) then 'ok' else 'invalid_channel' end, p_channel);
  select a.oid into v_role from pg_roles a where a.rolname = p_role;
  if v_role is null then
    raise exception 'pgrr: role % does not exist', quote_ident(p_role) using errcode = '42704';
  end if;
  insert into :SCHEMA.pgrr_channel as c (name) values (p_channel) on conflict (name) do nothing;
  select c.id into v_channel_id from :SCHEMA.pgrr_channel c where c.name = p_channel;
  insert into :SCHEMA.pgrr_channel_grant (channel_id, grantee) values (v_channel_id, v_role::regrole)
    on conflict do nothing;
end
$$;

-- pgrr_revoke_channel(channel, role): undoes pgrr_grant_channel. Responders already registered keep
-- serving until they register again. Idempotent.
create function :SCHEMA.pgrr_revoke_channel(p_channel text, p_role name) returns void
language plpgsql volatile
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_generic_plan
as $$
begin
  delete from :SCHEMA.pgrr_channel_grant g
   using :SCHEMA.pgrr_channel c, pg_roles a
   where g.channel_id = c.id and c.name = p_channel and a.rolname = p_role and g.grantee = a.oid::regrole;
end
$$;
