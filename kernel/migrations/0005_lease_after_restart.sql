-- A node's lease runs from its last heartbeat or from the server's start, whichever is later:
-- while Postgres restarts no node can heartbeat, and none may be declared dead for it.
CREATE FUNCTION kernel.lease_expired(heartbeat_at timestamptz, lease_ms bigint)
RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT heartbeat_at < now() - lease_ms * interval '1 millisecond'
       AND pg_postmaster_start_time() < now() - lease_ms * interval '1 millisecond'
$$;

COMMENT ON FUNCTION kernel.lease_expired(timestamptz, bigint) IS
    'Whether a node''s lease expired: no heartbeat within lease_ms, counted from the later of its last heartbeat and the server''s start';
