//! Recovery without a coordinator: any live node takes over the PENDING work of nodes that are
//! gone, whichever program or version it belongs to.
//!
//! A node is gone when its lease expired (no heartbeat for its `lease_ms`), when a successor on
//! its host marked it dead, or when it stopped with work still PENDING (abandoned at the drain
//! deadline). Its PENDING workflows go back to ENQUEUED (keeping their queue, or on the
//! internal queue), where any node with their code and version claims them; their recorded
//! steps are replayed, so each completed step runs once. Taking over moves rows from PENDING to
//! ENQUEUED, so nodes racing to recover the same work re-enqueue each workflow exactly once; a
//! node whose lease expired is marked `dead`, so if it was only partitioned it stops itself at
//! its next heartbeat, and the ownership token it held is cleared, so it cannot write a
//! checkpoint of the work it lost.

use sqlx::{Connection, PgPool};

use crate::Error;

/// What one recovery sweep did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Nodes newly declared dead (their lease expired).
    pub nodes_declared_dead: Vec<String>,
    /// Workflows re-enqueued.
    pub workflows: u64,
    /// Whether this sweep ran (another node may have been sweeping at the same time).
    pub swept: bool,
}

/// Declares lease-expired nodes dead and re-enqueues the PENDING workflows of every gone node.
/// Only one node sweeps at a time (a transaction-scoped advisory lock; the others skip).
///
/// 1 transaction of 3 statements, 1 commit ([`dbos_kernel::node::declare_expired_dead`], then
/// [`dbos_store::workflows::release_gone_nodes`]).
///
/// # Errors
/// Database errors.
pub async fn sweep(pool: &PgPool) -> Result<Recovered, Error> {
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin().await?;
    let got: bool = sqlx::query_scalar(
        "SELECT pg_try_advisory_xact_lock(hashtextextended('dbos.sched.recovery', 0))",
    )
    .fetch_one(&mut *tx)
    .await?;
    if !got {
        return Ok(Recovered::default());
    }
    let nodes_declared_dead = dbos_kernel::node::declare_expired_dead(&mut tx).await?;
    let workflows = dbos_store::workflows::release_gone_nodes(&mut tx).await?;
    tx.commit().await?;
    Ok(Recovered {
        nodes_declared_dead,
        workflows,
        swept: true,
    })
}
