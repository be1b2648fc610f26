//! Crash recovery with the real binary: SIGKILL the node during a step, before a
//! transaction's commit, and after it; a new node finishes the workflow with every completed
//! step run once and the transaction's effect present exactly once.

mod support;

use std::path::Path;

use dbos_kernel::testing::scratch_dir_for_cluster;
use nix::sys::signal::Signal;
use support::{eventually, path, sql_json, Node};

/// Where the node is killed.
#[derive(Clone, Copy, Debug)]
enum Point {
    /// In the first step, before its checkpoint.
    DuringStep,
    /// Inside the transaction, before its commit.
    BeforeCommit,
    /// After the transaction committed (in the durable sleep).
    AfterCommit,
}

fn one(dir: &Path, query: &str) -> serde_json::Value {
    sql_json(dir, query)[0].clone()
}

fn crash_at(point: Point) {
    let scratch = scratch_dir_for_cluster();
    let dir = scratch.path().join("data");
    let first = Node::boot(&dir, &[]);
    let wf = format!("crash-{point:?}");
    support::ok(&[
        "sql",
        "--data-dir",
        path(&dir),
        &format!("SELECT dbos.enqueue_workflow('dbos.demo', 'default', ARRAY['3000'::json], workflow_id => '{wf}')"),
    ]);
    let ops = |dir: &Path| {
        one(
            dir,
            &format!(
                "SELECT count(*) AS n FROM dbos.operation_outputs WHERE workflow_uuid = '{wf}'"
            ),
        )["n"]
            .as_i64()
            .expect("count")
    };
    match point {
        Point::DuringStep => eventually("the first step is running", || {
            one(&dir, "SELECT count(*) AS n FROM pg_tables WHERE tablename = 'dbos_demo_runs'")["n"] == 1
                && one(&dir, &format!("SELECT count(*) AS n FROM public.dbos_demo_runs WHERE workflow_id = '{wf}'"))["n"] == 1
                && ops(&dir) == 0
        }),
        Point::BeforeCommit => eventually("the transaction waits before its commit", || {
            one(&dir, "SELECT count(*) AS n FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%' AND state = 'active'")["n"] == 1
        }),
        Point::AfterCommit => eventually("the workflow sleeps after the transaction", || {
            ops(&dir) == 3
        }),
    }
    first.kill9();
    // What the dead node recorded is final once none of its backends is in a transaction (a
    // commit already on its way when the kill came still lands, and the demo pauses between
    // steps for 3 s, not forever).
    eventually("the killed node's transactions have ended", || {
        one(&dir, "SELECT count(*) AS n FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND state <> 'idle'")["n"] == 0
    });
    let recorded_before = ops(&dir);

    let second = Node::boot(&dir, &[]);
    eventually("the workflow finishes on the new node", || {
        one(
            &dir,
            &format!("SELECT status FROM dbos.workflow_status WHERE workflow_uuid = '{wf}'"),
        )["status"]
            == "SUCCESS"
    });
    let row = one(
        &dir,
        &format!(
            "SELECT COALESCE(o.output, s.output) AS output, s.executor_id, s.recovery_attempts,
                    (SELECT count(*) FROM public.dbos_demo_ledger WHERE workflow_id = '{wf}') AS deposits,
                    (SELECT count(*) FROM public.dbos_demo_runs WHERE workflow_id = '{wf}' AND step = 'fetch') AS fetches,
                    (SELECT count(*) FROM public.dbos_demo_runs WHERE workflow_id = '{wf}' AND step = 'report') AS reports
             FROM dbos.workflow_status s LEFT JOIN dbos.workflow_output o USING (workflow_uuid)
             WHERE s.workflow_uuid = '{wf}'"
        ),
    );
    assert_eq!(
        row["output"], "\"deposited 42, balance 42\"",
        "{point:?}: same output"
    );
    assert_eq!(row["executor_id"], second.node_id.as_str());
    assert_eq!(row["recovery_attempts"], 2);
    assert_eq!(
        row["deposits"], 1,
        "{point:?}: the transaction's effect is there exactly once"
    );
    assert_eq!(row["reports"], 1, "{point:?}: the last step ran once");
    let fetches = row["fetches"].as_i64().expect("count");
    if recorded_before >= 1 {
        assert_eq!(fetches, 1, "{point:?}: a completed step is not run again");
    } else {
        assert_eq!(
            fetches, 2,
            "{point:?}: the interrupted step ran again, once"
        );
    }
    let steps = sql_json(&dir, &format!(
        "SELECT function_id, function_name FROM dbos.operation_outputs WHERE workflow_uuid = '{wf}' ORDER BY 1"
    ));
    assert_eq!(
        steps,
        serde_json::json!([
            {"function_id": 1, "function_name": "fetch"},
            {"function_id": 2, "function_name": "deposit"},
            {"function_id": 3, "function_name": "DBOS.sleep"},
            {"function_id": 4, "function_name": "report"}
        ])
    );
    second.signal(Signal::SIGINT);
    assert!(second.wait());
}

#[test]
fn sigkill_during_a_step_reruns_only_that_step() {
    crash_at(Point::DuringStep);
}

#[test]
fn sigkill_before_a_transaction_commits_leaves_its_effect_exactly_once() {
    crash_at(Point::BeforeCommit);
}

#[test]
fn sigkill_after_a_transaction_commits_does_not_repeat_it() {
    crash_at(Point::AfterCommit);
}
