//! The suites.

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

/// A node booted for benchmarking, with the benchmark workflows registered.
pub(crate) struct Env {
    kernel: Kernel,
    wf: Service,
    url: String,
    _scratch: Option<tempfile::TempDir>,
}

/// Name of the benchmark workflow: `n` no-op steps.
const STEPS: &str = "bench.steps";

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

fn bar(len: u64, what: &str) -> ProgressBar {
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
async fn counters(pool: &PgPool) -> Result<(i64, String)> {
    Ok(sqlx::query_as(
        "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::int8, pg_current_wal_lsn()::text",
    )
    .fetch_one(pool)
    .await?)
}

async fn wal_since(pool: &PgPool, lsn: &str) -> Result<f64> {
    Ok(
        sqlx::query_scalar("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::float8")
            .bind(lsn)
            .fetch_one(pool)
            .await?,
    )
}

/// Runs `callers` loops of `op` for `run`; returns operations done and their latencies (ms).
async fn drive<F, Fut>(callers: usize, run: Duration, op: F) -> (u64, Vec<f64>, Duration)
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

pub(crate) async fn ceiling(env: &Env, plan: Plan, out: &mut Ceiling) -> Result<Vec<Row>> {
    sqlx::query("CREATE TABLE IF NOT EXISTS public.bench_ceiling (id bigserial PRIMARY KEY, v int NOT NULL)")
        .execute(env.pool())
        .await?;
    let clients = [1usize, 8, 32];
    let pb = bar(
        (clients.len() * plan.repeats) as u64,
        "ceiling: INSERT commits",
    );
    let mut rows = Vec::new();
    for &c in &clients {
        let pool = db::connect(
            &env.url,
            &PoolLimits {
                size_max: c as u32,
                ..PoolLimits::default()
            },
        )
        .await?;
        let mut rates = Vec::new();
        let mut lats = Vec::new();
        for _ in 0..plan.repeats {
            let p = pool.clone();
            let (n, l, took) = drive(c, plan.run, move || {
                let p = p.clone();
                async move {
                    sqlx::query("INSERT INTO public.bench_ceiling (v) VALUES (1)")
                        .execute(&p)
                        .await?;
                    Ok(())
                }
            })
            .await;
            rates.push(n as f64 / took.as_secs_f64());
            lats.extend(l);
            pb.inc(1);
        }
        pool.close().await;
        let mut row = Row::new(
            "ceiling",
            format!(
                "single-row INSERT commit, {c} client{}",
                if c == 1 { "" } else { "s" }
            ),
            &rates,
            "commits/s",
            plan.repeats,
        );
        out.commits_per_s.insert(c, row.ours);
        row.p50_ms = Some(quantile(&mut lats, 0.5));
        row.p99_ms = Some(quantile(&mut lats, 0.99));
        rows.push(row);
    }
    pb.finish_and_clear();
    Ok(rows)
}

pub(crate) async fn workflow(env: &Env, plan: Plan, ceiling: &Ceiling) -> Result<Vec<Row>> {
    // (steps, callers, via queue)
    let workloads: Vec<(u32, usize, bool)> = if plan.quick {
        vec![(3, 1, false), (3, 32, false), (3, 32, true)]
    } else {
        let mut w = Vec::new();
        for steps in [1, 3, 10] {
            for callers in [1, 8, 32] {
                w.push((steps, callers, false));
            }
        }
        w.push((3, 1, true));
        w.push((3, 32, true));
        w
    };
    let pb = bar((workloads.len() * plan.repeats) as u64, "workflow");
    let mut rows = Vec::new();
    for (steps, callers, queued) in workloads {
        let mut rates = Vec::new();
        let mut lats = Vec::new();
        let mut commits = Vec::new();
        let mut wal = Vec::new();
        for _ in 0..plan.repeats {
            let (xid0, lsn0) = counters(env.pool()).await?;
            let wf = env.wf.clone();
            let (n, l, took) = drive(callers, plan.run, move || {
                let wf = wf.clone();
                async move {
                    let out: u32 = if queued {
                        wf.enqueue::<_, u32>("bench", STEPS, (steps,), StartOptions::default())
                            .await?
                            .result()
                            .await?
                    } else {
                        wf.run(STEPS, (steps,), StartOptions::default()).await?
                    };
                    anyhow::ensure!(out == steps, "the workflow returned {out}, not {steps}");
                    Ok(())
                }
            })
            .await;
            let (xid1, _) = counters(env.pool()).await?;
            let wal_bytes = wal_since(env.pool(), &lsn0).await?;
            rates.push(n as f64 / took.as_secs_f64());
            // Minus the counter query's own transaction id.
            commits.push((xid1 - xid0 - 1).max(0) as f64 / n.max(1) as f64);
            wal.push(wal_bytes / n.max(1) as f64);
            lats.extend(l);
            pb.inc(1);
        }
        let (med, _, _) = summarize(&rates);
        let (commits_per_wf, _, _) = summarize(&commits);
        let (wal_per_wf, _, _) = summarize(&wal);
        let bound = ceiling
            .commits_per_s
            .get(&callers)
            .map(|c| c / commits_per_wf.max(1.0));
        let mut extra = serde_json::Map::new();
        extra.insert("steps_per_s".into(), (med * f64::from(steps)).into());
        extra.insert("commits_per_wf".into(), commits_per_wf.into());
        extra.insert("wal_bytes_per_wf".into(), wal_per_wf.into());
        let mut row = Row::new(
            "workflow",
            format!(
                "{steps}-step workflow, {callers} caller{}, {}",
                if callers == 1 { "" } else { "s" },
                if queued { "queued" } else { "direct" }
            ),
            &rates,
            "workflows/s",
            plan.repeats,
        );
        row.baseline = bound;
        row.baseline_name = Some(format!("commit bound: ceiling({callers}) ÷ commits/wf"));
        row.ratio = bound.map(|b| med / b);
        row.p50_ms = Some(quantile(&mut lats, 0.5));
        row.p99_ms = Some(quantile(&mut lats, 0.99));
        row.extra = extra;
        rows.push(row);
    }
    pb.finish_and_clear();
    Ok(rows)
}

/// Latencies of one caller, in ms.
#[derive(Default)]
struct Latencies(Vec<f64>);

impl Latencies {
    fn push(&mut self, ms: f64) {
        self.0.push(ms);
    }
}

/// Version of DBOS for Python the peer suite measures.
const PEER_VERSION: &str = "3.4.0";

/// A virtualenv with DBOS for Python, made on first use; `None` when python3 is missing.
async fn peer_python() -> Result<Option<std::path::PathBuf>> {
    if tokio::process::Command::new("python3")
        .arg("--version")
        .output()
        .await
        .is_err()
    {
        return Ok(None);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    let venv = cache.join(format!("dbos-bench/dbos-py-{PEER_VERSION}"));
    let python = venv.join("bin/python");
    if !venv.join(".installed").exists() {
        let ok = tokio::process::Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&venv)
            .status()
            .await?;
        anyhow::ensure!(ok.success(), "python3 -m venv failed; install python3-venv");
        let ok = tokio::process::Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .arg(format!("dbos=={PEER_VERSION}"))
            .status()
            .await?;
        anyhow::ensure!(ok.success(), "pip install dbos=={PEER_VERSION} failed");
        std::fs::write(venv.join(".installed"), b"")?;
    }
    Ok(Some(python))
}

/// Runs the same workflow workload with DBOS for Python against the same Postgres, beside ours.
pub(crate) async fn peer(env: &Env, plan: Plan) -> Result<Vec<Row>> {
    let Some(python) = peer_python().await? else {
        eprintln!("NOTICE: python3 is not installed; the peer suite (DBOS for Python) is skipped");
        return Ok(Vec::new());
    };
    let script = std::env::temp_dir().join(format!("dbos_peer_{}.py", std::process::id()));
    std::fs::write(&script, include_str!("../peer/dbos_peer.py"))?;
    let base = env
        .url
        .rsplit_once('/')
        .map(|(b, _)| b.to_owned())
        .unwrap_or_default();
    let peer_url = format!("{base}/bench_peer");
    let workloads: &[usize] = if plan.quick { &[1] } else { &[1, 8, 32] };
    let pb = bar(
        (workloads.len() * plan.repeats) as u64,
        "peer: DBOS for Python",
    );
    let mut rows = Vec::new();
    for &callers in workloads {
        let (mut theirs, mut ours, mut lats) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..plan.repeats {
            let out = tokio::process::Command::new(&python)
                .arg(&script)
                .arg(&peer_url)
                .arg("3")
                .arg(callers.to_string())
                .arg(plan.run.as_secs_f64().to_string())
                .output()
                .await?;
            anyhow::ensure!(
                out.status.success(),
                "the DBOS for Python workload failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let v: serde_json::Value = serde_json::from_slice(
                out.stdout
                    .rsplit(|b| *b == b'\n')
                    .find(|l| !l.is_empty())
                    .unwrap_or_default(),
            )?;
            let n = v["workflows"].as_f64().unwrap_or(0.0);
            theirs.push(n / v["seconds"].as_f64().unwrap_or(1.0));
            if let Some(l) = v["latencies_ms"].as_array() {
                lats.extend(l.iter().filter_map(|x| x.as_f64()));
            }
            let wf = env.wf.clone();
            let (n, _, took) = drive(callers, plan.run, move || {
                let wf = wf.clone();
                async move {
                    let _: u32 = wf.run(STEPS, (3u32,), StartOptions::default()).await?;
                    Ok(())
                }
            })
            .await;
            ours.push(n as f64 / took.as_secs_f64());
            pb.inc(1);
        }
        let (their_med, _, _) = summarize(&theirs);
        let mut row = Row::new(
            "peer",
            format!(
                "3-step workflow, {callers} caller{}",
                if callers == 1 { "" } else { "s" }
            ),
            &ours,
            "workflows/s",
            plan.repeats,
        );
        row.baseline = Some(their_med);
        row.baseline_name = Some(format!(
            "DBOS for Python {PEER_VERSION}, same Postgres, same run"
        ));
        row.ratio = Some(row.ours / their_med.max(f64::MIN_POSITIVE));
        row.extra
            .insert("peer_p50_ms".into(), quantile(&mut lats, 0.5).into());
        rows.push(row);
    }
    let _ = std::fs::remove_file(&script);
    pb.finish_and_clear();
    Ok(rows)
}

/// Recovery: N PENDING 3-step workflows left by a dead node (inserted as its crash leaves them,
/// one step already recorded), then the time until this node has recovered and finished all.
pub(crate) async fn recovery(env: &Env, plan: Plan) -> Result<Vec<Row>> {
    let sizes: &[i64] = if plan.quick {
        &[1_000]
    } else {
        &[1_000, 10_000]
    };
    let pb = bar((sizes.len() * plan.repeats) as u64, "recovery");
    let mut rows = Vec::new();
    for &n in sizes {
        let mut secs = Vec::new();
        for rep in 0..plan.repeats {
            let dead = format!("bench-dead-{n}-{rep}-{}", std::process::id());
            // One transaction, as the dead node's commits would have left them.
            let mut tx = env.pool().begin().await?;
            sqlx::query(
                "INSERT INTO dbos.workflow_status (workflow_uuid, status, name, executor_id,
                     application_version, recovery_attempts, owner_xid, serialization)
                 SELECT $1 || '-' || i, 'PENDING', $2, $1, $3, 1, 'gone', 'portable_json'
                 FROM generate_series(1, $4) i",
            )
            .bind(&dead)
            .bind(STEPS)
            .bind(env.wf.app_version())
            .bind(n)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO dbos.workflow_input (workflow_uuid, inputs)
                 SELECT $1 || '-' || i, '{\"namedArgs\":{},\"positionalArgs\":[3]}' FROM generate_series(1, $2) i",
            )
            .bind(&dead)
            .bind(n)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO dbos.operation_outputs (workflow_uuid, function_id, function_name, output, serialization)
                 SELECT $1 || '-' || i, 1, 'noop', '0', 'portable_json' FROM generate_series(1, $2) i",
            )
            .bind(&dead)
            .bind(n)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            let start = Instant::now();
            let recovered = env.wf.recover(std::slice::from_ref(&dead)).await?;
            anyhow::ensure!(recovered == n as u64, "recovered {recovered} of {n}");
            loop {
                let left: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM dbos.workflow_status
                     WHERE workflow_uuid LIKE $1 || '-%' AND status <> 'SUCCESS'",
                )
                .bind(&dead)
                .fetch_one(env.pool())
                .await?;
                if left == 0 {
                    break;
                }
                anyhow::ensure!(
                    start.elapsed() < Duration::from_secs(600),
                    "{left} workflows never finished"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            secs.push(start.elapsed().as_secs_f64());
            pb.inc(1);
        }
        let mut row = Row::new(
            "recovery",
            format!("{n} pending 3-step workflows of a dead node, recovered and finished"),
            &secs,
            "s",
            plan.repeats,
        );
        row.extra
            .insert("workflows_per_s".into(), (n as f64 / row.ours).into());
        rows.push(row);
    }
    pb.finish_and_clear();
    Ok(rows)
}
