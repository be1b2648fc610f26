//! Claiming enqueued workflows: one batch per round, within every queue's limits.
//!
//! A round is one transaction of two statements:
//! 1. take a transaction-scoped advisory lock on each queue with a limit shared by all nodes
//!    (global or partition concurrency, rate limits) that has work, skipping those another
//!    node is claiming from right now;
//! 2. claim: for every queue with work (found by a loose index scan) that is not paused and
//!    either has no shared limit or is locked by this round, compute its budget (worker,
//!    global and rate limits against the rows as they are now), split partitioned queues into
//!    their partitions (each with its own budget), take the head of each group in priority
//!    order with `FOR UPDATE SKIP LOCKED`, and claim up to the node's free slots, taking the
//!    first of every group before the second of any, so a hot partition or queue cannot
//!    starve the others.
//!
//! Statement 2 starts after statement 1 holds its locks, so its snapshot includes every claim
//! committed by the previous holder: shared limits hold across any number of nodes. Queues
//! without shared limits are claimed concurrently by all nodes (`SKIP LOCKED`).
//!
//! Cost: 4 round trips (begin, lock, claim, commit) and 1 commit per batch.

use sqlx::{PgPool, Row};

use crate::error::Result;
use crate::operations::Recorded;

/// What a node may claim.
#[derive(Clone, Debug)]
pub struct ClaimRequest<'a> {
    /// Workflow names the node has code for.
    pub names: &'a [String],
    /// The node's application version.
    pub app_version: &'a str,
    /// The node's ID (the claimed workflows' `executor_id`).
    pub executor_id: &'a str,
    /// Most workflows to claim (the node's free slots).
    pub max: i64,
    /// The node's placement labels (a JSON object).
    pub labels: &'a serde_json::Value,
    /// The node's slots (for the least-loaded policy).
    pub slots: i32,
}

/// A claimed workflow, now PENDING and owned by the claimer.
#[derive(Clone, Debug)]
pub struct Claimed {
    /// Workflow ID.
    pub workflow_id: String,
    /// Workflow function name.
    pub name: String,
    /// The ownership token of this execution.
    pub owner_xid: String,
    /// Claims so far, this one included.
    pub recovery_attempts: i64,
    /// Deadline, epoch ms.
    pub deadline_ms: Option<i64>,
    /// Inputs (portable JSON text).
    pub inputs: Option<String>,
    /// Operations recorded by earlier executions.
    pub recorded: Vec<Recorded>,
    /// The trace it was enqueued in (W3C `traceparent`, from `attributes`).
    pub traceparent: Option<String>,
    /// When it was enqueued, epoch ms.
    pub created_at_ms: i64,
}

const LOCK: &str = "
SELECT COALESCE(array_agg(q.name), '{}') FROM dbos.queues q
WHERE (q.concurrency IS NOT NULL OR q.rate_limit_max IS NOT NULL
       OR q.partition_concurrency IS NOT NULL OR q.partition_rate_limit_max IS NOT NULL)
  AND EXISTS (SELECT 1 FROM dbos.workflow_status w
              WHERE w.queue_name = q.name AND w.status = 'ENQUEUED')
  AND pg_try_advisory_xact_lock(hashtextextended('dbos.queue.claim:' || q.name, 0))";

/// `$1` names, `$2` app version, `$3` max, `$4` executor, `$5` locked queues, `$6` the
/// node's labels, `$7` its slots.
const CLAIM: &str = "
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
    SELECT kernel.statement_ms() AS t
), queues AS (
    SELECT qs.q AS name, c.concurrency, c.worker_concurrency, c.rate_limit_max,
           c.rate_limit_period_sec, c.partition_concurrency, c.partition_worker_concurrency,
           c.partition_rate_limit_max, c.partition_rate_limit_period_sec,
           (c.partition_concurrency IS NOT NULL OR c.partition_worker_concurrency IS NOT NULL
            OR c.partition_rate_limit_max IS NOT NULL) AS partitioned,
           (c.rate_limit_max IS NOT NULL OR c.partition_rate_limit_max IS NOT NULL) AS limited_rate
    FROM qs LEFT JOIN dbos.queues c ON c.name = qs.q
    LEFT JOIN sched.queue_rules r ON r.queue_name = qs.q
    WHERE qs.q IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM sched.paused_queues p WHERE p.queue_name = qs.q)
      -- Placement: this node has the labels the queue requires, and the queue's policy lets
      -- it claim now (least_loaded: no eligible live node is less loaded).
      AND $6::jsonb @> COALESCE(r.require_labels, '{}')
      AND (r.policy IS DISTINCT FROM 'least_loaded' OR NOT EXISTS (
          SELECT 1 FROM kernel.nodes n
          WHERE n.node_id <> $4 AND n.state = 'running'
            AND NOT kernel.lease_expired(n.heartbeat_at, n.lease_ms)
            AND n.labels @> r.require_labels
            AND (SELECT count(*) FROM dbos.workflow_status w
                 WHERE w.status = 'PENDING' AND w.executor_id = n.node_id)::float8 / n.slots
              < (SELECT count(*) FROM dbos.workflow_status w
                 WHERE w.status = 'PENDING' AND w.executor_id = $4)::float8 / $7))
      AND (qs.q = ANY($5)
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
               AND w.started_at_epoch_ms > now_ms.t - (q.rate_limit_period_sec * 1000)::bigint) END
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
                   OR $6::jsonb @> (w.attributes -> 'sched.labels'))
              -- Locality: leave a task that prefers another value of the queue's label to a
              -- live node that has it.
              AND NOT EXISTS (
                  SELECT 1 FROM sched.queue_rules r
                  WHERE r.queue_name = g.name AND r.policy = 'locality'
                    AND w.attributes -> 'sched.prefer' ? r.locality_label
                    AND ($6::jsonb ->> r.locality_label) IS DISTINCT FROM
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
    started_at_epoch_ms = kernel.statement_ms(),
    rate_limited = pick.limited_rate,
    recovery_attempts = w.recovery_attempts + 1,
    updated_at = kernel.now_ms(),
    workflow_deadline_epoch_ms = CASE
        WHEN w.workflow_timeout_ms IS NOT NULL AND w.workflow_deadline_epoch_ms IS NULL
        THEN kernel.statement_ms() + w.workflow_timeout_ms
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
    w.attributes ->> 'otel.traceparent', w.created_at";

/// Claims up to `req.max` enqueued workflows within their queues' limits.
///
/// # Errors
/// Database errors; a claimed row the statement returned malformed (which rolls the claim
/// back).
pub async fn claim(pool: &PgPool, req: &ClaimRequest<'_>) -> Result<Vec<Claimed>> {
    let mut tx = pool.begin().await?;
    let locked: Vec<String> = sqlx::query_scalar(LOCK).fetch_one(&mut *tx).await?;
    let rows = sqlx::query(CLAIM)
        .bind(req.names)
        .bind(req.app_version)
        .bind(req.max)
        .bind(req.executor_id)
        .bind(&locked)
        .bind(req.labels)
        .bind(req.slots)
        .fetch_all(&mut *tx)
        .await?;
    let claimed = rows
        .iter()
        .map(|r| {
            let recorded: Option<sqlx::types::Json<Vec<Recorded>>> = r.try_get(6)?;
            Ok(Claimed {
                workflow_id: r.try_get(0)?,
                name: r.try_get::<Option<String>, _>(1)?.unwrap_or_default(),
                owner_xid: r.try_get(2)?,
                recovery_attempts: r.try_get::<Option<i64>, _>(3)?.unwrap_or(0),
                deadline_ms: r.try_get(4)?,
                inputs: r.try_get(5)?,
                recorded: recorded.map(|j| j.0).unwrap_or_default(),
                traceparent: r.try_get(7)?,
                created_at_ms: r.try_get(8)?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    tx.commit().await?;
    Ok(claimed)
}
