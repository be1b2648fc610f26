//! Test support: a node running the workflow service on a fresh database, and the waits and
//! queries the workflow and scheduler tests share.
//!
//! Built with the `testing` feature (which turns on `dbos_kernel`'s). Every helper panics on
//! failure, with a message naming what was awaited: they are for tests only.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use dbos_kernel::{testing, Kernel};
use parking_lot::Mutex;
use sqlx::PgPool;

use crate::workflow::{Options, Registry, Service};

/// Longest a helper waits for an event before it fails the test.
pub const WAIT: Duration = Duration::from_secs(30);

/// Counts how often each named thing ran.
#[derive(Clone, Debug, Default)]
pub struct Counter(Arc<Mutex<HashMap<String, usize>>>);

impl Counter {
    /// Counts one run of `what`.
    pub fn hit(&self, what: &str) {
        *self.0.lock().entry(what.to_owned()).or_default() += 1;
    }

    /// Runs of `what` so far.
    pub fn get(&self, what: &str) -> usize {
        self.0.lock().get(what).copied().unwrap_or(0)
    }
}

/// A booted node with the workflow service launched, on a test database.
pub struct Node {
    /// The node's kernel.
    pub kernel: Kernel,
    /// Its workflow service.
    pub wf: Service,
    /// The test database it runs on (kept so it outlives the node).
    pub db: testing::TestDb,
}

impl Node {
    /// The node's pool.
    pub fn pool(&self) -> &PgPool {
        self.kernel.pool()
    }

    /// Shuts the node down.
    pub async fn stop(self) {
        self.kernel.shutdown().await.expect("shutdown");
    }

    /// Waits until this node's dispatcher has completed `rounds` more rounds (claim and, when
    /// due, the sweeps) than when called. With `rounds >= 2`, at least one whole round started
    /// after the call, so it saw everything committed before it: a test asserts "nothing was
    /// claimed" only after this.
    pub async fn dispatcher_rounds(&self, rounds: u64) {
        let mut rx = self.wf.scheduler().rounds();
        let start = *rx.borrow_and_update();
        tokio::time::timeout(WAIT, rx.wait_for(|n| *n >= start + rounds))
            .await
            .unwrap_or_else(|_| panic!("the dispatcher completed {rounds} rounds"))
            .expect("the dispatcher is running");
    }

    /// Waits until no task runs on this node's slots: every workflow execution it started
    /// has returned, so none of them can record another step.
    pub async fn wait_no_tasks_running(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let running = self.kernel.runtime().running();
            if running == 0 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the node's tasks ended ({running} still running)"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Boots a kernel with every service's schema on a fresh database, and no service: nothing
/// claims, fires a schedule or sweeps meanwhile.
pub async fn kernel_alone() -> (testing::TestDb, Kernel) {
    let db = testing::database().await;
    let kernel = Kernel::boot(db.config(), &crate::migrations())
        .await
        .expect("boot");
    (db, kernel)
}

/// Boots a node on a fresh database with the workflows `register` adds.
pub async fn node(register: impl FnOnce(&mut Registry)) -> Node {
    let db = testing::database().await;
    node_on(db, register, Options::default()).await
}

/// Boots a node on `db` (which other nodes may share) with the workflows `register` adds; the
/// dispatcher polls every 100 ms.
pub async fn node_on(
    db: testing::TestDb,
    register: impl FnOnce(&mut Registry),
    opts: Options,
) -> Node {
    let config = db.config();
    node_with(db, config, register, opts).await
}

/// [`node_on`] with the kernel's configuration `config` (on `db`, perhaps through another
/// address).
pub async fn node_with(
    db: testing::TestDb,
    config: dbos_kernel::Config,
    register: impl FnOnce(&mut Registry),
    opts: Options,
) -> Node {
    let kernel = Kernel::boot(config, &crate::migrations())
        .await
        .expect("boot");
    let mut registry = Registry::new();
    register(&mut registry);
    let opts = Options {
        scheduler: dbos_scheduler::Options {
            poll_interval_ms: 100,
            ..opts.scheduler.clone()
        },
        ..opts
    };
    let wf = Service::launch(&kernel, registry, opts)
        .await
        .expect("launch");
    Node { kernel, wf, db }
}

/// The status of workflow `id`, or `""` when there is no such workflow.
pub async fn status(pool: &PgPool, id: &str) -> String {
    sqlx::query_scalar::<_, Option<String>>(
        "SELECT status FROM dbos.workflow_status WHERE workflow_uuid = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
    .expect("status")
    .flatten()
    .unwrap_or_default()
}

/// Waits until workflow `id` has status `want`.
pub async fn wait_status(pool: &PgPool, id: &str, want: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let s = status(pool, id).await;
        if s == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} reached {want} (is {s})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The recorded operations of workflow `id`: (function ID, name), in order.
pub async fn step_names(pool: &PgPool, id: &str) -> Vec<(i32, String)> {
    sqlx::query_as("SELECT function_id, function_name FROM dbos.operation_outputs WHERE workflow_uuid = $1 ORDER BY 1")
        .bind(id)
        .fetch_all(pool)
        .await
        .expect("steps")
}

/// Forks `id` from `step` as `new_id`, wakes the dispatcher and waits for the fork's result.
pub async fn fork_and_wait<O: serde::de::DeserializeOwned>(
    n: &Node,
    id: &str,
    step: i32,
    new_id: &str,
) -> O {
    let forked = crate::workflow::manage::fork(n.pool(), id, step, Some(new_id.to_owned()), None)
        .await
        .expect("fork");
    n.wf.wake();
    n.wf.handle(forked)
        .result()
        .await
        .expect("the fork finishes")
}

/// Inserts a workflow row as an earlier execution left it: its status, owner, recovery
/// attempts, an input of `4`, and the recorded `steps` (function ID, name, output).
#[allow(clippy::too_many_arguments)]
pub async fn seed(
    pool: &PgPool,
    id: &str,
    name: &str,
    status: &str,
    executor: &str,
    version: &str,
    attempts: i64,
    steps: &[(i32, &str, &str)],
) {
    // One transaction, as real writers do: a dispatcher never sees the row without its input.
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query(
        "INSERT INTO dbos.workflow_status (workflow_uuid, status, name, executor_id, application_version, recovery_attempts, queue_name, serialization, owner_xid)
         VALUES ($1, $2, $3, $4, $5, $6, CASE WHEN $2 = 'ENQUEUED' THEN '_dbos_internal_queue' END, 'portable_json', 'old-owner')",
    )
    .bind(id).bind(status).bind(name).bind(executor).bind(version).bind(attempts)
    .execute(&mut *tx).await.expect("seed status");
    sqlx::query("INSERT INTO dbos.workflow_input (workflow_uuid, inputs) VALUES ($1, '{\"positionalArgs\":[4],\"namedArgs\":{}}')")
        .bind(id).execute(&mut *tx).await.expect("seed input");
    for (fid, fname, out) in steps {
        sqlx::query("INSERT INTO dbos.operation_outputs (workflow_uuid, function_id, function_name, output, serialization) VALUES ($1, $2, $3, $4, 'portable_json')")
            .bind(id).bind(fid).bind(fname).bind(out).execute(&mut *tx).await.expect("seed step");
    }
    tx.commit().await.expect("commit");
}
