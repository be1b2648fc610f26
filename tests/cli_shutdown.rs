//! Shutdown under faults: the database gone, Postgres restarted underneath, a second signal.

mod support;

use dbos_kernel::testing::{process_gone, scratch_dir_for_cluster};
use nix::sys::signal::Signal;
use support::{
    eventually, ok, path, pg_ctl_restart, postmaster_pid, process_alive, sql_json, Node,
};

#[test]
fn a_node_stops_within_its_drain_when_its_database_is_gone() {
    let scratch = scratch_dir_for_cluster();
    let dir = scratch.path().join("data");
    let node = Node::boot(&dir, &["--drain-timeout-ms", "2000"]);
    let pg = postmaster_pid(&dir).expect("postgres runs");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pg), Signal::SIGKILL).expect("kill -9");
    eventually("postgres is gone", || process_gone(pg));
    node.signal(Signal::SIGINT);
    // Bounded by Node::wait; before, the node retried the database for minutes.
    assert!(node.wait(), "the node stops cleanly without its database");
}

#[test]
fn a_node_stops_the_postgres_that_was_restarted_underneath_it() {
    let scratch = scratch_dir_for_cluster();
    let dir = scratch.path().join("data");
    let node = Node::boot(&dir, &[]);
    let before = postmaster_pid(&dir).expect("postgres runs");
    pg_ctl_restart(&dir);
    let after = postmaster_pid(&dir).expect("postgres runs again");
    assert_ne!(before, after, "a new postmaster");
    // The node keeps working on the restarted server.
    eventually("the node answers again", || {
        sql_json(&dir, "SELECT count(*) AS n FROM os.nodes WHERE alive")[0]["n"] == 1
    });
    node.signal(Signal::SIGINT);
    assert!(node.wait(), "the node stops cleanly");
    eventually("the restarted postmaster is stopped", || {
        process_gone(after)
    });
}

#[test]
fn a_second_signal_exits_at_once_during_the_drain() {
    let scratch = scratch_dir_for_cluster();
    let dir = scratch.path().join("data");
    // A drain longer than Node::wait allows: only the second signal can end it in time.
    let node = Node::boot(&dir, &["--drain-timeout-ms", "600000"]);
    let d = path(&dir);
    let id = ok(&["task", "submit", "--data-dir", d, "--", "sleep", "3600"]);
    let id = id.trim().to_owned();
    eventually("the task runs", || {
        sql_json(
            &dir,
            &format!("SELECT status FROM os.tasks WHERE task_id = '{id}'"),
        )[0]["status"]
            == "PENDING"
    });
    node.signal(Signal::SIGINT);
    eventually("the node drains", || {
        sql_json(&dir, "SELECT state FROM kernel.nodes")[0]["state"] == "draining"
    });
    node.signal(Signal::SIGINT);
    assert!(
        !node.wait(),
        "the second signal exits at once, with a failure status"
    );
    // What the node left running is taken over like a crash's: cancel the task so its
    // command stops (a command task's group dies with a cancel).
    let pg_up = postmaster_pid(&dir).is_some_and(process_alive);
    if pg_up {
        let _ = ok(&["task", "cancel", &id, "--data-dir", d]);
    }
}
