//! Recovery without a coordinator: any live node takes over the PENDING work of nodes that are
//! gone, whichever program or version it belongs to.
//!
//! A node is gone when its lease expired (no heartbeat for its `lease_ms`), when a successor on
//! its host marked it dead, or when it stopped with work still PENDING (abandoned at the drain
//! deadline). Its PENDING workflows go back to ENQUEUED (keeping their queue, or on the
//! internal queue), where any node with their code and version claims them; their recorded
//! steps are replayed, so each completed step runs once. Taking over is one statement that
//! moves rows from PENDING to ENQUEUED, so nodes racing to recover the same work re-enqueue
//! each workflow exactly once; a node whose lease expired is marked `dead`, so if it was only
//! partitioned it stops itself at its next heartbeat, and the ownership token it held is
//! cleared, so it cannot write a checkpoint of the work it lost.

use sqlx::PgPool;

use crate::{Error, ENQUEUE_CHANNEL};

/// The queue recovered direct-start workflows land on (DBOS's internal queue).
pub const INTERNAL_QUEUE: &str = "_dbos_internal_queue";

/// What one recovery sweep did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Nodes newly declared dead (their lease expired).
    pub nodes_declared_dead: Vec<String>,
    /// Workflows re-enqueued.
    pub workflows: u64,
}

/// Declares lease-expired nodes dead and re-enqueues the PENDING workflows of every gone node.
/// Only one node sweeps at a time (a transaction-scoped advisory lock; the others skip).
///
/// 1 round trip, 1 commit (indexes: `nodes` primary key, `idx_workflow_status_pending`).
///
/// # Errors
/// Database errors.
pub async fn sweep(pool: &PgPool) -> Result<Recovered, Error> {
    let (nodes, workflows, _): (Vec<String>, i64, i64) = sqlx::query_as(
        "WITH lock AS (
             SELECT pg_try_advisory_xact_lock(hashtextextended('dbos.sched.recovery', 0)) AS got
         ), expired AS (
             UPDATE kernel.nodes SET state = 'dead', stopped_at = COALESCE(stopped_at, now())
             WHERE (SELECT got FROM lock) AND state IN ('running', 'draining')
               AND heartbeat_at < now() - lease_ms * interval '1 millisecond'
             RETURNING node_id
         ), gone AS (
             SELECT node_id FROM expired
             UNION
             SELECT node_id FROM kernel.nodes WHERE state IN ('dead', 'stopped')
         ), re AS (
             UPDATE dbos.workflow_status
             SET status = 'ENQUEUED', owner_xid = NULL, started_at_epoch_ms = NULL,
                 queue_name = COALESCE(queue_name, $1),
                 updated_at = (EXTRACT(epoch FROM now()) * 1000)::bigint
             WHERE (SELECT got FROM lock) AND status = 'PENDING'
               AND executor_id IN (SELECT node_id FROM gone)
             RETURNING queue_name
         ), wake AS (
             -- One notification per queue that got work back.
             SELECT pg_notify($2, q) FROM (SELECT DISTINCT queue_name AS q FROM re) d
         )
         SELECT COALESCE((SELECT array_agg(node_id) FROM expired), '{}'),
                (SELECT count(*) FROM re), (SELECT count(*) FROM wake)",
    )
    .bind(INTERNAL_QUEUE)
    .bind(ENQUEUE_CHANNEL)
    .fetch_one(pool)
    .await?;
    Ok(Recovered {
        nodes_declared_dead: nodes,
        workflows: workflows as u64,
    })
}
