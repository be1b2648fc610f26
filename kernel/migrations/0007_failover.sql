-- A database that fails over: a node's address as its server sees it, and leases that run from
-- the moment a promoted standby became writable, not from a heartbeat its old primary took.

-- The node's address as the server sees it (NULL over a Unix socket), set at registration and
-- by every heartbeat: with nodes on many hosts, which host a node runs on.
ALTER TABLE kernel.nodes ADD COLUMN addr inet;

-- The timelines this database has been written on, each with when a node first saw it. A
-- standby promoted by a failover starts a new timeline; until a node records it (a node's
-- registration and the sweep of expired leases do, `dbos_kernel::node::{register,
-- declare_expired_dead}`) no lease counts as expired.
CREATE TABLE kernel.timelines (
    timeline integer     PRIMARY KEY,
    seen_at  timestamptz NOT NULL DEFAULT now()
);

-- The timeline this server writes on; NULL on a standby.
CREATE FUNCTION kernel.timeline() RETURNS integer
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN pg_is_in_recovery() THEN NULL
           ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::integer
           END
$$;

-- Since when this server has been writable as far as leases go: the later of its start and
-- the time its timeline was first seen (now, when not yet seen). Security definer: the os
-- views call it for readers who may not read schema kernel.
CREATE FUNCTION kernel.writable_since() RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
COST 1000
AS $$
    SELECT greatest(pg_postmaster_start_time(),
                    CASE WHEN NOT pg_is_in_recovery() THEN
                        COALESCE((SELECT t.seen_at FROM kernel.timelines t
                                  WHERE t.timeline = kernel.timeline()), now())
                    END)
$$;

CREATE OR REPLACE FUNCTION kernel.lease_expired(heartbeat_at timestamptz, lease_ms bigint)
RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT heartbeat_at < now() - lease_ms * interval '1 millisecond'
       AND kernel.writable_since() < now() - lease_ms * interval '1 millisecond'
$$;

COMMENT ON FUNCTION kernel.lease_expired(timestamptz, bigint) IS
    'Whether a node''s lease expired: no heartbeat within lease_ms, counted from the latest of its last heartbeat, the server''s start and the start of the server''s timeline (a failover)';
