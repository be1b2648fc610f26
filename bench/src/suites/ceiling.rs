//! Suite `ceiling`.

use super::*;

pub(crate) async fn ceiling(env: &Env, plan: Plan, out: &mut Ceiling) -> Result<Vec<Row>> {
    sqlx::query("CREATE TABLE IF NOT EXISTS public.bench_ceiling (id bigserial PRIMARY KEY, v int NOT NULL)")
        .execute(env.pool())
        .await?;
    let clients = [1usize, 8, 32];
    let pb = bar(
        (clients.len() * plan.repeats) as u64,
        "ceiling: INSERT commits",
    );
    let mut rows = Vec::new();
    for &c in &clients {
        let pool = db::connect(
            &env.url,
            &PoolLimits {
                size_max: c as u32,
                ..PoolLimits::default()
            },
        )
        .await?;
        let mut rates = Vec::new();
        let mut lats = Vec::new();
        for _ in 0..plan.repeats {
            let p = pool.clone();
            let (n, l, took) = drive(c, plan.run, move || {
                let p = p.clone();
                async move {
                    sqlx::query("INSERT INTO public.bench_ceiling (v) VALUES (1)")
                        .execute(&p)
                        .await?;
                    Ok(())
                }
            })
            .await;
            rates.push(n as f64 / took.as_secs_f64());
            lats.extend(l);
            pb.inc(1);
        }
        pool.close().await;
        let mut row = Row::new(
            "ceiling",
            format!(
                "single-row INSERT commit, {c} client{}",
                if c == 1 { "" } else { "s" }
            ),
            &rates,
            "commits/s",
            plan.repeats,
        );
        out.commits_per_s.insert(c, row.ours);
        row.p50_ms = Some(quantile(&mut lats, 0.5));
        row.p99_ms = Some(quantile(&mut lats, 0.99));
        rows.push(row);
    }
    pb.finish_and_clear();
    Ok(rows)
}
