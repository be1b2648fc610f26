//! Shared fixtures of the workflow tests: a node with the workflow service on a fresh database.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use dbos_kernel::{testing, Kernel};
use dbos_services::workflow::{Options, Registry, Service};
use parking_lot::Mutex;
use sqlx::PgPool;

/// Counts how often each named thing ran.
#[derive(Clone, Default)]
pub struct Counter(Arc<Mutex<HashMap<String, usize>>>);

impl Counter {
    pub fn hit(&self, what: &str) {
        *self.0.lock().entry(what.to_owned()).or_default() += 1;
    }
    pub fn get(&self, what: &str) -> usize {
        self.0.lock().get(what).copied().unwrap_or(0)
    }
}

pub struct Node {
    pub kernel: Kernel,
    pub wf: Service,
    pub db: testing::TestDb,
}

impl Node {
    pub fn pool(&self) -> &PgPool {
        self.kernel.pool()
    }
    pub async fn stop(self) {
        self.kernel.shutdown().await.expect("shutdown");
    }
}

/// Boots a node on a fresh database with the workflows `register` adds.
pub async fn node(register: impl FnOnce(&mut Registry)) -> Node {
    let db = testing::database().await;
    node_on(db, register, Options::default()).await
}

pub async fn node_on(
    db: testing::TestDb,
    register: impl FnOnce(&mut Registry),
    opts: Options,
) -> Node {
    let kernel = Kernel::boot(db.config(), &dbos_services::migrations())
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

pub async fn wait_status(pool: &PgPool, id: &str, want: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
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
    let forked =
        dbos_services::workflow::manage::fork(n.pool(), id, step, Some(new_id.to_owned()), None)
            .await
            .expect("fork");
    n.wf.wake();
    n.wf.handle(forked)
        .result()
        .await
        .expect("the fork finishes")
}

/// Inserts a workflow row as an earlier execution left it.
#[allow(clippy::too_many_arguments)]
pub async fn seed(
    pool: &sqlx::PgPool,
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
