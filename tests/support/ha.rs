//! A Postgres that fails over, for tests: the formation of `scripts/ha-cluster` (a
//! pg_auto_failover monitor, a primary and a synchronous standby) run inside a network
//! namespace, stopped and removed when dropped.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use super::netns::Net;

/// Why the formation cannot run here (no pg_auto_failover).
pub fn unavailable() -> Option<String> {
    match Command::new("pg_autoctl").arg("--version").output() {
        Ok(o) if o.status.success() => None,
        _ => Some(
            "pg_autoctl not found: install postgresql-15-auto-failover and pg-auto-failover-cli \
             (scripts/setup does)"
                .into(),
        ),
    }
}

/// A running formation.
pub struct Ha {
    dir: PathBuf,
    ns: String,
    host: String,
    port: u16,
}

impl Ha {
    /// Starts the formation in `dir` (which must not exist; its parent must be reachable by
    /// the Postgres user) inside namespace `ns`, listening on `host`, the monitor on `port`
    /// and the two nodes on the next ports.
    pub fn up(dir: &Path, ns: &str, host: &str, port: u16) -> Ha {
        let ha = Ha {
            dir: dir.to_owned(),
            ns: ns.to_owned(),
            host: host.to_owned(),
            port,
        };
        ha.script("up");
        ha
    }

    fn script(&self, action: &str) -> String {
        let out: Output = Net::exec(
            &self.ns,
            Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/ha-cluster"),
        )
        .arg(action)
        .env("HA_DIR", &self.dir)
        .env("HA_HOST", &self.host)
        .env("HA_PORT", self.port.to_string())
        .output()
        .expect("scripts/ha-cluster runs");
        assert!(
            out.status.success(),
            "scripts/ha-cluster {action}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The multi-host URL nodes take (over TCP, from the hosts' namespaces).
    pub fn url(&self) -> String {
        self.script("url")
    }

    /// Kills the primary and waits until the standby is promoted; returns the script's line
    /// ("primary moved from port A to port B in N ms").
    pub fn failover(&self) -> String {
        self.script("failover")
    }

    /// Waits until the formation has a primary and a synchronous standby again.
    pub fn wait_healthy(&self) {
        self.script("wait");
    }

    /// A pool on the writable server, over its Unix socket (the test itself runs outside the
    /// namespaces), waiting for one to be writable.
    pub async fn writable_pool(&self) -> PgPool {
        for _ in 0..600 {
            for node in [1, 2] {
                let opts = PgConnectOptions::new()
                    .socket("/var/run/postgresql")
                    .port(self.port + node)
                    .username("postgres")
                    .database("dbos");
                let pool = PgPoolOptions::new()
                    .max_connections(2)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect_lazy_with(opts);
                let standby: Result<bool, _> = sqlx::query_scalar("SELECT pg_is_in_recovery()")
                    .fetch_one(&pool)
                    .await;
                if matches!(standby, Ok(false)) {
                    return pool;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("no writable server within 2 minutes");
    }
}

impl Drop for Ha {
    fn drop(&mut self) {
        let _ = Net::exec(
            &self.ns,
            Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/ha-cluster"),
        )
        .arg("down")
        .env("HA_DIR", &self.dir)
        .env("HA_HOST", &self.host)
        .env("HA_PORT", self.port.to_string())
        .output();
    }
}
