//! Suite `queue`: no-op tasks drained with a full workflow lifecycle (enqueued in batches,
//! claimed, run, outcome committed) by 1 and 2 nodes, and the enqueue-to-start delay on an idle
//! node.

use std::time::{SystemTime, UNIX_EPOCH};

use super::*;

/// A workflow that does nothing: the whole cost is the lifecycle.
pub(super) const NOOP: &str = "bench.noop";
/// A workflow that returns when it started (µs since the epoch).
pub(super) const STARTED: &str = "bench.started_at";

pub(super) async fn noop(_ctx: wf::Context, (_,): (u32,)) -> Result<u32, wf::Error> {
    Ok(0)
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

pub(super) async fn started_at(_ctx: wf::Context, (_,): (u32,)) -> Result<i64, wf::Error> {
    Ok(now_us())
}

/// The idle time before each enqueue of the enqueue-to-start probe.
const PAUSE: Duration = Duration::from_millis(5);

/// Enqueues `n` no-op workflows on the default queue in batches of 1,000 rows per statement,
/// their inputs in the status row as a node's enqueue writes them.
async fn enqueue_batch(pool: &PgPool, prefix: &str, n: i64) -> Result<()> {
    let mut done = 0;
    while done < n {
        let k = (n - done).min(1_000);
        sqlx::query(
            "WITH s AS (
                 INSERT INTO dbos.workflow_status
                     (workflow_uuid, status, name, queue_name, recovery_attempts, serialization, inputs)
                 SELECT $1 || '-' || i, 'ENQUEUED', $2, 'default', 0, 'portable_json', '{\"namedArgs\":{},\"positionalArgs\":[0]}'
                 FROM generate_series($3::int8, $4::int8) i
                 RETURNING workflow_uuid
             )
             SELECT pg_notify($5, 'default')",
        )
        .bind(prefix)
        .bind(NOOP)
        .bind(done + 1)
        .bind(done + k)
        .bind(dbos_services::workflow::ENQUEUE_CHANNEL)
        .execute(pool)
        .await?;
        done += k;
    }
    Ok(())
}

/// Time until every workflow named `prefix-*` has succeeded: the default queue is polled until
/// it is empty, and only then is the outcome of every workflow counted.
async fn drained(pool: &PgPool, prefix: &str, n: i64, start: Instant) -> Result<f64> {
    until_queue_empty(pool, "default", "the drain").await?;
    let secs = start.elapsed().as_secs_f64();
    let ok: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM dbos.workflow_status
         WHERE workflow_uuid LIKE $1 || '-%' AND status = 'SUCCESS'",
    )
    .bind(prefix)
    .fetch_one(pool)
    .await?;
    anyhow::ensure!(ok == n, "the queue is empty but {ok} of {n} succeeded");
    Ok(secs)
}

/// A second node on the same database with the same workflows.
async fn second_node(env: &Env) -> Result<(Kernel, Service)> {
    let config = Config {
        database_url: Some(env.url.clone()),
        slots: super::NODE_SLOTS,
        pool_size_max: 48,
        ..Config::default()
    };
    let kernel = Kernel::boot(config, &dbos_services::migrations()).await?;
    let wf = Service::launch(&kernel, registry(), Options::default()).await?;
    Ok((kernel, wf))
}

pub(crate) async fn queue(env: &Env, plan: Plan, ceiling: &Ceiling) -> Result<Vec<Row>> {
    let n: i64 = if plan.quick { 2_000 } else { 20_000 };
    let pb = bar((3 * plan.repeats) as u64, "queue: drain and latency");
    let mut rows = Vec::new();
    let mut one_node = Vec::new();
    for nodes in [1u32, 2] {
        let extra = if nodes == 2 {
            Some(second_node(env).await?)
        } else {
            None
        };
        let mut rates = Vec::new();
        let mut per_op = Vec::new();
        for rep in 0..plan.repeats {
            let prefix = format!("q{nodes}-{rep}-{}", uuid::Uuid::new_v4().simple());
            let also: Vec<&Kernel> = extra.iter().map(|(k, _)| k).collect();
            let before = Counters::read(env, &also).await?;
            let start = Instant::now();
            enqueue_batch(env.pool(), &prefix, n).await?;
            let secs = drained(env.pool(), &prefix, n, start).await?;
            rates.push(n as f64 / secs);
            let after = Counters::read(env, &also).await?;
            per_op.push(before.per_op(&after, n as u64, env.pool()).await?);
            pb.inc(1);
        }
        if let Some((k, _)) = extra {
            k.shutdown().await?;
        }
        if nodes == 1 {
            one_node = rates.clone();
        }
        let mut row = Row::new(
            "queue",
            format!(
                "no-op tasks drained, batch enqueue, {nodes} node{}",
                if nodes == 1 { "" } else { "s" }
            ),
            &rates,
            "tasks/s",
            plan.repeats,
        )
        .at("no-op tasks drained", nodes);
        if let Some(c) = ceiling.commits_per_s.get(&32) {
            row.baseline = Some(*c);
            row.baseline_name = Some("durable INSERT commits/s, 32 clients".into());
            row.ratio = Some(row.ours / c);
        }
        row.extra.insert("tasks".into(), n.into());
        row.extra
            .insert("slots_per_node".into(), super::NODE_SLOTS.into());
        PerOp::budget(&per_op, "task", &mut row.extra);
        row.paper =
            Some("graphile-worker batched: 16K jobs/s; awa: 5.8K/s (same machine class)".into());
        rows.push(row);
    }
    if let Some(row) = graphile_row(env, plan, n, &one_node).await? {
        rows.push(row);
    }
    // Enqueue-to-start on an idle node.
    let k: u32 = if plan.quick { 30 } else { 200 };
    let mut lats = Vec::new();
    for _ in 0..plan.repeats {
        for _ in 0..k {
            tokio::time::sleep(PAUSE).await;
            let t0 = now_us();
            let h = env
                .wf
                .enqueue::<_, i64>("default", STARTED, (0u32,), StartOptions::default())
                .await?;
            let started = h.result().await?;
            lats.push((started - t0) as f64 / 1000.0);
        }
        pb.inc(1);
    }
    let p50 = quantile(&mut lats, 0.5);
    let mut row = Row::new(
        "queue",
        "enqueue to start, idle node".into(),
        &[p50],
        "ms p50",
        plan.repeats,
    );
    row.p50_ms = Some(p50);
    row.p99_ms = Some(quantile(&mut lats, 0.99));
    // The bound: the enqueue commits, claimed for this node as it is enqueued, on a machine
    // that was idle for the probe's pause.
    let mut commits = super::ceiling::idle_commits(env, k * plan.repeats as u32, PAUSE).await?;
    let commit_p50 = quantile(&mut commits, 0.5);
    row.baseline = Some(commit_p50);
    row.baseline_name =
        Some("one single-row INSERT commit after the probe's 5 ms pause, same run".into());
    row.ratio = Some(p50 / commit_p50);
    row.paper = Some("graphile-worker: 5 ms; awa: 15 ms (p50)".into());
    rows.push(row);
    pb.finish_and_clear();
    Ok(rows)
}

/// Version of graphile-worker measured: the newest that runs on Node.js 20 and has the local
/// queue and batched completion of its documented high-throughput configuration.
const GRAPHILE_VERSION: &str = "0.17.3";

/// graphile-worker draining the same number of no-op jobs with one worker, on its own database
/// of the same server, beside our one-node drain (`ours`: its rates) of this run; `None` with a notice
/// where Node.js is missing.
async fn graphile_row(env: &Env, plan: Plan, n: i64, ours: &[f64]) -> Result<Option<Row>> {
    let dir = match super::peer::npm_peer(
        &format!("graphile-worker-{GRAPHILE_VERSION}"),
        &[&format!("graphile-worker@{GRAPHILE_VERSION}")],
        (
            "graphile_peer.mjs",
            include_str!("../../peer/graphile_peer.mjs"),
        ),
    )? {
        Ok(d) => d,
        Err(why) => {
            eprintln!("NOTICE: {why}; the graphile-worker peer is skipped");
            return Ok(None);
        }
    };
    {
        let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&env.admin_url).await?;
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT FROM pg_database WHERE datname = 'bench_graphile')",
        )
        .fetch_one(&mut admin)
        .await?;
        if !exists {
            sqlx::query("CREATE DATABASE bench_graphile")
                .execute(&mut admin)
                .await?;
        }
    }
    let url = env.peer_url("bench_graphile");
    let pb = bar(plan.repeats as u64, "queue: graphile-worker");
    let mut theirs = Vec::new();
    for _ in 0..plan.repeats {
        let v = super::peer::run_peer(
            tokio::process::Command::new("node")
                .arg(dir.join("graphile_peer.mjs"))
                .arg(&url)
                .arg(n.to_string())
                .current_dir(&dir),
            "the graphile-worker drain",
        )
        .await?;
        theirs.push(v["jobs"].as_f64().unwrap_or(0.0) / v["seconds"].as_f64().unwrap_or(1.0));
        pb.inc(1);
    }
    pb.finish_and_clear();
    let (their_med, _, _) = summarize(&theirs);
    let mut row = Row::new(
        "queue",
        "no-op tasks drained, batch enqueue, 1 node, beside graphile-worker".into(),
        ours,
        "tasks/s",
        plan.repeats,
    );
    row.baseline = Some(their_med);
    row.baseline_name = Some(format!(
        "graphile-worker {GRAPHILE_VERSION} (local queue 500, batched completion, 24 jobs at \
         once), same Postgres, same run"
    ));
    row.ratio = Some(row.ours / their_med.max(f64::MIN_POSITIVE));
    row.extra.insert("tasks".into(), n.into());
    row.paper = Some("graphile-worker batched: 16K jobs/s (same machine class)".into());
    Ok(Some(row))
}
