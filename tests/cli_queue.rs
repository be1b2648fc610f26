//! Queues across three node processes: a global and a per-node limit hold while all three
//! claim at once; pause/resume/rm from the CLI; and the work of a node killed with SIGKILL is
//! finished by another node after the dead node's lease, every completed step once.

mod support;

use dbos_kernel::testing::scratch_dir_for_cluster;
use support::{eventually, ok, path, run, sql_json, Node};

/// A label each node has and no other node: node `i` boots with `NODE_LABELS[i]`.
const NODE_LABELS: [&str; 3] = ["gpu=true", "zone=b", "rack=c"];

/// Submits one task pinned to each node (by its label) and waits for all three: every node's
/// dispatcher has then run a claim that began after everything submitted before this call
/// had committed. What is still ENQUEUED afterwards, every node looked at and left.
fn every_node_claims_after(d: &str, tag: &str) {
    for (i, label) in NODE_LABELS.iter().enumerate() {
        ok(&[
            "task",
            "submit",
            "--label",
            label,
            "--id",
            &format!("{tag}-{i}"),
            "--data-dir",
            d,
            "--",
            "true",
        ]);
    }
    for i in 0..NODE_LABELS.len() {
        assert_eq!(
            run(&["task", "wait", &format!("{tag}-{i}"), "--data-dir", d])
                .status
                .code(),
            Some(0),
            "node {i} claimed its task"
        );
    }
}

#[test]
fn limits_hold_across_three_nodes_and_a_killed_nodes_work_moves_elsewhere() {
    let scratch = scratch_dir_for_cluster();
    let dir = scratch.path().join("data");
    let d = path(&dir);
    let nodes: Vec<Node> = NODE_LABELS
        .iter()
        .map(|label| Node::boot(&dir, &["--label", label]))
        .collect();

    ok(&[
        "queue",
        "create",
        "q2",
        "--concurrency",
        "2",
        "--worker-concurrency",
        "1",
        "--data-dir",
        d,
    ]);
    let bad = run(&[
        "queue",
        "create",
        "q0",
        "--concurrency",
        "0",
        "--data-dir",
        d,
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("at least 1"));
    // Each run appends "+ NODE_PID" when its command starts and "- NODE_PID" when it ends (the
    // node is the command's parent). A command starts after its claim committed and ends
    // before its outcome is written, so the file's running counts never exceed the PENDING
    // counts the limits bound: an exact check, with no timestamps of different transactions
    // compared.
    let log = support::task_writable_dir(scratch.path()).join("q2-runs");
    let script = format!(
        "echo \"+ $PPID\" >> {log}; sleep 0.3; echo \"- $PPID\" >> {log}",
        log = log.display()
    );
    for i in 0..8 {
        ok(&[
            "task",
            "submit",
            "-q",
            "q2",
            "--id",
            &format!("q2-{i}"),
            "--data-dir",
            d,
            "--",
            "sh",
            "-c",
            &script,
        ]);
    }
    for i in 0..8 {
        let w = run(&["task", "wait", &format!("q2-{i}"), "--data-dir", d]);
        assert_eq!(w.status.code(), Some(0));
    }
    // Never more than 2 at once, never more than 1 at once on one node.
    let lines = std::fs::read_to_string(&log).expect("the runs' log");
    let (mut all, mut peak_all) = (0i32, 0i32);
    let mut on: std::collections::HashMap<&str, i32> = Default::default();
    for line in lines.lines() {
        let (sign, pid) = line.split_once(' ').expect("a log line");
        assert!(
            nodes.iter().any(|n| n.child.id().to_string() == pid),
            "{pid} is a node's pid"
        );
        let delta = if sign == "+" { 1 } else { -1 };
        all += delta;
        peak_all = peak_all.max(all);
        let mine = on.entry(pid).or_default();
        *mine += delta;
        assert!(*mine <= 1, "at most 1 at once on node pid {pid}:\n{lines}");
    }
    assert_eq!(
        lines.lines().count(),
        16,
        "every run started and ended once"
    );
    assert!(peak_all <= 2, "at most 2 at once across nodes:\n{lines}");
    let rows = sql_json(
        &dir,
        "SELECT executor_id FROM dbos.workflow_status WHERE workflow_uuid LIKE 'q2-%'",
    );
    let executors: Vec<String> = rows
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["executor_id"].as_str().expect("node").to_owned())
        .collect();
    assert_eq!(executors.len(), 8);
    let used: std::collections::HashSet<&str> = executors.iter().map(String::as_str).collect();
    assert!(
        used.len() >= 2,
        "the queue's work was spread over nodes: {used:?}"
    );

    // os.nodes shows each node's load.
    let load = sql_json(
        &dir,
        "SELECT node_id, running, slots FROM os.nodes WHERE alive",
    );
    assert_eq!(load.as_array().expect("rows").len(), 3);
    assert!(load
        .as_array()
        .expect("rows")
        .iter()
        .all(|n| n["running"] == 0 && n["slots"].as_i64() > Some(0)));

    // Placement: tasks that need a label run only where it is; labels no node has wait, and
    // say why.
    for i in 0..4 {
        ok(&[
            "task",
            "submit",
            "--label",
            "gpu=true",
            "--id",
            &format!("gpu-{i}"),
            "--data-dir",
            d,
            "--",
            "true",
        ]);
    }
    for i in 0..4 {
        assert_eq!(
            run(&["task", "wait", &format!("gpu-{i}"), "--data-dir", d])
                .status
                .code(),
            Some(0)
        );
    }
    let on = sql_json(
        &dir,
        "SELECT DISTINCT executor_id FROM dbos.workflow_status WHERE workflow_uuid LIKE 'gpu-%'",
    );
    assert_eq!(on.as_array().expect("rows").len(), 1);
    assert_eq!(on[0]["executor_id"], nodes[0].node_id.as_str());
    ok(&[
        "task",
        "submit",
        "--label",
        "tpu=yes",
        "--id",
        "no-tpu",
        "--data-dir",
        d,
        "--",
        "true",
    ]);
    ok(&[
        "queue",
        "create",
        "eu",
        "--require-label",
        "zone=eu",
        "--data-dir",
        d,
    ]);
    ok(&[
        "task",
        "submit",
        "-q",
        "eu",
        "--id",
        "in-eu",
        "--data-dir",
        d,
        "--",
        "true",
    ]);
    every_node_claims_after(d, "looked-at-labels");
    for id in ["no-tpu", "in-eu"] {
        let t: serde_json::Value =
            serde_json::from_str(&ok(&["task", "get", id, "--json", "--data-dir", d]))
                .expect("json");
        assert_eq!(t[0]["status"], "ENQUEUED", "{id} waits");
        assert!(
            t[0]["waiting_for"]
                .as_str()
                .is_some_and(|w| w.contains("labels")),
            "{t}"
        );
    }
    assert!(
        status_lists_waiting(d, "no-tpu"),
        "dbos status says what waits and why"
    );
    // Locality: tasks preferring zone=b go to the node in zone b; a zone no node has runs anywhere.
    ok(&[
        "queue",
        "create",
        "near",
        "--policy",
        "locality",
        "--locality-label",
        "zone",
        "--data-dir",
        d,
    ]);
    let no_label = run(&[
        "queue",
        "update",
        "near",
        "--policy",
        "locality",
        "--data-dir",
        d,
    ]);
    assert!(
        !no_label.status.success(),
        "the locality policy needs its label"
    );
    for i in 0..4 {
        ok(&[
            "task",
            "submit",
            "-q",
            "near",
            "--prefer",
            "zone=b",
            "--id",
            &format!("near-{i}"),
            "--data-dir",
            d,
            "--",
            "true",
        ]);
    }
    ok(&[
        "task",
        "submit",
        "-q",
        "near",
        "--prefer",
        "zone=nowhere",
        "--id",
        "far",
        "--data-dir",
        d,
        "--",
        "true",
    ]);
    for id in ["near-0", "near-1", "near-2", "near-3", "far"] {
        assert_eq!(
            run(&["task", "wait", id, "--data-dir", d]).status.code(),
            Some(0)
        );
    }
    let on = sql_json(
        &dir,
        "SELECT DISTINCT executor_id FROM dbos.workflow_status WHERE workflow_uuid LIKE 'near-%'",
    );
    assert_eq!(on.as_array().expect("rows").len(), 1);
    assert_eq!(on[0]["executor_id"], nodes[1].node_id.as_str());
    ok(&[
        "queue",
        "update",
        "eu",
        "--require-label",
        "gpu=true",
        "--policy",
        "least-loaded",
        "--data-dir",
        d,
    ]);
    assert_eq!(
        run(&["task", "wait", "in-eu", "--data-dir", d])
            .status
            .code(),
        Some(0)
    );
    assert_eq!(
        sql_json(
            &dir,
            "SELECT executor_id FROM dbos.workflow_status WHERE workflow_uuid = 'in-eu'"
        )[0]["executor_id"],
        nodes[0].node_id.as_str()
    );

    // Pause, resume, list, rm.
    ok(&["queue", "pause", "q2", "--data-dir", d]);
    ok(&[
        "task",
        "submit",
        "-q",
        "q2",
        "--id",
        "paused-1",
        "--data-dir",
        d,
        "--",
        "true",
    ]);
    let listed: serde_json::Value =
        serde_json::from_str(&ok(&["queue", "list", "--json", "--data-dir", d])).expect("json");
    let q2 = listed
        .as_array()
        .expect("rows")
        .iter()
        .find(|q| q["queue"] == "q2")
        .expect("q2 listed")
        .clone();
    assert_eq!(q2["paused"], true);
    assert_eq!(q2["concurrency"], 2);
    every_node_claims_after(d, "looked-at-paused");
    assert_eq!(
        sql_json(
            &dir,
            "SELECT status FROM dbos.workflow_status WHERE workflow_uuid = 'paused-1'"
        )[0]["status"],
        "ENQUEUED"
    );
    // It says why it waits, and `dbos status` lists it.
    assert_eq!(
        sql_json(
            &dir,
            "SELECT waiting_for FROM os.tasks WHERE task_id = 'paused-1'"
        ),
        serde_json::json!([{"waiting_for": "its queue is paused (dbos queue resume)"}])
    );
    assert!(status_lists_waiting(d, "paused-1"));
    ok(&["queue", "resume", "q2", "--data-dir", d]);
    assert_eq!(
        run(&["task", "wait", "paused-1", "--data-dir", d])
            .status
            .code(),
        Some(0)
    );
    // A fork pinned to a version no node runs says so.
    ok(&[
        "wf",
        "fork",
        "paused-1",
        "-f",
        "pinned-1",
        "-v",
        "no-such-version",
        "--data-dir",
        d,
    ]);
    assert_eq!(
        sql_json(
            &dir,
            "SELECT waiting_for FROM os.tasks WHERE task_id = 'pinned-1'"
        ),
        serde_json::json!([{
            "waiting_for": "it is pinned to application version no-such-version, not the latest"
        }])
    );
    ok(&["wf", "delete", "pinned-1", "--data-dir", d]);
    ok(&["queue", "rm", "q2", "--data-dir", d]);
    assert!(!run(&["queue", "rm", "default", "--data-dir", d])
        .status
        .success());

    // A node dies mid-workflow; another finishes the work after the dead node's lease.
    ok(&["sql", "--data-dir", d, "SELECT dbos.enqueue_workflow('dbos.demo', 'default', ARRAY['3000'::json], workflow_id => 'moved')"]);
    let mut runner = String::new();
    eventually("the demo is running", || {
        let r = &sql_json(
            &dir,
            "SELECT status, executor_id FROM dbos.workflow_status WHERE workflow_uuid = 'moved'",
        )[0];
        runner = r["executor_id"].as_str().unwrap_or_default().to_owned();
        r["status"] == "PENDING"
    });
    let mut nodes = nodes;
    let i = nodes
        .iter()
        .position(|n| n.node_id == runner)
        .expect("the runner is one of ours");
    nodes.remove(i).kill9();
    eventually("another node finishes the demo", || {
        sql_json(
            &dir,
            "SELECT status FROM dbos.workflow_status WHERE workflow_uuid = 'moved'",
        )[0]["status"]
            == "SUCCESS"
    });
    let done = &sql_json(&dir, "SELECT s.executor_id, COALESCE(o.output, s.output) AS output FROM dbos.workflow_status s LEFT JOIN dbos.workflow_output o USING (workflow_uuid) WHERE workflow_uuid = 'moved'")[0];
    assert_ne!(done["executor_id"], runner.as_str());
    assert_eq!(
        done["output"], "\"deposited 42, balance 42\"",
        "the transaction's effect is there once"
    );
    let dead = &sql_json(
        &dir,
        &format!("SELECT state FROM kernel.nodes WHERE node_id = '{runner}'"),
    )[0];
    assert_eq!(dead["state"], "dead");
    // Steps completed before the kill ran once; only the interrupted one may have run twice.
    let runs = sql_json(&dir, "SELECT step, count(*) AS n FROM public.dbos_demo_runs WHERE workflow_id = 'moved' GROUP BY step");
    let twice: Vec<&serde_json::Value> = runs
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| r["n"].as_i64() > Some(1))
        .collect();
    assert!(
        twice.len() <= 1,
        "at most the interrupted step ran again: {runs}"
    );
}

/// Whether `dbos status` lists task `id` among the tasks waiting for a node.
fn status_lists_waiting(d: &str, id: &str) -> bool {
    let status: serde_json::Value =
        serde_json::from_str(&ok(&["status", "--json", "--data-dir", d])).expect("json");
    status["waiting"]
        .as_array()
        .expect("waiting")
        .iter()
        .any(|t| t["task_id"] == id)
}
