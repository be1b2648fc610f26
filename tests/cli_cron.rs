//! `dbos cron ...` with two nodes up: one run per tick, pause, trigger, backfill exactly once,
//! and bad expressions refused.

mod support;

use chrono::{DateTime, Utc};
use dbos_kernel::testing::scratch_dir_for_cluster;
use support::{eventually, ok, path, run, sql_json, Node};

fn runs_of(dir: &std::path::Path, schedule: &str) -> Vec<String> {
    sql_json(dir, &format!("SELECT workflow_uuid FROM dbos.workflow_status WHERE schedule_name = '{schedule}' ORDER BY workflow_uuid"))
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["workflow_uuid"].as_str().expect("id").to_owned())
        .collect()
}

fn runs(dir: &std::path::Path) -> Vec<String> {
    runs_of(dir, "tick")
}

/// The tick a run of `schedule` fired for, from its ID (`sched-SCHEDULE-<tick>`).
fn tick_of(schedule: &str, id: &str) -> DateTime<Utc> {
    id.strip_prefix(&format!("sched-{schedule}-"))
        .expect("id")
        .parse()
        .expect("tick time")
}

/// Waits until the never-paused schedule `beat` (every second) has fired two ticks later than
/// `after`. A cron pass fires only the latest tick it has reached, so each of those came from
/// its own pass, which read the schedules after `after`: two cron passes saw everything
/// committed before `after`.
fn two_cron_passes_after(dir: &std::path::Path, after: DateTime<Utc>) {
    eventually("two cron passes after the pause", || {
        runs_of(dir, "beat")
            .iter()
            .filter(|id| tick_of("beat", id) > after)
            .count()
            >= 2
    });
}

#[test]
fn cron_fires_once_per_tick_across_nodes_and_pauses_triggers_and_backfills() {
    let scratch = scratch_dir_for_cluster();
    let dir = scratch.path().join("data");
    let d = path(&dir);
    let _a = Node::boot(&dir, &[]);
    let _b = Node::boot(&dir, &[]);

    for (expr, tz, says) in [
        ("61 * * * * *", None, "cron expression"),
        ("* * *", None, "6 fields"),
        ("* * * * * *", Some("Mars/Base"), "time zone"),
    ] {
        let mut args = vec!["cron", "add", "bad", expr, "--data-dir", d];
        if let Some(tz) = tz {
            args.extend(["--tz", tz]);
        }
        args.extend(["--", "true"]);
        let out = run(&args);
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(says),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // With `--backfill`, a pass delayed past a tick still enqueues it: a slow machine leaves
    // no gap between the ticks counted below.
    ok(&[
        "cron",
        "add",
        "tick",
        "* * * * * *",
        "--tz",
        "Europe/Paris",
        "--backfill",
        "--data-dir",
        d,
        "--",
        "sh",
        "-c",
        "echo tick",
    ]);
    // The proof that cron passes ran while "tick" is paused: a schedule that keeps firing.
    ok(&[
        "cron",
        "add",
        "beat",
        "* * * * * *",
        "--data-dir",
        d,
        "--",
        "true",
    ]);
    eventually("a few ticks fired", || runs(&dir).len() >= 4);
    ok(&["cron", "pause", "tick", "--data-dir", d]);
    // A pass that read the schedules before the pause may still enqueue its tick: settle.
    two_cron_passes_after(&dir, Utc::now());
    let fired = runs(&dir);
    two_cron_passes_after(&dir, Utc::now());
    assert_eq!(runs(&dir), fired, "a paused schedule fires nothing");
    ok(&["cron", "rm", "beat", "--data-dir", d]);
    // One run per tick, none missing, though both nodes fire every tick.
    let ticks: Vec<DateTime<Utc>> = fired.iter().map(|id| tick_of("tick", id)).collect();
    let span = (*ticks.last().expect("last") - ticks[0]).num_seconds() + 1;
    assert_eq!(
        ticks.len() as i64,
        span,
        "one run for every second between the first and last tick: {fired:?}"
    );
    eventually("every run ran its command", || {
        sql_json(&dir, "SELECT count(*) AS n FROM os.tasks WHERE task_id LIKE 'sched-tick-%' AND status = 'SUCCESS'")[0]["n"].as_i64()
            == Some(fired.len() as i64)
    });
    let out = ok(&["task", "logs", &fired[0], "--data-dir", d]);
    assert_eq!(out, "tick\n");

    // Trigger runs once now, outside the ticks.
    let id = ok(&["cron", "trigger", "tick", "--data-dir", d]);
    assert!(id.trim().starts_with("sched-tick-trigger-"), "{id}");
    assert_eq!(
        run(&["task", "wait", id.trim(), "--data-dir", d])
            .status
            .code(),
        Some(0)
    );

    // Backfill a past range: every tick once, and a second backfill adds nothing.
    let from = (ticks[0] - chrono::Duration::seconds(10)).to_rfc3339();
    let to = (ticks[0] - chrono::Duration::seconds(5)).to_rfc3339();
    let first: serde_json::Value = serde_json::from_str(&ok(&[
        "cron",
        "backfill",
        "tick",
        "--from",
        &from,
        "--to",
        &to,
        "--json",
        "--data-dir",
        d,
    ]))
    .expect("json");
    assert_eq!(first["enqueued"], 5);
    let again: serde_json::Value = serde_json::from_str(&ok(&[
        "cron",
        "backfill",
        "tick",
        "--from",
        &from,
        "--to",
        &to,
        "--json",
        "--data-dir",
        d,
    ]))
    .expect("json");
    assert_eq!(again["enqueued"], 0);

    let listed: serde_json::Value =
        serde_json::from_str(&ok(&["cron", "list", "--json", "--data-dir", d])).expect("json");
    assert_eq!(listed[0]["status"], "PAUSED");
    assert_eq!(listed[0]["cron_timezone"], "Europe/Paris");
    ok(&["cron", "rm", "tick", "--data-dir", d]);
    assert!(!run(&["cron", "rm", "tick", "--data-dir", d])
        .status
        .success());
}
