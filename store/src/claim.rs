//! Claiming enqueued workflows: one batch per round, within every queue's limits.
//!
//! A round is one statement, a call of function `sched.claim_round` that runs
//! two statements, each with its own snapshot:
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
//! without shared limits are claimed concurrently by all nodes (`SKIP LOCKED`). Statement 1
//! first takes the pause lock shared (held to the commit), so both statements read the paused
//! queues, the queues' limits and their placement rules after it: a pause or a change of a
//! queue's settings, which takes the lock exclusive, waits for a round under way, and a round
//! after it sees it.
//!
//! A round says when its node should claim again soon rather than at its next poll
//! ([`Round::again`]): it skipped a queue with work because another round held its lock (that
//! other round may not have taken the work: its node's slots were full, or it has no code for
//! it), or it took from a least-loaded queue, of which a round takes only this node's fair
//! share (at least one) so that the work spreads over the eligible nodes.
//!
//! Cost: 3 round trips (begin, the round, commit) and 1 commit per batch.

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

/// What one claim round took.
#[derive(Clone, Debug, Default)]
pub struct Round {
    /// The workflows claimed.
    pub claimed: Vec<Claimed>,
    /// Whether the node should claim again soon: the round skipped a queue with work waiting
    /// because another claim round held that queue's lock, or took from a least-loaded queue.
    pub again: bool,
}

/// `$1` names, `$2` app version, `$3` max, `$4` executor, `$5` the node's labels, `$6` its
/// slots. The lock and the claim are the two statements of function `sched.claim_round`
/// (`scheduler/migrations/sched_0013_claim_again.sql`); a last row of NULLs says to claim
/// again soon.
const CLAIM: &str = "SELECT * FROM sched.claim_round($1, $2, $3, $4, $5, $6)";

/// Claims up to `req.max` enqueued workflows within their queues' limits.
///
/// The claim runs in a transaction this function commits only once it holds every claimed
/// row: a claim whose answer is lost (the server restarted, the connection was cut) is then
/// either rolled back or known. When the commit itself fails, it may still have taken place,
/// so every row is given back, fenced on its owner, before the error returns: no row stays
/// PENDING under an owner that nothing runs while its node lives.
///
/// 3 round trips (begin, claim, commit), 1 commit.
///
/// # Errors
/// Database errors; a claimed row the statement returned malformed (the claim is then rolled
/// back).
pub async fn claim(pool: &PgPool, req: &ClaimRequest<'_>) -> Result<Round> {
    let mut tx = pool.begin().await?;
    let rows = sqlx::query(CLAIM)
        .bind(req.names)
        .bind(req.app_version)
        .bind(req.max)
        .bind(req.executor_id)
        .bind(req.labels)
        .bind(req.slots)
        .fetch_all(&mut *tx)
        .await?;
    let mut again = false;
    let claimed = rows
        .iter()
        .filter(|r| {
            // The mark of "claim again soon": the only row whose ID is NULL.
            let mark = matches!(r.try_get::<Option<String>, _>(0), Ok(None));
            again |= mark;
            !mark
        })
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
    if let Err(e) = tx.commit().await {
        give_back(pool, &claimed).await;
        return Err(e.into());
    }
    Ok(Round { claimed, again })
}

/// Longest a node keeps trying to give back the rows of a claim whose commit it could not
/// confirm (the server is restarting meanwhile).
const GIVE_BACK_MS_MAX: u64 = 60_000;

/// Puts the rows of a claim whose commit may or may not have taken place back on their queue,
/// each fenced on its owner (a no-op for a claim that did not commit), retrying while the
/// database is unreachable.
async fn give_back(pool: &PgPool, claimed: &[Claimed]) {
    for c in claimed {
        let released = dbos_kernel::db::retry_transient(
            "giving back a claimed workflow",
            GIVE_BACK_MS_MAX,
            crate::Error::is_transient,
            || crate::workflows::release(pool, &c.workflow_id, &c.owner_xid),
        )
        .await;
        if let Err(e) = released {
            tracing::warn!(workflow_id = %c.workflow_id, error = %e, "could not give back a workflow whose claim may have committed; it is released when this node stops or dies");
        }
    }
}
