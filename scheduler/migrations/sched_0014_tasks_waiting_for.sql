-- os.tasks says why a task waits in two more cases: its queue is paused, or it is pinned to
-- an application version other than the latest (a fork to `-v` of a version no node runs).
-- Before, both showed an empty `waiting_for`, and `dbos status` did not list them as waiting.
-- The rest of the view is that of sched_0010_payloads_in_status.sql.
CREATE OR REPLACE VIEW os.tasks AS
SELECT s.workflow_uuid AS task_id,
       s.status,
       s.queue_name AS queue,
       s.executor_id AS node,
       COALESCE(i.inputs::json -> 'positionalArgs' -> 0 -> 'argv',
                i.inputs::json -> 'positionalArgs' -> 1 -> 'argv') AS argv,
       COALESCE((o.output::json ->> 'exit_code'),
                (o.error::json -> 'data' ->> 'exit_code'))::int AS exit_code,
       COALESCE((o.output::json ->> 'signal'), (o.error::json -> 'data' ->> 'signal'))::int AS signal,
       COALESCE((o.output::json ->> 'duration_ms'),
                (o.error::json -> 'data' ->> 'duration_ms'))::bigint AS duration_ms,
       o.error::json ->> 'message' AS error,
       s.priority,
       s.attributes -> 'sched.labels' AS labels,
       CASE WHEN s.status <> 'ENQUEUED' THEN NULL
            WHEN EXISTS (SELECT 1 FROM sched.paused_queues p WHERE p.queue_name = s.queue_name)
            THEN 'its queue is paused (dbos queue resume)'
            WHEN NOT EXISTS (
                SELECT 1 FROM kernel.nodes n
                WHERE n.state = 'running'
                  AND n.heartbeat_at > now() - n.lease_ms * interval '1 millisecond'
                  AND n.labels @> COALESCE(s.attributes -> 'sched.labels', '{}')
                  AND n.labels @> COALESCE((SELECT r.require_labels FROM sched.queue_rules r
                                            WHERE r.queue_name = s.queue_name), '{}'))
            THEN 'no live node has the labels this task or its queue requires'
            WHEN s.application_version IS NOT NULL AND s.application_version IS DISTINCT FROM
                 (SELECT v.version_name FROM dbos.application_versions v
                  WHERE v.application_name IS NULL
                  ORDER BY v.version_timestamp DESC LIMIT 1)
            THEN 'it is pinned to application version ' || s.application_version
                 || ', not the latest'
       END AS waiting_for,
       to_timestamp(s.created_at / 1000.0) AS submitted_at,
       to_timestamp(s.started_at_epoch_ms / 1000.0) AS started_at,
       to_timestamp(s.completed_at / 1000.0) AS completed_at
FROM dbos.workflow_status s
LEFT JOIN dbos.workflow_input wi USING (workflow_uuid)
LEFT JOIN dbos.workflow_output wo USING (workflow_uuid)
CROSS JOIN LATERAL (SELECT COALESCE(wi.inputs, s.inputs) AS inputs) i
CROSS JOIN LATERAL (SELECT COALESCE(wo.output, s.output) AS output,
                           COALESCE(wo.error, s.error) AS error) o
WHERE s.name IN ('dbos.command', 'dbos.command.scheduled');
