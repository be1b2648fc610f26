//! Nodes: registration, heartbeats, liveness.
//!
//! All queries here run on `kernel.nodes`; times come from the database clock.

use std::collections::BTreeMap;

use sqlx::types::chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{PgExecutor, PgPool};

use crate::error::{Error, Result};

/// The identity a node registers with.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    /// Unique id; the DBOS `executor_id` of everything the node runs.
    pub node_id: String,
    /// Host name (for people; the host is identified by `machine_id`).
    pub hostname: String,
    /// The machine's id ([`machine_id`]).
    pub machine_id: String,
    /// The id of the machine's current boot ([`boot_id`]).
    pub boot_id: String,
    /// Process id on the host.
    pub pid: i32,
    /// Version of the binary.
    pub version: String,
    /// Data directory of the embedded cluster, when the node uses one.
    pub data_dir: Option<String>,
    /// Tasks the node runs at once.
    pub slots: u32,
    /// Placement labels.
    pub labels: BTreeMap<String, String>,
    /// Silence after which the node counts as dead.
    pub lease_ms: u64,
}

/// A row of `kernel.nodes`, as `os.nodes` shows it.
#[derive(Clone, Debug, serde::Serialize, sqlx::FromRow)]
pub struct Node {
    /// Node id.
    pub node_id: String,
    /// Host name.
    pub hostname: String,
    /// Process id.
    pub pid: i32,
    /// `running`, `draining`, `stopped` or `dead`.
    pub state: String,
    /// Whether it heartbeats within its lease.
    pub alive: bool,
    /// Tasks it runs at once.
    pub slots: i32,
    /// Placement labels (a JSON object of strings).
    pub labels: Json<serde_json::Value>,
    /// When it booted.
    pub started_at: DateTime<Utc>,
    /// Last heartbeat.
    pub heartbeat_at: DateTime<Utc>,
    /// Its address as the server saw it at its last heartbeat; `None` over a Unix socket.
    pub addr: Option<String>,
}

/// The database a node or a client is connected to, as `dbos status` leads with it.
#[derive(Clone, Debug, serde::Serialize, sqlx::FromRow)]
pub struct Overview {
    /// Name of the database.
    pub database: String,
    /// Version of the Postgres server.
    pub server_version: String,
    /// Nodes heartbeating within their lease.
    pub nodes_alive: i64,
    /// Address and port of the server answering (the primary); `None` over a Unix socket.
    pub server: Option<String>,
}

/// A fresh node id: the host name and 8 random hex digits.
pub fn fresh_node_id(hostname: &str) -> String {
    let host: String = hostname.chars().take(96).collect();
    format!("{host}-{}", hex::encode(rand::random::<[u8; 4]>()))
}

/// This machine's id: `/etc/machine-id` (or D-Bus's copy), unique per installed machine; the
/// host name (prefixed `host:`) where neither exists.
pub fn machine_id() -> String {
    ["/etc/machine-id", "/var/lib/dbus/machine-id"]
        .iter()
        .find_map(|p| {
            std::fs::read_to_string(p)
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| format!("host:{}", hostname()))
}

/// The id of this machine's current boot (`/proc/sys/kernel/random/boot_id`), empty where the
/// kernel does not provide one: a node of another boot of this machine is gone.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// The host's name.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Registers a node as running. A node id may be reused (`--node-id`) once its previous holder
/// is stopped, dead, or silent past its lease.
///
/// 2 round trips (the current holder's pid, then the upsert), 1 commit; runs once per boot.
///
/// # Errors
/// [`Error::Config`] when a live node holds the id.
pub async fn register(pool: &PgPool, n: &NodeInfo) -> Result<()> {
    let labels = serde_json::to_value(&n.labels).expect("string maps serialise");
    // Inserts, or takes over a row whose holder is gone (served by the primary key).
    let row = sqlx::query(
        // Records the server's timeline when new (a fresh database, or after a failover):
        // leases run from then (`kernel.writable_since`).
        "WITH timeline AS (
             INSERT INTO kernel.timelines (timeline) SELECT kernel.timeline()
             ON CONFLICT DO NOTHING)
         INSERT INTO kernel.nodes AS n
             (node_id, hostname, pid, version, data_dir, slots, labels, lease_ms, machine_id,
              boot_id, addr)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $10, $11, inet_client_addr())
         ON CONFLICT (node_id) DO UPDATE SET
             hostname = excluded.hostname, pid = excluded.pid, version = excluded.version,
             machine_id = excluded.machine_id, boot_id = excluded.boot_id, addr = excluded.addr,
             data_dir = excluded.data_dir, slots = excluded.slots, labels = excluded.labels,
             lease_ms = excluded.lease_ms, started_at = now(), heartbeat_at = now(),
             stopped_at = NULL, state = 'running'
         WHERE n.state IN ('stopped', 'dead')
            OR kernel.lease_expired(n.heartbeat_at, n.lease_ms)
            OR (n.machine_id = excluded.machine_id AND n.pid = $9)
         RETURNING node_id",
    )
    .bind(&n.node_id)
    .bind(&n.hostname)
    .bind(n.pid)
    .bind(&n.version)
    .bind(&n.data_dir)
    .bind(n.slots as i32)
    .bind(labels)
    .bind(n.lease_ms as i64)
    // A previous holder on this machine whose process is gone may be replaced at once.
    .bind(dead_local_pid(pool, n).await?)
    .bind(&n.machine_id)
    .bind(&n.boot_id)
    .fetch_optional(pool)
    .await?;
    if row.is_none() {
        return Err(Error::Config(format!(
            "node id {:?} belongs to a live node; choose another --node-id or stop that node",
            n.node_id
        )));
    }
    Ok(())
}

/// The pid of the current holder of `me.node_id` on this machine if that process is gone (or
/// ran in an earlier boot), else 0.
async fn dead_local_pid(pool: &PgPool, me: &NodeInfo) -> Result<i32> {
    let holder: Option<(i32, Option<String>)> = sqlx::query_as(
        "SELECT pid, boot_id FROM kernel.nodes WHERE node_id = $1 AND machine_id = $2",
    )
    .bind(&me.node_id)
    .bind(&me.machine_id)
    .fetch_optional(pool)
    .await?;
    Ok(holder
        .filter(|(pid, boot)| gone(*pid, boot.as_deref(), &me.boot_id))
        .map_or(0, |(pid, _)| pid))
}

/// Whether the node process `pid` of an earlier boot `boot` of this machine (now in boot
/// `current`) is gone: another boot's process certainly is; one of this boot is when it no
/// longer runs.
fn gone(pid: i32, boot: Option<&str>, current: &str) -> bool {
    boot.is_some_and(|b| b != current) || !process_alive(pid)
}

/// Whether process `pid` of this host still runs: it exists and is not a zombie (killed but not
/// yet reaped by its parent; it will never run again).
pub fn process_alive(pid: i32) -> bool {
    use nix::sys::signal::kill;
    use nix::unistd::Pid;
    let exists = pid > 0
        && matches!(
            kill(Pid::from_raw(pid), None),
            Ok(()) | Err(nix::errno::Errno::EPERM)
        );
    exists && !is_zombie(pid)
}

/// Whether `/proc` shows process `pid` as a zombie (state `Z`) or dead (`X`).
fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // The state follows the command name, which is in parentheses and may hold spaces.
            let after = stat.rsplit_once(')')?.1;
            after
                .split_whitespace()
                .next()
                .map(|s| matches!(s, "Z" | "X"))
        })
        .unwrap_or(false)
}

/// Marks as dead the earlier nodes of this machine and data directory whose processes are gone
/// (a restart after a crash, or after a reboot), so their work can be taken over at once
/// instead of after their lease. Machines are told apart by machine id, never by host name,
/// and a killed process not yet reaped counts as gone. Returns their ids.
///
/// 2 round trips, 1 commit (served by `nodes_machine_idx`).
///
/// # Errors
/// Database errors.
pub async fn mark_predecessors_dead(pool: &PgPool, me: &NodeInfo) -> Result<Vec<String>> {
    let rows: Vec<(String, i32, Option<String>)> = sqlx::query_as(
        "SELECT node_id, pid, boot_id FROM kernel.nodes
         WHERE machine_id = $1 AND data_dir IS NOT DISTINCT FROM $2
           AND state IN ('running', 'draining') AND node_id <> $3",
    )
    .bind(&me.machine_id)
    .bind(&me.data_dir)
    .bind(&me.node_id)
    .fetch_all(pool)
    .await?;
    let gone: Vec<String> = rows
        .into_iter()
        .filter(|(_, pid, boot)| gone(*pid, boot.as_deref(), &me.boot_id))
        .map(|(node_id, ..)| node_id)
        .collect();
    if gone.is_empty() {
        return Ok(gone);
    }
    let marked: Vec<String> = sqlx::query_scalar(
        "UPDATE kernel.nodes SET state = 'dead', stopped_at = now()
         WHERE node_id = ANY($1) AND state IN ('running', 'draining')
         RETURNING node_id",
    )
    .bind(&gone)
    .fetch_all(pool)
    .await?;
    for id in &marked {
        tracing::info!(node_id = %id, "marked the previous node of this host dead");
    }
    Ok(marked)
}

/// Other nodes that use this database now: running or draining within their lease, leaving
/// out those of this machine whose processes are gone (killed, and not yet found dead). Read
/// by a node that leaves, before it stops the embedded server: a node booted elsewhere with
/// `--database-url` holds no lock on the data directory.
///
/// 1 round trip (served by `nodes_live_idx`).
///
/// # Errors
/// Database errors.
pub async fn others_live(pool: &PgPool, me: &NodeInfo) -> Result<Vec<String>> {
    let rows: Vec<(String, String, i32, Option<String>)> = sqlx::query_as(
        "SELECT node_id, machine_id, pid, boot_id FROM kernel.nodes
         WHERE state IN ('running', 'draining') AND node_id <> $1
           AND NOT kernel.lease_expired(heartbeat_at, lease_ms)",
    )
    .bind(&me.node_id)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter(|(_, machine, pid, boot)| {
            *machine != me.machine_id || !gone(*pid, boot.as_deref(), &me.boot_id)
        })
        .map(|(node_id, ..)| node_id)
        .collect())
}

/// Records a heartbeat. Returns `false` when the node is no longer registered as live (another
/// node declared it dead), in which case it must stop.
///
/// 1 round trip, 1 commit (primary key).
///
/// # Errors
/// Database errors.
pub async fn heartbeat(pool: &PgPool, node_id: &str) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE kernel.nodes SET heartbeat_at = now(), addr = inet_client_addr()
         WHERE node_id = $1 AND state IN ('running', 'draining')",
    )
    .bind(node_id)
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Sets a live node's state to `draining`.
///
/// 1 round trip, 1 commit.
///
/// # Errors
/// Database errors.
pub async fn mark_draining(pool: &PgPool, node_id: &str) -> Result<()> {
    sqlx::query(
        "UPDATE kernel.nodes SET state = 'draining' WHERE node_id = $1 AND state = 'running'",
    )
    .bind(node_id)
    .execute(pool)
    .await?;
    Ok(())
}

/// Records that a node left cleanly.
///
/// 1 round trip, 1 commit.
///
/// # Errors
/// Database errors.
pub async fn mark_stopped(pool: &PgPool, node_id: &str) -> Result<()> {
    sqlx::query(
        "UPDATE kernel.nodes SET state = 'stopped', stopped_at = now()
         WHERE node_id = $1 AND state IN ('running', 'draining')",
    )
    .bind(node_id)
    .execute(pool)
    .await?;
    Ok(())
}

/// Nodes that are dead but never left cleanly: marked dead by a successor, or running/draining
/// with a heartbeat older than their lease. Their work is to be taken over.
///
/// 1 round trip (served by `nodes_live_idx`).
///
/// # Errors
/// Database errors.
pub async fn dead_nodes<'c>(db: impl PgExecutor<'c>) -> Result<Vec<Node>> {
    list(
        db,
        "WHERE o.state = 'dead'
            OR (o.state IN ('running', 'draining')
                AND kernel.lease_expired(o.heartbeat_at, o.lease_ms))",
    )
    .await
}

/// Every node that ever booted, as `os.nodes` shows it: the live ones first, each group newest
/// first.
///
/// 1 round trip (a scan of `kernel.nodes`, one row per boot).
///
/// # Errors
/// Database errors.
pub async fn all_nodes<'c>(db: impl PgExecutor<'c>) -> Result<Vec<Node>> {
    list(db, "").await
}

/// Nodes of `os.nodes` (whose `alive` is the one definition of liveness) matching `filter`,
/// which names the view's columns as `o.`.
async fn list<'c>(db: impl PgExecutor<'c>, filter: &str) -> Result<Vec<Node>> {
    let sql = format!(
        "SELECT o.node_id, o.hostname, o.pid, o.state, o.alive, o.slots, o.labels, o.started_at,
                o.heartbeat_at, host(k.addr) AS addr
         FROM os.nodes o JOIN kernel.nodes k USING (node_id) {filter}
         ORDER BY o.alive DESC, o.started_at DESC"
    );
    Ok(sqlx::query_as(&sql).fetch_all(db).await?)
}

/// The database's name, its server's version, and how many nodes are alive (`os.nodes`).
///
/// 1 round trip (a scan of `kernel.nodes`).
///
/// # Errors
/// Database errors; an undefined table (SQLSTATE 42P01) when no node ever booted on this
/// database.
pub async fn overview<'c>(db: impl PgExecutor<'c>) -> Result<Overview> {
    Ok(sqlx::query_as(
        "SELECT current_database()::text AS database,
                current_setting('server_version') AS server_version,
                (SELECT count(*) FROM os.nodes WHERE alive) AS nodes_alive,
                host(inet_server_addr()) || ':' || inet_server_port() AS server",
    )
    .fetch_one(db)
    .await?)
}

/// Declares dead every running or draining node whose lease expired (no heartbeat for its
/// `lease_ms`, counted from the later of its last heartbeat and the server's start:
/// `kernel.lease_expired`); returns their ids. A node declared dead that was only cut off stops itself at
/// its next heartbeat.
///
/// 1 round trip (`nodes_live_idx`).
///
/// # Errors
/// Database errors.
pub async fn declare_expired_dead(conn: &mut sqlx::PgConnection) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        // Records the server's timeline when new (after a failover): leases run from then.
        "WITH timeline AS (
             INSERT INTO kernel.timelines (timeline) SELECT kernel.timeline()
             ON CONFLICT DO NOTHING)
         UPDATE kernel.nodes SET state = 'dead', stopped_at = COALESCE(stopped_at, now())
         WHERE state IN ('running', 'draining')
           AND kernel.lease_expired(heartbeat_at, lease_ms)
         RETURNING node_id",
    )
    .fetch_all(conn)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_killed_process_not_yet_reaped_is_not_alive() {
        let mut child = std::process::Command::new("sleep")
            .arg("300")
            .spawn()
            .expect("spawn sleep");
        let pid = child.id() as i32;
        assert!(process_alive(pid));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill");
        // Not reaped yet: a zombie until wait() below. The kernel turns it into one shortly
        // after the signal; wait for that state rather than for a fixed time.
        while !is_zombie(pid) {
            std::thread::yield_now();
        }
        assert!(!process_alive(pid), "a zombie counts as dead");
        child.wait().expect("reap");
        assert!(!process_alive(pid));
    }
}
