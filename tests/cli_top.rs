//! `dbos top`: plain text once, and the interactive view in a pseudo-terminal (tmux).

mod support;

use std::process::Command;

use dbos_kernel::testing::scratch_dir_for_cluster;
use nix::sys::signal::Signal;
use support::{eventually, ok, path, run, Node};

#[test]
fn top_shows_nodes_queues_running_work_and_failures() {
    let scratch = scratch_dir_for_cluster();
    let dir = scratch.path().join("data");
    let node = Node::boot(&dir, &[]);
    let d = path(&dir);
    let sleeper = ok(&["task", "submit", "--data-dir", d, "--", "sleep", "60"]);
    let sleeper = sleeper.trim();
    let out = run(&[
        "task",
        "submit",
        "--data-dir",
        d,
        "-w",
        "--",
        "sh",
        "-c",
        "exit 2",
    ]);
    assert_eq!(out.status.code(), Some(2));
    eventually("the sleeper runs", || {
        ok(&["top", "--once", "--data-dir", d]).contains(sleeper)
    });
    let text = ok(&["top", "--once", "--data-dir", d]);
    let line = |prefix: &str| -> String {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("a line starting with {prefix:?}:\n{text}"))
            .to_owned()
    };
    assert!(line("nodes 1 alive of 1").contains("pending 1"), "{text}");
    let n = line(&node.node_id);
    assert!(
        n.contains("running") && n.contains("yes") && n.contains("1/"),
        "{n}"
    );
    let q = line("default ");
    let cols: Vec<&str> = q.split_whitespace().collect();
    assert_eq!(
        &cols[..3],
        &["default", "0", "1"],
        "depth 0, running 1: {q}"
    );
    assert!(line(sleeper).contains("dbos.command"), "{text}");
    assert!(
        text.contains("RECENT FAILURES") && text.contains("exited with code 2"),
        "{text}"
    );

    // The interactive view, in a tmux pseudo-terminal: it draws, sorts on a key, quits on q.
    if Command::new("tmux").arg("-V").output().is_err() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "tmux is missing: scripts/setup installs it"
        );
        eprintln!("NOTICE: tmux is not installed; the interactive view of dbos top is not tested");
    } else {
        let socket = format!("dbos-top-{}", std::process::id());
        let tmux = |args: &[&str]| {
            Command::new("tmux")
                .args(["-L", &socket])
                .args(args)
                .output()
                .expect("tmux runs")
        };
        let cmd = format!(
            "{} top --data-dir {d} --interval 200ms",
            env!("CARGO_BIN_EXE_dbos")
        );
        let started = tmux(&[
            "new-session",
            "-d",
            "-x",
            "200",
            "-y",
            "50",
            "-s",
            "top",
            &cmd,
        ]);
        assert!(started.status.success(), "{started:?}");
        let screen = || {
            String::from_utf8_lossy(&tmux(&["capture-pane", "-p", "-t", "top"]).stdout).into_owned()
        };
        eventually("top draws the running task", || {
            let s = screen();
            s.contains(sleeper) && s.contains("(sorted by age)") && s.contains("q quit")
        });
        tmux(&["send-keys", "-t", "top", "n"]);
        eventually("top sorts by name", || {
            screen().contains("(sorted by name)")
        });
        tmux(&["send-keys", "-t", "top", "q"]);
        eventually("top quits on q", || {
            !tmux(&["has-session", "-t", "top"]).status.success()
        });
        tmux(&["kill-server"]);
    }
    ok(&["task", "cancel", sleeper, "--data-dir", d]);
    node.signal(Signal::SIGINT);
    assert!(node.wait());
}
