//! The demonstration `dbos demo` runs: the workflow [`DEMO`], the two tables it writes in
//! schema `public` (`dbos_demo_runs`, a row per step run, and `dbos_demo_ledger`, a row per
//! deposit), and the reads that show what it did: [`enqueue`] it, then [`report`].
//!
//! The tables are the demo's own, written and read only here; they are created by the
//! workflow's first run, so they exist once it has run a step.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use sqlx::PgPool;

use crate::workflow::manage::{self, WorkflowStatus};
use crate::workflow::{self, codec};

/// Name of the demonstration workflow run by `dbos demo`; its input is `(pause_ms,)`.
pub const DEMO: &str = "dbos.demo";

/// Enqueues a run of [`DEMO`] as workflow `id` on the default queue, pausing `pause_ms` in
/// each of its four operations; a node that has the built-in workflows runs it. An existing
/// `id` is left alone.
///
/// 1 round trip, 1 commit (which also wakes idle nodes).
///
/// # Errors
/// [`workflow::Error::Conflict`] when `id` is a workflow of another function; database errors.
pub async fn enqueue(pool: &PgPool, id: &str, pause_ms: u64) -> Result<(), workflow::Error> {
    let inputs = codec::encode_input(&(pause_ms,))?;
    let e = dbos_store::workflows::Enqueue::new(
        id,
        DEMO,
        dbos_scheduler::queues::DEFAULT_QUEUE,
        inputs,
    );
    let created = dbos_store::workflows::enqueue(pool, &e).await?;
    match created.name {
        Some(existing) if existing != DEMO => Err(workflow::Error::Conflict {
            id: id.to_owned(),
            existing,
            requested: DEMO.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// One recorded operation of a run, with how many times its body ran.
#[derive(Clone, Debug, Serialize)]
pub struct StepRun {
    /// Position, from 1.
    pub function_id: i32,
    /// Operation name: `fetch`, `deposit`, `DBOS.sleep`, `report`.
    pub function_name: String,
    /// Its recorded output (portable JSON text).
    pub output: Option<String>,
    /// Times its body ran (`dbos_demo_runs`; only the steps `fetch` and `report` note runs, so
    /// the others show 0).
    pub times_run: i64,
}

/// What a finished run did: its operations, its status, and the deposits it committed.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Its recorded operations in order.
    pub steps: Vec<StepRun>,
    /// Its status row: status, node, recovery attempts, output.
    pub workflow: WorkflowStatus,
    /// Rows it added to `dbos_demo_ledger`: 1 when its transaction committed exactly once.
    pub deposits: i64,
}

/// What run `id` of [`DEMO`] did so far.
///
/// 4 round trips: its status, its operations, the runs per step, the deposits.
///
/// # Errors
/// [`workflow::Error::NotFound`]; an undefined table (SQLSTATE 42P01) before the workflow ran
/// its first step anywhere.
pub async fn report(pool: &PgPool, id: &str) -> Result<Report, workflow::Error> {
    let workflow = manage::get(pool, id).await?;
    let steps = manage::steps(pool, id).await?;
    let runs: BTreeMap<String, i64> = sqlx::query_as(
        "SELECT step, count(*) FROM public.dbos_demo_runs WHERE workflow_id = $1 GROUP BY step",
    )
    .bind(id)
    .fetch_all(pool)
    .await?
    .into_iter()
    .collect();
    let deposits: i64 =
        sqlx::query_scalar("SELECT count(*) FROM public.dbos_demo_ledger WHERE workflow_id = $1")
            .bind(id)
            .fetch_one(pool)
            .await?;
    let steps = steps
        .into_iter()
        .map(|s| StepRun {
            times_run: runs.get(&s.function_name).copied().unwrap_or(0),
            function_id: s.function_id,
            function_name: s.function_name,
            output: s.output,
        })
        .collect();
    Ok(Report {
        steps,
        workflow,
        deposits,
    })
}

/// A sample workflow of four durable operations, each pausing `pause_ms` so a node can be
/// killed in the middle of it: a step, a transaction, a durable sleep, and a last step. Every
/// step that runs appends a row to `public.dbos_demo_runs` (outside the checkpoint), so a step
/// that ran twice would show twice.
pub(crate) async fn workflow(
    ctx: workflow::Context,
    (pause_ms,): (u64,),
) -> Result<String, workflow::Error> {
    let pause = Duration::from_millis(pause_ms);
    let me = ctx.workflow_id().to_owned();
    let pool = ctx.pool().clone();
    let note = |step: &'static str| {
        let (pool, me) = (pool.clone(), me.clone());
        async move {
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS public.dbos_demo_runs (
                     workflow_id text NOT NULL, step text NOT NULL, at timestamptz NOT NULL DEFAULT now())",
            )
            .execute(&pool)
            .await?;
            sqlx::query("INSERT INTO public.dbos_demo_runs (workflow_id, step) VALUES ($1, $2)")
                .bind(&me)
                .bind(step)
                .execute(&pool)
                .await?;
            Ok::<_, workflow::Error>(())
        }
    };
    let fetched: i64 = ctx
        .step("fetch", || async {
            note("fetch").await?;
            tokio::time::sleep(pause).await;
            Ok(42)
        })
        .await?;
    let pause_s = pause_ms as f64 / 1000.0;
    let me2 = me.clone();
    let balance: i64 = ctx
        .transaction("deposit", move |c| {
            let me = me2.clone();
            Box::pin(async move {
                sqlx::query(
                    "CREATE TABLE IF NOT EXISTS public.dbos_demo_ledger (workflow_id text NOT NULL, amount bigint NOT NULL)",
                )
                .execute(&mut *c)
                .await?;
                sqlx::query("INSERT INTO public.dbos_demo_ledger VALUES ($1, $2)")
                    .bind(&me)
                    .bind(fetched)
                    .execute(&mut *c)
                    .await?;
                // Holds the transaction open before its commit.
                sqlx::query("SELECT pg_sleep($1)").bind(pause_s).execute(&mut *c).await?;
                Ok(sqlx::query_scalar("SELECT sum(amount)::int8 FROM public.dbos_demo_ledger WHERE workflow_id = $1")
                    .bind(&me)
                    .fetch_one(&mut *c)
                    .await?)
            })
        })
        .await?;
    ctx.sleep(pause).await?;
    let report: String = ctx
        .step("report", || async {
            note("report").await?;
            Ok(format!("deposited {fetched}, balance {balance}"))
        })
        .await?;
    Ok(report)
}
