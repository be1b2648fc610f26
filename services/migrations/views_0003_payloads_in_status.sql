-- A node writes a workflow's inputs into its status row (`workflow_status.inputs`), and DBOS 3.x
-- writes them into `workflow_input`; DBOS reads COALESCE(the table's, the status row's), and so
-- does this view now.
CREATE OR REPLACE VIEW os.file_lineage AS
SELECT coalesce(e.object, f.path) AS path,
       e.inode,
       e.kind,
       e.workflow_uuid AS workflow_id,
       w.name AS workflow_name,
       w.status AS workflow_status,
       COALESCE(i.inputs, w.inputs) AS workflow_inputs,
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
