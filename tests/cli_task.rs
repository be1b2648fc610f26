//! `dbos task ...` end to end: command tasks run by a real node, their output, exit codes,
//! timeouts and cancellation (no process left behind), and bad submissions.

mod support;

use dbos_kernel::testing::scratch_dir_for_cluster;
use nix::sys::signal::Signal;
use support::{dbos, eventually, ok, path, run, sql_json, Node};

use dbos_kernel::testing::process_gone as gone;

#[test]
fn command_tasks_stream_output_exit_codes_timeouts_and_cancels() {
    let scratch = scratch_dir_for_cluster();
    let dir = scratch.path().join("data");
    let _node = Node::boot(&dir, &[]);
    let d = path(&dir);

    // --wait streams both outputs and exits with the command's code.
    let out = run(&[
        "task",
        "submit",
        "--data-dir",
        d,
        "--id",
        "t-exit",
        "--wait",
        "--",
        "sh",
        "-c",
        "echo hello; echo oops >&2; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("oops\n"));
    let got: serde_json::Value =
        serde_json::from_str(&ok(&["task", "get", "t-exit", "--data-dir", d, "--json"]))
            .expect("json");
    assert_eq!(got[0]["status"], "ERROR");
    assert_eq!(got[0]["exit_code"], 7);
    assert_eq!(
        got[0]["argv"],
        serde_json::json!(["sh", "-c", "echo hello; echo oops >&2; exit 7"])
    );
    let logs = ok(&["task", "logs", "t-exit", "--data-dir", d]);
    assert_eq!(logs, "hello\n");
    // Its provenance: the command, who ran it and how it ended, and the streams it wrote.
    let prov: serde_json::Value = serde_json::from_str(&ok(&[
        "prov",
        "workflow",
        "t-exit",
        "--data-dir",
        d,
        "--json",
    ]))
    .expect("json");
    let command = prov
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["kind"] == "command")
        .unwrap_or_else(|| panic!("a command event: {prov}"));
    assert_eq!(command["step"], "run");
    assert_eq!(command["object"], "sh -c echo hello; echo oops >&2; exit 7");
    let detail: serde_json::Value =
        serde_json::from_str(command["detail"].as_str().expect("detail")).expect("json");
    assert_eq!(detail["exit_code"], 7);
    assert!(detail["user"].is_string(), "{detail}");
    assert!(command["node_id"].is_string(), "{command}");
    let out = run(&["prov", "workflow", "no-such", "--data-dir", d]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such"));
    let none = ok(&["prov", "file", "/nothing/here", "--data-dir", d]);
    assert!(none.contains("(0 rows)"), "{none}");

    // A program that does not exist fails the task clearly; the node lives on.
    let out = run(&[
        "task",
        "submit",
        "--data-dir",
        d,
        "--wait",
        "--",
        "/no/such/program",
    ]);
    assert_eq!(out.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/program"));
    let out = run(&[
        "task",
        "submit",
        "--data-dir",
        d,
        "--wait",
        "--env",
        "X=42",
        "--stdin",
        "in",
        "--",
        "sh",
        "-c",
        "cat; echo \" $X\"",
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "in 42\n");

    // A timeout stops the whole process group: exit 124 and no process left behind.
    let out = run(&[
        "task",
        "submit",
        "--data-dir",
        d,
        "--timeout",
        "2s",
        "--wait",
        "--",
        "sh",
        "-c",
        "sleep 300 & echo $!; wait",
    ]);
    assert_eq!(out.status.code(), Some(124));
    let bg: i32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("pid");
    eventually("the timed-out group is gone", || gone(bg));

    // Cancel kills a running task's group.
    let id = ok(&[
        "task",
        "submit",
        "--data-dir",
        d,
        "--",
        "sh",
        "-c",
        "sleep 300 & echo $!; wait",
    ]);
    let id = id.trim();
    let mut bg = 0;
    eventually("the task prints its child's pid", || {
        bg = ok(&["task", "logs", id, "--data-dir", d])
            .trim()
            .parse()
            .unwrap_or(0);
        bg > 0
    });
    ok(&["task", "cancel", id, "--data-dir", d]);
    let waited = run(&["task", "wait", id, "--data-dir", d]);
    assert_eq!(waited.status.code(), Some(130));
    eventually("the cancelled group is gone", || gone(bg));

    // From any SQL client.
    ok(&["sql", "--data-dir", d, "SELECT dbos.enqueue_workflow('dbos.command', 'default', ARRAY['{\"argv\":[\"echo\",\"hi\"]}'::json], workflow_id => 'from-sql')"]);
    let waited = run(&["task", "wait", "from-sql", "--data-dir", d]);
    assert_eq!(waited.status.code(), Some(0));
    assert_eq!(ok(&["task", "logs", "from-sql", "--data-dir", d]), "hi\n");

    // Huge output is cut at the limit with a marker, not buffered.
    let out = run(&[
        "task",
        "submit",
        "--data-dir",
        d,
        "--wait",
        "--",
        "sh",
        "-c",
        "head -c 17000000 /dev/zero | tr '\\0' x",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.len(), (16 << 20) + dbos_scheduler_marker().len());
    assert!(text.ends_with(&dbos_scheduler_marker()));

    // Bad submissions are refused before anything is stored.
    let before = sql_json(&dir, "SELECT count(*) AS n FROM os.tasks")[0]["n"].clone();
    for (args, says) in [
        (vec!["-q", "nope"], "no queue named"),
        (vec!["-p", "3000000000"], "not in 0..=2147483647"),
        (vec!["-p", "99999999999"], "not in 0..=2147483647"),
        (vec!["--cwd", "/tmp", "--env", "NOEQUALS"], "KEY=VALUE"),
        (vec!["--timeout", "0s"], "timeout"),
    ] {
        let mut a = vec!["task", "submit", "--data-dir", d];
        a.extend(args);
        a.extend(["--", "true"]);
        let out = run(&a);
        assert!(!out.status.success(), "{a:?} was refused");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(says),
            "{a:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let empty = run(&["task", "submit", "--data-dir", d, "--"]);
    assert!(!empty.status.success());
    assert_eq!(
        sql_json(&dir, "SELECT count(*) AS n FROM os.tasks")[0]["n"],
        before
    );

    // Deduplication: the second submission with a key in use is refused. The first runs
    // until cancelled, so its key is in use however slowly the second comes.
    let first = ok(&[
        "task",
        "submit",
        "--data-dir",
        d,
        "--dedup",
        "nightly",
        "--",
        "sleep",
        "600",
    ]);
    let dup = run(&[
        "task",
        "submit",
        "--data-dir",
        d,
        "--dedup",
        "nightly",
        "--",
        "sleep",
        "2",
    ]);
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already queued or running"));
    ok(&["task", "cancel", first.trim(), "--data-dir", d]);
}

fn dbos_scheduler_marker() -> String {
    dbos_scheduler::command::truncation_marker(16 << 20)
}

#[test]
fn a_task_lost_with_its_node_runs_again_unless_no_retry() {
    let scratch = scratch_dir_for_cluster();
    let dir = scratch.path().join("data");
    let d = path(&dir);
    let first = Node::boot(&dir, &[]);
    // Each run appends a line to a file; the first then waits to be killed mid-run.
    let shared = support::task_writable_dir(scratch.path());
    let marks = shared.join("runs");
    let script = format!(
        "echo run >> {m}; [ $(wc -l < {m}) -gt 1 ] || sleep 600",
        m = marks.display()
    );
    ok(&[
        "task",
        "submit",
        "--id",
        "again",
        "--data-dir",
        d,
        "--",
        "sh",
        "-c",
        &script,
    ]);
    let lost_marks = shared.join("lost-runs");
    // It also leaves a grandchild in the background: nothing of the command may outlive the
    // node that ran it.
    let pids = shared.join("lost-pids");
    let lost_script = format!(
        "sleep 600 & echo $$ $! > {pids}; echo run >> {marks}; wait",
        pids = pids.display(),
        marks = lost_marks.display()
    );
    ok(&[
        "task",
        "submit",
        "--id",
        "lost",
        "--no-retry",
        "--data-dir",
        d,
        "--",
        "sh",
        "-c",
        &lost_script,
    ]);
    // Each has written its line: `>>` creates the file before `echo` writes to it, so the file
    // alone does not prove the run was marked.
    let marked =
        |f: &std::path::Path| std::fs::read_to_string(f).is_ok_and(|t| t.ends_with("run\n"));
    eventually("both commands started", || {
        marked(&marks) && marked(&lost_marks)
    });
    first.kill9();
    let pids: Vec<i32> = std::fs::read_to_string(&pids)
        .expect("pids")
        .split_whitespace()
        .map(|p| p.parse().expect("pid"))
        .collect();
    assert_eq!(pids.len(), 2, "the shell and its background sleep");
    for pid in pids {
        eventually(&format!("process {pid} of the lost command ended"), || {
            dbos_kernel::testing::process_gone(pid)
        });
    }
    let _second = Node::boot(&dir, &[]);
    // At least once: the recovered task runs its command again and succeeds.
    assert_eq!(
        run(&["task", "wait", "again", "--data-dir", d])
            .status
            .code(),
        Some(0)
    );
    assert_eq!(
        std::fs::read_to_string(&marks)
            .expect("marks")
            .lines()
            .count(),
        2
    );
    // --no-retry: the loss is recorded instead, and the command does not run again.
    let lost = run(&["task", "wait", "lost", "--data-dir", d]);
    assert_eq!(lost.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&lost.stderr).contains("not run again"));
    assert_eq!(
        std::fs::read_to_string(&lost_marks)
            .expect("marks")
            .lines()
            .count(),
        1
    );
}

#[test]
fn tasks_run_unprivileged_and_without_the_nodes_secrets() {
    let scratch = scratch_dir_for_cluster();
    let dir = scratch.path().join("data");
    let d = path(&dir);
    let root = nix::unistd::Uid::effective().is_root();
    // A secret in the node's environment (libpq's password variable) that tasks must not see.
    let secret = [("PGPASSWORD", "hunter2")];
    let node = Node::boot_env(&dir, &[], &secret);
    let password = dir.join("password");
    assert!(
        password.exists(),
        "the data directory keeps its password file"
    );
    // The server's log may quote statements with passwords: the owner's only.
    use std::os::unix::fs::PermissionsExt;
    let log = std::fs::metadata(dir.join("postgres.log")).expect("the server's log");
    assert_eq!(log.permissions().mode() & 0o777, 0o600);
    // Who runs it, whether it can read the password file, and whether it got the secret.
    let script = format!(
        "id -un; cat {} >/dev/null 2>&1 && echo read || echo refused; echo \"pw=$PGPASSWORD\"",
        password.display()
    );
    let probe = |task_id: &str| {
        let out = dbos()
            .args(["task", "submit", "--data-dir", d, "--id", task_id, "--wait"])
            .args(["--", "sh", "-c", &script])
            .output()
            .expect("dbos runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let out = probe("who");
    if root {
        assert_eq!(out, "dbos-task\nrefused\npw=\n");
    } else {
        // CI runs as root: there the switch to the task user must be tested, not skipped.
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but not root: the switch to dbos-task cannot be tested"
        );
        eprintln!(
            "NOTICE: not root: tasks run as this user; the switch to dbos-task is not tested"
        );
        let me = nix::unistd::User::from_uid(nix::unistd::Uid::effective())
            .expect("user")
            .expect("exists")
            .name;
        assert_eq!(out, format!("{me}\nread\npw=\n"));
    }
    drop(node);
    if root {
        // Root is an explicit opt-in.
        let _node = Node::boot_env(&dir, &["--task-user", "root"], &secret);
        assert_eq!(probe("as-root"), "root\nread\npw=\n");
    } else {
        let refused = run(&["boot", "--data-dir", d, "--task-user", "root"]);
        assert!(!refused.status.success());
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains("only a node running as root"),
            "{}",
            String::from_utf8_lossy(&refused.stderr)
        );
    }
    let missing = run(&["boot", "--data-dir", d, "--task-user", "no-such-user-here"]);
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        err.contains("no-such-user-here") && err.lines().count() == 1,
        "{err}"
    );
}

/// A follower (`task submit --wait`, `task logs -f`) whose connections the server drops goes
/// on once the database answers again, missing and repeating nothing, and exits with the
/// command's code.
#[test]
fn followers_ride_out_dropped_connections() {
    use std::io::{BufRead, BufReader};
    let scratch = scratch_dir_for_cluster();
    let dir = scratch.path().join("data");
    let _node = Node::boot(&dir, &[]);
    let d = path(&dir);
    // In /tmp, which the task user can search (the scratch directory is private).
    let go = std::env::temp_dir().join(format!("dbos-follow-go-{}", std::process::id()));
    let _ = std::fs::remove_file(&go);
    let script = format!(
        "echo 1; while [ ! -e {} ]; do sleep 0.05; done; echo 2; exit 3",
        go.display()
    );
    let mut submit = dbos()
        .args(["task", "submit", "--data-dir", d, "--id", "ride", "--wait"])
        .args(["--", "sh", "-c", &script])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("dbos runs");
    let mut lines = BufReader::new(submit.stdout.take().expect("piped")).lines();
    assert_eq!(lines.next().expect("a line").expect("read"), "1");
    let mut logs = dbos()
        .args(["task", "logs", "-f", "--data-dir", d, "ride"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("dbos runs");
    let mut logged = BufReader::new(logs.stdout.take().expect("piped")).lines();
    assert_eq!(logged.next().expect("a line").expect("read"), "1");
    // Every client backend but this one: the followers', the node's.
    ok(&[
        "sql",
        "--data-dir",
        d,
        "--superuser",
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
         WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
    ]);
    std::fs::write(&go, b"").expect("go");
    let rest: Vec<String> = lines.map(|l| l.expect("read")).collect();
    assert_eq!(rest, ["2"]);
    assert_eq!(submit.wait().expect("wait").code(), Some(3));
    let rest: Vec<String> = logged.map(|l| l.expect("read")).collect();
    assert_eq!(rest, ["2"]);
    assert!(logs.wait().expect("wait").success());
    let _ = std::fs::remove_file(&go);
}

/// A node stopped (SIGSTOP) past its lease has no command running by the time its lease
/// expires: the watcher of the command's group hears no more from the node and kills the
/// group. Resumed, the node runs the task again rather than recording the kill.
#[test]
fn a_stalled_nodes_commands_die_before_its_lease_expires() {
    let scratch = scratch_dir_for_cluster();
    let dir = scratch.path().join("data");
    let node = Node::boot(&dir, &[]);
    let d = path(&dir);
    let pids = || -> Vec<i32> {
        let out = ok(&["task", "logs", "--data-dir", d, "stalled"]);
        out.lines().filter_map(|l| l.trim().parse().ok()).collect()
    };
    ok(&[
        "task",
        "submit",
        "--data-dir",
        d,
        "--id",
        "stalled",
        "--",
        "sh",
        "-c",
        "sleep 600 & echo $!; wait",
    ]);
    eventually("the command started", || pids().len() == 1);
    let first = pids()[0];
    node.signal(Signal::SIGSTOP);
    // The node's lease is 2 s and it pinged its watchers until it stopped: the group goes
    // while the node is still stopped (`eventually` fails unless it does).
    eventually("the stopped node's command is gone", || gone(first));
    node.signal(Signal::SIGCONT);
    eventually("the task ran again", || pids().len() == 2);
    assert_ne!(pids()[1], first);
    let status = sql_json(
        &dir,
        "SELECT status FROM dbos.workflow_status WHERE workflow_uuid = 'stalled'",
    );
    assert_eq!(status, serde_json::json!([{"status": "PENDING"}]));
    ok(&["task", "cancel", "--data-dir", d, "stalled"]);
    let again = pids()[1];
    eventually("the cancel stopped the command", || gone(again));
    node.signal(Signal::SIGINT);
    assert!(node.wait());
}
