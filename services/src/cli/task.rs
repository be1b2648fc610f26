//! `dbos task ...`: submit Linux commands as tasks and follow, inspect, wait for and cancel them.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use dbos_msg::Client;
use dbos_scheduler::command::CommandSpec;
use dbos_scheduler::tasks::{self, Submit, Task};
use serde_json::json;

use super::render::{self, Format};
use super::{parse_duration, parse_positive_duration, ConnArgs};
use crate::workflow::manage;

#[derive(Debug, Subcommand)]
pub(super) enum TaskCommand {
    /// Submit a command as a task; prints its ID (with --wait, streams its output and exits with
    /// the command's exit code).
    Submit(Box<SubmitArgs>),
    /// List tasks, newest first.
    List {
        /// Only this status (PENDING, ENQUEUED, SUCCESS, ERROR, CANCELLED, ...).
        #[arg(short = 'S', long)]
        status: Option<String>,
        /// Most tasks shown.
        #[arg(short = 'l', long, default_value_t = 20, value_parser = clap::value_parser!(i64).range(0..))]
        limit: i64,
    },
    /// Show one task: its command, status, node and outcome.
    Get {
        /// Task ID.
        id: String,
    },
    /// Print a task's output (stdout to stdout, stderr to stderr).
    Logs {
        /// Task ID.
        id: String,
        /// Keep printing as the task writes, until it ends.
        #[arg(short = 'f', long)]
        follow: bool,
    },
    /// Cancel a task: its process group gets SIGTERM, then SIGKILL after a grace period.
    Cancel {
        /// Task ID.
        id: String,
    },
    /// Wait for a task to end; exits with its command's exit code.
    Wait {
        /// Task ID.
        id: String,
    },
}

#[derive(Debug, Args)]
pub(super) struct SubmitArgs {
    /// Queue to submit to.
    #[arg(short = 'q', long, default_value = "default")]
    queue: String,
    /// Priority: lower runs earlier; 0 (the default) is highest. At most 2147483647.
    #[arg(short = 'p', long, default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=i64::from(i32::MAX)))]
    priority: u32,
    /// Stop the command's process group after this long of running (e.g. 30s, 5m); time spent
    /// queued does not count.
    #[arg(long, value_parser = parse_positive_duration)]
    timeout: Option<Duration>,
    /// Deduplication key: a second submission with the same key to the same queue is refused
    /// while the first is queued or running.
    #[arg(long)]
    dedup: Option<String>,
    /// Partition of a partitioned queue (its limits hold per partition); required on one.
    #[arg(long)]
    partition_key: Option<String>,
    /// Start no earlier than this long from now (e.g. 10s).
    #[arg(long, value_parser = parse_duration)]
    delay: Option<Duration>,
    /// Run only on a node with this label KEY=VALUE (repeatable; see `dbos boot --label`).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = super::parse_label)]
    labels: Vec<(String, String)>,
    /// Prefer a node with this label KEY=VALUE, on a queue with the locality policy for KEY
    /// (repeatable).
    #[arg(long = "prefer", value_name = "KEY=VALUE", value_parser = super::parse_label)]
    prefer: Vec<(String, String)>,
    /// Task ID; a fresh UUID when unset. Submitting an existing ID returns that task.
    #[arg(long)]
    id: Option<String>,
    /// Environment variable KEY=VALUE for the command (repeatable).
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Working directory of the command on the node.
    #[arg(long)]
    cwd: Option<String>,
    /// Text for the command's standard input.
    #[arg(long)]
    stdin: Option<String>,
    /// If the node dies while the command runs, record the loss instead of running it again.
    #[arg(long)]
    no_retry: bool,
    /// Run as this user, which the node must allow (`dbos boot --allow-task-user USER`).
    #[arg(long)]
    user: Option<String>,
    /// Stream the output and exit with the command's exit code.
    #[arg(short = 'w', long)]
    wait: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    argv: Vec<String>,
}

impl SubmitArgs {
    fn submit(&self) -> Result<Submit> {
        Ok(Submit {
            spec: self.spec()?,
            queue: self.queue.clone(),
            // At most i32::MAX, as the parser checked.
            priority: self.priority as i32,
            deduplication_id: self.dedup.clone(),
            delay: self.delay,
            labels: self.labels.iter().cloned().collect(),
            prefer: self.prefer.iter().cloned().collect(),
            id: self.id.clone(),
            partition_key: self.partition_key.clone(),
        })
    }

    fn spec(&self) -> Result<CommandSpec> {
        let mut env = BTreeMap::new();
        for kv in &self.env {
            let Some((k, v)) = kv.split_once('=') else {
                bail!("--env takes KEY=VALUE, got {kv:?}");
            };
            env.insert(k.to_owned(), v.to_owned());
        }
        let spec = CommandSpec {
            argv: self.argv.clone(),
            env: (!env.is_empty()).then_some(env),
            cwd: self.cwd.clone(),
            timeout_ms: self.timeout.map(|d| d.as_millis() as u64),
            stdin: self.stdin.clone(),
            no_retry: self.no_retry,
            user: self.user.clone(),
        };
        spec.validate()?;
        Ok(spec)
    }
}

pub(super) async fn run(conn: &ConnArgs, format: Format, command: TaskCommand) -> Result<ExitCode> {
    let pool = super::pool(conn).await?;
    match command {
        TaskCommand::Submit(args) => {
            let id = tasks::submit(&pool, &args.submit()?).await?;
            if !args.wait {
                println!("{id}");
                return Ok(ExitCode::SUCCESS);
            }
            eprintln!("task {id}");
            let c = super::msg::client_on(pool.clone()).await?;
            follow(&c, &id, true).await?;
            wait_exit(&pool, &id).await
        }
        TaskCommand::List { status, limit } => {
            let rows = tasks::list(&pool, status.as_deref(), limit).await?;
            print_tasks(&rows, LIST_COLUMNS, format)?;
            Ok(ExitCode::SUCCESS)
        }
        TaskCommand::Get { id } => {
            let task = tasks::get(&pool, &id).await?;
            print_tasks(std::slice::from_ref(&task), &[], format)?;
            Ok(ExitCode::SUCCESS)
        }
        TaskCommand::Logs { id, follow: f } => {
            manage::get(&pool, &id).await?;
            let c = super::msg::client_on(pool.clone()).await?;
            follow(&c, &id, f).await?;
            Ok(ExitCode::SUCCESS)
        }
        TaskCommand::Cancel { id } => {
            let ids = manage::cancel(&pool, &id, false).await?;
            render::print_message(
                &json!({"task_id": id, "cancelled": !ids.is_empty()}),
                format,
            )?;
            Ok(ExitCode::SUCCESS)
        }
        TaskCommand::Wait { id } => {
            manage::get(&pool, &id).await?;
            wait_exit(&pool, &id).await
        }
    }
}

/// Columns of `dbos task list`.
const LIST_COLUMNS: &[&str] = &[
    "task_id",
    "status",
    "exit_code",
    "argv",
    "queue",
    "node",
    "submitted_at",
    "duration_ms",
];

fn print_tasks(rows: &[Task], columns: &[&str], format: Format) -> Result<()> {
    let rows = rows
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<Vec<_>, _>>()?;
    // With no columns, each field of a task on a line of its own.
    render::print_json_rows(&rows, columns, format)
}

/// Prints the task's stdout and stderr streams; with `live`, until both are closed.
async fn follow(c: &Client, id: &str, live: bool) -> Result<()> {
    let wait = if live {
        Duration::from_secs(3600)
    } else {
        Duration::ZERO
    };
    let copy = |key: &'static str| {
        let mut r = c.read_stream(id, key, 0);
        async move {
            let mut failing = Failing::default();
            loop {
                // The reader keeps its offset: a read tried again misses and repeats nothing.
                let next = match r.next::<String>(wait).await {
                    Err(dbos_msg::Error::Db(e)) if failing.may_retry(&e).await => continue,
                    next => next?,
                };
                failing = Failing::default();
                match next {
                    Some(text) => {
                        if key == "stdout" {
                            let mut o = std::io::stdout().lock();
                            o.write_all(text.as_bytes())?;
                            o.flush()?;
                        } else {
                            let mut o = std::io::stderr().lock();
                            o.write_all(text.as_bytes())?;
                            o.flush()?;
                        }
                    }
                    None if r.is_done() || !live => return Ok::<_, anyhow::Error>(()),
                    None => {}
                }
            }
        }
    };
    tokio::try_join!(copy("stdout"), copy("stderr"))?;
    Ok(())
}

/// A follower's reads failing in a row while the database restarts or fails over.
#[derive(Default)]
struct Failing {
    since: Option<std::time::Instant>,
    pause: Duration,
}

/// Longest a follower keeps trying while the database fails.
const FOLLOW_RETRY_MAX: Duration = Duration::from_secs(60);

impl Failing {
    /// Whether to try again after `e`: when it may pass and the reads have not been failing for
    /// longer than [`FOLLOW_RETRY_MAX`]; pauses first (50 ms, doubling up to 1 s).
    async fn may_retry(&mut self, e: &sqlx::Error) -> bool {
        let since = *self.since.get_or_insert_with(std::time::Instant::now);
        if !dbos_kernel::sqlstate::is_transient(e) || since.elapsed() > FOLLOW_RETRY_MAX {
            return false;
        }
        self.pause = (self.pause * 2).clamp(Duration::from_millis(50), Duration::from_secs(1));
        tokio::time::sleep(self.pause).await;
        true
    }
}

/// Waits for the task to end and exits as a shell would for it ([`tasks::Outcome::exit_code`]).
async fn wait_exit(pool: &sqlx::PgPool, id: &str) -> Result<ExitCode> {
    let mut failing = Failing::default();
    let outcome = loop {
        match tasks::wait(pool, id).await {
            Err(
                dbos_scheduler::Error::Db(e)
                | dbos_scheduler::Error::Store(dbos_store::Error::Db(e)),
            ) if failing.may_retry(&e).await => {}
            other => break other?,
        }
    };
    if !matches!(outcome, tasks::Outcome::Exited { code: 0 }) {
        eprintln!("task {id} {}", outcome.describe());
    }
    Ok(ExitCode::from(outcome.exit_code()))
}
