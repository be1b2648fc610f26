//! The workflow service: registry, start, enqueue, dispatch, recovery and execution.

use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::atomic::AtomicI32;
use std::sync::Arc;
use std::time::Duration;

use dbos_kernel::db::retry_transient;
use dbos_kernel::{Kernel, Phase, Runtime, SharedClock};
use dbos_scheduler::{Claimed, ExecuteError, Executor};
use dbos_store::batch::{Checkpoint, Enqueue, Outcome, Start};
use dbos_store::operations::Recorded;
use dbos_store::{workflows, Status};
use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tokio::sync::Notify;

use super::announce::Announcer;
use super::codec;
use super::committer::Committer;
use super::ctx::{Context, CtxInner, Mode};
use super::error::{Error, Fate};
use super::manage;

pub use dbos_store::{ENQUEUE_CHANNEL, INTERNAL_QUEUE, OUTCOME_CHANNEL};

/// First pause before retrying a write the database refused for a transient reason.
const RETRY_PAUSE_MS_MIN: u64 = 50;
/// Longest pause between such retries.
const RETRY_PAUSE_MS_MAX: u64 = 5_000;

/// Options of the workflow service; every limit has a default.
#[derive(Clone, Debug)]
pub struct Options {
    /// Application version; derived from the registered workflow names when `None`
    /// (see [`Registry::version`]).
    pub app_version: Option<String>,
    /// Checkpoints and outcomes written in one statement at most.
    pub checkpoint_batch_max: usize,
    /// Checkpoint batches being committed at once; the group commit has this many connections
    /// of its own, beside the node's pool. Two keep one batch executing while the one before it
    /// is flushed; more make smaller batches, each with its own commit, and on a server with few
    /// cores cost more CPU per workflow than the overlap saves.
    pub checkpoint_batches_in_flight_max: usize,
    /// The dispatcher: claim batches, poll interval.
    pub scheduler: dbos_scheduler::Options,
    /// Limits of messaging (send/recv, events, streams, topics).
    pub msg: dbos_msg::Options,
    /// Pause between retention sweeps (at least 1 ms, as messaging's `sweep_interval_ms`):
    /// of provenance older than `prov.config.retention`, and of the ended workflows that
    /// `sched.workflow_retention` no longer keeps.
    pub retention_sweep_interval: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            app_version: std::env::var("DBOS__APPVERSION")
                .ok()
                .filter(|v| !v.is_empty()),
            checkpoint_batch_max: 512,
            checkpoint_batches_in_flight_max: 2,
            scheduler: dbos_scheduler::Options::default(),
            msg: dbos_msg::Options::default(),
            retention_sweep_interval: Duration::from_secs(60),
        }
    }
}

pub(crate) type ErasedFn =
    Arc<dyn Fn(Context, String) -> BoxFuture<'static, Result<String, Error>> + Send + Sync>;

/// The workflow functions a node can run, by name.
#[derive(Clone, Default)]
pub struct Registry {
    fns: HashMap<String, ErasedFn>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.fns.keys()).finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Registers a workflow function. Its input is a tuple of positional arguments (`(x,)` for
    /// one, `()` for none); input and output travel as `portable_json`.
    pub fn register<I, O, F, Fut>(&mut self, name: &str, f: F) -> &mut Registry
    where
        I: DeserializeOwned + Send + 'static,
        O: Serialize + Send + 'static,
        F: Fn(Context, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, Error>> + Send + 'static,
    {
        let f = Arc::new(f);
        let erased: ErasedFn = Arc::new(move |ctx, input| {
            let f = f.clone();
            Box::pin(async move {
                let input: I = codec::decode_input(&input)?;
                let out = f(ctx, input).await?;
                codec::encode(&out)
            })
        });
        self.fns.insert(name.to_owned(), erased);
        self
    }

    /// Adds every workflow of `other`; one of the same name replaces this registry's.
    pub fn merge(&mut self, other: Registry) -> &mut Registry {
        self.fns.extend(other.fns);
        self
    }

    /// The function registered as `name`.
    pub(crate) fn function(&self, name: &str) -> Option<ErasedFn> {
        self.fns.get(name).cloned()
    }

    /// Names of the registered workflows, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.fns.keys().cloned().collect();
        names.sort();
        names
    }

    /// The default application version: the first 32 hex digits of SHA-256 over this crate's
    /// version and the sorted registered workflow names, one per line. Nodes running the same
    /// set of workflows share a version; adding, removing or renaming one changes it. Set
    /// `DBOS__APPVERSION` (or [`Options::app_version`]) to version by code instead.
    pub fn version(&self) -> String {
        let mut h = Sha256::new();
        h.update(env!("CARGO_PKG_VERSION").as_bytes());
        for n in self.names() {
            h.update(b"\n");
            h.update(n.as_bytes());
        }
        hex::encode(h.finalize())[..32].to_owned()
    }
}

/// Options of one start or enqueue.
#[derive(Clone, Debug, Default)]
pub struct StartOptions {
    /// Workflow ID; a fresh UUID when `None`.
    pub workflow_id: Option<String>,
    /// Start-to-close timeout; the deadline is set at start (direct) or claim (queued).
    pub timeout: Option<Duration>,
    /// Absolute deadline (epoch ms), e.g. inherited from a parent.
    pub deadline_ms: Option<i64>,
    /// Queue priority: lower runs earlier; 0 is the default and highest.
    pub priority: i32,
    /// Deduplication ID within the queue.
    pub deduplication_id: Option<String>,
    /// Enqueue as DELAYED; the workflow becomes ENQUEUED after this long.
    pub delay: Option<Duration>,
    /// Partition of a partitioned queue (required by one, refused by others).
    pub partition_key: Option<String>,
}

/// The workflow service. Cheap to clone.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    runtime: Runtime,
    clock: SharedClock,
    executor_id: String,
    app_version: String,
    registry: Registry,
    committer: Committer,
    /// Announces enqueues and queued outcomes after they commit.
    announcer: Announcer,
    messages: dbos_msg::Client,
    /// Wakes result waiters when a local execution ends.
    done: Mutex<HashMap<String, Arc<Completion>>>,
    /// The dispatcher of this node, set once it started.
    dispatcher: std::sync::OnceLock<dbos_scheduler::Handle>,
    /// Cancelled when the node begins to shut down: retries give up then.
    stopping: dbos_kernel::CancellationToken,
    /// The node's lease, checked before every step.
    lease: dbos_kernel::Lease,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("executor_id", &self.inner.executor_id)
            .field("app_version", &self.inner.app_version)
            .field("registry", &self.inner.registry)
            .finish()
    }
}

/// A started workflow.
pub struct WorkflowHandle<O> {
    id: String,
    /// None in a replay, where only the ID is of use.
    svc: Option<Service>,
    /// The wait [`Service::enqueue`] registered before its enqueue committed, for the first
    /// `result` of this handle or its clones.
    pre: Option<Arc<Mutex<Option<Prewatch>>>>,
    _out: PhantomData<fn() -> O>,
}

/// A wait for a workflow's end registered on this node: its completion (which an execution
/// here finishes), and the notifications of its outcome and of a cancel. Made by
/// [`Service::enqueue`] before the workflow can end, a `result` that starts from it has missed
/// nothing and need not ask the database first. Dropped, it takes its completion entry back
/// unless an execution here or another waiter still holds it.
struct Prewatch {
    svc: Service,
    id: String,
    completion: Arc<Completion>,
    watches: Option<(dbos_msg::Watch, dbos_msg::Watch)>,
}

/// How a wait for a workflow's end begins on this node.
enum Waiting {
    /// Its completion was registered already: it runs here, or another call waits.
    Joined(Arc<Completion>),
    /// A new registration.
    Registered(Prewatch),
}

impl Drop for Prewatch {
    fn drop(&mut self) {
        let mut done = self.svc.inner.done.lock();
        if done.get(&self.id).is_some_and(|c| {
            Arc::ptr_eq(c, &self.completion) && Arc::strong_count(&self.completion) == 2
        }) {
            done.remove(&self.id);
        }
    }
}

impl<O> std::fmt::Debug for WorkflowHandle<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkflowHandle")
            .field("id", &self.id)
            .finish()
    }
}

impl<O> Clone for WorkflowHandle<O> {
    fn clone(&self) -> Self {
        WorkflowHandle {
            id: self.id.clone(),
            svc: self.svc.clone(),
            pre: self.pre.clone(),
            _out: PhantomData,
        }
    }
}

/// Where a local execution hands its recorded outcome to waiters on this node.
#[derive(Default)]
struct Completion {
    notify: Notify,
    /// Whether this node is running the workflow now: its waiters need not ask the database.
    here: std::sync::atomic::AtomicBool,
    /// The outcome as recorded: `Ok(output)` or `Err(error)`, both portable JSON text.
    outcome: std::sync::OnceLock<Result<String, String>>,
}

impl<O> WorkflowHandle<O> {
    pub(crate) fn new(id: String, svc: Option<Service>) -> Self {
        WorkflowHandle {
            id,
            svc,
            pre: None,
            _out: PhantomData,
        }
    }

    fn svc(&self) -> Result<&Service, Error> {
        self.svc.as_ref().ok_or_else(|| {
            Error::Invalid(format!(
                "workflow {}: a handle from a replay cannot wait for a result",
                self.id
            ))
        })
    }
}

impl<O: DeserializeOwned> WorkflowHandle<O> {
    /// The workflow's ID.
    pub fn workflow_id(&self) -> &str {
        &self.id
    }

    /// Waits up to `timeout` for the workflow to end and returns its output, or its recorded
    /// error. The workflow goes on when the wait times out.
    ///
    /// # Errors
    /// As [`WorkflowHandle::result`]; [`Error::Timeout`] when it has not ended in time.
    pub async fn result_within(&self, timeout: Duration) -> Result<O, Error> {
        match tokio::time::timeout(timeout, self.result()).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout {
                workflow_id: self.id.clone(),
                waited_ms: timeout.as_millis() as u64,
            }),
        }
    }

    /// Waits until the workflow ends and returns its output, or its recorded error.
    ///
    /// Woken at once when this node finishes the workflow, or by the notification of a queued
    /// workflow's outcome or of a cancel; otherwise polls `workflow_status` ⟕ `workflow_output`
    /// (1 round trip each) with a growing pause.
    ///
    /// # Errors
    /// The workflow's error, [`Error::Cancelled`], [`Error::MaxRecoveryAttemptsExceeded`],
    /// [`Error::NotFound`].
    pub async fn result(&self) -> Result<O, Error> {
        let svc = self.svc()?;
        // Registered by `enqueue` before the workflow could end: nothing can have been missed.
        let (mut registered, skip_db) = match self.pre.as_ref().and_then(|p| p.lock().take()) {
            Some(r) => (r, true),
            None => match svc.completion(&self.id) {
                // It runs here, or another call waits: this node's execution says when it ends.
                Waiting::Joined(c) => return self.wait(&c, true, None).await,
                Waiting::Registered(r) => (r, false),
            },
        };
        let watches = registered.watches.take();
        // `registered` takes its entry back when this call ends, however it ends.
        self.wait(&registered.completion, skip_db, watches).await
    }

    /// Waits on `completion`, asking the database first unless `skip_db`; `watches` are the
    /// outcome and cancel notifications registered beforehand, if any.
    async fn wait(
        &self,
        completion: &Completion,
        mut skip_db: bool,
        watches: Option<(dbos_msg::Watch, dbos_msg::Watch)>,
    ) -> Result<O, Error> {
        let svc = self.svc()?;
        // Registered before the first look: an outcome or cancel notified after it wakes us.
        let (mut ended, mut cancelled) = watches.unwrap_or_else(|| svc.watch_end(&self.id));
        let mut pause = Duration::from_millis(5);
        let started = std::time::Instant::now();
        loop {
            let notified = completion.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match completion.outcome.get() {
                Some(Ok(o)) => return codec::decode(o),
                Some(Err(e)) => return Err(Error::Failed(Box::new(codec::decode_error(e)))),
                None => {}
            }
            // A workflow running here announces its end; otherwise (or when its execution
            // parked without an outcome) the database says.
            if !skip_db {
                let o = match workflows::outcome(&svc.inner.pool, &self.id).await {
                    Ok(o) => Some(o),
                    // A lost connection or a restarting server: asked again after the pause.
                    Err(e) if e.is_transient() => {
                        tracing::debug!(workflow_id = %self.id, error = %e, "reading an outcome failed; asking again");
                        None
                    }
                    Err(e) => return Err(e.into()),
                };
                if let Some(o) = o {
                    match o.status {
                        Status::Success => {
                            return codec::decode(o.output.as_deref().unwrap_or("null"))
                        }
                        Status::Error => {
                            return Err(Error::Failed(Box::new(codec::decode_error(
                                o.error.as_deref().unwrap_or("unknown error"),
                            ))))
                        }
                        Status::Cancelled => return Err(Error::Cancelled(self.id.clone())),
                        Status::MaxRecoveryAttemptsExceeded => {
                            return Err(Error::MaxRecoveryAttemptsExceeded(self.id.clone()))
                        }
                        // A queued workflow's outcome and any cancel notify: the database is
                        // asked again only now and then, for other ways of ending.
                        Status::Enqueued | Status::Delayed => {
                            pause = pause.max(Duration::from_millis(ENQUEUED_RECHECK_MS));
                        }
                        Status::Pending => {}
                    }
                }
            }
            let (woken, told) = tokio::select! {
                () = &mut notified => (true, false),
                () = ended.changed() => (false, true),
                () = cancelled.changed() => (false, true),
                () = tokio::time::sleep(pause) => (false, false),
            };
            // A workflow this node claimed since announces its end too. Past a second, the
            // database is asked as well, in case the execution ended abnormally.
            let here = completion.here.load(std::sync::atomic::Ordering::Acquire);
            skip_db =
                (skip_db || here) && !woken && !told && started.elapsed() < Duration::from_secs(1);
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }
}

/// First pause before asking the database again about a workflow still waiting in its queue:
/// its outcome notifies, so the database is asked only for other ways of ending.
const ENQUEUED_RECHECK_MS: u64 = 100;

impl Service {
    /// Starts the service on a booted node: registers the application version, re-enqueues
    /// this node's (and its crashed predecessors') PENDING workflows of this version, and starts
    /// the scheduler's dispatcher, which claims enqueued workflows this node has code for and
    /// runs them here. Its loops (group committer, dispatcher, cron, topic retention) run on the
    /// kernel's supervised loops and stop in the kernel's shutdown order.
    ///
    /// # Errors
    /// Database errors.
    pub async fn launch(
        kernel: &Kernel,
        registry: Registry,
        opts: Options,
    ) -> Result<Service, Error> {
        let app_version = opts
            .app_version
            .clone()
            .unwrap_or_else(|| registry.version());
        let pool = kernel.pool().clone();
        let announcer = Announcer::start(kernel.loops(), pool.clone());
        // The group commit's batches run on connections of their own, as many as may be in
        // flight and kept between batches: always the same few backends, with their plans and
        // caches warm.
        let committer = Committer::start(
            kernel.loops(),
            kernel
                .endpoint()
                .kept(opts.checkpoint_batches_in_flight_max.min(u32::MAX as usize) as u32),
            opts.checkpoint_batch_max,
            opts.checkpoint_batches_in_flight_max,
            kernel.node_id().to_owned(),
            app_version.clone(),
            announcer.clone(),
        );
        let waiters =
            dbos_msg::Waiters::start(kernel.notifier(), opts.msg.recheck_interval_ms).await?;
        // Sends, publishes and the probes of waiting reads run on connections of their own,
        // kept between statements, so they stay on a few warm backends.
        let messages = dbos_msg::Client::new(pool.clone(), waiters, opts.msg.clone())
            .with_hot(kernel.endpoint().kept(opts.msg.hot_connections_max.max(1)));
        let sweeper = messages.clone();
        kernel
            .loops()
            .spawn("msg-retention", Phase::Claim, move |stop| {
                let m = sweeper.clone();
                async move {
                    m.run_sweeper(stop).await;
                    Ok::<(), Error>(())
                }
            });
        let sweep_pool = pool.clone();
        let sweep_pause = opts.retention_sweep_interval.max(Duration::from_millis(1));
        kernel
            .loops()
            .spawn("retention", Phase::Claim, move |stop| {
                let pool = sweep_pool.clone();
                async move {
                    sweep_retention(&pool, sweep_pause, stop).await;
                    Ok::<(), Error>(())
                }
            });
        let svc = Service {
            inner: Arc::new(Inner {
                pool,
                runtime: kernel.runtime().clone(),
                clock: kernel.clock().clone(),
                executor_id: kernel.node_id().to_owned(),
                app_version,
                registry,
                committer,
                announcer,
                messages,
                done: Mutex::new(HashMap::new()),
                dispatcher: std::sync::OnceLock::new(),
                stopping: kernel.shutdown_token(),
                lease: kernel.lease().clone(),
            }),
        };
        // Statements that may run again, retried while the server restarts.
        let budget = kernel.config().connect_retry_ms_max;
        let transient = dbos_store::Error::is_transient;
        let (pool, version) = (&svc.inner.pool, &svc.inner.app_version);
        retry_transient("registering the version", budget, transient, || {
            dbos_store::workflows::register_version(pool, version)
        })
        .await?;
        let mut executors = vec![svc.inner.executor_id.clone()];
        executors.extend(kernel.replaced_nodes().iter().cloned());
        let recovered = retry_transient("recovering this node's work", budget, transient, || {
            workflows::release_executors(pool, &executors, version)
        })
        .await?;
        if recovered > 0 {
            tracing::info!(recovered, "re-enqueued pending workflows for recovery");
        }
        let handle =
            dbos_scheduler::dispatch::start(kernel, Arc::new(svc.clone()), opts.scheduler).await?;
        let _ = svc.inner.dispatcher.set(handle);
        Ok(svc)
    }

    pub(crate) fn committer(&self) -> &Committer {
        &self.inner.committer
    }

    /// This node's executor id.
    pub fn executor_id(&self) -> &str {
        &self.inner.executor_id
    }

    /// Messaging for code outside workflows (send, events, streams, topics).
    pub fn messages(&self) -> &dbos_msg::Client {
        &self.inner.messages
    }

    /// The application version this node runs.
    pub fn app_version(&self) -> &str {
        &self.inner.app_version
    }

    /// A handle to an existing workflow.
    pub fn handle<O>(&self, workflow_id: impl Into<String>) -> WorkflowHandle<O> {
        WorkflowHandle::new(workflow_id.into(), Some(self.clone()))
    }

    /// Re-enqueues the PENDING workflows of these executors (gone nodes) at this application
    /// version on their queue (or the internal one). This node's own executions are never
    /// released while it lives: its own ID in `executors` is skipped. Returns how many.
    ///
    /// 1 round trip, 1 commit.
    ///
    /// # Errors
    /// Database errors.
    pub async fn recover(&self, executors: &[String]) -> Result<u64, Error> {
        let others: Vec<String> = executors
            .iter()
            .filter(|e| **e != self.inner.executor_id)
            .cloned()
            .collect();
        let n = workflows::release_executors(&self.inner.pool, &others, &self.inner.app_version)
            .await?;
        if n > 0 {
            self.wake();
        }
        Ok(n)
    }

    /// Starts a workflow on this node and returns its handle. An existing ID returns the
    /// existing workflow (which is not run again); an ID used by another function is an error.
    ///
    /// 1 round trip, 1 commit.
    ///
    /// # Errors
    /// [`Error::NotRegistered`], [`Error::Conflict`], [`Error::Invalid`].
    pub async fn start<I, O>(
        &self,
        name: &str,
        input: I,
        opts: StartOptions,
    ) -> Result<WorkflowHandle<O>, Error>
    where
        I: Serialize,
    {
        let f = self.function(name)?;
        let inputs = codec::encode_input(&input)?;
        let id = workflow_id(opts.workflow_id.clone())?;
        let xid = uuid::Uuid::new_v4().to_string();
        let deadline = self.deadline(&opts);
        let started = self
            .inner
            .committer
            .start_workflow(Start {
                workflow_id: id.clone(),
                name: name.to_owned(),
                xid: xid.clone(),
                timeout_ms: opts.timeout.map(|t| t.as_millis() as i64),
                deadline_ms: deadline,
                priority: opts.priority,
                inputs: inputs.clone(),
            })
            .await?;
        if !started.created {
            return self.existing(id, started.name, name);
        }
        self.execute(
            f,
            Execution::fresh(id.clone(), name, xid, inputs, deadline),
            Slot::Own,
        )
        .await?;
        Ok(self.handle(id))
    }

    /// Starts a workflow and waits for its result.
    ///
    /// # Errors
    /// As [`Service::start`] and [`WorkflowHandle::result`].
    pub async fn run<I, O>(&self, name: &str, input: I, opts: StartOptions) -> Result<O, Error>
    where
        I: Serialize,
        O: DeserializeOwned,
    {
        self.start::<I, O>(name, input, opts).await?.result().await
    }

    /// Enqueues a workflow on a queue; a node with the workflow's code claims and runs it. When
    /// this node has the code and a free slot, and the queue would let any node take the
    /// workflow now (no limit, no placement rule, no partitions, not paused, nothing waiting),
    /// the enqueue itself claims it for this node, which runs it at once.
    ///
    /// 1 round trip, 1 commit (which also wakes idle nodes when the workflow waits).
    ///
    /// # Errors
    /// [`Error::Conflict`], or [`Error::Invalid`] for a duplicate deduplication ID.
    pub async fn enqueue<I, O>(
        &self,
        queue: &str,
        name: &str,
        input: I,
        opts: StartOptions,
    ) -> Result<WorkflowHandle<O>, Error>
    where
        I: Serialize,
    {
        let inputs = codec::encode_input(&input)?;
        let id = workflow_id(opts.workflow_id.clone())?;
        if queue.is_empty() {
            return Err(Error::Invalid("queue name cannot be empty".into()));
        }
        if opts.priority < 0 {
            return Err(Error::Invalid(format!(
                "priority must be between 0 and {}, got {}",
                i32::MAX,
                opts.priority
            )));
        }
        let delay_until_ms = opts.delay.map(|d| self.now_ms() + d.as_millis() as i64);
        // The trace it is enqueued in goes with it, to whichever node runs it.
        let traced = crate::telemetry::current_traceparent()
            .map(|t| serde_json::json!({ crate::telemetry::TRACEPARENT: t }));
        // Whoever waits for it through the handle misses nothing from here on.
        let pre = match self.completion(&id) {
            Waiting::Registered(r) => Some(r),
            Waiting::Joined(_) => None,
        };
        // Through the group committer: concurrent enqueues share a statement and a commit.
        // On a node that has the function and a free slot, the enqueue claims the workflow
        // for this node when its queue would let any node take it now: it starts without a
        // claim round, as a direct start does.
        let here = self.run_here(name, &opts);
        // Its input again, to run it here if the statement claims it.
        let kept = here.as_ref().map(|_| inputs.clone());
        let mut e = Enqueue::new(id.clone(), name, queue, inputs);
        e.timeout_ms = opts.timeout.map(|t| t.as_millis() as i64);
        e.deadline_ms = opts.deadline_ms;
        e.priority = opts.priority;
        e.deduplication_id = opts.deduplication_id.clone();
        e.delay_until_ms = delay_until_ms;
        e.partition_key = opts.partition_key.clone();
        e.attributes = traced;
        e.here = here.as_ref().map(|h| h.here);
        let xid = e.xid().to_owned();
        let created = self.inner.committer.enqueue(e).await?;
        if !created.created {
            return self.existing(id, created.name, name);
        }
        match here.zip(kept).filter(|_| created.claimed) {
            Some((h, inputs)) => {
                let run =
                    Execution::fresh(id.clone(), name, xid.clone(), inputs, h.here.deadline_ms);
                crate::metrics::METRICS
                    .claims
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Err(e) = self.execute(h.f, run, Slot::Reserved(h.slot)).await {
                    // Never left PENDING here unrun: another node takes it.
                    self.release(&id, &xid).await;
                    return Err(e);
                }
            }
            None => {
                // Idle nodes learn of it with the other enqueues of the moment (see
                // `announce`).
                self.inner
                    .announcer
                    .announce(ENQUEUE_CHANNEL, queue.to_owned());
                match delay_until_ms {
                    Some(until) => self.dispatcher().delayed_until(until),
                    None => self.wake(),
                }
            }
        }
        let mut handle = self.handle(id);
        handle.pre = pre.map(|p| Arc::new(Mutex::new(Some(p))));
        Ok(handle)
    }

    /// The notifications of `id`'s outcome and of a cancel.
    fn watch_end(&self, id: &str) -> (dbos_msg::Watch, dbos_msg::Watch) {
        let waiters = self.inner.messages.waiters();
        (
            waiters.watch(dbos_msg::Channel::Outcome, id.to_owned()),
            waiters.watch(dbos_msg::Channel::Cancel, id.to_owned()),
        )
    }

    /// The completion of `id` already registered on this node (it runs here, or someone
    /// waits), or else a new registration of a wait for it.
    fn completion(&self, id: &str) -> Waiting {
        let completion = {
            let mut done = self.inner.done.lock();
            if let Some(c) = done.get(id) {
                return Waiting::Joined(c.clone());
            }
            let c = Arc::new(Completion::default());
            done.insert(id.to_owned(), c.clone());
            c
        };
        Waiting::Registered(Prewatch {
            svc: self.clone(),
            id: id.to_owned(),
            completion,
            watches: Some(self.watch_end(id)),
        })
    }

    fn existing<O>(
        &self,
        id: String,
        existing: Option<String>,
        name: &str,
    ) -> Result<WorkflowHandle<O>, Error> {
        match existing {
            Some(e) if e != name => Err(Error::Conflict {
                id,
                existing: e,
                requested: name.to_owned(),
            }),
            _ => Ok(self.handle(id)),
        }
    }

    /// Whether an enqueue of `name` may claim its workflow for this node (the queue decides
    /// the rest in the enqueue's statement): the node has the function, holds its lease, and
    /// has a slot free, which is reserved for the workflow until the returned value is dropped.
    fn run_here(&self, name: &str, opts: &StartOptions) -> Option<RunHere> {
        if opts.delay.is_some() || opts.partition_key.is_some() || !self.inner.lease.is_held() {
            return None;
        }
        let f = self.function(name).ok()?;
        let slot = self.inner.runtime.reserve()?;
        Some(RunHere {
            f,
            here: dbos_store::workflows::Here {
                deadline_ms: self.deadline(opts),
            },
            slot,
        })
    }

    fn function(&self, name: &str) -> Result<ErasedFn, Error> {
        self.inner
            .registry
            .function(name)
            .ok_or_else(|| Error::NotRegistered(name.to_owned()))
    }

    /// Starts a child from a workflow: the child's row, its input and the parent's record of
    /// it in one statement.
    pub(crate) async fn start_child<O>(
        &self,
        parent: &Context,
        fid: i32,
        name: &str,
        id: &str,
        inputs: String,
        opts: &StartOptions,
    ) -> Result<WorkflowHandle<O>, Error> {
        let f = self.function(name)?;
        let xid = uuid::Uuid::new_v4().to_string();
        let deadline = self.deadline(opts);
        let started = workflows::start_child(
            &self.inner.pool,
            &workflows::StartChild {
                parent_id: parent.workflow_id(),
                parent_owner_xid: &parent.inner.owner_xid,
                function_id: fid,
                workflow_id: id,
                name,
                executor_id: &self.inner.executor_id,
                app_version: &self.inner.app_version,
                owner_xid: &xid,
                timeout_ms: opts.timeout.map(|t| t.as_millis() as i64),
                deadline_ms: deadline,
                priority: opts.priority,
                inputs: &inputs,
                started_at_ms: self.now_ms(),
            },
        )
        .await?;
        let Some(started) = started else {
            return Err(self.why_not_owner(parent.workflow_id()).await);
        };
        if !started.created {
            return self.existing(id.to_owned(), started.name, name);
        }
        self.execute(
            f,
            Execution::fresh(id.to_owned(), name, xid, inputs, deadline),
            Slot::Parent,
        )
        .await?;
        Ok(self.handle(id.to_owned()))
    }

    /// Runs a workflow this node owns, on a task slot.
    async fn execute(&self, f: ErasedFn, run: Execution, slot: Slot) -> Result<(), Error> {
        let Execution {
            id,
            name,
            owner_xid,
            inputs,
            recorded,
            deadline_ms,
        } = run;
        // A span per execution: a child of the caller's span for a start here, of the claim's
        // (in the enqueuer's trace) for a claimed workflow.
        let span = tracing::info_span!(
            "workflow",
            workflow_id = %id,
            name = %name,
            node = %self.inner.executor_id,
            recovered = !recorded.is_empty(),
        );

        let ctx = Context {
            inner: Arc::new(CtxInner {
                mode: Mode::Live {
                    svc: self.clone(),
                    cancel: Mutex::new(
                        self.inner
                            .messages
                            .waiters()
                            .watch(dbos_msg::Channel::Cancel, id.clone()),
                    ),
                    mailboxes: Mutex::default(),
                },
                pool: self.inner.pool.clone(),
                workflow_id: id.clone(),
                owner_xid: owner_xid.clone(),
                next_fid: AtomicI32::new(0),
                recorded: Mutex::new(recorded),
                deadline_ms,
                pending: Mutex::new(None),
                slot: std::sync::OnceLock::new(),
            }),
        };
        crate::metrics::METRICS
            .executions_started
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Waiters on this node learn the outcome without asking the database.
        self.inner
            .done
            .lock()
            .entry(id.clone())
            .or_insert_with(|| Arc::new(Completion::default()))
            .here
            .store(true, std::sync::atomic::Ordering::Release);
        let svc = self.clone();
        let task_id = id.clone();
        let task = move |task: dbos_kernel::TaskCtx| {
            let _ = ctx.inner.slot.set(task.slot().clone());
            tracing::Instrument::instrument(
                async move {
                    let last = ctx.clone();
                    let run = run_guarded(f, ctx, inputs);
                    let result = match deadline_ms {
                        // At the deadline the workflow is cancelled in the database (waking its
                        // waits); the run notices at its next step boundary.
                        Some(d) => {
                            tokio::pin!(run);
                            let left = (d - svc.now_ms()).max(0) as u64;
                            tokio::select! {
                                r = &mut run => r,
                                () = tokio::time::sleep(Duration::from_millis(left)) => {
                                    if let Err(e) = workflows::cancel_expired(&svc.inner.pool, Some(&id)).await {
                                        tracing::warn!(workflow_id = %id, error = %e, "could not cancel at the deadline; the sweep will");
                                    }
                                    run.await
                                }
                            }
                        }
                        None => run.await,
                    };
                    // Boxed: the task's future would otherwise be as large as the outcome's
                    // write for the whole life of the workflow.
                    Box::pin(svc.finish(&id, &owner_xid, last.take_pending(), result)).await;
                },
                span,
            )
        };
        match slot {
            Slot::Own => {
                self.inner.runtime.spawn(task_id, task).await?;
            }
            Slot::Reserved(slot) => {
                slot.spawn(task_id, task);
            }
            // A child started by a running parent uses the parent's slot: a parent that holds
            // a slot never waits for another one for its child.
            Slot::Parent => {
                self.inner.runtime.spawn_on_callers_slot(task_id, task)?;
            }
        }
        Ok(())
    }

    /// Records a workflow's outcome (unless it parks) with the checkpoint its last step left
    /// pending, and wakes local waiters.
    async fn finish(
        &self,
        id: &str,
        owner_xid: &str,
        mut pending: Option<Checkpoint>,
        result: Result<String, Error>,
    ) {
        let error = |e: &Error| Outcome {
            workflow_id: id.to_owned(),
            owner_xid: owner_xid.to_owned(),
            status: Status::Error,
            output: None,
            error: Some(codec::encode_error(&e.to_portable())),
        };
        let outcome = match &result {
            Ok(out) => match dbos_store::limits::check_payload("workflow output", out) {
                Ok(()) => Some(Outcome {
                    workflow_id: id.to_owned(),
                    owner_xid: owner_xid.to_owned(),
                    status: Status::Success,
                    output: Some(out.clone()),
                    error: None,
                }),
                // An output over the limit ends the workflow in ERROR saying so.
                Err(e) => Some(error(&Error::from(e))),
            },
            Err(e) => match e.fate() {
                Fate::Record => Some(error(e)),
                // A cancel writes the status before the execution sees it, and the outcome is
                // written only over a PENDING status this execution owns: after a real cancel
                // nothing is written. A `Cancelled` that no cancel stands behind ends the
                // workflow in ERROR, rather than leaving it PENDING here for good.
                Fate::Leave if matches!(e, Error::Cancelled(_)) => Some(error(e)),
                Fate::Leave => {
                    tracing::debug!(workflow_id = id, error = %e, "workflow execution stopped");
                    // "Owned elsewhere" must not leave a workflow this execution still owns
                    // PENDING here for good: the release is fenced on the owner, so it does
                    // nothing when another execution took the workflow over.
                    if matches!(e, Error::NotOwner(_)) {
                        self.write_pending(id, pending.take()).await;
                        if self.release(id, owner_xid).await {
                            tracing::warn!(workflow_id = id, "a write was refused while this execution still owned the workflow; released it");
                        }
                    }
                    None
                }
                Fate::Release => {
                    tracing::warn!(workflow_id = id, error = %e, "workflow execution cannot go on here; releasing it");
                    self.write_pending(id, pending.take()).await;
                    self.release(id, owner_xid).await;
                    None
                }
            },
        };
        if outcome.is_none() {
            // Parked or stopped: the last step's checkpoint spares running it again.
            self.write_pending(id, pending.take()).await;
        }
        let mut recorded = None;
        if let Some(o) = outcome {
            let text = match (&o.output, &o.error) {
                (Some(out), _) => Ok(out.clone()),
                (None, Some(err)) => Err(err.clone()),
                (None, None) => Ok("null".to_owned()),
            };
            match self.record_outcome(pending, o).await {
                Ok(true) => {
                    let i = usize::from(text.is_err());
                    crate::metrics::METRICS.outcomes[i]
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    recorded = Some(text);
                    if let Some(d) = self.inner.dispatcher.get() {
                        d.workflow_ended();
                    }
                }
                Ok(false) => {
                    tracing::debug!(workflow_id = id, "outcome not written: no longer owned")
                }
                Err(e) => {
                    tracing::warn!(workflow_id = id, error = %e, "could not record the outcome; releasing the workflow");
                    self.release(id, owner_xid).await;
                }
            }
        }
        let completion = self.inner.done.lock().remove(id);
        if let Some(c) = completion {
            c.here.store(false, std::sync::atomic::Ordering::Release);
            if let Some(text) = recorded {
                let _ = c.outcome.set(text);
            }
            c.notify.notify_waiters();
        }
    }

    /// Writes an outcome, retrying failures of the database with backoff while the node runs
    /// (the outcome is computed; writing it again is safe, being fenced on the owner).
    async fn record_outcome(&self, pending: Option<Checkpoint>, o: Outcome) -> Result<bool, Error> {
        let mut pause = Duration::from_millis(RETRY_PAUSE_MS_MIN);
        loop {
            match self
                .inner
                .committer
                .outcome(pending.clone(), o.clone())
                .await
            {
                Err(e) if e.fate() == Fate::Release && !self.inner.stopping.is_cancelled() => {
                    tracing::debug!(workflow_id = %o.workflow_id, error = %e, "writing the outcome failed; retrying");
                    self.pause(&mut pause).await;
                }
                other => return other,
            }
        }
    }

    /// Writes a checkpoint left pending by a workflow that ends without an outcome, once and
    /// while this node holds its lease (it is fenced on the owner like every checkpoint).
    async fn write_pending(&self, id: &str, pending: Option<Checkpoint>) {
        let Some(c) = pending else { return };
        if !self.lease().is_held() {
            return;
        }
        if let Err(e) = self.inner.committer.checkpoints(vec![c]).await {
            tracing::debug!(workflow_id = id, error = %e, "the last step's checkpoint was not written; the step runs again");
        }
    }

    /// Releases a workflow this execution owns (back to ENQUEUED, owner cleared) so any node
    /// runs it, retrying with backoff until it is released, no longer owned, or the node stops
    /// (then the node's stop record lets any live node take it over). Says whether it released
    /// the workflow.
    async fn release(&self, id: &str, owner_xid: &str) -> bool {
        let mut pause = Duration::from_millis(RETRY_PAUSE_MS_MIN);
        loop {
            match workflows::release(&self.inner.pool, id, owner_xid).await {
                Ok(released) => {
                    self.wake();
                    return released;
                }
                Err(e) if self.inner.stopping.is_cancelled() => {
                    tracing::warn!(workflow_id = id, error = %e, "could not release the workflow before the node stopped; recovery will");
                    return false;
                }
                Err(e) => {
                    tracing::debug!(workflow_id = id, error = %e, "releasing failed; retrying");
                    self.pause(&mut pause).await;
                }
            }
        }
    }

    /// Sleeps `pause` (or until the node stops), then doubles it up to the maximum.
    async fn pause(&self, pause: &mut Duration) {
        tokio::select! {
            () = tokio::time::sleep(*pause) => {}
            () = self.inner.stopping.cancelled() => {}
        }
        *pause = (*pause * 2).min(Duration::from_millis(RETRY_PAUSE_MS_MAX));
    }

    /// Whether the execution holding `owner_xid` still owns workflow `id` (it is PENDING).
    ///
    /// The query's future is boxed, as are those of the other lookups a workflow's context
    /// makes off its common path: an async function's future is as large as its largest
    /// await, and a workflow's future keeps that size for as long as the workflow lives,
    /// waiting in a `recv` or a `sleep` included. Boxed, a lookup holds its memory only while
    /// it runs.
    ///
    /// # Errors
    /// Database errors.
    pub(crate) async fn still_owner(&self, id: &str, owner_xid: &str) -> Result<bool, Error> {
        Ok(Box::pin(workflows::is_owner(&self.inner.pool, id, owner_xid)).await?)
    }

    /// Why a write fenced on `(status = PENDING, owner_xid)` was refused.
    pub(crate) async fn why_not_owner(&self, id: &str) -> Error {
        match Box::pin(workflows::status(&self.inner.pool, id)).await {
            Ok(Status::Cancelled) => Error::Cancelled(id.to_owned()),
            Ok(Status::MaxRecoveryAttemptsExceeded) => {
                Error::MaxRecoveryAttemptsExceeded(id.to_owned())
            }
            Ok(_) => Error::NotOwner(id.to_owned()),
            Err(e) => e.into(),
        }
    }

    /// Cancels workflow `id` if its deadline has passed.
    ///
    /// 1 round trip, 1 commit.
    pub(crate) async fn cancel_expired(&self, id: &str) -> Result<(), Error> {
        Box::pin(workflows::cancel_expired(&self.inner.pool, Some(id))).await?;
        Ok(())
    }

    /// The node's lease.
    pub(crate) fn lease(&self) -> &dbos_kernel::Lease {
        &self.inner.lease
    }

    /// Milliseconds since the epoch, by the node's clock.
    pub(crate) fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    fn deadline(&self, opts: &StartOptions) -> Option<i64> {
        match opts.timeout {
            Some(t) => Some(self.now_ms() + t.as_millis() as i64),
            None => opts.deadline_ms,
        }
    }

    fn dispatcher(&self) -> &dbos_scheduler::Handle {
        self.inner
            .dispatcher
            .get()
            .expect("launch sets the dispatcher before it returns the service")
    }

    /// Debounces `name` under `key`: the first call enqueues a DELAYED workflow; calls within
    /// `period` of the last one push its start back (never past `timeout` after the first call)
    /// and replace its arguments, so the last call's arguments win. Once it starts, the next
    /// call debounces a fresh workflow.
    ///
    /// 1 round trip, 1 commit (a retry only when two first calls race).
    ///
    /// # Errors
    /// [`Error::Invalid`] for an empty key.
    pub async fn debounce<I: Serialize, O>(
        &self,
        queue: &str,
        name: &str,
        key: &str,
        period: Duration,
        timeout: Option<Duration>,
        input: I,
    ) -> Result<WorkflowHandle<O>, Error> {
        if key.is_empty() {
            return Err(Error::Invalid("a debounce key cannot be empty".into()));
        }
        let inputs = codec::encode_input(&input)?;
        for _ in 0..3 {
            let now = self.now_ms();
            let until = now + period.as_millis() as i64;
            let id = workflows::debounce(
                &self.inner.pool,
                &workflows::Debounce {
                    queue,
                    name,
                    key,
                    until_ms: until,
                    cap_ms: timeout.map(|t| now + t.as_millis() as i64),
                    inputs: &inputs,
                },
            )
            .await?;
            if let Some(id) = id {
                self.dispatcher().delayed_until(until);
                return Ok(self.handle(id));
            }
        }
        Err(Error::Invalid(format!(
            "debounce key {key:?} on queue {queue} is held by a workflow that is not debounced"
        )))
    }

    /// Waits for the first of several workflows to end; returns its index and result.
    ///
    /// # Errors
    /// [`Error::Invalid`] for no handles; otherwise the first workflow's error.
    pub async fn wait_first<O: DeserializeOwned>(
        &self,
        handles: &[WorkflowHandle<O>],
    ) -> Result<(usize, Result<O, Error>), Error> {
        if handles.is_empty() {
            return Err(Error::Invalid(
                "wait_first needs at least one handle".into(),
            ));
        }
        let futures: Vec<_> = handles.iter().map(|h| Box::pin(h.result())).collect();
        let (result, index, _rest) = futures_util::future::select_all(futures).await;
        Ok((index, result))
    }

    /// Wakes the dispatcher (after a resume or fork enqueued work).
    pub fn wake(&self) {
        self.dispatcher().wake();
    }

    /// The dispatcher of this node (its wake-ups and rounds).
    pub fn scheduler(&self) -> &dbos_scheduler::Handle {
        self.dispatcher()
    }
}

/// The scheduler runs the workflows it claims here.
impl Executor for Service {
    fn names(&self) -> Vec<String> {
        self.inner.registry.names()
    }

    fn app_version(&self) -> String {
        self.inner.app_version.clone()
    }

    fn execute(
        &self,
        claimed: Claimed,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), ExecuteError>> + Send + '_>> {
        Box::pin(async move {
            let f = self.function(&claimed.name)?;
            let recorded = claimed
                .recorded
                .into_iter()
                .map(|r| (r.function_id, r))
                .collect();
            let run = Execution {
                id: claimed.workflow_id,
                name: claimed.name,
                owner_xid: claimed.owner_xid,
                inputs: claimed.inputs.unwrap_or_else(|| "{}".into()),
                recorded,
                deadline_ms: claimed.deadline_ms,
            };
            let m = &crate::metrics::METRICS;
            m.claims.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            m.queue_wait_seconds
                .observe((self.now_ms() - claimed.created_at_ms).max(0) as f64 / 1000.0);
            let span = tracing::info_span!(
                "claim",
                workflow_id = %run.id,
                node = %self.inner.executor_id,
                attempts = claimed.recovery_attempts,
            );
            // The trace it was enqueued in, from its row.
            if let Some(t) = &claimed.traceparent {
                crate::telemetry::set_parent(&span, t);
            }
            tracing::Instrument::instrument(Service::execute(self, f, run, Slot::Own), span)
                .await?;
            Ok(())
        })
    }
}

/// An enqueue that may claim its workflow for this node ([`Service::run_here`]).
struct RunHere {
    f: ErasedFn,
    here: dbos_store::workflows::Here,
    /// The slot it runs on if claimed.
    slot: dbos_kernel::Reserved,
}

/// One execution of a workflow this node owns.
struct Execution {
    id: String,
    /// Its function.
    name: String,
    owner_xid: String,
    /// Inputs, portable JSON text.
    inputs: String,
    /// Operations recorded by earlier executions, by function ID.
    recorded: HashMap<i32, Recorded>,
    deadline_ms: Option<i64>,
}

impl Execution {
    /// The first execution of a workflow just started here.
    fn fresh(
        id: String,
        name: &str,
        owner_xid: String,
        inputs: String,
        deadline_ms: Option<i64>,
    ) -> Self {
        Execution {
            id,
            name: name.to_owned(),
            owner_xid,
            inputs,
            recorded: HashMap::new(),
            deadline_ms,
        }
    }
}

/// Whose slot an execution runs on.
#[derive(Debug)]
enum Slot {
    /// A slot of its own, waited for.
    Own,
    /// A slot of its own, taken before the workflow was claimed for this node.
    Reserved(dbos_kernel::Reserved),
    /// Its parent's (a child started by a running workflow).
    Parent,
}

/// Events deleted by one statement of a sweep at most.
const PROV_SWEEP_BATCH: i64 = 10_000;

/// Every `pause`, deletes provenance older than `prov.config.retention` and the ended workflows
/// that `sched.workflow_retention` no longer keeps, each in batches until none is left.
async fn sweep_retention(pool: &PgPool, pause: Duration, stop: dbos_kernel::CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
        let prov = in_batches(PROV_SWEEP_BATCH, &stop, || {
            dbos_store::prov::sweep(pool, PROV_SWEEP_BATCH)
        })
        .await;
        log_sweep("provenance", prov);
        let workflows = async {
            let policy = dbos_store::workflows::retention(pool).await?;
            manage::gc_until(pool, &policy, &stop).await
        }
        .await;
        log_sweep("workflows", workflows);
    }
}

/// Runs `delete` (which deletes at most `batch` rows) until it deletes fewer or `stop` is
/// cancelled; the rows deleted in all.
pub(crate) async fn in_batches<F, Fut>(
    batch: i64,
    stop: &dbos_kernel::CancellationToken,
    mut delete: F,
) -> dbos_store::Result<u64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = dbos_store::Result<u64>>,
{
    let mut total = 0;
    loop {
        let n = delete().await?;
        total += n;
        if (n as i64) < batch || stop.is_cancelled() {
            return Ok(total);
        }
    }
}

fn log_sweep(what: &str, r: dbos_store::Result<u64>) {
    match r {
        Ok(0) => {}
        Ok(n) => tracing::debug!(deleted = n, "swept {what} beyond retention"),
        Err(e) => tracing::warn!(error = %e, "{what} retention sweep failed"),
    }
}

/// Runs a workflow function; a panic becomes the workflow's error instead of a lost outcome.
pub(crate) async fn run_guarded(
    f: ErasedFn,
    ctx: Context,
    inputs: String,
) -> Result<String, Error> {
    use futures_util::FutureExt;
    match std::panic::AssertUnwindSafe(f(ctx, inputs))
        .catch_unwind()
        .await
    {
        Ok(r) => r,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            Err(Error::failed(
                "Panic",
                format!("the workflow panicked: {msg}"),
            ))
        }
    }
}

/// The given workflow ID, checked, or a fresh UUID.
pub(crate) fn workflow_id(given: Option<String>) -> Result<String, Error> {
    match given {
        Some(id) if id.trim().is_empty() => {
            Err(Error::Invalid("workflow ID cannot be empty".into()))
        }
        Some(id) if id.len() > 1024 => Err(Error::Invalid("workflow ID is over 1024 bytes".into())),
        Some(id) => Ok(id),
        None => Ok(dbos_kernel::id::new_id()),
    }
}

#[cfg(all(test, feature = "testing"))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_enqueue_leaves_no_completion_behind() {
        let n = crate::testing::node(|r| {
            r.register("twice", |_ctx: Context, (x,): (i64,)| async move {
                Ok::<_, Error>(x * 2)
            });
        })
        .await;
        let opts = StartOptions::default;
        // Waited for: answered by this node's execution, then taken back.
        let h =
            n.wf.enqueue::<_, i64>("default", "twice", (21,), opts())
                .await
                .expect("enqueue");
        assert_eq!(h.result().await.expect("result"), 42);
        assert!(n.wf.inner.done.lock().is_empty());
        // Never waited for: nobody here has its code, and the last handle dropped takes the
        // registered wait back.
        let h =
            n.wf.enqueue::<_, i64>("default", "unknown_fn", (1,), opts())
                .await
                .expect("enqueue");
        assert_eq!(n.wf.inner.done.lock().len(), 1);
        let clone = h.clone();
        drop(h);
        assert_eq!(n.wf.inner.done.lock().len(), 1, "a clone still holds it");
        drop(clone);
        assert!(n.wf.inner.done.lock().is_empty());
        // A wait given up (a timeout), from the enqueue's handle or from a new one, takes its
        // registration back too.
        let h =
            n.wf.enqueue::<_, i64>("default", "unknown_fn", (1,), opts())
                .await
                .expect("enqueue");
        let later = n.wf.handle::<i64>(h.workflow_id());
        for handle in [h, later] {
            let waited = handle.result_within(Duration::from_millis(50)).await;
            assert!(matches!(waited, Err(Error::Timeout { .. })), "{waited:?}");
            drop(handle);
            assert!(n.wf.inner.done.lock().is_empty());
        }
        n.stop().await;
    }
}
