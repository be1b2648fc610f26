//! The torture test: nodes run a mixed load while faults are injected at random: SIGKILL of a node,
//! SIGSTOP of a node past its lease, `pg_ctl restart -m immediate`, and storms of
//! `pg_terminate_backend`. The load, per cycle: workflows with transactional steps and messages;
//! workflows publishing to and reading from a topic; a parent reading its child's stream and event
//! while the child appends to a file in transactions; workflows on a queue with concurrency limits
//! (one of them delayed first), on a partitioned queue and on a queue with a rate limit; a ticker
//! cancelled before the fault and resumed after it, with the family, and forked after the fault; a
//! ticker ended by its deadline; a sink receiving messages sent from outside before and after the
//! fault; command tasks; tickers on a queue held as they are enqueued (paused, or given a placement
//! rule no node meets) and released after the fault; and through the whole run a cron schedule
//! firing every second, paused after the last cycle. Then the invariants are read from the tables:
//! every workflow ends in SUCCESS (the ticker ended by its deadline in CANCELLED, with its first
//! ticks only), every transaction committed once (a fork's only for the ticks it did not copy), no
//! tick of a cancelled ticker committed between its cancel's return and its resume, every message
//! consumed once and none left over, each sink's messages received once and in order, every topic
//! message published once and taken once by each reader, every stream value written once and read
//! once, each file append made once, no transaction of a queue with limits saw more of its queue
//! running than the limits allow, no window of the rated queue's period saw more starts than its
//! limit, no workflow of the held queue was claimed between its hold's return and its release, the
//! cron schedule ran every second from its first tick to its last once, and no process of the run
//! is left behind.
//!
//! The short variant runs with the tests. The long one:
//!
//! ```text
//! DBOS_TORTURE_CYCLES=1000 DBOS_TEST_WATCHDOG_S=14400 \
//!     cargo test --release --test torture -- --nocapture
//! ```
//!
//! `DBOS_TORTURE_SEED` replays a run's choice of faults (each run prints its seed).
//!
//! The nodes are this test binary run again with `--ignored --exact torture_node`: a node
//! registers the test's own workflows besides the built-in ones.
//!
//! `failover` runs the same load and checks on three hosts (network namespaces) against a
//! Postgres that fails over (`scripts/ha-cluster`: pg_auto_failover with a synchronous
//! standby): the primary is killed, and a host is cut off from the network past its lease.
//! It needs root, `ip netns` and pg_auto_failover; without them it says so and passes, except
//! under `CI=true`, where it fails. `DBOS_FAILOVER_CYCLES` (default 4) sets its length.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use dbos_kernel::embedded::{self, Cluster};
use dbos_kernel::testing::scratch_dir_for_cluster;
use dbos_kernel::{Config, Kernel};
use dbos_services::fs::{Fs, Identity, Options as FsOptions};
use dbos_services::msg::Start;
use dbos_services::prelude::*;
use dbos_services::scheduler::command::CommandSpec;
use dbos_services::scheduler::cron::{self, Schedule};
use dbos_services::scheduler::queues;
use dbos_services::scheduler::tasks;
use dbos_services::workflow::manage;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::PgPool;

/// Environment of a node process: the database URL.
const NODE_URL: &str = "DBOS_TORTURE_NODE_URL";
/// Environment variable every process of a run carries (nodes, their watchers and commands),
/// with the run's ID as value: what is left behind is found by it.
const RUN_MARK: &str = "DBOS_TORTURE_RUN";
/// Nodes running at once.
const NODES: usize = 3;
/// Workflows enqueued per cycle (a ring: each sends to the next and receives from the
/// previous), and command tasks.
const WORKFLOWS_PER_CYCLE: u32 = 12;
const COMMANDS_PER_CYCLE: u32 = 2;
/// Each cycle's topic: one workflow publishes `PUBLISHES` × `PER_PUBLISH` messages to it, and
/// `READERS` workflows each take all of them. Several readers on one node wait on the topic at
/// once, so their probes share statements.
const READERS: u32 = 8;
const PUBLISHES: u32 = 4;
const PER_PUBLISH: u32 = 5;
/// How long a reader waits for the next messages before it records an empty take and waits
/// again: its waits end both ways, by a publish and by the timer.
const READER_WAIT: Duration = Duration::from_millis(300);
/// Each cycle's family: a parent starts a child, which writes `FAMILY_VALUES` values to a
/// stream, each beside a transaction appending a line to a file, then sets an event; the
/// parent reads the stream, the event and the child's result.
const FAMILY_VALUES: u32 = 4;
/// The limited queue runs at most `GATED_AT_ONCE` of its workflows at once, and one per node;
/// each of the partitioned queue's `PARTITIONS` partitions runs one at a time. Each cycle
/// enqueues `GATED_PER_CYCLE` workflows on each.
const LIMITED_QUEUE: &str = "torture-limited";
const GATED_AT_ONCE: i64 = 2;
const GATED_PER_CYCLE: u32 = 4;
const PARTITIONED_QUEUE: &str = "torture-partitioned";
const PARTITIONS: u32 = 2;
/// Each cycle's ticker takes `TICKS` transactions, a durable sleep after each; the test cancels
/// it (and the cycle's family, with its child) before the cycle's fault and resumes them after.
const TICKS: u32 = 6;
/// Each cycle's late ticker has ticks for far longer than its timeout: its deadline cancels it.
const LATE_TICKS: u32 = 100_000;
const LATE_TIMEOUT_MS: i64 = 400;
/// The first workflow of each cycle's limited queue waits this long (DELAYED) before it joins.
const GATED_DELAY_MS: i64 = 300;
/// The rated queue starts at most `RATED_MAX` of its workflows in any `RATED_PERIOD_MS`; each
/// cycle enqueues `RATED_PER_CYCLE` tickers of one tick on it.
const RATED_QUEUE: &str = "torture-rated";
const RATED_MAX: usize = 2;
const RATED_PERIOD_MS: i64 = 500;
const RATED_PER_CYCLE: u32 = 4;
/// Each cycle enqueues `HELD_PER_CYCLE` tickers of one tick on this queue and holds it at
/// once, racing the claims of idle nodes, then releases it after the fault.
const HELD_QUEUE: &str = "torture-held";
const HELD_PER_CYCLE: u32 = 4;
/// Each cycle's sink receives `SINK_MESSAGES` messages the test sends it from outside, half
/// before the cycle's fault and half after; it waits `SINK_WAIT` for each before it records an
/// empty receive and waits again.
const SINK_MESSAGES: u32 = 8;
const SINK_WAIT: Duration = Duration::from_millis(200);
/// The run's cron schedule: a tick every second, each missed one backfilled, from its start to
/// after the last cycle.
const CRON: &str = "torture";
/// Node timing: a stalled node is past its lease after `LEASE_MS`.
const HEARTBEAT_MS: u64 = 200;
const LEASE_MS: u64 = 2_000;
/// How long the failover test waits for nodes to work again after a fault before it fails
/// (a generous bound against a hang, not a measure: the times are printed).
const RESUME_WAIT_MAX: Duration = Duration::from_secs(120);

/// The workflow of the load: a step, a transaction that adds one ledger row, a message to
/// the next workflow of its ring, a durable sleep, and the message of the previous one, which
/// it returns.
async fn ring(
    ctx: workflow::Context,
    (ring, i, n): (String, u32, u32),
) -> Result<String, workflow::Error> {
    let me = ctx.workflow_id().to_owned();
    let pause: u64 = ctx
        .step("pause", || async move { Ok(u64::from(i % 4) * 50) })
        .await?;
    ctx.transaction("ledger", move |c: &mut PgConnection| {
        let me = me.clone();
        Box::pin(async move {
            sqlx::query("INSERT INTO torture_ledger (workflow_id) VALUES ($1)")
                .bind(&me)
                .execute(&mut *c)
                .await?;
            Ok(())
        })
    })
    .await?;
    let next = format!("{ring}-{}", (i + 1) % n);
    ctx.send(&next, &format!("from {i}"), Some("ring")).await?;
    ctx.sleep(Duration::from_millis(pause)).await?;
    let got: Option<String> = ctx.recv(Some("ring"), Duration::from_secs(3600)).await?;
    got.ok_or_else(|| workflow::Error::failed("NoMessage", "no message from the previous workflow"))
}

/// The publisher of a cycle's topic: `publishes` publishes of `per` messages (0, 1, 2, …), a
/// durable sleep between them.
async fn publisher(
    ctx: workflow::Context,
    (topic, publishes, per): (String, u32, u32),
) -> Result<(), workflow::Error> {
    for p in 0..publishes {
        let batch: Vec<u32> = (p * per..(p + 1) * per).collect();
        ctx.publish(&topic, &batch).await?;
        ctx.sleep(Duration::from_millis(40)).await?;
    }
    Ok(())
}

/// A reader of a cycle's topic: subscribes from the oldest message and takes messages until it
/// has `n`; returns them in the order taken.
async fn reader(
    ctx: workflow::Context,
    (topic, n): (String, u32),
) -> Result<Vec<u32>, workflow::Error> {
    ctx.subscribe(&topic, Start::Oldest).await?;
    let mut got = Vec::new();
    while got.len() < n as usize {
        let batch = ctx.next_messages::<u32>(&topic, READER_WAIT).await?;
        got.extend(batch.into_iter().map(|m| m.payload));
    }
    Ok(got)
}

/// The child of a cycle's family: for each value, writes it to stream `s` and appends its line
/// to the file `path` in a transaction; then closes the stream and sets event `done`.
async fn child(ctx: workflow::Context, (path,): (String,)) -> Result<u32, workflow::Error> {
    for k in 0..FAMILY_VALUES {
        ctx.write_stream("s", &k).await?;
        let p = path.clone();
        ctx.transaction("append", move |c: &mut PgConnection| {
            let p = p.clone();
            Box::pin(async move {
                let (fs, root) = (Fs::new(FsOptions::default()), Identity::root());
                if k == 0 {
                    fs.create(&mut *c, &root, &p, 0o644).await?;
                }
                fs.append(&mut *c, &root, &p, format!("{k}\n").as_bytes())
                    .await?;
                Ok(())
            })
        })
        .await?;
    }
    ctx.close_stream("s").await?;
    ctx.set_event("done", &FAMILY_VALUES).await?;
    Ok(FAMILY_VALUES)
}

/// The parent of a cycle's family: starts the child, reads its stream to the end, its event
/// and its result.
async fn parent(
    ctx: workflow::Context,
    (path,): (String,),
) -> Result<(Vec<u32>, Option<u32>, u32), workflow::Error> {
    let child: WorkflowHandle<u32> = ctx
        .start_child("torture.child", (path,), StartOptions::default())
        .await?;
    let id = child.workflow_id().to_owned();
    let mut stream = ctx.read_stream(&id, "s");
    let mut values = Vec::new();
    while let Some(v) = stream.next::<u32>(Duration::from_secs(3600)).await? {
        values.push(v);
    }
    let event = ctx
        .get_event(&id, "done", Duration::from_secs(3600))
        .await?;
    let result = ctx.result_of(child).await?;
    Ok((values, event, result))
}

/// A workflow of a queue with limits: in a transaction, records how many of its queue's
/// workflows were running (PENDING) as it committed: across all nodes, on its own node, and in
/// its partition; then a durable sleep, so that its run overlaps the others'.
async fn gated(ctx: workflow::Context, (_k,): (u32,)) -> Result<(i64, i64, i64), workflow::Error> {
    let me = ctx.workflow_id().to_owned();
    let seen = ctx
        .transaction("gate", move |c: &mut PgConnection| {
            let me = me.clone();
            Box::pin(async move {
                Ok(sqlx::query_as(
                    "INSERT INTO torture_gate
                         (workflow_id, queue, running, running_here, running_partition)
                     SELECT $1, me.queue_name, count(w.*),
                            count(w.*) FILTER (WHERE w.executor_id = me.executor_id),
                            count(w.*) FILTER (WHERE w.queue_partition_key
                                               IS NOT DISTINCT FROM me.queue_partition_key)
                     FROM (SELECT queue_name, executor_id, queue_partition_key
                           FROM dbos.workflow_status WHERE workflow_uuid = $1) me
                     LEFT JOIN dbos.workflow_status w
                            ON w.queue_name = me.queue_name AND w.status = 'PENDING'
                     GROUP BY me.queue_name
                     RETURNING running, running_here, running_partition",
                )
                .bind(&me)
                .fetch_one(&mut *c)
                .await?)
            })
        })
        .await?;
    ctx.sleep(Duration::from_millis(100)).await?;
    Ok(seen)
}

/// A cycle's ticker: `n` transactions, each adding the ledger row `{id}:{j}` and returning the
/// ID of the workflow that ran it (in a fork, the ticks copied from the original name the
/// original), a durable sleep after each. The test cancels and resumes it while it runs, and
/// forks it.
async fn ticker(ctx: workflow::Context, (n,): (u32,)) -> Result<u32, workflow::Error> {
    for j in 0..n {
        let me = ctx.workflow_id().to_owned();
        let _ran: String = ctx
            .transaction("tick", move |c: &mut PgConnection| {
                let me = me.clone();
                Box::pin(async move {
                    sqlx::query("INSERT INTO torture_ledger (workflow_id) VALUES ($1)")
                        .bind(format!("{me}:{j}"))
                        .execute(&mut *c)
                        .await?;
                    Ok(me)
                })
            })
            .await?;
        ctx.sleep(Duration::from_millis(50)).await?;
    }
    Ok(n)
}

/// A cycle's sink: receives messages from its mailbox until it has `n`; returns them in the
/// order received.
async fn sink(ctx: workflow::Context, (n,): (u32,)) -> Result<Vec<u32>, workflow::Error> {
    let mut got = Vec::new();
    while got.len() < n as usize {
        if let Some(v) = ctx.recv(Some("sink"), SINK_WAIT).await? {
            got.push(v);
        }
    }
    Ok(got)
}

/// The run of the cron schedule for tick `at`: a transaction recording the tick.
async fn cron_run(
    ctx: workflow::Context,
    (at, _context): (String, serde_json::Value),
) -> Result<(), workflow::Error> {
    ctx.transaction("tick", move |c: &mut PgConnection| {
        let at = at.clone();
        Box::pin(async move {
            sqlx::query("INSERT INTO torture_cron (tick) VALUES ($1::timestamptz)")
                .bind(&at)
                .execute(&mut *c)
                .await?;
            Ok(())
        })
    })
    .await
}

/// A node process (started by [`torture`], never on its own).
#[test]
#[ignore = "a node of the torture test, started by it"]
fn torture_node() {
    let url = std::env::var(NODE_URL).expect("run by the torture test, with the database URL");
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(async move {
            let config = Config {
                database_url: Some(url),
                heartbeat_interval_ms: HEARTBEAT_MS,
                node_lease_ms: LEASE_MS,
                drain_timeout_ms: 3_000,
                ..Config::default()
            };
            // A node declared dead (stalled or cut off past its lease) joins again as a new
            // node, as `dbos boot` does; the signal handlers stay installed in between.
            let mut signals = dbos_kernel::ShutdownSignals::install().expect("signal handlers");
            loop {
                let kernel = Kernel::boot(config.clone(), &dbos_services::migrations())
                    .await
                    .expect("the node boots");
                let mut registry = Registry::new();
                dbos_services::builtin::register(&mut registry);
                registry.register("torture.ring", ring);
                registry.register("torture.publisher", publisher);
                registry.register("torture.reader", reader);
                registry.register("torture.parent", parent);
                registry.register("torture.child", child);
                registry.register("torture.gated", gated);
                registry.register("torture.ticker", ticker);
                registry.register("torture.sink", sink);
                registry.register("torture.cron", cron_run);
                let _wf = Service::launch(&kernel, registry, Options::default())
                    .await
                    .expect("the workflow service launches");
                println!("ready {}", kernel.node_id());
                let report = kernel
                    .run_until(&mut signals)
                    .await
                    .expect("a clean shutdown");
                if !report.declared_dead {
                    break;
                }
            }
        });
}

/// A node process of the run and its log.
struct NodeProc {
    child: Child,
    log: PathBuf,
    /// Gets the node's "ready" line; its standard output is read to the end, so the test
    /// harness in the node never writes to a closed pipe.
    ready: std::sync::mpsc::Receiver<()>,
    is_ready: bool,
    /// Stopped with SIGSTOP (and continued) or cut off from the network past its lease: a node
    /// declared dead meanwhile ends itself.
    stalled: bool,
}

impl NodeProc {
    /// Starts a node on `url`, inside network namespace `ns` when given.
    fn start(url: &str, run: &str, log: PathBuf, ns: Option<&str>) -> NodeProc {
        let exe = std::env::current_exe().expect("the test binary");
        let mut cmd = match ns {
            Some(ns) => support::netns::Net::exec(ns, exe),
            None => Command::new(exe),
        };
        // A node dies with the test, also when the test's watchdog ends it.
        // SAFETY: prctl is async-signal-safe, and nothing else runs between fork and exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        let mut child = cmd
            .args(["--ignored", "--exact", "torture_node", "--nocapture"])
            .env(NODE_URL, url)
            .env(RUN_MARK, run)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("node log"))
            .spawn()
            .expect("a node starts");
        let out = child.stdout.take().expect("piped");
        let (tx, ready) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if line.starts_with("ready ") {
                    let _ = tx.send(());
                }
            }
        });
        NodeProc {
            child,
            log,
            ready,
            is_ready: false,
            stalled: false,
        }
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// Waits until the node printed "ready".
    fn wait_ready(&mut self) {
        if !self.is_ready {
            self.is_ready = self.ready.recv_timeout(Duration::from_secs(120)).is_ok();
            assert!(self.is_ready, "the node booted:\n{}", self.log_tail());
        }
    }

    /// The last 40 lines of the node's log, without the frames of a backtrace (which would
    /// fill them and hide the panic's message).
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let frame = |l: &str| {
            let t = l.trim_start();
            t.starts_with("at ")
                || t.split_once(": ")
                    .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        };
        let lines: Vec<&str> = log.lines().filter(|l| !frame(l)).collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = kill(self.pid(), Signal::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The run's Postgres: stopped (whichever postmaster runs in its data directory) when the test
/// ends, also when it fails.
struct Server {
    dir: PathBuf,
    cluster: Option<Cluster>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let Some(c) = self.cluster.take() else { return };
        // On a thread of its own: this runs inside the test's runtime, and must not panic.
        let dir = self.dir.clone();
        let stopped = std::thread::spawn(move || {
            tokio::runtime::Runtime::new()
                .expect("runtime")
                .block_on(c.stop())
                .is_ok()
        })
        .join();
        if !matches!(stopped, Ok(true)) {
            let _ = std::thread::spawn(move || support::pg_ctl(&dir, &["stop", "-m", "immediate"]))
                .join();
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    KillNode,
    StallNode,
    RestartPostgres,
    TerminateBackends,
    /// The primary is killed; its synchronous standby is promoted (the failover test).
    Failover,
    /// A host's network link is down past its node's lease (the failover test).
    CutOff,
}

const FAULTS: [Fault; 4] = [
    Fault::KillNode,
    Fault::StallNode,
    Fault::RestartPostgres,
    Fault::TerminateBackends,
];

/// The run's seed and the faults of `cycles` cycles: each kind of `kinds` once per round, in a
/// shuffled order.
fn plan<const N: usize>(kinds: [Fault; N], cycles: usize, rng: &mut StdRng) -> Vec<Fault> {
    let mut plan: Vec<Fault> = Vec::new();
    while plan.len() < cycles {
        let mut round = kinds;
        for i in (1..round.len()).rev() {
            round.swap(i, rng.gen_range(0..=i));
        }
        plan.extend(round);
    }
    plan.truncate(cycles);
    plan
}

/// A run's seed, from `DBOS_TORTURE_SEED` or fresh, printed so a run can be replayed.
fn seed(name: &str, cycles: usize) -> u64 {
    let seed: u64 = std::env::var("DBOS_TORTURE_SEED")
        .ok()
        .map(|s| s.parse().expect("DBOS_TORTURE_SEED is a number"))
        .unwrap_or_else(rand::random);
    eprintln!("{name}: {cycles} cycles, seed {seed} (DBOS_TORTURE_SEED={seed} replays it)");
    seed
}

fn cycles(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .map(|c| c.parse().unwrap_or_else(|_| panic!("{var} is a number")))
        .unwrap_or(default)
}

/// The load of a run: per cycle a ring of workflows, a topic with its publisher and readers,
/// a family (a parent and its child), workflows of the three queues with limits, a ticker (and
/// its fork, made after the fault), a late ticker, a sink and command tasks, enqueued cycle by
/// cycle.
struct Load {
    run: String,
    /// The file command tasks append their lines to.
    runs: PathBuf,
    /// Seconds a command pauses (its `c`-th of a cycle pauses `pause + c/10`).
    pause: f64,
    /// The cycles whose workflows are enqueued.
    cycles: Vec<usize>,
    commands: Vec<String>,
    /// Workflows the cancels found running (or waiting to run) and cancelled, and the resumes
    /// that put a workflow back on a queue.
    cancelled: usize,
    resumed: usize,
    /// The current cycle's ticker's ticks once its cancel returned: none commits until its
    /// resume.
    ticks_at_cancel: Option<i64>,
    /// The cycles' forks of their tickers made (one a cycle, after its fault).
    forks: usize,
    /// The claims of the held queue's workflows (their `recovery_attempts` summed) once its
    /// hold returned, while held; and the cycles' workflows their holds found not yet claimed.
    held_claims: Option<i64>,
    held_back: i64,
    /// The cron schedule: when the test began adding it and when that returned, and its runs
    /// once paused.
    cron_added: (DateTime<Utc>, DateTime<Utc>),
    cron_runs: i64,
}

/// Cycle `c`'s ring: its workflows are `r{c}-0` … `r{c}-{WORKFLOWS_PER_CYCLE - 1}`.
fn ring_of(c: usize) -> String {
    format!("r{c}")
}

/// Cycle `c`'s topic: its publisher is `t{c}-pub`, its readers `t{c}-0` … `t{c}-{READERS - 1}`.
fn topic_of(c: usize) -> String {
    format!("t{c}")
}

/// Cycle `c`'s family: the parent's ID, which also names its child's file (`/f{c}`).
fn family_of(c: usize) -> String {
    format!("f{c}")
}

/// Cycle `c`'s workflows of the limited queue: `g{c}-0` … `g{c}-{GATED_PER_CYCLE - 1}`.
fn gated_of(c: usize) -> String {
    format!("g{c}")
}

/// Cycle `c`'s workflows of the partitioned queue: `p{c}-0` … `p{c}-{GATED_PER_CYCLE - 1}`.
fn partitioned_of(c: usize) -> String {
    format!("p{c}")
}

/// Cycle `c`'s ticker.
fn ticker_of(c: usize) -> String {
    format!("k{c}")
}

/// Cycle `c`'s late ticker, ended by its deadline.
fn late_of(c: usize) -> String {
    format!("d{c}")
}

/// Cycle `c`'s sink.
fn sink_of(c: usize) -> String {
    format!("m{c}")
}

/// Cycle `c`'s tickers of the rated queue: `q{c}-0` … `q{c}-{RATED_PER_CYCLE - 1}`.
fn rated_of(c: usize) -> String {
    format!("q{c}")
}

/// Cycle `c`'s tickers of the held queue: `z{c}-0` … `z{c}-{HELD_PER_CYCLE - 1}`.
fn held_of(c: usize) -> String {
    format!("z{c}")
}

/// Cycle `c`'s fork of its ticker, made after the cycle's fault.
fn fork_of(c: usize) -> String {
    format!("e{c}")
}

/// The step cycle `c` forks its ticker from: from 1 (nothing copied) to past its last tick
/// (every tick recorded by then copied), cycle by cycle.
fn fork_step(c: usize) -> i32 {
    1 + (c % (2 * TICKS as usize + 1)) as i32
}

impl Load {
    /// The load of run `run`, before any cycle: adds the run's cron schedule (before any
    /// fault). Command tasks append to `runs` and pause `pause` seconds.
    async fn start(pool: &PgPool, run: &str, runs: PathBuf, pause: f64) -> Load {
        let began = Utc::now();
        let mut conn = pool.acquire().await.expect("conn");
        let s = Schedule {
            automatic_backfill: true,
            ..Schedule::new(CRON, "torture.cron", "* * * * * *")
        };
        cron::add(&mut conn, &s).await.expect("the cron schedule");
        Load {
            run: run.to_owned(),
            runs,
            pause,
            cycles: Vec::new(),
            commands: Vec::new(),
            cancelled: 0,
            resumed: 0,
            ticks_at_cancel: None,
            forks: 0,
            held_claims: None,
            held_back: 0,
            cron_added: (began, Utc::now()),
            cron_runs: 0,
        }
    }

    /// Enqueues the cycle's workflows and commands through SQL on `pool`; false when the
    /// database refused (a fault), to be tried again.
    async fn enqueue(&mut self, pool: &PgPool, cycle: usize) -> bool {
        let done = enqueue_ring(pool, &ring_of(cycle), WORKFLOWS_PER_CYCLE).await
            && enqueue_topic(pool, &topic_of(cycle)).await
            && enqueue_family(pool, &family_of(cycle)).await
            && enqueue_gated(pool, &gated_of(cycle)).await
            && enqueue_partitioned(pool, &partitioned_of(cycle)).await
            && enqueue_ticker(pool, &ticker_of(cycle), TICKS, None).await
            && enqueue_ticker(pool, &late_of(cycle), LATE_TICKS, Some(LATE_TIMEOUT_MS)).await
            && enqueue_sink(pool, &sink_of(cycle)).await
            && enqueue_tickers(pool, &rated_of(cycle), RATED_QUEUE, RATED_PER_CYCLE).await
            && enqueue_commands(pool, self, cycle).await
            // Last: the hold that follows races the claims of these.
            && enqueue_tickers(pool, &held_of(cycle), HELD_QUEUE, HELD_PER_CYCLE).await;
        if done {
            self.cycles.push(cycle);
        }
        done
    }

    /// The workflows of the rings.
    fn ring_workflows(&self) -> i64 {
        self.cycles.len() as i64 * i64::from(WORKFLOWS_PER_CYCLE)
    }

    fn total(&self) -> i64 {
        let per_cycle = i64::from(
            WORKFLOWS_PER_CYCLE
                + 1
                + READERS
                + 2
                + 2 * GATED_PER_CYCLE
                + 2
                + 1
                + RATED_PER_CYCLE
                + HELD_PER_CYCLE,
        );
        self.cycles.len() as i64 * per_cycle
            + self.forks as i64
            + self.cron_runs
            + self.commands.len() as i64
    }

    /// Sends cycle `c`'s sink its messages `range` from outside a workflow, one statement each,
    /// each tried again until the database answers: the message's ID makes a send that
    /// committed unseen the same send.
    async fn send_to_sink(pool: &PgPool, c: usize, range: std::ops::Range<u32>) {
        let sink = sink_of(c);
        for k in range {
            answered("send", || {
                sqlx::query(
                    "SELECT dbos.send_message($1, to_json($2::int), 'sink', $1 || ':' || $2)",
                )
                .bind(&sink)
                .bind(k as i32)
                .execute(pool)
            })
            .await;
        }
    }

    /// Cancels cycle `c`'s ticker, and its family with the child, if it has one yet; each
    /// statement is tried again until the database answers (a fault may hit it: a cancel that
    /// committed unseen is made again, and changes nothing).
    async fn cancel(&mut self, pool: &PgPool, c: usize) {
        let ticker = ticker_of(c);
        let ids = answered("cancel", || manage::cancel(pool, &ticker, false)).await;
        self.cancelled += ids.len();
        self.ticks_at_cancel = Some(ticks_so_far(pool, &ticker).await);
        let family = family_of(c);
        let ids = answered("cancel", || manage::cancel(pool, &family, true)).await;
        self.cancelled += ids.len();
    }

    /// Resumes what [`Load::cancel`] cancelled: the family's child before its parent, so that
    /// the parent, running again, finds its child running too. A workflow that had ended before
    /// its cancel stays as it was.
    async fn resume(&mut self, pool: &PgPool, c: usize) {
        let ticker = ticker_of(c);
        let at_cancel = self.ticks_at_cancel.take().expect("cancelled");
        assert_eq!(
            ticks_so_far(pool, &ticker).await,
            at_cancel,
            "{ticker} committed a tick after its cancel had returned"
        );
        self.resumed += usize::from(answered("resume", || manage::resume(pool, &ticker)).await);
        let family = family_of(c);
        let children: Vec<String> = answered("children", || async {
            sqlx::query_scalar(
                "SELECT workflow_uuid FROM dbos.workflow_status WHERE parent_workflow_id = $1",
            )
            .bind(&family)
            .fetch_all(pool)
            .await
        })
        .await;
        for child in &children {
            self.resumed += usize::from(answered("resume", || manage::resume(pool, child)).await);
        }
        self.resumed += usize::from(answered("resume", || manage::resume(pool, &family)).await);
    }

    /// Forks cycle `c`'s ticker, running or ended, from [`fork_step`], tried again until the
    /// database answers: a fork that committed unseen is found by its ID, which a second fork
    /// would find taken.
    async fn fork(&mut self, pool: &PgPool, c: usize) {
        let (ticker, fork) = (ticker_of(c), fork_of(c));
        let began = Instant::now();
        loop {
            let made = manage::fork(pool, &ticker, fork_step(c), Some(fork.clone()), None).await;
            let forked_from: Option<Option<String>> = answered("fork", || async {
                sqlx::query_scalar(
                    "SELECT forked_from FROM dbos.workflow_status WHERE workflow_uuid = $1",
                )
                .bind(&fork)
                .fetch_optional(pool)
                .await
            })
            .await;
            match forked_from {
                Some(from) => {
                    assert_eq!(from.as_deref(), Some(ticker.as_str()), "{fork}: {made:?}");
                    break;
                }
                None => assert!(
                    made.is_err() && began.elapsed() < RESUME_WAIT_MAX,
                    "{fork}: not made in {RESUME_WAIT_MAX:?}: {made:?}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.forks += 1;
    }

    /// Holds [`HELD_QUEUE`] for cycle `c` (tried again until the database answers), then reads
    /// its claims so far: once the hold has returned, no claim of the queue commits.
    async fn hold_queue(&mut self, pool: &PgPool, c: usize) {
        set_queue_held(pool, c, true).await;
        let (claims, waiting) = held_queue_claims(pool, c).await;
        self.held_claims = Some(claims);
        self.held_back += waiting;
    }

    /// Checks that nothing of [`HELD_QUEUE`] was claimed since cycle `c`'s
    /// [`Load::hold_queue`] returned, through the fault, and releases the queue.
    async fn release_queue(&mut self, pool: &PgPool, c: usize) {
        let (claims, _) = held_queue_claims(pool, c).await;
        let held = self.held_claims.take().expect("held");
        assert_eq!(
            claims, held,
            "workflows of {HELD_QUEUE} were claimed after its hold (cycle {c}) had returned"
        );
        set_queue_held(pool, c, false).await;
    }

    /// Pauses the cron schedule once it has fired a tick after the last cycle, and counts its
    /// runs: once the pause has returned, no tick is enqueued.
    async fn stop_cron(&mut self, pool: &PgPool) {
        let now = Utc::now();
        let began = Instant::now();
        while fired_until(pool).await.is_none_or(|t| t < now) {
            assert!(
                began.elapsed() < RESUME_WAIT_MAX,
                "the cron schedule fired no tick after {now} in {RESUME_WAIT_MAX:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        answered("pause", || async {
            let mut conn = pool.acquire().await.map_err(|e| e.to_string())?;
            cron::set_paused(&mut conn, CRON, true)
                .await
                .map_err(|e| e.to_string())
        })
        .await;
        self.cron_runs = answered("runs", || {
            sqlx::query_scalar("SELECT count(*) FROM dbos.workflow_status WHERE schedule_name = $1")
                .bind(CRON)
                .fetch_one(pool)
        })
        .await;
    }
}

/// Holds (`held`) or releases [`HELD_QUEUE`] for cycle `c`, tried again until the database
/// answers: a repeat of a change that committed unseen changes nothing. An even cycle pauses
/// and resumes it; an odd one gives it a placement rule that no node meets, then removes it.
async fn set_queue_held(pool: &PgPool, c: usize, held: bool) {
    answered("queue hold", || async {
        let mut conn = pool.acquire().await.map_err(|e| e.to_string())?;
        if c % 2 == 0 {
            queues::set_paused(&mut conn, HELD_QUEUE, held)
                .await
                .map(drop)
        } else {
            let nowhere = BTreeMap::from([("torture".to_owned(), "nowhere".to_owned())]);
            let labels = if held { nowhere } else { BTreeMap::new() };
            queues::set_placement(&mut conn, HELD_QUEUE, &labels, &queues::Policy::Fifo).await
        }
        .map_err(|e| e.to_string())
    })
    .await;
}

/// The ticks of ticker `id` committed so far, read until the database answers.
async fn ticks_so_far(pool: &PgPool, id: &str) -> i64 {
    answered("ticks", || {
        sqlx::query_scalar("SELECT count(*) FROM torture_ledger WHERE workflow_id LIKE $1")
            .bind(format!("{id}:%"))
            .fetch_one(pool)
    })
    .await
}

/// [`HELD_QUEUE`]'s claims so far (each claim adds one to its workflow's
/// `recovery_attempts`, which nothing else on this queue changes), and cycle `c`'s workflows
/// of it waiting.
async fn held_queue_claims(pool: &PgPool, c: usize) -> (i64, i64) {
    answered("claims", || {
        sqlx::query_as(
            "SELECT COALESCE(sum(recovery_attempts), 0)::int8,
                    count(*) FILTER (WHERE status = 'ENQUEUED' AND workflow_uuid LIKE $2 || '-%')
             FROM dbos.workflow_status WHERE queue_name = $1",
        )
        .bind(HELD_QUEUE)
        .bind(held_of(c))
        .fetch_one(pool)
    })
    .await
}

/// The latest tick the cron schedule has fired, if it has fired one (`None` too while the
/// database does not answer).
async fn fired_until(pool: &PgPool) -> Option<DateTime<Utc>> {
    let at: String = sqlx::query_scalar::<_, Option<String>>(
        "SELECT last_fired_at FROM dbos.workflow_schedules WHERE schedule_name = $1",
    )
    .bind(CRON)
    .fetch_one(pool)
    .await
    .ok()
    .flatten()?;
    DateTime::parse_from_rfc3339(&at)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Runs `op` until it succeeds (a fault may refuse it for a while), at most `RESUME_WAIT_MAX`.
async fn answered<T, E: std::fmt::Debug, F, Fut>(what: &str, mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let began = Instant::now();
    loop {
        match op().await {
            Ok(v) => return v,
            Err(e) => assert!(
                began.elapsed() < RESUME_WAIT_MAX,
                "{what}: the database refused for {RESUME_WAIT_MAX:?}: {e:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torture() {
    dbos_kernel::testing::watchdog();
    let cycles = cycles("DBOS_TORTURE_CYCLES", 8);
    let seed = seed("torture", cycles);
    let run = format!("torture-{}", uuid_like(seed));
    let mut rng = StdRng::seed_from_u64(seed);

    let scratch = scratch_dir_for_cluster();
    let dir = scratch.path().join("data");
    let cluster = Cluster::start(embedded::Options {
        data_dir: dir.clone(),
        ..embedded::Options::from_config(&Config::default())
    })
    .await
    .expect("the run's Postgres starts");
    let url = cluster.url().to_owned();
    let _server = Server {
        dir: dir.clone(),
        cluster: Some(cluster),
    };
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await
        .expect("connect");

    // Kept when the test fails; removed when it passes.
    let logs = std::env::temp_dir().join(&run);
    std::fs::create_dir_all(&logs).expect("log dir");
    let mut started = 0usize;
    let mut start_node = |started: &mut usize, _slot: usize| {
        *started += 1;
        NodeProc::start(&url, &run, logs.join(format!("node-{started}.log")), None)
    };
    let mut nodes: Vec<NodeProc> = Vec::new();
    for slot in 0..NODES {
        let mut n = start_node(&mut started, slot);
        n.wait_ready();
        nodes.push(n);
    }
    setup(&pool).await;
    let runs = support::task_writable_dir(scratch.path()).join("command-runs");
    let mut load = Load::start(&pool, &run, runs, 0.3).await;

    let plan = plan(FAULTS, cycles, &mut rng);
    let mut seen: BTreeMap<Fault, usize> = BTreeMap::new();
    let began = Instant::now();
    for (cycle, fault) in plan.iter().enumerate() {
        // The load of this cycle; enqueued through SQL, so a fault may hit it too.
        while !load.enqueue(&pool, cycle).await {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        load.hold_queue(&pool, cycle).await;
        tokio::time::sleep(Duration::from_millis(rng.gen_range(100..800))).await;
        Load::send_to_sink(&pool, cycle, 0..SINK_MESSAGES / 2).await;
        load.cancel(&pool, cycle).await;
        *seen.entry(*fault).or_default() += 1;
        match fault {
            Fault::KillNode => {
                let i = rng.gen_range(0..nodes.len());
                nodes[i].child.kill().expect("kill -9");
                nodes[i].child.wait().expect("reap");
                nodes[i] = start_node(&mut started, i);
            }
            Fault::StallNode => {
                let i = rng.gen_range(0..nodes.len());
                kill(nodes[i].pid(), Signal::SIGSTOP).expect("SIGSTOP");
                nodes[i].stalled = true;
                let past_lease = LEASE_MS + rng.gen_range(500..2_000);
                tokio::time::sleep(Duration::from_millis(past_lease)).await;
                kill(nodes[i].pid(), Signal::SIGCONT).expect("SIGCONT");
            }
            Fault::RestartPostgres => {
                let d = dir.clone();
                tokio::task::spawn_blocking(move || support::pg_ctl_restart(&d))
                    .await
                    .expect("pg_ctl");
            }
            Fault::TerminateBackends => {
                for _ in 0..3 {
                    // Our own connection may be among the terminated ones: errors are expected.
                    let _ = sqlx::query(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                         WHERE datname = current_database() AND pid <> pg_backend_pid()
                           AND backend_type = 'client backend'",
                    )
                    .execute(&pool)
                    .await;
                    tokio::time::sleep(Duration::from_millis(rng.gen_range(20..200))).await;
                }
            }
            Fault::Failover | Fault::CutOff => unreachable!("faults of the failover test"),
        }
        load.resume(&pool, cycle).await;
        load.release_queue(&pool, cycle).await;
        load.fork(&pool, cycle).await;
        Load::send_to_sink(&pool, cycle, SINK_MESSAGES / 2..SINK_MESSAGES).await;
        replace_exited_nodes(&mut nodes, &mut start_node, &mut started);
        if cycles > 8 && cycle % 50 == 49 {
            eprintln!(
                "torture: {} cycles in {:.0} s",
                cycle + 1,
                began.elapsed().as_secs_f64()
            );
        }
    }
    eprintln!(
        "torture: faults {seen:?}; {} nodes started in {:.1} s",
        started,
        began.elapsed().as_secs_f64()
    );
    load.stop_cron(&pool).await;
    wait_all_end(
        &pool,
        &load,
        &mut nodes,
        &mut start_node,
        &mut started,
        seed,
        &logs,
    )
    .await;
    stop_nodes(&mut nodes, &run);
    check(&pool, &load).await;
    let _ = std::fs::remove_dir_all(&logs);
    eprintln!(
        "torture: passed: {} workflows ({} cancelled, {} resumed), {} commands, {} cycles in \
         {:.1} s",
        load.total() - load.commands.len() as i64,
        load.cancelled,
        load.resumed,
        load.commands.len(),
        cycles,
        began.elapsed().as_secs_f64()
    );
}

/// Three hosts (network namespaces) run the load against a Postgres that fails over: the
/// primary is killed (pg_auto_failover promotes the synchronous standby, and the nodes follow
/// it without a restart), and a host is cut off from the network past its lease (its commands
/// are stopped before another node takes its work over; when the link returns it has been
/// declared dead, stops, and its replacement joins as a new node). The same checks as
/// `torture`, and commands never overlap with their takeover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover() {
    dbos_kernel::testing::watchdog();
    if let Some(why) = support::netns::unavailable().or_else(support::ha::unavailable) {
        support::prerequisite_missing(&format!("the failover test: {why}"));
        return;
    }
    let cycles = cycles("DBOS_FAILOVER_CYCLES", 4);
    let seed = seed("failover", cycles);
    let run = format!("failover-{}", uuid_like(seed));
    let mut rng = StdRng::seed_from_u64(seed);

    let net = support::netns::Net::new(NODES);
    let scratch = scratch_dir_for_cluster();
    // Ports of this run: a formation left behind by another run does not collide.
    let port = 20_000 + (std::process::id() % 1_000) as u16 * 3;
    let ha = support::ha::Ha::up(&scratch.path().join("ha"), &net.db(), &net.db_addr(), port);
    let url = ha.url();
    let mut pool = ha.writable_pool().await;

    let logs = std::env::temp_dir().join(&run);
    std::fs::create_dir_all(&logs).expect("log dir");
    let mut started = 0usize;
    let mut start_node = |started: &mut usize, slot: usize| {
        *started += 1;
        let log = logs.join(format!("node-{started}-host{slot}.log"));
        NodeProc::start(&url, &run, log, Some(&net.host(slot)))
    };
    let mut nodes: Vec<NodeProc> = Vec::new();
    for slot in 0..NODES {
        let mut n = start_node(&mut started, slot);
        n.wait_ready();
        nodes.push(n);
    }
    // Each host's node registered with its own address.
    let addrs: Vec<String> =
        sqlx::query_scalar("SELECT host(addr) FROM os.nodes WHERE alive ORDER BY host(addr)")
            .fetch_all(&pool)
            .await
            .expect("os.nodes");
    let want: Vec<String> = (0..NODES).map(|i| net.host_addr(i)).collect();
    assert_eq!(addrs, want, "os.nodes shows each node's host address");
    // After the nodes' boot created the schema.
    setup(&pool).await;

    let runs = support::task_writable_dir(scratch.path()).join("command-runs");
    let mut load = Load::start(&pool, &run, runs, 2.0).await;
    let plan = plan([Fault::Failover, Fault::CutOff], cycles, &mut rng);
    let began = Instant::now();
    for (cycle, fault) in plan.iter().enumerate() {
        while !load.enqueue(&pool, cycle).await {
            tokio::time::sleep(Duration::from_millis(200)).await;
            pool = ha.writable_pool().await;
        }
        load.hold_queue(&pool, cycle).await;
        // The cancel comes early, while the ticker runs; the fault later, with the work of
        // the cycle under way.
        tokio::time::sleep(Duration::from_millis(rng.gen_range(100..400))).await;
        load.cancel(&pool, cycle).await;
        tokio::time::sleep(Duration::from_millis(rng.gen_range(400..1_100))).await;
        Load::send_to_sink(&pool, cycle, 0..SINK_MESSAGES / 2).await;
        match fault {
            Fault::Failover => {
                // With a standby in sync again, so that no acknowledged write can be lost.
                ha.wait_healthy();
                let moved = ha.failover();
                let promoted = Instant::now();
                pool = ha.writable_pool().await;
                // Every node heartbeats on the new primary again, in the same process (a node
                // cut off earlier may be ending: it is replaced, and not counted).
                loop {
                    replace_exited_nodes(&mut nodes, &mut start_node, &mut started);
                    let pids: Vec<i32> = nodes
                        .iter()
                        .filter(|n| !n.stalled)
                        .map(|n| n.pid().as_raw())
                        .collect();
                    let fresh: i64 = sqlx::query_scalar(
                        "SELECT count(*) FROM kernel.nodes
                         WHERE pid = ANY($1) AND state = 'running'
                           AND heartbeat_at > now() - interval '1 second'
                           AND heartbeat_at > (SELECT seen_at FROM kernel.timelines
                                               WHERE timeline = kernel.timeline())",
                    )
                    .bind(&pids)
                    .fetch_one(&pool)
                    .await
                    .unwrap_or(0);
                    if fresh == pids.len() as i64 {
                        break;
                    }
                    assert!(
                        promoted.elapsed() < RESUME_WAIT_MAX,
                        "{fresh} of {} nodes heartbeat on the new primary (seed {seed}); logs in {}",
                        pids.len(),
                        logs.display()
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                eprintln!(
                    "failover: {moved}; every node heartbeats on the new primary {} ms later",
                    promoted.elapsed().as_millis()
                );
                // `dbos status`, run on a host, names the new primary.
                let to = moved
                    .split(" to port ")
                    .nth(1)
                    .and_then(|t| t.split(' ').next());
                let out = support::netns::Net::exec(&net.host(0), env!("CARGO_BIN_EXE_dbos"))
                    .args(["status", "--json", "--database-url", &url])
                    .output()
                    .expect("dbos status runs");
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let status: serde_json::Value =
                    serde_json::from_slice(&out.stdout).expect("status JSON");
                let primaries: Vec<&str> = status["hosts"]
                    .as_array()
                    .expect("a hosts section for a multi-host URL")
                    .iter()
                    .filter(|h| h["role"] == "primary")
                    .filter_map(|h| h["host"].as_str())
                    .collect();
                assert_eq!(primaries.len(), 1, "one primary: {status}");
                let to = to.expect("the script names the new port");
                assert!(primaries[0].contains(&format!(":{to}/")), "{status}");
            }
            Fault::CutOff => {
                let i = rng.gen_range(0..nodes.len());
                net.cut(i);
                nodes[i].stalled = true;
                let past_lease = LEASE_MS + rng.gen_range(1_000..2_000);
                tokio::time::sleep(Duration::from_millis(past_lease)).await;
                net.restore(i);
                // The host's node works again: as itself when nobody declared it dead in
                // time, else as a new node of the same process; the old one wrote nothing more
                // (the checks at the end).
                let pid = nodes[i].pid().as_raw();
                let restored = chrono::Utc::now();
                let ids: Vec<(String, String)> = loop {
                    let rows: Vec<(String, String, bool)> = sqlx::query_as(
                        "SELECT node_id, state, heartbeat_at > $2 FROM kernel.nodes
                         WHERE pid = $1 ORDER BY started_at",
                    )
                    .bind(pid)
                    .bind(restored)
                    .fetch_all(&pool)
                    .await
                    .unwrap_or_default();
                    if rows
                        .last()
                        .is_some_and(|(_, state, fresh)| state == "running" && *fresh)
                    {
                        break rows.into_iter().map(|(id, state, _)| (id, state)).collect();
                    }
                    assert!(
                        chrono::Utc::now() - restored
                            < chrono::Duration::from_std(RESUME_WAIT_MAX).expect("fits"),
                        "host {i}'s node works again (seed {seed}): {rows:?}; logs in {}",
                        logs.display()
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                };
                let how = if ids.len() > 1 && ids[ids.len() - 2].1 == "dead" {
                    "declared dead, it joined again as a new node"
                } else {
                    "it kept its lease"
                };
                eprintln!("failover: host {i} cut off for {past_lease} ms; {how}");
            }
            _ => unreachable!("faults of the torture test"),
        }
        load.resume(&pool, cycle).await;
        load.release_queue(&pool, cycle).await;
        load.fork(&pool, cycle).await;
        Load::send_to_sink(&pool, cycle, SINK_MESSAGES / 2..SINK_MESSAGES).await;
        replace_exited_nodes(&mut nodes, &mut start_node, &mut started);
    }
    ha.wait_healthy();
    pool = ha.writable_pool().await;
    load.stop_cron(&pool).await;
    wait_all_end(
        &pool,
        &load,
        &mut nodes,
        &mut start_node,
        &mut started,
        seed,
        &logs,
    )
    .await;
    stop_nodes(&mut nodes, &run);
    check(&pool, &load).await;
    let taken_over = check_no_overlap(&load);
    let _ = std::fs::remove_dir_all(&logs);
    eprintln!(
        "failover: passed: {} workflows ({} cancelled, {} resumed), {} commands ({taken_over} \
         run again after a fault), {cycles} cycles, {started} nodes started, in {:.1} s",
        load.total() - load.commands.len() as i64,
        load.cancelled,
        load.resumed,
        load.commands.len(),
        began.elapsed().as_secs_f64()
    );
}

/// Waits until every workflow and task of `load` ended, replacing nodes that ended by
/// themselves; on timeout, fails with what is still open.
async fn wait_all_end(
    pool: &PgPool,
    load: &Load,
    nodes: &mut [NodeProc],
    start_node: &mut impl FnMut(&mut usize, usize) -> NodeProc,
    started: &mut usize,
    seed: u64,
    logs: &Path,
) {
    let total = load.total();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        replace_exited_nodes(nodes, start_node, started);
        let ended: Option<i64> = sqlx::query_scalar(
            "SELECT count(*) FROM dbos.workflow_status
             WHERE status IN ('SUCCESS', 'ERROR', 'CANCELLED', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED')",
        )
        .fetch_one(pool)
        .await
        .ok();
        if ended == Some(total) {
            return;
        }
        if Instant::now() > deadline {
            let open: Vec<(String, String, Option<String>)> = sqlx::query_as(
                "SELECT workflow_uuid, status, executor_id FROM dbos.workflow_status
                 WHERE status NOT IN ('SUCCESS', 'ERROR', 'CANCELLED',
                                      'MAX_RECOVERY_ATTEMPTS_EXCEEDED') LIMIT 20",
            )
            .fetch_all(pool)
            .await
            .unwrap_or_default();
            let steps: Vec<(String, i32, String)> = sqlx::query_as(
                "SELECT o.workflow_uuid, o.function_id, o.function_name
                 FROM dbos.operation_outputs o JOIN dbos.workflow_status w USING (workflow_uuid)
                 WHERE w.status NOT IN ('SUCCESS', 'ERROR', 'CANCELLED',
                                        'MAX_RECOVERY_ATTEMPTS_EXCEEDED')
                 ORDER BY 1, 2 LIMIT 50",
            )
            .fetch_all(pool)
            .await
            .unwrap_or_default();
            let node_rows: Vec<(String, String, i32)> =
                sqlx::query_as("SELECT node_id, state, pid FROM kernel.nodes ORDER BY started_at")
                    .fetch_all(pool)
                    .await
                    .unwrap_or_default();
            // The messages of the rings that did not end.
            let messages: Vec<(String, String, bool, Option<i32>, String)> = sqlx::query_as(
                "SELECT destination_uuid, message, consumed, consumed_by_function_id,
                        message_uuid
                 FROM dbos.notifications
                 WHERE split_part(destination_uuid, '-', 1) IN (
                     SELECT split_part(workflow_uuid, '-', 1) FROM dbos.workflow_status
                     WHERE status NOT IN ('SUCCESS', 'ERROR', 'CANCELLED',
                                          'MAX_RECOVERY_ATTEMPTS_EXCEEDED'))
                 ORDER BY 1",
            )
            .fetch_all(pool)
            .await
            .unwrap_or_default();
            // The cursors of the topic readers that did not end.
            let cursors: Vec<(String, String, i64)> = sqlx::query_as(
                "SELECT s.topic, s.subscriber, s.cursor
                 FROM msg.subscriptions s JOIN dbos.workflow_status w
                      ON w.workflow_uuid = s.subscriber
                 WHERE w.status NOT IN ('SUCCESS', 'ERROR', 'CANCELLED',
                                        'MAX_RECOVERY_ATTEMPTS_EXCEEDED')
                 ORDER BY 1, 2",
            )
            .fetch_all(pool)
            .await
            .unwrap_or_default();
            panic!(
                "every workflow ends (seed {seed}); {ended:?} of {total} ended, open: {open:?}\n\
                 their steps: {steps:?}\nnodes: {node_rows:?}\nmessages: {messages:?}\n\
                 topic cursors: {cursors:?}\nlogs in {}",
                logs.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Stops the nodes cleanly; nothing of the run may be left running.
fn stop_nodes(nodes: &mut [NodeProc], run: &str) {
    for n in nodes.iter_mut() {
        // A node still booting has no handler for the signal yet.
        n.wait_ready();
        kill(n.pid(), Signal::SIGTERM).expect("SIGTERM");
    }
    for n in nodes.iter_mut() {
        let status = n.child.wait().expect("the node exits");
        // A node stalled past its lease may be stopping itself already (declared dead): the
        // signal then ends it at once, with a failure status.
        assert!(
            status.success() || n.stalled,
            "a node stops cleanly: {status}\n{}",
            n.log_tail()
        );
    }
    let left = processes_marked(run);
    assert!(left.is_empty(), "processes left behind: {left:?}");
}

/// The invariants of a run, read from the tables: every workflow succeeded (each late ticker
/// was cancelled by its deadline), each ring workflow with its predecessor's message; each
/// transaction committed once; each message sent and consumed once, each sink's in order; the
/// checks of the topics, families, queues with limits and tickers; every command ran to its
/// end.
async fn check(pool: &PgPool, load: &Load) {
    let late: Vec<String> = load.cycles.iter().map(|&c| late_of(c)).collect();
    let failed: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT s.workflow_uuid, s.status, COALESCE(o.error, s.error)
         FROM dbos.workflow_status s LEFT JOIN dbos.workflow_output o USING (workflow_uuid)
         WHERE s.status <> CASE WHEN s.workflow_uuid = ANY($1) THEN 'CANCELLED' ELSE 'SUCCESS' END
         LIMIT 20",
    )
    .bind(&late)
    .fetch_all(pool)
    .await
    .expect("statuses");
    assert!(
        failed.is_empty(),
        "every workflow succeeds, and each late ticker is cancelled by its deadline: {failed:?}"
    );
    let n = WORKFLOWS_PER_CYCLE;
    for &c in &load.cycles {
        for i in 0..n {
            let id = format!("{}-{i}", ring_of(c));
            let got: String = output_of(pool, &id).await;
            assert_eq!(got, format!("from {}", (i + n - 1) % n), "{id}");
        }
    }
    let ledger: Vec<(String, i64)> = sqlx::query_as(
        "SELECT workflow_id, count(*) FROM torture_ledger GROUP BY 1 HAVING count(*) <> 1",
    )
    .fetch_all(pool)
    .await
    .expect("ledger");
    assert!(
        ledger.is_empty(),
        "a transaction committed twice: {ledger:?}"
    );
    // The late tickers' ticks are a prefix of theirs (`check_tickers`), and the forks' the ticks
    // they did not copy (`check_forks`), not a count.
    let apart: Vec<String> = late
        .iter()
        .cloned()
        .chain(load.cycles.iter().map(|&c| fork_of(c)))
        .collect();
    let rows: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT workflow_id) FROM torture_ledger
         WHERE split_part(workflow_id, ':', 1) <> ALL($1)",
    )
    .bind(&apart)
    .fetch_one(pool)
    .await
    .expect("ledger");
    assert_eq!(
        rows,
        load.ring_workflows()
            + load.cycles.len() as i64 * i64::from(TICKS + RATED_PER_CYCLE + HELD_PER_CYCLE),
        "a ledger row for each ring workflow, each tick and each one-tick ticker's tick"
    );
    // One message for each ring workflow, `SINK_MESSAGES` for each sink.
    let sinks: Vec<String> = load.cycles.iter().map(|&c| sink_of(c)).collect();
    let odd: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT destination_uuid, count(*), count(*) FILTER (WHERE consumed)
         FROM dbos.notifications GROUP BY 1
         HAVING count(*) <> CASE WHEN destination_uuid = ANY($1) THEN $2 ELSE 1 END
             OR bool_or(NOT consumed)",
    )
    .bind(&sinks)
    .bind(i64::from(SINK_MESSAGES))
    .fetch_all(pool)
    .await
    .expect("notifications");
    assert!(
        odd.is_empty(),
        "messages sent twice or not consumed: {odd:?}"
    );
    let messages: i64 = sqlx::query_scalar("SELECT count(*) FROM dbos.notifications")
        .fetch_one(pool)
        .await
        .expect("notifications");
    assert_eq!(
        messages,
        load.ring_workflows() + sinks.len() as i64 * i64::from(SINK_MESSAGES),
        "one message per ring workflow, and the sinks' messages"
    );
    let want: Vec<u32> = (0..SINK_MESSAGES).collect();
    for id in &sinks {
        let got: Vec<u32> = output_of(pool, id).await;
        assert_eq!(got, want, "{id} received each message once, in order");
    }
    check_topics(pool, load).await;
    check_families(pool, load).await;
    check_gated(pool, load).await;
    check_tickers(pool, load).await;
    check_forks(pool, load).await;
    check_rated(pool, load).await;
    eprintln!(
        "torture: the queue holds found {} of the held queue's {} workflows not yet claimed",
        load.held_back,
        load.cycles.len() * HELD_PER_CYCLE as usize
    );
    check_cron(pool, load).await;
    let ran = std::fs::read_to_string(&load.runs).unwrap_or_default();
    for id in &load.commands {
        assert!(
            ran.lines().any(|l| l.starts_with(&format!("{id} done "))),
            "command {id} ran to its end"
        );
    }
}

/// Each topic holds every message of its publisher once, and each reader took every one of them
/// once, in order, with its cursor after the last.
async fn check_topics(pool: &PgPool, load: &Load) {
    let n = PUBLISHES * PER_PUBLISH;
    let want: Vec<u32> = (0..n).collect();
    for &c in &load.cycles {
        let topic = topic_of(c);
        let topic = topic.as_str();
        let published: Vec<i64> =
            sqlx::query_scalar("SELECT seq FROM msg.messages WHERE topic = $1 ORDER BY seq")
                .bind(topic)
                .fetch_all(pool)
                .await
                .expect("msg.messages");
        assert_eq!(
            published,
            (1..=i64::from(n)).collect::<Vec<_>>(),
            "topic {topic}: each message published once"
        );
        let cursors: Vec<(String, i64)> = sqlx::query_as(
            "SELECT subscriber, cursor FROM msg.subscriptions WHERE topic = $1 ORDER BY 1",
        )
        .bind(topic)
        .fetch_all(pool)
        .await
        .expect("msg.subscriptions");
        let mut readers: Vec<String> = (0..READERS).map(|j| format!("{topic}-{j}")).collect();
        readers.sort();
        assert_eq!(
            cursors,
            readers
                .iter()
                .map(|r| (r.clone(), i64::from(n)))
                .collect::<Vec<_>>(),
            "topic {topic}: every reader's cursor is after the last message"
        );
        for id in &readers {
            let got: Vec<u32> = output_of(pool, id).await;
            assert_eq!(got, want, "{id} took each message once, in order");
        }
    }
}

/// Each parent read its child's values once, in order, its event and its result; the child
/// wrote each stream value once and appended each line of its file once.
async fn check_families(pool: &PgPool, load: &Load) {
    let values: Vec<u32> = (0..FAMILY_VALUES).collect();
    let lines: String = values.iter().map(|k| format!("{k}\n")).collect();
    let mut conn = pool.acquire().await.expect("connection");
    for &c in &load.cycles {
        let family = family_of(c);
        let family = family.as_str();
        let got: (Vec<u32>, Option<u32>, u32) = output_of(pool, family).await;
        assert_eq!(
            got,
            (values.clone(), Some(FAMILY_VALUES), FAMILY_VALUES),
            "{family} read its child's stream, event and result"
        );
        let children: Vec<(String, i64)> = sqlx::query_as(
            "SELECT w.workflow_uuid, count(s.*)
             FROM dbos.workflow_status w LEFT JOIN dbos.streams s USING (workflow_uuid)
             WHERE w.parent_workflow_id = $1 GROUP BY 1",
        )
        .bind(family)
        .fetch_all(pool)
        .await
        .expect("children");
        assert_eq!(
            children.len(),
            1,
            "{family} started one child: {children:?}"
        );
        assert_eq!(
            children[0].1,
            i64::from(FAMILY_VALUES) + 1,
            "{family}'s child wrote each value once, and closed its stream"
        );
        let (fs, root) = (Fs::new(FsOptions::default()), Identity::root());
        let file = fs
            .read(&mut conn, &root, &format!("/{family}"), 0, 4096)
            .await
            .expect("the child's file");
        assert_eq!(
            String::from_utf8_lossy(&file),
            lines,
            "{family}'s child appended each line once"
        );
    }
}

/// Each workflow of the queues with limits committed its transaction once and returned what it
/// saw: at most `GATED_AT_ONCE` of the limited queue's workflows running, and only itself on its
/// node; only itself in its partition of the partitioned queue.
async fn check_gated(pool: &PgPool, load: &Load) {
    let rows: Vec<(String, String, i64, i64, i64)> = sqlx::query_as(
        "SELECT workflow_id, queue, running, running_here, running_partition
         FROM torture_gate ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .expect("torture_gate");
    let mut want: Vec<String> = load
        .cycles
        .iter()
        .flat_map(|&c| [gated_of(c), partitioned_of(c)])
        .flat_map(|p| (0..GATED_PER_CYCLE).map(move |k| format!("{p}-{k}")))
        .collect();
    want.sort();
    let ids: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
    assert_eq!(
        ids, want,
        "each gated workflow committed its transaction once"
    );
    let over: Vec<_> = rows
        .iter()
        .filter(|(_, queue, all, here, partition)| {
            if queue == LIMITED_QUEUE {
                !(1..=GATED_AT_ONCE).contains(all) || *here != 1
            } else {
                queue != PARTITIONED_QUEUE || *partition != 1
            }
        })
        .collect();
    assert!(
        over.is_empty(),
        "a queue ran more at once than its limits allow: {over:?}"
    );
    for (id, _, all, here, partition) in &rows {
        let got: (i64, i64, i64) = output_of(pool, id).await;
        assert_eq!(
            got,
            (*all, *here, *partition),
            "{id} returned what it committed"
        );
    }
    let at = |queue: &str, n: i64| rows.iter().filter(|r| r.1 == queue && r.2 == n).count();
    eprintln!(
        "torture: of {} transactions of each queue with limits, {} saw the limited queue at its \
         limit, {} saw both partitions of the partitioned one running",
        rows.len() / 2,
        at(LIMITED_QUEUE, GATED_AT_ONCE),
        at(PARTITIONED_QUEUE, i64::from(PARTITIONS)),
    );
}

/// Each ticker, cancelled and resumed, ended with every tick; each late ticker's ticks before
/// its deadline are its first ones, without a gap (each tick's ledger row once is checked with
/// the ledger).
async fn check_tickers(pool: &PgPool, load: &Load) {
    let mut late_ticks = Vec::new();
    for &c in &load.cycles {
        let id = late_of(c);
        let ticks = ticks_of(pool, &id).await;
        assert_eq!(
            ticks,
            (0..ticks.len() as i64).collect::<Vec<_>>(),
            "{id}: its ticks before its deadline, without a gap"
        );
        late_ticks.push(ticks.len());
    }
    late_ticks.sort_unstable();
    if let (Some(min), Some(max)) = (late_ticks.first(), late_ticks.last()) {
        eprintln!("torture: the late tickers took {min} to {max} ticks before their deadline");
    }
    for &c in &load.cycles {
        let id = ticker_of(c);
        let got: u32 = output_of(pool, &id).await;
        assert_eq!(got, TICKS, "{id}");
        let ticks = ticks_of(pool, &id).await;
        assert_eq!(
            ticks,
            (0..i64::from(TICKS)).collect::<Vec<_>>(),
            "{id}: each tick committed once"
        );
    }
}

/// The ticks of ticker `id` in the ledger (from its rows `{id}:{j}`), in order.
async fn ticks_of(pool: &PgPool, id: &str) -> Vec<i64> {
    sqlx::query_scalar(
        "SELECT split_part(workflow_id, ':', 2)::int8 FROM torture_ledger
         WHERE workflow_id LIKE $1 ORDER BY 1",
    )
    .bind(format!("{id}:%"))
    .fetch_all(pool)
    .await
    .expect("ledger")
}

/// Each cycle's fork of its ticker ended with every tick: first the ticks it copied (recorded
/// by the original before the fork's step), whose outputs name the original and which it did
/// not run again, then the ticks it ran itself, each with its ledger row `{fork}:{j}` (once:
/// the ledger's count of each row is checked with the ledger).
async fn check_forks(pool: &PgPool, load: &Load) {
    assert_eq!(load.forks, load.cycles.len(), "a fork in each cycle");
    let mut copied_counts = Vec::new();
    for &c in &load.cycles {
        let (ticker, fork) = (ticker_of(c), fork_of(c));
        let got: u32 = output_of(pool, &fork).await;
        assert_eq!(got, TICKS, "{fork}");
        let ticks: Vec<(i32, Option<String>)> = sqlx::query_as(
            "SELECT function_id, output FROM dbos.operation_outputs
             WHERE workflow_uuid = $1 AND function_name = 'tick' ORDER BY 1",
        )
        .bind(&fork)
        .fetch_all(pool)
        .await
        .expect("the fork's ticks");
        let ran_by: Vec<String> = ticks
            .iter()
            .map(|(_, out)| serde_json::from_str(out.as_deref().unwrap_or("null")).expect("an ID"))
            .collect();
        assert_eq!(ran_by.len(), TICKS as usize, "{fork}: each tick recorded");
        let copied = ran_by.iter().take_while(|by| **by == ticker).count();
        assert!(
            ran_by[copied..].iter().all(|by| *by == fork),
            "{fork}: the copied ticks first, then its own: {ran_by:?}"
        );
        assert!(
            ticks[..copied].iter().all(|(fid, _)| *fid < fork_step(c)),
            "{fork}: copied only before step {}: {ticks:?}",
            fork_step(c)
        );
        let own = ticks_of(pool, &fork).await;
        assert_eq!(
            own,
            (copied as i64..i64::from(TICKS)).collect::<Vec<_>>(),
            "{fork}: a ledger row for each tick it ran, none for a tick it copied"
        );
        copied_counts.push(copied);
    }
    let with = |n: usize| copied_counts.iter().filter(|&&k| k == n).count();
    eprintln!(
        "torture: of {} forks, {} copied no tick, {} every tick, the rest some",
        copied_counts.len(),
        with(0),
        with(TICKS as usize)
    );
}

/// No `RATED_PERIOD_MS` saw more than `RATED_MAX` of the rated queue's workflows start. A
/// workflow's start is that of its last claim (a workflow claimed again loses its earlier
/// start): a claim counts the starts of the window before it as they are then, and each of
/// them that stays the last of its workflow is among those checked, so the last starts keep
/// the limit however often a fault had workflows claimed again.
async fn check_rated(pool: &PgPool, load: &Load) {
    let starts: Vec<Option<i64>> = sqlx::query_scalar(
        "SELECT started_at_epoch_ms FROM dbos.workflow_status WHERE queue_name = $1 ORDER BY 1",
    )
    .bind(RATED_QUEUE)
    .fetch_all(pool)
    .await
    .expect("the rated queue's starts");
    assert_eq!(
        starts.len(),
        load.cycles.len() * RATED_PER_CYCLE as usize,
        "each rated ticker on its queue"
    );
    let starts: Vec<i64> = starts.into_iter().map(|s| s.expect("a start")).collect();
    let mut at_limit = 0;
    for (i, &t) in starts.iter().enumerate() {
        let window = starts[..=i]
            .iter()
            .rev()
            .take_while(|&&s| s > t - RATED_PERIOD_MS)
            .count();
        assert!(
            window <= RATED_MAX,
            "{window} rated workflows started in the {RATED_PERIOD_MS} ms up to {t}: {starts:?}"
        );
        at_limit += usize::from(window == RATED_MAX);
    }
    eprintln!(
        "torture: of {} starts of the rated queue, {at_limit} came with the queue at its rate \
         limit",
        starts.len()
    );
}

/// The cron schedule's runs recorded each tick once, every second without a gap from its first
/// tick (the first whole second after it was added) to the last it fired.
async fn check_cron(pool: &PgPool, load: &Load) {
    let ticks: Vec<DateTime<Utc>> = sqlx::query_scalar("SELECT tick FROM torture_cron ORDER BY 1")
        .fetch_all(pool)
        .await
        .expect("torture_cron");
    assert_eq!(
        ticks.len() as i64,
        load.cron_runs,
        "a tick recorded by each run, once"
    );
    let last = fired_until(pool).await.expect("the last tick fired");
    let (Some(first), Some(latest)) = (ticks.first(), ticks.last()) else {
        panic!("the cron schedule ran no tick");
    };
    assert_eq!(*latest, last, "the last tick fired ran");
    let (began, added) = load.cron_added;
    let next_second = |t: DateTime<Utc>| t.timestamp() + 1;
    assert!(
        (next_second(began)..=next_second(added)).contains(&first.timestamp()),
        "the first tick {first} is the first second after the schedule was added ({began} … \
         {added})"
    );
    let gaps: Vec<_> = ticks
        .windows(2)
        .filter(|w| (w[1] - w[0]).num_milliseconds() != 1_000)
        .collect();
    assert!(gaps.is_empty(), "cron ticks missed or repeated: {gaps:?}");
    eprintln!(
        "torture: the cron schedule ran {} ticks, {first} to {latest}",
        ticks.len()
    );
}

/// Fencing, from the commands' own lines ("ID start PID", "ID done PID", appended in time
/// order): once a command started again in another process, the earlier process never
/// finishes — it was stopped before the takeover. Returns how many commands ran more than once.
fn check_no_overlap(load: &Load) -> usize {
    let ran = std::fs::read_to_string(&load.runs).unwrap_or_default();
    let mut again = 0;
    for id in &load.commands {
        let mut latest: Option<&str> = None;
        let mut starts = 0;
        for line in ran.lines() {
            let mut words = line.split(' ');
            if words.next() != Some(id.as_str()) {
                continue;
            }
            match (words.next(), words.next()) {
                (Some("start"), Some(pid)) => {
                    starts += 1;
                    latest = Some(pid);
                }
                (Some("done"), Some(pid)) => assert_eq!(
                    Some(pid),
                    latest,
                    "command {id}: a run finished after another had started:\n{ran}"
                ),
                _ => panic!("an unexpected line: {line}"),
            }
        }
        if starts > 1 {
            again += 1;
        }
    }
    again
}

/// Enqueues ring `ring` of `n` workflows in one statement, so none can send to a peer that is
/// not there yet; false when the database refused (a fault), to be tried again (the enqueue
/// keeps existing IDs as they are).
async fn enqueue_ring(pool: &PgPool, ring: &str, n: u32) -> bool {
    sqlx::query(
        "SELECT dbos.enqueue_workflow('torture.ring', 'default',
             ARRAY[to_json($1::text), to_json(i), to_json($2::int)],
             workflow_id => $1 || '-' || i)
         FROM generate_series(0, $2::int - 1) AS i",
    )
    .bind(ring)
    .bind(n as i32)
    .execute(pool)
    .await
    .is_ok()
}

/// Enqueues the publisher and readers of `topic` in one statement; false when the database
/// refused (a fault), to be tried again.
async fn enqueue_topic(pool: &PgPool, topic: &str) -> bool {
    sqlx::query(
        "SELECT dbos.enqueue_workflow('torture.publisher', 'default',
             ARRAY[to_json($1::text), to_json($2::int), to_json($3::int)],
             workflow_id => $1 || '-pub')
         UNION ALL
         SELECT dbos.enqueue_workflow('torture.reader', 'default',
             ARRAY[to_json($1::text), to_json($2::int * $3::int)],
             workflow_id => $1 || '-' || i)
         FROM generate_series(0, $4::int - 1) AS i",
    )
    .bind(topic)
    .bind(PUBLISHES as i32)
    .bind(PER_PUBLISH as i32)
    .bind(READERS as i32)
    .execute(pool)
    .await
    .is_ok()
}

/// Enqueues the parent of `family` (its child's file is `/{family}`); false when the database
/// refused (a fault), to be tried again.
async fn enqueue_family(pool: &PgPool, family: &str) -> bool {
    sqlx::query(
        "SELECT dbos.enqueue_workflow('torture.parent', 'default',
             ARRAY[to_json('/' || $1::text)], workflow_id => $1)",
    )
    .bind(family)
    .execute(pool)
    .await
    .is_ok()
}

/// Enqueues the workflows `{prefix}-0` … of the limited queue in one statement, the first
/// delayed by `GATED_DELAY_MS`; false when the database refused (a fault), to be tried again.
async fn enqueue_gated(pool: &PgPool, prefix: &str) -> bool {
    sqlx::query(
        "SELECT dbos.enqueue_workflow('torture.gated', $2, ARRAY[to_json(i)],
             workflow_id => $1 || '-' || i,
             delay_until_epoch_ms => CASE WHEN i = 0 THEN kernel.now_ms() + $4 END)
         FROM generate_series(0, $3::int - 1) AS i",
    )
    .bind(prefix)
    .bind(LIMITED_QUEUE)
    .bind(GATED_PER_CYCLE as i32)
    .bind(GATED_DELAY_MS)
    .execute(pool)
    .await
    .is_ok()
}

/// Enqueues the workflows `{prefix}-0` … of the partitioned queue in one statement, spread over
/// its partitions; false when the database refused (a fault), to be tried again.
async fn enqueue_partitioned(pool: &PgPool, prefix: &str) -> bool {
    sqlx::query(
        "SELECT dbos.enqueue_workflow('torture.gated', $2, ARRAY[to_json(i)],
             workflow_id => $1 || '-' || i, queue_partition_key => 'part' || (i % $4))
         FROM generate_series(0, $3::int - 1) AS i",
    )
    .bind(prefix)
    .bind(PARTITIONED_QUEUE)
    .bind(GATED_PER_CYCLE as i32)
    .bind(PARTITIONS as i32)
    .execute(pool)
    .await
    .is_ok()
}

/// Enqueues the ticker `id` of `ticks` ticks, with a timeout when given; false when the
/// database refused (a fault), to be tried again.
async fn enqueue_ticker(pool: &PgPool, id: &str, ticks: u32, timeout_ms: Option<i64>) -> bool {
    sqlx::query(
        "SELECT dbos.enqueue_workflow('torture.ticker', 'default', ARRAY[to_json($2::int)],
             workflow_id => $1, timeout_ms => $3)",
    )
    .bind(id)
    .bind(ticks as i32)
    .bind(timeout_ms)
    .execute(pool)
    .await
    .is_ok()
}

/// Enqueues the tickers `{prefix}-0` … `{prefix}-{n - 1}` of one tick each on `queue` in one
/// statement; false when the database refused (a fault), to be tried again.
async fn enqueue_tickers(pool: &PgPool, prefix: &str, queue: &str, n: u32) -> bool {
    sqlx::query(
        "SELECT dbos.enqueue_workflow('torture.ticker', $2, ARRAY[to_json(1)],
             workflow_id => $1 || '-' || i)
         FROM generate_series(0, $3::int - 1) AS i",
    )
    .bind(prefix)
    .bind(queue)
    .bind(n as i32)
    .execute(pool)
    .await
    .is_ok()
}

/// Enqueues the sink `id`; false when the database refused (a fault), to be tried again.
async fn enqueue_sink(pool: &PgPool, id: &str) -> bool {
    sqlx::query(
        "SELECT dbos.enqueue_workflow('torture.sink', 'default', ARRAY[to_json($2::int)],
             workflow_id => $1)",
    )
    .bind(id)
    .bind(SINK_MESSAGES as i32)
    .execute(pool)
    .await
    .is_ok()
}

/// Submits this cycle's command tasks: each appends "ID start PID" and "ID done PID" lines
/// around a pause in a background process, so a lost node leaves a grandchild to be killed.
async fn enqueue_commands(pool: &PgPool, load: &mut Load, cycle: usize) -> bool {
    for c in 0..COMMANDS_PER_CYCLE {
        let id = format!("c{cycle}-{c}");
        let script = format!(
            "echo {id} start $$ >> {runs}; sleep {pause:.1} & wait; echo {id} done $$ >> {runs}",
            runs = load.runs.display(),
            pause = load.pause + f64::from(c) / 10.0,
        );
        let submit = tasks::Submit {
            spec: CommandSpec {
                argv: vec!["sh".into(), "-c".into(), script],
                env: Some([(RUN_MARK.to_owned(), load.run.clone())].into()),
                ..CommandSpec::default()
            },
            queue: "default".into(),
            id: Some(id.clone()),
            ..tasks::Submit::default()
        };
        if tasks::submit(pool, &submit).await.is_err() {
            return false;
        }
        if !load.commands.contains(&id) {
            load.commands.push(id);
        }
    }
    true
}

/// Starts a new node for each one that exited: only a stalled node (declared dead while it
/// was stopped) may end by itself; any other exit fails the test.
fn replace_exited_nodes(
    nodes: &mut [NodeProc],
    start_node: &mut impl FnMut(&mut usize, usize) -> NodeProc,
    started: &mut usize,
) {
    for (slot, n) in nodes.iter_mut().enumerate() {
        if let Some(status) = n.child.try_wait().expect("try_wait") {
            assert!(
                n.stalled,
                "a node ended by itself ({status}) without having been stalled:\n{}",
                n.log_tail()
            );
            *n = start_node(started, slot);
        }
    }
}

/// Processes (other than this one) whose environment carries the run's mark.
fn processes_marked(run: &str) -> Vec<(i32, String)> {
    let mark = format!("{RUN_MARK}={run}");
    let me = std::process::id() as i32;
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me || dbos_kernel::testing::process_gone(pid) {
            continue;
        }
        let Ok(env) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        if env.split(|b| *b == 0).any(|v| v == mark.as_bytes()) {
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            found.push((pid, cmd));
        }
    }
    found
}

fn uuid_like(seed: u64) -> String {
    format!("{seed:016x}-{}", std::process::id())
}

/// The run's tables and its queues with limits, before any node works.
async fn setup(pool: &PgPool) {
    db(
        pool,
        "CREATE TABLE torture_ledger (workflow_id text NOT NULL)",
    )
    .await;
    db(
        pool,
        "CREATE TABLE torture_cron (tick timestamptz NOT NULL)",
    )
    .await;
    db(
        pool,
        "CREATE TABLE torture_gate (workflow_id text NOT NULL, queue text NOT NULL,
                                    running int8 NOT NULL, running_here int8 NOT NULL,
                                    running_partition int8 NOT NULL)",
    )
    .await;
    sqlx::query(
        "INSERT INTO dbos.queues (name, concurrency, worker_concurrency) VALUES ($1, $2, 1)",
    )
    .bind(LIMITED_QUEUE)
    .bind(GATED_AT_ONCE as i32)
    .execute(pool)
    .await
    .expect("the limited queue");
    sqlx::query("INSERT INTO dbos.queues (name, partition_concurrency) VALUES ($1, 1)")
        .bind(PARTITIONED_QUEUE)
        .execute(pool)
        .await
        .expect("the partitioned queue");
    sqlx::query(
        "INSERT INTO dbos.queues (name, rate_limit_max, rate_limit_period_sec)
         VALUES ($1, $2, $3::float8 / 1000)",
    )
    .bind(RATED_QUEUE)
    .bind(RATED_MAX as i32)
    .bind(RATED_PERIOD_MS as f64)
    .execute(pool)
    .await
    .expect("the rated queue");
    sqlx::query("INSERT INTO dbos.queues (name) VALUES ($1)")
        .bind(HELD_QUEUE)
        .execute(pool)
        .await
        .expect("the held queue");
}

/// The output of workflow `id`, which must have one of type `T`.
async fn output_of<T: serde::de::DeserializeOwned>(pool: &PgPool, id: &str) -> T {
    let output = dbos_services::store::workflows::outcome(pool, id)
        .await
        .expect("outcome")
        .output;
    serde_json::from_str(output.as_deref().unwrap_or("null"))
        .unwrap_or_else(|e| panic!("{id}: output {output:?}: {e}"))
}

async fn db(pool: &PgPool, sql: &str) {
    sqlx::query(sql).execute(pool).await.expect(sql);
}
