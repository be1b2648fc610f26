//! End to end: `dbos boot` on the embedded default, `sql`, `status`, Ctrl-C, kill -9.

mod support;

use dbos_kernel::testing::scratch_dir_for_cluster;
use nix::sys::signal::Signal;
use support::{eventually, ok, path, postmaster_pid, process_alive, run, sql_json, Node};

#[test]
fn boot_sql_status_and_ctrl_c_leave_no_postgres_behind() {
    let scratch = scratch_dir_for_cluster();
    let dir = scratch.path().join("data");
    let node = Node::boot(
        &dir,
        &["--slots", "5", "--label", "gpu=true", "--label", "zone=a"],
    );
    // The node prints its URL, the node role's, without the password (its output ends up in
    // logs); `dbos url --show-password` gives the whole URL to whoever may read the password
    // file: the superuser's, or with --node the node role's.
    assert!(
        node.url.starts_with("postgres://dbos_node:***@"),
        "{}",
        node.url
    );
    let d = path(&dir);
    assert_eq!(ok(&["url", "--data-dir", d, "--node"]).trim(), node.url);
    let node_url = ok(&["url", "--data-dir", d, "--node", "--show-password"]);
    assert_eq!(dbos_kernel::redact_url(node_url.trim()), node.url);
    let url = ok(&["url", "--data-dir", d, "--show-password"])
        .trim()
        .to_owned();
    assert!(
        !url.contains("***") && url.starts_with("postgres://dbos:"),
        "{url}"
    );
    assert_eq!(
        dbos_kernel::redact_url(&url),
        ok(&["url", "--data-dir", d]).trim()
    );
    let whoami = ok(&[
        "sql",
        "--database-url",
        node_url.trim(),
        "--json",
        "SELECT current_user AS who, rolsuper FROM pg_roles WHERE rolname = current_user",
    ]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&whoami).expect("json"),
        serde_json::json!([{"who": "dbos_node", "rolsuper": false}])
    );

    let rows = sql_json(&dir, "SELECT node_id, alive, slots, labels FROM os.nodes");
    assert_eq!(
        rows,
        serde_json::json!([{
            "node_id": node.node_id, "alive": true, "slots": 5,
            "labels": {"gpu": "true", "zone": "a"}
        }])
    );
    // The printed URL works for other clients.
    let by_url = ok(&[
        "sql",
        "--database-url",
        &url,
        "--json",
        "SELECT 40 + 2 AS answer",
    ]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&by_url).expect("json"),
        serde_json::json!([{"answer": 42}])
    );

    let status: serde_json::Value =
        serde_json::from_str(&ok(&["status", "--json", "--data-dir", path(&dir)])).expect("json");
    assert_eq!(status["database"][0]["database"], "dbos");
    assert_eq!(status["database"][0]["nodes_alive"], 1);
    // The server answering: the embedded one, on the port in the URL.
    let port = url
        .rsplit_once(':')
        .expect("a port")
        .1
        .split('/')
        .next()
        .expect("port");
    assert_eq!(
        status["database"][0]["server"],
        format!("127.0.0.1:{port}").as_str()
    );
    assert!(
        !status["database"][0]["url"]
            .as_str()
            .expect("url")
            .contains(&url[16..24]),
        "password hidden"
    );
    assert_eq!(status["nodes"][0]["node_id"], node.node_id.as_str());
    let services: Vec<&str> = status["migrations"]
        .as_array()
        .expect("migrations")
        .iter()
        .filter_map(|m| m["service"].as_str())
        .collect();
    assert_eq!(
        services,
        vec!["dbos", "fs", "kernel", "msg", "sched", "views"]
    );
    assert_eq!(
        status["retention"],
        serde_json::json!([
            {"what": "workflows", "kept": "all"},
            {"what": "provenance", "kept": "the last 30 days"},
        ])
    );
    ok(&[
        "sql",
        "--data-dir",
        path(&dir),
        "UPDATE sched.workflow_retention SET max_age = '30 days', max_rows = 1000",
    ]);
    // A host that booted many times: the live node and the 20 latest gone ones are shown.
    ok(&[
        "sql",
        "--data-dir",
        path(&dir),
        "INSERT INTO kernel.nodes (node_id, hostname, pid, version, slots, lease_ms, state,
                                   started_at, stopped_at)
         SELECT 'old-' || i, 'here', 4242, '0', 1, 1000, 'stopped',
                now() - i * interval '1 hour', now() - i * interval '1 hour'
         FROM generate_series(1, 25) i",
    ]);
    let status: serde_json::Value =
        serde_json::from_str(&ok(&["status", "--json", "--data-dir", path(&dir)])).expect("json");
    let nodes = status["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 21, "{status}");
    assert_eq!(nodes[0]["node_id"], node.node_id.as_str());
    assert_eq!(nodes[1]["node_id"], "old-1");
    assert_eq!(nodes[20]["node_id"], "old-20");
    assert_eq!(status["nodes_not_shown"][0]["stopped_or_dead"], 5);
    let every: serde_json::Value = serde_json::from_str(&ok(&[
        "status",
        "--json",
        "--all-nodes",
        "--data-dir",
        path(&dir),
    ]))
    .expect("json");
    assert_eq!(every["nodes"].as_array().expect("nodes").len(), 26);
    assert!(every.get("nodes_not_shown").is_none(), "{every}");
    let table = ok(&["status", "--data-dir", path(&dir)]);
    assert!(
        table.contains("nodes:") && table.contains(&node.node_id),
        "{table}"
    );
    assert!(
        table.contains("all but ended ones older than 30d or beyond the newest 1000"),
        "{table}"
    );

    let pg = postmaster_pid(&dir).expect("postgres runs");
    node.signal(Signal::SIGINT);
    assert!(node.wait(), "Ctrl-C exits cleanly");
    eventually("postgres has exited", || !process_alive(pg));
    let out = run(&["sql", "--data-dir", path(&dir), "SELECT 1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no running cluster"));

    // The stop was recorded before the cluster went down.
    let node2 = Node::boot(&dir, &[]);
    let rows = sql_json(
        &dir,
        "SELECT node_id, state FROM os.nodes WHERE node_id NOT LIKE 'old-%' ORDER BY started_at",
    );
    assert_eq!(rows[0]["state"], "stopped");
    assert_eq!(rows[1]["node_id"], node2.node_id.as_str());
    node2.signal(Signal::SIGTERM);
    assert!(node2.wait(), "SIGTERM exits cleanly");
}

#[test]
fn invalid_sql_reports_the_postgres_error_and_breaks_nothing() {
    let scratch = scratch_dir_for_cluster();
    let dir = scratch.path().join("data");
    let node = Node::boot(&dir, &[]);
    let out = run(&["sql", "--data-dir", path(&dir), "SELEKT * FROM os.nodes"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("syntax error") && err.contains("42601"),
        "{err}"
    );

    let out = run(&[
        "sql",
        "--data-dir",
        path(&dir),
        "SELECT * FROM no_such_table",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("42P01"));

    // Several statements; a table for people.
    let text = ok(&[
        "sql",
        "--data-dir",
        path(&dir),
        "CREATE TABLE public.t (x int); INSERT INTO public.t VALUES (1), (2); SELECT x FROM public.t ORDER BY x",
    ]);
    assert!(
        text.contains("2 rows affected") && text.contains("(2 rows)"),
        "{text}"
    );
    // A query that finds nothing prints its columns over no row, not "OK".
    let text = ok(&[
        "sql",
        "--data-dir",
        path(&dir),
        "SELECT x AS nothing FROM public.t WHERE x > 2",
    ]);
    assert!(
        text.contains("nothing") && text.contains("(0 rows)"),
        "{text}"
    );
    // A cell wider than 65,535 characters (a message, a long argv) is printed whole.
    let text = ok(&[
        "sql",
        "--data-dir",
        path(&dir),
        "SELECT repeat('x', 70000) AS wide, 1 AS next",
    ]);
    assert!(
        text.contains(&format!(" {} | 1", "x".repeat(70000))),
        "{}",
        &text[..200]
    );
    let rows = sql_json(&dir, "SELECT count(*) AS n FROM os.nodes WHERE alive");
    assert_eq!(rows, serde_json::json!([{"n": 1}]));
    let out = ok(&[
        "psql",
        "--data-dir",
        path(&dir),
        "--",
        "-At",
        "-c",
        "SELECT sum(x) FROM public.t",
    ]);
    assert_eq!(out.trim(), "3");
    node.signal(Signal::SIGINT);
    assert!(node.wait());
}

/// Whoever holds the node role's password may replace the functions and triggers of the
/// system's tables (the node role owns them): the CLI works as the node role, so such code
/// never runs with the superuser's rights; only `--superuser` connects as the superuser.
#[test]
fn the_cli_works_as_the_node_role_so_node_code_never_runs_as_superuser() {
    let scratch = scratch_dir_for_cluster();
    let dir = scratch.path().join("data");
    let d = path(&dir);
    let node = Node::boot(&dir, &[]);
    let who = "SELECT current_user AS who, rolsuper FROM pg_roles WHERE rolname = current_user";
    assert_eq!(
        sql_json(&dir, who),
        serde_json::json!([{"who": "dbos_node", "rolsuper": false}])
    );
    let su: serde_json::Value =
        serde_json::from_str(&ok(&["sql", "--data-dir", d, "--superuser", "--json", who]))
            .expect("json");
    assert_eq!(su, serde_json::json!([{"who": "dbos", "rolsuper": true}]));
    let out = ok(&[
        "psql",
        "--data-dir",
        d,
        "--",
        "-At",
        "-c",
        "SELECT current_user",
    ]);
    assert_eq!(out.trim(), "dbos_node");
    // Code the node role plants on the status table records who ran it.
    ok(&[
        "sql",
        "--data-dir",
        d,
        "CREATE TABLE sched.ran_as (who text);
         CREATE FUNCTION sched.record_who() RETURNS trigger LANGUAGE plpgsql AS $f$
         BEGIN INSERT INTO sched.ran_as VALUES (current_user); RETURN NULL; END $f$;
         CREATE TRIGGER record_who AFTER INSERT OR UPDATE OR DELETE ON dbos.workflow_status
             FOR EACH STATEMENT EXECUTE FUNCTION sched.record_who()",
    ]);
    let id = ok(&["task", "submit", "--data-dir", d, "--", "sleep", "600"]);
    let id = id.trim();
    ok(&["task", "cancel", "--data-dir", d, id]);
    ok(&["wf", "delete", "--data-dir", d, id]);
    let seen = sql_json(&dir, "SELECT DISTINCT who FROM sched.ran_as ORDER BY who");
    assert_eq!(seen, serde_json::json!([{"who": "dbos_node"}]));
    node.signal(Signal::SIGINT);
    assert!(node.wait());
}

#[test]
fn after_kill_9_a_new_boot_works_and_the_old_node_shows_dead() {
    let scratch = scratch_dir_for_cluster();
    let dir = scratch.path().join("data");
    let first = Node::boot(&dir, &[]);
    let first_id = first.node_id.clone();
    first.kill9();
    // Postgres outlived its node; the next boot joins it.
    let pg = postmaster_pid(&dir).expect("postgres still runs");
    assert!(process_alive(pg));

    let second = Node::boot(&dir, &[]);
    assert_ne!(second.node_id, first_id, "a restarted node gets a fresh id");
    let rows = sql_json(
        &dir,
        "SELECT node_id, state, alive FROM os.nodes ORDER BY started_at",
    );
    assert_eq!(rows[0]["node_id"], first_id.as_str());
    assert_eq!(rows[0]["alive"], false);
    assert_eq!(
        rows[0]["state"], "dead",
        "the successor on this host saw its process gone"
    );
    assert_eq!(rows[1]["alive"], true);

    // Kill both node and Postgres: a stale postmaster.pid is left behind.
    second.kill9();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pg), Signal::SIGKILL).expect("kill postgres");
    eventually("postgres is gone", || !process_alive(pg));
    assert!(dir.join("pgdata/postmaster.pid").exists());
    let third = Node::boot(&dir, &[]);
    let rows = sql_json(&dir, "SELECT count(*) AS n FROM os.nodes WHERE alive");
    assert_eq!(rows, serde_json::json!([{"n": 1}]));
    let pg3 = postmaster_pid(&dir).expect("postgres runs");
    third.signal(Signal::SIGINT);
    assert!(third.wait());
    eventually("postgres has exited", || !process_alive(pg3));
}

#[test]
fn a_dead_node_on_another_host_shows_dead_after_its_lease() {
    let scratch = scratch_dir_for_cluster();
    let dir = scratch.path().join("data");
    let node = Node::boot(&dir, &[]);
    ok(&[
        "sql",
        "--data-dir",
        path(&dir),
        "INSERT INTO kernel.nodes (node_id, hostname, pid, version, slots, lease_ms) \
         VALUES ('remote', 'elsewhere', 4242, '0', 1, 300)",
    ]);
    eventually("the silent remote node counts as dead", || {
        sql_json(&dir, "SELECT alive FROM os.nodes WHERE node_id = 'remote'")
            == serde_json::json!([{"alive": false}])
    });
    node.signal(Signal::SIGINT);
    assert!(node.wait());
}

#[test]
fn bad_flags_and_unreachable_databases_give_clear_errors() {
    for args in [
        vec!["--help"],
        vec!["boot", "--help"],
        vec!["status", "--help"],
        vec!["sql", "--help"],
        vec!["psql", "--help"],
    ] {
        let out = ok(&args);
        assert!(out.contains("Usage"), "{args:?}: {out}");
    }
    let out = run(&["boot", "--label", "nokeyvalue"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("KEY=VALUE"));

    let out = run(&[
        "sql",
        "--database-url",
        "postgres://x:pw@127.0.0.1:1/db",
        "SELECT 1",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unreachable") && !err.contains("pw@"), "{err}");

    let out = run(&["status", "--database-url", "mysql://nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("postgres://"));

    let scratch = scratch_dir_for_cluster();
    let out = run(&["status", "--data-dir", path(scratch.path())]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("dbos boot --data-dir"));
}

#[test]
fn a_boot_that_fails_after_starting_postgres_stops_it() {
    let scratch = scratch_dir_for_cluster();
    let dir = scratch.path().join("data");
    let node = Node::boot(&dir, &[]);
    ok(&["sql", "--data-dir", path(&dir), "DROP SCHEMA dbos CASCADE"]);
    node.signal(Signal::SIGINT);
    assert!(node.wait(), "the node stops cleanly");
    eventually("postgres stopped with the node", || {
        postmaster_pid(&dir).is_none_or(|p| !process_alive(p))
    });
    // The schema the workflow service needs is gone: the boot fails, and stops the Postgres
    // it started.
    let out = run(&["boot", "--data-dir", path(&dir)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("dbos."), "{err}");
    assert!(
        postmaster_pid(&dir).is_none_or(|p| !process_alive(p)),
        "no Postgres left running"
    );
}

#[test]
fn a_node_declared_dead_while_stalled_joins_again_as_a_new_node() {
    let scratch = scratch_dir_for_cluster();
    let dir = scratch.path().join("data");
    let stalled = Node::boot(&dir, &[]);
    let watcher = Node::boot(&dir, &[]);
    let pid = stalled.child.id();
    stalled.signal(Signal::SIGSTOP);
    // The other node declares it dead once its lease has expired.
    eventually("the stalled node is declared dead", || {
        sql_json(
            &dir,
            &format!(
                "SELECT state FROM kernel.nodes WHERE node_id = '{}'",
                stalled.node_id
            ),
        ) == serde_json::json!([{"state": "dead"}])
    });
    stalled.signal(Signal::SIGCONT);
    // The same process finds itself dead at its next heartbeat, stops, and boots again under
    // a fresh id.
    eventually("the process runs again as a new node", || {
        sql_json(
            &dir,
            &format!(
                "SELECT node_id FROM os.nodes WHERE pid = {pid} AND alive AND node_id <> '{}'",
                stalled.node_id
            ),
        )
        .as_array()
        .is_some_and(|rows| rows.len() == 1)
    });
    let rows = sql_json(
        &dir,
        &format!(
            "SELECT state FROM kernel.nodes WHERE node_id = '{}'",
            stalled.node_id
        ),
    );
    assert_eq!(
        rows,
        serde_json::json!([{"state": "dead"}]),
        "the old id stays dead"
    );
    stalled.signal(Signal::SIGINT);
    watcher.signal(Signal::SIGINT);
    assert!(stalled.wait(), "the rejoined node stops cleanly");
    assert!(watcher.wait());
}

#[test]
fn the_embedded_postgres_outlives_a_stopped_node_while_others_use_it() {
    let scratch = scratch_dir_for_cluster();
    let dir = scratch.path().join("data");
    let d = path(&dir);
    let first = Node::boot(&dir, &[]);
    let pid = postmaster_pid(&dir).expect("the first node started the server");
    // A node booted elsewhere by URL holds no lock on the data directory.
    let node_url = ok(&["url", "--data-dir", d, "--node", "--show-password"]);
    let by_url = Node::boot(
        &scratch.path().join("elsewhere"),
        &["--database-url", node_url.trim()],
    );
    first.signal(Signal::SIGTERM);
    assert!(first.wait(), "the first node stops cleanly");
    assert!(process_alive(pid), "the server outlives the first node");
    let rows = sql_json(&dir, "SELECT count(*) AS n FROM os.nodes WHERE alive");
    assert_eq!(
        rows,
        serde_json::json!([{"n": 1}]),
        "the other node still works"
    );

    // The dashboard on its own holds the cluster as a node does.
    let mut ui = support::dbos()
        .args(["ui", "--data-dir", d, "--http", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("dbos ui starts");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(ui.stdout.take().expect("piped")),
        &mut line,
    )
    .expect("dbos ui prints its address");
    assert!(line.starts_with("http http://"), "{line}");
    by_url.signal(Signal::SIGTERM);
    assert!(by_url.wait(), "the node by URL stops cleanly");
    assert!(process_alive(pid), "the server outlives the last node");

    // The last process to leave stops it.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(ui.id() as i32), Signal::SIGINT)
        .expect("signal dbos ui");
    assert!(ui.wait().expect("dbos ui exits").success());
    eventually("the server has stopped", || !process_alive(pid));
}
