//! `dbos task ...`: submit Linux commands as tasks and follow, inspect, wait for and cancel them.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use dbos_msg::Client;
use dbos_scheduler::command::CommandSpec;
use serde_json::{json, Value};

use super::render::{self, Format};
use super::{parse_duration, ConnArgs};
use crate::builtin::{COMMAND, COMMAND_FAILED};
use crate::workflow::{manage, ENQUEUE_CHANNEL};

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
        #[arg(short = 'l', long, default_value_t = 20)]
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
    #[arg(short = 'p', long, default_value_t = 0)]
    priority: u32,
    /// Stop the command's process group after this long of running (e.g. 30s, 5m); time spent
    /// queued does not count.
    #[arg(long, value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Deduplication key: a second submission with the same key to the same queue is refused
    /// while the first is queued or running.
    #[arg(long)]
    dedup: Option<String>,
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
    /// Stream the output and exit with the command's exit code.
    #[arg(short = 'w', long)]
    wait: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    argv: Vec<String>,
}

impl SubmitArgs {
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
        };
        spec.validate()?;
        Ok(spec)
    }
}

pub(super) async fn run(conn: &ConnArgs, format: Format, command: TaskCommand) -> Result<ExitCode> {
    let pool = super::pool(conn).await?;
    match command {
        TaskCommand::Submit(args) => {
            let id = submit(&pool, &args).await?;
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
            let mut c = pool.acquire().await?;
            let q = format!(
                "SELECT task_id, status, exit_code, argv, queue, node, submitted_at, duration_ms \
                 FROM os.tasks {} ORDER BY submitted_at DESC LIMIT {}",
                match &status {
                    Some(s) => format!("WHERE status = '{}'", s.to_uppercase().replace('\'', "''")),
                    None => String::new(),
                },
                limit.max(0)
            );
            let sets = render::run_query(&mut c, &q)
                .await
                .map_err(|e| anyhow::anyhow!(render::describe_db_error(&e)))?;
            render::print_sets(&sets, format)?;
            Ok(ExitCode::SUCCESS)
        }
        TaskCommand::Get { id } => {
            let mut c = pool.acquire().await?;
            let q = format!(
                "SELECT * FROM os.tasks WHERE task_id = '{}'",
                id.replace('\'', "''")
            );
            let sets = render::run_query(&mut c, &q)
                .await
                .map_err(|e| anyhow::anyhow!(render::describe_db_error(&e)))?;
            if sets.first().is_none_or(|s| s.is_empty()) {
                bail!("no task has ID {id:?}");
            }
            render::print_sets(&sets, format)?;
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

/// Enqueues the command task; returns its ID.
async fn submit(pool: &sqlx::PgPool, args: &SubmitArgs) -> Result<String> {
    let spec = args.spec()?;
    if args.priority > i32::MAX as u32 {
        bail!(
            "--priority must be at most {}, got {}",
            i32::MAX,
            args.priority
        );
    }
    let known: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM dbos.queues WHERE name = $1)")
            .bind(&args.queue)
            .fetch_one(pool)
            .await?;
    if !known {
        bail!(
            "no queue named {:?}; create it with `dbos queue create {}` or use the default queue",
            args.queue,
            args.queue
        );
    }
    let id = args
        .id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let delay_until = args
        .delay
        .map(|d| crate::workflow::now_ms() + d.as_millis() as i64);
    let mut tx = pool.begin().await?;
    let r = sqlx::query_scalar::<_, String>(
        "SELECT dbos.enqueue_workflow($1, $2, ARRAY[$3::json], workflow_id => $4,
                deduplication_id => $5, priority => $6, delay_until_epoch_ms => $7)
         FROM (SELECT pg_notify($8, $2)) wake",
    )
    .bind(COMMAND)
    .bind(&args.queue)
    .bind(serde_json::to_string(&spec)?)
    .bind(&id)
    .bind(&args.dedup)
    .bind(args.priority as i32)
    .bind(delay_until)
    .bind(ENQUEUE_CHANNEL)
    .fetch_one(&mut *tx)
    .await;
    match r {
        Ok(id) => {
            if !args.labels.is_empty() || !args.prefer.is_empty() {
                // In the enqueue's transaction: no node sees the task without its labels.
                let map = |v: &[(String, String)]| -> BTreeMap<String, String> {
                    v.iter().cloned().collect()
                };
                let mut attrs = serde_json::Map::new();
                if !args.labels.is_empty() {
                    attrs.insert(
                        "sched.labels".into(),
                        serde_json::to_value(map(&args.labels))?,
                    );
                }
                if !args.prefer.is_empty() {
                    attrs.insert(
                        "sched.prefer".into(),
                        serde_json::to_value(map(&args.prefer))?,
                    );
                }
                sqlx::query(
                    "UPDATE dbos.workflow_status
                     SET attributes = COALESCE(attributes, '{}') || $2::jsonb
                     WHERE workflow_uuid = $1",
                )
                .bind(&id)
                .bind(serde_json::Value::Object(attrs))
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(id)
        }
        Err(e) if dbos_kernel::sqlstate(&e).as_deref() == Some("23505") => bail!(
            "a task with deduplication key {:?} is already queued or running on queue {:?}",
            args.dedup.as_deref().unwrap_or_default(),
            args.queue
        ),
        Err(e) => {
            Err(anyhow::anyhow!(render::describe_db_error(&e))).context("submitting the task")
        }
    }
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
            loop {
                match r.next::<String>(wait).await? {
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

/// Waits for the task to end and turns its outcome into an exit code: the command's own, 128+N
/// when killed by signal N, 124 on timeout, 127 when it could not start, 130 when cancelled, 1
/// when lost with its node under `--no-retry`.
async fn wait_exit(pool: &sqlx::PgPool, id: &str) -> Result<ExitCode> {
    let mut pause = Duration::from_millis(20);
    let st = loop {
        let st = manage::get(pool, id).await?;
        if let Some("SUCCESS" | "ERROR" | "CANCELLED" | "MAX_RECOVERY_ATTEMPTS_EXCEEDED") =
            st.status.as_deref()
        {
            break st;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    };
    let code = match st.status.as_deref() {
        Some("SUCCESS") => 0,
        Some("CANCELLED") => {
            eprintln!("task {id} was cancelled");
            130
        }
        _ => {
            let err: Value = st
                .error
                .as_deref()
                .and_then(|e| serde_json::from_str(e).ok())
                .unwrap_or(Value::Null);
            eprintln!(
                "task {id} failed: {}",
                err["message"].as_str().unwrap_or("(no message)")
            );
            let data = &err["data"];
            if err["name"] == "TaskLost" {
                1
            } else if err["name"] != COMMAND_FAILED {
                127
            } else if data["timed_out"] == true {
                124
            } else if let Some(c) = data["exit_code"].as_i64() {
                c as i32
            } else if let Some(s) = data["signal"].as_i64() {
                128 + s as i32
            } else {
                1
            }
        }
    };
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}
