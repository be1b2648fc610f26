//! What the OS is doing now, read from the `os` views in one read-only transaction: the nodes
//! with their load, the queues with their depth and rate, the workflows running and the latest
//! failures. `dbos top`, the dashboard and `/metrics` show it; each part names the SQL behind it.

use serde::Serialize;
use sqlx::{Acquire, PgConnection};

/// The SQL of each part of a [`Snapshot`], shown beside it.
pub mod sql {
    /// Nodes alive, and those that stopped or went silent in the last ten minutes.
    pub const NODES: &str =
        "SELECT node_id, hostname, state, alive, running, slots, labels::text AS labels,
       (extract(epoch FROM silent_for) * 1000)::float8 AS heartbeat_age_ms
FROM os.nodes
WHERE alive OR heartbeat_at > now() - interval '10 minutes'
ORDER BY alive DESC, node_id";
    /// Every queue with its depth, running workflows and starts in the last minute.
    pub const QUEUES: &str =
        "SELECT queue, paused, depth, running, delayed, started_last_minute, concurrency
FROM os.queues ORDER BY queue";
    /// The oldest workflows running now.
    pub const RUNNING: &str = "SELECT workflow_id, name, queue, node,
       (extract(epoch FROM now() - started_at) * 1000)::float8 AS age_ms
FROM os.workflows WHERE status = 'PENDING'
ORDER BY started_at LIMIT 100";
    /// The latest workflows that failed. The view's times are computed from DBOS's epoch
    /// milliseconds, which no index orders, so the newest ten of each failed status are read
    /// backwards along `idx_workflow_status_failed` first: a history of finished workflows
    /// costs nothing here.
    pub const FAILURES: &str =
        "SELECT workflow_id, name, queue, node, status, error, completed_at::text AS completed_at
FROM os.workflows
WHERE workflow_id IN (
    (SELECT workflow_uuid FROM dbos.workflow_status WHERE status = 'ERROR'
     ORDER BY created_at DESC LIMIT 10)
    UNION ALL
    (SELECT workflow_uuid FROM dbos.workflow_status WHERE status = 'MAX_RECOVERY_ATTEMPTS_EXCEEDED'
     ORDER BY created_at DESC LIMIT 10))
ORDER BY created_at DESC LIMIT 10";
    /// Workflows by status, except SUCCESS: each status counted along the partial index that
    /// holds it, so the count costs what is in flight or failed, not the whole history.
    pub const BY_STATUS: &str = "SELECT status, count(*) AS n FROM dbos.workflow_status
WHERE status IN ('ENQUEUED', 'PENDING') GROUP BY status
UNION ALL
SELECT status, count(*) FROM dbos.workflow_status WHERE status = 'DELAYED' GROUP BY status
UNION ALL
SELECT status, count(*) FROM dbos.workflow_status
WHERE status IN ('ERROR', 'CANCELLED', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED') GROUP BY status";
    /// Workflows that succeeded: no index holds them alone, so this reads the whole table
    /// (about 0.1–0.2 s a million rows on a 2-core host) and runs at most once per
    /// [`super::SUCCESS_COUNT_MAX_AGE`] for a watcher ([`super::SucceededCount`]).
    pub const SUCCEEDED: &str =
        "SELECT count(*) FROM dbos.workflow_status WHERE status = 'SUCCESS'";
}

/// How old the count of succeeded workflows in a [`Snapshot`] may be by default. `dbos top`
/// reads a snapshot every second; counting a long history that often would take a good part of
/// a core from the workloads it watches.
pub const SUCCESS_COUNT_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(30);

/// The last count of succeeded workflows one watcher of one database read, and when: kept by
/// the watcher (`dbos top`'s loop, the HTTP server) and handed to each [`Snapshot::read`], so
/// a count is never shown for another database than the one it was read from.
#[derive(Debug)]
pub struct SucceededCount {
    max_age: std::time::Duration,
    last: parking_lot::Mutex<Option<(std::time::Instant, i64)>>,
}

impl SucceededCount {
    /// A count read again once it is older than `max_age`.
    pub fn new(max_age: std::time::Duration) -> SucceededCount {
        SucceededCount {
            max_age,
            last: parking_lot::Mutex::new(None),
        }
    }

    /// The last count, while younger than the maximum age.
    fn recent(&self) -> Option<i64> {
        self.last
            .lock()
            .filter(|(at, _)| at.elapsed() < self.max_age)
            .map(|(_, n)| n)
    }
}

impl Default for SucceededCount {
    /// A count read again once it is older than [`SUCCESS_COUNT_MAX_AGE`].
    fn default() -> SucceededCount {
        SucceededCount::new(SUCCESS_COUNT_MAX_AGE)
    }
}

/// A node and its load.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct Node {
    /// Its ID.
    pub node_id: String,
    /// Its host.
    pub hostname: String,
    /// `running`, `draining`, `stopped`, ...
    pub state: String,
    /// Whether its lease holds.
    pub alive: bool,
    /// Workflows it runs now.
    pub running: i64,
    /// Its task slots.
    pub slots: i32,
    /// Its labels, JSON.
    pub labels: String,
    /// Since its last heartbeat, ms.
    pub heartbeat_age_ms: f64,
}

/// A queue and its traffic.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct Queue {
    /// Its name.
    pub queue: String,
    /// Whether it is paused.
    pub paused: bool,
    /// Workflows waiting (ENQUEUED).
    pub depth: i64,
    /// Workflows running (PENDING).
    pub running: i64,
    /// Workflows delayed.
    pub delayed: i64,
    /// Starts in the last minute.
    pub started_last_minute: i64,
    /// Its global concurrency limit.
    pub concurrency: Option<i32>,
}

/// A workflow running now.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct Running {
    /// Its ID.
    pub workflow_id: String,
    /// Its function.
    pub name: Option<String>,
    /// Its queue.
    pub queue: Option<String>,
    /// The node running it.
    pub node: Option<String>,
    /// Since it started, ms.
    pub age_ms: Option<f64>,
}

/// A workflow that failed.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct Failure {
    /// Its ID.
    pub workflow_id: String,
    /// Its function.
    pub name: Option<String>,
    /// Its queue.
    pub queue: Option<String>,
    /// The node that ran it.
    pub node: Option<String>,
    /// ERROR or MAX_RECOVERY_ATTEMPTS_EXCEEDED.
    pub status: Option<String>,
    /// Its error message.
    pub error: Option<String>,
    /// When it ended.
    pub completed_at: Option<String>,
}

/// The OS at one moment.
#[derive(Clone, Debug, Serialize)]
pub struct Snapshot {
    /// Nodes.
    pub nodes: Vec<Node>,
    /// Queues.
    pub queues: Vec<Queue>,
    /// Workflows running, oldest first.
    pub running: Vec<Running>,
    /// The latest failures.
    pub failures: Vec<Failure>,
    /// Workflows by status, in status order; statuses without any are left out. The count of
    /// SUCCESS may be as old as the [`SucceededCount`] the snapshot was read with allows.
    pub by_status: Vec<(String, i64)>,
}

impl Snapshot {
    /// Reads the snapshot in one read-only transaction (5 statements, and a sixth, the count
    /// of succeeded workflows, when `succeeded` holds none young enough; one snapshot of the
    /// tables).
    ///
    /// # Errors
    /// Database errors.
    pub async fn read(
        conn: &mut PgConnection,
        succeeded: &SucceededCount,
    ) -> Result<Snapshot, sqlx::Error> {
        let mut tx = conn.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let nodes = sqlx::query_as(sql::NODES).fetch_all(&mut *tx).await?;
        let queues = sqlx::query_as(sql::QUEUES).fetch_all(&mut *tx).await?;
        let running = sqlx::query_as(sql::RUNNING).fetch_all(&mut *tx).await?;
        let failures = sqlx::query_as(sql::FAILURES).fetch_all(&mut *tx).await?;
        let counted: Vec<(Option<String>, i64)> =
            sqlx::query_as(sql::BY_STATUS).fetch_all(&mut *tx).await?;
        let succeeded = match succeeded.recent() {
            Some(n) => n,
            None => {
                let n: i64 = sqlx::query_scalar(sql::SUCCEEDED)
                    .fetch_one(&mut *tx)
                    .await?;
                *succeeded.last.lock() = Some((std::time::Instant::now(), n));
                n
            }
        };
        tx.commit().await?;
        let mut by_status: Vec<(String, i64)> = counted
            .into_iter()
            .map(|(s, n)| (s.unwrap_or_default(), n))
            .chain((succeeded > 0).then(|| ("SUCCESS".to_owned(), succeeded)))
            .collect();
        by_status.sort();
        Ok(Snapshot {
            nodes,
            queues,
            running,
            failures,
            by_status,
        })
    }

    /// The snapshot as `dbos top` prints it: plain text, `width` columns at most.
    pub fn render_text(&self, sort: Sort, width: usize) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let alive = self.nodes.iter().filter(|n| n.alive).count();
        let counts: Vec<String> = self
            .by_status
            .iter()
            .map(|(s, n)| format!("{} {n}", s.to_lowercase()))
            .collect();
        let _ = writeln!(
            out,
            "nodes {alive} alive of {}   workflows: {}",
            self.nodes.len(),
            if counts.is_empty() {
                "none".to_owned()
            } else {
                counts.join(", ")
            }
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<24} {:<16} {:<9} {:>5} {:>7} {:>10}  LABELS",
            "NODE", "HOST", "STATE", "ALIVE", "RUN/SL", "HEARTBEAT"
        );
        for n in &self.nodes {
            let _ = writeln!(
                out,
                "{:<24} {:<16} {:<9} {:>5} {:>7} {:>10}  {}",
                cut(&n.node_id, 24),
                cut(&n.hostname, 16),
                cut(&n.state, 9),
                if n.alive { "yes" } else { "no" },
                format!("{}/{}", n.running, n.slots),
                age(n.heartbeat_age_ms),
                n.labels
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<24} {:>7} {:>7} {:>7} {:>9} {:>6}",
            "QUEUE", "DEPTH", "RUNNING", "DELAYED", "START/MIN", "LIMIT"
        );
        for q in &self.queues {
            let _ = writeln!(
                out,
                "{:<24} {:>7} {:>7} {:>7} {:>9} {:>6}{}",
                cut(&q.queue, 24),
                q.depth,
                q.running,
                q.delayed,
                q.started_last_minute,
                q.concurrency.map_or("-".to_owned(), |c| c.to_string()),
                if q.paused { "  paused" } else { "" }
            );
        }
        let _ = writeln!(out);
        let mut running = self.running.clone();
        match sort {
            Sort::Age => {}
            Sort::Name => running.sort_by(|a, b| a.name.cmp(&b.name)),
            Sort::Node => running.sort_by(|a, b| a.node.cmp(&b.node)),
        }
        let _ = writeln!(
            out,
            "{:<38} {:<20} {:<14} {:<24} {:>8}   (sorted by {})",
            "RUNNING",
            "NAME",
            "QUEUE",
            "NODE",
            "AGE",
            sort.as_str()
        );
        for r in &running {
            let _ = writeln!(
                out,
                "{:<38} {:<20} {:<14} {:<24} {:>8}",
                cut(&r.workflow_id, 38),
                cut(r.name.as_deref().unwrap_or("-"), 20),
                cut(r.queue.as_deref().unwrap_or("-"), 14),
                cut(r.node.as_deref().unwrap_or("-"), 24),
                r.age_ms.map_or("-".to_owned(), age)
            );
        }
        if !self.failures.is_empty() {
            let _ = writeln!(out);
            let _ = writeln!(out, "{:<38} {:<20} ERROR", "RECENT FAILURES", "NAME");
            for f in &self.failures {
                let _ = writeln!(
                    out,
                    "{:<38} {:<20} {}",
                    cut(&f.workflow_id, 38),
                    cut(f.name.as_deref().unwrap_or("-"), 20),
                    f.error.as_deref().unwrap_or("")
                );
            }
        }
        out.lines()
            .map(|l| cut(l, width))
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"
    }
}

/// How `dbos top` orders the running workflows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Sort {
    /// Oldest first.
    #[default]
    Age,
    /// By function name.
    Name,
    /// By node.
    Node,
}

impl Sort {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Sort::Age => "age",
            Sort::Name => "name",
            Sort::Node => "node",
        }
    }
}

/// At most `n` characters of `s`.
fn cut(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => s[..i].to_owned(),
        None => s.to_owned(),
    }
}

/// A duration in ms, short: `850ms`, `12.3s`, `4m05s`, `2h13m`.
fn age(ms: f64) -> String {
    let ms = ms.max(0.0);
    if ms < 1_000.0 {
        format!("{ms:.0}ms")
    } else if ms < 60_000.0 {
        format!("{:.1}s", ms / 1_000.0)
    } else if ms < 3_600_000.0 {
        let s = (ms / 1_000.0) as u64;
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        let m = (ms / 60_000.0) as u64;
        format!("{}h{:02}m", m / 60, m % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_and_cuts_are_short() {
        assert_eq!(age(850.0), "850ms");
        assert_eq!(age(12_340.0), "12.3s");
        assert_eq!(age(245_000.0), "4m05s");
        assert_eq!(age(7_980_000.0), "2h13m");
        assert_eq!(cut("abcdef", 3), "abc");
        assert_eq!(cut("ab", 3), "ab");
    }
}
