//! Test support: one embedded cluster per test binary, a fresh database per test.
//!
//! Set `DBOS_TEST_DATABASE_URL` to use another server instead of the embedded cluster.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use sqlx::{Connection, Executor, PgConnection};

use crate::config::Config;
use crate::db::quote_ident;
use crate::embedded::{self, Cluster};

/// A database of its own for one test.
#[derive(Clone, Debug)]
pub struct TestDb {
    /// URL of the test's database.
    pub url: String,
    /// Its name.
    pub name: String,
    /// URL of the same database as the superuser, for what a test does that nodes may not
    /// (creating roles, for instance). Equal to `url` on a `DBOS_TEST_DATABASE_URL` server.
    pub admin_url: String,
}

impl TestDb {
    /// A node configuration on this database with short intervals for tests.
    pub fn config(&self) -> Config {
        Config {
            database_url: Some(self.url.clone()),
            heartbeat_interval_ms: 100,
            node_lease_ms: 1_000,
            pool_size_max: 8,
            drain_timeout_ms: 5_000,
            connect_retry_ms_max: 2_000,
            ..Config::default()
        }
    }
}

struct Server {
    /// URL of the server's maintenance database.
    admin_url: String,
    /// Password of the node role, on the embedded cluster: test databases belong to the node
    /// role and nodes connect as it, as they do on a booted node.
    node_password: Option<String>,
}

static SERVER: OnceLock<Server> = OnceLock::new();

/// Longest a test binary may run before it is stopped with a message, so a hang fails fast
/// instead of holding CI (override with `DBOS_TEST_WATCHDOG_S`).
const WATCHDOG_S_DEFAULT: u64 = 600;

/// Starts the watchdog once per test binary.
pub fn watchdog() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let limit = std::env::var("DBOS_TEST_WATCHDOG_S")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(WATCHDOG_S_DEFAULT);
        std::thread::Builder::new()
            .name("dbos-test-watchdog".into())
            .spawn(move || {
                std::thread::sleep(std::time::Duration::from_secs(limit));
                eprintln!("test binary still running after {limit} s: a test hangs; stopping");
                std::process::exit(124);
            })
            .expect("a thread can be spawned");
    });
}

/// The test binary's server: `DBOS_TEST_DATABASE_URL`, or an embedded cluster started once
/// and stopped when the test binary exits.
fn server() -> &'static Server {
    watchdog();
    SERVER.get_or_init(|| {
        if let Ok(url) = std::env::var("DBOS_TEST_DATABASE_URL") {
            return Server {
                admin_url: url,
                node_password: None,
            };
        }
        let dir = scratch_dir();
        let (tx, rx) = std::sync::mpsc::channel();
        // Postgres is told to quit when the thread that forked it exits; this thread lives as
        // long as the test binary.
        std::thread::Builder::new()
            .name("dbos-test-postgres".into())
            .spawn(move || {
                let opts = embedded::Options {
                    data_dir: dir,
                    die_with_parent: true,
                    ..embedded::Options::from_config(&Config::default())
                };
                let cluster = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a test runtime can be built")
                    .block_on(async {
                        let c = Cluster::start_here(opts).await?;
                        let mut conn = PgConnection::connect(c.url()).await?;
                        crate::roles::ensure_roles(&mut conn, c.node_password()).await?;
                        let _ = conn.close().await;
                        Ok::<_, crate::Error>(c)
                    });
                match cluster {
                    Ok(c) => {
                        let urls = (c.url().to_owned(), c.node_password().to_owned());
                        tx.send(Ok(urls)).expect("the test waits");
                        loop {
                            std::thread::park();
                        }
                    }
                    Err(e) => tx.send(Err(e.to_string())).expect("the test waits"),
                }
            })
            .expect("a thread can be spawned");
        let (url, node_password) = rx
            .recv()
            .expect("the cluster thread answers")
            .unwrap_or_else(|e| panic!("the test cluster did not start: {e}"));
        Server {
            admin_url: crate::db::on_database(&url, "postgres"),
            node_password: Some(node_password),
        }
    })
}

/// A scratch data directory for this process, after removing those of dead test processes.
fn scratch_dir() -> PathBuf {
    let root = std::env::temp_dir().join("dbos-test-clusters");
    if let Ok(entries) = std::fs::read_dir(&root) {
        for e in entries.flatten() {
            let pid: Option<i32> = e.file_name().to_str().and_then(|n| n.parse().ok());
            if let Some(pid) = pid {
                if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
    let _ = std::fs::create_dir_all(&root);
    // Reachable by the unprivileged user that runs Postgres when tests run as root.
    let _ = std::fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o1777));
    root.join(std::process::id().to_string())
}

/// URL of the test server's maintenance database.
pub fn admin_url() -> String {
    server().admin_url.clone()
}

/// A new, empty database for one test.
///
/// # Panics
/// When the test server cannot be reached; tests cannot run without it.
pub async fn database() -> TestDb {
    let server = server();
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    let mut conn = PgConnection::connect(&server.admin_url)
        .await
        .unwrap_or_else(|e| panic!("cannot reach the test server: {e}"));
    let owner = match server.node_password {
        Some(_) => format!(" OWNER {}", crate::roles::NODE_ROLE),
        None => String::new(),
    };
    conn.execute(format!("CREATE DATABASE {}{owner}", quote_ident(&name)).as_str())
        .await
        .expect("a test database can be created");
    let _ = conn.close().await;
    let admin_url = crate::db::on_database(&server.admin_url, &name);
    let url = match &server.node_password {
        Some(password) => {
            let (_, rest) = admin_url
                .rsplit_once('@')
                .expect("an embedded cluster's URL has credentials");
            format!("postgres://{}:{password}@{rest}", crate::roles::NODE_ROLE)
        }
        None => admin_url.clone(),
    };
    TestDb {
        url,
        name,
        admin_url,
    }
}

/// An empty scratch directory that the unprivileged Postgres user can reach (tests run as root
/// in CI). When dropped, it stops any embedded server still running in it and is removed.
pub fn scratch_dir_for_cluster() -> ScratchDir {
    watchdog();
    let dir = tempfile::Builder::new()
        .prefix("dbos-scratch-")
        .tempdir()
        .expect("a temporary directory can be created");
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("the temporary directory's mode can be set");
    ScratchDir { dir }
}

/// A scratch directory from [`scratch_dir_for_cluster`].
#[derive(Debug)]
pub struct ScratchDir {
    dir: tempfile::TempDir,
}

impl ScratchDir {
    /// The directory's path.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for ScratchDir {
    /// A test that ends with its node killed (or fails midway) leaves the node's embedded
    /// server running: the server outlives its node by design. It is stopped here (immediate
    /// shutdown) before its files go, rather than left to notice their removal on its own up
    /// to a minute later while the next tests run.
    fn drop(&mut self) {
        // A data directory of the scratch directory itself or of one of its entries.
        let entries = std::fs::read_dir(self.dir.path())
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path());
        for dir in std::iter::once(self.dir.path().to_owned()).chain(entries) {
            let Some(pid) = embedded::server_pid(&dir) else {
                continue;
            };
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGQUIT,
            );
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while !process_gone(pid) && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
}

/// Whether process `pid` has ended: gone, or a zombie waiting for its reaper (it will never run
/// again).
pub fn process_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => matches!(
            stat.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next()),
            Some("Z" | "X")
        ),
    }
}

/// The plan a session makes for `sql` prepared as `name`, the way a node runs it (with the
/// session's plan settings), explained with `options` (such as `ANALYZE`, which runs it) for
/// the arguments `args` (a parenthesized list of literals): one line per row of `EXPLAIN`.
///
/// # Panics
/// When the statement does not prepare or the explain fails: the test is wrong.
pub async fn prepared_plan(
    conn: &mut PgConnection,
    name: &str,
    sql: &str,
    options: &str,
    args: &str,
) -> String {
    sqlx::raw_sql(&format!("PREPARE {name} AS {sql}"))
        .execute(&mut *conn)
        .await
        .expect("the statement prepares");
    let lines: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN {options} EXECUTE {name}{args}"))
        .fetch_all(&mut *conn)
        .await
        .expect("the prepared statement is explained");
    lines.join("\n")
}

/// Returns once `waiting` backends of the database wait on a lock (the event a test waits for
/// before it lets a lock holder go on).
///
/// # Panics
/// When that does not happen within 20 s, or the database cannot be read.
pub async fn waiting_on_locks(pool: &sqlx::PgPool, waiting: i64) {
    locks_awaited(pool, waiting, || None).await;
}

/// [`waiting_on_locks`] while `task` runs: panics with `what` if the task ends first, without
/// having waited on the lock it should have.
pub async fn waiting_on_locks_before<T>(
    pool: &sqlx::PgPool,
    waiting: i64,
    task: &tokio::task::JoinHandle<T>,
    what: &str,
) {
    locks_awaited(pool, waiting, || task.is_finished().then_some(what)).await;
}

/// The loop of [`waiting_on_locks`]: between reads of the waiting backends, `ended` names why
/// waiting is pointless (the test then fails with it).
async fn locks_awaited<'a>(pool: &sqlx::PgPool, waiting: i64, ended: impl Fn() -> Option<&'a str>) {
    tokio::time::timeout(std::time::Duration::from_secs(20), async {
        loop {
            let blocked: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(pool)
            .await
            .expect("activity");
            if blocked == waiting {
                break;
            }
            if let Some(what) = ended() {
                panic!("{what}");
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{waiting} backends wait on a lock"));
}
