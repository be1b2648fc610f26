//! Queues: their settings live in `dbos.queues` (written by [`dbos_store::queues`]), pauses
//! and placement rules in schema `sched`. Every change is one transaction: a refused change
//! changes nothing.

use serde::{Deserialize, Serialize};
use sqlx::{Connection, PgConnection};

pub use dbos_store::queues::Queue;

use crate::Error;

/// Prefix DBOS reserves for its own queues.
pub const RESERVED_PREFIX: &str = "_dbos_";
/// The queue every system has.
pub const DEFAULT_QUEUE: &str = "default";

/// Checks the settings as DBOS does.
///
/// # Errors
/// [`Error::Invalid`] naming the rule broken.
pub fn validate(queue: &Queue) -> Result<(), Error> {
    let bad = |why: String| {
        Err(Error::Invalid(format!(
            "queue {}: {why}",
            dbos_store::limits::shown(&queue.name)
        )))
    };
    if queue.name.is_empty() || queue.name.len() > 255 {
        return bad("the name must be 1 to 255 bytes".into());
    }
    if queue.name.starts_with(RESERVED_PREFIX) {
        return bad(format!(
            "names starting with {RESERVED_PREFIX:?} are reserved"
        ));
    }
    for (what, v) in [
        ("concurrency", queue.concurrency),
        ("worker concurrency", queue.worker_concurrency),
        ("rate limit", queue.rate_limit_max),
        ("partition concurrency", queue.partition_concurrency),
        (
            "partition worker concurrency",
            queue.partition_worker_concurrency,
        ),
        ("partition rate limit", queue.partition_rate_limit_max),
    ] {
        if v.is_some_and(|v| v < 1) {
            return bad(format!("{what} must be at least 1"));
        }
    }
    for (what, max, period) in [
        (
            "rate limit",
            queue.rate_limit_max,
            queue.rate_limit_period_sec,
        ),
        (
            "partition rate limit",
            queue.partition_rate_limit_max,
            queue.partition_rate_limit_period_sec,
        ),
    ] {
        match (max, period) {
            (Some(_), Some(p)) if p.is_finite() && p > 0.0 => {}
            (None, None) => {}
            _ => {
                return bad(format!(
                    "a {what} needs both a count and a period longer than 0"
                ))
            }
        }
    }
    let le = |a: Option<i32>, b: Option<i32>| match (a, b) {
        (Some(a), Some(b)) => a <= b,
        _ => true,
    };
    if !le(queue.worker_concurrency, queue.concurrency) {
        return bad("worker concurrency must not exceed concurrency".into());
    }
    if !le(queue.partition_concurrency, queue.concurrency) {
        return bad("partition concurrency must not exceed concurrency".into());
    }
    if !le(
        queue.partition_worker_concurrency,
        queue.partition_concurrency,
    ) || !le(queue.partition_worker_concurrency, queue.worker_concurrency)
    {
        return bad(
            "partition worker concurrency must not exceed partition or worker concurrency".into(),
        );
    }
    Ok(())
}

/// Takes the pause lock exclusive until the transaction on `conn` ends. Every claim holds it
/// shared from before it reads a queue's pause, limits and placement until its commit, so a
/// change that holds it when it commits waits for the claims that read the old state, and the
/// claims after it read the new (`scheduler/migrations/sched_0008_pause_lock.sql` and
/// `sched_0009_settings_lock.sql`). New claims of every queue wait while it is held: a change
/// made inside a long transaction holds them back until that transaction ends.
///
/// In the same statement, queues the wake-up of [`wake_claimers`] for queue `name`: it goes out
/// only if the transaction commits.
async fn hold_claims(conn: &mut PgConnection, name: &str) -> Result<(), Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(sched.pause_lock_key()), pg_notify($1, $2)")
        .bind(crate::ENQUEUE_CHANNEL)
        .bind(name)
        .execute(conn)
        .await?;
    Ok(())
}

/// Wakes idle nodes to claim from queue `name` (at the commit of the transaction on `conn`, if
/// one is open): a change that lets them claim more, a resume, a raised limit or a removed
/// placement rule, then takes effect at once, not at their next poll.
async fn wake_claimers(conn: &mut PgConnection, name: &str) -> Result<(), Error> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(crate::ENQUEUE_CHANNEL)
        .bind(name)
        .execute(conn)
        .await?;
    Ok(())
}

/// Creates a queue. Once it has returned, every start of its work keeps its limits.
///
/// 1 transaction of 2 statements (index: `queues_name_key`).
///
/// # Errors
/// [`Error::Invalid`], [`Error::QueueExists`].
pub async fn create(conn: &mut PgConnection, queue: &Queue) -> Result<(), Error> {
    validate(queue)?;
    let mut tx = conn.begin().await?;
    hold_claims(&mut tx, &queue.name).await?;
    if !dbos_store::queues::insert(&mut *tx, queue).await? {
        return Err(Error::QueueExists(queue.name.clone()));
    }
    tx.commit().await?;
    Ok(())
}

/// Replaces a queue's settings. Once it has returned, every start of the queue's work keeps
/// them: a claim under way commits first (see [`hold_claims`]).
///
/// 1 transaction of 2 statements.
///
/// # Errors
/// [`Error::Invalid`], [`Error::NoSuchQueue`].
pub async fn update(conn: &mut PgConnection, queue: &Queue) -> Result<(), Error> {
    validate(queue)?;
    let mut tx = conn.begin().await?;
    hold_claims(&mut tx, &queue.name).await?;
    if !dbos_store::queues::update(&mut *tx, queue).await? {
        return Err(Error::NoSuchQueue(queue.name.clone()));
    }
    tx.commit().await?;
    Ok(())
}

/// One queue's settings.
///
/// 1 round trip.
///
/// # Errors
/// [`Error::NoSuchQueue`].
pub async fn get(conn: &mut PgConnection, name: &str) -> Result<Queue, Error> {
    dbos_store::queues::get(conn, name)
        .await?
        .ok_or_else(|| Error::NoSuchQueue(name.to_owned()))
}

/// Every queue, by name.
///
/// 1 round trip.
///
/// # Errors
/// Database errors.
pub async fn list(conn: &mut PgConnection) -> Result<Vec<Queue>, Error> {
    Ok(dbos_store::queues::list(conn).await?)
}

/// A queue as `os.queues` shows it: its limits, whether it is paused, and its work.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct Overview {
    /// Its name.
    pub queue: String,
    /// Whether claiming from it is paused.
    pub paused: bool,
    /// Workflows running at once across all nodes, at most.
    pub concurrency: Option<i32>,
    /// Workflows running at once on one node, at most.
    pub worker_concurrency: Option<i32>,
    /// Workflows started per `rate_limit_period_sec`, at most.
    pub rate_limit_max: Option<i32>,
    /// Period of the rate limit, in seconds.
    pub rate_limit_period_sec: Option<f64>,
    /// Workflows of one partition running at once, at most.
    pub partition_concurrency: Option<i32>,
    /// Workflows waiting on it (ENQUEUED).
    pub depth: i64,
    /// Workflows of it running (PENDING).
    pub running: i64,
    /// Workflows waiting for their delay before they join it (DELAYED).
    pub delayed: i64,
}

/// Whether any queue limits how many of its workflows run at once (globally, per node, or per
/// partition). Read by the dispatcher's sweep.
///
/// 1 round trip.
///
/// # Errors
/// Database errors.
pub async fn concurrency_limited<'c>(db: impl sqlx::PgExecutor<'c>) -> Result<bool, Error> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM dbos.queues
                        WHERE concurrency IS NOT NULL OR worker_concurrency IS NOT NULL
                           OR partition_concurrency IS NOT NULL
                           OR partition_worker_concurrency IS NOT NULL)",
    )
    .fetch_one(db)
    .await?)
}

/// Every queue with its limits, pause and work, by name.
///
/// 1 round trip (a scan of `dbos.queues` with counts of each queue's ENQUEUED, PENDING and
/// DELAYED workflows; the first two served by `idx_workflow_status_in_flight_v2`).
///
/// # Errors
/// Database errors.
pub async fn overview(conn: &mut PgConnection) -> Result<Vec<Overview>, Error> {
    Ok(sqlx::query_as(
        "SELECT queue, paused, concurrency, worker_concurrency, rate_limit_max,
                rate_limit_period_sec, partition_concurrency, depth, running, delayed
         FROM os.queues ORDER BY queue",
    )
    .fetch_all(conn)
    .await?)
}

/// Deletes a queue's settings (and its pause and placement). Workflows still on it keep their queue name
/// and run without limits. The default queue cannot be deleted.
///
/// 1 transaction of 3 statements.
///
/// # Errors
/// [`Error::Invalid`] for the default queue, [`Error::NoSuchQueue`].
pub async fn delete(conn: &mut PgConnection, name: &str) -> Result<(), Error> {
    if name == DEFAULT_QUEUE {
        return Err(Error::Invalid(format!(
            "queue {DEFAULT_QUEUE:?}: the default queue cannot be deleted"
        )));
    }
    let mut tx = conn.begin().await?;
    sqlx::query(
        "WITH p AS (DELETE FROM sched.paused_queues WHERE queue_name = $1)
         DELETE FROM sched.queue_rules WHERE queue_name = $1",
    )
    .bind(name)
    .execute(&mut *tx)
    .await?;
    if !dbos_store::queues::delete(&mut *tx, name).await? {
        return Err(Error::NoSuchQueue(name.to_owned()));
    }
    wake_claimers(&mut tx, name).await?;
    tx.commit().await?;
    Ok(())
}

/// Pauses (`true`) or resumes a queue: nothing is claimed from a paused queue; running work
/// goes on. Returns whether the state changed.
///
/// Once a pause has returned, no workflow of the queue starts: the pause takes the pause lock
/// exclusive before it commits, so it waits for the claims that read the pause state before it
/// to commit, and the claims that read it after wait for its commit and see it
/// (`scheduler/migrations/sched_0008_pause_lock.sql`).
///
/// 1 round trip.
///
/// # Errors
/// [`Error::NoSuchQueue`].
pub async fn set_paused(conn: &mut PgConnection, name: &str, paused: bool) -> Result<bool, Error> {
    let (exists, changed): (bool, bool) = sqlx::query_as(
        "WITH q AS (SELECT 1 FROM dbos.queues WHERE name = $1),
              ins AS (INSERT INTO sched.paused_queues (queue_name)
                      SELECT $1 FROM q WHERE $2 ON CONFLICT DO NOTHING RETURNING 1),
              del AS (DELETE FROM sched.paused_queues WHERE queue_name = $1 AND NOT $2
                      RETURNING 1),
              lk AS (SELECT pg_advisory_xact_lock(sched.pause_lock_key()) FROM q WHERE $2)
         SELECT EXISTS (SELECT 1 FROM q) AND (NOT $2 OR EXISTS (SELECT 1 FROM lk)),
                EXISTS (SELECT 1 FROM ins) OR EXISTS (SELECT 1 FROM del)",
    )
    .bind(name)
    .bind(paused)
    .fetch_one(&mut *conn)
    .await?;
    if !exists {
        return Err(Error::NoSuchQueue(name.to_owned()));
    }
    if changed && !paused {
        wake_claimers(conn, name).await?;
    }
    Ok(changed)
}

/// How nodes are chosen for a queue's work.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Any eligible node claims, in priority order.
    Fifo,
    /// A node claims only while no eligible live node runs a smaller share of its slots.
    LeastLoaded,
    /// A task preferring a value of this label goes to a live node with that value when there
    /// is one (any eligible node otherwise).
    Locality(String),
}

impl Policy {
    fn as_str(&self) -> &'static str {
        match self {
            Policy::Fifo => "fifo",
            Policy::LeastLoaded => "least_loaded",
            Policy::Locality(_) => "locality",
        }
    }

    fn label(&self) -> Option<&str> {
        match self {
            Policy::Locality(l) => Some(l),
            _ => None,
        }
    }
}

/// Sets a queue's placement: the labels a node must have to claim from it, and its policy.
/// Once it has returned, every start of the queue's work keeps it: the statement takes the
/// pause lock exclusive (see [`hold_claims`]). No label with the fifo policy is the placement
/// of a queue without a rule, and removes its rule: an enqueue through a node may then claim
/// its workflow for that node again.
///
/// 1 round trip.
///
/// # Errors
/// [`Error::NoSuchQueue`].
pub async fn set_placement(
    conn: &mut PgConnection,
    name: &str,
    require_labels: &std::collections::BTreeMap<String, String>,
    policy: &Policy,
) -> Result<(), Error> {
    if policy.label().is_some_and(str::is_empty) {
        return Err(Error::Invalid(format!(
            "queue {name:?}: the locality policy needs a label name"
        )));
    }
    let labels = serde_json::to_value(require_labels).map_err(|e| Error::Invalid(e.to_string()))?;
    let none = require_labels.is_empty() && *policy == Policy::Fifo;
    let exists: bool = sqlx::query_scalar(
        "WITH q AS (SELECT 1 FROM dbos.queues WHERE name = $1),
              up AS (INSERT INTO sched.queue_rules
                         (queue_name, require_labels, policy, locality_label)
                     SELECT $1, $2, $3, $4 FROM q WHERE NOT $5
                     ON CONFLICT (queue_name) DO UPDATE
                         SET require_labels = excluded.require_labels, policy = excluded.policy,
                             locality_label = excluded.locality_label, updated_at = now()),
              del AS (DELETE FROM sched.queue_rules WHERE queue_name = $1 AND $5),
              -- The lock, and the wake-up of `wake_claimers`, sent at the commit.
              lk AS (SELECT pg_advisory_xact_lock(sched.pause_lock_key()), pg_notify($6, $1)
                     FROM q)
         SELECT EXISTS (SELECT 1 FROM lk)",
    )
    .bind(name)
    .bind(labels)
    .bind(policy.as_str())
    .bind(policy.label())
    .bind(none)
    .bind(crate::ENQUEUE_CHANNEL)
    .fetch_one(conn)
    .await?;
    if !exists {
        return Err(Error::NoSuchQueue(name.to_owned()));
    }
    Ok(())
}
