//! The suites: one module each, sharing the benchmark node and the load driver.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use dbos_kernel::db::{self, PoolLimits};
use dbos_kernel::{Config, Kernel};
use dbos_services::workflow::{self as wf, Options, Registry, Service, StartOptions};
use indicatif::{ProgressBar, ProgressStyle};
use sqlx::PgPool;

use crate::{quantile, summarize, Plan, Row};

mod ceiling;
mod fs;
mod history;
mod msg;
mod peer;
mod prov;
mod queue;
mod recovery;
mod replicated;
mod restate;
mod workflow;

pub(crate) use ceiling::ceiling;
pub(crate) use fs::fs;
pub(crate) use history::history;
pub(crate) use msg::msg;
pub(crate) use peer::peer;
pub(crate) use prov::prov;
pub(crate) use queue::queue;
pub(crate) use recovery::recovery;
pub(crate) use replicated::replicated;
pub(crate) use workflow::workflow;

/// A node booted for benchmarking, with the benchmark workflows registered.
pub(crate) struct Env {
    kernel: Kernel,
    wf: Service,
    url: String,
    /// The superuser's URL on an embedded cluster, else `url`: peers create their databases.
    admin_url: String,
    /// Settings of the embedded cluster given with `--pg-setting`, for the report.
    settings_given: Vec<(String, String)>,
    /// Whether each run samples its backends' wait events (`--waits`).
    sample_waits: bool,
    scratch: Option<tempfile::TempDir>,
}

/// Name of the benchmark workflow: `n` no-op steps.
pub(super) const STEPS: &str = "bench.steps";

async fn noop_steps(ctx: wf::Context, (n,): (u32,)) -> Result<u32, wf::Error> {
    for i in 0..n {
        ctx.step("noop", || async move { Ok(i) }).await?;
    }
    Ok(n)
}

/// The benchmark workflows every benchmark node registers.
fn registry() -> Registry {
    let mut r = Registry::new();
    r.register(STEPS, noop_steps);
    r.register(msg::PONG, msg::pong);
    r.register(msg::PING, msg::ping);
    r.register(msg::PROBE, msg::probe);
    r.register(msg::TOPIC_READER, msg::topic_reader);
    r.register(msg::WAIT_RECV, msg::wait_recv);
    r.register(msg::WAIT_SLEEP, msg::wait_sleep);
    r.register(queue::NOOP, queue::noop);
    r.register(queue::STARTED, queue::started_at);
    r.register(prov::FILES, prov::files);
    r
}

impl Env {
    /// `settings`: extra settings of the embedded cluster (none with `database_url`).
    pub(crate) async fn start(
        database_url: Option<String>,
        settings: &[(String, String)],
        sample_waits: bool,
    ) -> Result<Env> {
        let scratch = match database_url {
            Some(_) => None,
            None => {
                let tmp = std::env::temp_dir();
                let swept = crate::scratch::sweep(&tmp);
                if swept > 0 {
                    eprintln!(
                        "NOTICE: removed {swept} scratch director{} of earlier runs that were \
                         killed",
                        if swept == 1 { "y" } else { "ies" }
                    );
                }
                Some(crate::scratch::cluster_dir(&tmp)?)
            }
        };
        // Server time per statement comes from pg_stat_statements where the embedded server has
        // the module.
        let statements = scratch.is_some()
            && dbos_kernel::embedded::server_module_available(None, "pg_stat_statements");
        let pg_settings = embedded_settings(statements, settings);
        let config = Config {
            database_url,
            pg_settings,
            data_dir: scratch
                .as_ref()
                .map(|d| d.path().join("data"))
                .unwrap_or_default(),
            slots: NODE_SLOTS,
            pool_size_max: 48,
            // A scratch cluster: it quits with this process, however the run ends.
            pg_stop_with_node: true,
            ..Config::default()
        };
        let kernel = Kernel::boot(config, &dbos_services::migrations()).await?;
        let wf = Service::launch(
            &kernel,
            registry(),
            Options {
                scheduler: dbos_scheduler::Options {
                    poll_interval_ms: 200,
                    ..dbos_scheduler::Options::default()
                },
                ..Options::default()
            },
        )
        .await?;
        let url = kernel.url().to_owned();
        let admin_url = kernel.superuser_url().unwrap_or(&url).to_owned();
        if statements {
            sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements SCHEMA public")
                .execute(&mut <sqlx::PgConnection as sqlx::Connection>::connect(&admin_url).await?)
                .await?;
        } else if !statements_readable(kernel.pool()).await {
            // A server of the caller's may have the extension: then it is read as it is.
            eprintln!(
                "NOTICE: pg_stat_statements is not available; server time per statement is not \
                 measured"
            );
        }
        Ok(Env {
            kernel,
            wf,
            url,
            admin_url,
            settings_given: settings.to_vec(),
            sample_waits,
            scratch,
        })
    }

    /// The admin URL with database `db` instead of its own: where a peer keeps its tables.
    pub(super) fn peer_url(&self, db: &str) -> String {
        db::on_database(&self.admin_url, db)
    }

    /// Whether the run's database is a scratch cluster of this run (not `--database-url`).
    pub(crate) fn is_scratch(&self) -> bool {
        self.scratch.is_some()
    }

    pub(crate) async fn stop(self) -> Result<()> {
        self.kernel.shutdown().await?;
        Ok(())
    }

    fn pool(&self) -> &PgPool {
        self.kernel.pool()
    }

    /// The machine, the server's durability settings and the plan, for the report.
    pub(crate) async fn describe(&self, plan: Plan) -> Result<serde_json::Value> {
        let settings: Vec<(String, String)> = sqlx::query_as(
            "SELECT name, current_setting(name) FROM unnest(ARRAY['server_version', 'fsync',
                 'synchronous_commit', 'wal_sync_method', 'shared_buffers', 'full_page_writes',
                 'max_connections', 'wal_compression', 'max_wal_size', 'checkpoint_timeout']) name",
        )
        .fetch_all(self.pool())
        .await?;
        let mut postgres = serde_json::Map::new();
        for (k, v) in settings {
            postgres.insert(k, v.into());
        }
        let os = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|r| format!("Linux {}", r.trim()))
            .unwrap_or_else(|_| std::env::consts::OS.to_owned());
        Ok(serde_json::json!({
            "measured_at": chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
            "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "os": os,
            "build": if cfg!(debug_assertions) { "debug" } else { "release" },
            "quick": plan.quick,
            "repeats": plan.repeats,
            "run_s": plan.run.as_secs_f64(),
            "postgres": postgres,
            "pg_settings_given": self
                .settings_given
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>(),
        }))
    }
}

/// The settings of an embedded cluster: pg_stat_statements where `statements` (the server has
/// the module), then those `given`, which override them; a `shared_preload_libraries` given
/// keeps pg_stat_statements among its libraries, so server time per statement is still read.
fn embedded_settings(statements: bool, given: &[(String, String)]) -> Vec<(String, String)> {
    const PRELOAD: &str = "shared_preload_libraries";
    let mut settings = Vec::new();
    if statements {
        settings.push((PRELOAD.to_owned(), "pg_stat_statements".to_owned()));
        settings.push((
            "pg_stat_statements.track_planning".to_owned(),
            "on".to_owned(),
        ));
    }
    for (name, value) in given {
        let mut value = value.clone();
        if statements
            && name == PRELOAD
            && !value.split(',').any(|l| l.trim() == "pg_stat_statements")
        {
            value = if value.trim().is_empty() {
                "pg_stat_statements".to_owned()
            } else {
                format!("{value},pg_stat_statements")
            };
        }
        settings.push((name.clone(), value));
    }
    settings
}

/// Workflows each node of the bench runs at once. A claimed workflow holds its slot from its
/// claim to its outcome's commit, so by Little's law a node drains at most `slots` ÷ that time:
/// a claim of 256 no-op workflows alone executes for about 13 ms, and a drain near 20,000
/// workflows/s keeps several hundred in flight. With 256 slots, every claim after the first
/// took the few slots freed meanwhile, and a drain ran at about 0.7 of the rate with 1,024.
pub(crate) const NODE_SLOTS: u32 = 1024;

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

/// Server-side counters, read before and after a run.
///
/// - `xid`: the next transaction id; the difference is the write transactions (commits that
///   assigned an id), exact.
/// - `lsn`: the WAL position; the difference is the WAL bytes written, exact.
/// - `xacts`: `xact_commit + xact_rollback` of this database in `pg_stat_database`: every
///   transaction, read-only ones included. Each single-statement call is one transaction and
///   one round trip, so for work made of single statements (as a workflow's starts,
///   checkpoints, claims and outcomes are) this counts its round trips.
/// - `wal_syncs`: `pg_stat_wal.wal_sync`, the WAL fsyncs (server-wide).
///
/// A backend publishes these statistics as a transaction ends, at most once a second, and one
/// whose last transaction ended within that second holds them back ten seconds more. So
/// [`Counters::read`] first waits a second, then runs an empty statement on every idle
/// connection of the node ([`dbos_kernel::db::Endpoint::touch_idle`]), kept ones included,
/// which makes each publish. Those statements, and the earlier reading's own, are transactions
/// of the window too, and are subtracted.
#[derive(Debug, Clone)]
pub(super) struct Counters {
    xid: i64,
    lsn: String,
    xacts: i64,
    wal_syncs: i64,
    /// Full-page images written to the WAL.
    wal_fpi: i64,
    /// Blocks of this database read from outside the server's buffers.
    blocks_read: i64,
    /// Empty statements the reading ran to make the connections publish.
    touched: i64,
    /// CPU time of this process, ms, when the reading ended (where a run starts).
    cpu_ours_ms: f64,
    /// CPU time of the Postgres processes on this host, those that have exited included, ms,
    /// when the reading ended.
    cpu_pg_ms: f64,
    /// The same two when the reading began (where a run ended), before its wait for the
    /// statistics: the idle node's CPU during that wait is no run's.
    cpu_at_call_ms: (f64, f64),
    /// Per statement (pg_stat_statements, where installed): calls, planning and execution ms,
    /// text.
    statements: BTreeMap<i64, (i64, f64, String)>,
    /// When the reading began (where a run ended).
    called_at: Instant,
    /// With `--waits`, the wait events sampled from the end of this reading on.
    waits: Option<Arc<WaitSampler>>,
}

/// Per-operation differences of two [`Counters`].
#[derive(Debug, Clone)]
pub(super) struct PerOp {
    pub(super) commits: f64,
    pub(super) xacts: f64,
    pub(super) wal_bytes: f64,
    pub(super) wal_syncs: f64,
    pub(super) wal_fpi: f64,
    pub(super) blocks_read: f64,
    pub(super) cpu_ours_ms: f64,
    pub(super) cpu_pg_ms: f64,
    /// Statements executed (none known without pg_stat_statements).
    pub(super) statements: Option<f64>,
    /// Server time of those statements (planning and execution), ms.
    pub(super) server_ms: Option<f64>,
    /// The statements that took most server time: mean ms per call, calls per operation, and
    /// the start of the text.
    pub(super) top: Vec<(f64, f64, String)>,
    /// With `--waits`: observations of active backends per wait event, and the samples taken.
    pub(super) waits: Option<(BTreeMap<String, u64>, u64)>,
}

impl PerOp {
    /// The median of one field over the measured runs.
    pub(super) fn median(ops: &[PerOp], f: fn(&PerOp) -> f64) -> f64 {
        summarize(&ops.iter().map(f).collect::<Vec<_>>()).0
    }

    /// The time budget fields, for a row's `measured` column; `per` names the operation:
    /// its durable writes (commits, WAL flushes, WAL bytes), the CPU of both processes, its
    /// statements and their server time, and the statements that took the most.
    pub(super) fn budget(
        ops: &[PerOp],
        per: &str,
        extra: &mut serde_json::Map<String, serde_json::Value>,
    ) {
        let median = |f: &dyn Fn(&PerOp) -> Option<f64>| {
            let v: Vec<f64> = ops.iter().filter_map(f).collect();
            (!v.is_empty()).then(|| summarize(&v).0)
        };
        let round = |v: f64| (v * 1000.0).round() / 1000.0;
        for (name, v) in [
            ("commits", median(&|p| Some(p.commits))),
            ("fsyncs", median(&|p| Some(p.wal_syncs))),
            ("wal_bytes", median(&|p| Some(p.wal_bytes))),
            ("cpu_ours_ms", median(&|p| Some(p.cpu_ours_ms))),
            ("cpu_pg_ms", median(&|p| Some(p.cpu_pg_ms))),
            ("stmts", median(&|p| p.statements)),
            ("server_ms", median(&|p| p.server_ms)),
        ] {
            if let Some(v) = v {
                extra.insert(format!("{name}_per_{per}"), round(v).into());
            }
        }
        let mut waits: BTreeMap<String, u64> = BTreeMap::new();
        let mut samples = 0;
        for (w, n) in ops.iter().filter_map(|p| p.waits.as_ref()) {
            for (event, k) in w {
                *waits.entry(event.clone()).or_default() += k;
            }
            samples += n;
        }
        if samples > 0 {
            let seen: u64 = waits.values().sum();
            extra.insert("waits".into(), wait_shares(&waits).into());
            extra.insert(
                "active_backends".into(),
                round(seen as f64 / samples as f64).into(),
            );
        }
        if let Some(last) = ops.last() {
            let top: Vec<String> = last
                .top
                .iter()
                .map(|(mean, calls, text)| format!("{calls:.2}× {mean:.3} ms {text}"))
                .collect();
            if !top.is_empty() {
                extra.insert("top_statements".into(), top.join(" | ").into());
            }
        }
    }
}

/// Waits until queue `queue` has no workflow ENQUEUED or PENDING, `what` failing after
/// 10 minutes. Each probe reads one entry of the in-flight index, so the waiting takes no CPU
/// from the work it waits for.
async fn until_queue_empty(pool: &PgPool, queue: &str, what: &str) -> Result<()> {
    let start = Instant::now();
    loop {
        let busy: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM dbos.workflow_status
                            WHERE queue_name = $1 AND status IN ('ENQUEUED', 'PENDING'))",
        )
        .bind(queue)
        .fetch_one(pool)
        .await?;
        if !busy {
            return Ok(());
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(600),
            "{what}: queue {queue:?} still has work after 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// CPU time (user + system) of a process from its `/proc/PID/stat` line, in clock ticks.
fn cpu_ticks(stat: &str) -> Option<u64> {
    stat_fields(stat, &[14, 15])
}

/// [`cpu_ticks`] plus the CPU time of the children the process has waited for (`cutime`,
/// `cstime`). Postgres's postmaster waits for every server process that exits: an autovacuum
/// worker, which runs for a fraction of a second and is gone before the next reading, or a
/// backend whose connection closed. Their CPU is counted there, and nowhere else once they
/// are gone.
fn cpu_ticks_with_reaped(stat: &str) -> Option<u64> {
    stat_fields(stat, &[14, 15, 16, 17])
}

/// The sum of numeric fields of a `/proc/PID/stat` line, numbered from 1 as in `proc(5)`.
fn stat_fields(stat: &str, fields: &[usize]) -> Option<u64> {
    // Fields after the command (which may hold spaces and parentheses) start at the state,
    // field 3.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    fields
        .iter()
        .map(|n| f.get(n.checked_sub(3)?)?.parse::<u64>().ok())
        .sum()
}

/// Milliseconds per clock tick.
fn ms_per_tick() -> f64 {
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100);
    1000.0 / hz as f64
}

/// CPU time of this process and of every `postgres` process on the host, ms. The latter
/// includes the server processes that have exited ([`cpu_ticks_with_reaped`]), so a run's
/// autovacuum work counts though its workers come and go within the run.
fn cpu_ms() -> (f64, f64) {
    let tick = ms_per_tick();
    let ours = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| cpu_ticks(&s))
        .unwrap_or(0);
    let mut pg = 0;
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            if !e
                .file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
            {
                continue;
            }
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            if stat.contains("(postgres)") {
                pg += cpu_ticks_with_reaped(&stat).unwrap_or(0);
            }
        }
    }
    (ours as f64 * tick, pg as f64 * tick)
}

/// How often [`WaitSampler`] looks at the backends.
const WAIT_SAMPLE_INTERVAL: Duration = Duration::from_millis(10);

/// The wait events of the run's database's active client backends, sampled every
/// [`WAIT_SAMPLE_INTERVAL`] from a connection to database `postgres` (so the run's database
/// counts none of its transactions) until dropped. `CPU` is a backend on a core or waiting for
/// one. Its queries cost the server about 1 % of a core, which the run's `cpu_pg` includes:
/// `dbos bench --waits` only.
pub(super) struct WaitSampler {
    samples: Arc<parking_lot::Mutex<Vec<WaitSample>>>,
    /// Told when the sampler is dropped: its task closes its connection and ends.
    stop: Arc<tokio::sync::Notify>,
}

/// When a sample was taken, and the wait event of each active backend then.
type WaitSample = (Instant, Vec<String>);

impl std::fmt::Debug for WaitSampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WaitSampler").finish_non_exhaustive()
    }
}

impl Drop for WaitSampler {
    fn drop(&mut self) {
        self.stop.notify_one();
    }
}

impl WaitSampler {
    /// Starts sampling; `None`, with a notice, when database `postgres` cannot be reached or
    /// the run's database is not known.
    async fn start(env: &Env) -> Option<WaitSampler> {
        use sqlx::Connection;
        let opened = async {
            // Read from the URL: a query on the run's database would be one of its
            // transactions.
            let opts: sqlx::postgres::PgConnectOptions = env.url.parse()?;
            let watched = opts
                .get_database()
                .ok_or_else(|| anyhow::anyhow!("the run's URL names no database"))?
                .to_owned();
            let conn = sqlx::PgConnection::connect(&env.peer_url("postgres")).await?;
            anyhow::Ok((watched, conn))
        };
        let (watched, mut conn) = match opened.await {
            Ok(o) => o,
            Err(e) => {
                static TOLD: std::sync::Once = std::sync::Once::new();
                TOLD.call_once(|| eprintln!("NOTICE: no wait events sampled: {e}"));
                return None;
            }
        };
        let samples = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let stop = Arc::new(tokio::sync::Notify::new());
        let (into, stopped) = (samples.clone(), stop.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(WAIT_SAMPLE_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = stopped.notified() => break,
                }
                let Ok(events) = sqlx::query_scalar::<_, String>(
                    "SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU')
                     FROM pg_stat_activity
                     WHERE datname = $1 AND state = 'active' AND backend_type = 'client backend'",
                )
                .bind(&watched)
                .fetch_all(&mut conn)
                .await
                else {
                    return;
                };
                into.lock().push((Instant::now(), events));
            }
            let _ = conn.close().await;
        });
        Some(WaitSampler { samples, stop })
    }

    /// Observations per wait event in the samples taken before `end`, and how many samples.
    fn until(&self, end: Instant) -> (BTreeMap<String, u64>, u64) {
        let samples = self.samples.lock();
        let mut waits = BTreeMap::new();
        let mut n = 0;
        for (_, events) in samples.iter().filter(|(at, _)| *at <= end) {
            n += 1;
            for e in events {
                *waits.entry(e.clone()).or_default() += 1;
            }
        }
        (waits, n)
    }
}

/// Wait events as shares of all observations, largest first, those under 1 % left out:
/// `CPU 46%, IO:WALSync 21%`.
fn wait_shares(waits: &BTreeMap<String, u64>) -> String {
    let total: u64 = waits.values().sum();
    let mut v: Vec<(&String, u64)> = waits.iter().map(|(e, n)| (e, *n)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    v.iter()
        .filter(|(_, n)| *n * 100 >= total)
        .map(|(e, n)| format!("{e} {:.0}%", *n as f64 * 100.0 / total as f64))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Transactions of a reading itself (its two queries), published with the next reading.
const READING_XACTS: i64 = 2;

/// Interval at which a Postgres backend publishes its statistics (`PGSTAT_MIN_INTERVAL`).
const STATS_PUBLISH_INTERVAL_MS: u64 = 1000;

impl Counters {
    /// The counters of `env`'s database, after every connection of its node (and of the nodes
    /// `also`) has published its statistics.
    pub(super) async fn read(env: &Env, also: &[&Kernel]) -> Result<Counters> {
        let called_at = Instant::now();
        let cpu_at_call_ms = cpu_ms();
        tokio::time::sleep(Duration::from_millis(STATS_PUBLISH_INTERVAL_MS + 100)).await;
        // A connection busy now publishes when it next idles.
        let mut touched = 0;
        for k in std::iter::once(&env.kernel).chain(also.iter().copied()) {
            touched += k.endpoint().touch_idle().await as i64;
        }
        let pool = env.pool();
        let (xid, lsn, xacts, wal_syncs, wal_fpi, blocks_read): (i64, String, i64, i64, i64, i64) =
            sqlx::query_as(
                "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::int8,
                    pg_current_wal_lsn()::text,
                    (SELECT xact_commit + xact_rollback FROM pg_stat_database
                     WHERE datname = current_database()),
                    (SELECT wal_sync FROM pg_stat_wal),
                    (SELECT wal_fpi FROM pg_stat_wal),
                    (SELECT blks_read FROM pg_stat_database WHERE datname = current_database())",
            )
            .fetch_one(pool)
            .await?;
        // Readable by any role for its own statements; absent without the extension.
        let statements: BTreeMap<i64, (i64, f64, String)> = sqlx::query_as::<_, (i64, i64, f64, String)>(
            "SELECT queryid, calls, total_exec_time + total_plan_time, left(regexp_replace(query, '\\s+', ' ', 'g'), 90)
             FROM public.pg_stat_statements
             WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND queryid IS NOT NULL",
        )
        .fetch_all(pool)
        .await
        .map(|rows| rows.into_iter().map(|(q, c, t, s)| (q, (c, t, s))).collect())
        .unwrap_or_else(|e| {
            static TOLD: std::sync::Once = std::sync::Once::new();
            TOLD.call_once(|| eprintln!("NOTICE: no statement statistics: {e}"));
            BTreeMap::new()
        });
        let (cpu_ours_ms, cpu_pg_ms) = cpu_ms();
        let waits = if env.sample_waits {
            WaitSampler::start(env).await.map(Arc::new)
        } else {
            None
        };
        Ok(Counters {
            xid,
            lsn,
            xacts,
            wal_syncs,
            wal_fpi,
            blocks_read,
            touched,
            cpu_ours_ms,
            cpu_pg_ms,
            cpu_at_call_ms,
            statements,
            called_at,
            waits,
        })
    }

    /// What happened between `self` and `later`, per each of `ops` operations.
    pub(super) async fn per_op(&self, later: &Counters, ops: u64, pool: &PgPool) -> Result<PerOp> {
        let wal_bytes: f64 =
            sqlx::query_scalar("SELECT pg_wal_lsn_diff($1::pg_lsn, $2::pg_lsn)::float8")
                .bind(&later.lsn)
                .bind(&self.lsn)
                .fetch_one(pool)
                .await?;
        let n = ops.max(1) as f64;
        // Statements run between the two readings; the readings' own are a few per run.
        let mut delta: Vec<(i64, f64, String)> = later
            .statements
            .iter()
            .filter_map(|(q, (calls, ms, text))| {
                let (c0, ms0) = self
                    .statements
                    .get(q)
                    .map(|(c, m, _)| (*c, *m))
                    .unwrap_or((0, 0.0));
                (calls > &c0).then(|| (calls - c0, ms - ms0, text.clone()))
            })
            .collect();
        let known = !later.statements.is_empty();
        let statements = known.then(|| delta.iter().map(|d| d.0 as f64).sum::<f64>() / n);
        let server_ms = known.then(|| delta.iter().map(|d| d.1).sum::<f64>() / n);
        delta.sort_by(|a, b| b.1.total_cmp(&a.1));
        let top = delta
            .iter()
            .take(6)
            .map(|(calls, ms, text)| (ms / *calls as f64, *calls as f64 / n, text.clone()))
            .collect();
        Ok(PerOp {
            cpu_ours_ms: (later.cpu_at_call_ms.0 - self.cpu_ours_ms).max(0.0) / n,
            cpu_pg_ms: (later.cpu_at_call_ms.1 - self.cpu_pg_ms).max(0.0) / n,
            statements,
            server_ms,
            top,
            waits: self.waits.as_ref().map(|w| w.until(later.called_at)),
            // Minus the reading query's own transaction id.
            commits: (later.xid - self.xid - 1).max(0) as f64 / n,
            xacts: (later.xacts - self.xacts - later.touched - READING_XACTS).max(0) as f64 / n,
            wal_bytes: wal_bytes / n,
            wal_syncs: (later.wal_syncs - self.wal_syncs).max(0) as f64 / n,
            wal_fpi: (later.wal_fpi - self.wal_fpi).max(0) as f64 / n,
            blocks_read: (later.blocks_read - self.blocks_read).max(0) as f64 / n,
        })
    }
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
    // Dropped with the run (a signal), the set aborts its callers.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..callers {
        let op = op.clone();
        tasks.spawn(async move {
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
        });
    }
    let mut all = Vec::new();
    while let Some(t) = tasks.join_next().await {
        all.extend(t.expect("caller task").0);
    }
    (all.len() as u64, all, start.elapsed())
}

/// `x` to two decimals, for a ratio in a row's `measured`.
pub(super) fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Latencies of one caller, in ms.
#[derive(Default)]
pub(super) struct Latencies(Vec<f64>);

impl Latencies {
    pub(super) fn push(&mut self, ms: f64) {
        self.0.push(ms);
    }
}

/// Whether `pg_stat_statements` is installed in the measured database and can be read (its
/// library loaded at server start).
async fn statements_readable(pool: &PgPool) -> bool {
    sqlx::query("SELECT 1 FROM pg_stat_statements LIMIT 1")
        .fetch_optional(pool)
        .await
        .is_ok()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::{cpu_ticks, cpu_ticks_with_reaped, embedded_settings, wait_shares};

    #[test]
    fn wait_shares_go_largest_first_without_the_rare_ones() {
        let waits: BTreeMap<String, u64> = [
            ("IO:WALSync", 210),
            ("CPU", 460),
            ("LWLock:WALWrite", 110),
            ("Client:ClientRead", 210),
            ("LWLock:BufferContent", 9),
            ("Lock:extend", 1),
        ]
        .into_iter()
        .map(|(e, n)| (e.to_owned(), n))
        .collect();
        assert_eq!(
            wait_shares(&waits),
            "CPU 46%, Client:ClientRead 21%, IO:WALSync 21%, LWLock:WALWrite 11%"
        );
        assert_eq!(wait_shares(&BTreeMap::new()), "");
    }

    #[test]
    fn cpu_ticks_read_a_process_and_the_children_it_waited_for() {
        // A postmaster's line (proc(5): utime 14, stime 15, cutime 16, cstime 17), with a
        // command name holding a space and a parenthesis.
        let stat = "4242 (post gres)) S 1 4242 4242 0 -1 4194560 9000 70000 0 0 \
                    120 30 5000 700 20 0 1 0 123456 229154816 7000 18446744073709551615";
        assert_eq!(cpu_ticks(stat), Some(150));
        assert_eq!(cpu_ticks_with_reaped(stat), Some(5850));
        assert_eq!(cpu_ticks("4242 (postgres) S 1 2"), None);
        assert_eq!(cpu_ticks("no command"), None);
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn given_settings_come_last_and_keep_pg_stat_statements_loaded() {
        let stats = [
            ("shared_preload_libraries", "pg_stat_statements"),
            ("pg_stat_statements.track_planning", "on"),
        ];
        assert_eq!(
            embedded_settings(true, &pairs(&[("wal_compression", "lz4")])),
            pairs(&[stats[0], stats[1], ("wal_compression", "lz4")])
        );
        assert_eq!(
            embedded_settings(
                true,
                &pairs(&[("shared_preload_libraries", "auto_explain")])
            ),
            pairs(&[
                stats[0],
                stats[1],
                (
                    "shared_preload_libraries",
                    "auto_explain,pg_stat_statements"
                )
            ])
        );
        assert_eq!(
            embedded_settings(
                true,
                &pairs(&[(
                    "shared_preload_libraries",
                    "pg_stat_statements, auto_explain"
                )])
            ),
            pairs(&[
                stats[0],
                stats[1],
                (
                    "shared_preload_libraries",
                    "pg_stat_statements, auto_explain"
                )
            ])
        );
        assert_eq!(
            embedded_settings(
                false,
                &pairs(&[("shared_preload_libraries", "auto_explain")])
            ),
            pairs(&[("shared_preload_libraries", "auto_explain")])
        );
        assert!(embedded_settings(false, &[]).is_empty());
    }
}
