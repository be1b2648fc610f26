//! A program embedding the CLI (`examples/replay_check.rs`) runs its workflow as a node, then
//! `wf replay` checks changed builds of its code against the recorded history.

mod support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use dbos_kernel::testing::scratch_dir_for_cluster;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::{eventually, ok, path, sql_json};

/// The example binary, built beside the `dbos` binary by `cargo test`.
fn program() -> PathBuf {
    let dbos = PathBuf::from(env!("CARGO_BIN_EXE_dbos"));
    dbos.parent()
        .expect("the binary's directory")
        .join("examples/replay_check")
}

#[test]
fn an_embedding_program_replays_its_code_and_names_each_change() {
    let bin = program();
    assert!(
        bin.exists(),
        "{} is missing: `cargo test` builds it, or `cargo build --example replay_check`",
        bin.display()
    );
    let scratch = scratch_dir_for_cluster();
    let dir = scratch.path().join("data");
    let d = path(&dir);
    let mut node = Command::new(&bin)
        .args(["boot", "--data-dir", d])
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("the example boots");
    let stdout = node.stdout.take().expect("piped");
    let mut lines = BufReader::new(stdout).lines();
    while let Some(Ok(line)) = lines.next() {
        if line.starts_with("database ") {
            break;
        }
    }
    ok(&[
        "sql",
        "--data-dir",
        d,
        "SELECT dbos.enqueue_workflow('order', 'default', ARRAY['2'::json], workflow_id => 'o-1')",
    ]);
    eventually("o-1 succeeds", || {
        sql_json(
            &dir,
            "SELECT status FROM dbos.workflow_status WHERE workflow_uuid = 'o-1'",
        )[0]["status"]
            == "SUCCESS"
    });
    let replay = |code: &str| {
        Command::new(&bin)
            .args(["wf", "replay", "o-1", "--data-dir", d])
            .env("ORDER_CODE", code)
            .env_remove("DATABASE_URL")
            .output()
            .expect("the example replays")
    };
    let same = replay("");
    assert!(same.status.success(), "{same:?}");
    assert!(String::from_utf8_lossy(&same.stdout)
        .contains("o-1 (order, SUCCESS): consistent (3 operations)"));
    for (code, expected) in [
        (
            "renamed",
            "step 1: the code called \"reserve_stock\" where the history has \"reserve\"",
        ),
        (
            "branch",
            "step 2: the code called \"small\" where the history has \"big\"",
        ),
        (
            "inserted",
            "step 3: the code called \"audit\" where the history has \"ship\"",
        ),
    ] {
        let out = replay(code);
        assert_eq!(out.status.code(), Some(1), "{code}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(expected), "{code}: {text}");
    }
    kill(Pid::from_raw(node.id() as i32), Signal::SIGINT).expect("signal the node");
    assert!(node.wait().expect("the node exits").success());
}
