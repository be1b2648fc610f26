//! Running a Linux command for a command task: its own process group, output delivered in
//! bounded chunks as it is produced, a timeout, and cancellation that reaches the whole group.
//!
//! **Nothing of a command outlives its node.** Each group is led by a watcher, a `/bin/sh`
//! that does nothing but read the node's *lifeline*: a pipe whose write end only the node
//! process holds (close-on-exec, so no command inherits it). However the node ends — a clean
//! exit, a panic, SIGKILL — the kernel closes that end, the watcher's read returns end-of-file
//! and the watcher kills its whole group, grandchildren included. The watcher ignores the
//! signals a cancel sends, so it stays until the node ends or the group is done.
//!
//! **Nor does it outlive its node's lease.** A node stalled by `SIGSTOP` (or starved) is
//! alive, so its lifeline stays open, yet another node may take its work over once its lease
//! expires. Given the node's lease, the watcher (then `bash`, whose `read` has a timeout) reads
//! a pipe of its own run instead, to which the node writes a line every sixth of the
//! watcher's deadline while it holds its lease; a watcher that hears nothing for a third of
//! the lease kills the group. The node stops pinging at its local deadline (two thirds of the
//! lease), so the group is gone by the time the lease has expired. A group killed so is said
//! ([`CommandResult::stalled`]): the run is released, not recorded. A supervisor
//! process of our own would need a hook in every embedding program's `main`, a subreaper
//! only moves orphans to the node (which is the process that died), and cgroups need root or
//! a delegated hierarchy; a pipe and `sh` work everywhere, for any user.

use std::collections::BTreeMap;
use std::future::Future;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::Error;

/// What to run: the input of the `dbos.command` workflow.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandSpec {
    /// Program and arguments; the program is looked up on `PATH` unless it contains a `/`.
    pub argv: Vec<String>,
    /// Extra environment variables (the node's environment is inherited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    /// Working directory; the node's when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// The process group is stopped after this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Text written to the program's standard input (then closed); empty input when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// For command tasks: when the node dies while the command runs, record the loss instead
    /// of running it again on the node that recovers the task.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_retry: bool,
    /// User to run as, instead of the node's task user; only one the node allows
    /// ([`Limits::allowed_users`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

impl CommandSpec {
    /// Checks the spec before anything runs.
    ///
    /// # Errors
    /// [`Error::Invalid`] for an empty argv, an empty program name, a NUL byte, or a zero
    /// timeout.
    pub fn validate(&self) -> Result<(), Error> {
        let Some(program) = self.argv.first() else {
            return Err(Error::Invalid(
                "command: argv is empty: give the program and its arguments".into(),
            ));
        };
        if program.is_empty() {
            return Err(Error::Invalid(
                "command: argv[0] (the program) is empty".into(),
            ));
        }
        let all = self
            .argv
            .iter()
            .chain(self.env.iter().flat_map(|e| e.keys().chain(e.values())))
            .chain(self.cwd.iter());
        if all.clone().any(|s| s.contains('\0')) {
            return Err(Error::Invalid(
                "command: argv, env and cwd must not contain NUL bytes".into(),
            ));
        }
        if self
            .env
            .iter()
            .flat_map(|e| e.keys())
            .any(|k| k.is_empty() || k.contains('='))
        {
            return Err(Error::Invalid(
                "command: environment variable names must be non-empty and without '='".into(),
            ));
        }
        if self.timeout_ms == Some(0) {
            return Err(Error::Invalid(
                "command: timeout_ms must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// How the command ended.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CommandResult {
    /// Exit code, when it exited.
    pub exit_code: Option<i32>,
    /// Signal that ended it, when one did.
    pub signal: Option<i32>,
    /// Wall-clock run time in ms.
    pub duration_ms: u64,
    /// Bytes the program wrote to standard output (all of them, kept or not).
    pub stdout_bytes: u64,
    /// Bytes the program wrote to standard error.
    pub stderr_bytes: u64,
    /// Whether output beyond `output_bytes_max` was dropped.
    pub truncated: bool,
    /// Whether the timeout stopped it.
    pub timed_out: bool,
    /// Whether a cancellation stopped it.
    pub cancelled: bool,
    /// Whether its watcher killed it because the node stopped telling it that it holds its
    /// lease (stalled, or starved): the run says nothing about the command.
    #[serde(skip)]
    pub stalled: bool,
}

impl CommandResult {
    /// Whether the command exited with code 0.
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0)
    }

    /// One line saying how it ended.
    pub fn describe(&self) -> String {
        if self.timed_out {
            format!("timed out after {} ms", self.duration_ms)
        } else if self.cancelled {
            "cancelled".to_owned()
        } else if let Some(c) = self.exit_code {
            format!("exited with code {c}")
        } else if let Some(s) = self.signal {
            let name = Signal::try_from(s).map(|s| s.as_str()).unwrap_or("unknown");
            format!("killed by signal {s} ({name})")
        } else {
            "ended".to_owned()
        }
    }
}

/// Which output stream a chunk came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl Output {
    /// The workflow stream key the chunk goes to.
    pub fn key(self) -> &'static str {
        match self {
            Output::Stdout => "stdout",
            Output::Stderr => "stderr",
        }
    }
}

/// The unprivileged user a node running as root runs command tasks as, unless told otherwise
/// (`scripts/setup` creates it).
pub const DEFAULT_TASK_USER: &str = "dbos-task";

/// Variables of the node's environment a command does not inherit unless its spec sets them:
/// they carry the database's password.
pub const SECRET_ENV: &[&str] = &["DATABASE_URL", "PGPASSWORD", "PGPASSFILE"];

/// Who runs command tasks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunAs {
    /// The node's own user; but a node running as root runs them as [`DEFAULT_TASK_USER`].
    #[default]
    Default,
    /// This user. A node not running as root can only name its own user; `root` (on a node
    /// running as root) runs tasks as root, an explicit opt-in.
    User(String),
}

/// A user a command runs as, resolved from [`RunAs`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskUser {
    /// Its name.
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// Its primary gid.
    pub gid: u32,
    /// Its home directory: the working directory of a command that names none.
    pub home: std::path::PathBuf,
}

impl RunAs {
    /// The user to switch to; `None` to run as the node's own user.
    ///
    /// # Errors
    /// [`Error::TaskUser`]: the user does not exist, or the node cannot switch users.
    pub fn resolve(&self) -> Result<Option<TaskUser>, Error> {
        let root = nix::unistd::Uid::effective().is_root();
        let name = match (self, root) {
            (RunAs::Default, false) => return Ok(None),
            (RunAs::Default, true) => DEFAULT_TASK_USER,
            (RunAs::User(name), true) if name == "root" => return Ok(None),
            (RunAs::User(name), true) => name.as_str(),
            (RunAs::User(name), false) => {
                let me = nix::unistd::User::from_uid(nix::unistd::Uid::effective())
                    .ok()
                    .flatten()
                    .map(|u| u.name);
                if me.as_deref() == Some(name.as_str()) {
                    return Ok(None);
                }
                return Err(Error::TaskUser(format!(
                    "tasks cannot run as {name:?}: only a node running as root runs them as \
                     another user"
                )));
            }
        };
        match nix::unistd::User::from_name(name) {
            Ok(Some(u)) => Ok(Some(TaskUser {
                name: u.name,
                uid: u.uid.as_raw(),
                gid: u.gid.as_raw(),
                home: u.dir,
            })),
            Ok(None) if name == DEFAULT_TASK_USER => Err(Error::TaskUser(format!(
                "the user {name:?} that runs command tasks on a node running as root does not \
                 exist: run scripts/setup (it creates it), or give --task-user USER \
                 (--task-user root runs tasks as root)"
            ))),
            Ok(None) => Err(Error::TaskUser(format!(
                "the task user {name:?} does not exist"
            ))),
            Err(e) => Err(Error::TaskUser(format!(
                "cannot look up the task user {name:?}: {e}"
            ))),
        }
    }
}

/// Limits of command tasks.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Output kept per stream; the rest is counted and dropped, with a marker.
    pub output_bytes_max: u64,
    /// Largest chunk handed over at once.
    pub chunk_bytes_max: usize,
    /// Pause after SIGTERM before SIGKILL, when stopping a process group.
    pub kill_grace_ms: u64,
    /// Who runs the commands.
    pub run_as: RunAs,
    /// Users a command may ask to run as ([`CommandSpec::user`]); none by default, since
    /// anyone who can write a row can submit a command.
    pub allowed_users: Vec<String>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            output_bytes_max: 16 << 20,
            chunk_bytes_max: 64 << 10,
            kill_grace_ms: 5_000,
            run_as: RunAs::Default,
            allowed_users: Vec::new(),
        }
    }
}

/// Marker appended (once per stream) where output beyond the limit was dropped.
pub fn truncation_marker(limit: u64) -> String {
    format!("\n[output truncated: more than {limit} bytes]\n")
}

/// Runs `spec` in its own process group. Output chunks go to `sink` as they are produced
/// (awaited, so a slow sink slows the reader, never memory); `cancelled` resolving stops the
/// group (SIGTERM, then SIGKILL after the grace period), as does the timeout.
///
/// # Errors
/// [`Error::Invalid`], [`Error::Spawn`] when the program cannot start, [`Error::Io`].
///
/// With the node's `lease`, the group dies a third of the lease after the node last held it
/// (see the module's documentation); without, only with the node process.
///
/// # Cancel safety
/// Dropping the future kills the process group (the child is spawned with `kill_on_drop`, and
/// the group is signalled).
pub async fn run<S, SF, C>(
    spec: &CommandSpec,
    limits: &Limits,
    mut sink: S,
    cancelled: C,
    lease: Option<&dbos_kernel::Lease>,
) -> Result<CommandResult, Error>
where
    S: FnMut(Output, String) -> SF,
    SF: Future<Output = ()>,
    C: Future<Output = ()>,
{
    spec.validate()?;
    let user = match &spec.user {
        None => limits.run_as.resolve()?,
        Some(u) if limits.allowed_users.contains(u) => RunAs::User(u.clone()).resolve()?,
        Some(u) => {
            return Err(Error::TaskUser(format!(
                "the task asks to run as {}, which this node does not allow \
                 (dbos boot --allow-task-user USER)",
                dbos_store::limits::shown(u)
            )))
        }
    };
    let mut cmd = tokio::process::Command::new(&spec.argv[0]);
    cmd.args(&spec.argv[1..])
        .stdin(if spec.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for secret in SECRET_ENV {
        cmd.env_remove(secret);
    }
    if let Some(u) = &user {
        // As `su` would: the user's identity (std drops the supplementary groups), its
        // variables, and its home as the working directory unless the spec names one.
        cmd.uid(u.uid).gid(u.gid);
        cmd.env("USER", &u.name).env("LOGNAME", &u.name);
        cmd.env("HOME", &u.home);
        if spec.cwd.is_none() {
            let home = Some(u.home.as_path()).filter(|h| h.is_dir());
            cmd.current_dir(home.unwrap_or(std::path::Path::new("/")));
        }
    }
    if let Some(env) = &spec.env {
        cmd.envs(env);
    }
    if let Some(cwd) = &spec.cwd {
        // Said as such: a missing directory would otherwise read as a missing program.
        match std::fs::metadata(cwd) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(Error::Cwd {
                    cwd: cwd.clone(),
                    source: std::io::Error::from_raw_os_error(nix::libc::ENOTDIR),
                })
            }
            Err(source) => {
                return Err(Error::Cwd {
                    cwd: cwd.clone(),
                    source,
                })
            }
        }
        cmd.current_dir(cwd);
    }
    // The group is the watcher's, joined before the program runs, so there is no instant at
    // which the program runs unwatched. Without a watcher (no `/bin/sh`) the program leads a
    // group of its own, and only the leader dies with the node.
    let silence_max = lease.map(|l| l.local_deadline() / 2);
    let (watcher, keepalive) = match spawn_watcher(silence_max) {
        Some((w, k)) => (Some(w), k),
        None => (None, None),
    };
    let group = match &watcher {
        Some(w) => w.id().map(|p| p as i32),
        None => None,
    };
    cmd.process_group(group.unwrap_or(0));
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
    let started = Instant::now();
    let spawned = cmd.spawn();
    let pgid = group
        .or_else(|| spawned.as_ref().ok().and_then(|c| c.id()).map(|p| p as i32))
        .map(Pid::from_raw);
    let mut group_guard = GroupGuard(pgid, watcher);
    let mut child = spawned.map_err(|source| Error::Spawn {
        program: spec.argv[0].clone(),
        cwd: spec.cwd.clone(),
        source,
    })?;
    if let (Some(text), Some(mut stdin)) = (spec.stdin.clone(), child.stdin.take()) {
        tokio::spawn(async move {
            // A program that does not read its input closes the pipe: not an error.
            let _ = stdin.write_all(text.as_bytes()).await;
        });
    }
    let (tx, mut rx) = mpsc::channel::<(Output, Vec<u8>)>(4);
    let readers = [
        child
            .stdout
            .take()
            .map(|r| tokio::spawn(pump(r, Output::Stdout, tx.clone(), limits.chunk_bytes_max))),
        child
            .stderr
            .take()
            .map(|r| tokio::spawn(pump(r, Output::Stderr, tx.clone(), limits.chunk_bytes_max))),
    ];
    drop(tx);
    let mut result = CommandResult::default();
    let timeout = spec.timeout_ms.map(Duration::from_millis);
    let deadline = tokio::time::sleep(timeout.unwrap_or(Duration::from_secs(u64::MAX / 4)));
    tokio::pin!(deadline, cancelled);
    let mut stopping = false;
    let mut output_done = false;
    let mut ping = tokio::time::interval(silence_max.map_or(Duration::from_secs(3600), |d| d / 6));
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let status = loop {
        tokio::select! {
            _ = ping.tick(), if keepalive.is_some() => {
                if let (Some(fd), Some(lease)) = (&keepalive, lease) {
                    if lease.is_held() {
                        // A full pipe (a watcher stopped with its group) loses a ping, no more.
                        let _ = nix::unistd::write(fd, b"\n");
                    }
                }
            }
            chunk = rx.recv(), if !output_done => match chunk {
                Some((which, bytes)) => deliver(&mut result, limits, which, bytes, &mut sink).await,
                None => output_done = true,
            },
            status = child.wait() => break status?,
            () = &mut deadline, if !stopping && timeout.is_some() => {
                result.timed_out = true;
                stopping = true;
                stop_group(pgid, limits.kill_grace_ms);
            }
            () = &mut cancelled, if !stopping => {
                result.cancelled = true;
                stopping = true;
                stop_group(pgid, limits.kill_grace_ms);
            }
        }
    };
    // Killed by SIGKILL that this node did not send: its watcher's, when the watcher is gone
    // too (it kills its own group, itself included), or someone else's (the OOM killer).
    if !stopping && keepalive.is_some() && status.signal() == Some(Signal::SIGKILL as i32) {
        if let Some(w) = group_guard.1.as_mut() {
            result.stalled = tokio::time::timeout(Duration::from_millis(500), w.wait())
                .await
                .is_ok();
        }
    }
    drop(keepalive);
    // The leader is gone: nothing of the group may outlive it (that also closes the pipes that
    // background processes held open), then the output still buffered is delivered.
    if let Some(pgid) = pgid {
        let _ = killpg(pgid, Signal::SIGKILL);
    }
    while let Some((which, bytes)) = rx.recv().await {
        deliver(&mut result, limits, which, bytes, &mut sink).await;
    }
    for r in readers.into_iter().flatten() {
        let _ = r.await;
    }
    result.duration_ms = started.elapsed().as_millis() as u64;
    result.exit_code = status.code();
    result.signal = status.signal();
    // For the workflow step running it: who ran what, and how it ended.
    dbos_kernel::prov::note(|| {
        let who = user.as_ref().map(|u| u.name.clone()).or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::Uid::effective())
                .ok()
                .flatten()
                .map(|u| u.name)
        });
        dbos_kernel::prov::Event {
            kind: "command",
            object: Some(spec.argv.join(" ")),
            inode: None,
            bytes: Some((result.stdout_bytes + result.stderr_bytes) as i64),
            detail: Some(serde_json::json!({
                "argv": spec.argv,
                "user": who,
                "cwd": spec.cwd,
                "exit_code": result.exit_code,
                "signal": result.signal,
                "timed_out": result.timed_out,
                "cancelled": result.cancelled,
            })),
        }
    });
    Ok(result)
}

async fn deliver<S, SF>(
    result: &mut CommandResult,
    limits: &Limits,
    which: Output,
    bytes: Vec<u8>,
    sink: &mut S,
) where
    S: FnMut(Output, String) -> SF,
    SF: Future<Output = ()>,
{
    let count = match which {
        Output::Stdout => &mut result.stdout_bytes,
        Output::Stderr => &mut result.stderr_bytes,
    };
    let before = *count;
    *count += bytes.len() as u64;
    let limit = limits.output_bytes_max;
    if before < limit {
        let room = (limit - before) as usize;
        let keep = &bytes[..bytes.len().min(room)];
        // Cut at the limit, a character is dropped whole rather than decoded in part.
        let keep = if keep.len() < bytes.len() {
            &keep[..utf8_whole_prefix(keep)]
        } else {
            keep
        };
        sink(which, String::from_utf8_lossy(keep).into_owned()).await;
    }
    // The first chunk past the limit (even one that starts exactly at it) adds the marker.
    if before <= limit && *count > limit {
        result.truncated = true;
        sink(which, truncation_marker(limit)).await;
    }
}

/// Reads `r` in chunks of at most `chunk_max` bytes into `tx`. A character whose UTF-8 bytes
/// a read splits goes whole with the next chunk, so each chunk, which is stored as text on
/// its own, decodes as the program wrote it.
async fn pump<R: AsyncRead + Unpin>(
    mut r: R,
    which: Output,
    tx: mpsc::Sender<(Output, Vec<u8>)>,
    chunk_max: usize,
) {
    let mut buf = vec![0u8; chunk_max.max(1)];
    let mut carry: Vec<u8> = Vec::new();
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => {
                if !carry.is_empty() {
                    let _ = tx.send((which, carry)).await;
                }
                return;
            }
            Ok(n) => {
                let mut chunk = std::mem::take(&mut carry);
                chunk.extend_from_slice(&buf[..n]);
                let whole = utf8_whole_prefix(&chunk);
                carry = chunk.split_off(whole);
                if !chunk.is_empty() && tx.send((which, chunk)).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The length of `b` without a UTF-8 sequence left incomplete at its end (at most 3 bytes
/// shorter). Bytes that are no UTF-8 at all are left in: nothing would complete them.
fn utf8_whole_prefix(b: &[u8]) -> usize {
    let n = b.len();
    for back in 1..=n.min(3) {
        let c = b[n - back];
        if c & 0xC0 == 0x80 {
            continue;
        }
        let len = match c {
            0xF0..=0xF7 => 4,
            0xE0..=0xEF => 3,
            0xC0..=0xDF => 2,
            _ => 1,
        };
        return if len > back { n - back } else { n };
    }
    n
}

/// SIGTERM to the group now, SIGKILL after the grace period.
fn stop_group(pgid: Option<Pid>, grace_ms: u64) {
    let Some(pgid) = pgid else { return };
    let _ = killpg(pgid, Signal::SIGTERM);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(grace_ms)).await;
        let _ = killpg(pgid, Signal::SIGKILL);
    });
}

/// Kills what is left of the group (the watcher with it) when the run ends or is dropped.
struct GroupGuard(Option<Pid>, Option<tokio::process::Child>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
        if let Some(mut watcher) = self.1.take() {
            // Reaped here when it is already gone, else by tokio once it is.
            let _ = watcher.try_wait();
        }
    }
}

/// The read end of this process's lifeline; the write end is kept open (and never written)
/// for as long as the process lives. `None` when the pipe could not be made.
fn lifeline() -> Option<&'static OwnedFd> {
    static LIFELINE: OnceLock<Option<(OwnedFd, OwnedFd)>> = OnceLock::new();
    LIFELINE
        .get_or_init(|| {
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(|e| tracing::warn!("no lifeline pipe for command groups: {e}"))
                .ok()
        })
        .as_ref()
        .map(|(read, _write)| read)
}

/// What a watcher runs: wait for the lifeline's end-of-file, then kill the group. A cancel's
/// SIGTERM to the group must not end the watcher before the program.
const WATCHER_SCRIPT: &str = "trap '' HUP INT QUIT TERM; read -r _; kill -s KILL 0";

/// What a watcher with a deadline runs (`bash`, for `read -t`; `$1` the deadline in seconds):
/// read the node's pings until one is late or the pipe ends, then kill the group.
const KEEPALIVE_SCRIPT: &str =
    "trap '' HUP INT QUIT TERM; while read -r -t \"$1\" _; do :; done; kill -s KILL 0";

/// Where `bash` is, if anywhere.
fn bash() -> Option<&'static str> {
    static BASH: OnceLock<Option<&'static str>> = OnceLock::new();
    *BASH.get_or_init(|| {
        let found = ["/bin/bash", "/usr/bin/bash"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists());
        if found.is_none() {
            tracing::warn!("no bash: a command group dies with its node, not with its lease");
        }
        found
    })
}

/// Starts a watcher leading a new process group. With a `deadline` (and `bash`), it reads a
/// pipe of its own, whose write end (close-on-exec, non-blocking) is returned for the pings;
/// otherwise the lifeline.
fn spawn_watcher(deadline: Option<Duration>) -> Option<(tokio::process::Child, Option<OwnedFd>)> {
    // A pipe that cannot be made leaves the lifeline watcher, as without bash.
    let kept = match (deadline, bash()) {
        (Some(d), Some(bash)) => nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .ok()
            .filter(|(_, write)| {
                nix::fcntl::fcntl(
                    std::os::fd::AsRawFd::as_raw_fd(write),
                    nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
                )
                .is_ok()
            })
            .map(|(read, write)| (bash, d, read, write)),
        _ => None,
    };
    let (mut w, keepalive) = match kept {
        Some((bash, deadline, read, write)) => {
            let mut w = tokio::process::Command::new(bash);
            w.args(["-c", KEEPALIVE_SCRIPT, "watcher"])
                .arg(format!("{:.3}", deadline.as_secs_f64()))
                .stdin(Stdio::from(read));
            (w, Some(write))
        }
        None => {
            let read = lifeline()?.try_clone().ok()?;
            let mut w = tokio::process::Command::new("/bin/sh");
            w.args(["-c", WATCHER_SCRIPT]).stdin(Stdio::from(read));
            (w, None)
        }
    };
    w.stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    match w.spawn() {
        Ok(child) => Some((child, keepalive)),
        Err(e) => {
            tracing::warn!(
                "no watcher for a command group (it dies with the node only in part): {e}"
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Any JSON text decodes to a command spec or is refused, and a decoded spec is valid
        /// or refused by `validate`; never a panic.
        #[test]
        fn any_command_spec_is_decoded_and_checked_or_refused(
            argv in proptest::collection::vec("\\PC{0,12}", 0..4),
            cwd in proptest::option::of("\\PC{0,12}"),
            timeout in proptest::option::of(0u64..10),
            noise in "\\PC{0,40}",
        ) {
            let json = serde_json::json!({"argv": argv, "cwd": cwd, "timeout_ms": timeout});
            if let Ok(spec) = serde_json::from_value::<CommandSpec>(json) {
                if spec.validate().is_ok() {
                    proptest::prop_assert!(!spec.argv.is_empty() && !spec.argv[0].is_empty());
                    proptest::prop_assert!(spec.timeout_ms != Some(0));
                }
            }
            let _ = serde_json::from_str::<CommandSpec>(&noise).map(|s| s.validate());
        }
    }
    proptest::proptest! {
        /// Read in chunks of any size, any text arrives whole, every chunk decoding on its own.
        #[test]
        fn output_read_in_any_chunks_keeps_every_character(
            text in "\\PC{0,64}",
            chunk in 1usize..8,
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let chunks = rt.block_on(async {
                let (tx, mut rx) = mpsc::channel(1024);
                pump(text.as_bytes(), Output::Stdout, tx, chunk).await;
                let mut chunks = Vec::new();
                while let Ok((_, c)) = rx.try_recv() {
                    chunks.push(c);
                }
                chunks
            });
            let mut joined = String::new();
            for c in &chunks {
                let part = std::str::from_utf8(c);
                proptest::prop_assert!(part.is_ok(), "{c:?}");
                joined.push_str(part.unwrap());
            }
            proptest::prop_assert_eq!(joined, text);
        }
    }

    #[test]
    fn a_cut_keeps_only_whole_characters() {
        let euro = "€".as_bytes();
        assert_eq!(utf8_whole_prefix(euro), 3);
        assert_eq!(utf8_whole_prefix(&euro[..2]), 0);
        assert_eq!(utf8_whole_prefix(b"ab\xF0\x9F\x98"), 2);
        assert_eq!(utf8_whole_prefix(b"ab\xFF"), 3, "no UTF-8: left in");
        assert_eq!(utf8_whole_prefix(b""), 0);
    }

    use std::sync::{Arc, Mutex};

    fn spec(argv: &[&str]) -> CommandSpec {
        CommandSpec {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            ..CommandSpec::default()
        }
    }

    async fn collect(
        s: &CommandSpec,
        limits: &Limits,
    ) -> (Result<CommandResult, Error>, String, String) {
        let out = Arc::new(Mutex::new((String::new(), String::new())));
        let o = out.clone();
        let r = run(
            s,
            limits,
            move |which, text| {
                let o = o.clone();
                async move {
                    let mut g = o.lock().expect("lock");
                    match which {
                        Output::Stdout => g.0.push_str(&text),
                        Output::Stderr => g.1.push_str(&text),
                    }
                }
            },
            std::future::pending(),
            None,
        )
        .await;
        let g = out.lock().expect("lock").clone();
        (r, g.0, g.1)
    }

    /// Runs `argv` under `lease`, which nothing renews; its result and standard output.
    async fn under_lease(argv: &[&str], lease: &dbos_kernel::Lease) -> (CommandResult, String) {
        let out = Arc::new(Mutex::new(String::new()));
        let o = out.clone();
        let r = run(
            &spec(argv),
            &Limits::default(),
            move |_, text| {
                let o = o.clone();
                async move { o.lock().expect("lock").push_str(&text) }
            },
            std::future::pending(),
            Some(lease),
        )
        .await
        .expect("run");
        let text = out.lock().expect("lock").clone();
        (r, text)
    }

    #[tokio::test]
    async fn a_group_outlives_its_watchers_deadline_while_the_lease_is_held_and_no_longer() {
        // Held for 3 s: the watcher hears from the node, though 2 s exceeds its deadline.
        let held = dbos_kernel::Lease::new(Duration::from_secs(3));
        let (r, _) = under_lease(&["sleep", "2"], &held).await;
        assert!(r.succeeded() && !r.stalled, "{r:?}");
        // Held for 0.6 s, then not: the node stops pinging and the watcher kills the group,
        // its background processes included, and says so.
        let lost = dbos_kernel::Lease::new(Duration::from_millis(600));
        let (r, out) = under_lease(&["sh", "-c", "sleep 600 & echo $!; wait"], &lost).await;
        assert!(r.stalled && r.signal == Some(9), "{r:?}");
        let pid: i32 = out.trim().parse().expect("a pid");
        assert!(
            dbos_kernel::testing::process_gone(pid),
            "the group's background process is gone"
        );
    }

    #[tokio::test]
    async fn output_exit_code_env_cwd_and_stdin() {
        let dir = tempfile::tempdir().expect("dir");
        let mut s = spec(&[
            "sh",
            "-c",
            "echo out; echo err >&2; echo $GREETING; pwd; cat; exit 3",
        ]);
        s.env = Some([("GREETING".to_string(), "hello".to_string())].into());
        s.cwd = Some(dir.path().display().to_string());
        s.stdin = Some("from stdin\n".into());
        let (r, out, err) = collect(&s, &Limits::default()).await;
        let r = r.expect("ran");
        assert_eq!(r.exit_code, Some(3));
        assert!(!r.succeeded());
        let cwd = dir.path().canonicalize().expect("canonical");
        assert_eq!(out, format!("out\nhello\n{}\nfrom stdin\n", cwd.display()));
        assert_eq!(err, "err\n");
        assert_eq!(r.stdout_bytes, out.len() as u64);
        assert_eq!(r.describe(), "exited with code 3");
    }

    #[tokio::test]
    async fn output_over_the_limit_is_truncated_with_a_marker() {
        let limits = Limits {
            output_bytes_max: 1000,
            ..Limits::default()
        };
        let (r, out, _) = collect(
            &spec(&["sh", "-c", "head -c 100000 /dev/zero | tr '\\0' x"]),
            &limits,
        )
        .await;
        let r = r.expect("ran");
        assert!(r.truncated);
        assert_eq!(r.stdout_bytes, 100_000);
        assert_eq!(
            out,
            format!("{}{}", "x".repeat(1000), truncation_marker(1000))
        );
    }

    #[tokio::test]
    async fn a_chunk_ending_exactly_at_the_limit_still_gets_the_marker_after_it() {
        let limits = Limits {
            output_bytes_max: 8,
            ..Limits::default()
        };
        let mut result = CommandResult::default();
        let mut out = Vec::new();
        let mut sink = |_: Output, text: String| {
            out.push(text);
            async {}
        };
        for chunk in ["abcd", "efgh", "ij", "kl"] {
            deliver(
                &mut result,
                &limits,
                Output::Stdout,
                chunk.into(),
                &mut sink,
            )
            .await;
        }
        assert!(result.truncated);
        assert_eq!(result.stdout_bytes, 12);
        assert_eq!(
            out,
            vec!["abcd".to_owned(), "efgh".into(), truncation_marker(8)]
        );
    }

    #[tokio::test]
    async fn a_timeout_stops_the_whole_group() {
        let mut s = spec(&["sh", "-c", "sleep 300 & echo $! ; wait"]);
        // Long enough for the shell to print the pid first on a loaded machine.
        s.timeout_ms = Some(2_000);
        let (r, out, _) = collect(&s, &Limits::default()).await;
        let r = r.expect("ran");
        assert!(r.timed_out);
        assert_eq!(r.signal, Some(libc_sigterm()));
        let bg: i32 = out.trim().parse().expect("background pid");
        assert!(
            gone(bg).await,
            "the background sleep was killed with its group"
        );
    }

    /// Whether process `pid` has ended (gone, or a zombie waiting for its reaper).
    pub(crate) async fn gone(pid: i32) -> bool {
        for _ in 0..100 {
            match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                Err(_) => return true,
                Ok(stat) => {
                    let state = stat
                        .rsplit(')')
                        .next()
                        .and_then(|r| r.split_whitespace().next());
                    if matches!(state, Some("Z" | "X")) {
                        return true;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    fn libc_sigterm() -> i32 {
        Signal::SIGTERM as i32
    }

    #[tokio::test]
    async fn a_task_runs_as_another_user_only_from_the_allow_list() {
        let mut s = spec(&["id", "-un"]);
        s.user = Some("nobody".into());
        let (r, _, _) = collect(&s, &Limits::default()).await;
        let e = r.expect_err("not allowed").to_string();
        assert!(e.contains("does not allow"), "{e}");
        let allowing = Limits {
            allowed_users: vec!["nobody".into()],
            ..Limits::default()
        };
        let (r, out, _) = collect(&s, &allowing).await;
        if nix::unistd::Uid::effective().is_root() {
            r.expect("ran");
            assert_eq!(out, "nobody\n");
        } else {
            let e = r.expect_err("only root switches").to_string();
            assert!(e.contains("only a node running as root"), "{e}");
        }
    }

    #[tokio::test]
    async fn bad_specs_and_missing_programs_are_clear_errors() {
        let (r, _, _) = collect(&spec(&[]), &Limits::default()).await;
        assert!(matches!(r, Err(Error::Invalid(_))));
        let (r, _, _) = collect(&spec(&["/no/such/program"]), &Limits::default()).await;
        let e = r.expect_err("missing");
        assert!(e.to_string().contains("/no/such/program"), "{e}");
        let mut s = spec(&["true"]);
        s.cwd = Some("/no/such/dir".into());
        let (r, _, _) = collect(&s, &Limits::default()).await;
        let e = r.expect_err("missing cwd").to_string();
        assert!(
            e.starts_with("working directory \"/no/such/dir\": No such file"),
            "{e}"
        );
        // Given a working directory, a start that fails names it: as the task's user,
        // entering it may be what failed.
        let mut s = spec(&["/no/such/program"]);
        s.cwd = Some("/tmp".into());
        let (r, _, _) = collect(&s, &Limits::default()).await;
        let e = r.expect_err("missing").to_string();
        assert!(
            e.starts_with("cannot start \"/no/such/program\" in working directory \"/tmp\""),
            "{e}"
        );
        let mut s = spec(&["true"]);
        s.timeout_ms = Some(0);
        assert!(matches!(s.validate(), Err(Error::Invalid(_))));
    }
}
