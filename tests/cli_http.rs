//! The node's HTTP face: `/metrics` parses as Prometheus text and its counters move under load;
//! the dashboard's pages answer, a task submitted from the form runs, its output arrives live,
//! and a cancel from the workflow page stops a sleeping task.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use dbos_kernel::testing::scratch_dir_for_cluster;
use nix::sys::signal::Signal;
use support::{eventually, ok, path, sql_json, Node};

/// One HTTP/1.1 request, as a browser on the dashboard's own page sends it (a form is posted
/// with the dashboard's origin); returns the status code, the headers and the body.
fn http(addr: &str, method: &str, target: &str, form: Option<&str>) -> (u16, String, String) {
    let origin = format!("Origin: http://{addr}\r\n");
    let headers = if form.is_some() { origin.as_str() } else { "" };
    http_with(addr, method, target, form, headers)
}

/// One HTTP/1.1 request with extra header lines (each ending in CRLF).
fn http_with(
    addr: &str,
    method: &str,
    target: &str,
    form: Option<&str>,
    headers: &str,
) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).expect("the dashboard accepts connections");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let body = form.unwrap_or("");
    let mut req =
        format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{headers}");
    if form.is_some() {
        req.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = raw.split_once("\r\n\r\n").expect("a response head");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    // Bodies of unknown length come chunked: join the chunks.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = rest;
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.push_str(&tail[..n]);
            rest = tail[n..].trim_start_matches("\r\n");
        }
        out
    } else {
        rest.to_owned()
    };
    (status, head.to_owned(), body)
}

fn metric(samples: &prometheus_parse::Scrape, name: &str, label: Option<(&str, &str)>) -> f64 {
    samples
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .next()
        .unwrap_or_else(|| panic!("metric {name} {label:?}"))
}

fn scrape(addr: &str) -> prometheus_parse::Scrape {
    let (status, head, body) = http(addr, "GET", "/metrics", None);
    assert_eq!(status, 200);
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let lines = body.lines().map(|l| Ok(l.to_owned()));
    prometheus_parse::Scrape::parse(lines).expect("/metrics parses as Prometheus text")
}

#[test]
fn metrics_move_and_the_dashboard_submits_follows_and_cancels() {
    let scratch = scratch_dir_for_cluster();
    let dir = scratch.path().join("data");
    let node = Node::boot(&dir, &["--http", "127.0.0.1:0"]);
    let d = path(&dir);
    let addr = node
        .http
        .clone()
        .expect("the node printed its HTTP address");

    let before = scrape(&addr);
    assert_eq!(metric(&before, "dbos_nodes_alive", None), 1.0);
    let errors_before = metric(&before, "dbos_outcomes_total", Some(("status", "ERROR")));
    let started_before = metric(&before, "dbos_executions_started_total", None);
    for _ in 0..3 {
        let out = support::run(&[
            "task",
            "submit",
            "--data-dir",
            d,
            "-w",
            "--",
            "sh",
            "-c",
            "exit 3",
        ]);
        assert_eq!(out.status.code(), Some(3));
    }
    // The node counts an outcome just after committing it, and the client may have seen that
    // commit and exited first.
    let errors = |s: &prometheus_parse::Scrape| {
        metric(s, "dbos_outcomes_total", Some(("status", "ERROR"))) - errors_before
    };
    support::eventually("the node counted the three failed outcomes", || {
        errors(&scrape(&addr)) >= 3.0
    });
    let after = scrape(&addr);
    assert_eq!(errors(&after), 3.0);
    assert!(metric(&after, "dbos_executions_started_total", None) - started_before >= 3.0);
    assert!(
        metric(&after, "dbos_claims_total", None) - metric(&before, "dbos_claims_total", None)
            >= 3.0
    );
    assert!(metric(&after, "dbos_workflows", Some(("status", "ERROR"))) >= 3.0);
    assert!(
        metric(&after, "dbos_notifications_received_total", None)
            > metric(&before, "dbos_notifications_received_total", None),
        "enqueues notify the node"
    );
    assert!(after
        .samples
        .iter()
        .any(|s| s.metric == "dbos_queue_wait_seconds"));
    assert!(after
        .samples
        .iter()
        .any(|s| s.metric == "dbos_step_duration_seconds"
            || s.metric.starts_with("dbos_step_duration_seconds")));

    // Every page answers and names its SQL.
    for target in [
        "/",
        "/workflows",
        "/workflows?status=ERROR",
        "/workflows?since=2000-01-01",
        "/files?path=/",
    ] {
        let (status, _, body) = http(&addr, "GET", target, None);
        assert_eq!(status, 200, "{target}: {body}");
        assert!(
            body.contains("<summary>SQL</summary>") && body.contains("os."),
            "{target}"
        );
    }
    let (status, _, _) = http(&addr, "GET", "/workflows/no-such", None);
    assert_eq!(status, 404);
    // A status in lower case filters as in upper case; an unknown one is refused, saying so.
    let (status, _, lower) = http(&addr, "GET", "/workflows?status=success", None);
    assert_eq!(status, 200, "{lower}");
    assert!(
        lower.contains("value=\"SUCCESS\""),
        "the filter reads SUCCESS"
    );
    let (status, _, body) = http(&addr, "GET", "/workflows?status=BOGUS", None);
    assert!(
        status == 400 && body.contains("unknown workflow status"),
        "{status}: {body}"
    );

    // A form posted from another site's page is refused, and submits nothing; so is one from
    // a browser that names no origin but says the request is cross-site. A client that is no
    // browser sends neither header and is served.
    let submitted =
        || sql_json(&dir, "SELECT count(*) AS n FROM dbos.workflow_status")[0]["n"].clone();
    let before = submitted();
    for headers in [
        "Origin: http://evil.example\r\n",
        "Origin: null\r\n",
        "Sec-Fetch-Site: cross-site\r\n",
    ] {
        let (status, _, body) = http_with(
            &addr,
            "POST",
            "/tasks",
            Some("command=touch+/tmp/csrf&queue=default"),
            headers,
        );
        assert!(
            status == 403 && body.contains("another site"),
            "{headers}: {status} {body}"
        );
    }
    assert_eq!(submitted(), before, "a refused form submitted nothing");
    // Behind a proxy, the browser's host may come as X-Forwarded-Host.
    let (status, head, _) = http_with(
        &addr,
        "POST",
        "/queues/default/pause",
        Some(""),
        "Origin: https://dash.example\r\nX-Forwarded-Host: dash.example\r\n",
    );
    assert_eq!(status, 303, "{head}");
    assert_eq!(
        http(&addr, "POST", "/queues/default/resume", Some("")).0,
        303
    );

    // A workflow ID with a slash and a space: its link keeps it one path segment.
    ok(&[
        "task",
        "submit",
        "--data-dir",
        d,
        "-w",
        "--id",
        "x/y z",
        "--",
        "true",
    ]);
    let (_, _, list) = http(&addr, "GET", "/workflows", None);
    assert!(list.contains("href=\"/workflows/x%2Fy%20z\""), "{list}");
    let (status, _, page) = http(&addr, "GET", "/workflows/x%2Fy%20z", None);
    assert!(status == 200 && page.contains("x/y z"), "{status}: {page}");

    // A task from the form: it runs, and its output arrives as server-sent events.
    let (status, head, _) = http(
        &addr,
        "POST",
        "/tasks",
        Some("command=echo+from+the+form&queue=default"),
    );
    assert_eq!(status, 303, "{head}");
    let location = head
        .lines()
        .find_map(|l| l.strip_prefix("location: "))
        .expect("a redirect to the task's page")
        .to_owned();
    let id = location.trim_start_matches("/workflows/").to_owned();
    let (_, _, events) = http(&addr, "GET", &format!("/tasks/{id}/output"), None);
    assert!(
        events.contains("event: stdout\ndata: from the form") && events.contains("event: end"),
        "{events}"
    );
    let (_, _, page) = http(&addr, "GET", &location, None);
    assert!(
        page.contains(&id) && page.contains("SUCCESS") && page.contains("Timeline"),
        "{page}"
    );

    // Forked from its first step: a new workflow that runs it again.
    let (status, head, _) = http(&addr, "POST", &format!("{location}/fork"), Some("step=1"));
    assert_eq!(status, 303, "{head}");
    let fork = head
        .lines()
        .find_map(|l| l.strip_prefix("location: "))
        .expect("a redirect to the fork")
        .to_owned();
    assert_ne!(fork, location);
    eventually("the fork succeeds", || {
        http(&addr, "GET", &fork, None).2.contains("SUCCESS")
    });
    // A queue paused and resumed from the overview.
    let paused = || {
        sql_json(&dir, "SELECT paused FROM os.queues WHERE queue = 'default'")[0]["paused"].clone()
    };
    assert_eq!(
        http(&addr, "POST", "/queues/default/pause", Some("")).0,
        303
    );
    assert_eq!(paused(), true);
    // A second click is no error.
    assert_eq!(
        http(&addr, "POST", "/queues/default/pause", Some("")).0,
        303
    );
    assert!(http(&addr, "GET", "/", None).2.contains("resume default"));
    assert_eq!(
        http(&addr, "POST", "/queues/default/resume", Some("")).0,
        303
    );
    assert_eq!(paused(), false);
    let (status, _, body) = http(&addr, "POST", "/queues/nope/pause", Some(""));
    assert!(status == 404 && body.contains("nope"), "{status}: {body}");
    let (status, _, body) = http(&addr, "POST", "/workflows/no-such/cancel", Some(""));
    assert!(
        status == 404 && body.contains("no-such"),
        "{status}: {body}"
    );

    // A sleeping task cancelled from its page.
    let sleeper = ok(&["task", "submit", "--data-dir", d, "--", "sleep", "600"]);
    let sleeper = sleeper.trim();
    eventually("the sleeper runs", || {
        sql_json(
            &dir,
            &format!("SELECT status FROM os.workflows WHERE workflow_id = '{sleeper}'"),
        )[0]["status"]
            == "PENDING"
    });
    let (status, _, _) = http(
        &addr,
        "POST",
        &format!("/workflows/{sleeper}/cancel"),
        Some(""),
    );
    assert_eq!(status, 303);
    eventually("the page shows it cancelled", || {
        http(&addr, "GET", &format!("/workflows/{sleeper}"), None)
            .2
            .contains("CANCELLED")
    });
    node.signal(Signal::SIGINT);
    assert!(node.wait());
}
