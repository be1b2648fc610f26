//! `dbos demo`: durability shown end to end on the embedded default.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sqlx::PgPool;

use super::render::{self, Format};
use crate::builtin::DEMO;

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
    let url = dbos_kernel::embedded::discover(&data_dir)?.url;
    let pool = dbos_kernel::db::connect(
        &url,
        &dbos_kernel::db::PoolLimits {
            size_max: 2,
            ..Default::default()
        },
    )
    .await?;
    let id = format!("demo-{}", chrono::Utc::now().format("%Y%m%dT%H%M%S%.3f"));
    sqlx::query(
        "SELECT dbos.enqueue_workflow($1, 'default', ARRAY[$2::text::json], workflow_id => $3)",
    )
    .bind(DEMO)
    .bind(pause_ms.to_string())
    .bind(&id)
    .execute(&pool)
    .await?;
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
            let s: Option<String> = sqlx::query_scalar(
                "SELECT status FROM dbos.workflow_status WHERE workflow_uuid = $1",
            )
            .bind(&id)
            .fetch_one(&pool)
            .await?;
            Ok(matches!(s.as_deref(), Some("SUCCESS" | "ERROR")))
        },
    )
    .await?;
    say(&format!(
        "5. node {} finished it. Its steps, from SQL:",
        b.id
    ));
    let mut conn = pool.acquire().await?;
    let sets = render::run_query(
        &mut conn,
        &format!(
            "SELECT o.function_id, o.function_name, o.output,
                    (SELECT count(*) FROM public.dbos_demo_runs r
                     WHERE r.workflow_id = o.workflow_uuid AND r.step = o.function_name) AS times_run
             FROM dbos.operation_outputs o WHERE o.workflow_uuid = '{id}' ORDER BY o.function_id;
             SELECT status, executor_id, recovery_attempts, (SELECT output FROM dbos.workflow_output
                 WHERE workflow_uuid = '{id}') AS output
             FROM dbos.workflow_status WHERE workflow_uuid = '{id}';
             SELECT count(*) AS deposits FROM public.dbos_demo_ledger WHERE workflow_id = '{id}'"
        ),
    )
    .await?;
    render::print_sets(&sets, Format::Table)?;
    say("fetch and report ran once each (times_run), the deposit committed once, the sleep resumed.");
    drop(conn);
    pool.close().await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(b.child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )?;
    b.child.wait()?;
    say("6. node B stopped.");
    Ok(ExitCode::SUCCESS)
}

async fn steps_done(pool: &PgPool, id: &str) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM dbos.operation_outputs WHERE workflow_uuid = $1")
            .bind(id)
            .fetch_one(pool)
            .await?,
    )
}
