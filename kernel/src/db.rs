//! Connections: the node's pool, with limits, session guards and retries.

use std::str::FromStr;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Executor, PgConnection, PgPool};

use crate::config::Config;
use crate::error::{redact_url, Error, Result};
use crate::sqlstate;

/// First pause between connection attempts; it doubles up to [`RETRY_PAUSE_MS_MAX`].
const RETRY_PAUSE_MS_MIN: u64 = 50;
/// Longest pause between connection attempts.
const RETRY_PAUSE_MS_MAX: u64 = 1_000;

/// Limits of a pool, taken from a node's [`Config`].
#[derive(Clone, Debug)]
pub struct PoolLimits {
    /// Connections in the pool.
    pub size_max: u32,
    /// Time a caller waits for a connection.
    pub acquire_timeout_ms: u64,
    /// Session setting `idle_in_transaction_session_timeout`.
    pub idle_in_transaction_timeout_ms: u64,
    /// Session setting `statement_timeout` (0 disables).
    pub statement_timeout_ms: u64,
    /// Total time spent retrying an unreachable database.
    pub connect_retry_ms_max: u64,
}

impl PoolLimits {
    /// The pool limits of a node configuration.
    pub fn from_config(c: &Config) -> PoolLimits {
        PoolLimits {
            size_max: c.pool_size_max,
            acquire_timeout_ms: c.pool_acquire_timeout_ms,
            idle_in_transaction_timeout_ms: c.idle_in_transaction_timeout_ms,
            statement_timeout_ms: c.statement_timeout_ms,
            connect_retry_ms_max: c.connect_retry_ms_max,
        }
    }
}

impl Default for PoolLimits {
    fn default() -> Self {
        PoolLimits::from_config(&Config::default())
    }
}

/// Parses a database URL and adds the session settings that stop runaway work.
///
/// # Errors
/// [`Error::BadUrl`] when the URL does not parse.
pub fn connect_options(url: &str, limits: &PoolLimits) -> Result<PgConnectOptions> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(Error::BadUrl {
            url: redact_url(url),
            reason: "it must start with postgres:// or postgresql://".into(),
        });
    }
    let mut opts = PgConnectOptions::from_str(url).map_err(|e| Error::BadUrl {
        url: redact_url(url),
        reason: e.to_string(),
    })?;
    // The embedded cluster this process runs or joined is reached through its Unix socket.
    if opts.get_socket().is_none() && matches!(opts.get_host(), "127.0.0.1" | "localhost") {
        if let Some(dir) = crate::embedded::local_socket_dir(opts.get_port()) {
            opts = opts.socket(dir);
        }
    }
    // sqlx warns of every statement over a second. Here that is a person's long `dbos sql`
    // query, a demo's sleep, or a node's batch under load: none is a fault, and each warned
    // on the user's terminal. The server's `pg_stat_statements` and `dbos bench` measure
    // statements; the line stays for `RUST_LOG=sqlx=debug`.
    let opts = opts.log_slow_statements(log::LevelFilter::Debug, Duration::from_secs(1));
    Ok(opts.application_name("dbos").options([
        (
            "idle_in_transaction_session_timeout",
            format!("{}ms", limits.idle_in_transaction_timeout_ms),
        ),
        (
            "statement_timeout",
            format!("{}ms", limits.statement_timeout_ms),
        ),
        // Every statement is prepared once per connection and run with parameters: planning
        // it anew for its first five runs on each pooled connection (Postgres's default) costs
        // more than running it (the claim: about 3 ms to plan, 0.4 ms to run), and a plan made
        // for one run's values is no better for the next.
        ("plan_cache_mode", "force_generic_plan".to_owned()),
        // That one plan is made when a connection first runs the statement, from the tables'
        // sizes at that moment, and is kept until the tables are analyzed again (autovacuum
        // looks once a minute). Made on a freshly booted database, whose tables are empty, it
        // reads whole tables where it should look rows up by key: every group commit then
        // scans all of `workflow_status`, at a cost growing with the table, until the next
        // analyze (3-step workflows, 32 callers: 1,200/s before it, 2,162/s after). A node's
        // statements are lookups by key; a table without a usable index is still read whole.
        ("enable_seqscan", "off".to_owned()),
        // No statement of a node runs long enough to repay compiling it, and a plan that must
        // still read a small table whole (a one-row configuration table) costs, with sequential
        // scans disabled, more than the threshold at which Postgres would compile it.
        ("jit", "off".to_owned()),
    ]))
}

/// The single-host URLs of a libpq-style multi-host URL
/// (`postgres://u:p@h1:5432,h2:5433/db?target_session_attrs=read-write`), in order, each with
/// the user, password, database and other parameters of the whole; `target_session_attrs` is
/// dropped (a node always looks for the writable server). A single-host URL is returned as is.
///
/// # Errors
/// [`Error::BadUrl`] for an empty host in the list.
pub fn split_hosts(url: &str) -> Result<Vec<String>> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Ok(vec![url.to_owned()]);
    };
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    if !hosts.contains(',') {
        return Ok(vec![url.to_owned()]);
    }
    let tail = strip_param(tail, "target_session_attrs");
    hosts
        .split(',')
        .map(|h| {
            if h.is_empty() {
                return Err(Error::BadUrl {
                    url: redact_url(url),
                    reason: "its host list has an empty entry".into(),
                });
            }
            let user = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
            Ok(format!("{scheme}://{user}{h}{tail}"))
        })
        .collect()
}

/// `url` on database `name` instead of its own (its path); the query (`?host=/run/...`,
/// `sslmode`) is kept.
pub fn on_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority = base.find("://").map_or(0, |i| i + 3);
    let server = match base[authority..].find('/') {
        Some(i) => &base[..authority + i],
        None => base,
    };
    match query {
        Some(q) => format!("{server}/{name}?{q}"),
        None => format!("{server}/{name}"),
    }
}

/// `tail` (path and query of a URL) without the query parameter `name`.
fn strip_param(tail: &str, name: &str) -> String {
    let Some((path, query)) = tail.split_once('?') else {
        return tail.to_owned();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|kv| kv.split('=').next() != Some(name))
        .collect();
    if kept.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", kept.join("&"))
    }
}

/// The first of `hosts` (single-host URLs) that accepts a connection and is not in recovery
/// (a standby), trying them all in turn, with backoff, for at most `connect_retry_ms_max`.
///
/// # Errors
/// [`Error::Config`] naming the hosts when none became writable in time; a refusal that
/// retrying cannot cure (a wrong password, a missing database) at once.
pub async fn writable_host(hosts: &[String], limits: &PoolLimits) -> Result<String> {
    /// Why no host was taken in one round: each host's answer, or a refusal not worth retrying.
    enum Round {
        Retry(Vec<String>),
        Fatal(Error),
    }
    impl std::fmt::Display for Round {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match self {
                Round::Retry(seen) => write!(f, "{}", seen.join("; ")),
                Round::Fatal(e) => write!(f, "{e}"),
            }
        }
    }
    let start = Instant::now();
    let round = || async {
        let mut seen = Vec::new();
        for h in hosts {
            let opts = connect_options(h, limits).map_err(Round::Fatal)?;
            match in_recovery(&opts).await {
                Ok(false) => return Ok(h.clone()),
                Ok(true) => seen.push(format!("{}: a standby", redact_url(h))),
                Err(e) if sqlstate::is_transient(&e) => {
                    seen.push(format!("{}: {e}", redact_url(h)));
                }
                Err(e) => return Err(Round::Fatal(e.into())),
            }
        }
        Err(Round::Retry(seen))
    };
    let transient = |r: &Round| matches!(r, Round::Retry(_));
    match retry_transient(
        "finding the writable server",
        limits.connect_retry_ms_max,
        transient,
        round,
    )
    .await
    {
        Ok(h) => Ok(h),
        Err(Round::Fatal(e)) => Err(e),
        Err(Round::Retry(seen)) => Err(Error::Config(format!(
            "no writable server among {} hosts after {} ms ({})",
            hosts.len(),
            start.elapsed().as_millis(),
            seen.join("; ")
        ))),
    }
}

/// Whether the server of `opts` is in recovery (a standby), asked on a connection of its own
/// within [`HOST_PROBE_MS_MAX`]: a host cut off from the network answers nothing, and the next
/// must be tried. A host that does not answer in time is an I/O error (transient).
async fn in_recovery(opts: &PgConnectOptions) -> std::result::Result<bool, sqlx::Error> {
    let ask = async {
        let mut c = PgConnection::connect_with(opts).await?;
        let standby: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
            .fetch_one(&mut c)
            .await?;
        let _ = c.close().await;
        Ok(standby)
    };
    tokio::time::timeout(Duration::from_millis(HOST_PROBE_MS_MAX), ask)
        .await
        .unwrap_or_else(|_| {
            Err(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {HOST_PROBE_MS_MAX} ms"),
            )))
        })
}

/// A database host of a URL and what it is now, as `dbos status` shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct HostRole {
    /// The host's single-host URL, password hidden.
    pub host: String,
    /// `primary` (writable), `standby` (in recovery), or why it did not answer.
    pub role: String,
}

/// Asks every host of `url` (one, or several in the multi-host form) whether it is the
/// writable server, each for at most [`HOST_PROBE_MS_MAX`]; never fails as a whole.
pub async fn host_roles(url: &str, limits: &PoolLimits) -> Result<Vec<HostRole>> {
    let mut roles = Vec::new();
    for h in split_hosts(url)? {
        let opts = connect_options(&h, limits)?;
        let role = match in_recovery(&opts).await {
            Ok(false) => "primary".to_owned(),
            Ok(true) => "standby".to_owned(),
            Err(e) => format!("unreachable: {e}"),
        };
        roles.push(HostRole {
            host: redact_url(&h),
            role,
        });
    }
    Ok(roles)
}

/// `url` itself, or, for a multi-host URL, the single-host URL of its writable server.
async fn resolve(url: &str, limits: &PoolLimits) -> Result<String> {
    let hosts = split_hosts(url)?;
    if hosts.len() < 2 {
        return Ok(url.to_owned());
    }
    let chosen = writable_host(&hosts, limits).await?;
    tracing::info!(host = %redact_url(&chosen), "connected to the writable server");
    Ok(chosen)
}

/// Opens a pool on `url`, creating the database if it does not exist, retrying with backoff
/// while the server is unreachable. With several hosts in `url`, the pool is on the first
/// writable one ([`writable_host`]); use [`Endpoint::open`] for a pool that follows a failover.
///
/// # Errors
/// [`Error::BadUrl`], [`Error::Unreachable`] after `connect_retry_ms_max`, or the server's
/// refusal (e.g. a wrong password), which is not retried.
pub async fn connect(url: &str, limits: &PoolLimits) -> Result<PgPool> {
    Ok(Endpoint::open(url, limits).await?.1)
}

/// Where a node's database is: the hosts of its URL (one, or several in libpq's multi-host
/// form) and the one writable now. Pools opened through it move to another host when
/// [`Endpoint::follow`] finds the writable server there (after a failover); connections
/// already open stay until they fail.
#[derive(Debug)]
pub struct Endpoint {
    hosts: Vec<String>,
    limits: PoolLimits,
    state: Mutex<EndpointState>,
    /// Held while a search for the writable server runs: many failures start one search.
    searching: tokio::sync::Mutex<()>,
}

#[derive(Debug)]
struct EndpointState {
    /// Single-host URL of the writable server the pools connect to.
    current: String,
    /// Every pool opened through the endpoint.
    pools: Vec<PgPool>,
    /// When the database was first seen failing since it last answered.
    failing_since: Option<Instant>,
    /// When the pools last moved to another host: connections opened before then are on the
    /// old one (which may be a standby now) and are closed instead of used.
    moved_at: Arc<Mutex<Option<Instant>>>,
    /// The idle connections of every [`Kept`] opened through the endpoint, while it lives.
    kept: Vec<Weak<Mutex<Vec<IdleConn>>>>,
}

impl Endpoint {
    /// Finds the writable server of `url` and opens a pool on it, as [`connect`] describes.
    ///
    /// # Errors
    /// As [`connect`].
    pub async fn open(url: &str, limits: &PoolLimits) -> Result<(Arc<Endpoint>, PgPool)> {
        let hosts = split_hosts(url)?;
        let current = resolve(url, limits).await?;
        // Probe with one plain connection: the pool itself would retry silently until its
        // acquire timeout, hiding both the cause and the retry budget.
        let probe = match connect_single(&current, limits).await {
            Err(Error::Db(e)) if sqlstate::is(&e, sqlstate::INVALID_CATALOG_NAME) => {
                create_database(&connect_options(&current, limits)?).await?;
                connect_single(&current, limits).await?
            }
            other => other?,
        };
        probe.close().await?;
        let endpoint = Arc::new(Endpoint {
            hosts,
            limits: limits.clone(),
            state: Mutex::new(EndpointState {
                current,
                pools: Vec::new(),
                failing_since: None,
                moved_at: Arc::new(Mutex::new(None)),
                kept: Vec::new(),
            }),
            searching: tokio::sync::Mutex::new(()),
        });
        let pool = endpoint.pool(limits.size_max, limits.acquire_timeout_ms)?;
        Ok((endpoint, pool))
    }

    /// A new pool of at most `size_max` connections on the writable server, opened on first
    /// use, that follows it like the others.
    fn pool(&self, size_max: u32, acquire_timeout_ms: u64) -> Result<PgPool> {
        let mut state = self.state.lock();
        let moved_at = state.moved_at.clone();
        let pool = PgPoolOptions::new()
            .max_connections(size_max)
            .acquire_timeout(Duration::from_millis(acquire_timeout_ms))
            // sqlx pings every connection it hands out (a round trip per statement); a
            // connection that was in use within the last second is live, and one lost since
            // fails its statement, which is retried like any lost connection.
            .test_before_acquire(false)
            .before_acquire(move |conn, meta| {
                let stale = moved_at.lock().is_some_and(|t| meta.age > t.elapsed());
                Box::pin(async move {
                    if stale {
                        return Ok(false);
                    }
                    if meta.idle_for < Duration::from_millis(PING_IDLE_MS_MIN) {
                        return Ok(true);
                    }
                    Ok(sqlx::Connection::ping(conn).await.is_ok())
                })
            })
            .connect_lazy_with(connect_options(&state.current, &self.limits)?);
        state.pools.push(pool.clone());
        Ok(pool)
    }

    /// A pool of at most `size_max` connections of its own, opened on first use, that follows
    /// the writable server like the others: for a hot path that keeps a few connections busy
    /// all the time (the group commit). sqlx hands out the connection that has been idle
    /// longest, so in the node's large pool a steady few statements at a time rotate through
    /// every connection, and each runs on a backend whose caches have gone cold; in a pool
    /// sized to the work, the same few backends serve every statement.
    pub fn own_pool(&self, size_max: u32) -> PgPool {
        self.pool(size_max.max(1), self.limits.acquire_timeout_ms)
            .expect("the current URL parsed when the endpoint opened")
    }

    /// At most `size_max` connections of a pool of their own ([`Endpoint::own_pool`]), kept
    /// between statements: for a hot path that runs statement after statement on the same few
    /// connections (the group commit). See [`Kept`].
    pub fn kept(&self, size_max: u32) -> Kept {
        let pool = self.own_pool(size_max);
        let idle = Arc::new(Mutex::new(Vec::new()));
        let mut state = self.state.lock();
        state.kept.retain(|k| k.strong_count() > 0);
        state.kept.push(Arc::downgrade(&idle));
        Kept {
            pool,
            moved_at: state.moved_at.clone(),
            idle,
            kept: tokio::sync::Notify::new(),
        }
    }

    /// Runs one empty statement, a transaction of its own, on every idle connection of the
    /// endpoint's pools and of its [`Kept`]s; returns how many ran. A backend publishes its
    /// statistics (`pg_stat_database`, `pg_stat_wal`) as a transaction ends and it goes idle,
    /// but at most once a second: one whose last transaction ended within a second of its last
    /// publication holds them back for ten seconds more, until a later transaction of its own
    /// (a round trip without a statement does not count). So a reader of those counters waits
    /// a second after the work, calls this, and then reads them whole, less the transactions
    /// this ran. A connection whose statement fails is dropped (its pool tests it).
    pub async fn touch_idle(&self) -> usize {
        const EMPTY: &str = "SELECT";
        let (pools, kept) = {
            let state = self.state.lock();
            (state.pools.clone(), state.kept.clone())
        };
        let mut ran = 0;
        for pool in pools {
            let mut conns = Vec::new();
            while let Some(c) = pool.try_acquire() {
                conns.push(c);
            }
            for c in &mut conns {
                ran += usize::from(c.execute(EMPTY).await.is_ok());
            }
        }
        for idle in kept.iter().filter_map(Weak::upgrade) {
            let taken: Vec<IdleConn> = std::mem::take(&mut *idle.lock());
            let mut back = Vec::with_capacity(taken.len());
            for mut c in taken {
                if c.conn.execute(EMPTY).await.is_ok() {
                    ran += 1;
                    back.push(c);
                }
            }
            idle.lock().extend(back);
        }
        ran
    }

    /// A pool of one connection, opened on first use (and again after it is lost): for a loop
    /// that must not wait behind the node's work for a connection, such as the heartbeat or the
    /// notifier's `LISTEN`.
    pub fn side_pool(&self) -> PgPool {
        self.pool(1, SIDE_ACQUIRE_TIMEOUT_MS)
            .expect("the current URL parsed when the endpoint opened")
    }

    /// Single-host URL of the server the pools connect to now.
    pub fn current(&self) -> String {
        self.state.lock().current.clone()
    }

    /// Whether the URL names more than one host, so that the writable server may move.
    pub fn is_multi_host(&self) -> bool {
        self.hosts.len() > 1
    }

    /// Notes that a statement on the database failed (the heartbeat calls this); the failover
    /// [`Endpoint::follow`] then logs reports the time since the first such failure.
    pub fn note_failure(&self) {
        self.state
            .lock()
            .failing_since
            .get_or_insert_with(Instant::now);
    }

    /// Notes that the database answered again.
    pub fn note_success(&self) {
        self.state.lock().failing_since = None;
    }

    /// Finds the writable server again, starting with the current one, and moves every pool
    /// to it when it is another host; logs such a failover once, with how long the database
    /// was failing. Returns the new host's URL when the pools moved. One search runs at a time:
    /// a call while another runs returns `None` at once. Nothing to do for one host.
    ///
    /// # Errors
    /// As [`writable_host`], when no host became writable within `connect_retry_ms_max`.
    pub async fn follow(&self) -> Result<Option<String>> {
        if !self.is_multi_host() {
            return Ok(None);
        }
        let Ok(_searching) = self.searching.try_lock() else {
            return Ok(None);
        };
        let current = self.current();
        let mut order = vec![current.clone()];
        order.extend(self.hosts.iter().filter(|h| **h != current).cloned());
        let found = writable_host(&order, &self.limits).await?;
        if found == current {
            return Ok(None);
        }
        let opts = connect_options(&found, &self.limits)?;
        let mut state = self.state.lock();
        for pool in &state.pools {
            pool.set_connect_options(opts.clone());
        }
        state.current = found.clone();
        *state.moved_at.lock() = Some(Instant::now());
        let failing_ms = state
            .failing_since
            .take()
            .map_or(0, |t| t.elapsed().as_millis() as u64);
        tracing::warn!(
            from = %redact_url(&current),
            to = %redact_url(&found),
            failing_ms,
            "database failover: the writable server moved; this node now works on the new primary"
        );
        Ok(Some(found))
    }
}

/// A pooled connection idle this long is pinged before it is handed out.
const PING_IDLE_MS_MIN: u64 = 1_000;
/// How long a side pool's loop waits for its one connection.
const SIDE_ACQUIRE_TIMEOUT_MS: u64 = 10_000;
/// How long asking one host whether it is writable may take ([`in_recovery`]).
const HOST_PROBE_MS_MAX: u64 = 2_000;

/// Connections of a pool kept checked out between statements.
///
/// sqlx tests a connection with a round trip (a `Sync` and its answer) each time one goes back
/// to its pool, so a hot path that takes a connection from a pool for each statement pays a
/// second round trip per statement, on both sides, and its next statement may wait for that
/// test to end. A connection given back here with [`KeptConn::keep`] after a statement that
/// succeeded is used again as it is, the one kept last first, so a few backends serve the
/// statements with their catalog entries and plans warm. One idle for a second or more, or
/// taken from the pool before the pools last moved to another server ([`Endpoint::follow`]),
/// goes back to the pool instead, which tests it, or closes it, as for any other use. A
/// statement waiting for the pool takes a connection kept meanwhile, since kept connections do
/// not go back to the pool.
#[derive(Debug)]
pub struct Kept {
    pool: PgPool,
    moved_at: Arc<Mutex<Option<Instant>>>,
    idle: Arc<Mutex<Vec<IdleConn>>>,
    /// Told of each connection kept: one waiting for the pool takes it instead, since a kept
    /// connection does not go back to the pool.
    kept: tokio::sync::Notify,
}

#[derive(Debug)]
struct IdleConn {
    conn: sqlx::pool::PoolConnection<sqlx::Postgres>,
    taken_at: Instant,
    idle_since: Instant,
}

impl Kept {
    /// Connections of `pool` kept between statements; a pool that does not follow an
    /// [`Endpoint`] (for a pool that does, see [`Endpoint::kept`]).
    pub fn new(pool: PgPool) -> Kept {
        Kept {
            pool,
            moved_at: Arc::new(Mutex::new(None)),
            idle: Arc::new(Mutex::new(Vec::new())),
            kept: tokio::sync::Notify::new(),
        }
    }

    /// The connection used last, if it may be used again, else one from the pool.
    ///
    /// # Errors
    /// The pool's, when no connection could be had within its acquire timeout.
    pub async fn acquire(&self) -> std::result::Result<KeptConn<'_>, sqlx::Error> {
        let moved_at = *self.moved_at.lock();
        let from_pool = self.pool.acquire();
        tokio::pin!(from_pool);
        loop {
            // Registered before the stack is looked at, so a connection kept in between wakes
            // this wait.
            let kept = self.kept.notified();
            tokio::pin!(kept);
            kept.as_mut().enable();
            while let Some(c) = self.idle.lock().pop() {
                let moved = moved_at.is_some_and(|t| t.elapsed() < c.taken_at.elapsed());
                if !moved && c.idle_since.elapsed() < Duration::from_millis(PING_IDLE_MS_MIN) {
                    return Ok(KeptConn {
                        conn: c.conn,
                        taken_at: c.taken_at,
                        home: self,
                    });
                }
                // Dropped, it goes back to the pool, which tests it.
            }
            // All of the pool's connections may be kept or in use: whichever comes first, a
            // connection from the pool or one kept by the statement that held it.
            tokio::select! {
                conn = &mut from_pool => {
                    return Ok(KeptConn {
                        conn: conn?,
                        taken_at: Instant::now(),
                        home: self,
                    });
                }
                () = &mut kept => {}
            }
        }
    }

    /// Gives every idle connection back to the pool, as when the hot path ends.
    pub fn release_all(&self) {
        self.idle.lock().clear();
    }
}

/// A connection from [`Kept::acquire`]. Dropped, it goes back to its pool (after a statement
/// that failed, or one dropped halfway, the pool's test finds out whether it is still fit);
/// [`KeptConn::keep`] keeps it for the next statement instead.
#[derive(Debug)]
pub struct KeptConn<'a> {
    conn: sqlx::pool::PoolConnection<sqlx::Postgres>,
    taken_at: Instant,
    home: &'a Kept,
}

impl KeptConn<'_> {
    /// Keeps the connection for the next [`Kept::acquire`]: only after a statement that
    /// succeeded, so it is idle and outside any transaction.
    pub fn keep(self) {
        self.home.idle.lock().push(IdleConn {
            conn: self.conn,
            taken_at: self.taken_at,
            idle_since: Instant::now(),
        });
        self.home.kept.notify_one();
    }
}

impl std::ops::Deref for KeptConn<'_> {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.conn
    }
}

impl std::ops::DerefMut for KeptConn<'_> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}

/// A pool of one connection to the same database as `pool`, opened on first use (and again
/// after it is lost): for a loop that must not wait behind the node's work for a connection,
/// such as the heartbeat or the notifier's `LISTEN`.
pub fn side_pool(pool: &PgPool) -> PgPool {
    PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_millis(SIDE_ACQUIRE_TIMEOUT_MS))
        .connect_lazy_with(pool.connect_options().as_ref().clone())
}

/// Opens a single connection on `url` with the same retries as [`connect`].
///
/// # Errors
/// As [`connect`], but a missing database is an error.
pub async fn connect_one(url: &str, limits: &PoolLimits) -> Result<PgConnection> {
    connect_single(&resolve(url, limits).await?, limits).await
}

/// [`connect_one`] on a single-host URL.
async fn connect_single(url: &str, limits: &PoolLimits) -> Result<PgConnection> {
    let opts = connect_options(url, limits)?;
    retry(url, limits.connect_retry_ms_max, || async {
        Ok(PgConnection::connect_with(&opts).await?)
    })
    .await
}

/// Whether an error means "try again later" rather than "this will never work".
fn transient(e: &Error) -> bool {
    match e {
        Error::Db(sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_)) => true,
        // The server is starting up, shutting down, or out of connection slots.
        Error::Db(e) => {
            sqlstate::is(e, sqlstate::CANNOT_CONNECT_NOW)
                || sqlstate::is(e, sqlstate::TOO_MANY_CONNECTIONS)
        }
        _ => false,
    }
}

async fn retry<T, F, Fut>(url: &str, retry_ms_max: u64, mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let start = Instant::now();
    let mut attempts = 0;
    let result = retry_transient("connecting", retry_ms_max, transient, || {
        attempts += 1;
        attempt()
    })
    .await;
    match result {
        // Still transient: the budget is spent.
        Err(e) if transient(&e) => {
            let Error::Db(source) = e else {
                unreachable!("transient errors are database errors")
            };
            Err(Error::Unreachable {
                url: redact_url(url),
                attempts,
                waited_ms: start.elapsed().as_millis() as u64,
                source,
            })
        }
        other => other,
    }
}

/// Runs `attempt` again while it fails with an error that `transient` accepts (a lost
/// connection, a restarting server), pausing 50 ms and doubling up to 1 s, for at most
/// `budget_ms` in all; then returns the last error. For statements that may simply be run
/// again, such as those of a node's start.
///
/// # Errors
/// The first error that is not transient, or the last one once the budget is spent.
pub async fn retry_transient<T, E, F, Fut>(
    what: &str,
    budget_ms: u64,
    transient: impl Fn(&E) -> bool,
    mut attempt: F,
) -> std::result::Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, E>>,
{
    let start = Instant::now();
    let mut pause = RETRY_PAUSE_MS_MIN;
    loop {
        match attempt().await {
            Err(e) if transient(&e) => {
                let waited = start.elapsed().as_millis() as u64;
                if waited >= budget_ms {
                    return Err(e);
                }
                tracing::info!(error = %e, "{what} failed; retrying");
                tokio::time::sleep(Duration::from_millis(pause.min(budget_ms - waited))).await;
                pause = (pause * 2).min(RETRY_PAUSE_MS_MAX);
            }
            other => return other,
        }
    }
}

async fn create_database(opts: &PgConnectOptions) -> Result<()> {
    let name = opts
        .get_database()
        .map(str::to_owned)
        .unwrap_or_else(|| opts.get_username().to_owned());
    let admin = opts.clone().database("postgres");
    let mut conn = PgConnection::connect_with(&admin).await?;
    let sql = format!("CREATE DATABASE {}", quote_ident(&name));
    match conn.execute(sql.as_str()).await {
        Ok(_) => tracing::info!(database = %name, "created the database"),
        Err(e) if sqlstate::is(&e, sqlstate::DUPLICATE_DATABASE) => {}
        Err(e) => return Err(e.into()),
    }
    conn.close().await?;
    Ok(())
}

/// Quotes a Postgres identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_database_keeps_the_servers_address_and_options() {
        assert_eq!(
            on_database("postgres://u:p@localhost:5499/benchx?host=/tmp/pg", "peer"),
            "postgres://u:p@localhost:5499/peer?host=/tmp/pg"
        );
        assert_eq!(
            on_database("postgres://u@h:5432/app", "peer"),
            "postgres://u@h:5432/peer"
        );
        assert_eq!(on_database("postgres://u@h", "peer"), "postgres://u@h/peer");
    }

    #[test]
    fn a_multi_host_url_splits_into_one_url_per_host() {
        assert_eq!(
            split_hosts("postgres://u:p@h1:5432,h2:5433,[::1]:6000/db?sslmode=disable&target_session_attrs=read-write")
                .expect("splits"),
            vec![
                "postgres://u:p@h1:5432/db?sslmode=disable",
                "postgres://u:p@h2:5433/db?sslmode=disable",
                "postgres://u:p@[::1]:6000/db?sslmode=disable",
            ]
        );
        assert_eq!(
            split_hosts("postgresql://h1,h2/db?target_session_attrs=any").expect("splits"),
            vec!["postgresql://h1/db", "postgresql://h2/db"]
        );
        let one = "postgres://u:p@h1:5432/db?target_session_attrs=read-write";
        assert_eq!(split_hosts(one).expect("one"), vec![one]);
        assert!(matches!(
            split_hosts("postgres://u:p@h1,,h2/db"),
            Err(Error::BadUrl { .. })
        ));
    }
}
