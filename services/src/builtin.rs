//! Workflows every node runs.

use std::time::Duration;

use crate::workflow::{Registry, WfCtx, WfError};

/// Name of the demonstration workflow run by `dbos demo`.
pub const DEMO: &str = "dbos.demo";

/// Name of the echo workflow, for trying messaging from the command line or any client.
pub const ECHO: &str = "dbos.echo";

/// Registers the built-in workflows.
pub fn register(r: &mut Registry) {
    r.register(DEMO, demo);
    r.register(ECHO, echo);
}

/// Echoes messages: announces itself with event `ready`, then takes each message of mailbox
/// topic `in` (waiting up to `idle_s` seconds for each), appends it to stream `out` and sets
/// event `last` to it; a `null` message or the idle timeout ends it, closing the stream.
/// Returns how many messages it echoed.
async fn echo(ctx: WfCtx, (idle_s,): (u64,)) -> Result<u64, WfError> {
    ctx.set_event("ready", &true).await?;
    let mut n = 0;
    while let Some(m) = ctx
        .recv::<serde_json::Value>(Some("in"), Duration::from_secs(idle_s))
        .await?
    {
        if m.is_null() {
            break;
        }
        ctx.write_stream("out", &m).await?;
        ctx.set_event("last", &m).await?;
        n += 1;
    }
    ctx.close_stream("out").await?;
    Ok(n)
}

/// A sample workflow of four durable operations, each pausing `pause_ms` so a node can be
/// killed in the middle of it: a step, a transaction, a durable sleep, and a last step. Every
/// step that runs appends a row to `public.dbos_demo_runs` (outside the checkpoint), so a step
/// that ran twice would show twice.
async fn demo(ctx: WfCtx, (pause_ms,): (u64,)) -> Result<String, WfError> {
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
            Ok::<_, WfError>(())
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
