-- File modes hold for SQL clients too. The node role owns the fs tables and the superuser is
-- above row security; every other role granted SELECT on fs.blocks reads only the blocks of
-- files its file-system identity may read: read permission on the file and search permission
-- on every directory above one of its names, as `dbos_fs::Identity` decides for the fs API.
--
-- A role's identity is its row in fs.sql_identities; a role without one is `nobody` (uid and
-- gid 65534, no groups), to whom only the "others" bits apply.
CREATE TABLE fs.sql_identities (
    role_name name     PRIMARY KEY,
    uid       bigint   NOT NULL CHECK (uid BETWEEN 0 AND 4294967294),
    gid       bigint   NOT NULL CHECK (gid BETWEEN 0 AND 4294967294),
    groups    bigint[] NOT NULL DEFAULT '{}'
);

-- Whether every directory from `p_dir` up to the root grants search to the identity.
CREATE FUNCTION fs.may_search_path(p_dir bigint, p_uid bigint, p_gid bigint, p_groups bigint[])
    RETURNS boolean
    LANGUAGE sql STABLE
    AS $$
    WITH RECURSIVE up (ino, parent, ok) AS (
        SELECT i.ino, i.parent, fs.may(i.mode, i.uid, i.gid, i.kind, p_uid, p_gid, p_groups, 1)
        FROM fs.inodes i WHERE i.ino = p_dir
        UNION ALL
        SELECT i.ino, i.parent, fs.may(i.mode, i.uid, i.gid, i.kind, p_uid, p_gid, p_groups, 1)
        FROM up JOIN fs.inodes i ON i.ino = up.parent
        WHERE up.ino <> 1 AND up.ok
    )
    SELECT coalesce(bool_and(ok), false) FROM up
    $$;

-- Whether role `p_role` may read file `p_ino`. It runs with the owner's rights, as the row
-- policy below needs: the caller may not read fs.inodes or fs.sql_identities itself.
CREATE FUNCTION fs.sql_may_read(p_ino bigint, p_role name) RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
    WITH me AS (
        SELECT coalesce(s.uid, 65534) AS uid, coalesce(s.gid, 65534) AS gid,
               coalesce(s.groups, '{}') AS groups
        FROM (SELECT 1) one
        LEFT JOIN fs.sql_identities s ON s.role_name = p_role
    )
    SELECT EXISTS (
        SELECT FROM fs.inodes f, me
        WHERE f.ino = p_ino
          AND fs.may(f.mode, f.uid, f.gid, f.kind, me.uid, me.gid, me.groups, 4)
          AND EXISTS (SELECT FROM fs.dirents d
                      WHERE d.child = f.ino
                        AND fs.may_search_path(d.parent, me.uid, me.gid, me.groups)))
    $$;

ALTER TABLE fs.blocks ENABLE ROW LEVEL SECURITY;
-- Reading only: a role granted more than SELECT still changes no block (no policy allows it).
CREATE POLICY read_by_mode ON fs.blocks FOR SELECT
    USING (fs.sql_may_read(ino, current_user));
