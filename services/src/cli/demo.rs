//! `dbos demo`: durability shown end to end on the embedded default.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;
use sqlx::PgPool;

use super::render::{self, Format};
use crate::demo::{self, DEMO};
use crate::workflow::manage;

/// A `dbos boot` child process.
struct Node {
    child: Child,
    id: String,
}

fn boot(exe: &Path, data_dir: &Path) -> Result<Node> {
    let mut child = Command::new(exe)
        .arg("boot")
        .arg("--data-dir")
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting a node")?;
    let stdout = child.stdout.take().expect("piped");
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading the node's output")?;
        if let Some(id) = line.strip_prefix("node ") {
            return Ok(Node {
                child,
                id: id.to_owned(),
            });
        }
    }
    let status = child.wait()?;
    bail!("the node exited ({status}) before it booted");
}

async fn wait_until(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !check().await? {
        if Instant::now() > deadline {
            bail!("timed out waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn say(s: &str) {
    println!("{s}");
    let _ = std::io::stdout().flush();
}

pub(super) async fn run(data_dir: PathBuf, pause_ms: u64) -> Result<ExitCode> {
    let exe = std::env::current_exe().context("finding this program")?;
    say(&format!("1. booting node A on {}", data_dir.display()));
    let mut a = boot(&exe, &data_dir)?;
    let url = dbos_kernel::embedded::discover_node_url(&data_dir)?;
    let pool = dbos_kernel::db::connect(
        &url,
        &dbos_kernel::db::PoolLimits {
            size_max: 2,
            ..Default::default()
        },
    )
    .await?;
    let id = format!("demo-{}", chrono::Utc::now().format("%Y%m%dT%H%M%S%.3f"));
    demo::enqueue(&pool, &id, pause_ms).await?;
    say(&format!("2. enqueued workflow {id} ({DEMO}: step fetch, transaction deposit, durable sleep, step report)"));
    wait_until(
        "the workflow is in its durable sleep",
        Duration::from_secs(60),
        async || Ok(steps_done(&pool, &id).await? >= 3),
    )
    .await?;
    say(&format!(
        "3. node {} finished fetch and deposit and is sleeping: kill -9",
        a.id
    ));
    a.child.kill().context("killing node A")?;
    a.child.wait()?;
    say("4. booting node B on the same directory; it finds A dead and recovers its work");
    let mut b = boot(&exe, &data_dir)?;
    wait_until(
        "the workflow finishes",
        Duration::from_secs(120),
        async || {
            Ok(dbos_store::workflows::status(&pool, &id)
                .await?
                .is_terminal())
        },
    )
    .await?;
    let report = demo::report(&pool, &id).await?;
    // Whichever node took it over: B, or another live node on the same directory.
    let finisher = report.workflow.executor_id.as_deref().unwrap_or(&b.id);
    say(&format!(
        "5. node {finisher} finished it. Its recorded steps:"
    ));
    render::print_json_rows(
        &super::json_rows(&report.steps)?,
        &["function_id", "function_name", "output", "times_run"],
        Format::Table,
    )?;
    render::print_json_rows(
        &super::json_rows(std::slice::from_ref(&report.workflow))?,
        &["status", "executor_id", "recovery_attempts", "output"],
        Format::Table,
    )?;
    render::print_json_rows(
        &[json!({ "deposits": report.deposits })],
        &["deposits"],
        Format::Table,
    )?;
    say("fetch and report ran once each (times_run), the deposit committed once, the sleep resumed.");
    pool.close().await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(b.child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )?;
    b.child.wait()?;
    say("6. node B stopped.");
    Ok(ExitCode::SUCCESS)
}

/// Operations the workflow has recorded so far.
async fn steps_done(pool: &PgPool, id: &str) -> Result<usize> {
    Ok(manage::steps(pool, id).await?.len())
}
