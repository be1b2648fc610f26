-- Provenance (schema `prov`): what each workflow step touched, written in the statement (or
-- the transaction) that records the step, by the node that ran it. Schema `dbos` stays DBOS's.
CREATE SCHEMA IF NOT EXISTS prov;

CREATE TABLE prov.events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workflow_uuid text NOT NULL,
    -- The step (operation) that did it: `dbos.operation_outputs (workflow_uuid, function_id)`.
    function_id integer NOT NULL,
    kind text NOT NULL CHECK (kind IN (
        'file_read', 'file_write', 'file_create', 'file_remove', 'file_rename',
        'send', 'recv', 'set_event', 'write_stream', 'publish', 'consume', 'command')),
    -- A path, a destination workflow, an event or stream key, a topic, a command line.
    object text,
    inode bigint,
    bytes bigint,
    detail jsonb,
    node_id text,
    app_version text,
    at_ms bigint NOT NULL DEFAULT kernel.now_ms()
);
CREATE INDEX events_by_workflow ON prov.events (workflow_uuid, function_id);
CREATE INDEX events_by_object ON prov.events (object text_pattern_ops, kind);
CREATE INDEX events_by_inode ON prov.events (inode) WHERE inode IS NOT NULL;
CREATE INDEX events_by_time ON prov.events (at_ms);

-- What is captured and for how long: one row.
CREATE TABLE prov.config (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    -- Capture at all.
    enabled boolean NOT NULL DEFAULT true,
    -- Events older than this are deleted by the nodes' retention sweep.
    retention interval NOT NULL DEFAULT '30 days' CHECK (retention > interval '0'),
    -- Workflows of these names, or of these queues, are not captured.
    off_names text[] NOT NULL DEFAULT '{}',
    off_queues text[] NOT NULL DEFAULT '{}'
);
INSERT INTO prov.config DEFAULT VALUES;

-- Whether a workflow of this name and queue is captured.
CREATE FUNCTION prov.capture(p_name text, p_queue text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT c.enabled AND NOT (p_name = ANY (c.off_names))
           AND NOT (coalesce(p_queue = ANY (c.off_queues), false))
    FROM prov.config c
$$;

-- Every captured event with its workflow and step.
CREATE VIEW os.provenance AS
SELECT e.workflow_uuid AS workflow_id,
       w.name AS workflow_name,
       w.status AS workflow_status,
       w.queue_name,
       e.function_id,
       o.function_name AS step,
       e.kind,
       e.object,
       e.inode,
       e.bytes,
       e.detail,
       e.node_id,
       e.app_version,
       to_timestamp(e.at_ms / 1000.0) AS at,
       e.id AS event_id
FROM prov.events e
LEFT JOIN dbos.workflow_status w ON w.workflow_uuid = e.workflow_uuid
LEFT JOIN dbos.operation_outputs o
       ON o.workflow_uuid = e.workflow_uuid AND o.function_id = e.function_id;

COMMENT ON VIEW os.provenance IS
    'What every workflow step touched: files, messages, events, streams, topics, commands';

-- Everything one workflow touched, in order.
CREATE FUNCTION os.touched(p_workflow text) RETURNS SETOF os.provenance
LANGUAGE sql STABLE AS $$
    SELECT * FROM os.provenance WHERE workflow_id = p_workflow ORDER BY function_id, event_id
$$;

-- Workflows that read a file and then sent a message or published to a topic (in the same
-- step or a later one).
CREATE VIEW os.read_then_sent AS
SELECT r.workflow_uuid AS workflow_id,
       w.name AS workflow_name,
       r.object AS file,
       r.function_id AS read_in_step,
       s.kind AS sent_by,
       s.object AS sent_to,
       s.function_id AS sent_in_step,
       s.node_id
FROM prov.events r
JOIN prov.events s
  ON s.workflow_uuid = r.workflow_uuid AND s.function_id >= r.function_id
 AND s.kind IN ('send', 'publish')
LEFT JOIN dbos.workflow_status w ON w.workflow_uuid = r.workflow_uuid
WHERE r.kind = 'file_read';

-- The same, for files under a directory (`'/secret'` matches `/secret` and `/secret/...`).
CREATE FUNCTION os.read_then_sent(p_under text) RETURNS SETOF os.read_then_sent
LANGUAGE sql STABLE AS $$
    SELECT * FROM os.read_then_sent
    WHERE file = p_under OR file LIKE rtrim(p_under, '/') || '/%'
$$;
