//! Boot and shutdown of a node.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::db::{self, PoolLimits};
use crate::embedded::{self, Cluster};
use crate::error::Result;
use crate::loops::{Loops, Phase};
use crate::migrate::{self, ServiceMigrations};
use crate::node::{self, NodeInfo};
use crate::notify::Notifier;
use crate::task::Runtime;

/// Version of this binary, recorded for every node.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A booted node: the database, its identity, the task runtime and the notifier.
#[derive(Debug)]
pub struct Kernel {
    config: Config,
    pool: PgPool,
    endpoint: Arc<db::Endpoint>,
    url: String,
    node: NodeInfo,
    runtime: Runtime,
    notifier: Notifier,
    loops: Loops,
    lease: crate::lease::Lease,
    clock: crate::clock::SharedClock,
    shutdown: CancellationToken,
    cluster: Option<Cluster>,
    replaced: Vec<String>,
}

/// What happened at shutdown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Tasks still running at the drain deadline; the next node recovers their work.
    pub tasks_abandoned: usize,
    /// Whether this node stopped the embedded Postgres (it was the last node using it).
    pub postgres_stopped: bool,
    /// Whether the node stopped because the cluster declared it dead (its lease expired while
    /// it was cut off or stalled), not because it was told to: its work went to other nodes,
    /// and it may join again only as a new node.
    pub declared_dead: bool,
}

impl Kernel {
    /// Boots a node: the database (embedded when `config.database_url` is `None`), the
    /// kernel's and the services' migrations, the node's registration, heartbeat, task runtime
    /// and notifier.
    ///
    /// # Errors
    /// Any [`crate::Error`]; on error nothing is left running (an embedded Postgres this call
    /// started is stopped again).
    pub async fn boot(config: Config, services: &[ServiceMigrations]) -> Result<Kernel> {
        config.validate()?;
        let cluster = match &config.database_url {
            Some(_) => None,
            None => Some(Cluster::start(embedded::Options::from_config(&config)).await?),
        };
        let booted = async {
            // Nodes work as the node role, never as the superuser.
            let url = match &cluster {
                Some(c) => {
                    db::retry_transient(
                        "preparing the database for nodes",
                        config.connect_retry_ms_max,
                        crate::Error::is_transient,
                        || c.prepare_for_nodes(),
                    )
                    .await?
                }
                None => config.database_url.clone().unwrap_or_default(),
            };
            let embedded = cluster.as_ref().map(|_| ());
            Self::boot_on(config, url, embedded, services).await
        }
        .await;
        match booted {
            Ok(mut k) => {
                k.cluster = cluster;
                Ok(k)
            }
            Err(e) => {
                if let Some(cluster) = cluster {
                    if let Err(stop) = cluster.stop().await {
                        tracing::warn!(error = %stop, "could not stop the embedded Postgres after a failed boot");
                    }
                }
                Err(e)
            }
        }
    }

    async fn boot_on(
        config: Config,
        url: String,
        embedded: Option<()>,
        services: &[ServiceMigrations],
    ) -> Result<Kernel> {
        let (endpoint, pool) = db::Endpoint::open(&url, &PoolLimits::from_config(&config)).await?;
        let mut all = vec![migrate::KERNEL];
        all.extend_from_slice(services);
        // A server restarting or terminating connections while the node starts delays the
        // start; every statement of it may be run again.
        let budget = config.connect_retry_ms_max;
        let transient = crate::Error::is_transient;
        db::retry_transient("applying migrations", budget, transient, || {
            migrate::apply(&pool, &all)
        })
        .await?;

        let hostname = node::hostname();
        let node = NodeInfo {
            node_id: config
                .node_id
                .clone()
                .unwrap_or_else(|| node::fresh_node_id(&hostname)),
            hostname,
            machine_id: node::machine_id(),
            boot_id: node::boot_id(),
            pid: std::process::id() as i32,
            version: VERSION.to_owned(),
            data_dir: embedded.map(|()| config.data_dir.display().to_string()),
            slots: config.slots,
            labels: config.labels.clone(),
            lease_ms: config.node_lease_ms,
        };
        db::retry_transient("registering the node", budget, transient, || {
            node::register(&pool, &node)
        })
        .await?;
        let replaced = db::retry_transient("marking predecessors dead", budget, transient, || {
            node::mark_predecessors_dead(&pool, &node)
        })
        .await?;
        let loops = Loops::new();
        let notifier = db::retry_transient("starting the notifier", budget, transient, || {
            Notifier::start(
                &pool,
                endpoint.side_pool(),
                config.notify_buffer_max,
                &loops,
            )
        })
        .await?;
        let runtime = Runtime::new(pool.clone(), &node.node_id, config.slots);
        let shutdown = loops.token(Phase::Claim);
        let lease = crate::lease::Lease::new(crate::lease::Lease::local_deadline_for(
            config.node_lease_ms,
        ));
        // A connection of its own: a node busy with its work must not miss its lease waiting
        // for one of the pool's.
        let heartbeat = Heartbeat {
            pool: endpoint.side_pool(),
            endpoint: endpoint.clone(),
            node_id: node.node_id.clone().into(),
            every: Duration::from_millis(config.heartbeat_interval_ms),
            claim: shutdown.clone(),
            lease: lease.clone(),
        };
        loops.spawn("heartbeat", Phase::Flush, move |stop| {
            heartbeat.clone().run(stop)
        });
        tracing::info!(node_id = %node.node_id, slots = node.slots, "node booted");
        Ok(Kernel {
            config,
            pool,
            endpoint,
            url,
            node,
            runtime,
            notifier,
            loops,
            lease,
            clock: crate::clock::system(),
            shutdown,
            cluster: None,
            replaced,
        })
    }

    /// The pool on the system database.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Where the system database is: its hosts and the writable one the node works on.
    pub fn endpoint(&self) -> &Arc<db::Endpoint> {
        &self.endpoint
    }

    /// URL of the embedded cluster's superuser (with its password), for what nodes may not do
    /// (creating databases, reading server statistics); `None` on a database given by URL.
    pub fn superuser_url(&self) -> Option<&str> {
        self.cluster.as_ref().map(Cluster::url)
    }

    /// URL of the system database the node works on (with its password): that of the node
    /// role on an embedded cluster.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node.node_id
    }

    /// This node's registration.
    pub fn node(&self) -> &NodeInfo {
        &self.node
    }

    /// The configuration the node booted with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The task runtime.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The notifier.
    pub fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    /// The node's supervised background loops: services spawn theirs here, by name and
    /// shutdown phase.
    pub fn loops(&self) -> &Loops {
        &self.loops
    }

    /// This node's lease as the node holds it: services check it before claiming and before
    /// every step, and stop their commands when it is lost.
    pub fn lease(&self) -> &crate::lease::Lease {
        &self.lease
    }

    /// The clock every service of this node reads Rust-side time from.
    pub fn clock(&self) -> &crate::clock::SharedClock {
        &self.clock
    }

    /// Replaces the node's clock (tests control time with a [`crate::clock::ManualClock`]);
    /// services launched afterwards read it.
    pub fn set_clock(&mut self, clock: crate::clock::SharedClock) {
        self.clock = clock;
    }

    /// Cancelled when the node begins to shut down (or learns it was declared dead): loops that
    /// claim work stop claiming when it fires.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Earlier nodes of this host and data directory that this boot found dead (a restart after
    /// a crash); their work can be taken over at once.
    pub fn replaced_nodes(&self) -> &[String] {
        &self.replaced
    }

    /// Whether this process started the embedded Postgres.
    pub fn started_postgres(&self) -> bool {
        self.cluster.as_ref().is_some_and(Cluster::started_here)
    }

    /// Runs until SIGINT or SIGTERM (or until the node is declared dead), then shuts down. A
    /// second signal during the drain abandons the running tasks at once.
    ///
    /// A program that tells others the node is up (prints its identity, say) installs the
    /// handlers first with [`ShutdownSignals::install`] and calls [`Kernel::run_until`]: a
    /// signal sent as soon as it is told then shuts the node down instead of killing it.
    ///
    /// # Errors
    /// Signal handlers cannot be installed, or shutdown fails.
    pub async fn run_until_signal(self) -> Result<ShutdownReport> {
        let mut signals = ShutdownSignals::install()?;
        self.run_until(&mut signals).await
    }

    /// As [`Kernel::run_until_signal`], with handlers installed before. The handlers stay
    /// with the caller: a program that boots again (a node declared dead joining as a new one)
    /// keeps them, so a signal sent in between is not lost.
    ///
    /// # Errors
    /// Shutdown fails.
    pub async fn run_until(self, signals: &mut ShutdownSignals) -> Result<ShutdownReport> {
        let signalled = tokio::select! {
            _ = signals.int.recv() => {
                tracing::info!("SIGINT: shutting down");
                true
            }
            _ = signals.term.recv() => {
                tracing::info!("SIGTERM: shutting down");
                true
            }
            () = self.shutdown.cancelled() => false,
        };
        let second = async move {
            tokio::select! {
                _ = signals.int.recv() => {}
                _ = signals.term.recv() => {}
            }
        };
        let mut report = self.shutdown_with(Some(Box::pin(second))).await?;
        // Told to stop: the node stops, whatever the cluster decided meanwhile.
        report.declared_dead &= !signalled;
        Ok(report)
    }

    /// Shuts the node down in a fixed order:
    /// 1. stop claiming: the loops of [`Phase::Claim`] (dispatch, cron, sweeps) end;
    /// 2. drain: running tasks get up to `drain_timeout_ms` to finish;
    /// 3. flush: the loops of [`Phase::Flush`] end once they have written what is queued (the
    ///    group committer), and the heartbeat stops;
    /// 4. stop the notifier ([`Phase::Listen`]);
    /// 5. mark the node stopped;
    /// 6. stop the embedded Postgres if no other process is attached to its data directory and
    ///    no other live node uses its database.
    ///
    /// # Errors
    /// The database cannot record the stop, or Postgres does not stop.
    pub async fn shutdown(self) -> Result<ShutdownReport> {
        self.shutdown_with(None).await
    }

    async fn shutdown_with(
        self,
        abort: Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>>>,
    ) -> Result<ShutdownReport> {
        match abort {
            None => self.stop_in_order().await,
            Some(abort) => tokio::select! {
                r = self.stop_in_order() => r,
                () = abort => {
                    // SIGKILL is always safe, and a second signal says the same.
                    tracing::warn!("second signal: exiting at once; running work will be recovered");
                    std::process::exit(130);
                }
            },
        }
    }

    /// The shutdown steps in their order. Each step that needs the database is bounded, and
    /// once the database fails to answer the rest are skipped, so a database that is gone
    /// never makes shutdown wait much past the drain deadline.
    async fn stop_in_order(self) -> Result<ShutdownReport> {
        let drain = Duration::from_millis(self.config.drain_timeout_ms);
        let step = Duration::from_millis(STOP_STEP_MS_MAX);
        self.loops.stop(Phase::Claim, step).await;
        // Once the database fails to answer, the steps that need it are skipped: the node then
        // counts as dead after its lease, and its work is recovered.
        let db_answers = match stop_step(step, "recording the drain", || {
            node::mark_draining(&self.pool, &self.node.node_id)
        })
        .await
        {
            Some(Ok(())) => true,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "could not record the drain");
                !e.is_transient()
            }
            None => {
                tracing::warn!("could not record the drain: the database did not answer");
                false
            }
        };
        let running = self.runtime.running();
        if running > 0 {
            tracing::info!(running, ?drain, "waiting for running tasks");
        }
        let abandoned = self.runtime.drain(drain).await;
        if abandoned > 0 {
            tracing::warn!(
                abandoned,
                "tasks still running at the drain deadline; their work will be recovered"
            );
        }
        self.loops.stop(Phase::Flush, step).await;
        self.loops.stop(Phase::Listen, step).await;
        if tokio::time::timeout(step, self.notifier.stop())
            .await
            .is_err()
        {
            tracing::warn!("the notifier did not stop in time");
        }
        let marked = if !db_answers {
            Ok(())
        } else {
            match stop_step(step, "recording the stop", || {
                node::mark_stopped(&self.pool, &self.node.node_id)
            })
            .await
            {
                Some(Err(e)) if e.is_transient() => {
                    tracing::warn!(
                        error = %e,
                        "could not record the stop; the node will count as dead after its lease"
                    );
                    Ok(())
                }
                Some(r) => r,
                None => {
                    tracing::warn!(
                        "could not record the stop: the database did not answer; the node will count as dead after its lease"
                    );
                    Ok(())
                }
            }
        };
        // A node booted elsewhere on this database (`--database-url`) holds no lock on the
        // data directory: ask the table before stopping the server under it.
        let others = match (&self.cluster, db_answers) {
            (Some(_), true) => match stop_step(step, "looking for other nodes", || {
                node::others_live(&self.pool, &self.node)
            })
            .await
            {
                Some(Ok(others)) => others,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "could not look for other nodes");
                    Vec::new()
                }
                None => Vec::new(),
            },
            _ => Vec::new(),
        };
        let close = if db_answers { step } else { Duration::ZERO };
        if tokio::time::timeout(close, self.pool.close())
            .await
            .is_err()
            && db_answers
        {
            tracing::warn!("the database pool did not close in time");
        }
        let postgres_stopped = match self.cluster {
            Some(_) if !others.is_empty() => {
                tracing::info!(
                    nodes = ?others,
                    "other nodes use the database; leaving the embedded Postgres running (the last node to stop on this data directory stops it)"
                );
                false
            }
            Some(cluster) => cluster.stop().await?,
            None => false,
        };
        marked?;
        tracing::info!(node_id = %self.node.node_id, "node stopped");
        Ok(ShutdownReport {
            tasks_abandoned: abandoned,
            postgres_stopped,
            declared_dead: self.lease.has_ended(),
        })
    }
}

/// A shutdown step's statement, run again after a transient failure (a connection the server
/// ended since its last use fails its first statement; the next one opens afresh), for at most
/// `step`; `None` once that has passed.
async fn stop_step<T, F, Fut>(step: Duration, what: &str, attempt: F) -> Option<Result<T>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let budget_ms = step.as_millis() as u64;
    tokio::time::timeout(
        step,
        db::retry_transient(what, budget_ms, crate::Error::is_transient, attempt),
    )
    .await
    .ok()
}

/// Longest wait of a shutdown step that needs the database (recording the drain and the stop,
/// closing the pool) or of a loop phase after the drain.
pub const STOP_STEP_MS_MAX: u64 = 2_000;

/// Handlers for SIGINT and SIGTERM, installed: from then on the signals are queued for
/// [`Kernel::run_until`] instead of ending the process.
#[derive(Debug)]
pub struct ShutdownSignals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    /// Installs the handlers (within a tokio runtime).
    ///
    /// # Errors
    /// A handler cannot be installed.
    pub fn install() -> Result<ShutdownSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        let sig = |kind| {
            signal(kind).map_err(|e| crate::Error::io("installing a handler for", "signal", e))
        };
        Ok(ShutdownSignals {
            int: sig(SignalKind::interrupt())?,
            term: sig(SignalKind::terminate())?,
        })
    }

    /// Waits for the next SIGINT or SIGTERM and says which.
    pub async fn next(&mut self) -> nix::sys::signal::Signal {
        tokio::select! {
            _ = self.int.recv() => nix::sys::signal::Signal::SIGINT,
            _ = self.term.recv() => nix::sys::signal::Signal::SIGTERM,
        }
    }
}

/// The heartbeat loop's state.
#[derive(Clone)]
struct Heartbeat {
    pool: PgPool,
    /// Where the database is: a heartbeat that fails starts a search for the writable server.
    endpoint: Arc<db::Endpoint>,
    node_id: Arc<str>,
    every: Duration,
    /// The node's claim token: cancelled (the node stops claiming and shuts down) when the
    /// lease is lost or the cluster declared this node dead.
    claim: CancellationToken,
    lease: crate::lease::Lease,
}

impl Heartbeat {
    /// After a failed heartbeat, looks for the writable server in the background (the
    /// heartbeat goes on meanwhile, and so does the lease's deadline): with several database
    /// hosts, the primary may have moved.
    fn follow(&self) {
        self.endpoint.note_failure();
        if !self.endpoint.is_multi_host() {
            return;
        }
        let endpoint = self.endpoint.clone();
        tokio::spawn(async move {
            if let Err(e) = endpoint.follow().await {
                tracing::warn!(error = %e, "no writable database server found yet");
            }
        });
    }

    /// Renews the node's lease every `every` until `stop`. A heartbeat that fails is retried at
    /// the next tick; while none has succeeded for the lease's local deadline the node does not
    /// hold its lease (it claims nothing, starts no step, stops its commands) until one
    /// succeeds again. When the cluster declared this node dead, it gives its lease up for good
    /// and shuts down.
    async fn run(self, stop: CancellationToken) -> std::result::Result<(), crate::Error> {
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                _ = tick.tick() => {}
            }
            if !self.lease.is_held() && !self.lease.lost().is_cancelled() {
                tracing::error!(node_id = %self.node_id, "no heartbeat succeeded within the lease's local deadline: this node stops claiming, running steps and commands until one does");
                self.lease.give_up();
            }
            let sent = std::time::Instant::now();
            // A heartbeat that hangs (a cut-off network) must not outlive the lease.
            let wait = self.lease.remaining().max(self.every);
            let beat = node::heartbeat(&self.pool, &self.node_id);
            tokio::pin!(beat);
            // A heartbeat slower than its interval is waiting for a server that does not
            // answer (the pool retries connecting within the acquire): look for the writable
            // server meanwhile, and go on waiting.
            let result = match tokio::time::timeout(self.every, &mut beat).await {
                Ok(r) => Ok(r),
                Err(_) => {
                    self.follow();
                    tokio::time::timeout(wait.saturating_sub(self.every), beat).await
                }
            };
            match result {
                Ok(Ok(true)) => {
                    self.endpoint.note_success();
                    if self.lease.renew(sent) {
                        tracing::warn!(node_id = %self.node_id, "heartbeat succeeded again: this node holds its lease and works again");
                    }
                }
                Ok(Ok(false)) => {
                    tracing::error!(node_id = %self.node_id, "the cluster declared this node dead; stopping");
                    self.lease.end();
                    self.claim.cancel();
                    return Ok(());
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "heartbeat failed; retrying");
                    self.follow();
                }
                Err(_) => {
                    tracing::warn!("heartbeat timed out; retrying");
                    self.follow();
                }
            }
        }
    }
}
