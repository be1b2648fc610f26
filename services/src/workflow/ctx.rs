//! The context a workflow runs with: durable steps, transactions, child workflows, sleep.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::{Connection, PgConnection};

use super::codec;
use super::error::{Error, Fate, PortableError};
use super::replay::ReplayLog;
use super::service::{Service, StartOptions, WorkflowHandle};
use dbos_store::batch::Checkpoint;
use dbos_store::operations::Recorded;

/// Decides whether a failed step attempt is retried.
pub type ShouldRetry = Arc<dyn Fn(&Error) -> bool + Send + Sync>;

/// How a step is retried. The default runs a step once.
#[derive(Clone)]
pub struct RetryPolicy {
    /// Attempts in all, at least 1.
    pub max_attempts: u32,
    /// Pause after the first failure.
    pub interval_ms: u64,
    /// Factor by which the pause grows after each failure.
    pub backoff_rate: f64,
    /// Longest pause.
    pub max_interval_ms: u64,
    /// Whether an error is worth another attempt; every error is when `None`.
    pub should_retry: Option<ShouldRetry>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 1,
            interval_ms: 1_000,
            backoff_rate: 2.0,
            max_interval_ms: 3_600_000,
            should_retry: None,
        }
    }
}

impl std::fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("max_attempts", &self.max_attempts)
            .field("interval_ms", &self.interval_ms)
            .field("backoff_rate", &self.backoff_rate)
            .field("max_interval_ms", &self.max_interval_ms)
            .finish()
    }
}

impl RetryPolicy {
    /// Up to `max_attempts` attempts with the default backoff (1 s, doubling).
    pub fn attempts(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            ..RetryPolicy::default()
        }
    }

    fn pause_ms(&self, failures: u32) -> u64 {
        let ms = self.interval_ms as f64 * self.backoff_rate.powi(failures as i32 - 1);
        (ms.min(self.max_interval_ms as f64)).max(0.0) as u64
    }
}

/// Transactions retried on serialization failures and deadlocks before giving up.
const TRANSACTION_ATTEMPTS_MAX: u32 = 20;

/// What a running workflow is given. Cheap to clone.
#[derive(Clone)]
pub struct Context {
    pub(crate) inner: Arc<CtxInner>,
}

pub(crate) struct CtxInner {
    pub(crate) mode: Mode,
    /// The system database (read-only in a replay).
    pub(crate) pool: sqlx::PgPool,
    pub(crate) workflow_id: String,
    pub(crate) owner_xid: String,
    pub(crate) next_fid: AtomicI32,
    pub(crate) recorded: Mutex<HashMap<i32, Recorded>>,
    pub(crate) deadline_ms: Option<i64>,
    /// The checkpoint of the last step, not yet written: it goes out with the next write of
    /// this workflow, and before anything that could depend on the step runs (the next step's
    /// body, a message, a child), so the workflow's last step and its outcome share a commit.
    pub(crate) pending: Mutex<Option<Checkpoint>>,
    /// The node slot this execution runs on, given back while it waits; none in a replay.
    pub(crate) slot: std::sync::OnceLock<dbos_kernel::Slot>,
}

/// What a context's operations do.
pub(crate) enum Mode {
    /// An execution this node owns: operations run and are recorded.
    Live {
        svc: Service,
        /// Notifications of this workflow's cancellation since the last step.
        cancel: Mutex<dbos_msg::Watch>,
        /// The mailboxes this execution has received from, registered between its receives
        /// so that the node knows when one found empty stays so (see
        /// [`dbos_msg::Waiters::found_empty`]).
        mailboxes: Mutex<Vec<dbos_msg::Watch>>,
    },
    /// A replay (see [`super::Replayer`]): every operation returns what was recorded, and one
    /// the history does not have stops the replay; nothing runs and nothing is written.
    Replay(Arc<ReplayLog>),
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("workflow_id", &self.inner.workflow_id)
            .finish()
    }
}

impl Context {
    /// This workflow's ID.
    pub fn workflow_id(&self) -> &str {
        &self.inner.workflow_id
    }

    /// Whether this node still holds its lease (see [`dbos_kernel::Lease`]).
    pub fn holds_lease(&self) -> bool {
        match &self.inner.mode {
            Mode::Live { svc, .. } => svc.lease().is_held(),
            Mode::Replay(_) => true,
        }
    }

    /// This node's lease (`None` in a replay), for work that must end with it: a command's
    /// group ([`dbos_scheduler::command::run`]).
    pub fn lease(&self) -> Option<dbos_kernel::Lease> {
        match &self.inner.mode {
            Mode::Live { svc, .. } => Some(svc.lease().clone()),
            Mode::Replay(_) => None,
        }
    }

    /// The term of this node's lease now: cancelled once the node gives that lease up, even
    /// if a later heartbeat renews it. A step whose work [`Context::cancelled`] may stop takes
    /// the term before the work starts. When the work was stopped and the term has ended (or
    /// the lease is not held), the stop may have been this node giving its lease up rather
    /// than a cancel of the workflow: the step should then fail with [`Error::ShuttingDown`],
    /// so nothing is recorded and the workflow is released to run again. Asking
    /// [`Context::holds_lease`] alone after the stop would miss a renewal in between. A replay's
    /// term never ends.
    pub fn lease_term(&self) -> dbos_kernel::CancellationToken {
        match &self.inner.mode {
            Mode::Live { svc, .. } => svc.lease().lost(),
            Mode::Replay(_) => dbos_kernel::CancellationToken::new(),
        }
    }

    /// Whether this context replays recorded history (see [`super::Replayer`]) instead of
    /// running: its operations return what was recorded and write nothing.
    pub fn is_replay(&self) -> bool {
        matches!(self.inner.mode, Mode::Replay(_))
    }

    /// The service of a live execution; a replay has none (nothing of it is reached before
    /// the replay stops at an operation the history does not have).
    pub(super) fn svc(&self) -> Result<&Service, Error> {
        match &self.inner.mode {
            Mode::Live { svc, .. } => Ok(svc),
            Mode::Replay(_) => Err(not_live()),
        }
    }

    /// The replay's log, when replaying.
    pub(super) fn replay_log(&self) -> Option<&ReplayLog> {
        match &self.inner.mode {
            Mode::Live { .. } => None,
            Mode::Replay(log) => Some(log),
        }
    }

    /// Milliseconds since the epoch by the node's clock (not recorded; see
    /// [`Context::now_ms`] for the recorded reading).
    pub(super) fn clock_ms(&self) -> i64 {
        match &self.inner.mode {
            Mode::Live { svc, .. } => svc.now_ms(),
            Mode::Replay(_) => chrono::Utc::now().timestamp_millis(),
        }
    }

    /// The system database, for reads and for effects that need not be exactly-once. In a
    /// replay its sessions are read-only.
    pub fn pool(&self) -> &sqlx::PgPool {
        &self.inner.pool
    }

    pub(super) fn next_fid(&self) -> i32 {
        self.inner.next_fid.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// The recorded operation at `fid`, checked against the name the code calls now.
    ///
    /// In a replay an operation the history does not have stops the replay
    /// ([`Error::Unrecorded`]); the first stop or divergence is kept in the replay's log, so code
    /// that handles the error cannot hide it.
    pub(super) fn replay(&self, fid: i32, name: &str) -> Result<Option<Recorded>, Error> {
        let rec = self.inner.recorded.lock().get(&fid).cloned();
        let err = match rec {
            Some(r) if r.function_name != name => Error::Determinism {
                workflow_id: self.inner.workflow_id.clone(),
                function_id: fid,
                called: name.to_owned(),
                recorded: r.function_name,
            },
            None if self.is_replay() => self.unrecorded(fid, name),
            other => return Ok(other),
        };
        if let Some(log) = self.replay_log() {
            log.stop(fid, name, &err);
        }
        Err(err)
    }

    /// The error that stops a replay at an operation the history does not have.
    pub(super) fn unrecorded(&self, fid: i32, name: &str) -> Error {
        Error::Unrecorded {
            workflow_id: self.inner.workflow_id.clone(),
            function_id: fid,
            called: name.to_owned(),
        }
    }

    pub(super) fn replay_value<T: DeserializeOwned>(&self, r: &Recorded) -> Result<T, Error> {
        match (&r.output, &r.error) {
            (_, Some(e)) => Err(Error::Failed(Box::new(codec::decode_error(e)))),
            (Some(o), None) => codec::decode(o),
            (None, None) => codec::decode("null"),
        }
    }

    /// Runs before every step: fails with [`Error::ShuttingDown`] once this node no longer holds
    /// its lease; writes the checkpoint the last step left pending; fails with
    /// [`Error::Cancelled`] once the workflow was cancelled, and once its deadline has passed
    /// (and cancels it).
    pub(super) async fn check_deadline(&self) -> Result<(), Error> {
        // A node that gave its lease up (or whose lease ran out unrenewed: it was cut off or
        // stalled) starts no further step; another node may be running this workflow.
        let Mode::Live { svc, cancel, .. } = &self.inner.mode else {
            return Err(not_live());
        };
        if !svc.lease().is_held() {
            return Err(Error::ShuttingDown);
        }
        self.settle().await?;
        // A cancel (from this node, another one, or any SQL client) notifies: checked before
        // the step's body runs, at the cost of a round trip only when one arrived.
        let notified = cancel.lock().notified();
        if notified {
            self.stop_if_cancelled().await?;
        }
        if let Some(deadline) = self.inner.deadline_ms {
            if self.clock_ms() >= deadline {
                svc.cancel_expired(&self.inner.workflow_id).await?;
                return Err(Error::Cancelled(self.inner.workflow_id.clone()));
            }
        }
        Ok(())
    }

    /// Writes a checkpoint, with the one left pending before it; a refused write says why
    /// (cancelled, or owned elsewhere).
    pub(super) async fn record(&self, c: Checkpoint) -> Result<(), Error> {
        let mut all: Vec<Checkpoint> = self.take_pending().into_iter().collect();
        all.push(c);
        Box::pin(self.write_checkpoints(all)).await
    }

    /// Leaves a step's checkpoint to go out with the workflow's next write (see
    /// [`CtxInner::pending`]).
    async fn defer(&self, c: Checkpoint) -> Result<(), Error> {
        let earlier = self.inner.pending.lock().replace(c);
        debug_assert!(
            earlier.is_none(),
            "a pending checkpoint is written before a step runs"
        );
        // Never dropped, should a path run a step without settling first.
        match earlier {
            Some(e) => Box::pin(self.write_checkpoints(vec![e])).await,
            None => Ok(()),
        }
    }

    /// The checkpoint left pending, taken.
    pub(super) fn take_pending(&self) -> Option<Checkpoint> {
        self.inner.pending.lock().take()
    }

    /// Writes the checkpoint left pending, if any: before anything that could depend on the
    /// step runs.
    ///
    /// Its write is boxed, as are those of [`Context::record`] and [`Context::defer`]: inline,
    /// a write would size the future of every operation that settles first, and of the
    /// workflow around it (see `Service::still_owner`).
    async fn settle(&self) -> Result<(), Error> {
        match self.take_pending() {
            Some(c) => Box::pin(self.write_checkpoints(vec![c])).await,
            None => Ok(()),
        }
    }

    async fn write_checkpoints(&self, cs: Vec<Checkpoint>) -> Result<(), Error> {
        let svc = self.svc()?;
        let written = svc.committer().checkpoints(cs).await?;
        if written.iter().all(|w| *w)
            // Not written but still ours: an earlier attempt of this very write committed and
            // its answer was lost (the committer retries transient failures).
            || svc
                .still_owner(&self.inner.workflow_id, &self.inner.owner_xid)
                .await?
        {
            Ok(())
        } else {
            Err(svc.why_not_owner(&self.inner.workflow_id).await)
        }
    }

    pub(super) fn checkpoint(
        &self,
        fid: i32,
        name: &str,
        result: &Result<String, Error>,
        started_at_ms: i64,
        completed_at_ms: i64,
        child: Option<String>,
    ) -> Checkpoint {
        let (output, error) = match result {
            Ok(o) => (Some(o.clone()), None),
            Err(e) => (None, Some(codec::encode_error(&e.to_portable()))),
        };
        Checkpoint {
            workflow_id: self.inner.workflow_id.clone(),
            owner_xid: self.inner.owner_xid.clone(),
            function_id: fid,
            name: name.to_owned(),
            output,
            error,
            child_workflow_id: child,
            started_at_ms,
            completed_at_ms,
            prov: None,
        }
    }

    /// Runs `f` once as a durable step: its result is recorded, and a replay returns the
    /// recorded result (or re-raises the recorded error) without running it again.
    ///
    /// 1 round trip and 1 commit (shared with concurrent workflows) when it runs, made with the
    /// workflow's next write: the next operation's, or the outcome's for the last step. None
    /// on replay.
    ///
    /// # Errors
    /// The step's own error (recorded), [`Error::Cancelled`], [`Error::Determinism`].
    pub async fn step<T, F, Fut>(&self, name: &str, f: F) -> Result<T, Error>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        self.step_with(name, &RetryPolicy::default(), f).await
    }

    /// As [`Context::step`], retrying failures by `policy`. Only the final outcome is recorded.
    ///
    /// # Errors
    /// As [`Context::step`]; [`Error::MaxStepRetries`] when every attempt failed.
    pub async fn step_with<T, F, Fut>(
        &self,
        name: &str,
        policy: &RetryPolicy,
        mut f: F,
    ) -> Result<T, Error>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        dbos_store::limits::check_name("step name", name)?;
        let fid = self.next_fid();
        if let Some(r) = self.replay(fid, name)? {
            return self.replay_value(&r);
        }
        self.check_deadline().await?;
        let started = self.clock_ms();
        let attempts = policy.max_attempts.max(1);
        let mut attempt = 0;
        // What every attempt touched (a failed attempt's effects happened too).
        let mut touched = Vec::new();
        let result = loop {
            attempt += 1;
            let span = tracing::info_span!("step", name, function_id = fid, attempt);
            let (r, events) =
                tracing::Instrument::instrument(dbos_kernel::prov::capture(f()), span).await;
            touched.extend(events);
            match r {
                Ok(v) => break Ok(v),
                Err(e) if e.parks() => return Err(e),
                Err(e) => {
                    let retry = policy.should_retry.as_ref().is_none_or(|p| p(&e));
                    if !retry {
                        break Err(e);
                    }
                    if attempt >= attempts {
                        break Err(if attempts > 1 {
                            Error::MaxStepRetries {
                                name: name.to_owned(),
                                attempts,
                                last: Box::new(e.to_portable()),
                            }
                        } else {
                            e
                        });
                    }
                    tracing::debug!(step = name, attempt, error = %e, "step failed; retrying");
                    tokio::time::sleep(Duration::from_millis(policy.pause_ms(attempt))).await;
                }
            }
        };
        // A result over the payload limit is the step's error, recorded as such.
        let result = result.and_then(|v| {
            let text = codec::encode(&v)?;
            dbos_store::limits::check_payload("step result", &text)?;
            Ok((v, text))
        });
        let recorded = match &result {
            Ok((_, text)) => Ok(text.clone()),
            Err(e) => Err(Error::Failed(Box::new(e.to_portable()))),
        };
        // Written with this workflow's next write; nothing that could depend on it runs first.
        let completed = self.clock_ms();
        crate::metrics::METRICS
            .step_seconds
            .observe((completed - started) as f64 / 1000.0);
        let mut c = self.checkpoint(fid, name, &recorded, started, completed, None);
        c.prov = dbos_kernel::prov::to_json(&touched);
        self.defer(c).await?;
        result.map(|(v, _)| v).map_err(|e| match e {
            Error::Failed(_) | Error::MaxStepRetries { .. } => e,
            other => Error::Failed(Box::new(other.to_portable())),
        })
    }

    /// Runs `f` in a Postgres transaction whose commit also records the step: the user's writes
    /// and the checkpoint commit together or not at all. Serialization failures and deadlocks
    /// retry the whole transaction.
    ///
    /// 1 commit; round trips are the user's statements plus 3 (begin, checkpoint, commit).
    ///
    /// # Errors
    /// The closure's error (recorded, after rolling its writes back), [`Error::Cancelled`].
    pub async fn transaction<T, F>(&self, name: &str, mut f: F) -> Result<T, Error>
    where
        T: Serialize + DeserializeOwned,
        F: for<'c> FnMut(&'c mut PgConnection) -> BoxFuture<'c, Result<T, Error>>,
    {
        dbos_store::limits::check_name("step name", name)?;
        let fid = self.next_fid();
        if let Some(r) = self.replay(fid, name)? {
            return self.replay_value(&r);
        }
        self.check_deadline().await?;
        let started = self.clock_ms();
        let op = dbos_store::operations::Op {
            workflow_id: &self.inner.workflow_id,
            owner_xid: &self.inner.owner_xid,
            function_id: fid,
            name,
            started_at_ms: started,
        };
        let mut attempt = 0;
        // The last attempt's COMMIT failed without an answer: it may have committed.
        let mut commit_unknown = false;
        loop {
            attempt += 1;
            let mut conn = self.pool().acquire().await?;
            if commit_unknown {
                if let Some(r) = dbos_store::operations::recorded_by_owner(&mut conn, &op).await? {
                    return self.replay_value(&r);
                }
            }
            let mut tx = conn.begin().await?;
            let span = tracing::info_span!("transaction", name, function_id = fid, attempt);
            let (outcome, touched) =
                tracing::Instrument::instrument(dbos_kernel::prov::capture(f(&mut tx)), span).await;
            let value = match outcome {
                Ok(v) => v,
                Err(Error::Db(e)) if retryable(&e) && attempt < TRANSACTION_ATTEMPTS_MAX => {
                    drop(tx);
                    backoff(attempt).await;
                    continue;
                }
                Err(e) if e.parks() => return Err(e),
                Err(e) => {
                    tx.rollback().await?;
                    let err = Err(Error::Failed(Box::new(e.to_portable())));
                    self.record(self.checkpoint(fid, name, &err, started, self.clock_ms(), None))
                        .await?;
                    return Err(e);
                }
            };
            let output = codec::encode(&value)?;
            if let Err(e) = dbos_store::limits::check_payload("transaction result", &output) {
                // Too large to record: the step fails, its writes rolled back.
                tx.rollback().await?;
                let e = Error::from(e);
                let err = Err(Error::Failed(Box::new(e.to_portable())));
                self.record(self.checkpoint(fid, name, &err, started, self.clock_ms(), None))
                    .await?;
                return Err(e);
            }
            let prov = dbos_kernel::prov::to_json(&touched);
            let written = dbos_store::operations::record_in_transaction(
                &mut tx,
                &op,
                &output,
                prov.as_deref(),
            )
            .await;
            let written = match written {
                Ok(w) => w,
                Err(e) if retryable(&e) && attempt < TRANSACTION_ATTEMPTS_MAX => {
                    drop(tx);
                    backoff(attempt).await;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if !written {
                tx.rollback().await?;
                return Err(self.svc()?.why_not_owner(&self.inner.workflow_id).await);
            }
            match tx.commit().await {
                Ok(()) => {
                    crate::metrics::METRICS
                        .step_seconds
                        .observe((self.clock_ms() - started) as f64 / 1000.0);
                    return Ok(value);
                }
                Err(e) if retryable(&e) && attempt < TRANSACTION_ATTEMPTS_MAX => {
                    commit_unknown = true;
                    backoff(attempt).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Starts a child workflow (default ID `{parent}-{function_id}`), recorded so a replay
    /// re-attaches to the same child. The child inherits this workflow's deadline.
    ///
    /// 1 round trip, 1 commit.
    ///
    /// # Errors
    /// [`Error::NotRegistered`], [`Error::Conflict`], [`Error::Cancelled`].
    pub async fn start_child<I, O>(
        &self,
        name: &str,
        input: I,
        mut opts: StartOptions,
    ) -> Result<WorkflowHandle<O>, Error>
    where
        I: Serialize,
        O: DeserializeOwned,
    {
        let fid = self.next_fid();
        if let Some(r) = self.replay(fid, name)? {
            let child = r.child_workflow_id.ok_or_else(|| Error::Determinism {
                workflow_id: self.inner.workflow_id.clone(),
                function_id: fid,
                called: name.to_owned(),
                recorded: "an operation without a child".into(),
            })?;
            return Ok(WorkflowHandle::new(child, self.svc().ok().cloned()));
        }
        self.check_deadline().await?;
        let id = opts
            .workflow_id
            .take()
            .unwrap_or_else(|| format!("{}-{fid}", self.inner.workflow_id));
        if opts.timeout.is_none() {
            opts.deadline_ms = self.inner.deadline_ms;
        }
        let inputs = codec::encode_input(&input)?;
        self.svc()?
            .start_child(self, fid, name, &id, inputs, &opts)
            .await
    }

    /// Waits for a workflow's result, recorded so a replay returns the same outcome.
    ///
    /// # Errors
    /// The awaited workflow's error, or this workflow's cancellation.
    pub async fn result_of<O>(&self, handle: WorkflowHandle<O>) -> Result<O, Error>
    where
        O: Serialize + DeserializeOwned,
    {
        let name = "DBOS.getResult";
        let fid = self.next_fid();
        if let Some(r) = self.replay(fid, name)? {
            return self.replay_value(&r);
        }
        let started = self.clock_ms();
        let child = handle.workflow_id().to_owned();
        let result = handle.result().await;
        let text = match &result {
            Ok(v) => Ok(codec::encode(v)?),
            Err(Error::Failed(p)) => Err(Error::Failed(p.clone())),
            // Waiting failed here (the database, a shutdown): not the child's outcome.
            Err(e) if e.fate() == Fate::Release => return result,
            // The child's own end — cancelled, dead-lettered — is an ordinary error for the
            // parent, which ends in ERROR unless it handles it.
            Err(Error::Cancelled(id)) => Err(Error::Failed(Box::new(PortableError {
                name: "DBOSAwaitedWorkflowCancelledError".into(),
                message: format!("awaited workflow {id} was cancelled"),
                code: None,
                data: None,
            }))),
            Err(e) => Err(Error::Failed(Box::new(e.to_portable()))),
        };
        self.record(self.checkpoint(fid, name, &text, started, self.clock_ms(), Some(child)))
            .await?;
        match (result, text) {
            (Ok(v), _) => Ok(v),
            (Err(_), Err(recorded)) => Err(recorded),
            (Err(e), Ok(_)) => Err(e),
        }
    }

    /// Starts a child workflow and waits for its result.
    ///
    /// # Errors
    /// As [`Context::start_child`] and [`Context::result_of`].
    pub async fn run_child<I, O>(&self, name: &str, input: I) -> Result<O, Error>
    where
        I: Serialize,
        O: Serialize + DeserializeOwned,
    {
        let h = self
            .start_child(name, input, StartOptions::default())
            .await?;
        self.result_of(h).await
    }

    /// Sleeps durably: the wake-up time is recorded before sleeping, so a recovered workflow
    /// sleeps only for what is left.
    ///
    /// # Errors
    /// [`Error::Cancelled`], or a database error recording the wake-up time.
    pub async fn sleep(&self, duration: Duration) -> Result<(), Error> {
        let fid = self.next_fid();
        let Ok(svc) = self.svc() else {
            // A replay does not wait.
            return self.timer(fid, duration).await.map(|_| ());
        };
        // A cancellation wakes the sleep early; registered first, so a cancel that commits
        // while the timer is being recorded is not missed.
        let mut cancelled = svc
            .messages()
            .waiters()
            .register(dbos_msg::Channel::Cancel, self.inner.workflow_id.clone());
        let end_ms = self.timer(fid, duration).await?;
        self.idle(Box::pin(async {
            loop {
                let left = end_ms - self.clock_ms();
                if left <= 0 {
                    return Ok(());
                }
                let until = tokio::time::Instant::now() + Duration::from_millis(left as u64);
                if let dbos_msg::Woke::Key(_) = cancelled.wait(Some(until)).await {
                    self.stop_if_cancelled().await?;
                }
            }
        }))
        .await
    }

    /// Runs `wait` with this execution's node slot given back, so the node can run other work
    /// while this one waits for a message, an event or a timer; takes a slot again before
    /// going on. A replay, or an execution on its parent's slot, just waits.
    ///
    /// The wait comes boxed: passed down by value, it would be held again in each future on
    /// the way, for as long as it waits.
    pub(super) async fn idle<F: Future>(&self, wait: std::pin::Pin<Box<F>>) -> F::Output {
        match self.inner.slot.get() {
            Some(slot) => slot.idle(wait).await,
            None => wait.await,
        }
    }

    /// The wake-up time (epoch ms) of a durable timer at `fid`: recorded as `DBOS.sleep` on
    /// first execution, read back on replay, so a recovered wait only waits for what is left.
    pub(super) async fn timer(&self, fid: i32, duration: Duration) -> Result<i64, Error> {
        let (end, record) = self.plan_timer(fid, duration).await?;
        if let Some(c) = record {
            self.record(c).await?;
        }
        Ok(end)
    }

    /// The wake-up time of the timer at `fid`, and the checkpoint that records it when it is
    /// new (the caller writes it, possibly while it already waits).
    pub(super) async fn plan_timer(
        &self,
        fid: i32,
        duration: Duration,
    ) -> Result<(i64, Option<Checkpoint>), Error> {
        let name = "DBOS.sleep";
        if let Some(r) = self.replay(fid, name)? {
            let secs: f64 = codec::decode(r.output.as_deref().unwrap_or("0"))?;
            return Ok(((secs * 1000.0) as i64, None));
        }
        self.check_deadline().await?;
        let now = self.clock_ms();
        let end = now.saturating_add(duration.as_millis().min(i64::MAX as u128) as i64);
        let secs = end as f64 / 1000.0;
        let c = self.checkpoint(fid, name, &Ok(codec::encode(&secs)?), now, end, None);
        Ok((end, Some(c)))
    }

    /// The current time in milliseconds since the epoch, recorded: a replay sees the same value.
    ///
    /// # Errors
    /// As [`Context::step`].
    pub async fn now_ms(&self) -> Result<i64, Error> {
        self.step("DBOS.now", || {
            let now = self.clock_ms();
            async move { Ok(now) }
        })
        .await
    }

    /// A random 64-bit value, recorded: a replay sees the same value.
    ///
    /// # Errors
    /// As [`Context::step`].
    pub async fn random(&self) -> Result<u64, Error> {
        self.step("DBOS.random", || async { Ok(rand::random::<u64>()) })
            .await
    }

    /// Patching: `true` in executions that started after the patch was deployed (the new code
    /// path), `false` in older ones replaying a history recorded without it.
    ///
    /// # Errors
    /// A database error recording the patch marker.
    pub async fn patch(&self, patch_name: &str) -> Result<bool, Error> {
        let name = format!("DBOS.patch-{patch_name}");
        let fid = self.inner.next_fid.load(Ordering::SeqCst) + 1;
        let rec = self.inner.recorded.lock().get(&fid).cloned();
        match rec {
            Some(r) if r.function_name == name => {
                self.inner.next_fid.fetch_add(1, Ordering::SeqCst);
                Ok(true)
            }
            Some(_) => Ok(false),
            None if self.is_replay() => {
                self.inner.next_fid.fetch_add(1, Ordering::SeqCst);
                let err = self.unrecorded(fid, &name);
                if let Some(log) = self.replay_log() {
                    log.stop(fid, &name, &err);
                }
                Err(err)
            }
            None => {
                self.inner.next_fid.fetch_add(1, Ordering::SeqCst);
                let now = self.clock_ms();
                let mut c = self.checkpoint(fid, &name, &Ok(String::new()), now, now, None);
                c.output = None;
                self.record(c).await?;
                Ok(true)
            }
        }
    }

    /// Retires a patch once no execution without it remains: always `true`; skips the patch
    /// marker where one was recorded.
    pub fn deprecate_patch(&self, patch_name: &str) -> bool {
        let name = format!("DBOS.patch-{patch_name}");
        let fid = self.inner.next_fid.load(Ordering::SeqCst) + 1;
        let marked = self
            .inner
            .recorded
            .lock()
            .get(&fid)
            .is_some_and(|r| r.function_name == name);
        if marked {
            self.inner.next_fid.fetch_add(1, Ordering::SeqCst);
        }
        true
    }
}

/// What a replay answers where only a live execution can go on.
fn not_live() -> Error {
    Error::Invalid("a replay runs nothing live: this operation is not recorded".into())
}

/// Whether a transaction step that failed with `e` is simply run again: its writes were rolled
/// back, and the failure may pass (a conflict, a lost connection, a restart).
fn retryable(e: &sqlx::Error) -> bool {
    dbos_kernel::sqlstate::is_transient(e)
}

async fn backoff(attempt: u32) {
    let ms = (1.5f64.powi(attempt as i32)).min(2_000.0) as u64;
    tokio::time::sleep(Duration::from_millis(ms)).await;
}
