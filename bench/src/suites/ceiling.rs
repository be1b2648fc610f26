//! Suite `ceiling`: what this Postgres on this disk can commit, through the same driver and
//! pool settings as everything else.
//!
//! One single-row INSERT per transaction, with 1, 8 and 32 clients, in the three durability
//! modes: D (a logged table, synchronous_commit on: every commit waits for its WAL flush), R
//! (the same with `synchronous_commit=off` in the session) and M (an unlogged table, so the
//! commit writes no WAL to wait for). The D figures are the reference the other suites are
//! read against.

use super::*;
use crate::Mode;

/// The paper-side figure beside each D cell: pgbench on a machine of this class.
fn pgbench(clients: usize) -> Option<&'static str> {
    match clients {
        1 => Some("pgbench 1-insert: 2,997 tps (2-core, PG 15)"),
        8 => Some("pgbench 1-insert: 7,794 tps (2-core, PG 15)"),
        32 => Some("pgbench 1-insert: 8,486 tps (2-core, PG 15)"),
        _ => None,
    }
}

/// The logged table of the D and R modes, which other suites' baselines commit to as well.
pub(super) const CREATE_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS public.bench_ceiling (id bigserial PRIMARY KEY, v int NOT NULL)";
/// One row into [`CREATE_TABLE`]'s table.
pub(super) const INSERT: &str = "INSERT INTO public.bench_ceiling (v) VALUES (1)";

/// Latencies (ms) of `n` single-row INSERT commits through the node's pool, each after `pause`
/// idle: the commit a probe of an idle node is read against. After a pause a commit waits
/// longer than in the ceiling's tight loop (the disk and the CPUs wake from idle).
pub(super) async fn idle_commits(env: &Env, n: u32, pause: Duration) -> Result<Vec<f64>> {
    sqlx::query(CREATE_TABLE).execute(env.pool()).await?;
    let mut lats = Vec::with_capacity(n as usize);
    for _ in 0..n {
        tokio::time::sleep(pause).await;
        let t = Instant::now();
        sqlx::query(INSERT).execute(env.pool()).await?;
        lats.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(lats)
}

/// A pool of `c` connections of their own, all open, kept between uses as the group commit
/// keeps its own (a connection given back to a sqlx pool costs a round trip, which is not a
/// cost of committing), with `synchronous_commit` as given.
pub(super) async fn kept_clients(
    env: &Env,
    c: usize,
    synchronous_commit: &str,
) -> Result<(PgPool, Arc<db::Kept>)> {
    let limits = PoolLimits {
        size_max: c as u32,
        ..PoolLimits::default()
    };
    let options = db::connect_options(&env.url, &limits)?
        .options([("synchronous_commit", synchronous_commit)]);
    // As the node's pools: no ping before each use of a busy connection.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(limits.size_max)
        .test_before_acquire(false)
        .connect_with(options)
        .await?;
    // Open every connection before measuring: connecting is not committing.
    let mut held = Vec::with_capacity(c);
    for _ in 0..c {
        held.push(pool.acquire().await?);
    }
    drop(held);
    let kept = Arc::new(db::Kept::new(pool.clone()));
    Ok((pool, kept))
}

pub(crate) async fn ceiling(env: &Env, plan: Plan, out: &mut Ceiling) -> Result<Vec<Row>> {
    sqlx::query(CREATE_TABLE).execute(env.pool()).await?;
    sqlx::query(
        "CREATE UNLOGGED TABLE IF NOT EXISTS public.bench_ceiling_unlogged
             (id bigserial PRIMARY KEY, v int NOT NULL)",
    )
    .execute(env.pool())
    .await?;
    let clients = [1usize, 8, 32];
    let modes = [Mode::D, Mode::R, Mode::M];
    let pb = bar(
        (modes.len() * clients.len() * plan.repeats) as u64,
        "ceiling: INSERT commits",
    );
    let mut rows = Vec::new();
    for mode in modes {
        let sync = if mode == Mode::R { "off" } else { "on" };
        let insert: &'static str = match mode {
            Mode::M => "INSERT INTO public.bench_ceiling_unlogged (v) VALUES (1)",
            _ => INSERT,
        };
        for &c in &clients {
            let (pool, kept) = kept_clients(env, c, sync).await?;
            let mut rates = Vec::new();
            let mut lats = Vec::new();
            for _ in 0..plan.repeats {
                let k = kept.clone();
                let (n, l, took) = drive(c, plan.run, move || {
                    let k = k.clone();
                    async move {
                        let mut conn = k.acquire().await?;
                        sqlx::query(insert).execute(&mut *conn).await?;
                        conn.keep();
                        Ok(())
                    }
                })
                .await;
                rates.push(n as f64 / took.as_secs_f64());
                lats.extend(l);
                pb.inc(1);
            }
            kept.release_all();
            pool.close().await;
            let series = match mode {
                Mode::M => "single-row INSERT commit, unlogged table",
                _ => "single-row INSERT commit",
            };
            let mut row = Row::new(
                "ceiling",
                format!("{series}, {c} client{}", if c == 1 { "" } else { "s" }),
                &rates,
                "commits/s",
                plan.repeats,
            )
            .at(series, c as u32);
            row.mode = mode;
            match mode {
                Mode::D => {
                    out.commits_per_s.insert(c, row.ours);
                    row.paper = pgbench(c).map(str::to_owned);
                }
                Mode::M if c == 32 => {
                    row.paper = Some(
                        "DBOS scheduler on in-memory VoltDB: 750K tasks/s on 80 cores (PVLDB)"
                            .into(),
                    );
                }
                _ => {}
            }
            // The D figure at the same concurrency is the baseline of the relaxed modes.
            if mode != Mode::D {
                row.baseline = out.commits_per_s.get(&c).copied();
                row.baseline_name = Some("D mode, same clients".into());
                row.ratio = row.baseline.map(|b| row.ours / b.max(f64::MIN_POSITIVE));
            }
            row.p50_ms = Some(quantile(&mut lats, 0.5));
            row.p99_ms = Some(quantile(&mut lats, 0.99));
            rows.push(row);
        }
    }
    pb.finish_and_clear();
    Ok(rows)
}
