-- The lineage of files: every captured read, write, create, rename and removal of a file with
-- the workflow and step that did it and the workflow's inputs. A file streamed by inode is
-- shown under its current path.
CREATE VIEW os.file_lineage AS
SELECT coalesce(e.object, f.path) AS path,
       e.inode,
       e.kind,
       e.workflow_uuid AS workflow_id,
       w.name AS workflow_name,
       w.status AS workflow_status,
       i.inputs AS workflow_inputs,
       e.function_id,
       o.function_name AS step,
       e.bytes,
       e.node_id,
       e.app_version,
       to_timestamp(e.at_ms / 1000.0) AS at,
       e.id AS event_id
FROM prov.events e
LEFT JOIN LATERAL (SELECT path FROM os.files WHERE ino = e.inode LIMIT 1) f ON e.object IS NULL
LEFT JOIN dbos.workflow_status w ON w.workflow_uuid = e.workflow_uuid
LEFT JOIN dbos.workflow_input i ON i.workflow_uuid = e.workflow_uuid
LEFT JOIN dbos.operation_outputs o
       ON o.workflow_uuid = e.workflow_uuid AND o.function_id = e.function_id
WHERE e.kind LIKE 'file\_%';

COMMENT ON VIEW os.file_lineage IS
    'Which workflow steps read, wrote, created, renamed or removed each file, from what inputs';

-- The lineage of the file now at `p_path` (under any name it had), and of anything captured
-- under that path, oldest first.
CREATE FUNCTION os.lineage(p_path text) RETURNS SETOF os.file_lineage
LANGUAGE sql STABLE AS $$
    SELECT l.* FROM os.file_lineage l
    WHERE l.path = p_path
       OR l.inode = (SELECT ino FROM os.files WHERE path = p_path LIMIT 1)
    ORDER BY l.event_id
$$;

-- Files written by workflows in which a command failed (exit code other than 0, or killed).
CREATE VIEW os.files_of_failed_commands AS
SELECT DISTINCT
       coalesce(f.object, (SELECT path FROM os.files WHERE ino = f.inode LIMIT 1)) AS file,
       f.inode, f.workflow_uuid AS workflow_id, c.object AS command,
       (c.detail ->> 'exit_code')::int AS exit_code, c.node_id
FROM prov.events c
JOIN prov.events f
  ON f.workflow_uuid = c.workflow_uuid AND f.kind IN ('file_write', 'file_create')
WHERE c.kind = 'command' AND coalesce((c.detail ->> 'exit_code')::int, -1) <> 0;

-- Taint: the workflows that read a file under `p_under` (`'/secret'` is `/secret` and all below
-- it), and, transitively, those that received a message from a tainted workflow after it was
-- tainted, or read a file a tainted workflow wrote after it was tainted; each from the first
-- step it was tainted at, and how.
CREATE FUNCTION os.tainted(p_under text)
RETURNS TABLE (workflow_id text, since_step integer, via text)
LANGUAGE sql STABLE AS $$
    WITH RECURSIVE flows AS (
        SELECT s.workflow_uuid AS src, s.function_id AS src_step,
               r.workflow_uuid AS dst, r.function_id AS dst_step, 'a message' AS via
        FROM prov.events s
        JOIN prov.events r
          ON r.workflow_uuid = s.object AND r.kind = 'recv' AND r.at_ms >= s.at_ms
        WHERE s.kind = 'send'
        UNION ALL
        SELECT w.workflow_uuid, w.function_id, r.workflow_uuid, r.function_id,
               'file ' || coalesce(r.object, w.object)
        FROM prov.events w
        JOIN prov.events r
          ON r.kind = 'file_read' AND r.inode = w.inode AND r.at_ms >= w.at_ms
         AND r.workflow_uuid <> w.workflow_uuid
        WHERE w.kind IN ('file_write', 'file_create')
    ), t (workflow_id, since_step, via) AS (
        SELECT workflow_uuid, function_id, 'read ' || object
        FROM prov.events
        WHERE kind = 'file_read'
          AND (object = p_under OR object LIKE rtrim(p_under, '/') || '/%')
        UNION
        SELECT f.dst, f.dst_step, f.via || ' from ' || t.workflow_id
        FROM t JOIN flows f ON f.src = t.workflow_id AND f.src_step >= t.since_step
    )
    SELECT DISTINCT ON (workflow_id) workflow_id, since_step, via
    FROM t ORDER BY workflow_id, since_step
$$;

-- What tainted workflows (see `os.tainted`) did once tainted: the messages they sent, the topics
-- they published to, the files they wrote and the commands they ran — exfiltration forensics.
CREATE FUNCTION os.after_reading(p_under text) RETURNS SETOF os.provenance
LANGUAGE sql STABLE AS $$
    SELECT p.* FROM os.tainted(p_under) t
    JOIN os.provenance p ON p.workflow_id = t.workflow_id AND p.function_id >= t.since_step
    WHERE p.kind IN ('send', 'publish', 'file_write', 'file_create', 'command', 'set_event',
                     'write_stream')
    ORDER BY p.event_id
$$;
