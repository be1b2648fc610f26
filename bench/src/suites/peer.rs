//! Suite `peer`.

use super::*;

/// Version of DBOS for Python the peer suite measures.
const PEER_VERSION: &str = "3.4.0";

/// Runs a peer's program to its end and returns the JSON object of its last line of output
/// (its figures); `what` names it in the error when it fails.
pub(super) async fn run_peer(
    cmd: &mut tokio::process::Command,
    what: &str,
) -> Result<serde_json::Value> {
    // Killed if the run stops first (a signal, an error of the run).
    let out = cmd.kill_on_drop(true).output().await?;
    anyhow::ensure!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(
        out.stdout
            .rsplit(|b| *b == b'\n')
            .find(|l| !l.is_empty())
            .unwrap_or_default(),
    )?)
}

/// Where peers are installed on first use: `dbos-bench` in the user's cache directory.
pub(super) fn cache_dir() -> std::path::PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("dbos-bench")
}

/// `packages`, installed with npm into `name` under [`cache_dir`] on first use, with `script`
/// (a peer's own program, from `bench/peer/`) written beside them; `Ok(Err(why))` where
/// Node.js or npm is missing.
pub(super) fn npm_peer(
    name: &str,
    packages: &[&str],
    script: (&str, &str),
) -> Result<std::result::Result<std::path::PathBuf, String>> {
    use std::process::Command;
    for tool in ["node", "npm"] {
        if Command::new(tool).arg("--version").output().is_err() {
            return Ok(Err(format!("{tool} is not installed")));
        }
    }
    let dir = cache_dir().join(name);
    if !dir.join(".installed").exists() {
        std::fs::create_dir_all(&dir)?;
        std::fs::write(
            dir.join("package.json"),
            format!(r#"{{"name":"dbos-bench-{name}","private":true,"type":"module"}}"#),
        )?;
        let ok = Command::new("npm")
            .args(["install", "--silent", "--no-audit", "--no-fund"])
            .args(packages)
            .current_dir(&dir)
            .status()?;
        anyhow::ensure!(ok.success(), "npm install {} failed", packages.join(" "));
        std::fs::write(dir.join(".installed"), b"")?;
    }
    std::fs::write(dir.join(script.0), script.1)?;
    Ok(Ok(dir))
}

/// A virtualenv with DBOS for Python, made on first use; `None` when python3 is missing.
async fn peer_python() -> Result<Option<std::path::PathBuf>> {
    if tokio::process::Command::new("python3")
        .arg("--version")
        .output()
        .await
        .is_err()
    {
        return Ok(None);
    }
    let venv = cache_dir().join(format!("dbos-py-{PEER_VERSION}"));
    let python = venv.join("bin/python");
    if !venv.join(".installed").exists() {
        let ok = tokio::process::Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&venv)
            .status()
            .await?;
        anyhow::ensure!(ok.success(), "python3 -m venv failed; install python3-venv");
        let ok = tokio::process::Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .arg(format!("dbos=={PEER_VERSION}"))
            .status()
            .await?;
        anyhow::ensure!(ok.success(), "pip install dbos=={PEER_VERSION} failed");
        std::fs::write(venv.join(".installed"), b"")?;
    }
    Ok(Some(python))
}

/// Runs the same workflow workload with DBOS for Python against the same Postgres, beside ours.
pub(crate) async fn peer(env: &Env, plan: Plan) -> Result<Vec<Row>> {
    let Some(python) = peer_python().await? else {
        eprintln!("NOTICE: python3 is not installed; the peer suite (DBOS for Python) is skipped");
        return Ok(Vec::new());
    };
    let script = std::env::temp_dir().join(format!("dbos_peer_{}.py", std::process::id()));
    std::fs::write(&script, include_str!("../../peer/dbos_peer.py"))?;
    let peer_url = env.peer_url("bench_peer");
    let workloads: &[usize] = if plan.quick { &[1] } else { &[1, 8, 32] };
    let pb = bar(
        (workloads.len() * plan.repeats) as u64,
        "peer: DBOS for Python",
    );
    let mut rows = Vec::new();
    for &callers in workloads {
        let (mut theirs, mut ours, mut lats) = (Vec::new(), Vec::new(), Vec::new());
        let mut our_lats = Vec::new();
        for _ in 0..plan.repeats {
            let v = run_peer(
                tokio::process::Command::new(&python)
                    .arg(&script)
                    .arg(&peer_url)
                    .arg("3")
                    .arg(callers.to_string())
                    .arg(plan.run.as_secs_f64().to_string()),
                "the DBOS for Python workload",
            )
            .await?;
            let n = v["workflows"].as_f64().unwrap_or(0.0);
            theirs.push(n / v["seconds"].as_f64().unwrap_or(1.0));
            if let Some(l) = v["latencies_ms"].as_array() {
                lats.extend(l.iter().filter_map(|x| x.as_f64()));
            }
            let (n, l, took) = super::workflow::drive_steps(env, 3, callers, false, plan.run).await;
            ours.push(n as f64 / took.as_secs_f64());
            our_lats.extend(l);
            pb.inc(1);
        }
        let mut row = beside(
            callers,
            "",
            (&ours, &mut our_lats),
            (&theirs, &mut lats),
            format!("DBOS for Python {PEER_VERSION}, same Postgres, same run"),
        );
        if callers == 1 {
            row.paper = Some("DBOS Python ≈33/s, DBOS Rust SDK ≈165/s (earlier, 2-core)".into());
        }
        rows.push(row);
    }
    let _ = std::fs::remove_file(&script);
    pb.finish_and_clear();
    rows.extend(restate_rows(env, plan, workloads).await?);
    Ok(rows)
}

/// The same 3-step workload on Restate, beside ours at each concurrency, alternating.
async fn restate_rows(env: &Env, plan: Plan, workloads: &[usize]) -> Result<Vec<Row>> {
    let Some(restate) = super::restate::Restate::start().await? else {
        return Ok(Vec::new());
    };
    let pb = bar((workloads.len() * plan.repeats) as u64, "peer: Restate");
    let mut rows = Vec::new();
    for &callers in workloads {
        let (mut theirs, mut ours, mut lats, mut our_lats) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut cpu_per_invocation = Vec::new();
        for _ in 0..plan.repeats {
            let (client, url) = restate.invoker();
            let cpu_before = restate.cpu_ms();
            let (n, l, took) = drive(callers, plan.run, move || {
                let (client, url) = (client.clone(), url.clone());
                async move { super::restate::invoke_with(&client, &url).await }
            })
            .await;
            cpu_per_invocation.push((restate.cpu_ms() - cpu_before) / n.max(1) as f64);
            theirs.push(n as f64 / took.as_secs_f64());
            lats.extend(l);
            let (n, l, took) = super::workflow::drive_steps(env, 3, callers, false, plan.run).await;
            ours.push(n as f64 / took.as_secs_f64());
            our_lats.extend(l);
            pb.inc(1);
        }
        let mut row = beside(
            callers,
            ", beside Restate",
            (&ours, &mut our_lats),
            (&theirs, &mut lats),
            format!(
                "Restate {} (default durable settings), same machine, same run",
                super::restate::SERVER_VERSION
            ),
        );
        row.paper = Some("Restate 1.7 ≈90/190/280 invocations/s at 1/8/32 callers (2-core)".into());
        row.extra.insert(
            "peer_cpu_ms_per_invocation".into(),
            summarize(&cpu_per_invocation).0.into(),
        );
        rows.push(row);
    }
    pb.finish_and_clear();
    Ok(rows)
}

/// Our 3-step workflow row at `callers` (workload named with `suffix`) beside a peer's figures
/// from the same run: (rates, latencies) of ours and of theirs.
fn beside(
    callers: usize,
    suffix: &str,
    (ours, our_lats): (&[f64], &mut Vec<f64>),
    (theirs, their_lats): (&[f64], &mut Vec<f64>),
    baseline_name: String,
) -> Row {
    let (their_med, _, _) = summarize(theirs);
    let mut row = Row::new(
        "peer",
        format!(
            "3-step workflow, {callers} caller{}{suffix}",
            if callers == 1 { "" } else { "s" }
        ),
        ours,
        "workflows/s",
        ours.len(),
    )
    .at(format!("3-step workflow{suffix}"), callers as u32);
    row.baseline = Some(their_med);
    row.baseline_name = Some(baseline_name);
    row.ratio = Some(row.ours / their_med.max(f64::MIN_POSITIVE));
    row.p50_ms = Some(quantile(our_lats, 0.5));
    row.p99_ms = Some(quantile(our_lats, 0.99));
    row.extra
        .insert("peer_p50_ms".into(), quantile(their_lats, 0.5).into());
    row.extra
        .insert("peer_p99_ms".into(), quantile(their_lats, 0.99).into());
    row
}
