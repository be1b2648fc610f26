//! The `dbos` command-line interface.

mod cron;
mod demo;
mod fs;
mod msg;
mod prov;
mod queue;
mod render;
mod task;
mod top;
mod wf;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use dbos_kernel::db::{self, PoolLimits};
use dbos_kernel::{config, embedded, redact_url, Config, Kernel};

use render::Format;

/// A database-oriented operating system on Postgres.
#[derive(Debug, Parser)]
#[command(name = "dbos", version, about, propagate_version = true)]
struct Cli {
    /// On failure, print every cause of the error on a line of its own.
    #[arg(long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Boot a node in the foreground (Ctrl-C or SIGTERM stops it cleanly).
    Boot(BootArgs),
    /// Show the database, its nodes, the tasks waiting for a node (and why), what the
    /// retention sweeps keep, and the applied migrations.
    Status {
        #[command(flatten)]
        conn: ConnArgs,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
        /// Show every node that ever booted on this database, not only the live ones and the
        /// 20 that stopped or died last.
        #[arg(long)]
        all_nodes: bool,
    },
    /// Run SQL on the system database and print the rows, as the node role `dbos_node` (on
    /// the embedded cluster; the role of the URL otherwise).
    Sql {
        #[command(flatten)]
        conn: ConnArgs,
        /// Print the rows as a JSON array of objects (a `numeric` that a JSON number would
        /// round is printed as a string of its exact digits).
        #[arg(long)]
        json: bool,
        /// Run as the embedded cluster's superuser, for what only it may do (roles). A
        /// statement that reads or writes the system's tables runs the node role's functions
        /// and triggers with the superuser's rights: keep to roles and settings.
        #[arg(long, conflicts_with = "database_url")]
        superuser: bool,
        /// The SQL; several statements separated by `;` run in order.
        query: String,
    },
    /// Inspect and manage durable workflows.
    Wf {
        #[command(flatten)]
        conn: ConnArgs,
        /// Print JSON instead of tables.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        command: wf::WfCommand,
    },
    /// Submit Linux commands as tasks; follow, inspect, wait for and cancel them.
    Task {
        #[command(flatten)]
        conn: ConnArgs,
        /// Print JSON instead of tables.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        command: task::TaskCommand,
    },
    /// Schedules that run a command or a workflow on every cron tick.
    Cron {
        #[command(flatten)]
        conn: ConnArgs,
        /// Print JSON instead of tables.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        command: cron::CronCommand,
    },
    /// Create, change, list, pause, resume and remove queues.
    Queue {
        #[command(flatten)]
        conn: ConnArgs,
        /// Print JSON instead of tables.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        command: queue::QueueCommand,
    },
    /// Send messages to workflows, read their events and streams, publish and subscribe.
    Msg {
        #[command(flatten)]
        conn: ConnArgs,
        /// Print JSON instead of tables (one JSON object per line for message feeds).
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        command: msg::MsgCommand,
    },
    /// Work with the file system: ls, cat, put, get, mkdir, rm, mv, stat, du, and mount it
    /// through FUSE.
    Fs {
        #[command(flatten)]
        conn: ConnArgs,
        /// Print JSON instead of tables.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        command: fs::FsCommand,
    },
    /// Serve the dashboard and `/metrics` without running a node (Ctrl-C stops it).
    Ui {
        #[command(flatten)]
        conn: ConnArgs,
        /// Address (`PORT`, `:PORT` or `HOST:PORT`; loopback unless a host is given).
        #[arg(long, default_value = "127.0.0.1:8080", value_parser = crate::http::parse_addr)]
        http: std::net::SocketAddr,
    },
    /// Watch the OS: nodes, queues with their rates, running workflows with their age, recent
    /// failures; refreshed every second (keys: q quit, a/n/o sort). Plain text once with
    /// `--once` or when not on a terminal.
    Top {
        #[command(flatten)]
        conn: ConnArgs,
        /// Print once and exit.
        #[arg(long)]
        once: bool,
        /// Refresh interval (e.g. 1s, 500ms).
        #[arg(long, default_value = "1s", value_parser = parse_positive_duration)]
        interval: std::time::Duration,
        /// Order of the running workflows.
        #[arg(long, value_enum, default_value_t = crate::observe::Sort::Age)]
        sort: crate::observe::Sort,
    },
    /// Ask who touched what: the files, messages, events, topics and commands of workflow
    /// steps, from the provenance they recorded.
    Prov {
        #[command(flatten)]
        conn: ConnArgs,
        /// Print JSON instead of tables.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        command: prov::ProvCommand,
    },
    /// Show durability in five minutes: run a workflow on a node, kill the node with SIGKILL
    /// mid-way, boot again, and watch the workflow finish without redoing finished steps.
    Demo {
        /// Data directory of the embedded cluster the demo boots.
        #[arg(long, env = "DBOS_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Pause inside each of the workflow's four operations, in ms.
        #[arg(long, default_value_t = 1500)]
        pause_ms: u64,
    },
    /// Run the benchmarks (see `dbos bench --help`).
    Bench {
        /// Suites and options of the harness.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Print the database URL for other clients (psql, DBOS for Python): the superuser's, or
    /// with --node the node role's; its password is hidden unless --show-password, which needs
    /// read access to the data directory's password files.
    Url {
        #[command(flatten)]
        conn: ConnArgs,
        /// Print the password too.
        #[arg(long)]
        show_password: bool,
        /// The URL of the node role (`dbos_node`, not a superuser) of the embedded cluster.
        #[arg(long, conflicts_with = "database_url")]
        node: bool,
    },
    /// Open psql on the system database, as the node role `dbos_node` (on the embedded
    /// cluster; the role of the URL otherwise).
    Psql {
        #[command(flatten)]
        conn: ConnArgs,
        /// Connect as the embedded cluster's superuser (see `dbos sql --superuser`).
        #[arg(long, conflicts_with = "database_url")]
        superuser: bool,
        /// Extra arguments for psql, after `--`.
        #[arg(last = true)]
        args: Vec<String>,
    },
}

/// How a command finds the database.
#[derive(Clone, Debug, Args)]
struct ConnArgs {
    /// Postgres URL of the system database; the embedded cluster of --data-dir when unset.
    #[arg(long, global = true, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Data directory of the embedded cluster [default: /var/lib/dbos for root, else
    /// ~/.local/share/dbos].
    #[arg(long, global = true, env = "DBOS_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

impl ConnArgs {
    /// The database URL: given, or that of the running embedded cluster as the node role.
    ///
    /// Never the superuser's by default: the node role owns the system's tables, views,
    /// functions and triggers, and whoever holds its password (any node, a DBOS for Python
    /// app) may replace them, so a superuser session that reads or writes them would run that
    /// code with the superuser's rights.
    fn url(&self) -> Result<String> {
        if let Some(url) = &self.database_url {
            return Ok(url.clone());
        }
        Ok(embedded::discover_node_url(&self.data_dir())?)
    }

    /// The URL of the embedded cluster's superuser (or the given URL).
    fn superuser_url(&self) -> Result<String> {
        if let Some(url) = &self.database_url {
            return Ok(url.clone());
        }
        Ok(embedded::discover(&self.data_dir())?.url)
    }

    /// For a command that serves until stopped (the dashboard, a mount): the database URL,
    /// and on the embedded cluster the cluster held as a node holds it, so a node stopping
    /// meanwhile leaves the server running. Give it to [`leave`] at the end.
    pub(super) async fn attach(&self) -> Result<(String, Option<embedded::Cluster>)> {
        if let Some(url) = &self.database_url {
            return Ok((url.clone(), None));
        }
        let cluster = embedded::Cluster::attach(&self.data_dir()).await?;
        Ok((cluster.node_url(embedded::DATABASE), Some(cluster)))
    }

    /// The embedded cluster's data directory: given, or the default.
    fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(config::default_data_dir)
    }
}

#[derive(Clone, Debug, Args)]
struct BootArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Serve the dashboard and `/metrics` on this address (`PORT`, `:PORT` or `HOST:PORT`;
    /// loopback unless a host is given).
    #[arg(long, env = "DBOS_HTTP", value_name = "ADDR", value_parser = crate::http::parse_addr)]
    http: Option<std::net::SocketAddr>,
    /// Node id; a fresh one per boot when unset.
    #[arg(long, env = "DBOS_NODE_ID")]
    node_id: Option<String>,
    /// Tasks this node runs at once.
    #[arg(long, env = "DBOS_SLOTS", default_value_t = Config::default().slots)]
    slots: u32,
    /// Placement label KEY=VALUE (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// User that runs command tasks. A node running as root runs them as the unprivileged
    /// `dbos-task` (created by scripts/setup) unless told otherwise; `--task-user root` runs
    /// them as root. A node not running as root runs them as its own user.
    #[arg(long, env = "DBOS_TASK_USER")]
    task_user: Option<String>,
    /// A user a task may ask to run as (`dbos task submit --user`); repeatable. None by
    /// default: whoever can write a row can submit a task.
    #[arg(long = "allow-task-user", value_name = "USER")]
    allowed_task_users: Vec<String>,
    /// Unprivileged user that runs the embedded Postgres when booting as root.
    #[arg(long, env = "DBOS_PG_USER", default_value_t = Config::default().pg_user)]
    pg_user: String,
    /// Directory of the Postgres server binaries; searched for when unset.
    #[arg(long, env = "DBOS_PG_BINDIR")]
    pg_bindir: Option<PathBuf>,
    /// Port of the embedded Postgres on 127.0.0.1; a free one when unset.
    #[arg(long, env = "DBOS_PG_PORT")]
    pg_port: Option<u16>,
    /// Connections in the node's pool.
    #[arg(long, default_value_t = Config::default().pool_size_max)]
    pool_size_max: u32,
    /// Interval between heartbeats, in ms.
    #[arg(long, default_value_t = Config::default().heartbeat_interval_ms)]
    heartbeat_interval_ms: u64,
    /// Silence after which a node counts as dead, in ms.
    #[arg(long, default_value_t = Config::default().node_lease_ms)]
    node_lease_ms: u64,
    /// Time running tasks get to finish at shutdown, in ms.
    #[arg(long, default_value_t = Config::default().drain_timeout_ms)]
    drain_timeout_ms: u64,
    /// Time spent retrying an unreachable database, in ms.
    #[arg(long, default_value_t = Config::default().connect_retry_ms_max)]
    connect_retry_ms_max: u64,
}

/// Parses a duration: a number with a unit (`ms`, `s`, `m`, `h`, `d`), or plain milliseconds.
pub(crate) fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 500ms, 10s, 2m, 1h or 7d"))?;
    let ms = match unit.trim() {
        "" | "ms" => n,
        "s" => n * 1e3,
        "m" | "min" => n * 60e3,
        "h" => n * 3600e3,
        "d" => n * 86_400e3,
        other => {
            return Err(format!(
                "invalid duration unit {other:?} in {s:?}: use ms, s, m, h or d"
            ))
        }
    };
    if !ms.is_finite() || !(0.0..=1e15).contains(&ms) {
        return Err(format!("duration {s:?} is out of range"));
    }
    Ok(std::time::Duration::from_millis(ms as u64))
}

/// A duration above zero: a `--timeout` of 0 would end every run at once, an `--interval` of 0
/// would poll without pause.
pub(crate) fn parse_positive_duration(s: &str) -> Result<std::time::Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(format!("{s:?} is too short: at least 1ms"));
    }
    Ok(d)
}

/// A time on the command line: RFC 3339, or a date alone, in UTC, read as its first
/// millisecond, or with `day_end` its last (so that "until 2026-01-31" takes in that day).
pub(crate) fn parse_time(s: &str, day_end: bool) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    match chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        Ok(d) => {
            let start = d.and_time(chrono::NaiveTime::MIN).and_utc();
            Ok(if day_end {
                start + chrono::Duration::milliseconds(86_399_999)
            } else {
                start
            })
        }
        Err(_) => Err(format!(
            "{s:?} is neither an RFC 3339 time such as 2026-01-31T12:00:00Z nor a date such as \
             2026-01-31"
        )),
    }
}

/// [`parse_time`] for the start of a range.
pub(crate) fn parse_time_from(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    parse_time(s, false)
}

/// [`parse_time`] for the end of a range.
pub(crate) fn parse_time_to(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    parse_time(s, true)
}

pub(crate) fn parse_label(s: &str) -> Result<(String, String), String> {
    config::parse_label(s).map_err(|e| e.to_string())
}

impl BootArgs {
    fn config(self) -> Config {
        Config {
            database_url: self.conn.database_url,
            data_dir: self.conn.data_dir.unwrap_or_else(config::default_data_dir),
            node_id: self.node_id,
            slots: self.slots,
            labels: self.labels.into_iter().collect(),
            pg_user: self.pg_user,
            pg_bindir: self.pg_bindir,
            pg_port: self.pg_port,
            pool_size_max: self.pool_size_max,
            heartbeat_interval_ms: self.heartbeat_interval_ms,
            node_lease_ms: self.node_lease_ms,
            drain_timeout_ms: self.drain_timeout_ms,
            connect_retry_ms_max: self.connect_retry_ms_max,
            ..Config::default()
        }
    }
}

/// Runs the `dbos` command line and returns the process exit code.
pub fn main() -> ExitCode {
    main_with(|_| {})
}

/// Runs the `dbos` command line with a program's own workflows registered besides the built-in
/// ones: `boot` runs them, and `wf replay` replays them. A program embeds the CLI this way to
/// check its workflow code against recorded histories (`myprogram wf replay --all`).
pub fn main_with(register: impl FnOnce(&mut crate::workflow::Registry)) -> ExitCode {
    let mut own = crate::workflow::Registry::new();
    register(&mut own);
    let cli = Cli::parse();
    if !cli.command.serves() {
        end_on_closed_pipe();
    }
    let default_level = if matches!(cli.command, Command::Boot(_)) {
        "info"
    } else {
        "warn"
    };
    let _telemetry = crate::telemetry::init(default_level);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let verbose = cli.verbose;
    match runtime.block_on(run(cli.command, own)) {
        Ok(code) => code,
        Err(e) if verbose => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

impl Command {
    /// Whether the command serves until it is stopped (a node, the dashboard, the FUSE server,
    /// the demo's nodes) rather than printing its answer and exiting.
    fn serves(&self) -> bool {
        matches!(
            self,
            Command::Boot(_)
                | Command::Ui { .. }
                | Command::Demo { .. }
                | Command::Fs {
                    command: fs::FsCommand::Mount { .. },
                    ..
                }
        )
    }
}

/// Lets SIGPIPE end the process, as it ends `cat` or `ls`: a command piped into `head` stops
/// quietly when the reader goes away, instead of failing with "Broken pipe" (Rust ignores
/// SIGPIPE from the start). Commands that serve keep ignoring it: a log reader that goes away
/// must not kill a node.
fn end_on_closed_pipe() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: restores the default disposition before the runtime's threads start; no handler
    // function is installed. It fails only for an invalid signal, which SIGPIPE is not.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}

/// An error as one line: the message, then each cause its predecessors did not already say
/// (error types often repeat their source in their own message).
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

async fn run(command: Command, own: crate::workflow::Registry) -> Result<ExitCode> {
    match command {
        Command::Boot(args) => boot(args, own).await,
        Command::Status {
            conn,
            json,
            all_nodes,
        } => status(&conn, Format::from_json_flag(json), all_nodes).await,
        Command::Sql {
            conn,
            json,
            superuser,
            query,
        } => sql(&conn, superuser, &query, Format::from_json_flag(json)).await,
        Command::Psql {
            conn,
            superuser,
            args,
        } => psql(&conn, superuser, &args),
        Command::Url {
            conn,
            show_password,
            node,
        } => {
            let url = if node {
                conn.url()?
            } else {
                conn.superuser_url()?
            };
            println!("{}", if show_password { url } else { redact_url(&url) });
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench { .. } => bail!("`dbos bench` is served by the dbos binary itself"),
        Command::Wf {
            conn,
            json,
            command,
        } => {
            let mut registry = crate::workflow::Registry::new();
            crate::builtin::register(&mut registry);
            registry.merge(own);
            wf::run(&conn, Format::from_json_flag(json), command, &registry).await
        }
        Command::Task {
            conn,
            json,
            command,
        } => task::run(&conn, Format::from_json_flag(json), command).await,
        Command::Cron {
            conn,
            json,
            command,
        } => cron::run(&conn, Format::from_json_flag(json), command).await,
        Command::Queue {
            conn,
            json,
            command,
        } => queue::run(&conn, Format::from_json_flag(json), command).await,
        Command::Msg {
            conn,
            json,
            command,
        } => msg::run(&conn, Format::from_json_flag(json), command).await,
        Command::Fs {
            conn,
            json,
            command,
        } => fs::run(&conn, Format::from_json_flag(json), command).await,
        Command::Prov {
            conn,
            json,
            command,
        } => prov::run(&conn, Format::from_json_flag(json), command).await,
        Command::Top {
            conn,
            once,
            interval,
            sort,
        } => top::run(&conn, once, interval, sort).await,
        Command::Ui { conn, http } => ui(&conn, http).await,
        Command::Demo { data_dir, pause_ms } => {
            demo::run(data_dir.unwrap_or_else(config::default_data_dir), pause_ms).await
        }
    }
}

async fn boot(args: BootArgs, own: crate::workflow::Registry) -> Result<ExitCode> {
    let limits = dbos_scheduler::command::Limits {
        run_as: match &args.task_user {
            Some(u) => dbos_scheduler::command::RunAs::User(u.clone()),
            None => dbos_scheduler::command::RunAs::Default,
        },
        allowed_users: args.allowed_task_users.clone(),
        ..Default::default()
    };
    // Checked before anything starts: a node that cannot run its tasks says so at once.
    limits.run_as.resolve()?;
    // Installed once the first boot is done (a Ctrl-C while booting ends the process), then
    // kept: a signal between two incarnations is not lost.
    let mut signals = None;
    loop {
        let report = boot_once(&args, limits.clone(), own.clone(), &mut signals).await?;
        if report.tasks_abandoned > 0 {
            eprintln!(
                "{} tasks were still running at the drain deadline; their work will be recovered",
                report.tasks_abandoned
            );
        }
        if !report.declared_dead {
            return Ok(ExitCode::SUCCESS);
        }
        // Cut off or stalled past its lease: other nodes took its work over. With an id of
        // its own choosing it joins again as a new node; a fixed id is the operator's to reuse.
        if args.node_id.is_some() {
            eprintln!("this node was declared dead by the cluster; its work was taken over");
            return Ok(ExitCode::FAILURE);
        }
        eprintln!("this node was declared dead by the cluster; joining again as a new node");
    }
}

/// Boots a node, prints its identity and runs it until a signal or until it stops by itself.
async fn boot_once(
    args: &BootArgs,
    limits: dbos_scheduler::command::Limits,
    own: crate::workflow::Registry,
    signals: &mut Option<dbos_kernel::ShutdownSignals>,
) -> Result<dbos_kernel::ShutdownReport> {
    let http = args.http;
    let config = args.clone().config();
    let kernel = Kernel::boot(config, &crate::migrations()).await?;
    let mut registry = crate::workflow::Registry::new();
    crate::builtin::register_with(&mut registry, limits);
    registry.merge(own);
    let launched = async {
        // Before the identity is printed: whoever reads it may signal the node at once.
        if signals.is_none() {
            *signals = Some(dbos_kernel::ShutdownSignals::install()?);
        }
        let opts = crate::workflow::Options::default();
        let wf = crate::workflow::Service::launch(&kernel, registry, opts).await?;
        anyhow::Ok(wf)
    }
    .await;
    let wf = match launched {
        Ok(l) => l,
        Err(e) => {
            // A node that cannot start its services stops what it started, Postgres included.
            if let Err(stop) = kernel.shutdown().await {
                tracing::warn!(error = %stop, "stopping after a failed start");
            }
            return Err(e);
        }
    };
    let mut identity = format!(
        "node {}\napp-version {}\ndatabase {}\n",
        kernel.node_id(),
        wf.app_version(),
        // Logs keep what a node prints: the password stays out (`dbos url --show-password`).
        redact_url(kernel.url())
    );
    if kernel.config().database_url.is_none() {
        identity.push_str(&format!(
            "data-dir {}\n",
            kernel.config().data_dir.display()
        ));
    }
    if let Some(addr) = http {
        match crate::http::serve(addr, kernel.pool().clone(), kernel.shutdown_token()).await {
            Ok(bound) => identity.push_str(&format!("http http://{bound}/\n")),
            Err(e) => {
                let _ = kernel.shutdown().await;
                bail!("cannot serve HTTP on {addr}: {e}");
            }
        }
    }
    // A node must outlive whoever reads its output: a closed stdout is not a reason to stop.
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out
        .write_all(identity.as_bytes())
        .and_then(|()| out.flush())
    {
        tracing::warn!(error = %e, "could not print the node's identity to stdout");
    }
    drop(out);
    let signals = signals
        .as_mut()
        .expect("installed before the identity was printed");
    Ok(kernel.run_until(signals).await?)
}

/// `dbos ui`: the dashboard on its own, until Ctrl-C.
async fn ui(conn: &ConnArgs, addr: std::net::SocketAddr) -> Result<ExitCode> {
    let (url, cluster) = conn.attach().await?;
    let pool = db::connect(
        &url,
        &PoolLimits {
            size_max: 4,
            ..cli_limits()
        },
    )
    .await?;
    let stop = dbos_kernel::CancellationToken::new();
    let bound = crate::http::serve(addr, pool.clone(), stop.clone())
        .await
        .with_context(|| format!("cannot serve HTTP on {addr}"))?;
    println!("http http://{bound}/");
    tokio::signal::ctrl_c().await?;
    stop.cancel();
    pool.close().await;
    leave(cluster).await?;
    Ok(ExitCode::SUCCESS)
}

/// Detaches from a cluster [`ConnArgs::attach`] held, stopping its server when this process
/// was the last one attached.
pub(super) async fn leave(cluster: Option<embedded::Cluster>) -> Result<()> {
    if let Some(c) = cluster {
        if c.stop().await? {
            eprintln!("stopped the embedded Postgres: no node or other process used it any more");
        }
    }
    Ok(())
}

/// A small pool on the database of `conn`.
async fn pool(conn: &ConnArgs) -> Result<sqlx::PgPool> {
    Ok(db::connect(&conn.url()?, &cli_limits()).await?)
}

fn cli_limits() -> PoolLimits {
    PoolLimits {
        size_max: 2,
        ..PoolLimits::default()
    }
}

async fn sql(conn: &ConnArgs, superuser: bool, query: &str, format: Format) -> Result<ExitCode> {
    let url = if superuser {
        conn.superuser_url()?
    } else {
        conn.url()?
    };
    let mut c = db::connect_one(&url, &cli_limits()).await?;
    // A person's query is planned as Postgres would plan it anywhere, not as a node's lookups.
    sqlx::raw_sql("RESET enable_seqscan; RESET jit")
        .execute(&mut c)
        .await?;
    match render::run_query(&mut c, query).await {
        Ok(sets) => {
            render::print_sets(&sets, format)?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {}", render::describe_db_error(&e));
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Waiting tasks `dbos status` shows at most.
const STATUS_WAITING_MAX: i64 = 20;
/// Nodes that stopped or died `dbos status` shows at most (the latest), beside the live ones.
const STATUS_GONE_NODES_MAX: usize = 20;

async fn status(conn: &ConnArgs, format: Format, all_nodes: bool) -> Result<ExitCode> {
    let url = conn.url()?;
    let mut c = db::connect_one(&url, &cli_limits()).await?;
    let hint = |what: &str| format!("reading {what}; was this database booted by `dbos boot`?");
    let mut database = serde_json::to_value(
        dbos_kernel::node::overview(&mut c)
            .await
            .with_context(|| hint("database"))?,
    )?;
    database["url"] = redact_url(&url).into();
    let mut nodes = dbos_kernel::node::all_nodes(&mut c)
        .await
        .with_context(|| hint("nodes"))?;
    // Live nodes first, then the others, latest first: a host that booted many times keeps a
    // row for every boot.
    let shown = if all_nodes {
        nodes.len()
    } else {
        nodes.iter().filter(|n| n.alive).count() + STATUS_GONE_NODES_MAX
    };
    let hidden = nodes.len().saturating_sub(shown);
    nodes.truncate(shown);
    let waiting = dbos_scheduler::tasks::waiting(&mut c, STATUS_WAITING_MAX)
        .await
        .with_context(|| hint("waiting"))?;
    let migrations = dbos_kernel::migrate::summary(&mut c)
        .await
        .with_context(|| hint("migrations"))?;
    let retention = retention_rows(&mut c)
        .await
        .with_context(|| hint("retention"))?;
    let hosts = db::host_roles(&url, &cli_limits()).await?;
    let mut sections = vec![];
    if hosts.len() > 1 {
        sections.push(render::Section {
            name: "hosts",
            columns: &["host", "role"],
            rows: json_rows(&hosts)?,
        });
    }
    sections.extend([
        render::Section {
            name: "database",
            columns: &["database", "url", "server", "server_version", "nodes_alive"],
            rows: vec![database],
        },
        render::Section {
            name: "nodes",
            columns: &[
                "node_id",
                "hostname",
                "addr",
                "pid",
                "state",
                "alive",
                "slots",
                "labels",
                "started_at",
                "heartbeat_at",
            ],
            rows: json_rows(&nodes)?,
        },
        render::Section {
            name: "waiting",
            columns: &["task_id", "queue", "labels", "waiting_for", "submitted_at"],
            rows: json_rows(&waiting)?,
        },
        render::Section {
            name: "retention",
            columns: &["what", "kept"],
            rows: retention,
        },
        render::Section {
            name: "migrations",
            columns: &["service", "version", "applied", "last_applied_at"],
            rows: json_rows(&migrations)?,
        },
    ]);
    if hidden > 0 {
        let at = sections
            .iter()
            .position(|s| s.name == "nodes")
            .map_or(0, |i| i + 1);
        sections.insert(
            at,
            render::Section {
                name: "nodes_not_shown",
                columns: &["stopped_or_dead", "shown_by"],
                rows: vec![serde_json::json!({
                    "stopped_or_dead": hidden,
                    "shown_by": "dbos status --all-nodes",
                })],
            },
        );
    }
    render::print_sections(&sections, format)?;
    Ok(ExitCode::SUCCESS)
}

/// What the nodes' retention sweeps keep: workflows (`sched.workflow_retention`) and
/// provenance (`prov.config`).
async fn retention_rows(c: &mut sqlx::PgConnection) -> Result<Vec<serde_json::Value>> {
    // A database last booted by an older version has no policy table yet: it keeps all.
    let has_policy: bool =
        sqlx::query_scalar("SELECT to_regclass('sched.workflow_retention') IS NOT NULL")
            .fetch_one(&mut *c)
            .await?;
    let wf = if has_policy {
        dbos_store::workflows::retention(&mut *c).await?
    } else {
        dbos_store::workflows::Retention::default()
    };
    let prov: String = sqlx::query_scalar("SELECT retention::text FROM prov.config")
        .fetch_one(&mut *c)
        .await?;
    let gone = [
        wf.max_age_ms
            .map(|ms| format!("older than {}", human_duration(ms))),
        wf.max_rows.map(|n| format!("beyond the newest {n}")),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>();
    let workflows = if gone.is_empty() {
        "all".to_owned()
    } else {
        format!("all but ended ones {}", gone.join(" or "))
    };
    Ok(vec![
        serde_json::json!({ "what": "workflows", "kept": workflows }),
        serde_json::json!({ "what": "provenance", "kept": format!("the last {prov}") }),
    ])
}

/// `ms` in the largest whole unit of d, h, m, s or ms.
fn human_duration(ms: i64) -> String {
    const UNITS: [(i64, &str); 4] = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1_000, "s"),
    ];
    UNITS
        .iter()
        .find(|(unit, _)| ms % unit == 0 && ms >= *unit)
        .map_or_else(
            || format!("{ms}ms"),
            |(unit, name)| format!("{}{name}", ms / unit),
        )
}

/// Typed results as JSON objects, for [`render`].
fn json_rows<T: serde::Serialize>(rows: &[T]) -> Result<Vec<serde_json::Value>> {
    Ok(rows
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<_, _>>()?)
}

fn psql(conn: &ConnArgs, superuser: bool, args: &[String]) -> Result<ExitCode> {
    use std::os::unix::process::CommandExt;
    let url = if superuser {
        conn.superuser_url()?
    } else {
        conn.url()?
    };
    let err = std::process::Command::new("psql")
        .arg(&url)
        .args(args)
        .exec();
    if err.kind() == std::io::ErrorKind::NotFound {
        bail!("psql not found on PATH; install it with `apt-get install postgresql-client`");
    }
    Err(err).context("running psql")
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Any duration text is parsed or refused with a message; never a panic.
        #[test]
        fn any_duration_is_parsed_or_refused(s in "\\PC{0,24}|[0-9.]{0,12}(ms|s|m|h|d|us|x)?") {
            if let Err(e) = parse_duration(&s) {
                proptest::prop_assert!(!e.is_empty());
            }
        }
    }

    #[test]
    fn a_duration_reads_in_its_largest_whole_unit() {
        assert_eq!(human_duration(30 * 86_400_000), "30d");
        assert_eq!(human_duration(36 * 3_600_000), "36h");
        assert_eq!(human_duration(90_000), "90s");
        assert_eq!(human_duration(1_500), "1500ms");
        assert_eq!(human_duration(0), "0ms");
    }

    #[test]
    fn an_error_is_one_line_with_each_cause_once() {
        let io = std::io::Error::from_raw_os_error(20);
        let e = anyhow::Error::new(dbos_scheduler::Error::Spawn {
            program: "x".into(),
            cwd: None,
            source: io,
        })
        .context("running the task");
        let line = one_line(&e);
        assert_eq!(line.matches("(os error 20)").count(), 1, "{line}");
        assert!(line.starts_with("running the task: cannot start"), "{line}");
        let multi = anyhow::anyhow!("first line\nsecond line");
        assert_eq!(one_line(&multi), "first line second line");
    }
}
