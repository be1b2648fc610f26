//! A `dbos bench` run stopped by a signal leaves nothing running: its node and embedded Postgres
//! stop and its scratch directory goes; killed outright, its Postgres still quits.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// A run of the ceiling suite long enough to be interrupted, with its scratch directories in
/// `tmp`; returns once it has begun measuring, with its postmaster's pid.
fn start_run(tmp: &Path) -> (Child, i32) {
    std::fs::set_permissions(tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("the embedded Postgres's user can reach the scratch directory");
    let results = tmp.join("results");
    let child = support::dbos()
        .args(["bench", "ceiling", "--run-secs", "60", "--results-dir"])
        .arg(&results)
        .env("TMPDIR", tmp)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(tmp.join("stderr")).expect("a log file"))
        .spawn()
        .expect("dbos bench starts");
    support::eventually("the run has begun measuring", || {
        results.join("_environment.json").exists()
    });
    let dirs = cluster_dirs(tmp);
    assert_eq!(dirs.len(), 1, "one scratch cluster: {dirs:?}");
    let pid = support::postmaster_pid(&dirs[0].join("data")).expect("the postmaster's pid file");
    assert!(support::process_alive(pid), "the postmaster runs");
    (child, pid)
}

/// The scratch directories of embedded clusters in `tmp`.
fn cluster_dirs(tmp: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(tmp)
        .expect("the scratch directory")
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("dbos-bench-pg-")
        })
        .map(|e| e.path())
        .collect()
}

#[test]
fn a_run_stopped_by_sigterm_stops_its_postgres_and_removes_its_scratch_directory() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (mut child, postmaster) = start_run(tmp.path());
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).expect("signalled");
    let status = child.wait().expect("the run ends");
    let stderr = std::fs::read_to_string(tmp.path().join("stderr")).expect("its log");
    assert_eq!(status.code(), Some(128 + 15), "exit status 143:\n{stderr}");
    assert!(
        stderr.contains("interrupted by SIGTERM"),
        "it says why it stopped:\n{stderr}"
    );
    // The run stopped its server before it exited.
    assert!(
        !support::process_alive(postmaster),
        "the postmaster has quit"
    );
    assert!(
        cluster_dirs(tmp.path()).is_empty(),
        "the scratch directory is removed"
    );
}

#[test]
fn a_killed_run_leaves_no_postgres_running() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (mut child, postmaster) = start_run(tmp.path());
    child.kill().expect("SIGKILL sent");
    child.wait().expect("the run ends");
    support::eventually("the postmaster of the killed run has quit", || {
        !support::process_alive(postmaster)
    });
}
