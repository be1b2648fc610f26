//! The dispatcher: one loop per node that claims enqueued workflows this node has code for, up
//! to its free slots, and hands each to the workflow engine through [`Executor`]. Between
//! claims it runs the timer sweeps (deadlines, delayed promotion) and the recovery sweep. A
//! second loop fires cron schedules.
//!
//! Wake-ups: a NOTIFY on [`crate::ENQUEUE_CHANNEL`] (every enqueue sends one at commit), a
//! local [`Handle::wake`], a slot freed while every slot was busy, a workflow of this node
//! ending while some queue limits its concurrency ([`Handle::workflow_ended`]; a workflow of
//! another node ending on a queue of a shared limit notifies the enqueue channel), a round
//! that says to claim again (it skipped a queue another node's round held, or took its share
//! of a least-loaded queue: soon after), the earliest known delay, or the poll interval as a
//! fallback.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use dbos_kernel::{CancellationToken, Kernel, Phase, Runtime, SharedClock, Subscription};
use dbos_store::claim::{ClaimRequest, Claimed};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio::sync::Notify;

use crate::Error;

/// What the scheduler calls to run a claimed workflow: the workflow engine implements it.
pub trait Executor: Send + Sync + 'static {
    /// Names of the workflows this node has code for; only these are claimed.
    fn names(&self) -> Vec<String>;
    /// The application version this node runs; only workflows of it are claimed.
    fn app_version(&self) -> String;
    /// Starts a claimed workflow (now PENDING and owned by `claimed.owner_xid`) on a slot of
    /// this node; returns once it runs. An error leaves the workflow to recovery.
    fn execute(
        &self,
        claimed: Claimed,
    ) -> Pin<Box<dyn Future<Output = Result<(), ExecuteError>> + Send + '_>>;
}

/// Why an [`Executor`] could not start a claimed workflow.
pub type ExecuteError = Box<dyn std::error::Error + Send + Sync>;

/// Options of the dispatcher; every limit has a default.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Options {
    /// Workflows claimed in one round trip at most.
    pub claim_batch_max: usize,
    /// Interval of the sweeps, and of a claim when no notification arrives.
    pub poll_interval_ms: u64,
    /// Claims beyond this many recoveries dead-letter a workflow; `None` is unlimited.
    pub max_recovery_attempts: Option<u32>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            claim_batch_max: 256,
            poll_interval_ms: 1_000,
            max_recovery_attempts: Some(100),
        }
    }
}

/// Handle to the dispatcher. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Handle {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    wake: Notify,
    /// Earliest `delay_until_epoch_ms` of a DELAYED workflow, when known.
    next_delay_ms: Mutex<Option<i64>>,
    /// Completed dispatcher rounds, for tests that wait for "the dispatcher looked".
    rounds: tokio::sync::watch::Sender<u64>,
    /// Whether some queue limits its concurrency (as the last sweep found): then a workflow
    /// ending on this node may let another one of its queue start.
    concurrency_limited: std::sync::atomic::AtomicBool,
}

impl Handle {
    /// Wakes the dispatcher (work was enqueued, resumed or forked by this process).
    pub fn wake(&self) {
        self.shared.wake.notify_one();
    }

    /// Tells the dispatcher that a workflow of this node ended: when some queue limits its
    /// concurrency, it claims again at once, since the end may let another workflow of that
    /// queue start (without this, a queue of concurrency 1 would start one short task per
    /// poll interval).
    pub fn workflow_ended(&self) {
        if self
            .shared
            .concurrency_limited
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            self.wake();
        }
    }

    /// Tells the dispatcher that a DELAYED workflow becomes due at `until_ms` (epoch ms).
    pub fn delayed_until(&self, until_ms: i64) {
        let mut next = self.shared.next_delay_ms.lock();
        *next = Some(next.map_or(until_ms, |n| n.min(until_ms)));
        drop(next);
        self.wake();
    }

    /// A receiver of the dispatcher's completed rounds (claim and, when due, the sweeps): a
    /// test that needs "the dispatcher looked and found nothing" waits for the count to move.
    pub fn rounds(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.rounds.subscribe()
    }
}

/// The dispatcher of one node.
struct Dispatcher {
    opts: Options,
    pool: PgPool,
    runtime: Runtime,
    clock: SharedClock,
    executor: Arc<dyn Executor>,
    executor_id: String,
    names: Vec<String>,
    app_version: String,
    labels: serde_json::Value,
    slots: i32,
    shared: Arc<Shared>,
    sub: tokio::sync::Mutex<Subscription>,
    lease: dbos_kernel::Lease,
}

/// Starts the dispatcher and the cron loop of `kernel`'s node, supervised in the
/// [`Phase::Claim`] phase (they stop first at shutdown), and returns the dispatcher's handle.
///
/// # Errors
/// The notifier has stopped; the node's labels do not encode.
pub async fn start(
    kernel: &Kernel,
    executor: Arc<dyn Executor>,
    opts: Options,
) -> Result<Handle, Error> {
    let shared = Arc::new(Shared {
        rounds: tokio::sync::watch::channel(0).0,
        ..Shared::default()
    });
    let sub = kernel.notifier().subscribe(crate::ENQUEUE_CHANNEL).await?;
    let labels = serde_json::to_value(&kernel.config().labels)
        .map_err(|e| Error::Invalid(format!("node labels: {e}")))?;
    let d = Arc::new(Dispatcher {
        opts,
        // One connection of its own for the loop's statements, which run one at a time: the
        // claim function is compiled and its statements planned once, on one backend, rather
        // than on each connection of the node's pool in turn.
        pool: kernel.endpoint().own_pool(1),
        runtime: kernel.runtime().clone(),
        clock: kernel.clock().clone(),
        names: executor.names(),
        app_version: executor.app_version(),
        executor,
        executor_id: kernel.node_id().to_owned(),
        labels,
        slots: kernel.config().slots.min(i32::MAX as u32) as i32,
        shared: shared.clone(),
        sub: tokio::sync::Mutex::new(sub),
        lease: kernel.lease().clone(),
    });
    let dispatcher = d.clone();
    kernel
        .loops()
        .spawn("dispatcher", Phase::Claim, move |stop| {
            let d = dispatcher.clone();
            async move { d.run(stop).await }
        });
    let handle = Handle { shared };
    let cron_pool = kernel.pool().clone();
    let cron_handle = handle.clone();
    kernel.loops().spawn("cron", Phase::Claim, move |stop| {
        crate::cron::run(cron_pool.clone(), cron_handle.clone(), stop)
    });
    Ok(handle)
}

impl Dispatcher {
    /// Claims, sweeps and waits until `stop`. Errors of one round are logged and the next round
    /// retries; only a closed notifier ends the loop with an error (the supervisor restarts it).
    async fn run(self: Arc<Self>, stop: CancellationToken) -> Result<(), Error> {
        let mut sub = self.sub.lock().await;
        let poll = Duration::from_millis(self.opts.poll_interval_ms);
        let mut again_pause = Duration::from_millis(CLAIM_AGAIN_MS / 2);
        let mut last_sweep = std::time::Instant::now()
            .checked_sub(poll)
            .unwrap_or_else(std::time::Instant::now);
        loop {
            if stop.is_cancelled() {
                return Ok(());
            }
            let slots_free = self.runtime.free_slots();
            let free = slots_free.min(self.opts.claim_batch_max);
            let (mut claimed, mut again) = (0, false);
            // A node that no longer holds its lease claims nothing.
            if free > 0 && self.lease.is_held() {
                match self.claim(free).await {
                    Ok(round) => (claimed, again) = round,
                    Err(e) => tracing::warn!(error = %e, "claiming workflows failed; retrying"),
                }
            }
            let now = self.clock.now_ms();
            let due = self.shared.next_delay_ms.lock().is_some_and(|d| d <= now);
            let mut more = claimed > 0 && claimed == free;
            if last_sweep.elapsed() >= poll || due {
                last_sweep = std::time::Instant::now();
                more |= self.sweep().await;
            }
            self.shared.rounds.send_modify(|n| *n += 1);
            if more {
                continue;
            }
            let mut wait = poll;
            if again {
                // Another node's round held a queue with work (look again once it has likely
                // committed, in case it could not take that work), or a least-loaded queue
                // has work this node may take its share of. Rounds that take nothing back off,
                // up to the poll interval: the work may wait for a node that cannot run it.
                again_pause = if claimed > 0 {
                    Duration::from_millis(CLAIM_AGAIN_MS)
                } else {
                    (again_pause * 2).min(poll)
                };
                wait = wait.min(again_pause);
            } else {
                again_pause = Duration::from_millis(CLAIM_AGAIN_MS / 2);
            }
            if let Some(next) = *self.shared.next_delay_ms.lock() {
                let left = (next - self.clock.now_ms()).max(1) as u64;
                wait = wait.min(Duration::from_millis(left));
            }
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                () = self.shared.wake.notified() => {}
                w = sub.recv() => if w.is_none() {
                    return Err(Error::Kernel(dbos_kernel::Error::ShuttingDown));
                },
                () = tokio::time::sleep(wait) => {}
                // Every slot was busy: claim again as soon as one frees, not a poll later. The
                // claim that follows takes every slot freed meanwhile. Read from the slots, not
                // from `free`: a claim batch limit of zero must not make this a busy loop.
                () = self.runtime.slot_free(), if slots_free == 0 => {}
            }
            // A burst of enqueues is one claim round, not one per notification.
            while let Some(Some(_)) = now_or_never(sub.recv()) {}
        }
    }

    /// The deadline, recovery and delayed-promotion sweeps; whether any of them made work
    /// claimable now.
    async fn sweep(&self) -> bool {
        let mut more = false;
        if let Err(e) = dbos_store::workflows::cancel_expired(&self.pool, None).await {
            tracing::warn!(error = %e, "deadline sweep failed");
        }
        match crate::recovery::sweep(&self.pool).await {
            Ok(r) => {
                if !r.nodes_declared_dead.is_empty() {
                    tracing::warn!(nodes = ?r.nodes_declared_dead, "nodes declared dead after their lease expired");
                }
                if r.workflows > 0 {
                    tracing::info!(
                        workflows = r.workflows,
                        "re-enqueued the pending work of gone nodes"
                    );
                    more = true;
                }
            }
            Err(e) => tracing::warn!(error = %e, "recovery sweep failed"),
        }
        match crate::queues::concurrency_limited(&self.pool).await {
            Ok(limited) => self
                .shared
                .concurrency_limited
                .store(limited, std::sync::atomic::Ordering::Relaxed),
            Err(e) => tracing::warn!(error = %e, "reading the queues' limits failed"),
        }
        match dbos_store::workflows::promote_delayed(&self.pool).await {
            Ok((promoted, next)) => {
                *self.shared.next_delay_ms.lock() = next;
                more |= promoted > 0;
            }
            Err(e) => tracing::warn!(error = %e, "promoting delayed workflows failed"),
        }
        more
    }

    /// Claims up to `n` workflows in one round (with their inputs and recorded steps) and hands
    /// them to the executor. Returns how many were claimed, and whether to claim again soon
    /// ([`dbos_store::claim::Round::again`]).
    async fn claim(&self, n: usize) -> Result<(usize, bool), Error> {
        let req = ClaimRequest {
            names: &self.names,
            app_version: &self.app_version,
            executor_id: &self.executor_id,
            max: n as i64,
            labels: &self.labels,
            slots: self.slots,
        };
        let round = dbos_store::claim::claim(&self.pool, &req).await?;
        let claimed = round.claimed.len();
        for row in round.claimed {
            if let Some(max) = self.opts.max_recovery_attempts {
                if row.recovery_attempts > i64::from(max) + 1 {
                    tracing::warn!(
                        workflow_id = %row.workflow_id,
                        "dead-lettering after too many recovery attempts"
                    );
                    dbos_store::workflows::dead_letter(
                        &self.pool,
                        &row.workflow_id,
                        &row.owner_xid,
                    )
                    .await?;
                    continue;
                }
            }
            let (id, owner) = (row.workflow_id.clone(), row.owner_xid.clone());
            if let Err(e) = self.executor.execute(row).await {
                // Never left PENDING under a live owner that will not run it.
                tracing::warn!(workflow_id = %id, error = %e, "could not start a claimed workflow; releasing it");
                dbos_store::workflows::release(&self.pool, &id, &owner).await?;
            }
        }
        Ok((claimed, round.again))
    }
}

/// How soon a dispatcher told to claim again does: about a claim round's time, so a round
/// that held a queue has committed, and other nodes have taken their share of a least-loaded
/// queue.
const CLAIM_AGAIN_MS: u64 = 5;

fn now_or_never<F: Future>(f: F) -> Option<F::Output> {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}
