//! `dbos wf ...` and `dbos demo` end to end with the real binary.

mod support;

use dbos_kernel::testing::scratch_dir_for_cluster;
use nix::sys::signal::Signal;
use support::{eventually, ok, path, run, sql_json, Node};

#[test]
fn wf_commands_list_inspect_cancel_resume_fork_and_delete() {
    let scratch = scratch_dir_for_cluster();
    let dir = scratch.path().join("data");
    let node = Node::boot(&dir, &[]);
    let d = path(&dir);
    ok(&["sql", "--data-dir", d, "SELECT dbos.enqueue_workflow('dbos.demo', 'default', ARRAY['1'::json], workflow_id => 'cli-1')"]);
    eventually("cli-1 succeeds", || {
        sql_json(
            &dir,
            "SELECT status FROM dbos.workflow_status WHERE workflow_uuid = 'cli-1'",
        )[0]["status"]
            == "SUCCESS"
    });
    let list: serde_json::Value = serde_json::from_str(&ok(&[
        "wf",
        "list",
        "--data-dir",
        d,
        "--json",
        "-S",
        "SUCCESS",
    ]))
    .expect("json");
    assert_eq!(list[0]["workflow_id"], "cli-1");
    assert_eq!(list[0]["output"], "\"deposited 42, balance 42\"");
    let table = ok(&["wf", "list", "--data-dir", d, "-n", "dbos.demo"]);
    assert!(
        table.contains("cli-1") && table.contains("(1 row)"),
        "{table}"
    );
    let get: serde_json::Value =
        serde_json::from_str(&ok(&["wf", "get", "cli-1", "--data-dir", d, "--json"]))
            .expect("json");
    assert_eq!(get[0]["status"], "SUCCESS");
    let steps: serde_json::Value =
        serde_json::from_str(&ok(&["wf", "steps", "cli-1", "--data-dir", d, "--json"]))
            .expect("json");
    let names: Vec<&str> = steps
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|s| s["function_name"].as_str())
        .collect();
    assert_eq!(names, vec!["fetch", "deposit", "DBOS.sleep", "report"]);

    let forked: serde_json::Value = serde_json::from_str(&ok(&[
        "wf",
        "fork",
        "cli-1",
        "--step",
        "4",
        "--forked-id",
        "cli-2",
        "--data-dir",
        d,
        "--json",
    ]))
    .expect("json");
    assert_eq!(forked["workflow_id"], "cli-2");
    eventually("the fork succeeds", || {
        sql_json(
            &dir,
            "SELECT status FROM dbos.workflow_status WHERE workflow_uuid = 'cli-2'",
        )[0]["status"]
            == "SUCCESS"
    });
    let deposits = sql_json(
        &dir,
        "SELECT count(*) AS n FROM public.dbos_demo_ledger WHERE workflow_id = 'cli-2'",
    );
    assert_eq!(deposits[0]["n"], 0, "the fork reused the recorded deposit");

    // Replay: the recorded histories fit the code; a changed one does not; nothing is written.
    let out = ok(&["wf", "replay", "cli-1", "cli-2", "--data-dir", d]);
    assert!(
        out.lines().count() == 2 && out.lines().all(|l| l.contains(": consistent (")),
        "{out}"
    );
    let rows = "SELECT (SELECT count(*) FROM dbos.operation_outputs) AS ops, \
                (SELECT count(*) FROM public.dbos_demo_ledger) AS deposits, \
                (SELECT count(*) FROM public.dbos_demo_runs) AS runs";
    let before = sql_json(&dir, rows);
    ok(&["sql", "--data-dir", d, "UPDATE dbos.operation_outputs SET function_name = 'fetch_v0' WHERE workflow_uuid = 'cli-2' AND function_id = 1"]);
    let out = run(&[
        "wf",
        "replay",
        "--all",
        "--name",
        "dbos.demo",
        "--data-dir",
        d,
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1), "a divergence fails the replay");
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 of 2 workflows did not replay"));
    let reports: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(reports[0]["workflow_id"], "cli-1");
    assert_eq!(reports[0]["verdict"], "consistent");
    assert_eq!(reports[1]["workflow_id"], "cli-2");
    assert_eq!(reports[1]["verdict"], "diverged");
    assert_eq!(reports[1]["function_id"], 1);
    assert_eq!(reports[1]["recorded"], "fetch_v0");
    assert_eq!(reports[1]["called"], "fetch");
    assert_eq!(sql_json(&dir, rows), before, "a replay writes nothing");
    let out = run(&["wf", "replay", "--data-dir", d]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("name workflow IDs"));

    // A long-sleeping workflow: cancel, then resume.
    ok(&["sql", "--data-dir", d, "SELECT dbos.enqueue_workflow('dbos.demo', 'default', ARRAY['60000'::json], workflow_id => 'cli-3')"]);
    eventually("cli-3 is running", || {
        sql_json(
            &dir,
            "SELECT status FROM dbos.workflow_status WHERE workflow_uuid = 'cli-3'",
        )[0]["status"]
            == "PENDING"
    });
    let cancelled: serde_json::Value =
        serde_json::from_str(&ok(&["wf", "cancel", "cli-3", "--data-dir", d, "--json"]))
            .expect("json");
    assert_eq!(cancelled["cancelled"], serde_json::json!(["cli-3"]));
    ok(&["wf", "resume", "cli-3", "--data-dir", d]);
    let s = sql_json(
        &dir,
        "SELECT status, queue_name FROM dbos.workflow_status WHERE workflow_uuid = 'cli-3'",
    );
    assert!(
        s[0]["status"] == "ENQUEUED" || s[0]["status"] == "PENDING",
        "{s}"
    );
    let out = run(&["wf", "resume", "cli-1", "--data-dir", d]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a finished workflow cannot be resumed"
    );
    ok(&["wf", "delete", "cli-2", "--data-dir", d]);
    let out = run(&["wf", "get", "cli-2", "--data-dir", d]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no workflow has ID"));
    let out = run(&["wf", "list", "--data-dir", d, "-S", "DONE"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown status"));
    let out = run(&["wf", "list", "--data-dir", d, "-t", "yesterday"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("RFC 3339"));

    // gc: refused without a policy; none of these workflows is an hour old; with an age of 0
    // every ended one goes. The resumed sleeper is cancelled again, to end.
    ok(&["wf", "cancel", "cli-3", "--data-dir", d]);
    let out = run(&["wf", "gc", "--data-dir", d]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--older-than"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["wf", "gc", "--keep", "0", "--data-dir", d]);
    assert!(!out.status.success());
    eventually("every workflow ended", || {
        sql_json(
            &dir,
            "SELECT count(*) AS n FROM dbos.workflow_status
             WHERE status IN ('ENQUEUED', 'PENDING', 'DELAYED')",
        )[0]["n"]
            == 0
    });
    let all = sql_json(&dir, "SELECT count(*) AS n FROM dbos.workflow_status")[0]["n"].clone();
    assert!(all.as_i64() > Some(0), "{all}");
    let gc = |age: &str| -> serde_json::Value {
        serde_json::from_str(&ok(&[
            "wf",
            "gc",
            "--older-than",
            age,
            "--data-dir",
            d,
            "--json",
        ]))
        .expect("json")
    };
    assert_eq!(gc("1h")["deleted"], 0);
    let dry: serde_json::Value = serde_json::from_str(&ok(&[
        "wf",
        "gc",
        "--keep",
        "1",
        "--dry-run",
        "--data-dir",
        d,
        "--json",
    ]))
    .expect("json");
    assert_eq!(dry["would_delete"].as_i64(), all.as_i64().map(|n| n - 1));
    assert_eq!(gc("0s")["deleted"], all);
    assert_eq!(
        sql_json(&dir, "SELECT count(*) AS n FROM dbos.workflow_status")[0]["n"],
        0
    );
    node.signal(Signal::SIGINT);
    assert!(node.wait());
}

#[test]
fn demo_kills_a_node_mid_workflow_and_the_next_one_finishes_it() {
    let scratch = scratch_dir_for_cluster();
    let dir = scratch.path().join("data");
    let out = ok(&["demo", "--data-dir", path(&dir), "--pause-ms", "1000"]);
    assert!(out.contains("kill -9") && out.contains("SUCCESS"), "{out}");
    let runs = sql_json_after_demo(&dir);
    assert_eq!(
        runs,
        serde_json::json!([{"step": "fetch", "n": 1}, {"step": "report", "n": 1}])
    );
}

/// The demo stops its cluster; boot a node briefly to read what it left.
fn sql_json_after_demo(dir: &std::path::Path) -> serde_json::Value {
    let node = Node::boot(dir, &[]);
    let v = sql_json(
        dir,
        "SELECT step, count(*) AS n FROM public.dbos_demo_runs GROUP BY step ORDER BY step",
    );
    node.signal(Signal::SIGINT);
    assert!(node.wait());
    v
}
