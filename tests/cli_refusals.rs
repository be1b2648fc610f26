//! Bad input is refused with one clear line and changes nothing: each case checks the state
//! that a half-done command used to leave behind.

mod support;

use dbos_kernel::testing::scratch_dir_for_cluster;
use support::{ok, path, run, sql_json, Node};

/// Runs `dbos ARGS`, which must fail with one line on stderr containing `says`.
fn refused(args: &[&str], says: &str) {
    let out = run(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "dbos {args:?} was accepted");
    assert!(err.contains(says), "dbos {args:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
}

/// Runs `dbos ARGS`, which the argument parser must refuse: its first line is the error and
/// says each of `says` (clap's usage hint follows). Returns stderr.
fn refused_by_parser(args: &[&str], says: &[&str]) -> String {
    let out = run(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "dbos {args:?} was accepted");
    assert!(
        err.lines()
            .next()
            .is_some_and(|l| l.starts_with("error: ") && says.iter().all(|s| l.contains(s))),
        "dbos {args:?}: {err}"
    );
    err
}

fn count(dir: &std::path::Path, query: &str) -> i64 {
    sql_json(dir, query)[0]["n"].as_i64().expect("a count")
}

#[test]
fn refusals_leave_no_trace() {
    let scratch = scratch_dir_for_cluster();
    let dir = scratch.path().join("data");
    let _node = Node::boot(&dir, &[]);
    let d = path(&dir);

    // A queue whose placement is refused is not created; an update whose placement is refused
    // changes no limit.
    refused(
        &[
            "queue",
            "create",
            "qa",
            "--policy",
            "locality",
            "--data-dir",
            d,
        ],
        "--locality-label",
    );
    assert_eq!(
        count(
            &dir,
            "SELECT count(*) AS n FROM dbos.queues WHERE name = 'qa'"
        ),
        0
    );
    ok(&[
        "queue",
        "create",
        "qb",
        "--concurrency",
        "2",
        "--data-dir",
        d,
    ]);
    refused(
        &[
            "queue",
            "update",
            "qb",
            "--concurrency",
            "7",
            "--policy",
            "locality",
            "--data-dir",
            d,
        ],
        "--locality-label",
    );
    assert_eq!(
        count(
            &dir,
            "SELECT concurrency AS n FROM dbos.queues WHERE name = 'qb'"
        ),
        2
    );
    refused(
        &[
            "queue",
            "update",
            "qb",
            "--locality-label",
            "zone",
            "--data-dir",
            d,
        ],
        "--policy locality",
    );

    // A cron context belongs to a workflow schedule; a command's schedule has none.
    refused(
        &[
            "cron",
            "add",
            "c1",
            "* * * * * *",
            "--context",
            "{}",
            "--data-dir",
            d,
            "--",
            "true",
        ],
        "--context goes with --workflow",
    );
    refused(
        &[
            "cron",
            "add",
            "c2",
            "* * * * * *",
            "--workflow",
            "dbos.echo",
            "--context",
            "{not json",
            "--data-dir",
            d,
        ],
        "--context must be JSON",
    );
    assert_eq!(
        count(&dir, "SELECT count(*) AS n FROM dbos.workflow_schedules"),
        0
    );

    // `fs get` of a directory writes no local file; `fs mount` on a file is refused before
    // anything is mounted.
    ok(&["fs", "mkdir", "/adir", "--data-dir", d]);
    let local = scratch.path().join("got");
    refused(
        &["fs", "get", "/adir", path(&local), "--data-dir", d],
        "is a directory",
    );
    assert!(!local.exists(), "no local file left behind");
    refused(
        &["fs", "cat", "/adir", "--data-dir", d],
        "error: /adir: is a directory",
    );
    refused(
        &[
            "fs",
            "put",
            path(scratch.path()),
            "/put-dir",
            "--data-dir",
            d,
        ],
        "is a directory (put copies one file)",
    );
    refused(
        &["fs", "stat", "/put-dir", "--data-dir", d],
        "no such file or directory",
    );
    let file = scratch.path().join("a-file");
    std::fs::write(&file, "x").expect("a local file");
    refused(
        &["fs", "mount", path(&file), "--data-dir", d],
        "not a directory",
    );

    // Negative limits are refused by the argument parser (its usage hint follows), before
    // the database sees them.
    let err = refused_by_parser(&["wf", "list", "-l", "-1", "--data-dir", d], &["'-1'"]);
    assert!(!err.contains("LIMIT"), "{err}");

    // Over-long names and IDs are refused by their named limit, in one short line that
    // quotes a prefix at most.
    let long = "q".repeat(10_000);
    for (args, says) in [
        (
            vec!["queue", "create", long.as_str(), "--data-dir", d],
            "(10000 bytes)",
        ),
        (
            vec![
                "task",
                "submit",
                "--id",
                long.as_str(),
                "--data-dir",
                d,
                "--",
                "true",
            ],
            "workflow ID is 10000 bytes, over the limit of 1024",
        ),
        (
            vec![
                "task",
                "submit",
                "--dedup",
                long.as_str(),
                "--data-dir",
                d,
                "--",
                "true",
            ],
            "deduplication ID is 10000 bytes",
        ),
    ] {
        let out = run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains(says), "{err}");
        assert!(
            err.len() < 300 && err.trim_end().lines().count() == 1,
            "{err}"
        );
    }
    assert_eq!(
        count(
            &dir,
            "SELECT count(*) AS n FROM dbos.workflow_status WHERE name = 'dbos.command'"
        ),
        0,
        "a refused submission enqueues nothing"
    );

    // What names nothing is said so, with the command that lists what exists; a bad filter
    // names the values it takes.
    for (args, says) in [
        (
            vec!["task", "get", "nope", "--data-dir", d],
            "error: no task has ID \"nope\"; `dbos task list` shows the tasks",
        ),
        (
            vec!["cron", "pause", "nope", "--data-dir", d],
            "error: no schedule named \"nope\"; `dbos cron list` shows the schedules",
        ),
        (
            vec!["cron", "rm", "nope", "--data-dir", d],
            "error: no schedule named \"nope\"",
        ),
        (
            vec!["task", "list", "--status", "bogus", "--data-dir", d],
            "error: invalid status \"bogus\": one of ENQUEUED, ",
        ),
    ] {
        refused(&args, says);
    }
    ok(&[
        "cron",
        "add",
        "c3",
        "0 0 * * *",
        "--data-dir",
        d,
        "--",
        "true",
    ]);
    refused(
        &[
            "cron",
            "add",
            "c3",
            "0 1 * * *",
            "--data-dir",
            d,
            "--",
            "true",
        ],
        "error: a schedule named \"c3\" exists already; `dbos cron rm` removes it",
    );
    assert_eq!(
        sql_json(
            &dir,
            "SELECT schedule AS n FROM dbos.workflow_schedules WHERE schedule_name = 'c3'"
        )[0]["n"],
        "0 0 * * *",
        "the refused add left the schedule as it was"
    );

    // A zero timeout is refused by the argument parser in the flag's terms, and submits
    // nothing.
    let before = count(&dir, "SELECT count(*) AS n FROM dbos.workflow_status");
    refused_by_parser(
        &[
            "task",
            "submit",
            "--timeout",
            "0s",
            "--data-dir",
            d,
            "--",
            "true",
        ],
        &["--timeout", "at least 1ms"],
    );
    assert_eq!(
        count(&dir, "SELECT count(*) AS n FROM dbos.workflow_status"),
        before
    );

    // Events of a workflow that does not exist are refused, not shown as none or waited for.
    refused(
        &["msg", "events", "no-such-wf", "--data-dir", d],
        "non-existent workflow ID \"no-such-wf\"",
    );
    refused(
        &[
            "msg",
            "events",
            "no-such-wf",
            "--key",
            "k",
            "--wait",
            "1h",
            "--data-dir",
            d,
        ],
        "non-existent workflow ID",
    );

    // A backfill's range may be given as dates; a bad one is refused in the flag's terms.
    ok(&[
        "cron",
        "add",
        "daily",
        "0 0 0 * * *",
        "--data-dir",
        d,
        "--",
        "true",
    ]);
    let out = ok(&[
        "cron",
        "backfill",
        "daily",
        "--from",
        "2026-01-01",
        "--to",
        "2026-01-03",
        "--data-dir",
        d,
        "--json",
    ]);
    let out: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(out["enqueued"], 2, "the ticks of Jan 2 and 3: {out}");
    // A range that reaches into the future is backfilled up to now: the ticks to come run at
    // their time, not at once. One that starts in the future is refused.
    let today = chrono::Utc::now().date_naive();
    let day = |d: i64| (today + chrono::Duration::days(d)).to_string();
    let out = ok(&[
        "cron",
        "backfill",
        "daily",
        "--from",
        &day(-2),
        "--to",
        &day(2),
        "--data-dir",
        d,
        "--json",
    ]);
    let out: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(out["enqueued"], 2, "yesterday's and today's ticks: {out}");
    refused(
        &[
            "cron",
            "backfill",
            "daily",
            "--from",
            &day(1),
            "--data-dir",
            d,
        ],
        "starts in the future",
    );
    refused_by_parser(
        &[
            "cron",
            "backfill",
            "daily",
            "--from",
            "01/01/2026",
            "--data-dir",
            d,
        ],
        &["--from", "nor a date"],
    );

    // A partitioned queue takes a task with a partition key, and only then.
    ok(&[
        "queue",
        "create",
        "parts",
        "--partition-concurrency",
        "1",
        "--data-dir",
        d,
    ]);
    refused(
        &[
            "task",
            "submit",
            "-q",
            "parts",
            "--data-dir",
            d,
            "--",
            "true",
        ],
        "submit with --partition-key",
    );
    refused(
        &[
            "task",
            "submit",
            "--partition-key",
            "p1",
            "--data-dir",
            d,
            "--",
            "true",
        ],
        "has no partitions",
    );
    ok(&[
        "task",
        "submit",
        "-q",
        "parts",
        "--partition-key",
        "p1",
        "--wait",
        "--data-dir",
        d,
        "--",
        "true",
    ]);

    // A missing working directory is said as such, not as a missing program.
    let out = run(&[
        "task",
        "submit",
        "--cwd",
        "/no/such/dir",
        "--wait",
        "--data-dir",
        d,
        "--",
        "true",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("working directory \"/no/such/dir\": No such file or directory"),
        "{err}"
    );
}
