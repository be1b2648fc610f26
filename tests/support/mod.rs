//! Shared fixtures of the end-to-end tests: running the real `dbos` binary.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The `dbos` binary under test.
pub fn dbos() -> Command {
    dbos_kernel::testing::watchdog();
    let mut c = Command::new(env!("CARGO_BIN_EXE_dbos"));
    c.env_remove("DATABASE_URL")
        .env_remove("DBOS_DATA_DIR")
        .env("RUST_LOG", "warn");
    c
}

/// Runs `dbos ARGS` to completion.
pub fn run(args: &[&str]) -> Output {
    dbos().args(args).output().expect("the dbos binary runs")
}

/// `dbos ARGS` that must succeed; returns its stdout.
pub fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "dbos {args:?} failed with {}:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// `dbos sql --json QUERY` on a data directory, parsed.
pub fn sql_json(data_dir: &Path, query: &str) -> serde_json::Value {
    let out = ok(&["sql", "--data-dir", path(data_dir), "--json", query]);
    serde_json::from_str(&out).expect("JSON rows")
}

pub fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A `dbos boot` running in the background.
pub struct Node {
    pub child: Child,
    pub node_id: String,
    pub url: String,
    pub data_dir: PathBuf,
    /// The dashboard's address (`host:port`), when booted with `--http`.
    pub http: Option<String>,
}

impl Node {
    /// Boots a node on `data_dir` and waits until it prints its identity.
    pub fn boot(data_dir: &Path, extra: &[&str]) -> Node {
        Node::boot_env(data_dir, extra, &[])
    }

    /// As [`Node::boot`], with extra environment variables for the node.
    pub fn boot_env(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Node {
        let mut child = dbos()
            .envs(env.iter().copied())
            .args(["boot", "--data-dir", path(data_dir)])
            .args(["--heartbeat-interval-ms", "200", "--node-lease-ms", "2000"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("dbos boot starts");
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (mut node_id, mut url, mut http) = (None, None, None);
        let wants_http = extra.contains(&"--http");
        while node_id.is_none() || url.is_none() || (wants_http && http.is_none()) {
            let line = rx
                .recv_timeout(Duration::from_secs(120))
                .unwrap_or_else(|_| {
                    panic!("dbos boot printed its identity ({:?})", child.try_wait())
                });
            if let Some(id) = line.strip_prefix("node ") {
                node_id = Some(id.to_owned());
            } else if let Some(u) = line.strip_prefix("database ") {
                url = Some(u.to_owned());
            } else if let Some(h) = line.strip_prefix("http http://") {
                http = Some(h.trim_end_matches('/').to_owned());
            }
        }
        Node {
            child,
            node_id: node_id.expect("set"),
            url: url.expect("set"),
            data_dir: data_dir.to_owned(),
            http,
        }
    }

    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), sig).expect("signal the node");
    }

    /// Waits for the node to exit; returns whether it exited successfully.
    pub fn wait(mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.success();
            }
            assert!(Instant::now() < deadline, "the node exits");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL, and reap.
    pub fn kill9(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
    }
}

impl Drop for Node {
    /// A test that fails midway must not leave its node running (holding the test's output
    /// pipes open and its cluster alive).
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The pid of the data directory's postmaster, if its pid file exists.
pub fn postmaster_pid(data_dir: &Path) -> Option<i32> {
    std::fs::read_to_string(data_dir.join("pgdata/postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .parse()
        .ok()
}

/// Whether process `pid` runs: one that has exited counts as gone though its parent (for an
/// orphaned server, whatever reaps orphans) may not have reaped it yet.
pub fn process_alive(pid: i32) -> bool {
    !dbos_kernel::testing::process_gone(pid)
}

/// A directory inside `parent` that command tasks may write to: on a node running as root they
/// run as the unprivileged task user, not as the test's user.
pub fn task_writable_dir(parent: &Path) -> PathBuf {
    let dir = parent.join("shared");
    std::fs::create_dir_all(&dir).expect("the shared directory");
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
        .expect("its mode");
    dir
}

/// Says loudly that a test cannot run here because `why`, so its caller returns early; under
/// `CI=true` it fails the test instead, as CI must run every test.
pub fn prerequisite_missing(why: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "this test cannot run under CI: {why}"
    );
    eprintln!("NOTICE: test skipped: {why}");
}

/// Polls `f` until it returns true or a generous deadline passes.
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `pg_ctl restart -m immediate` on the embedded cluster of a data directory.
pub fn pg_ctl_restart(data_dir: &Path) {
    pg_ctl(data_dir, &["restart", "-m", "immediate", "-w"]);
}

/// Runs `pg_ctl ACTION -D DATA_DIR/pgdata` as the user that owns the cluster's data (the
/// unprivileged Postgres user when the tests run as root); panics unless it succeeds.
pub fn pg_ctl(data_dir: &Path, action: &[&str]) {
    let pgdata = data_dir.join("pgdata");
    let log = std::env::temp_dir().join(format!("pg-ctl-{}.log", std::process::id()));
    let mut args: Vec<String> = action.iter().map(|s| (*s).to_owned()).collect();
    args.extend([
        "-D".into(),
        path(&pgdata).into(),
        "-l".into(),
        path(&log).into(),
    ]);
    let status = if nix::unistd::Uid::effective().is_root() {
        let owner = std::fs::metadata(&pgdata).expect("pgdata");
        let owner = std::os::unix::fs::MetadataExt::uid(&owner);
        let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(owner))
            .expect("user")
            .expect("the data dir's owner exists");
        let mut cmd = vec![path(&pg_ctl_binary()).to_owned()];
        cmd.extend(args);
        // Run from the data directory: Postgres 15's programs return to their working
        // directory, which the owner may not be allowed to enter (a checkout under /root).
        Command::new("su")
            .args([&user.name, "-s", "/bin/sh", "-c"])
            .arg(cmd.join(" "))
            .current_dir(&pgdata)
            .status()
    } else {
        Command::new(pg_ctl_binary()).args(&args).status()
    }
    .expect("pg_ctl runs");
    assert!(status.success(), "pg_ctl {action:?}");
}

/// The `pg_ctl` beside the `postgres` the kernel finds.
fn pg_ctl_binary() -> PathBuf {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("pg_ctl"))
                .collect()
        })
        .unwrap_or_default();
    if let Ok(dirs) = std::fs::read_dir("/usr/lib/postgresql") {
        candidates.extend(dirs.flatten().map(|d| d.path().join("bin/pg_ctl")));
    }
    candidates
        .into_iter()
        .find(|p| p.exists())
        .expect("pg_ctl is installed with the Postgres server (scripts/setup)")
}

pub mod ha;
pub mod netns;
pub mod python;
