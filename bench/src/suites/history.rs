//! Suite `history`: the 3-step workflow at 32 callers on the run's database as it is, then
//! again after a long history has been written beside it (finished workflows with three
//! recorded steps each, their inputs and outputs, under random IDs as DBOS's SDKs generate
//! them). The ratio is after ÷ before: what a database that has served for weeks costs the hot
//! path. Full-page images and blocks read from outside the server's buffers, per workflow, say
//! where a difference comes from.
//!
//! It runs last: every suite after it would meet the history. On its own scratch cluster it
//! then times `dbos wf gc` deleting the history, with the workload measured before it (all
//! ended workflows created before the history was written); on a server given with
//! `--database-url` only the history's rows are deleted, by their executor ID.

use super::*;

/// Finished workflows written as the history.
fn history_size(quick: bool) -> i64 {
    if quick {
        100_000
    } else {
        1_000_000
    }
}

/// Callers of the measured workload.
const CALLERS: usize = 32;

/// The history's rows carry this executor ID, so they can be deleted again.
const HISTORY_EXECUTOR: &str = "bench-history";

/// Steps each workflow of the history recorded.
const HISTORY_STEPS: i64 = 3;

pub(crate) async fn history(env: &Env, plan: Plan) -> Result<Vec<Row>> {
    let n = history_size(plan.quick);
    let pb = bar((2 * plan.repeats) as u64, "history");
    let before = measure(env, plan, &pb).await?;
    write_history(env.pool(), n).await?;
    let written = Instant::now();
    let after = measure(env, plan, &pb).await?;
    pb.finish_and_clear();
    let gc = if env.is_scratch() {
        Some(gc_history(env, n, written).await?)
    } else {
        delete_history(env.pool()).await?;
        None
    };
    let (med_before, _, _) = summarize(&before.rates);
    let mut rows = Vec::new();
    for (m, history_wf) in [(before, 0), (after, n)] {
        let (med, _, _) = summarize(&m.rates);
        let median = |f: fn(&PerOp) -> f64| PerOp::median(&m.per_op, f);
        let mut extra = serde_json::Map::new();
        extra.insert("history_wf".into(), history_wf.into());
        extra.insert("fpi_per_wf".into(), round2(median(|p| p.wal_fpi)).into());
        extra.insert(
            "blocks_read_per_wf".into(),
            round2(median(|p| p.blocks_read)).into(),
        );
        PerOp::budget(&m.per_op, "wf", &mut extra);
        let (workload, series) = if history_wf == 0 {
            (
                format!("3-step workflow, {CALLERS} callers, before the history"),
                "before",
            )
        } else {
            (
                format!("3-step workflow, {CALLERS} callers, beside {n} finished workflows"),
                "after",
            )
        };
        let mut lats = m.lats;
        let mut row = Row::new("history", workload, &m.rates, "workflows/s", plan.repeats)
            .at(format!("3-step workflow, {series}"), CALLERS as u32);
        if history_wf > 0 {
            row.baseline = Some(med_before);
            row.baseline_name = Some("the same workload before the history, same run".into());
            row.ratio = Some(med / med_before.max(f64::MIN_POSITIVE));
        }
        row.p50_ms = Some(quantile(&mut lats, 0.5));
        row.p99_ms = Some(quantile(&mut lats, 0.99));
        row.extra = extra;
        rows.push(row);
    }
    rows.extend(gc);
    Ok(rows)
}

/// Times `dbos wf gc` (`workflow::manage::gc`) deleting every ended workflow created before the
/// history was written at `written`: the history's `n` and the workload measured before it.
async fn gc_history(env: &Env, n: i64, written: Instant) -> Result<Row> {
    let policy = wf::manage::Retention {
        max_age_ms: Some(i64::try_from(written.elapsed().as_millis())?),
        max_rows: None,
    };
    let before = Counters::read(env, &[]).await?;
    let t = Instant::now();
    let deleted = wf::manage::gc(env.pool(), &policy).await?;
    let secs = t.elapsed().as_secs_f64();
    let after = Counters::read(env, &[]).await?;
    anyhow::ensure!(
        deleted >= n as u64,
        "gc deleted {deleted} workflows, fewer than the history's {n}"
    );
    let per_op = before.per_op(&after, deleted, env.pool()).await?;
    let mut row = Row::new(
        "history",
        format!("ended workflows deleted by `dbos wf gc` ({deleted}: the history and the workload before it)"),
        &[deleted as f64 / secs.max(f64::MIN_POSITIVE)],
        "workflows/s",
        1,
    );
    row.extra.insert("deleted".into(), deleted.into());
    row.extra.insert("secs".into(), round2(secs).into());
    PerOp::budget(&[per_op], "wf", &mut row.extra);
    Ok(row)
}

/// The workload's repetitions, with their counters.
async fn measure(env: &Env, plan: Plan, pb: &ProgressBar) -> Result<workflow::Measured> {
    let mut m = workflow::Measured::default();
    for _ in 0..plan.repeats {
        m.repeat(env, 3, CALLERS, false, plan.run).await?;
        pb.inc(1);
    }
    Ok(m)
}

/// Writes `n` finished workflows with their steps, inputs and outputs, and analyzes the tables
/// as autovacuum would have by then.
async fn write_history(pool: &PgPool, n: i64) -> Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "CREATE TEMP TABLE bench_history ON COMMIT DROP AS
         SELECT gen_random_uuid()::text AS id, i FROM generate_series(1, $1) i",
    )
    .bind(n)
    .execute(&mut *tx)
    .await?;
    // One a second over the last `n` seconds, each finished 5 ms after it began.
    sqlx::query(
        "INSERT INTO dbos.workflow_status (workflow_uuid, status, name, executor_id,
             application_version, recovery_attempts, creator_xid, serialization, created_at,
             updated_at, started_at_epoch_ms, completed_at)
         SELECT id, 'SUCCESS', $2, $3, 'history', 1, gen_random_uuid()::text, 'portable_json',
                t, t + 5, t, t + 5
         FROM (SELECT id, kernel.now_ms() - ($1 - i) * 1000 AS t FROM bench_history) h",
    )
    .bind(n)
    .bind(STEPS)
    .bind(HISTORY_EXECUTOR)
    .execute(&mut *tx)
    .await?;
    for statement in [
        "INSERT INTO dbos.workflow_input (workflow_uuid, inputs)
         SELECT id, '{\"namedArgs\":{},\"positionalArgs\":[3]}' FROM bench_history",
        "INSERT INTO dbos.workflow_output (workflow_uuid, output) SELECT id, '3' FROM bench_history",
    ] {
        sqlx::query(statement).execute(&mut *tx).await?;
    }
    sqlx::query(
        "INSERT INTO dbos.operation_outputs (workflow_uuid, function_id, function_name, output,
             started_at_epoch_ms, completed_at_epoch_ms, serialization)
         SELECT id, f, 'noop', f::text, kernel.now_ms() - ($1 - i) * 1000,
                kernel.now_ms() - ($1 - i) * 1000 + 1, 'portable_json'
         FROM bench_history, generate_series(0, $2 - 1) f",
    )
    .bind(n)
    .bind(HISTORY_STEPS)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    for table in [
        "dbos.workflow_status",
        "dbos.workflow_input",
        "dbos.workflow_output",
        "dbos.operation_outputs",
    ] {
        sqlx::query(&format!("VACUUM ANALYZE {table}"))
            .execute(pool)
            .await?;
    }
    Ok(())
}

/// Deletes the history written by [`write_history`].
async fn delete_history(pool: &PgPool) -> Result<()> {
    let mut tx = pool.begin().await?;
    for table in [
        "dbos.operation_outputs",
        "dbos.workflow_input",
        "dbos.workflow_output",
    ] {
        sqlx::query(&format!(
            "DELETE FROM {table} t USING dbos.workflow_status w
             WHERE w.workflow_uuid = t.workflow_uuid AND w.executor_id = $1"
        ))
        .bind(HISTORY_EXECUTOR)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query("DELETE FROM dbos.workflow_status WHERE executor_id = $1")
        .bind(HISTORY_EXECUTOR)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}
