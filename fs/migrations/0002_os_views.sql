-- Views of the file system in schema `os`: one SQL statement answers each question.
CREATE SCHEMA IF NOT EXISTS os;

-- Every name in the tree with its full path; a file with several hard links appears once per
-- name. `ancestors` lists the directories above it, the root first.
CREATE VIEW os.files AS
WITH RECURSIVE tree (ino, path, depth, ancestors) AS (
    SELECT 1::bigint, '/'::text COLLATE "C", 0, ARRAY[]::bigint[]
    UNION ALL
    SELECT d.child,
           CASE t.path WHEN '/' THEN '/' ELSE t.path || '/' END || d.name,
           t.depth + 1,
           t.ancestors || t.ino
    FROM tree t
    JOIN fs.dirents d ON d.parent = t.ino
)
SELECT t.path,
       i.ino,
       i.kind,
       i.size,
       i.uid,
       coalesce(u.name, i.uid::text) AS owner,
       i.gid,
       i.mode,
       i.nlink,
       i.target,
       i.atime,
       i.mtime,
       i.ctime,
       t.depth,
       t.ancestors
FROM tree t
JOIN fs.inodes i ON i.ino = t.ino
LEFT JOIN fs.users u ON u.uid = i.uid;

COMMENT ON VIEW os.files IS
    'Every file, directory and symbolic link with its full path, size, owner and times';

-- Disk usage per directory: bytes and files in the whole subtree below it.
CREATE VIEW os.du AS
WITH f AS (SELECT path, ino, kind, size, ancestors FROM os.files),
     up AS (SELECT unnest(ancestors) AS dir, ino, kind, size FROM f)
SELECT d.path,
       d.ino,
       d.ancestors,
       coalesce(sum(up.size) FILTER (WHERE up.kind = 'file'), 0)::bigint AS bytes,
       count(up.ino) FILTER (WHERE up.kind = 'file') AS files,
       count(up.ino) FILTER (WHERE up.kind = 'dir') AS dirs
FROM f d
LEFT JOIN up ON up.dir = d.ino
WHERE d.kind = 'dir'
GROUP BY d.path, d.ino, d.ancestors;

COMMENT ON VIEW os.du IS 'Bytes and files below each directory, like du -s';

-- The k largest files.
CREATE FUNCTION os.largest_files(k integer)
    RETURNS TABLE (path text, size bigint, owner text, mtime timestamptz)
    LANGUAGE sql STABLE
    AS $$ SELECT path, size, owner, mtime FROM os.files WHERE kind = 'file'
          ORDER BY size DESC, path LIMIT k $$;

-- Usage per owner, straight from the inodes (no paths needed): served by inodes_uid_size.
CREATE VIEW os.fs_usage AS
SELECT i.uid,
       coalesce(u.name, i.uid::text) AS owner,
       count(*) AS files,
       coalesce(sum(i.size), 0)::bigint AS bytes,
       max(i.size) AS largest
FROM fs.inodes i
LEFT JOIN fs.users u ON u.uid = i.uid
WHERE i.kind = 'file'
GROUP BY i.uid, u.name;

COMMENT ON VIEW os.fs_usage IS 'Files and bytes per owner';
