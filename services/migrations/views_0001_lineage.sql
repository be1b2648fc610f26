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
       to_timestamp(e.at_ms / 1000.0) AS at
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
    ORDER BY l.at
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
