//! Node configuration: every limit is named, documented and has a default.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How a node boots and the limits it runs under.
///
/// Built from [`Config::default`], from the environment with [`Config::from_env`], or by the
/// `dbos boot` flags, which read the same environment variables.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Database to use (`DATABASE_URL`). `None` boots the embedded Postgres in `data_dir`.
    pub database_url: Option<String>,
    /// Directory of the embedded cluster (`DBOS_DATA_DIR`); see [`default_data_dir`].
    pub data_dir: PathBuf,
    /// Node id (`DBOS_NODE_ID`); a fresh one per boot when unset.
    pub node_id: Option<String>,
    /// Tasks this node runs at once (`DBOS_SLOTS`).
    pub slots: u32,
    /// Labels for placement, e.g. `gpu=true`.
    pub labels: BTreeMap<String, String>,
    /// Unprivileged user that runs the embedded Postgres when this process is root
    /// (`DBOS_PG_USER`).
    pub pg_user: String,
    /// Directory of the Postgres server binaries (`DBOS_PG_BINDIR`); searched for when unset.
    pub pg_bindir: Option<PathBuf>,
    /// TCP port of the embedded Postgres on 127.0.0.1 (`DBOS_PG_PORT`); a free one when unset.
    pub pg_port: Option<u16>,
    /// Time to wait for the embedded Postgres to accept connections.
    pub pg_start_timeout_ms: u64,
    /// Connections in the node's pool.
    pub pool_size_max: u32,
    /// Time a caller waits for a pooled connection before an error.
    pub pool_acquire_timeout_ms: u64,
    /// Postgres ends a session left idle inside a transaction this long.
    pub idle_in_transaction_timeout_ms: u64,
    /// Postgres cancels any single statement running longer than this; 0 disables.
    pub statement_timeout_ms: u64,
    /// Total time spent retrying an unreachable database before giving up.
    pub connect_retry_ms_max: u64,
    /// Interval between heartbeats of this node.
    pub heartbeat_interval_ms: u64,
    /// A node whose last heartbeat is older than this is dead.
    pub node_lease_ms: u64,
    /// At shutdown, running tasks get this long to finish.
    pub drain_timeout_ms: u64,
    /// Notifications buffered per channel for slow waiters; a waiter that falls further behind
    /// is told to re-check its table.
    pub notify_buffer_max: usize,
    /// Extra settings (`-c name=value`) of an embedded server this node starts, e.g.
    /// `shared_preload_libraries`.
    pub pg_settings: Vec<(String, String)>,
    /// Whether the embedded Postgres this node starts quits when the node's process ends,
    /// however it ends (killed included): for a cluster in a scratch directory (`dbos bench`).
    /// Off by default: a node's cluster outlives a crash of the node, which joins it again.
    pub pg_stop_with_node: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            database_url: None,
            data_dir: default_data_dir(),
            node_id: None,
            slots: 64,
            labels: BTreeMap::new(),
            pg_user: "postgres".to_owned(),
            pg_bindir: None,
            pg_port: None,
            pg_start_timeout_ms: 60_000,
            pool_size_max: 32,
            pool_acquire_timeout_ms: 30_000,
            idle_in_transaction_timeout_ms: 60_000,
            statement_timeout_ms: 0,
            connect_retry_ms_max: 10_000,
            heartbeat_interval_ms: 1_000,
            node_lease_ms: 10_000,
            drain_timeout_ms: 10_000,
            notify_buffer_max: 1_024,
            pg_settings: Vec::new(),
            pg_stop_with_node: false,
        }
    }
}

/// The data directory used when none is given: `$DBOS_DATA_DIR`, else `/var/lib/dbos` for root
/// (whose home is not reachable by the unprivileged Postgres user), else
/// `$XDG_DATA_HOME/dbos`, else `~/.local/share/dbos`.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("DBOS_DATA_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/dbos");
    }
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("dbos");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/share/dbos"),
        None => PathBuf::from(".dbos"),
    }
}

impl Config {
    /// The defaults, overridden by the environment variables named on each field.
    ///
    /// # Errors
    /// A variable that is set but does not parse.
    pub fn from_env() -> Result<Config> {
        let mut c = Config::default();
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        c.database_url = var("DATABASE_URL");
        c.node_id = var("DBOS_NODE_ID");
        if let Some(v) = var("DBOS_SLOTS") {
            c.slots = parse_env("DBOS_SLOTS", &v)?;
        }
        if let Some(v) = var("DBOS_PG_USER") {
            c.pg_user = v;
        }
        c.pg_bindir = var("DBOS_PG_BINDIR").map(PathBuf::from);
        if let Some(v) = var("DBOS_PG_PORT") {
            c.pg_port = Some(parse_env("DBOS_PG_PORT", &v)?);
        }
        c.validate()?;
        Ok(c)
    }

    /// Checks that every limit is usable.
    ///
    /// # Errors
    /// [`Error::Config`] naming the offending setting.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("slots", u64::from(self.slots)),
            ("pool_size_max", u64::from(self.pool_size_max)),
            ("pool_acquire_timeout_ms", self.pool_acquire_timeout_ms),
            ("heartbeat_interval_ms", self.heartbeat_interval_ms),
            ("node_lease_ms", self.node_lease_ms),
            ("pg_start_timeout_ms", self.pg_start_timeout_ms),
            ("notify_buffer_max", self.notify_buffer_max as u64),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(Error::Config(format!("{name} must be greater than 0")));
            }
        }
        if self.node_lease_ms <= self.heartbeat_interval_ms {
            return Err(Error::Config(format!(
                "node_lease_ms ({}) must exceed heartbeat_interval_ms ({}), or live nodes would count as dead",
                self.node_lease_ms, self.heartbeat_interval_ms
            )));
        }
        if let Some(id) = &self.node_id {
            if id.is_empty() || id.len() > 128 || id.chars().any(char::is_control) {
                return Err(Error::Config(format!(
                    "node id {} must be 1 to 128 printable characters",
                    crate::error::shown(id)
                )));
            }
        }
        for (k, v) in &self.labels {
            if k.is_empty() || k.len() > 128 || v.len() > 1024 {
                return Err(Error::Config(format!(
                    "label {}={}: keys are 1 to 128 bytes, values at most 1024 bytes",
                    crate::error::shown(k),
                    crate::error::shown(v)
                )));
            }
        }
        Ok(())
    }
}

fn parse_env<T: std::str::FromStr>(name: &str, value: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    value
        .parse()
        .map_err(|e| Error::Config(format!("{name}={value:?}: {e}")))
}

/// Parses a `KEY=VALUE` label as given to `dbos boot --label`.
///
/// # Errors
/// [`Error::Config`] when there is no `=` or the key is empty.
pub fn parse_label(s: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(Error::Config(format!(
            "label {s:?} must look like KEY=VALUE, e.g. gpu=true"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// A label is refused, or split at its first '=' into a non-empty key and the rest.
        #[test]
        fn any_label_is_split_or_refused(s in "\\PC{0,64}") {
            if let Ok((k, v)) = parse_label(&s) {
                proptest::prop_assert!(!k.is_empty() && !k.contains('='));
                proptest::prop_assert_eq!(format!("{k}={v}"), s);
            }
        }
    }

    #[test]
    fn defaults_validate_and_bad_limits_are_refused() {
        Config::default().validate().expect("defaults are valid");
        let c = Config {
            slots: 0,
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("slots"));
        let c = Config {
            node_lease_ms: 500,
            heartbeat_interval_ms: 1000,
            ..Config::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("node_lease_ms"));
    }

    #[test]
    fn labels_parse_key_value() {
        assert_eq!(
            parse_label("gpu=true").unwrap(),
            ("gpu".into(), "true".into())
        );
        assert_eq!(parse_label("zone=").unwrap(), ("zone".into(), "".into()));
        assert!(parse_label("=x").is_err());
        assert!(parse_label("novalue").is_err());
    }
}
