//! The suites: one module each, sharing the benchmark node and the load driver.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use dbos_kernel::db::{self, PoolLimits};
use dbos_kernel::{Config, Kernel};
use dbos_services::workflow::{Options, Registry, Service, StartOptions, WfCtx, WfError};
use indicatif::{ProgressBar, ProgressStyle};
use sqlx::PgPool;

use crate::{quantile, summarize, Plan, Row};

mod ceiling;
mod fs;
mod peer;
mod recovery;
mod workflow;

pub(crate) use ceiling::ceiling;
pub(crate) use fs::fs;
pub(crate) use peer::peer;
pub(crate) use recovery::recovery;
pub(crate) use workflow::workflow;

/// A node booted for benchmarking, with the benchmark workflows registered.
pub(crate) struct Env {
    kernel: Kernel,
    wf: Service,
    url: String,
    _scratch: Option<tempfile::TempDir>,
}

/// Name of the benchmark workflow: `n` no-op steps.
pub(super) const STEPS: &str = "bench.steps";

async fn noop_steps(ctx: WfCtx, (n,): (u32,)) -> Result<u32, WfError> {
    for i in 0..n {
        ctx.step("noop", || async move { Ok(i) }).await?;
    }
    Ok(n)
}

impl Env {
    pub(crate) async fn start(database_url: Option<String>) -> Result<Env> {
        let scratch = match database_url {
            Some(_) => None,
            None => {
                let d = tempfile::Builder::new().prefix("dbos-bench-").tempdir()?;
                std::fs::set_permissions(
                    d.path(),
                    std::os::unix::fs::PermissionsExt::from_mode(0o755),
                )?;
                Some(d)
            }
        };
        let config = Config {
            database_url,
            data_dir: scratch
                .as_ref()
                .map(|d| d.path().join("data"))
                .unwrap_or_default(),
            slots: 256,
            pool_size_max: 48,
            ..Config::default()
        };
        let kernel = Kernel::boot(config, &dbos_services::migrations()).await?;
        let mut r = Registry::new();
        r.register(STEPS, noop_steps);
        let wf = Service::launch(
            &kernel,
            r,
            Options {
                poll_interval_ms: 200,
                ..Options::default()
            },
        )
        .await?;
        let url = kernel.url().to_owned();
        Ok(Env {
            kernel,
            wf,
            url,
            _scratch: scratch,
        })
    }

    pub(crate) async fn stop(self) -> Result<()> {
        self.kernel.shutdown().await?;
        Ok(())
    }

    fn pool(&self) -> &PgPool {
        self.kernel.pool()
    }
}

/// Commits per second by clients, measured by the ceiling suite.
#[derive(Debug, Default)]
pub(crate) struct Ceiling {
    pub(crate) commits_per_s: BTreeMap<usize, f64>,
}

pub(super) fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg:40} [{bar:30}] {pos}/{len} {elapsed}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    pb.set_message(what.to_owned());
    pb
}

/// Server-side counters: transaction ids assigned (= write transactions) and WAL position.
pub(super) async fn counters(pool: &PgPool) -> Result<(i64, String)> {
    Ok(sqlx::query_as(
        "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::int8, pg_current_wal_lsn()::text",
    )
    .fetch_one(pool)
    .await?)
}

pub(super) async fn wal_since(pool: &PgPool, lsn: &str) -> Result<f64> {
    Ok(
        sqlx::query_scalar("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::float8")
            .bind(lsn)
            .fetch_one(pool)
            .await?,
    )
}

/// Runs `callers` loops of `op` for `run`; returns operations done and their latencies (ms).
pub(super) async fn drive<F, Fut>(callers: usize, run: Duration, op: F) -> (u64, Vec<f64>, Duration)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let op = Arc::new(op);
    let start = Instant::now();
    let deadline = start + run;
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Latencies::default();
            while Instant::now() < deadline {
                let t = Instant::now();
                if let Err(e) = op().await {
                    eprintln!("benchmark operation failed: {e:#}");
                    break;
                }
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("caller task").0);
    }
    (all.len() as u64, all, start.elapsed())
}

/// Latencies of one caller, in ms.
#[derive(Default)]
pub(super) struct Latencies(Vec<f64>);

impl Latencies {
    pub(super) fn push(&mut self, ms: f64) {
        self.0.push(ms);
    }
}
