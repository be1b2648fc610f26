//! Suite `replicated`: the cost of a synchronous standby. The 3-step workflow at 32 callers
//! runs on this run's server and on a pg_auto_failover formation on this machine
//! (`scripts/ha-cluster`: a primary whose commits wait for its synchronous standby),
//! alternating; the baseline of the replicated row is the single-server figure of the same run,
//! so its ratio is the throughput replication keeps. Skipped with a notice where
//! pg_auto_failover or the script is missing.

use std::path::PathBuf;
use std::process::Command;

use super::*;

const SUITE: &str = "replicated";
const STEPS_PER_WF: u32 = 3;
const CALLERS: usize = 32;

/// The formation, taken down when dropped.
struct Formation {
    script: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl Formation {
    fn run(&self, action: &str) -> Result<String> {
        let out = Command::new(&self.script)
            .arg(action)
            .env("HA_DIR", self.dir.path().join("ha"))
            .env("HA_PORT", self.port.to_string())
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "scripts/ha-cluster {action} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }
}

impl Drop for Formation {
    fn drop(&mut self) {
        let _ = self.run("down");
    }
}

/// The script, from `DBOS_HA_CLUSTER` or beside the sources this binary was built from.
fn script() -> Option<PathBuf> {
    std::env::var_os("DBOS_HA_CLUSTER")
        .map(PathBuf::from)
        .or_else(|| {
            Some(PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../scripts/ha-cluster"
            )))
        })
        .filter(|p| p.exists())
}

pub(crate) async fn replicated(env: &Env, plan: Plan) -> Result<Vec<Row>> {
    let Some(script) = script() else {
        eprintln!(
            "NOTICE: suite replicated skipped: scripts/ha-cluster not found (set DBOS_HA_CLUSTER)"
        );
        return Ok(Vec::new());
    };
    if Command::new("pg_autoctl")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!(
            "NOTICE: suite replicated skipped: pg_autoctl not found (install \
             postgresql-15-auto-failover and pg-auto-failover-cli; scripts/setup does)"
        );
        return Ok(Vec::new());
    }
    let dir = tempfile::Builder::new()
        .prefix("dbos-bench-ha-")
        .tempdir()?;
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let formation = Formation {
        script,
        dir,
        port: 24_000 + (std::process::id() % 1_000) as u16 * 3,
    };
    let url = formation.run("up")?;
    let ha = Env::start(Some(url), &[], env.sample_waits).await?;
    let sync: String = sqlx::query_scalar("SELECT current_setting('synchronous_standby_names')")
        .fetch_one(ha.pool())
        .await?;
    anyhow::ensure!(
        !sync.is_empty(),
        "the formation's primary has no synchronous standby"
    );

    let pb = bar((2 * plan.repeats) as u64, SUITE);
    // [single server, replicated]
    let mut rates: [Vec<f64>; 2] = Default::default();
    let mut lats: [Vec<f64>; 2] = Default::default();
    let mut per_op = Vec::new();
    for _ in 0..plan.repeats {
        for (i, e) in [env, &ha].into_iter().enumerate() {
            let before = Counters::read(e, &[]).await?;
            let (n, l, took) =
                super::workflow::drive_steps(e, STEPS_PER_WF, CALLERS, false, plan.run).await;
            if i == 1 {
                let after = Counters::read(e, &[]).await?;
                per_op.push(before.per_op(&after, n, e.pool()).await?);
            }
            rates[i].push(n as f64 / took.as_secs_f64());
            lats[i].extend(l);
            pb.inc(1);
        }
    }
    pb.finish_and_clear();
    ha.stop().await?;
    drop(formation);

    let what = format!("{STEPS_PER_WF}-step workflow, {CALLERS} callers, direct");
    let [single_rates, ha_rates] = rates;
    let [mut single_lats, mut ha_lats] = lats;
    let (single, _, _) = summarize(&single_rates);
    let (replicated, _, _) = summarize(&ha_rates);
    let mut base = Row::new(
        SUITE,
        format!("{what}, one server"),
        &single_rates,
        "workflows/s",
        plan.repeats,
    );
    base.p50_ms = Some(quantile(&mut single_lats, 0.5));
    base.p99_ms = Some(quantile(&mut single_lats, 0.99));
    let mut row = Row::new(
        SUITE,
        format!("{what}, synchronous standby (pg_auto_failover)"),
        &ha_rates,
        "workflows/s",
        plan.repeats,
    );
    row.baseline = Some(single);
    row.baseline_name = Some("one server, same run".into());
    row.ratio = Some(replicated / single);
    row.p50_ms = Some(quantile(&mut ha_lats, 0.5));
    row.p99_ms = Some(quantile(&mut ha_lats, 0.99));
    row.extra
        .insert("synchronous_standby_names".into(), sync.into());
    PerOp::budget(&per_op, "wf", &mut row.extra);
    Ok(vec![base, row])
}
