-- The claim of sched_0008_pause_lock.sql as `sched.claim_round`, which also says when the node
-- should claim again shortly (a last row of NULLs), and spreads least-loaded queues:
--
-- * It skipped a queue with work because another node's claim round held that queue's lock.
--   Before, the node that skipped it waited for its next poll: when the round that held the
--   lock could not take the work (every slot busy, or no code for it), the work waited a poll
--   interval (1 s) though a node could run it.
-- * A least-loaded queue that this node may claim from (its labels, its code) has work: a
--   round takes from it only as many workflows as keep this node no more loaded than the least
--   loaded other eligible node (at least one), and looks again, as do the nodes that found
--   another less loaded. Before, the "no node less loaded" check ran once per round and the
--   round then took up to all of the node's free slots, so one node filled up while others
--   stayed idle.
--
-- The rest of the function is unchanged.

CREATE FUNCTION sched.claim_round(text[], text, bigint, text, jsonb, integer)
    RETURNS TABLE (o_workflow_uuid text, o_name text, o_owner_xid text,
                   o_recovery_attempts bigint, o_deadline_ms bigint, o_inputs text,
                   o_recorded json, o_traceparent text, o_created_at bigint)
    LANGUAGE plpgsql VOLATILE
    AS $claim$
DECLARE
    v_locked text[];
    v_contended boolean;
    v_spread boolean;
    v_now bigint;
BEGIN
    -- Before the claim's snapshot (sched_0008_pause_lock.sql).
    PERFORM pg_advisory_xact_lock_shared(sched.pause_lock_key());
    -- In this order: a queue without a shared limit is never locked, and one without work
    -- waiting is probed with one index lookup, not joined to every ENQUEUED row. A queue with
    -- work whose lock another claim round holds is skipped, and said so.
    SELECT COALESCE(array_agg(t.name) FILTER (WHERE t.got), '{}'),
           COALESCE(bool_or(NOT t.got), false)
    INTO v_locked, v_contended
    FROM (SELECT q.name,
                 CASE WHEN q.concurrency IS NULL AND q.rate_limit_max IS NULL
                           AND q.partition_concurrency IS NULL
                           AND q.partition_rate_limit_max IS NULL
                      THEN NULL
                      WHEN (SELECT true FROM dbos.workflow_status w
                            WHERE w.queue_name = q.name AND w.status = 'ENQUEUED' LIMIT 1)
                      THEN pg_try_advisory_xact_lock(
                               hashtextextended('dbos.queue.claim:' || q.name, 0))
                      ELSE NULL END AS got
          FROM dbos.queues q) t;
    SELECT EXISTS (SELECT 1 FROM sched.queue_rules r
                   WHERE r.policy = 'least_loaded' AND $5::jsonb @> r.require_labels
                     AND EXISTS (SELECT 1 FROM dbos.workflow_status w
                                 WHERE w.queue_name = r.queue_name AND w.status = 'ENQUEUED'
                                   AND w.name = ANY($1)))
    INTO v_spread;
    -- The claim's time is read before its snapshot: a start never precedes a completion the
    -- claim saw.
    v_now := (EXTRACT(epoch FROM clock_timestamp()) * 1000)::bigint;
    RETURN QUERY
WITH RECURSIVE qs(q) AS (
    -- Queues with work in flight: a loose scan of idx_workflow_status_in_flight_v2.
    (SELECT queue_name FROM dbos.workflow_status
     WHERE status IN ('ENQUEUED', 'PENDING') AND queue_name IS NOT NULL
     ORDER BY queue_name LIMIT 1)
    UNION ALL
    SELECT (SELECT queue_name FROM dbos.workflow_status
            WHERE status IN ('ENQUEUED', 'PENDING') AND queue_name > qs.q
            ORDER BY queue_name LIMIT 1)
    FROM qs WHERE qs.q IS NOT NULL
), latest AS (
    -- Latest of this application's versions: ours are unclaimed (no application name); a
    -- version another (named) DBOS application registered on the same database is not ours.
    SELECT version_name FROM dbos.application_versions WHERE application_name IS NULL
    ORDER BY version_timestamp DESC LIMIT 1
), now_ms AS (
    SELECT v_now AS t
), queues AS (
    SELECT qs.q AS name, c.concurrency, c.worker_concurrency, c.rate_limit_max,
           c.rate_limit_period_sec, c.partition_concurrency, c.partition_worker_concurrency,
           c.partition_rate_limit_max, c.partition_rate_limit_period_sec,
           (c.partition_concurrency IS NOT NULL OR c.partition_worker_concurrency IS NOT NULL
            OR c.partition_rate_limit_max IS NOT NULL) AS partitioned,
           (c.rate_limit_max IS NOT NULL OR c.partition_rate_limit_max IS NOT NULL) AS limited_rate,
           r.policy, r.require_labels
    FROM qs LEFT JOIN dbos.queues c ON c.name = qs.q
    LEFT JOIN sched.queue_rules r ON r.queue_name = qs.q
    WHERE qs.q IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM sched.paused_queues p WHERE p.queue_name = qs.q)
      -- Placement: this node has the labels the queue requires, and the queue's policy lets
      -- it claim now (least_loaded: no eligible live node is less loaded).
      AND $5::jsonb @> COALESCE(r.require_labels, '{}')
      AND (r.policy IS DISTINCT FROM 'least_loaded' OR NOT EXISTS (
          SELECT 1 FROM kernel.nodes n
          WHERE n.node_id <> $4 AND n.state = 'running'
            AND NOT kernel.lease_expired(n.heartbeat_at, n.lease_ms)
            AND n.labels @> r.require_labels
            AND (SELECT count(*) FROM dbos.workflow_status w
                 WHERE w.status = 'PENDING' AND w.executor_id = n.node_id)::float8 / n.slots
              < (SELECT count(*) FROM dbos.workflow_status w
                 WHERE w.status = 'PENDING' AND w.executor_id = $4)::float8 / $6))
      AND (qs.q = ANY(v_locked)
           OR c.name IS NULL
           OR (c.concurrency IS NULL AND c.rate_limit_max IS NULL
               AND c.partition_concurrency IS NULL AND c.partition_rate_limit_max IS NULL))
), budget AS (
    SELECT q.*, LEAST($3,
        CASE WHEN q.worker_concurrency IS NULL THEN $3 ELSE q.worker_concurrency -
            (SELECT count(*) FROM dbos.workflow_status w
             WHERE w.queue_name = q.name AND w.status = 'PENDING' AND w.executor_id = $4) END,
        CASE WHEN q.concurrency IS NULL THEN $3 ELSE q.concurrency -
            (SELECT count(*) FROM dbos.workflow_status w
             WHERE w.queue_name = q.name AND w.status = 'PENDING') END,
        CASE WHEN q.rate_limit_max IS NULL THEN $3 ELSE q.rate_limit_max -
            (SELECT count(*) FROM dbos.workflow_status w, now_ms
             WHERE w.queue_name = q.name AND w.rate_limited
               AND w.status NOT IN ('ENQUEUED', 'DELAYED')
               AND w.started_at_epoch_ms > now_ms.t - (q.rate_limit_period_sec * 1000)::bigint) END,
        -- Least loaded: no more than keeps this node at or below the least loaded other
        -- eligible live node's share of its slots, and at least one (the queue is here only
        -- when no such node is less loaded than this one).
        CASE WHEN q.policy IS DISTINCT FROM 'least_loaded' THEN $3 ELSE GREATEST(1, COALESCE(
            (SELECT floor(min((SELECT count(*) FROM dbos.workflow_status w
                               WHERE w.status = 'PENDING' AND w.executor_id = n.node_id)::float8
                              / n.slots) * $6)::bigint
                    - (SELECT count(*) FROM dbos.workflow_status w
                       WHERE w.status = 'PENDING' AND w.executor_id = $4) + 1
             FROM kernel.nodes n
             WHERE n.node_id <> $4 AND n.state = 'running'
               AND NOT kernel.lease_expired(n.heartbeat_at, n.lease_ms)
               AND n.labels @> q.require_labels),
            $3)) END
    ) AS n
    FROM queues q
), groups AS (
    SELECT b.name, NULL::text AS pk, b.n AS gn FROM budget b WHERE NOT b.partitioned AND b.n > 0
    UNION ALL
    SELECT b.name, p.pk, LEAST(b.n,
        CASE WHEN b.partition_concurrency IS NULL THEN b.n ELSE b.partition_concurrency -
            (SELECT count(*) FROM dbos.workflow_status w
             WHERE w.queue_name = b.name AND w.queue_partition_key = p.pk
               AND w.status = 'PENDING') END,
        CASE WHEN b.partition_worker_concurrency IS NULL THEN b.n
             ELSE b.partition_worker_concurrency -
            (SELECT count(*) FROM dbos.workflow_status w
             WHERE w.queue_name = b.name AND w.queue_partition_key = p.pk
               AND w.status = 'PENDING' AND w.executor_id = $4) END,
        CASE WHEN b.partition_rate_limit_max IS NULL THEN b.n ELSE b.partition_rate_limit_max -
            (SELECT count(*) FROM dbos.workflow_status w, now_ms
             WHERE w.queue_name = b.name AND w.queue_partition_key = p.pk AND w.rate_limited
               AND w.status NOT IN ('ENQUEUED', 'DELAYED')
               AND w.started_at_epoch_ms >
                   now_ms.t - (b.partition_rate_limit_period_sec * 1000)::bigint) END)
    FROM budget b
    CROSS JOIN LATERAL (
        -- Served by idx_workflow_status_partition_dequeue_v3.
        SELECT DISTINCT w.queue_partition_key AS pk FROM dbos.workflow_status w
        WHERE w.queue_name = b.name AND w.status = 'ENQUEUED'
          AND w.queue_partition_key IS NOT NULL
    ) p
    WHERE b.partitioned AND b.n > 0
), cand AS (
    SELECT g.name, x.workflow_uuid, x.priority, x.created_at, x.rn
    FROM groups g
    CROSS JOIN LATERAL (
        SELECT y.*, row_number() OVER (ORDER BY y.priority, y.created_at) AS rn
        FROM (
            -- Served by idx_workflow_status_in_flight_v2 / _partition_dequeue_v3.
            SELECT w.workflow_uuid, w.priority, w.created_at FROM dbos.workflow_status w
            WHERE w.queue_name = g.name AND w.status = 'ENQUEUED'
              AND (g.pk IS NULL OR w.queue_partition_key = g.pk)
              AND w.name = ANY($1)
              -- Labels the workflow itself requires (a task's `--label`).
              AND (w.attributes IS NULL OR NOT (w.attributes ? 'sched.labels')
                   OR $5::jsonb @> (w.attributes -> 'sched.labels'))
              -- Locality: leave a task that prefers another value of the queue's label to a
              -- live node that has it.
              AND NOT EXISTS (
                  SELECT 1 FROM sched.queue_rules r
                  WHERE r.queue_name = g.name AND r.policy = 'locality'
                    AND w.attributes -> 'sched.prefer' ? r.locality_label
                    AND ($5::jsonb ->> r.locality_label) IS DISTINCT FROM
                        (w.attributes -> 'sched.prefer' ->> r.locality_label)
                    AND EXISTS (
                        SELECT 1 FROM kernel.nodes n
                        WHERE n.state = 'running'
                          AND NOT kernel.lease_expired(n.heartbeat_at, n.lease_ms)
                          AND n.labels @> r.require_labels
                          AND n.labels ->> r.locality_label =
                              w.attributes -> 'sched.prefer' ->> r.locality_label))
              AND (w.application_version = $2
                   OR (w.application_version IS NULL
                       AND $2 IS NOT DISTINCT FROM (SELECT version_name FROM latest)))
            ORDER BY w.priority, w.created_at
            LIMIT GREATEST(g.gn, 0)
            FOR UPDATE OF w SKIP LOCKED
        ) y
    ) x
), ranked AS (
    SELECT c.*, row_number() OVER (PARTITION BY c.name ORDER BY c.rn, c.priority, c.created_at)
               AS qrank
    FROM cand c
), pick AS (
    SELECT r.workflow_uuid, b.limited_rate FROM ranked r JOIN budget b ON b.name = r.name
    WHERE r.qrank <= b.n
    ORDER BY r.rn, r.priority, r.created_at
    LIMIT $3
)
UPDATE dbos.workflow_status w
SET status = 'PENDING', owner_xid = gen_random_uuid()::text, executor_id = $4,
    application_version = $2,
    -- The statement's time, not the transaction's: the claim began before the completions
    -- its snapshot sees, and a start must not precede them.
    started_at_epoch_ms = v_now,
    rate_limited = pick.limited_rate,
    recovery_attempts = w.recovery_attempts + 1,
    updated_at = kernel.now_ms(),
    workflow_deadline_epoch_ms = CASE
        WHEN w.workflow_timeout_ms IS NOT NULL AND w.workflow_deadline_epoch_ms IS NULL
        THEN v_now + w.workflow_timeout_ms
        ELSE w.workflow_deadline_epoch_ms END
FROM pick WHERE w.workflow_uuid = pick.workflow_uuid
RETURNING w.workflow_uuid, w.name, w.owner_xid, w.recovery_attempts,
    w.workflow_deadline_epoch_ms,
    COALESCE((SELECT inputs FROM dbos.workflow_input i WHERE i.workflow_uuid = w.workflow_uuid),
             w.inputs),
    (SELECT json_agg(json_build_object(
         'function_id', o.function_id, 'function_name', o.function_name,
         'output', o.output, 'error', o.error, 'child_workflow_id', o.child_workflow_id))
     FROM dbos.operation_outputs o WHERE o.workflow_uuid = w.workflow_uuid),
    w.attributes ->> 'otel.traceparent', w.created_at;
    IF v_contended OR v_spread THEN
        RETURN QUERY SELECT NULL::text, NULL::text, NULL::text, NULL::bigint, NULL::bigint,
                            NULL::text, NULL::json, NULL::text, NULL::bigint;
    END IF;
END
$claim$;

-- The claim as nodes before sched.claim_round called it: the same round, without the mark.
CREATE OR REPLACE FUNCTION sched.claim(text[], text, bigint, text, jsonb, integer)
    RETURNS TABLE (o_workflow_uuid text, o_name text, o_owner_xid text,
                   o_recovery_attempts bigint, o_deadline_ms bigint, o_inputs text,
                   o_recorded json, o_traceparent text, o_created_at bigint)
    LANGUAGE sql VOLATILE
    AS $claim$
    SELECT * FROM sched.claim_round($1, $2, $3, $4, $5, $6) c WHERE c.o_workflow_uuid IS NOT NULL
$claim$;
