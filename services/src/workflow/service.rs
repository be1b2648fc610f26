//! The workflow service: registry, start, enqueue, dispatch, recovery and execution.

use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::atomic::AtomicI32;
use std::sync::Arc;
use std::time::Duration;

use dbos_kernel::{CancellationToken, Kernel, Runtime};
use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Row};
use tokio::sync::Notify;

use super::codec;
use super::committer::{Committer, Outcome, Start};
use super::ctx::{Context, CtxInner, Recorded};
use super::error::Error;

/// Queue that hosts resumed, forked and recovered workflows.
pub const INTERNAL_QUEUE: &str = dbos_scheduler::recovery::INTERNAL_QUEUE;
/// Channel on which enqueues wake idle nodes.
pub const ENQUEUE_CHANNEL: &str = dbos_scheduler::ENQUEUE_CHANNEL;

/// Milliseconds since the epoch, by this host's clock.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Options of the workflow service; every limit has a default.
#[derive(Clone, Debug)]
pub struct Options {
    /// Application version; derived from the registered workflow names when `None`
    /// (see [`Registry::version`]).
    pub app_version: Option<String>,
    /// Claims beyond this many recoveries dead-letter a workflow; `None` is unlimited.
    pub max_recovery_attempts: Option<u32>,
    /// Checkpoints and outcomes written in one statement at most.
    pub checkpoint_batch_max: usize,
    /// Checkpoint batches being committed at once.
    pub checkpoint_batches_in_flight_max: usize,
    /// Workflows claimed in one round trip at most.
    pub claim_batch_max: usize,
    /// Poll interval of the dispatcher when no notification arrives.
    pub poll_interval_ms: u64,
    /// Limits of messaging (send/recv, events, streams, topics).
    pub msg: dbos_msg::Options,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            app_version: std::env::var("DBOS__APPVERSION")
                .ok()
                .filter(|v| !v.is_empty()),
            max_recovery_attempts: Some(100),
            checkpoint_batch_max: 512,
            checkpoint_batches_in_flight_max: 4,
            claim_batch_max: 256,
            poll_interval_ms: 1_000,
            msg: dbos_msg::Options::default(),
        }
    }
}

type ErasedFn =
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
    executor_id: String,
    app_version: String,
    registry: Registry,
    names: Vec<String>,
    committer: Committer,
    messages: dbos_msg::Client,
    opts: Options,
    /// This node's placement labels (JSON object) and slots.
    labels: serde_json::Value,
    slots: i32,
    /// Wakes result waiters when a local execution ends.
    done: Mutex<HashMap<String, Arc<Completion>>>,
    /// Wakes the dispatcher.
    wake: Notify,
    /// Earliest `delay_until_epoch_ms` of a DELAYED workflow, when known.
    next_delay_ms: Mutex<Option<i64>>,
    shutdown: CancellationToken,
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
    svc: Service,
    _out: PhantomData<fn() -> O>,
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
            _out: PhantomData,
        }
    }
}

/// Where a local execution hands its recorded outcome to waiters on this node.
#[derive(Default)]
struct Completion {
    notify: Notify,
    /// The outcome as recorded: `Ok(output)` or `Err(error)`, both portable JSON text.
    outcome: std::sync::OnceLock<Result<String, String>>,
}

/// A workflow's terminal state, as read from the database.
#[derive(Debug)]
enum Terminal {
    Success(Option<String>),
    Error(Option<String>),
    Cancelled,
    Dead,
}

impl<O: DeserializeOwned> WorkflowHandle<O> {
    /// The workflow's ID.
    pub fn workflow_id(&self) -> &str {
        &self.id
    }

    /// Waits until the workflow ends and returns its output, or its recorded error.
    ///
    /// Polls `workflow_status` ⟕ `workflow_output` (1 round trip each), woken at once when this
    /// node finishes the workflow.
    ///
    /// # Errors
    /// The workflow's error, [`Error::Cancelled`], [`Error::MaxRecoveryAttemptsExceeded`],
    /// [`Error::NotFound`].
    pub async fn result(&self) -> Result<O, Error> {
        let (completion, local) = {
            let mut done = self.svc.inner.done.lock();
            match done.get(&self.id) {
                Some(c) => (c.clone(), true),
                None => {
                    let c = Arc::new(Completion::default());
                    done.insert(self.id.clone(), c.clone());
                    (c, false)
                }
            }
        };
        let result = self.wait(&completion, local).await;
        // An entry this call made for a workflow run elsewhere is not kept.
        if !local {
            let mut done = self.svc.inner.done.lock();
            if done
                .get(&self.id)
                .is_some_and(|c| Arc::ptr_eq(c, &completion))
                && Arc::strong_count(&completion) == 2
            {
                done.remove(&self.id);
            }
        }
        result
    }

    async fn wait(&self, completion: &Completion, mut skip_db: bool) -> Result<O, Error> {
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
                if let Some(t) = self.svc.terminal(&self.id).await? {
                    return match t {
                        Terminal::Success(o) => codec::decode(o.as_deref().unwrap_or("null")),
                        Terminal::Error(e) => Err(Error::Failed(Box::new(codec::decode_error(
                            e.as_deref().unwrap_or("unknown error"),
                        )))),
                        Terminal::Cancelled => Err(Error::Cancelled(self.id.clone())),
                        Terminal::Dead => Err(Error::MaxRecoveryAttemptsExceeded(self.id.clone())),
                    };
                }
            }
            let woken = tokio::time::timeout(pause, notified).await.is_ok();
            // Past a second, the database is asked too, in case the execution ended abnormally.
            skip_db = skip_db && !woken && started.elapsed() < Duration::from_secs(1);
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }
}

impl Service {
    /// Starts the service on a booted node: registers the application version, re-enqueues
    /// this node's (and its crashed predecessors') PENDING workflows of this version, and runs
    /// the dispatcher that claims enqueued workflows this node has code for.
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
        let shutdown = kernel.shutdown_token();
        let committer = Committer::start(
            pool.clone(),
            opts.checkpoint_batch_max,
            opts.checkpoint_batches_in_flight_max,
            kernel.node_id().to_owned(),
            app_version.clone(),
        );
        let waiters =
            dbos_msg::Waiters::start(kernel.notifier(), opts.msg.recheck_interval_ms).await?;
        let messages = dbos_msg::Client::new(pool.clone(), waiters, opts.msg.clone());
        tokio::spawn(messages.clone().run_sweeper(shutdown.clone()));
        let svc = Service {
            inner: Arc::new(Inner {
                pool,
                runtime: kernel.runtime().clone(),
                executor_id: kernel.node_id().to_owned(),
                app_version,
                names: registry.names(),
                registry,
                committer,
                messages,
                opts,
                labels: serde_json::to_value(&kernel.config().labels)?,
                slots: kernel.config().slots.min(i32::MAX as u32) as i32,
                done: Mutex::new(HashMap::new()),
                wake: Notify::new(),
                next_delay_ms: Mutex::new(None),
                shutdown,
            }),
        };
        // Registers this version; "latest" is the newest registered one.
        sqlx::query(
            "INSERT INTO dbos.application_versions (version_id, version_name)
             VALUES (gen_random_uuid()::text, $1) ON CONFLICT DO NOTHING",
        )
        .bind(&svc.inner.app_version)
        .execute(&svc.inner.pool)
        .await?;
        let mut executors = vec![svc.inner.executor_id.clone()];
        executors.extend(kernel.replaced_nodes().iter().cloned());
        let recovered = svc.recover(&executors).await?;
        if recovered > 0 {
            tracing::info!(recovered, "re-enqueued pending workflows for recovery");
        }
        let sub = kernel.notifier().subscribe(ENQUEUE_CHANNEL).await?;
        tokio::spawn(svc.clone().dispatcher(sub));
        tokio::spawn(svc.clone().cron());
        Ok(svc)
    }

    pub(crate) fn pool(&self) -> &PgPool {
        &self.inner.pool
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
        WorkflowHandle {
            id: workflow_id.into(),
            svc: self.clone(),
            _out: PhantomData,
        }
    }

    /// Re-enqueues the PENDING workflows of these executors at this application version on
    /// their queue (or the internal one). Returns how many.
    ///
    /// 1 round trip, 1 commit.
    ///
    /// # Errors
    /// Database errors.
    pub async fn recover(&self, executors: &[String]) -> Result<u64, Error> {
        let r = sqlx::query(
            "UPDATE dbos.workflow_status
             SET status = 'ENQUEUED', owner_xid = NULL, started_at_epoch_ms = NULL,
                 queue_name = COALESCE(queue_name, $3),
                 updated_at = (EXTRACT(epoch FROM now()) * 1000)::bigint
             WHERE status = 'PENDING' AND executor_id = ANY($1) AND application_version = $2",
        )
        .bind(executors)
        .bind(&self.inner.app_version)
        .bind(INTERNAL_QUEUE)
        .execute(&self.inner.pool)
        .await?;
        if r.rows_affected() > 0 {
            self.inner.wake.notify_one();
        }
        Ok(r.rows_affected())
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
        let deadline = deadline(&opts);
        let (existing, created) = self
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
        if !created {
            return self.existing(id, existing, name);
        }
        self.execute(f, id.clone(), xid, inputs, HashMap::new(), deadline)
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

    /// Enqueues a workflow on a queue; a node with the workflow's code claims and runs it.
    ///
    /// 1 round trip, 1 commit (which also wakes idle nodes).
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
        let xid = uuid::Uuid::new_v4().to_string();
        let row = sqlx::query(
            "WITH ins AS (
                 INSERT INTO dbos.workflow_status AS w
                     (workflow_uuid, status, name, queue_name, recovery_attempts, creator_xid,
                      serialization, workflow_timeout_ms, workflow_deadline_epoch_ms, priority,
                      deduplication_id, delay_until_epoch_ms, queue_partition_key)
                 VALUES ($1, CASE WHEN $11::int8 IS NULL THEN 'ENQUEUED' ELSE 'DELAYED' END, $2, $3, 0, $4,
                         'portable_json', $5, $6, $7, $8, $11, $12)
                 ON CONFLICT (workflow_uuid) DO UPDATE SET creator_xid = w.creator_xid
                 RETURNING name, creator_xid
             ), inp AS (
                 INSERT INTO dbos.workflow_input (workflow_uuid, inputs)
                 SELECT $1, $9 FROM ins WHERE ins.creator_xid = $4
                 ON CONFLICT DO NOTHING
             )
             SELECT name, creator_xid = $4 AS created, pg_notify($10, $3) IS NULL FROM ins",
        )
        .bind(&id)
        .bind(name)
        .bind(queue)
        .bind(&xid)
        .bind(opts.timeout.map(|t| t.as_millis() as i64))
        .bind(opts.deadline_ms)
        .bind(opts.priority)
        .bind(&opts.deduplication_id)
        .bind(&inputs)
        .bind(ENQUEUE_CHANNEL)
        .bind(opts.delay.map(|d| now_ms() + d.as_millis() as i64))
        .bind(&opts.partition_key)
        .fetch_one(&self.inner.pool)
        .await
        .map_err(|e| match dbos_kernel::sqlstate(&e).as_deref() {
            Some("23505") => Error::Invalid(format!(
                "workflow {id} was deduplicated: queue {queue} already has deduplication ID {:?}",
                opts.deduplication_id.as_deref().unwrap_or_default()
            )),
            _ => Error::Db(e),
        })?;
        let (existing, created): (Option<String>, bool) = (row.get(0), row.get(1));
        if !created {
            return self.existing(id, existing, name);
        }
        self.inner.wake.notify_one();
        Ok(self.handle(id))
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

    fn function(&self, name: &str) -> Result<ErasedFn, Error> {
        self.inner
            .registry
            .fns
            .get(name)
            .cloned()
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
        let deadline = deadline(opts);
        let now = now_ms();
        let row = sqlx::query(
            "WITH own AS (
                 SELECT 1 FROM dbos.workflow_status
                 WHERE workflow_uuid = $1 AND owner_xid = $2 AND status = 'PENDING'
                 FOR NO KEY UPDATE
             ), child AS (
                 INSERT INTO dbos.workflow_status AS w
                     (workflow_uuid, status, name, executor_id, application_version, recovery_attempts,
                      owner_xid, creator_xid, serialization, workflow_timeout_ms,
                      workflow_deadline_epoch_ms, parent_workflow_id, priority)
                 SELECT $3, 'PENDING', $4, $5, $6, 1, $7, $7, 'portable_json', $8, $9, $1, $10 FROM own
                 ON CONFLICT (workflow_uuid) DO UPDATE SET creator_xid = w.creator_xid
                 RETURNING name, creator_xid
             ), inp AS (
                 INSERT INTO dbos.workflow_input (workflow_uuid, inputs)
                 SELECT $3, $11 FROM child WHERE child.creator_xid = $7
                 ON CONFLICT DO NOTHING
             ), op AS (
                 INSERT INTO dbos.operation_outputs
                     (workflow_uuid, function_id, function_name, child_workflow_id,
                      started_at_epoch_ms, completed_at_epoch_ms, serialization)
                 SELECT $1, $12, $4, $3, $13, $13, 'portable_json' FROM own
                 ON CONFLICT DO NOTHING
             )
             SELECT (SELECT count(*) FROM own) AS owned,
                    (SELECT name FROM child) AS name,
                    COALESCE((SELECT creator_xid = $7 FROM child), false) AS created",
        )
        .bind(parent.workflow_id())
        .bind(&parent.inner.owner_xid)
        .bind(id)
        .bind(name)
        .bind(&self.inner.executor_id)
        .bind(&self.inner.app_version)
        .bind(&xid)
        .bind(opts.timeout.map(|t| t.as_millis() as i64))
        .bind(deadline)
        .bind(opts.priority)
        .bind(&inputs)
        .bind(fid)
        .bind(now)
        .fetch_one(&self.inner.pool)
        .await?;
        let (owned, existing, created): (i64, Option<String>, bool) =
            (row.get(0), row.get(1), row.get(2));
        if owned == 0 {
            return Err(self.why_not_owner(parent.workflow_id()).await);
        }
        if !created {
            return self.existing(id.to_owned(), existing, name);
        }
        self.execute(f, id.to_owned(), xid, inputs, HashMap::new(), deadline)
            .await?;
        Ok(self.handle(id.to_owned()))
    }

    /// Runs a workflow this node owns, on a task slot.
    async fn execute(
        &self,
        f: ErasedFn,
        id: String,
        owner_xid: String,
        inputs: String,
        recorded: HashMap<i32, Recorded>,
        deadline_ms: Option<i64>,
    ) -> Result<(), Error> {
        let ctx = Context {
            inner: Arc::new(CtxInner {
                svc: self.clone(),
                workflow_id: id.clone(),
                owner_xid: owner_xid.clone(),
                next_fid: AtomicI32::new(0),
                recorded: Mutex::new(recorded),
                deadline_ms,
            }),
        };
        // Waiters on this node learn the outcome without asking the database.
        self.inner
            .done
            .lock()
            .entry(id.clone())
            .or_insert_with(|| Arc::new(Completion::default()));
        let svc = self.clone();
        self.inner
            .runtime
            .spawn(id.clone(), move |_task| async move {
                let result = match deadline_ms {
                    Some(d) => {
                        // Cancels in the database at the deadline; the run notices at its next
                        // step boundary.
                        let svc2 = svc.clone();
                        let id2 = id.clone();
                        let timer = tokio::spawn(async move {
                            let left = d - now_ms();
                            if left > 0 {
                                tokio::time::sleep(Duration::from_millis(left as u64)).await;
                            }
                            let _ = svc2.cancel_expired(Some(&id2)).await;
                        });
                        let r = run_guarded(f, ctx, inputs).await;
                        timer.abort();
                        r
                    }
                    None => run_guarded(f, ctx, inputs).await,
                };
                svc.finish(&id, &owner_xid, result).await;
            })
            .await?;
        Ok(())
    }

    /// Records a workflow's outcome (unless it parks) and wakes local waiters.
    async fn finish(&self, id: &str, owner_xid: &str, result: Result<String, Error>) {
        let outcome = match &result {
            Ok(out) => Some(Outcome {
                workflow_id: id.to_owned(),
                owner_xid: owner_xid.to_owned(),
                status: "SUCCESS",
                output: Some(out.clone()),
                error: None,
            }),
            Err(e) if e.parks() => {
                tracing::debug!(workflow_id = id, error = %e, "workflow execution parked");
                None
            }
            Err(e) => Some(Outcome {
                workflow_id: id.to_owned(),
                owner_xid: owner_xid.to_owned(),
                status: "ERROR",
                output: None,
                error: Some(codec::encode_error(&e.to_portable())),
            }),
        };
        let mut recorded = None;
        if let Some(o) = outcome {
            let text = match (&o.output, &o.error) {
                (Some(out), _) => Ok(out.clone()),
                (None, Some(err)) => Err(err.clone()),
                (None, None) => Ok("null".to_owned()),
            };
            match self.inner.committer.outcome(o).await {
                Ok(true) => recorded = Some(text),
                Ok(false) => {
                    tracing::debug!(workflow_id = id, "outcome not written: no longer owned")
                }
                Err(e) => {
                    tracing::warn!(workflow_id = id, error = %e, "could not record the outcome; recovery will re-run it")
                }
            }
        }
        let completion = self.inner.done.lock().remove(id);
        if let Some(c) = completion {
            if let Some(text) = recorded {
                let _ = c.outcome.set(text);
            }
            c.notify.notify_waiters();
        }
    }

    /// Why a write fenced on `(status = PENDING, owner_xid)` was refused.
    /// Whether the execution holding `owner_xid` still owns workflow `id` (it is PENDING).
    ///
    /// # Errors
    /// Database errors.
    pub(crate) async fn still_owner(&self, id: &str, owner_xid: &str) -> Result<bool, Error> {
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM dbos.workflow_status
                            WHERE workflow_uuid = $1 AND owner_xid = $2 AND status = 'PENDING')",
        )
        .bind(id)
        .bind(owner_xid)
        .fetch_one(&self.inner.pool)
        .await?)
    }

    pub(crate) async fn why_not_owner(&self, id: &str) -> Error {
        let status: Result<Option<Option<String>>, _> =
            sqlx::query_scalar("SELECT status FROM dbos.workflow_status WHERE workflow_uuid = $1")
                .bind(id)
                .fetch_optional(&self.inner.pool)
                .await;
        match status {
            Ok(Some(Some(s))) if s == "CANCELLED" => Error::Cancelled(id.to_owned()),
            Ok(Some(Some(s))) if s == "MAX_RECOVERY_ATTEMPTS_EXCEEDED" => {
                Error::MaxRecoveryAttemptsExceeded(id.to_owned())
            }
            Ok(None) => Error::NotFound(id.to_owned()),
            Ok(_) => Error::NotOwner(id.to_owned()),
            Err(e) => Error::Db(e),
        }
    }

    /// Cancels the workflow `id` (every workflow when `None`) whose deadline has passed.
    ///
    /// 1 round trip, 1 commit (served by the primary key, or idx_workflow_status_deadline).
    pub(crate) async fn cancel_expired(&self, id: Option<&str>) -> Result<(), Error> {
        sqlx::query(
            "WITH c AS (
                 UPDATE dbos.workflow_status
                 SET status = 'CANCELLED', owner_xid = NULL, queue_name = NULL,
                     deduplication_id = NULL, started_at_epoch_ms = NULL,
                     updated_at = (EXTRACT(epoch FROM now()) * 1000)::bigint,
                     completed_at = (EXTRACT(epoch FROM now()) * 1000)::bigint
                 WHERE ($1::text IS NOT NULL AND workflow_uuid = $1
                        OR $1::text IS NULL AND (SELECT pg_try_advisory_xact_lock(
                               hashtextextended('dbos.sched.deadlines', 0))))
                   AND status IN ('ENQUEUED', 'PENDING', 'DELAYED')
                   AND workflow_deadline_epoch_ms <= (EXTRACT(epoch FROM now()) * 1000)::bigint
                 RETURNING workflow_uuid
             )
             SELECT count(pg_notify($2, workflow_uuid)) FROM c",
        )
        .bind(id)
        .bind(dbos_msg::CANCEL_CHANNEL)
        .execute(&self.inner.pool)
        .await?;
        Ok(())
    }

    async fn terminal(&self, id: &str) -> Result<Option<Terminal>, Error> {
        let row = sqlx::query(
            "SELECT s.status, COALESCE(o.output, s.output), COALESCE(o.error, s.error)
             FROM dbos.workflow_status s LEFT JOIN dbos.workflow_output o USING (workflow_uuid)
             WHERE s.workflow_uuid = $1",
        )
        .bind(id)
        .fetch_optional(&self.inner.pool)
        .await?
        .ok_or_else(|| Error::NotFound(id.to_owned()))?;
        let status: Option<String> = row.get(0);
        Ok(match status.as_deref() {
            Some("SUCCESS") => Some(Terminal::Success(row.get(1))),
            Some("ERROR") => Some(Terminal::Error(row.get(2))),
            Some("CANCELLED") => Some(Terminal::Cancelled),
            Some("MAX_RECOVERY_ATTEMPTS_EXCEEDED") => Some(Terminal::Dead),
            _ => None,
        })
    }

    /// Fires cron schedules: every due tick becomes one enqueued workflow (however many nodes
    /// fire it), then sleeps until the next tick, looking for new schedules every second.
    async fn cron(self) {
        loop {
            let wait =
                match dbos_scheduler::cron::fire_due(&self.inner.pool, chrono::Utc::now()).await {
                    Ok(f) => {
                        if f.enqueued > 0 {
                            self.inner.wake.notify_one();
                        }
                        f.next
                            .map(|n| (n - chrono::Utc::now()).num_milliseconds().clamp(1, 1_000))
                            .unwrap_or(1_000)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "firing cron schedules failed");
                        1_000
                    }
                };
            tokio::select! {
                () = self.inner.shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(wait as u64)) => {}
            }
        }
    }

    /// Claims enqueued workflows this node has code for, up to its free slots, and runs them.
    async fn dispatcher(self, mut sub: dbos_kernel::Subscription) {
        let poll = Duration::from_millis(self.inner.opts.poll_interval_ms);
        let mut last_sweep = std::time::Instant::now();
        loop {
            if self.inner.shutdown.is_cancelled() {
                return;
            }
            let free = self
                .inner
                .runtime
                .free_slots()
                .min(self.inner.opts.claim_batch_max);
            let mut claimed = 0;
            if free > 0 {
                match self.claim(free).await {
                    Ok(n) => claimed = n,
                    Err(e) => tracing::warn!(error = %e, "claiming workflows failed; retrying"),
                }
            }
            let due = self
                .inner
                .next_delay_ms
                .lock()
                .is_some_and(|d| d <= now_ms());
            if last_sweep.elapsed() >= poll || due {
                last_sweep = std::time::Instant::now();
                if let Err(e) = self.cancel_expired(None).await {
                    tracing::warn!(error = %e, "deadline sweep failed");
                }
                match dbos_scheduler::recovery::sweep(&self.inner.pool).await {
                    Ok(r) => {
                        if !r.nodes_declared_dead.is_empty() {
                            tracing::warn!(nodes = ?r.nodes_declared_dead, "nodes declared dead after their lease expired");
                        }
                        if r.workflows > 0 {
                            tracing::info!(
                                workflows = r.workflows,
                                "re-enqueued the pending work of gone nodes"
                            );
                            continue;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "recovery sweep failed"),
                }
                match self.promote_delayed().await {
                    Ok((promoted, next)) => {
                        *self.inner.next_delay_ms.lock() = next;
                        if promoted > 0 {
                            continue;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "promoting delayed workflows failed"),
                }
            }
            if claimed > 0 && claimed == free {
                continue;
            }
            let mut wait = if free == 0 {
                Duration::from_millis(20)
            } else {
                poll
            };
            if let Some(next) = *self.inner.next_delay_ms.lock() {
                wait = wait.min(Duration::from_millis((next - now_ms()).max(1) as u64));
            }
            tokio::select! {
                () = self.inner.shutdown.cancelled() => return,
                () = self.inner.wake.notified() => {}
                w = sub.recv() => if w.is_none() { return },
                () = tokio::time::sleep(wait) => {}
            }
            // A burst of enqueues is one claim round, not one per notification.
            while let Some(Some(_)) = futures_util::FutureExt::now_or_never(sub.recv()) {}
        }
    }

    /// Claims up to `n` workflows in one round trip (with their inputs and recorded steps) and
    /// starts them. Returns how many were claimed.
    async fn claim(&self, n: usize) -> Result<usize, Error> {
        let req = dbos_scheduler::claim::ClaimRequest {
            names: &self.inner.names,
            app_version: &self.inner.app_version,
            executor_id: &self.inner.executor_id,
            max: n as i64,
            labels: &self.inner.labels,
            slots: self.inner.slots,
        };
        let rows = dbos_scheduler::claim::claim(&self.inner.pool, &req).await?;
        let claimed = rows.len();
        for row in rows {
            let dbos_scheduler::claim::Claimed {
                workflow_id: id,
                name,
                owner_xid: owner,
                recovery_attempts: attempts,
                deadline_ms: deadline,
                inputs,
                recorded,
            } = row;
            if let Some(max) = self.inner.opts.max_recovery_attempts {
                if attempts > i64::from(max) + 1 {
                    self.dead_letter(&id, &owner).await?;
                    continue;
                }
            }
            let recorded: Vec<Recorded> = match recorded {
                Some(v) => serde_json::from_value(v).map_err(Error::encode)?,
                None => Vec::new(),
            };
            let recorded = recorded.into_iter().map(|r| (r.function_id, r)).collect();
            let Ok(f) = self.function(&name) else {
                continue;
            };
            self.execute(
                f,
                id,
                owner,
                inputs.unwrap_or_else(|| "{}".into()),
                recorded,
                deadline,
            )
            .await?;
        }
        Ok(claimed)
    }

    async fn dead_letter(&self, id: &str, owner: &str) -> Result<(), Error> {
        tracing::warn!(
            workflow_id = id,
            "dead-lettering after too many recovery attempts"
        );
        sqlx::query(
            "UPDATE dbos.workflow_status
             SET status = 'MAX_RECOVERY_ATTEMPTS_EXCEEDED', owner_xid = NULL, deduplication_id = NULL,
                 started_at_epoch_ms = NULL, queue_name = NULL,
                 updated_at = (EXTRACT(epoch FROM now()) * 1000)::bigint,
                 completed_at = (EXTRACT(epoch FROM now()) * 1000)::bigint
             WHERE workflow_uuid = $1 AND status = 'PENDING' AND owner_xid = $2",
        )
        .bind(id)
        .bind(owner)
        .execute(&self.inner.pool)
        .await?;
        let completion = self.inner.done.lock().remove(id);
        if let Some(c) = completion {
            c.notify.notify_waiters();
        }
        Ok(())
    }

    /// Moves DELAYED workflows whose time has come to ENQUEUED (releasing a debounce key) and
    /// returns how many, with the next pending delay.
    ///
    /// 1 round trip, 1 commit (served by idx_workflow_status_delayed).
    async fn promote_delayed(&self) -> Result<(u64, Option<i64>), Error> {
        let row = sqlx::query(
            "WITH p AS (
                 UPDATE dbos.workflow_status
                 SET status = 'ENQUEUED',
                     deduplication_id = CASE WHEN is_debounced THEN NULL ELSE deduplication_id END,
                     updated_at = (EXTRACT(epoch FROM now()) * 1000)::bigint
                 WHERE status = 'DELAYED'
                   AND delay_until_epoch_ms <= (EXTRACT(epoch FROM now()) * 1000)::bigint
                   -- One node sweeps at a time; the others skip this round.
                   AND (SELECT pg_try_advisory_xact_lock(hashtextextended('dbos.sched.delayed', 0)))
                 RETURNING 1
             )
             SELECT (SELECT count(*) FROM p),
                    (SELECT min(delay_until_epoch_ms) FROM dbos.workflow_status
                     WHERE status = 'DELAYED'
                       AND delay_until_epoch_ms > (EXTRACT(epoch FROM now()) * 1000)::bigint)",
        )
        .fetch_one(&self.inner.pool)
        .await?;
        Ok((row.get::<i64, _>(0) as u64, row.get(1)))
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
            let now = now_ms();
            let until = now + period.as_millis() as i64;
            let cap = timeout.map(|t| now + t.as_millis() as i64);
            let id: Option<String> = sqlx::query_scalar(
                "WITH upd AS (
                     UPDATE dbos.workflow_status
                     SET delay_until_epoch_ms = LEAST($4, COALESCE(debounce_deadline_epoch_ms, $4)),
                         updated_at = (EXTRACT(epoch FROM now()) * 1000)::bigint
                     WHERE name = $1 AND queue_name = $2 AND deduplication_id = $3
                       AND status = 'DELAYED' AND is_debounced
                     RETURNING workflow_uuid
                 ), inp AS (
                     UPDATE dbos.workflow_input SET inputs = $6
                     WHERE workflow_uuid IN (SELECT workflow_uuid FROM upd)
                 ), ins AS (
                     INSERT INTO dbos.workflow_status
                         (workflow_uuid, status, name, queue_name, recovery_attempts, creator_xid,
                          serialization, deduplication_id, is_debounced, delay_until_epoch_ms,
                          debounce_deadline_epoch_ms)
                     SELECT gen_random_uuid()::text, 'DELAYED', $1, $2, 0, gen_random_uuid()::text,
                            'portable_json', $3, true, LEAST($4, COALESCE($5, $4)), $5
                     WHERE NOT EXISTS (SELECT 1 FROM upd)
                     ON CONFLICT DO NOTHING
                     RETURNING workflow_uuid
                 ), ins_inp AS (
                     INSERT INTO dbos.workflow_input (workflow_uuid, inputs) SELECT workflow_uuid, $6 FROM ins
                 )
                 SELECT workflow_uuid FROM upd UNION ALL SELECT workflow_uuid FROM ins",
            )
            .bind(name)
            .bind(queue)
            .bind(key)
            .bind(until)
            .bind(cap)
            .bind(&inputs)
            .fetch_optional(&self.inner.pool)
            .await?;
            if let Some(id) = id {
                let mut next = self.inner.next_delay_ms.lock();
                *next = Some(next.map_or(until, |n| n.min(until)));
                drop(next);
                self.inner.wake.notify_one();
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
        self.inner.wake.notify_one();
    }
}

/// Runs a workflow function; a panic becomes the workflow's error instead of a lost outcome.
async fn run_guarded(f: ErasedFn, ctx: Context, inputs: String) -> Result<String, Error> {
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
        None => Ok(uuid::Uuid::new_v4().to_string()),
    }
}

fn deadline(opts: &StartOptions) -> Option<i64> {
    match opts.timeout {
        Some(t) => Some(now_ms() + t.as_millis() as i64),
        None => opts.deadline_ms,
    }
}
