//! A command prints its answer and nothing else: piped into a reader that stops early
//! (`dbos sql ... | head -1`) it ends as `cat` does, killed by SIGPIPE with nothing on stderr,
//! instead of failing with "Broken pipe"; a long query prints no warning of its own.

mod support;

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;

use dbos_kernel::testing::scratch_dir_for_cluster;
use support::{dbos, ok, path, Node};

/// Runs `dbos ARGS`, reads the start of its output and closes the pipe: the command must
/// end by SIGPIPE and say nothing.
fn reader_goes_away(args: &[&str]) {
    let mut child = dbos()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the dbos binary runs");
    let mut out = child.stdout.take().expect("stdout");
    let mut first = [0u8; 16];
    out.read_exact(&mut first)
        .unwrap_or_else(|e| panic!("dbos {args:?} printed too little: {e}"));
    drop(out);
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("stderr read");
    let status = child.wait().expect("dbos ends");
    assert_eq!(
        status.signal(),
        Some(nix::sys::signal::Signal::SIGPIPE as i32),
        "dbos {args:?} ended with {status}: {err}"
    );
    assert!(err.is_empty(), "dbos {args:?} said: {err}");
}

#[test]
fn a_command_prints_its_answer_and_nothing_else() {
    let scratch = scratch_dir_for_cluster();
    let dir = scratch.path().join("data");
    let node = Node::boot(&dir, &[]);
    let d = path(&dir);

    // Far more than a pipe holds, so the command is still writing when the reader goes.
    reader_goes_away(&[
        "sql",
        "SELECT g FROM generate_series(1, 300000) g",
        "--data-dir",
        d,
    ]);
    let local = scratch.path().join("big");
    std::fs::write(&local, vec![b'x'; 4 << 20]).expect("a local file");
    ok(&["fs", "put", path(&local), "/big", "--data-dir", d]);
    reader_goes_away(&["fs", "cat", "/big", "--data-dir", d]);

    // A query over a second (sqlx's threshold for a slow statement) answers without a warning.
    let out = support::run(&["sql", "SELECT pg_sleep(1.1) AS s", "--data-dir", d]);
    assert!(out.status.success());
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A node keeps SIGPIPE ignored: a reader of its output that goes away must not kill it.
    let status = std::fs::read_to_string(format!("/proc/{}/status", node.child.id()))
        .expect("the node's status");
    let ignored = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        .expect("the node's ignored signals");
    let sigpipe = nix::sys::signal::Signal::SIGPIPE as u32;
    assert_ne!(ignored & (1 << (sigpipe - 1)), 0, "SigIgn {ignored:x}");
}
