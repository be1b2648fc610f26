//! The embedded Postgres: one cluster per data directory, started by the first node that boots
//! on it and stopped by the last one that leaves.
//!
//! Layout of a data directory `D`:
//!
//! | path | what |
//! |---|---|
//! | `D/DBOS_DATA_DIR` | marker: this directory belongs to a dbos node |
//! | `D/pgdata/` | the Postgres cluster (owned by the user that runs Postgres, mode 0700) |
//! | `D/run/` | the Unix socket directory |
//! | `D/password` | the password of the `dbos` superuser (mode 0600) |
//! | `D/node-password` | the password of the `dbos_node` role nodes connect as (mode 0600) |
//! | `D/postgres.log` | the server's log (mode 0600) |
//! | `D/port` | the TCP port last used, reused when still free so URLs stay valid |
//! | `D/lock` | held exclusively while a process starts or stops the cluster |
//! | `D/attach.lock` | held shared by every process using the cluster |
//!
//! Every process that uses the cluster holds a shared `flock` on `attach.lock`; a process that
//! leaves stops Postgres only if it can then take that lock exclusively, i.e. when no other
//! process is attached. The kernel releases `flock`s when a process dies, so a node killed with
//! SIGKILL never keeps the cluster alive for ever: the next node to boot joins the server it left
//! running, and the last node to stop shuts it down.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::TcpListener;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{Pid, Uid, User};

use crate::config::Config;
use crate::error::{Error, Result};

const MARKER: &str = "DBOS_DATA_DIR";
const PGDATA: &str = "pgdata";
const RUN: &str = "run";
const PASSWORD: &str = "password";
const NODE_PASSWORD: &str = "node-password";
const LOG: &str = "postgres.log";
const PORT: &str = "port";
const LOCK: &str = "lock";
const ATTACH: &str = "attach.lock";
/// Superuser created by `initdb`, and the database the system lives in.
pub const SUPERUSER: &str = "dbos";
/// Database that holds the system's tables in an embedded cluster.
pub const DATABASE: &str = "dbos";
/// Longest Unix socket path Linux accepts (`sun_path` is 108 bytes with its NUL).
const SOCKET_PATH_BYTES_MAX: usize = 107;
/// Time a stopping server gets for a fast shutdown before it is told to quit at once.
const STOP_TIMEOUT_MS: u64 = 30_000;
/// Attempts at starting on a fresh free port when another process grabbed the chosen one.
const PORT_ATTEMPTS_MAX: u32 = 3;

/// How to run the embedded cluster.
#[derive(Clone, Debug)]
pub struct Options {
    /// The data directory.
    pub data_dir: PathBuf,
    /// Unprivileged user that runs Postgres when this process is root.
    pub pg_user: String,
    /// Directory of the server binaries; searched for when `None`.
    pub pg_bindir: Option<PathBuf>,
    /// Fixed TCP port; a free one when `None`.
    pub pg_port: Option<u16>,
    /// Time to wait for the server to accept connections.
    pub start_timeout_ms: u64,
    /// Extra `-c name=value` server settings, given after (and so overriding) the defaults.
    pub settings: Vec<(String, String)>,
    /// Stop the server when the thread that started it exits, however this process ends (scratch
    /// and test clusters). [`Cluster::start`] then starts it on a thread of its own that lives
    /// as long as the returned [`Cluster`]: dropped, stopped, or with the process.
    pub die_with_parent: bool,
}

impl Options {
    /// The embedded-cluster part of a node's configuration.
    pub fn from_config(c: &Config) -> Options {
        Options {
            data_dir: c.data_dir.clone(),
            pg_user: c.pg_user.clone(),
            pg_bindir: c.pg_bindir.clone(),
            pg_port: c.pg_port,
            start_timeout_ms: c.pg_start_timeout_ms,
            settings: c.pg_settings.clone(),
            die_with_parent: c.pg_stop_with_node,
        }
    }
}

/// Where a running cluster can be reached.
#[derive(Clone, Debug)]
pub struct ClusterInfo {
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// Process id of the postmaster.
    pub pid: i32,
    /// Connection URL for the system database, password included.
    pub url: String,
}

/// The Unix-socket directories of the embedded clusters this process is attached to, by TCP
/// port. A connection this process opens to one of them through [`crate::db::connect_options`]
/// goes through its socket rather than TCP on the loopback: the same server, reached by the same
/// user, for about a third less CPU per round trip on both sides (no TCP stack in between). Only
/// the server's own user and root may open that socket (mode 0700), who may read its data
/// directory anyway; other processes get the TCP URL.
static LOCAL_SOCKETS: parking_lot::Mutex<BTreeMap<u16, PathBuf>> =
    parking_lot::Mutex::new(BTreeMap::new());

/// The directory of the Unix socket of an embedded cluster this process is attached to and that
/// listens on TCP port `port`, while its socket exists.
pub(crate) fn local_socket_dir(port: u16) -> Option<PathBuf> {
    let dir = LOCAL_SOCKETS.lock().get(&port).cloned()?;
    dir.join(format!(".s.PGSQL.{port}")).exists().then_some(dir)
}

fn attach_socket(dir: &Path, port: u16) {
    LOCAL_SOCKETS.lock().insert(port, dir.join(RUN));
}

/// A running embedded cluster that this process is attached to.
#[derive(Debug)]
pub struct Cluster {
    dir: PathBuf,
    info: ClusterInfo,
    /// The postmaster, when this process started it.
    child: Option<Child>,
    /// Shared lock on `attach.lock`, held while attached.
    attached: Option<Flock<File>>,
    /// Password of the node role.
    node_password: String,
    /// With [`Options::die_with_parent`] through [`Cluster::start`]: the thread that started
    /// the server waits until this is dropped, and its exit tells the server to quit.
    parent: Option<std::sync::mpsc::Sender<()>>,
}

impl Cluster {
    /// Joins the cluster running in the data directory, or initialises and starts one.
    ///
    /// # Errors
    /// Missing binaries, an unusable data directory, a busy port, or a server that fails to
    /// start; each error says what to do.
    pub async fn start(opts: Options) -> Result<Cluster> {
        if !opts.die_with_parent {
            return tokio::task::spawn_blocking(move || start_blocking(&opts))
                .await
                .expect("the cluster start task does not panic");
        }
        // A thread of the blocking pool ends when it has been idle a while: the server is tied
        // to a thread that lives exactly as long as the cluster value.
        let (tx, rx) = tokio::sync::oneshot::channel();
        let data_dir = opts.data_dir.clone();
        std::thread::Builder::new()
            .name("dbos-postgres-parent".into())
            .spawn(move || {
                let (hold, held) = std::sync::mpsc::channel::<()>();
                let started = start_blocking(&opts).map(|mut c| {
                    c.parent = Some(hold);
                    c
                });
                // Nobody waits any more (the start was abandoned): the cluster comes back
                // here and is dropped, and the server quits with this thread.
                if tx.send(started).is_ok() {
                    // Returns once the cluster value is gone.
                    let _ = held.recv();
                }
            })
            .map_err(|e| Error::io("starting a thread for", data_dir, e))?;
        rx.await.unwrap_or_else(|_| {
            Err(Error::Postgres {
                program: "postgres".into(),
                detail: "the thread starting the embedded server ended without an answer".into(),
            })
        })
    }

    /// As [`Cluster::start`], but on the calling thread, which a server started with
    /// [`Options::die_with_parent`] is tied to.
    ///
    /// # Errors
    /// As [`Cluster::start`].
    pub async fn start_here(opts: Options) -> Result<Cluster> {
        start_blocking(&opts)
    }

    /// Attaches to the cluster already running in a data directory, for a long-running
    /// process that only connects (a mount, the dashboard): it holds the cluster as a node
    /// does, so a node that stops meanwhile leaves the server running for it, and
    /// [`Cluster::stop`] stops the server when this process leaves last. Never starts one.
    ///
    /// # Errors
    /// [`Error::NoRunningCluster`] when no live server belongs to the directory, or the lock
    /// files cannot be used.
    pub async fn attach(data_dir: &Path) -> Result<Cluster> {
        let dir = data_dir.to_owned();
        tokio::task::spawn_blocking(move || attach_blocking(&dir))
            .await
            .expect("the cluster attach task does not panic")
    }

    /// Connection URL of the system database.
    pub fn url(&self) -> &str {
        &self.info.url
    }

    /// Makes the system database ready for nodes (roles, ownership; see [`crate::roles`]) and
    /// returns the URL nodes connect with: the node role's, not the superuser's.
    ///
    /// # Errors
    /// The server cannot be reached or refuses a statement.
    pub async fn prepare_for_nodes(&self) -> Result<String> {
        crate::roles::prepare(&self.info.url, &self.node_password).await?;
        Ok(self.node_url(DATABASE))
    }

    /// URL of database `database` as the node role.
    pub fn node_url(&self, database: &str) -> String {
        url_as(
            crate::roles::NODE_ROLE,
            &self.node_password,
            self.info.port,
            database,
        )
    }

    /// Password of the node role.
    pub fn node_password(&self) -> &str {
        &self.node_password
    }

    /// Where the cluster can be reached.
    pub fn info(&self) -> &ClusterInfo {
        &self.info
    }

    /// Whether this process started the server (rather than joining a running one).
    pub fn started_here(&self) -> bool {
        self.child.is_some()
    }

    /// Detaches from the cluster and stops the server if no other process is attached.
    /// Returns whether the server was stopped.
    ///
    /// # Errors
    /// The lock files cannot be used or the server does not stop.
    pub async fn stop(mut self) -> Result<bool> {
        tokio::task::spawn_blocking(move || self.stop_blocking())
            .await
            .expect("the cluster stop task does not panic")
    }

    fn stop_blocking(&mut self) -> Result<bool> {
        let _guard = lock_exclusive(&self.dir.join(LOCK))?;
        LOCAL_SOCKETS.lock().remove(&self.info.port);
        let attached = self.attached.take().expect("a started cluster is attached");
        let file = attached
            .unlock()
            .map_err(|(_, e)| Error::io("unlocking", self.dir.join(ATTACH), e.into()))?;
        let last = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(_exclusive) => true,
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => false,
            Err((_, e)) => return Err(Error::io("locking", self.dir.join(ATTACH), e.into())),
        };
        if !last {
            tracing::info!("other processes still use the cluster; leaving it running");
            return Ok(false);
        }
        // Whatever postmaster runs in the data directory now: Postgres may have been restarted
        // underneath (a crash, `pg_ctl restart`) since this process started it.
        match running(&self.dir)? {
            Some(now) => {
                let child = self.child.as_mut().filter(|c| c.id() as i32 == now.pid);
                stop_server(&self.dir, now.pid, child)?;
            }
            None => tracing::info!("the embedded Postgres was not running any more"),
        }
        if let Some(c) = self.child.as_mut() {
            // The server this process started, if it exited underneath, is reaped here.
            let _ = c.try_wait();
        }
        Ok(true)
    }
}

/// URL of the system database of the cluster running in a data directory, as the node role.
///
/// # Errors
/// As [`discover`], or the node password file cannot be read (no node booted here yet, or
/// this user may not read it).
pub fn discover_node_url(data_dir: &Path) -> Result<String> {
    let info = discover(data_dir)?;
    let path = data_dir.join(NODE_PASSWORD);
    let password = fs::read_to_string(&path).map_err(|e| Error::io("reading", &path, e))?;
    Ok(url_as(
        crate::roles::NODE_ROLE,
        password.trim(),
        info.port,
        DATABASE,
    ))
}

/// Finds the cluster running in a data directory, for commands that only connect.
///
/// # Errors
/// [`Error::NoRunningCluster`] when no live server belongs to the directory.
pub fn discover(data_dir: &Path) -> Result<ClusterInfo> {
    running(data_dir)?.ok_or_else(|| Error::NoRunningCluster {
        path: data_dir.to_owned(),
    })
}

fn attach_blocking(dir: &Path) -> Result<Cluster> {
    let dir = dir.canonicalize().map_err(|_| Error::NoRunningCluster {
        path: dir.to_owned(),
    })?;
    let _guard = lock_exclusive(&dir.join(LOCK))?;
    let attached = lock_attached(&dir)?;
    let info = discover(&dir)?;
    let node_password = node_password(&dir)?;
    Ok(joined(dir, info, attached, node_password))
}

/// The shared lock on `attach.lock` that every process using the cluster holds.
fn lock_attached(dir: &Path) -> Result<Flock<File>> {
    let attach_path = dir.join(ATTACH);
    Flock::lock(open_lock_file(&attach_path)?, FlockArg::LockShared)
        .map_err(|(_, e)| Error::io("locking", &attach_path, e.into()))
}

/// The cluster running in `dir`, joined by this process (which did not start it).
fn joined(
    dir: PathBuf,
    info: ClusterInfo,
    attached: Flock<File>,
    node_password: String,
) -> Cluster {
    attach_socket(&dir, info.port);
    Cluster {
        dir,
        info,
        child: None,
        attached: Some(attached),
        node_password,
        parent: None,
    }
}

fn start_blocking(opts: &Options) -> Result<Cluster> {
    let dir = prepare_dir(&opts.data_dir)?;
    let _guard = lock_exclusive(&dir.join(LOCK))?;
    let attached = lock_attached(&dir)?;
    // Made under the lock, so processes booting together agree on it.
    let node_password = node_password(&dir)?;

    if let Some(info) = running(&dir)? {
        tracing::info!(
            port = info.port,
            pid = info.pid,
            "joined the running embedded Postgres"
        );
        return Ok(joined(dir, info, attached, node_password));
    }

    let bin = find_binaries(opts.pg_bindir.as_deref())?;
    let owner = run_user(&opts.pg_user)?;
    let pgdata = dir.join(PGDATA);
    let run = dir.join(RUN);
    check_socket_path(&run)?;
    for d in [&pgdata, &run] {
        create_private_dir(d, owner.as_ref())?;
    }
    if let Some(user) = &owner {
        check_reachable(user, &dir)?;
    }
    let pid_file = pgdata.join("postmaster.pid");
    if pid_file.exists() {
        clear_stale_server(&pid_file, &run)?;
    }
    if !pgdata.join("PG_VERSION").exists() {
        let empty = fs::read_dir(&pgdata)
            .map_err(|e| Error::io("reading", &pgdata, e))?
            .next()
            .is_none();
        if !empty {
            return Err(Error::NotACluster {
                path: pgdata,
                reason: "it is not empty but has no PG_VERSION file (a damaged or foreign \
                         cluster); move it away and boot again to start afresh"
                    .into(),
            });
        }
        initdb(&bin, &dir, owner.as_ref())?;
    }
    check_version(&bin, &pgdata)?;
    let password = read_password(&dir)?;

    let mut attempt = 0;
    let (child, port) = loop {
        attempt += 1;
        let port = choose_port(&dir, opts.pg_port)?;
        match spawn_server(&bin, &dir, port, owner.as_ref(), opts)? {
            Started::Ready(child) => break (child, port),
            Started::PortTaken if opts.pg_port.is_none() && attempt < PORT_ATTEMPTS_MAX => continue,
            Started::PortTaken => return Err(Error::PortInUse { port }),
        }
    };
    write_file(&dir.join(PORT), port.to_string().as_bytes(), 0o644)?;
    let pid = child.id() as i32;
    tracing::info!(port, pid, dir = %dir.display(), "started the embedded Postgres");
    attach_socket(&dir, port);
    Ok(Cluster {
        dir,
        info: ClusterInfo {
            port,
            pid,
            url: url(&password, port),
        },
        child: Some(child),
        attached: Some(attached),
        node_password,
        parent: None,
    })
}

fn url(password: &str, port: u16) -> String {
    url_as(SUPERUSER, password, port, DATABASE)
}

fn url_as(user: &str, password: &str, port: u16, database: &str) -> String {
    format!("postgres://{user}:{password}@127.0.0.1:{port}/{database}")
}

/// Creates the data directory if needed and checks that it is ours and writable.
fn prepare_dir(dir: &Path) -> Result<PathBuf> {
    let not_writable = |e: std::io::Error| Error::DataDirNotWritable {
        path: dir.to_owned(),
        reason: e.to_string(),
    };
    fs::create_dir_all(dir).map_err(not_writable)?;
    let dir = dir.canonicalize().map_err(not_writable)?;
    if !dir.is_dir() {
        return Err(Error::DataDirNotWritable {
            path: dir,
            reason: "it is not a directory".into(),
        });
    }
    let marker = dir.join(MARKER);
    if !marker.exists() {
        let mut entries = fs::read_dir(&dir).map_err(not_writable)?;
        if entries.next().is_some() {
            let reason = if dir.join("PG_VERSION").exists() {
                "it is a bare PostgreSQL cluster; give its parent a fresh directory or pass \
                 --database-url of a server running on it"
            } else {
                "it is not empty and holds no dbos data (no DBOS_DATA_DIR marker); \
                 choose an empty or new directory"
            };
            return Err(Error::NotACluster {
                path: dir,
                reason: reason.into(),
            });
        }
        write_file(
            &marker,
            b"This directory holds the embedded Postgres of a dbos node.\n",
            0o644,
        )
        .map_err(|e| Error::DataDirNotWritable {
            path: dir.clone(),
            reason: e.to_string(),
        })?;
    }
    // Read-only file systems and similar refuse writes even where the marker exists.
    let probe = dir.join(".write-probe");
    fs::write(&probe, b"").map_err(|e| Error::DataDirNotWritable {
        path: dir.clone(),
        reason: e.to_string(),
    })?;
    let _ = fs::remove_file(&probe);
    Ok(dir)
}

fn open_lock_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o644)
        .open(path)
        .map_err(|e| Error::io("opening", path, e))
}

fn lock_exclusive(path: &Path) -> Result<Flock<File>> {
    let file = open_lock_file(path)?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, e)| Error::io("locking", path, e.into()))
}

/// The live server of a data directory, if any.
fn running(dir: &Path) -> Result<Option<ClusterInfo>> {
    let pid_file = dir.join(PGDATA).join("postmaster.pid");
    let text = match fs::read_to_string(&pid_file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("reading", &pid_file, e)),
    };
    let Some(pid) = live_owner(&text) else {
        return Ok(None);
    };
    let Some(port) = text
        .lines()
        .nth(3)
        .and_then(|l| l.trim().parse::<u16>().ok())
    else {
        return Ok(None);
    };
    let password = read_password(dir)?;
    Ok(Some(ClusterInfo {
        port,
        pid,
        url: url(&password, port),
    }))
}

/// How long a boot waits for the processes of a server that died to leave its shared memory.
const ORPHANS_WAIT: Duration = Duration::from_secs(30);

/// Clears what a server that is gone left behind: its `postmaster.pid` and the lock files of
/// its sockets in `run`, whose pid may be a zombie not yet reaped or, after a reboot, another
/// process (either makes Postgres refuse to start). First waits, up to [`ORPHANS_WAIT`], until
/// no process is attached to its shared memory: backends of a killed postmaster run on until
/// they notice, and Postgres refuses to start beside them ("pre-existing shared memory block
/// is still in use"), which would fail the boot.
fn clear_stale_server(pid_file: &Path, run: &Path) -> Result<()> {
    let text = fs::read_to_string(pid_file).map_err(|e| Error::io("reading", pid_file, e))?;
    if let Some(segment) = shmem_segment(&text) {
        let deadline = Instant::now() + ORPHANS_WAIT;
        let mut told = false;
        loop {
            let attached = shmem_attached(segment);
            if attached == 0 {
                break;
            }
            if Instant::now() >= deadline {
                return Err(Error::Postgres {
                    program: "postgres".into(),
                    detail: format!(
                        "{attached} processes of the server that ran here before are still \
                         attached to its shared memory (System V segment {}) after {} s; stop \
                         them and boot again",
                        segment.1,
                        ORPHANS_WAIT.as_secs()
                    ),
                });
            }
            if !told {
                tracing::warn!(
                    segment = segment.1,
                    attached,
                    "waiting for the processes of the server that ran here before to exit"
                );
                told = true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    tracing::warn!(path = %pid_file.display(), "removing the stale postmaster.pid of a server that is gone");
    fs::remove_file(pid_file).map_err(|e| Error::io("removing", pid_file, e))?;
    let Ok(entries) = fs::read_dir(run) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(socket) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".lock"))
            .filter(|n| n.starts_with(".s.PGSQL."))
        else {
            continue;
        };
        if fs::read_to_string(entry.path())
            .ok()
            .and_then(|t| live_owner(&t))
            .is_some()
        {
            continue;
        }
        tracing::warn!(path = %entry.path().display(), "removing the stale socket lock of a server that is gone");
        for path in [entry.path(), run.join(socket)] {
            match fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::io("removing", &path, e))
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// The System V shared memory segment a `postmaster.pid` names (its 7th line: key, then ID).
fn shmem_segment(pid_file: &str) -> Option<(i64, i64)> {
    let mut cols = pid_file.lines().nth(6)?.split_whitespace();
    Some((cols.next()?.parse().ok()?, cols.next()?.parse().ok()?))
}

/// Processes attached to System V shared memory segment `(key, id)`; 0 when there is no such
/// segment (an ID reused by a segment of another key is another segment).
fn shmem_attached(segment: (i64, i64)) -> u64 {
    fs::read_to_string("/proc/sysvipc/shm")
        .map(|table| attached_in(&table, segment))
        .unwrap_or(0)
}

/// [`shmem_attached`] read from the text of `/proc/sysvipc/shm`.
fn attached_in(table: &str, (key, id): (i64, i64)) -> u64 {
    // Columns: key, shmid, perms, size, cpid, lpid, nattch, ...
    table
        .lines()
        .skip(1)
        .find_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let this = (
                cols.first()?.parse::<i64>().ok()?,
                cols.get(1)?.parse::<i64>().ok()?,
            );
            (this == (key, id)).then(|| cols.get(6)?.parse().ok())?
        })
        .unwrap_or(0)
}

/// The pid on the first line of a Postgres lock file (`postmaster.pid`, a socket's `.lock`)
/// when it is a live Postgres process.
fn live_owner(lock_file: &str) -> Option<i32> {
    let pid = lock_file.lines().next()?.trim().parse().ok()?;
    is_postgres(pid).then_some(pid)
}

/// The pid of the live server of data directory `dir`, if any.
#[cfg(feature = "testing")]
pub(crate) fn server_pid(dir: &Path) -> Option<i32> {
    live_owner(&fs::read_to_string(dir.join(PGDATA).join("postmaster.pid")).ok()?)
}

/// Whether `pid` is a live Postgres process (not a recycled pid of something else).
fn is_postgres(pid: i32) -> bool {
    if pid <= 0 || !alive(pid) {
        return false;
    }
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|comm| {
            let comm = comm.trim();
            comm == "postgres" || comm == "postmaster"
        })
        .unwrap_or(false)
}

/// Whether a process exists and is not a zombie (a zombie child of this process is reaped).
fn alive(pid: i32) -> bool {
    use nix::sys::wait::{waitpid, WaitPidFlag};
    // Reaps the server if it is an exited child of this process; ECHILD otherwise.
    let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
    if !matches!(
        kill(Pid::from_raw(pid), None),
        Ok(()) | Err(nix::errno::Errno::EPERM)
    ) {
        return false;
    }
    // "pid (comm) S ...": a zombie has state Z.
    let zombie = fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false);
    if zombie {
        // It exited between the reap above and the look: reaped now, if it is our child.
        let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
    }
    !zombie
}

/// The server binaries.
#[derive(Debug)]
struct Binaries {
    dir: PathBuf,
}

impl Binaries {
    fn path(&self, program: &str) -> PathBuf {
        self.dir.join(program)
    }
}

/// Whether the server binaries found for `bindir` (searched for when `None`) come with the
/// loadable module `name` (e.g. `pg_stat_statements`), so it can be preloaded.
pub fn server_module_available(bindir: Option<&Path>, name: &str) -> bool {
    find_binaries(bindir).is_ok_and(|b| {
        // Debian: .../15/bin and .../15/lib; a source install: PREFIX/bin and PREFIX/lib/postgresql.
        let Some(prefix) = b.dir.parent() else {
            return false;
        };
        [prefix.join("lib"), prefix.join("lib/postgresql")]
            .iter()
            .any(|d| d.join(format!("{name}.so")).is_file())
    })
}

fn has_server(dir: &Path) -> bool {
    ["initdb", "postgres"].iter().all(|p| dir.join(p).is_file())
}

fn find_binaries(explicit: Option<&Path>) -> Result<Binaries> {
    if let Some(dir) = explicit {
        return if has_server(dir) {
            Ok(Binaries {
                dir: dir.to_owned(),
            })
        } else {
            Err(Error::BinariesNotFound {
                searched: format!("DBOS_PG_BINDIR={}", dir.display()),
            })
        };
    }
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path));
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        if out.status.success() {
            candidates.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
        }
    }
    let mut versioned: Vec<(u32, PathBuf)> = Vec::new();
    for (root, prefix) in [("/usr/lib/postgresql", ""), ("/usr", "pgsql-")] {
        if let Ok(entries) = fs::read_dir(root) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some(v) = name.strip_prefix(prefix).and_then(|v| v.parse().ok()) {
                    versioned.push((v, entry.path().join("bin")));
                }
            }
        }
    }
    versioned.sort_by_key(|v| std::cmp::Reverse(v.0));
    candidates.extend(versioned.into_iter().map(|(_, p)| p));
    candidates.push(PathBuf::from("/usr/local/pgsql/bin"));
    for dir in candidates {
        if has_server(&dir) {
            // Resolve symlinks such as /usr/local/bin/initdb -> /usr/lib/postgresql/15/bin/initdb,
            // so the binaries' sibling programs and share directory are found.
            let dir = fs::canonicalize(dir.join("postgres"))
                .ok()
                .and_then(|p| p.parent().map(Path::to_owned))
                .filter(|d| has_server(d))
                .unwrap_or(dir);
            return Ok(Binaries { dir });
        }
    }
    Err(Error::BinariesNotFound {
        searched: "PATH, `pg_config --bindir`, /usr/lib/postgresql/*/bin, /usr/pgsql-*/bin, \
                   /usr/local/pgsql/bin"
            .into(),
    })
}

/// The user Postgres runs as when this process is root; `None` means "this process's user".
fn run_user(name: &str) -> Result<Option<User>> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    match User::from_name(name) {
        Ok(Some(user)) if !user.uid.is_root() => Ok(Some(user)),
        _ => Err(Error::NoPgUser {
            user: name.to_owned(),
        }),
    }
}

fn check_socket_path(run: &Path) -> Result<()> {
    // The socket is `run/.s.PGSQL.<port>`: up to 17 bytes after the directory.
    let len = run.as_os_str().len() + 17;
    if len > SOCKET_PATH_BYTES_MAX {
        return Err(Error::DataDirNotWritable {
            path: run.parent().map(Path::to_owned).unwrap_or_default(),
            reason: format!(
                "its socket path would be {len} bytes, over the {SOCKET_PATH_BYTES_MAX}-byte limit \
                 of Unix sockets; use a shorter path"
            ),
        });
    }
    Ok(())
}

fn create_private_dir(dir: &Path, owner: Option<&User>) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| Error::DataDirNotWritable {
        path: dir.to_owned(),
        reason: e.to_string(),
    })?;
    if let Some(user) = owner {
        nix::unistd::chown(dir, Some(user.uid), Some(user.gid))
            .map_err(|e| Error::io("changing the owner of", dir, e.into()))?;
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io("setting permissions of", dir, e))
}

/// Running as root, checks that the Postgres user can reach the data directory.
fn check_reachable(user: &User, dir: &Path) -> Result<()> {
    let ok = Command::new("test")
        .arg("-x")
        .arg(dir)
        .uid(user.uid.as_raw())
        .gid(user.gid.as_raw())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if ok {
        Ok(())
    } else {
        Err(Error::DataDirNotWritable {
            path: dir.to_owned(),
            reason: format!(
                "user {} that runs Postgres cannot reach it (a parent directory lacks o+x, \
                 e.g. /root)",
                user.name
            ),
        })
    }
}

fn as_user(cmd: &mut Command, owner: Option<&User>) {
    if let Some(user) = owner {
        cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
        cmd.env("HOME", &user.dir).env("USER", &user.name);
    }
}

fn initdb(bin: &Binaries, dir: &Path, owner: Option<&User>) -> Result<()> {
    let password = hex::encode(rand::random::<[u8; 16]>());
    // The password file must be readable by the Postgres user; it lives in the private run dir.
    let pwfile = dir.join(RUN).join("initdb.pw");
    write_file(&pwfile, password.as_bytes(), 0o600)?;
    if let Some(user) = owner {
        nix::unistd::chown(&pwfile, Some(user.uid), Some(user.gid))
            .map_err(|e| Error::io("changing the owner of", &pwfile, e.into()))?;
    }
    let mut cmd = Command::new(bin.path("initdb"));
    cmd.arg("-D")
        .arg(dir.join(PGDATA))
        .arg(format!("--username={SUPERUSER}"))
        .arg(format!("--pwfile={}", pwfile.display()))
        .args([
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--no-locale",
        ])
        .current_dir(dir)
        .stdin(Stdio::null());
    as_user(&mut cmd, owner);
    tracing::info!(dir = %dir.display(), "initialising a new Postgres cluster");
    let out = cmd.output().map_err(|e| Error::Postgres {
        program: "initdb".into(),
        detail: e.to_string(),
    });
    let _ = fs::remove_file(&pwfile);
    let out = out?;
    if !out.status.success() {
        // Leave no half-made cluster behind: the next boot would refuse it.
        let _ = fs::remove_dir_all(dir.join(PGDATA));
        return Err(Error::Postgres {
            program: "initdb".into(),
            detail: format!(
                "{}: {}",
                out.status,
                tail(&String::from_utf8_lossy(&out.stderr))
            ),
        });
    }
    create_system_database(bin, dir, owner)?;
    write_file(&dir.join(PASSWORD), password.as_bytes(), 0o600)
}

/// Creates the system database in single-user mode, so the cluster's URL works as soon as the
/// server is up.
fn create_system_database(bin: &Binaries, dir: &Path, owner: Option<&User>) -> Result<()> {
    let mut cmd = Command::new(bin.path("postgres"));
    cmd.arg("--single")
        .arg("-j")
        .arg("-D")
        .arg(dir.join(PGDATA))
        .arg("postgres")
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    as_user(&mut cmd, owner);
    let fail = |detail: String| Error::Postgres {
        program: "postgres --single".into(),
        detail,
    };
    let mut child = cmd.spawn().map_err(|e| fail(e.to_string()))?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(format!("CREATE DATABASE {DATABASE};\n").as_bytes())
        .map_err(|e| fail(e.to_string()))?;
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || stderr.contains("ERROR") {
        let _ = fs::remove_dir_all(dir.join(PGDATA));
        return Err(fail(format!("{}: {}", out.status, tail(&stderr))));
    }
    Ok(())
}

/// The node role's password: read, or made on first use (clusters made before nodes had a role
/// of their own have none yet).
fn node_password(dir: &Path) -> Result<String> {
    let path = dir.join(NODE_PASSWORD);
    match fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io("reading", &path, e)),
        _ => {
            let password = hex::encode(rand::random::<[u8; 16]>());
            write_file(&path, password.as_bytes(), 0o600)?;
            Ok(password)
        }
    }
}

fn read_password(dir: &Path) -> Result<String> {
    let path = dir.join(PASSWORD);
    fs::read_to_string(&path)
        .map(|s| s.trim().to_owned())
        .map_err(|e| Error::NotACluster {
            path: dir.to_owned(),
            reason: format!("cannot read its password file {}: {e}", path.display()),
        })
}

fn server_major(bin: &Binaries) -> Result<u32> {
    let out = Command::new(bin.path("postgres"))
        .arg("--version")
        .output()
        .map_err(|e| Error::Postgres {
            program: "postgres --version".into(),
            detail: e.to_string(),
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
    text.split_whitespace()
        .nth(2)
        .and_then(|v| v.split('.').next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Error::Postgres {
            program: "postgres --version".into(),
            detail: format!("unexpected output {text:?}"),
        })
}

fn check_version(bin: &Binaries, pgdata: &Path) -> Result<()> {
    let path = pgdata.join("PG_VERSION");
    let cluster: u32 = fs::read_to_string(&path)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| Error::NotACluster {
            path: pgdata.to_owned(),
            reason: "its PG_VERSION file is missing or unreadable".into(),
        })?;
    let server = server_major(bin)?;
    if cluster != server {
        return Err(Error::NotACluster {
            path: pgdata.to_owned(),
            reason: format!(
                "it was made by PostgreSQL {cluster} but the binaries in {} are PostgreSQL {server}; \
                 point DBOS_PG_BINDIR at PostgreSQL {cluster}",
                bin.dir.display()
            ),
        });
    }
    Ok(())
}

fn port_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

fn choose_port(dir: &Path, fixed: Option<u16>) -> Result<u16> {
    if let Some(port) = fixed {
        return if port_free(port) {
            Ok(port)
        } else {
            Err(Error::PortInUse { port })
        };
    }
    let last = fs::read_to_string(dir.join(PORT))
        .ok()
        .and_then(|p| p.trim().parse::<u16>().ok());
    if let Some(port) = last.filter(|p| port_free(*p)) {
        return Ok(port);
    }
    let listener =
        TcpListener::bind(("127.0.0.1", 0)).map_err(|e| Error::io("binding", "127.0.0.1:0", e))?;
    let port = listener
        .local_addr()
        .map_err(|e| Error::io("binding", "127.0.0.1:0", e))?
        .port();
    Ok(port)
}

enum Started {
    Ready(Child),
    PortTaken,
}

/// Autovacuum of an embedded cluster, within a second of 2 % of a table's rows turning dead.
/// A workflow claimed or finished leaves its row's old version behind, and with it an entry in
/// the queue index `idx_workflow_status_in_flight_v2`; a probe for waiting work (a claim round,
/// an enqueue that may run its workflow at once) reads past every such entry until a vacuum
/// removes them. With Postgres's defaults (a look once a minute, 20 % of a table dead) a queue
/// that had just drained 20,000 tasks answered "nothing waits" in 5–8 ms for a minute, and in
/// about 1 ms once a vacuum had run. Vacuums this frequent find little to do each time:
/// 0.01–0.03 s of CPU on `workflow_status` during the drains of `dbos bench queue`.
///
/// A look every second also runs `ANALYZE` as soon as a tenth of a table has changed, up to
/// sixty times as often as Postgres's own cadence on a busy table, and each analyze of
/// `workflow_status` reads a sample of up to 30,000 rows (0.24–0.37 s at 120,000 rows) and
/// makes every connection plan its statements on the table again. Analyzing after 30 % instead
/// cut the analyzes of `dbos bench queue` from 30–32 to 20–22 and their CPU from 3.3 s to
/// 1.5–2.3 s (beside about 16 s of Postgres CPU for its 120,000 tasks), with statistics no
/// staler than that share of the table.
const AUTOVACUUM: [(&str, &str); 4] = [
    ("autovacuum_naptime", "1s"),
    ("autovacuum_vacuum_scale_factor", "0.02"),
    ("autovacuum_vacuum_cost_limit", "1000"),
    ("autovacuum_analyze_scale_factor", "0.3"),
];

fn spawn_server(
    bin: &Binaries,
    dir: &Path,
    port: u16,
    owner: Option<&User>,
    opts: &Options,
) -> Result<Started> {
    let log_path = dir.join(LOG);
    // The owner's only: statements the server logs may quote passwords (a failed `CREATE ROLE
    // ... PASSWORD`), and tasks run as other users.
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log_path)
        .map_err(|e| Error::io("opening", &log_path, e))?;
    fs::set_permissions(&log_path, fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io("restricting", &log_path, e))?;
    let log_start = log
        .seek(SeekFrom::End(0))
        .map_err(|e| Error::io("reading", &log_path, e))?;
    let stderr = log
        .try_clone()
        .map_err(|e| Error::io("opening", &log_path, e))?;
    let mut cmd = Command::new(bin.path("postgres"));
    cmd.arg("-D")
        .arg(dir.join(PGDATA))
        .arg("-p")
        .arg(port.to_string())
        .arg("-k")
        .arg(dir.join(RUN))
        .args(["-c", "listen_addresses=127.0.0.1"])
        .args(["-c", "max_connections=300"])
        .args(["-c", "unix_socket_permissions=0700"]);
    for (name, value) in AUTOVACUUM {
        cmd.arg("-c").arg(format!("{name}={value}"));
    }
    // Given later, the node's own settings override those above.
    for (name, value) in &opts.settings {
        cmd.arg("-c").arg(format!("{name}={value}"));
    }
    cmd.current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(stderr))
        // Its own process group: a Ctrl-C in the node's terminal must not reach Postgres
        // before the node has drained its tasks.
        .process_group(0);
    as_user(&mut cmd, owner);
    if opts.die_with_parent {
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGQUIT).map_err(std::io::Error::from)
            });
        }
    }
    let mut child = cmd.spawn().map_err(|e| Error::Postgres {
        program: "postgres".into(),
        detail: e.to_string(),
    })?;
    let pid_file = dir.join(PGDATA).join("postmaster.pid");
    let deadline = Instant::now() + Duration::from_millis(opts.start_timeout_ms);
    loop {
        if let Some(status) = child.try_wait().map_err(|e| Error::Postgres {
            program: "postgres".into(),
            detail: e.to_string(),
        })? {
            let log_text = read_from(&log_path, log_start);
            if log_text.contains("could not bind") || log_text.contains("Address already in use") {
                return Ok(Started::PortTaken);
            }
            return Err(Error::Postgres {
                program: "postgres".into(),
                detail: format!(
                    "exited with {status} while starting; its log {} ends with:\n{}",
                    log_path.display(),
                    tail(&log_text)
                ),
            });
        }
        if fs::read_to_string(&pid_file)
            .map(|t| t.lines().nth(7).map(str::trim) == Some("ready"))
            .unwrap_or(false)
        {
            return Ok(Started::Ready(child));
        }
        if Instant::now() > deadline {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGQUIT);
            let _ = child.wait();
            return Err(Error::Postgres {
                program: "postgres".into(),
                detail: format!(
                    "not ready after {} ms; its log {} ends with:\n{}",
                    opts.start_timeout_ms,
                    log_path.display(),
                    tail(&read_from(&log_path, log_start))
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stop_server(dir: &Path, pid: i32, mut child: Option<&mut Child>) -> Result<()> {
    let exited = |child: &mut Option<&mut Child>| match child {
        // An error means the child was already reaped elsewhere: it is gone.
        Some(c) => !matches!(c.try_wait(), Ok(None)),
        None => !alive(pid),
    };
    for (signal, wait_ms) in [
        (Signal::SIGINT, STOP_TIMEOUT_MS),
        (Signal::SIGQUIT, 5_000),
        (Signal::SIGKILL, 5_000),
    ] {
        if exited(&mut child) {
            break;
        }
        let _ = kill(Pid::from_raw(pid), signal);
        let deadline = Instant::now() + Duration::from_millis(wait_ms);
        while !exited(&mut child) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if exited(&mut child) {
            tracing::info!(pid, ?signal, dir = %dir.display(), "stopped the embedded Postgres");
            return Ok(());
        }
        tracing::warn!(pid, ?signal, "Postgres did not stop in time; escalating");
    }
    if exited(&mut child) {
        Ok(())
    } else {
        Err(Error::Postgres {
            program: "postgres".into(),
            detail: format!("process {pid} did not stop even after SIGKILL"),
        })
    }
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(mode)
        .open(path)
        .map_err(|e| Error::io("writing", path, e))?;
    f.write_all(contents)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io("writing", path, e))
}

fn read_from(path: &Path, offset: u64) -> String {
    let mut text = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.seek(SeekFrom::Start(offset));
        let _ = f.read_to_string(&mut text);
    }
    text
}

/// The last lines of a program's output, for error messages.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_old_servers_shared_memory_is_found_by_key_and_id() {
        let pid_file = "31672\n/d/pgdata\n1796531129\n33775\n/d/run\n127.0.0.1\n 10058230   5734499\nready   \n";
        assert_eq!(shmem_segment(pid_file), Some((10058230, 5734499)));
        assert_eq!(shmem_segment("31672\n/d/pgdata\n"), None, "no segment yet");
        let table = "       key      shmid perms       size  cpid  lpid nattch   uid\n\
                     \x20 10110196    3047424   600         56 24449 24454      0   101\n\
                     \x20 10058230    5734499   600         56 31672 31672      8   101\n\
                     \x20 99999999    5734500   600         56 31672 31672      3   101\n";
        assert_eq!(attached_in(table, (10058230, 5734499)), 8);
        assert_eq!(attached_in(table, (10110196, 3047424)), 0);
        assert_eq!(
            attached_in(table, (10058230, 5734500)),
            0,
            "the same ID under another key is another segment"
        );
        assert_eq!(attached_in(table, (1, 2)), 0, "gone");
    }
}
