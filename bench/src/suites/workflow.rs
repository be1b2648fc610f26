//! Suite `workflow`.

use super::*;

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
        let mut commits = Vec::new();
        let mut wal = Vec::new();
        for _ in 0..plan.repeats {
            let (xid0, lsn0) = counters(env.pool()).await?;
            let wf = env.wf.clone();
            let (n, l, took) = drive(callers, plan.run, move || {
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
            .await;
            let (xid1, _) = counters(env.pool()).await?;
            let wal_bytes = wal_since(env.pool(), &lsn0).await?;
            rates.push(n as f64 / took.as_secs_f64());
            // Minus the counter query's own transaction id.
            commits.push((xid1 - xid0 - 1).max(0) as f64 / n.max(1) as f64);
            wal.push(wal_bytes / n.max(1) as f64);
            lats.extend(l);
            pb.inc(1);
        }
        let (med, _, _) = summarize(&rates);
        let (commits_per_wf, _, _) = summarize(&commits);
        let (wal_per_wf, _, _) = summarize(&wal);
        let bound = ceiling
            .commits_per_s
            .get(&callers)
            .map(|c| c / commits_per_wf.max(1.0));
        let mut extra = serde_json::Map::new();
        extra.insert("steps_per_s".into(), (med * f64::from(steps)).into());
        extra.insert("commits_per_wf".into(), commits_per_wf.into());
        extra.insert("wal_bytes_per_wf".into(), wal_per_wf.into());
        let mut row = Row::new(
            "workflow",
            format!(
                "{steps}-step workflow, {callers} caller{}, {}",
                if callers == 1 { "" } else { "s" },
                if queued { "queued" } else { "direct" }
            ),
            &rates,
            "workflows/s",
            plan.repeats,
        );
        row.baseline = bound;
        row.baseline_name = Some(format!("commit bound: ceiling({callers}) ÷ commits/wf"));
        row.ratio = bound.map(|b| med / b);
        row.p50_ms = Some(quantile(&mut lats, 0.5));
        row.p99_ms = Some(quantile(&mut lats, 0.99));
        row.extra = extra;
        rows.push(row);
    }
    pb.finish_and_clear();
    Ok(rows)
}
