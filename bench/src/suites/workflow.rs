//! Suite `workflow`: no-op workflows of 1, 3 and 10 steps, started directly or through a
//! queue, with 1, 8 and 32 concurrent callers (the queued ones in turns with their direct
//! counterparts, see [`groups`]). Commits, transactions (round trips), WAL fsyncs
//! and WAL bytes per workflow are read from the server (see [`Counters`]), and the baseline is
//! the commit bound: the ceiling suite's durable commits/s at the same concurrency divided by
//! the commits each workflow took.
//!
//! Beside the 3-step rows, at 1 and 32 clients: the same rows written with nothing else, the
//! floor this schema sets on this server ([`bare_rows`]).

use super::*;

/// The published figure beside a cell, where one exists.
fn published(steps: u32, callers: usize, queued: bool) -> Option<&'static str> {
    match (steps, callers, queued) {
        (3, 1, false) => Some("DBOS Rust SDK ≈165/s, DBOS Python ≈33/s (1 caller, 2-core)"),
        (3, 8 | 32, false) => Some("DBOS Rust SDK 330–400/s concurrently (2-core)"),
        (1, 32, false) => Some("DBOS Transact 43K wf/s on 96 vCPU (≈450/vCPU)"),
        (3, 32, true) => Some("graphile-worker 16K jobs/s, awa 5.8K jobs/s (one-row jobs)"),
        _ => None,
    }
}

/// A workload: steps, callers, through the queue.
type Workload = (u32, usize, bool);

/// The workloads in groups. The workloads of a group are measured in turns, one repetition of
/// each before the next of any, so the queued rows and the direct rows they are set against
/// meet the same database: measured one after the other, the queued rows came after every
/// direct row, in tables that the rows before had grown and left dead versions in.
fn groups(quick: bool) -> Vec<Vec<Workload>> {
    if quick {
        return vec![vec![(3, 1, false)], vec![(3, 32, false), (3, 32, true)]];
    }
    let mut g = Vec::new();
    for steps in [1, 3, 10] {
        for callers in [1, 8, 32] {
            let mut group = vec![(steps, callers, false)];
            if steps == 3 && callers != 8 {
                group.push((steps, callers, true));
            }
            g.push(group);
        }
    }
    g
}

/// What the repetitions of one workload measured.
#[derive(Default)]
pub(super) struct Measured {
    pub(super) rates: Vec<f64>,
    pub(super) lats: Vec<f64>,
    pub(super) per_op: Vec<PerOp>,
}

impl Measured {
    /// Measures one repetition of no-op workflows of `steps` steps from `callers` callers for
    /// `run` ([`drive_steps`]), with the server's counters around it.
    pub(super) async fn repeat(
        &mut self,
        env: &Env,
        steps: u32,
        callers: usize,
        queued: bool,
        run: Duration,
    ) -> Result<()> {
        let before = Counters::read(env, &[]).await?;
        let (n, l, took) = drive_steps(env, steps, callers, queued, run).await;
        let after = Counters::read(env, &[]).await?;
        self.per_op
            .push(before.per_op(&after, n, env.pool()).await?);
        self.rates.push(n as f64 / took.as_secs_f64());
        self.lats.extend(l);
        Ok(())
    }
}

pub(crate) async fn workflow(env: &Env, plan: Plan, ceiling: &Ceiling) -> Result<Vec<Row>> {
    let groups = groups(plan.quick);
    let bare = bare_rows(env, plan, ceiling).await?;
    let count: usize = groups.iter().map(Vec::len).sum();
    let pb = bar((count * plan.repeats) as u64, "workflow");
    let mut measured: Vec<(Workload, Measured)> = Vec::new();
    for group in groups {
        let mut m: Vec<Measured> = group.iter().map(|_| Measured::default()).collect();
        for _ in 0..plan.repeats {
            for (&(steps, callers, queued), m) in group.iter().zip(m.iter_mut()) {
                m.repeat(env, steps, callers, queued, plan.run).await?;
                pb.inc(1);
            }
        }
        measured.extend(group.into_iter().zip(m));
    }
    pb.finish_and_clear();
    let mut rows = Vec::new();
    for ((steps, callers, queued), m) in measured {
        let Measured {
            rates,
            mut lats,
            per_op,
        } = m;
        let (med, _, _) = summarize(&rates);
        let commits_per_wf = PerOp::median(&per_op, |p| p.commits);
        let bound = ceiling
            .commits_per_s
            .get(&callers)
            .map(|c| c / commits_per_wf.max(1.0));
        let mut extra = serde_json::Map::new();
        extra.insert("steps_per_s".into(), (med * f64::from(steps)).into());
        extra.insert(
            "xacts_per_wf".into(),
            PerOp::median(&per_op, |p| p.xacts).into(),
        );
        PerOp::budget(&per_op, "wf", &mut extra);
        let how = if queued { "queued" } else { "direct" };
        let mut row = Row::new(
            "workflow",
            format!(
                "{steps}-step workflow, {callers} caller{}, {how}",
                if callers == 1 { "" } else { "s" },
            ),
            &rates,
            "workflows/s",
            plan.repeats,
        )
        .at(format!("{steps}-step workflow, {how}"), callers as u32);
        row.paper = published(steps, callers, queued).map(str::to_owned);
        row.baseline = bound;
        row.baseline_name = Some("commit bound (ceiling ÷ commits per workflow)".into());
        row.ratio = bound.map(|b| med / b);
        row.p50_ms = Some(quantile(&mut lats, 0.5));
        row.p99_ms = Some(quantile(&mut lats, 0.99));
        if let Some(b) = bare.iter().find(|b| {
            steps == BARE_STEPS && !queued && b.point().map(|(_, c)| c) == Some(callers as u32)
        }) {
            extra.insert("bare_rows_per_s".into(), b.ours.round().into());
            extra.insert(
                "ratio_to_bare_rows".into(),
                round2(med / b.ours.max(f64::MIN_POSITIVE)).into(),
            );
        }
        row.extra = extra;
        rows.push(row);
    }
    rows.extend(bare);
    Ok(rows)
}

/// Steps of the workflow whose rows [`bare_rows`] writes.
const BARE_STEPS: u32 = 3;

/// Copies of DBOS's workflow tables that a node writes for a workflow (columns, defaults,
/// constraints, indexes and the foreign key to the status row) in a scratch schema, for
/// [`bare_rows`].
const BARE_SCHEMA: &str = "
    DROP SCHEMA IF EXISTS bench_bare CASCADE;
    CREATE SCHEMA bench_bare;
    CREATE TABLE bench_bare.workflow_status (LIKE dbos.workflow_status INCLUDING ALL);
    CREATE TABLE bench_bare.operation_outputs (LIKE dbos.operation_outputs INCLUDING ALL,
        FOREIGN KEY (workflow_uuid) REFERENCES bench_bare.workflow_status (workflow_uuid)
            ON UPDATE CASCADE ON DELETE CASCADE);";

/// The start: the status row PENDING under the execution's token with its inputs, left alone
/// when the ID is taken (its creator is returned either way).
const BARE_START: &str = "
    WITH st AS (
        INSERT INTO bench_bare.workflow_status AS w
            (workflow_uuid, status, name, executor_id, application_version, recovery_attempts,
             owner_xid, creator_xid, serialization, priority, inputs)
        VALUES ($1, 'PENDING', 'bench.bare', 'bench', 'v1', 1, $2, $2, 'portable_json', 0, $3)
        ON CONFLICT (workflow_uuid) DO UPDATE SET creator_xid = w.creator_xid
        RETURNING workflow_uuid, creator_xid
    )
    SELECT count(*) FROM st WHERE creator_xid = $2";

/// The owned PENDING status row, locked against a takeover until the commit: a checkpoint's
/// fence.
const BARE_OWNED: &str = "owned AS (
        SELECT workflow_uuid FROM bench_bare.workflow_status
        WHERE workflow_uuid = $1 AND owner_xid = $2 AND status = 'PENDING'
        FOR NO KEY UPDATE
    ), ck AS (
        INSERT INTO bench_bare.operation_outputs
            (workflow_uuid, function_id, function_name, output, started_at_epoch_ms,
             completed_at_epoch_ms, serialization)
        SELECT workflow_uuid, $3, 'step', $4, $5, $5, 'portable_json' FROM owned
        ON CONFLICT DO NOTHING
        RETURNING workflow_uuid
    )";

/// The last step's checkpoint with the outcome and its output.
const BARE_END: &str = ", done AS (
        UPDATE bench_bare.workflow_status
        SET status = 'SUCCESS', owner_xid = NULL, updated_at = kernel.now_ms(),
            completed_at = kernel.now_ms(), output = $4
        WHERE workflow_uuid = $1 AND status = 'PENDING' AND owner_xid = $2
          AND EXISTS (SELECT 1 FROM ck)
        RETURNING workflow_uuid
    )
    SELECT count(*) FROM done";

/// The rows of a [`BARE_STEPS`]-step workflow, written as a node writes them (a start with its
/// inputs; each step's output fenced on the owned status row; the last step's output with the
/// outcome and its output, in the status row), one commit each and nothing else: no node, no group commit,
/// single-row statements on kept connections into copies of the tables. What Postgres and this
/// schema allow on this server, against which a workflow row's `ratio_to_bare_rows` reads
/// what our node adds.
async fn bare_rows(env: &Env, plan: Plan, ceiling: &Ceiling) -> Result<Vec<Row>> {
    sqlx::raw_sql(BARE_SCHEMA).execute(env.pool()).await?;
    let statements = Arc::new([
        format!("WITH {BARE_OWNED} SELECT count(*) FROM ck"),
        format!("WITH {BARE_OWNED}{BARE_END}"),
    ]);
    let mut rows = Vec::new();
    for c in [1usize, 32] {
        let (pool, kept) = super::ceiling::kept_clients(env, c, "on").await?;
        let mut rates = Vec::new();
        let mut lats = Vec::new();
        for _ in 0..plan.repeats {
            let k = kept.clone();
            let sqls = statements.clone();
            let (n, l, took) = drive(c, plan.run, move || {
                let k = k.clone();
                let sqls = sqls.clone();
                async move {
                    let [checkpoint, end] = &*sqls;
                    let mut conn = k.acquire().await?;
                    let id = dbos_kernel::id::new_id();
                    let xid = uuid::Uuid::new_v4().to_string();
                    let one = |what: &str, n: i64| {
                        anyhow::ensure!(n == 1, "the bare {what} wrote {n} rows, not 1");
                        Ok(())
                    };
                    let n: i64 = sqlx::query_scalar(BARE_START)
                        .bind(&id)
                        .bind(&xid)
                        .bind("[[3]]")
                        .fetch_one(&mut *conn)
                        .await?;
                    one("start", n)?;
                    for step in 1..=BARE_STEPS as i32 {
                        let sql = if step == BARE_STEPS as i32 {
                            end
                        } else {
                            checkpoint
                        };
                        let n: i64 = sqlx::query_scalar(sql.as_str())
                            .bind(&id)
                            .bind(&xid)
                            .bind(step)
                            .bind(step.to_string())
                            .bind(0i64)
                            .fetch_one(&mut *conn)
                            .await?;
                        one("checkpoint", n)?;
                    }
                    conn.keep();
                    Ok(())
                }
            })
            .await;
            anyhow::ensure!(n > 0, "no bare workflow's rows were written");
            rates.push(n as f64 / took.as_secs_f64());
            lats.extend(l);
        }
        kept.release_all();
        pool.close().await;
        let mut row = Row::new(
            "workflow",
            format!(
                "{BARE_STEPS}-step workflow's rows alone, bare SQL, {c} client{}",
                if c == 1 { "" } else { "s" }
            ),
            &rates,
            "workflows/s",
            plan.repeats,
        )
        .at(
            format!("{BARE_STEPS}-step workflow's rows alone, bare SQL"),
            c as u32,
        );
        let bound = ceiling
            .commits_per_s
            .get(&c)
            .map(|cps| cps / f64::from(BARE_STEPS + 1));
        row.baseline = bound;
        row.baseline_name = Some("commit bound (ceiling ÷ commits per workflow)".into());
        row.ratio = bound.map(|b| row.ours / b);
        row.p50_ms = Some(quantile(&mut lats, 0.5));
        row.p99_ms = Some(quantile(&mut lats, 0.99));
        row.extra
            .insert("commits_per_wf".into(), f64::from(BARE_STEPS + 1).into());
        rows.push(row);
    }
    sqlx::raw_sql("DROP SCHEMA bench_bare CASCADE")
        .execute(env.pool())
        .await?;
    Ok(rows)
}

/// Runs no-op workflows of `steps` steps from `callers` concurrent callers for `run`, directly
/// or through the queue `bench`: as [`drive`].
pub(super) async fn drive_steps(
    env: &Env,
    steps: u32,
    callers: usize,
    queued: bool,
    run: Duration,
) -> (u64, Vec<f64>, Duration) {
    let wf = env.wf.clone();
    drive(callers, run, move || {
        let wf = wf.clone();
        async move {
            let out: u32 = if queued {
                wf.enqueue::<_, u32>("bench", STEPS, (steps,), StartOptions::default())
                    .await?
                    .result()
                    .await?
            } else {
                wf.run(STEPS, (steps,), StartOptions::default()).await?
            };
            anyhow::ensure!(out == steps, "the workflow returned {out}, not {steps}");
            Ok(())
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_queued_workload_is_measured_in_turns_with_its_direct_one() {
        for (quick, count) in [(true, 3), (false, 11)] {
            let groups = groups(quick);
            assert_eq!(groups.iter().map(Vec::len).sum::<usize>(), count);
            let queued: Vec<Workload> = groups.iter().flatten().filter(|w| w.2).copied().collect();
            assert!(!queued.is_empty());
            for (steps, callers, _) in queued {
                assert!(groups
                    .iter()
                    .any(|g| g.contains(&(steps, callers, true))
                        && g.contains(&(steps, callers, false))));
            }
        }
    }
}
