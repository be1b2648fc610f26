-- Workflows and their steps as people look at them: what runs where, for how long, and how it
-- ended. `dbos top`, the dashboard and `/metrics` read these.
CREATE VIEW os.workflows AS
SELECT s.workflow_uuid AS workflow_id,
       s.status,
       s.name,
       s.queue_name AS queue,
       s.executor_id AS node,
       s.application_version AS app_version,
       s.parent_workflow_id AS parent,
       s.recovery_attempts,
       to_timestamp(s.created_at / 1000.0) AS created_at,
       to_timestamp(s.started_at_epoch_ms / 1000.0) AS started_at,
       to_timestamp(s.completed_at / 1000.0) AS completed_at,
       (s.completed_at - s.started_at_epoch_ms) AS duration_ms,
       (s.started_at_epoch_ms - s.created_at) AS wait_ms,
       left(COALESCE(o.error, s.error)::json ->> 'message', 200) AS error
FROM dbos.workflow_status s
LEFT JOIN dbos.workflow_output o USING (workflow_uuid);

COMMENT ON VIEW os.workflows IS
    'Every workflow: status, function, queue, node, times, queue wait, and its error message';

CREATE VIEW os.steps AS
SELECT workflow_uuid AS workflow_id,
       function_id,
       function_name AS step,
       child_workflow_id AS child,
       error IS NOT NULL AS failed,
       left(error::json ->> 'message', 200) AS error,
       to_timestamp(started_at_epoch_ms / 1000.0) AS started_at,
       to_timestamp(completed_at_epoch_ms / 1000.0) AS completed_at,
       completed_at_epoch_ms - started_at_epoch_ms AS duration_ms
FROM dbos.operation_outputs;

COMMENT ON VIEW os.steps IS 'Every recorded step of every workflow, with its timing';
