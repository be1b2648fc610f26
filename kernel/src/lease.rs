//! This node's own view of its lease. Other nodes declare a node dead once its heartbeat is
//! older than its `node_lease_ms`; the node itself gives its lease up earlier, after
//! [`Lease::local_deadline`] (two thirds of the lease) without a successful heartbeat. While
//! it does not hold its lease it claims nothing, starts no step and stops its commands, so by
//! the time another node may take its work over, this one has stopped working on it — even if
//! it was only cut off from the database, or stalled (`SIGSTOP`) and resumed. A heartbeat that
//! succeeds again (the database is back and nobody declared the node dead) renews the lease,
//! and the node works again; a node declared dead gives its lease up for good and stops.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

/// The node's lease, as the node itself holds it. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Lease {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// When the last successful heartbeat was sent (before the database stamped it).
    renewed: Mutex<Instant>,
    local_deadline: Duration,
    /// Cancelled when the lease of the current term is given up; a renewal after that starts a
    /// new term with a fresh token.
    lost: Mutex<CancellationToken>,
    /// Set once the lease is given up for good (the node was declared dead).
    ended: std::sync::atomic::AtomicBool,
}

impl Lease {
    /// A lease just renewed, given up after `local_deadline` without renewal.
    pub fn new(local_deadline: Duration) -> Lease {
        Lease {
            inner: Arc::new(Inner {
                renewed: Mutex::new(Instant::now()),
                local_deadline,
                lost: Mutex::new(CancellationToken::new()),
                ended: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// The local deadline for a lease of `lease_ms`: two thirds of it, so the node stops
    /// working well before others may take its work over.
    pub fn local_deadline_for(lease_ms: u64) -> Duration {
        Duration::from_millis(lease_ms * 2 / 3)
    }

    /// How long the node keeps its lease without a successful heartbeat.
    pub fn local_deadline(&self) -> Duration {
        self.inner.local_deadline
    }

    /// Whether the node still holds its lease: not given up, and renewed within the local
    /// deadline. Checked before claiming and before every step.
    pub fn is_held(&self) -> bool {
        !self.inner.lost.lock().is_cancelled()
            && self.inner.renewed.lock().elapsed() < self.inner.local_deadline
    }

    /// Time left before the local deadline (zero once passed).
    pub fn remaining(&self) -> Duration {
        self.inner
            .local_deadline
            .saturating_sub(self.inner.renewed.lock().elapsed())
    }

    /// Cancelled once the node gives up the lease it holds now: commands started under it
    /// stop, steps are refused.
    pub fn lost(&self) -> CancellationToken {
        self.inner.lost.lock().clone()
    }

    /// Records a heartbeat that succeeded; `sent` is when it was sent. After the lease was
    /// given up (but not for good), this starts a new term; returns whether it did.
    pub(crate) fn renew(&self, sent: Instant) -> bool {
        let mut r = self.inner.renewed.lock();
        if sent > *r {
            *r = sent;
        }
        drop(r);
        let mut lost = self.inner.lost.lock();
        if lost.is_cancelled() && !self.inner.ended.load(std::sync::atomic::Ordering::SeqCst) {
            *lost = CancellationToken::new();
            return true;
        }
        false
    }

    /// Gives the lease of the current term up (the node may renew it later).
    pub(crate) fn give_up(&self) {
        self.inner.lost.lock().cancel();
    }

    /// Whether the lease was given up for good: the cluster declared the node dead.
    pub fn has_ended(&self) -> bool {
        self.inner.ended.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Gives the lease up for good: the node was declared dead.
    pub(crate) fn end(&self) {
        self.inner
            .ended
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.give_up();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_held_until_its_local_deadline_or_until_given_up() {
        let lease = Lease::new(Duration::from_secs(60));
        assert!(lease.is_held());
        lease.renew(Instant::now());
        assert!(lease.remaining() > Duration::from_secs(59));
        let term = lease.lost();
        lease.give_up();
        assert!(!lease.is_held() && term.is_cancelled());
        assert!(lease.renew(Instant::now()), "a renewal starts a new term");
        assert!(lease.is_held() && !lease.lost().is_cancelled());
        lease.end();
        assert!(
            !lease.renew(Instant::now()),
            "a lease given up for good stays given up"
        );
        assert!(!lease.is_held());
        let expired = Lease::new(Duration::ZERO);
        assert!(!expired.is_held());
        assert_eq!(
            Lease::local_deadline_for(9_000),
            Duration::from_millis(6_000)
        );
    }
}
