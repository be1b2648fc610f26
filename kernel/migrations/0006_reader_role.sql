-- dbos_reader: read-only access for dashboards and analytics. It reads the os views (which
-- read the tables under them with their owner's rights) and nothing else: not the tables of
-- schemas dbos, kernel, sched, msg or fs, so no file's blocks. A role is shared by the whole
-- cluster; its grants are made per database. Give it to a login role with
-- `GRANT dbos_reader TO analyst`.
--
-- An embedded cluster's superuser creates the role before nodes migrate (`dbos_kernel::roles`).
-- A node whose role may create roles creates it when missing; one that may not, on a server
-- without the role, leaves it out (create the role and boot again: this migration's grants are
-- then made by hand, as the README says).
-- Databases of one server may migrate at the same time (the migration lock is per database):
-- whichever creates the role first wins, the others find it.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'dbos_reader') THEN
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = current_user
                       AND (rolsuper OR rolcreaterole)) THEN
            RAISE NOTICE 'role dbos_reader does not exist and % may not create it', current_user;
            RETURN;
        END IF;
        BEGIN
            CREATE ROLE dbos_reader NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
    GRANT USAGE ON SCHEMA os TO dbos_reader;
    GRANT SELECT ON ALL TABLES IN SCHEMA os TO dbos_reader;
    -- The views that later migrations create, as the same role, are readable too.
    ALTER DEFAULT PRIVILEGES IN SCHEMA os GRANT SELECT ON TABLES TO dbos_reader;
END
$$;
