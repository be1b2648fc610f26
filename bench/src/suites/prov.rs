//! Suite `prov`: the cost of provenance capture. A workflow that writes a file, reads it back
//! (each in a transaction step) and sends itself a message runs with capture on and off,
//! alternating in the same run; the baseline of the "on" row is the "off" figure, so its ratio
//! is the throughput kept with capture on (the goal: at least 0.9).

use dbos_fs::{Fs, Identity, Options as FsOptions};

use super::*;

const SUITE: &str = "prov";
/// The workflow: write a 4 KiB file, read it back, send a message.
pub(super) const FILES: &str = "bench.prov_files";
const FILE_BYTES: usize = 4096;

pub(super) async fn files(ctx: wf::Context, (): ()) -> Result<u64, wf::Error> {
    let path = format!("/bench-prov/{}", ctx.workflow_id());
    let p = path.clone();
    ctx.transaction("write", move |c| {
        let p = p.clone();
        Box::pin(async move {
            let (fs, root) = (Fs::new(FsOptions::default()), Identity::root());
            fs.create(&mut *c, &root, &p, 0o644).await?;
            Ok(fs.write(&mut *c, &root, &p, 0, &[7u8; FILE_BYTES]).await?)
        })
    })
    .await?;
    let read: u64 = ctx
        .transaction("read", move |c| {
            let p = path.clone();
            Box::pin(async move {
                let (fs, root) = (Fs::new(FsOptions::default()), Identity::root());
                Ok(fs.read(&mut *c, &root, &p, 0, FILE_BYTES).await?.len() as u64)
            })
        })
        .await?;
    let me = ctx.workflow_id().to_owned();
    ctx.send(&me, &read, None).await?;
    Ok(read)
}

pub(crate) async fn prov(env: &Env, plan: Plan) -> Result<Vec<Row>> {
    let callers = 8;
    {
        let mut c = env.pool().acquire().await?;
        Fs::new(FsOptions::default())
            .mkdir_all(&mut c, &Identity::root(), "/bench-prov", 0o755)
            .await?;
    }
    let pb = bar((2 * plan.repeats) as u64, SUITE);
    // [off, on]
    let mut rates: [Vec<f64>; 2] = Default::default();
    let mut lats: [Vec<f64>; 2] = Default::default();
    let mut events_per_wf = Vec::new();
    for _ in 0..plan.repeats {
        for (i, on) in [false, true].into_iter().enumerate() {
            sqlx::query("UPDATE prov.config SET enabled = $1")
                .bind(on)
                .execute(env.pool())
                .await?;
            let events_before: i64 = sqlx::query_scalar("SELECT count(*) FROM prov.events")
                .fetch_one(env.pool())
                .await?;
            let wf = env.wf.clone();
            let (n, l, took) = drive(callers, plan.run, move || {
                let wf = wf.clone();
                async move {
                    let read: u64 = wf.run(FILES, (), StartOptions::default()).await?;
                    anyhow::ensure!(read == FILE_BYTES as u64, "read {read} bytes back");
                    Ok(())
                }
            })
            .await;
            let events_after: i64 = sqlx::query_scalar("SELECT count(*) FROM prov.events")
                .fetch_one(env.pool())
                .await?;
            if on {
                events_per_wf.push((events_after - events_before) as f64 / n.max(1) as f64);
            } else {
                anyhow::ensure!(
                    events_after == events_before,
                    "capture off recorded {} events",
                    events_after - events_before
                );
            }
            rates[i].push(n as f64 / took.as_secs_f64());
            lats[i].extend(l);
            pb.inc(1);
        }
    }
    sqlx::query("UPDATE prov.config SET enabled = true")
        .execute(env.pool())
        .await?;
    pb.finish_and_clear();
    let (off, _, _) = summarize(&rates[0]);
    let mut rows = Vec::new();
    for (i, on) in [false, true].into_iter().enumerate() {
        let what = if on { "capture on" } else { "capture off" };
        let mut row = Row::new(
            SUITE,
            format!("write + read a 4 KiB file + send, {callers} callers, {what}"),
            &rates[i],
            "workflows/s",
            plan.repeats,
        )
        .at(format!("file workflow, {what}"), callers as u32);
        row.p50_ms = Some(quantile(&mut lats[i], 0.5));
        row.p99_ms = Some(quantile(&mut lats[i], 0.99));
        if on {
            row.baseline = Some(off);
            row.baseline_name = Some("the same workflow with capture off, same run".into());
            row.ratio = Some(row.ours / off);
            row.extra.insert(
                "prov_events_per_wf".into(),
                summarize(&events_per_wf).0.into(),
            );
        }
        rows.push(row);
    }
    Ok(rows)
}
