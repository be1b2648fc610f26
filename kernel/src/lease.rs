//! This node's own view of its lease. Other nodes declare a node dead once its heartbeat is
//! older than its `node_lease_ms`; the node itself gives its lease up earlier, after
//! [`Lease::local_deadline`] (two thirds of the lease) without a successful heartbeat. From
//! then on it claims nothing, starts no step and stops its commands, so by the time another
//! node may take its work over, this one has stopped working on it — even if it was only cut
//! off from the database, or stalled (`SIGSTOP`) and resumed.

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
    lost: CancellationToken,
}

impl Lease {
    /// A lease just renewed, given up after `local_deadline` without renewal.
    pub fn new(local_deadline: Duration) -> Lease {
        Lease {
            inner: Arc::new(Inner {
                renewed: Mutex::new(Instant::now()),
                local_deadline,
                lost: CancellationToken::new(),
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
        !self.inner.lost.is_cancelled()
            && self.inner.renewed.lock().elapsed() < self.inner.local_deadline
    }

    /// Time left before the local deadline (zero once passed).
    pub fn remaining(&self) -> Duration {
        self.inner
            .local_deadline
            .saturating_sub(self.inner.renewed.lock().elapsed())
    }

    /// Cancelled once the node has given its lease up: commands stop, steps are refused.
    pub fn lost(&self) -> CancellationToken {
        self.inner.lost.clone()
    }

    /// Records a heartbeat that succeeded; `sent` is when it was sent.
    pub(crate) fn renew(&self, sent: Instant) {
        let mut r = self.inner.renewed.lock();
        if sent > *r {
            *r = sent;
        }
    }

    /// Gives the lease up for good.
    pub(crate) fn give_up(&self) {
        self.inner.lost.cancel();
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
        lease.give_up();
        assert!(!lease.is_held() && lease.lost().is_cancelled());
        let expired = Lease::new(Duration::ZERO);
        assert!(!expired.is_held());
        assert_eq!(
            Lease::local_deadline_for(9_000),
            Duration::from_millis(6_000)
        );
    }
}
