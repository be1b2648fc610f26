//! Notifications sent after the fact, many in one transaction.
//!
//! A transaction that notifies holds Postgres's notification lock from just before its commit
//! until after it (the commit's fsync included), so notifying commits of every client take
//! turns. Enqueues and outcomes therefore commit without notifying; the node announces them
//! afterwards here: one transaction at a time, carrying everything announced meanwhile
//! (identical notifications once), committed without waiting for an fsync. Announcements are
//! hints: a lost one costs a waiter or an idle node its next poll, never correctness.

use std::collections::BTreeSet;
use std::sync::Arc;

use dbos_kernel::{CancellationToken, Loops, Phase};
use parking_lot::Mutex;
use sqlx::PgPool;
use tokio::sync::Notify;

use super::error::Error;

/// Handle to the announcer. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Announcer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// (channel, payload) to notify.
    pending: Mutex<BTreeSet<(&'static str, String)>>,
    wake: Notify,
    pool: PgPool,
}

impl Announcer {
    /// Starts the announcing loop on `loops`; it sends what is pending before it stops.
    pub(crate) fn start(loops: &Loops, pool: PgPool) -> Announcer {
        let inner = Arc::new(Inner {
            pending: Mutex::new(BTreeSet::new()),
            wake: Notify::new(),
            pool,
        });
        let looping = inner.clone();
        loops.spawn("announcer", Phase::Flush, move |stop| {
            run(looping.clone(), stop)
        });
        Announcer { inner }
    }

    /// Notifies `channel` with `payload` soon, with whatever else is announced meanwhile.
    pub(crate) fn announce(&self, channel: &'static str, payload: String) {
        self.inner.pending.lock().insert((channel, payload));
        self.inner.wake.notify_one();
    }
}

async fn run(inner: Arc<Inner>, stop: CancellationToken) -> Result<(), Error> {
    loop {
        let batch = std::mem::take(&mut *inner.pending.lock());
        if batch.is_empty() {
            if stop.is_cancelled() {
                return Ok(());
            }
            tokio::select! {
                () = inner.wake.notified() => {}
                () = stop.cancelled() => {}
            }
            continue;
        }
        let (channels, payloads): (Vec<&str>, Vec<String>) = batch.into_iter().unzip();
        // The transaction writes nothing durable: its commit does not wait for its WAL to
        // reach disk, and so holds the notification lock for no fsync.
        let sent = sqlx::query(
            "SELECT count(pg_notify(c, p))
             FROM (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit,
                  unnest($1::text[], $2::text[]) AS t(c, p)",
        )
        .bind(&channels)
        .bind(&payloads)
        .execute(&inner.pool)
        .await;
        if let Err(e) = sent {
            tracing::debug!(error = %e, notifications = payloads.len(), "announcing failed; waiters fall back to polling");
        }
    }
}
