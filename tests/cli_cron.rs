//! `dbos cron ...` with two nodes up: one run per tick, pause, trigger, backfill exactly once,
//! and bad expressions refused.

mod support;

use std::time::Duration;

use dbos_kernel::testing::scratch_dir_for_cluster;
use support::{eventually, ok, path, run, sql_json, Node};

fn runs(dir: &std::path::Path) -> Vec<String> {
    sql_json(dir, "SELECT workflow_uuid FROM dbos.workflow_status WHERE schedule_name = 'tick' ORDER BY workflow_uuid")
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["workflow_uuid"].as_str().expect("id").to_owned())
        .collect()
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

    ok(&[
        "cron",
        "add",
        "tick",
        "* * * * * *",
        "--tz",
        "Europe/Paris",
        "--data-dir",
        d,
        "--",
        "sh",
        "-c",
        "echo tick",
    ]);
    eventually("a few ticks fired", || runs(&dir).len() >= 4);
    ok(&["cron", "pause", "tick", "--data-dir", d]);
    std::thread::sleep(Duration::from_millis(1500));
    let fired = runs(&dir);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(runs(&dir), fired, "a paused schedule fires nothing");
    // One run per tick, none missing, though both nodes fire every tick.
    let ticks: Vec<chrono::DateTime<chrono::Utc>> = fired
        .iter()
        .map(|id| {
            id.strip_prefix("sched-tick-")
                .expect("id")
                .parse()
                .expect("tick time")
        })
        .collect();
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
