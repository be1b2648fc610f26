-- dbos_reader: read-only access for dashboards and analytics. It reads the os views (which
-- read the tables under them with their owner's rights) and nothing else: not the tables of
-- schemas dbos, kernel, sched, msg or fs, so no file's blocks. A role is shared by the whole
-- cluster; its grants are made per database. Give it to a login role with
-- `GRANT dbos_reader TO analyst`.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'dbos_reader') THEN
        CREATE ROLE dbos_reader NOLOGIN;
    END IF;
END
$$;

GRANT USAGE ON SCHEMA os TO dbos_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA os TO dbos_reader;
-- The views that later migrations create, as the same role, are readable too.
ALTER DEFAULT PRIVILEGES IN SCHEMA os GRANT SELECT ON TABLES TO dbos_reader;
