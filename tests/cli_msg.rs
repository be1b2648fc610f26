//! `dbos msg ...` end to end with the real binary, against the built-in echo workflow.

mod support;

use dbos_kernel::testing::scratch_dir_for_cluster;
use support::{dbos, eventually, ok, path, run, sql_json, Node};

#[test]
fn msg_commands_send_read_events_and_streams_publish_and_subscribe() {
    let scratch = scratch_dir_for_cluster();
    let dir = scratch.path().join("data");
    let _node = Node::boot(&dir, &[]);
    let d = path(&dir);
    ok(&["sql", "--data-dir", d, "SELECT dbos.enqueue_workflow('dbos.echo', 'default', ARRAY['60'::json], workflow_id => 'echo-1')"]);
    let ready = ok(&[
        "msg",
        "events",
        "echo-1",
        "--key",
        "ready",
        "--wait",
        "30s",
        "--data-dir",
        d,
        "--json",
    ]);
    let ready: serde_json::Value = serde_json::from_str(&ready).expect("json");
    assert_eq!(ready[0]["value"], true);

    let sent = ok(&[
        "msg",
        "send",
        "echo-1",
        r#"{"n":1}"#,
        "--topic",
        "in",
        "--key",
        "k1",
        "--data-dir",
        d,
        "--json",
    ]);
    assert!(sent.contains("\"stored\": true"), "{sent}");
    let again = ok(&[
        "msg",
        "send",
        "echo-1",
        r#"{"n":1}"#,
        "--topic",
        "in",
        "--key",
        "k1",
        "--data-dir",
        d,
        "--json",
    ]);
    assert!(again.contains("\"stored\": false"), "{again}");
    // A message from standard input (`-`), and one from a file (`@FILE`).
    let mut send = dbos()
        .args([
            "msg",
            "send",
            "echo-1",
            "-",
            "--topic",
            "in",
            "--data-dir",
            d,
        ])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("dbos runs");
    std::io::Write::write_all(&mut send.stdin.take().expect("stdin"), b"\"two\"")
        .expect("the message is written");
    assert!(send.wait().expect("dbos ends").success());
    let file = scratch.path().join("null.json");
    std::fs::write(&file, "null").expect("a message file");
    ok(&[
        "msg",
        "send",
        "echo-1",
        &format!("@{}", file.display()),
        "--topic",
        "in",
        "--data-dir",
        d,
    ]);
    // Follows the stream until the echo workflow closes it.
    let stream = ok(&["msg", "stream", "echo-1", "out", "-f", "--data-dir", d]);
    assert_eq!(stream, "0\t{\"n\":1}\n1\t\"two\"\n");
    let events = ok(&["msg", "events", "echo-1", "--data-dir", d, "--json"]);
    let events: serde_json::Value = serde_json::from_str(&events).expect("json");
    assert_eq!(events[0]["key"], "last");
    assert_eq!(events[0]["value"], "two");
    eventually("echo-1 succeeds", || {
        sql_json(
            &dir,
            "SELECT COALESCE(o.output, s.output) AS output FROM dbos.workflow_status s
             LEFT JOIN dbos.workflow_output o USING (workflow_uuid) WHERE workflow_uuid = 'echo-1'",
        )[0]["output"]
            == "2"
    });

    // Bad input: not JSON, a missing destination; nothing is stored.
    let bad = run(&["msg", "send", "echo-1", "not json", "--data-dir", d]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("must be JSON"));
    let missing = run(&["msg", "send", "nobody", "1", "--data-dir", d]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("non-existent workflow"));

    // A message larger than one command-line argument may be (128 KiB) goes through a file.
    let big = scratch.path().join("big.json");
    std::fs::write(&big, format!("\"{}\"", "x".repeat(300_000))).expect("a big message");
    let published = ok(&[
        "msg",
        "publish",
        "bulk",
        &format!("@{}", big.display()),
        "--data-dir",
        d,
        "--json",
    ]);
    assert!(published.contains("\"first_seq\""), "{published}");
    // From SQL the database bounds a topic message itself.
    let over = run(&[
        "sql",
        "--data-dir",
        d,
        "INSERT INTO msg.messages (topic, seq, payload) VALUES ('bulk', 1000, repeat('x', 17000000))",
    ]);
    assert!(!over.status.success());
    assert!(
        String::from_utf8_lossy(&over.stderr).contains("messages_payload_bytes_max"),
        "{}",
        String::from_utf8_lossy(&over.stderr)
    );

    // Pub/sub: a named subscription consumes once; an anonymous reader sees what is retained.
    ok(&[
        "msg",
        "subscribe",
        "alerts",
        "--name",
        "pager",
        "--data-dir",
        d,
    ]);
    let published = ok(&[
        "msg",
        "publish",
        "alerts",
        "\"disk\"",
        "{\"cpu\":99}",
        "--data-dir",
        d,
        "--json",
    ]);
    assert!(
        published.contains("\"first_seq\": 1") && published.contains("\"last_seq\": 2"),
        "{published}"
    );
    let first = ok(&[
        "msg",
        "subscribe",
        "alerts",
        "--name",
        "pager",
        "--data-dir",
        d,
        "--json",
    ]);
    let lines: Vec<serde_json::Value> = first
        .lines()
        .map(|l| serde_json::from_str(l).expect("line"))
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["payload"]["cpu"], 99);
    let second = ok(&[
        "msg",
        "subscribe",
        "alerts",
        "--name",
        "pager",
        "--data-dir",
        d,
    ]);
    assert_eq!(second, "", "consumed once");
    let retained = ok(&["msg", "subscribe", "alerts", "--data-dir", d]);
    assert_eq!(retained, "1\t\"disk\"\n2\t{\"cpu\":99}\n");
    ok(&[
        "msg",
        "retain",
        "alerts",
        "--max-count",
        "1",
        "--data-dir",
        d,
    ]);
    let topics = sql_json(
        &dir,
        "SELECT topic, head_seq, subscribers, retain_max_count FROM os.topics
         WHERE topic = 'alerts'",
    );
    assert_eq!(topics[0]["head_seq"], 2);
    assert_eq!(topics[0]["subscribers"], 1);
    assert_eq!(topics[0]["retain_max_count"], 1);
    let zero = run(&[
        "msg",
        "retain",
        "alerts",
        "--max-count",
        "0",
        "--data-dir",
        d,
    ]);
    assert!(!zero.status.success());
}
