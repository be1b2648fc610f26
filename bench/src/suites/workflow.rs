//! Suite `workflow`: no-op workflows of 1, 3 and 10 steps, started directly or through a
//! queue, with 1, 8 and 32 concurrent callers. Commits, transactions (round trips), WAL fsyncs
//! and WAL bytes per workflow are read from the server (see [`Counters`]), and the baseline is
//! the commit bound: the ceiling suite's durable commits/s at the same concurrency divided by
//! the commits each workflow took.

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

pub(crate) async fn workflow(env: &Env, plan: Plan, ceiling: &Ceiling) -> Result<Vec<Row>> {
    // (steps, callers, via queue)
    let workloads: Vec<(u32, usize, bool)> = if plan.quick {
        vec![(3, 1, false), (3, 32, false), (3, 32, true)]
    } else {
        let mut w = Vec::new();
        for steps in [1, 3, 10] {
            for callers in [1, 8, 32] {
                w.push((steps, callers, false));
            }
        }
        w.push((3, 1, true));
        w.push((3, 32, true));
        w
    };
    let pb = bar((workloads.len() * plan.repeats) as u64, "workflow");
    let mut rows = Vec::new();
    for (steps, callers, queued) in workloads {
        let mut rates = Vec::new();
        let mut lats = Vec::new();
        let mut per_op = Vec::new();
        for _ in 0..plan.repeats {
            let before = Counters::read(env, &[]).await?;
            let (n, l, took) = drive_steps(env, steps, callers, queued, plan.run).await;
            let after = Counters::read(env, &[]).await?;
            per_op.push(before.per_op(&after, n, env.pool()).await?);
            rates.push(n as f64 / took.as_secs_f64());
            lats.extend(l);
            pb.inc(1);
        }
        let (med, _, _) = summarize(&rates);
        let median = |f: fn(&PerOp) -> f64| summarize(&per_op.iter().map(f).collect::<Vec<_>>()).0;
        let commits_per_wf = median(|p| p.commits);
        let bound = ceiling
            .commits_per_s
            .get(&callers)
            .map(|c| c / commits_per_wf.max(1.0));
        let mut extra = serde_json::Map::new();
        extra.insert("steps_per_s".into(), (med * f64::from(steps)).into());
        extra.insert("commits_per_wf".into(), commits_per_wf.into());
        extra.insert("xacts_per_wf".into(), median(|p| p.xacts).into());
        extra.insert("fsyncs_per_wf".into(), median(|p| p.wal_syncs).into());
        extra.insert("wal_bytes_per_wf".into(), median(|p| p.wal_bytes).into());
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
        row.extra = extra;
        rows.push(row);
    }
    pb.finish_and_clear();
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
