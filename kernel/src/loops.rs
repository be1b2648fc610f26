//! Background loops, supervised: every long-running loop of a node (heartbeat, notifier,
//! dispatcher, sweeps, committer, cron, retention) is spawned here, by name, on one tracker per
//! shutdown [`Phase`]. A loop that returns an error or panics is logged and started again with
//! backoff, never silently gone; a loop ends for good when it returns `Ok(())` or when its phase
//! is stopped.
//!
//! Shutdown stops the phases in order (see [`crate::Kernel::shutdown`]): first the loops that
//! claim or create work, then — after running work has drained — the loops that write what that
//! work produced, and last the notifier.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Pause before restarting a loop that failed, doubled after each failure in a row.
pub const RESTART_BACKOFF_MS_MIN: u64 = 100;
/// Longest pause before restarting a failed loop.
pub const RESTART_BACKOFF_MS_MAX: u64 = 30_000;
/// A loop that ran this long before failing restarts after the shortest pause again.
const HEALTHY_RUN_MS: u64 = 60_000;

/// When a loop is stopped during shutdown, in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// Stopped first: loops that claim or create work (dispatch, cron, sweeps, retention).
    /// Its token is the node's shutdown token.
    Claim,
    /// Stopped once running work has drained: loops that write what that work produced (the
    /// group committer) and the heartbeat that keeps the node's lease while it drains.
    Flush,
    /// Stopped last, before the node is marked stopped: the notifier.
    Listen,
}

impl Phase {
    const ALL: [Phase; 3] = [Phase::Claim, Phase::Flush, Phase::Listen];

    fn index(self) -> usize {
        self as usize
    }
}

/// The node's background loops. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Loops {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    phases: [Group; 3],
    /// Loops running now, by name.
    running: Mutex<BTreeMap<&'static str, usize>>,
}

#[derive(Debug)]
struct Group {
    stop: CancellationToken,
    tracker: TaskTracker,
}

impl Default for Loops {
    fn default() -> Self {
        Loops::new()
    }
}

impl Loops {
    /// No loops yet; every phase open.
    pub fn new() -> Loops {
        let group = || Group {
            stop: CancellationToken::new(),
            tracker: TaskTracker::new(),
        };
        Loops {
            inner: Arc::new(Inner {
                phases: [group(), group(), group()],
                running: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    /// The token cancelled when `phase` stops.
    pub fn token(&self, phase: Phase) -> CancellationToken {
        self.inner.phases[phase.index()].stop.clone()
    }

    /// Spawns a supervised loop: `body` runs with the phase's stop token; when it returns an
    /// error or panics it is logged and `body` is called again after a backoff
    /// ([`RESTART_BACKOFF_MS_MIN`] doubling up to [`RESTART_BACKOFF_MS_MAX`]). It ends when
    /// `body` returns `Ok(())` or the phase stops.
    pub fn spawn<F, Fut, E>(&self, name: &'static str, phase: Phase, mut body: F)
    where
        F: FnMut(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Display + Send + 'static,
    {
        let group = &self.inner.phases[phase.index()];
        let stop = group.stop.clone();
        let guard = Running::new(self.inner.clone(), name);
        group.tracker.spawn(async move {
            let _guard = guard;
            let mut backoff_ms = RESTART_BACKOFF_MS_MIN;
            loop {
                if stop.is_cancelled() {
                    return;
                }
                let started = Instant::now();
                let failure = match tokio::spawn(body(stop.clone())).await {
                    Ok(Ok(())) => return,
                    Ok(Err(e)) => e.to_string(),
                    Err(e) if e.is_panic() => format!("panicked: {}", panic_text(e.into_panic())),
                    Err(_) => return,
                };
                if stop.is_cancelled() {
                    return;
                }
                if started.elapsed() >= Duration::from_millis(HEALTHY_RUN_MS) {
                    backoff_ms = RESTART_BACKOFF_MS_MIN;
                }
                tracing::error!(
                    background_loop = name,
                    error = %failure,
                    restart_in_ms = backoff_ms,
                    "a background loop failed; restarting it"
                );
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(backoff_ms)) => {}
                }
                backoff_ms = (backoff_ms * 2).min(RESTART_BACKOFF_MS_MAX);
            }
        });
    }

    /// Spawns a loop that is not restarted (it keeps state that a restart could not rebuild,
    /// such as the notifier's connection); a panic is logged. It must end when the phase's
    /// token is cancelled.
    pub fn spawn_once<Fut>(&self, name: &'static str, phase: Phase, body: Fut)
    where
        Fut: Future<Output = ()> + Send + 'static,
    {
        let group = &self.inner.phases[phase.index()];
        let guard = Running::new(self.inner.clone(), name);
        group.tracker.spawn(async move {
            let _guard = guard;
            if let Err(e) = tokio::spawn(body).await {
                if e.is_panic() {
                    tracing::error!(
                        background_loop = name,
                        error = %panic_text(e.into_panic()),
                        "a background loop panicked"
                    );
                }
            }
        });
    }

    /// Stops the loops of `phase` and waits up to `timeout` for them to end. Returns the names
    /// of the loops of any phase still running afterwards that did not end in time.
    pub async fn stop(&self, phase: Phase, timeout: Duration) -> Vec<&'static str> {
        let group = &self.inner.phases[phase.index()];
        group.stop.cancel();
        group.tracker.close();
        if tokio::time::timeout(timeout, group.tracker.wait())
            .await
            .is_err()
        {
            let late = self.running();
            tracing::warn!(?phase, loops = ?late, "background loops did not stop in time");
            return late;
        }
        Vec::new()
    }

    /// Stops every phase in order, each waiting up to `timeout`.
    pub async fn stop_all(&self, timeout: Duration) {
        for phase in Phase::ALL {
            self.stop(phase, timeout).await;
        }
    }

    /// Names of the loops running now (a name twice when two loops share it).
    pub fn running(&self) -> Vec<&'static str> {
        self.inner
            .running
            .lock()
            .iter()
            .flat_map(|(name, n)| std::iter::repeat_n(*name, *n))
            .collect()
    }
}

/// Counts a loop as running for as long as it lives.
struct Running {
    inner: Arc<Inner>,
    name: &'static str,
}

impl Running {
    fn new(inner: Arc<Inner>, name: &'static str) -> Running {
        *inner.running.lock().entry(name).or_default() += 1;
        Running { inner, name }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut running = self.inner.running.lock();
        if let Some(n) = running.get_mut(self.name) {
            *n -= 1;
            if *n == 0 {
                running.remove(self.name);
            }
        }
    }
}

fn panic_text(panic: Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn a_failing_loop_restarts_with_backoff_and_stops_with_its_phase() {
        let loops = Loops::new();
        let runs = Arc::new(AtomicU32::new(0));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let r = runs.clone();
        loops.spawn("flaky", Phase::Claim, move |stop| {
            let n = r.fetch_add(1, Ordering::SeqCst) + 1;
            let tx = tx.clone();
            async move {
                let _ = tx.send(n);
                match n {
                    1 => Err("first run fails"),
                    2 => panic!("second run panics"),
                    _ => {
                        stop.cancelled().await;
                        Ok(())
                    }
                }
            }
        });
        for want in 1..=3 {
            assert_eq!(rx.recv().await, Some(want));
        }
        assert_eq!(loops.running(), vec!["flaky"]);
        assert!(loops
            .stop(Phase::Claim, Duration::from_secs(5))
            .await
            .is_empty());
        assert!(loops.running().is_empty());
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn phases_stop_independently() {
        let loops = Loops::new();
        for (name, phase) in [("claim", Phase::Claim), ("flush", Phase::Flush)] {
            loops.spawn(name, phase, |stop| async move {
                stop.cancelled().await;
                Ok::<_, String>(())
            });
        }
        loops.stop(Phase::Claim, Duration::from_secs(5)).await;
        assert_eq!(loops.running(), vec!["flush"]);
        assert!(!loops.token(Phase::Flush).is_cancelled());
        loops.stop_all(Duration::from_secs(5)).await;
        assert!(loops.running().is_empty());
    }
}
