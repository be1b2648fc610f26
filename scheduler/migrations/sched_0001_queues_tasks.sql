-- The scheduler's extension schema, the queue every system has, and views of queues and tasks.
CREATE SCHEMA IF NOT EXISTS sched;

-- Queues paused by an operator: nothing is claimed from them until resumed.
CREATE TABLE sched.paused_queues (
    queue_name text PRIMARY KEY,
    paused_at  timestamptz NOT NULL DEFAULT now()
);

-- Placement: the labels a node must have to claim from a queue, and the queue's policy, each
-- policy one clause of the claim: fifo (any eligible node claims), least_loaded (a node
-- claims only while no eligible live node is less loaded), or locality (a task that prefers a
-- value of `locality_label` goes to a live node with that value when there is one). A row
-- update changes it at once.
CREATE TABLE sched.queue_rules (
    queue_name     text PRIMARY KEY CHECK (length(queue_name) BETWEEN 1 AND 255),
    require_labels jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(require_labels) = 'object'),
    policy         text NOT NULL DEFAULT 'fifo'
                   CHECK (policy IN ('fifo', 'least_loaded', 'locality')),
    locality_label text CHECK ((policy = 'locality') = (locality_label IS NOT NULL)),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

INSERT INTO dbos.queues (name, priority_enabled)
VALUES ('default', TRUE)
ON CONFLICT (name) DO NOTHING;

CREATE VIEW os.queues AS
SELECT q.name AS queue,
       (p.queue_name IS NOT NULL) AS paused,
       q.concurrency, q.worker_concurrency,
       q.rate_limit_max, q.rate_limit_period_sec,
       q.partition_concurrency,
       (SELECT count(*) FROM dbos.workflow_status w
        WHERE w.queue_name = q.name AND w.status = 'ENQUEUED') AS depth,
       (SELECT count(*) FROM dbos.workflow_status w
        WHERE w.queue_name = q.name AND w.status = 'PENDING') AS running,
       (SELECT count(*) FROM dbos.workflow_status w
        WHERE w.queue_name = q.name AND w.status = 'DELAYED') AS delayed,
       (SELECT count(*) FROM dbos.workflow_status w
        WHERE w.queue_name = q.name
          AND w.started_at_epoch_ms > (EXTRACT(epoch FROM now()) * 1000)::bigint - 60000)
           AS started_last_minute,
       to_timestamp(q.created_at / 1000.0) AS created_at
FROM dbos.queues q
LEFT JOIN sched.paused_queues p ON p.queue_name = q.name;

-- Command tasks (workflows of `dbos.command`, and `dbos.command.scheduled` run by cron), with
-- their command and how they ended.
CREATE VIEW os.tasks AS
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
       CASE WHEN s.status = 'ENQUEUED' AND NOT EXISTS (
                SELECT 1 FROM kernel.nodes n
                WHERE n.state = 'running'
                  AND n.heartbeat_at > now() - n.lease_ms * interval '1 millisecond'
                  AND n.labels @> COALESCE(s.attributes -> 'sched.labels', '{}')
                  AND n.labels @> COALESCE((SELECT r.require_labels FROM sched.queue_rules r
                                            WHERE r.queue_name = s.queue_name), '{}'))
            THEN 'no live node has the labels this task or its queue requires'
       END AS waiting_for,
       to_timestamp(s.created_at / 1000.0) AS submitted_at,
       to_timestamp(s.started_at_epoch_ms / 1000.0) AS started_at,
       to_timestamp(s.completed_at / 1000.0) AS completed_at
FROM dbos.workflow_status s
LEFT JOIN dbos.workflow_input i USING (workflow_uuid)
LEFT JOIN dbos.workflow_output o USING (workflow_uuid)
WHERE s.name IN ('dbos.command', 'dbos.command.scheduled');

-- Nodes with their load: workflows they are running now, against their slots.
CREATE OR REPLACE VIEW os.nodes AS
SELECT n.node_id,
       n.hostname,
       n.pid,
       n.version,
       n.state,
       n.state IN ('running', 'draining')
           AND n.heartbeat_at > now() - n.lease_ms * interval '1 millisecond' AS alive,
       n.slots,
       n.labels,
       n.started_at,
       n.heartbeat_at,
       n.stopped_at,
       now() - n.heartbeat_at AS silent_for,
       n.lease_ms,
       n.data_dir,
       (SELECT count(*) FROM dbos.workflow_status w
        WHERE w.status = 'PENDING' AND w.executor_id = n.node_id) AS running
FROM kernel.nodes n;
