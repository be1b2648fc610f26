//! A `dbos bench` run stopped by a signal leaves nothing running: its node and embedded Postgres
//! stop and its scratch directory goes; killed outright, its Postgres still quits.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// A run of `dbos bench`, killed if a test ends before it does.
struct Run {
    child: Child,
    stderr: PathBuf,
}

impl Run {
    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// What the run wrote to stderr.
    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A run of the ceiling suite long enough to be interrupted, with its scratch directories in
/// `tmp`; returns once it has begun measuring, with its postmaster's pid.
fn start_run(tmp: &Path) -> (Run, i32) {
    std::fs::set_permissions(tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("the embedded Postgres's user can reach the scratch directory");
    let results = tmp.join("results");
    let stderr = tmp.join("stderr");
    let child = support::dbos()
        .args(["bench", "ceiling", "--run-secs", "60", "--results-dir"])
        .arg(&results)
        .env("TMPDIR", tmp)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).expect("a log file"))
        .spawn()
        .expect("dbos bench starts");
    let mut run = Run { child, stderr };
    support::eventually("the run has begun measuring", || {
        if let Some(status) = run.child.try_wait().expect("the run's status") {
            panic!(
                "dbos bench ended ({status}) before measuring:\n{}",
                run.stderr()
            );
        }
        results.join("_environment.json").exists()
    });
    let dirs = cluster_dirs(tmp);
    assert_eq!(dirs.len(), 1, "one scratch cluster: {dirs:?}");
    let pid = support::postmaster_pid(&dirs[0].join("data")).expect("the postmaster's pid file");
    assert!(support::process_alive(pid), "the postmaster runs");
    (run, pid)
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
    let (mut run, postmaster) = start_run(tmp.path());
    kill(run.pid(), Signal::SIGTERM).expect("signalled");
    let status = run.child.wait().expect("the run ends");
    let stderr = run.stderr();
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
    let (mut run, postmaster) = start_run(tmp.path());
    run.child.kill().expect("SIGKILL sent");
    run.child.wait().expect("the run ends");
    support::eventually("the postmaster of the killed run has quit", || {
        !support::process_alive(postmaster)
    });
}
