-- dbos_reader: read-only access for dashboards and analytics. It reads the os views (which
-- read the tables under them with their owner's rights) and nothing else: not the tables of
-- schemas dbos, kernel, sched, msg or fs, so no file's blocks. A role is shared by the whole
-- cluster; its grants are made per database. Give it to a login role with
-- `GRANT dbos_reader TO analyst`.
-- Databases of one server may migrate at the same time (the migration lock is per database):
-- whichever creates the role first wins, the others find it.
DO $$
BEGIN
    CREATE ROLE dbos_reader NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

GRANT USAGE ON SCHEMA os TO dbos_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA os TO dbos_reader;
-- The views that later migrations create, as the same role, are readable too.
ALTER DEFAULT PRIVILEGES IN SCHEMA os GRANT SELECT ON TABLES TO dbos_reader;
