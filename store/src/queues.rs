//! Statements on `dbos.queues`: queue settings as DBOS keeps them, so DBOS's own clients and
//! tools see the same queues.

use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgExecutor};

use crate::error::Result;

/// A queue's settings. `None` is "no limit".
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Queue {
    /// Name, 1 to 255 bytes, not starting with `_dbos_`.
    pub name: String,
    /// Workflows of the queue running at once across all nodes.
    pub concurrency: Option<i32>,
    /// Workflows of the queue running at once on one node.
    pub worker_concurrency: Option<i32>,
    /// Workflows started per rate-limit period at most.
    pub rate_limit_max: Option<i32>,
    /// The rate-limit period, in seconds.
    pub rate_limit_period_sec: Option<f64>,
    /// Workflows of one partition running at once across all nodes; setting any partition
    /// limit makes the queue partitioned.
    pub partition_concurrency: Option<i32>,
    /// Workflows of one partition running at once on one node.
    pub partition_worker_concurrency: Option<i32>,
    /// Workflows of one partition started per partition rate-limit period at most.
    pub partition_rate_limit_max: Option<i32>,
    /// The partition rate-limit period, in seconds.
    pub partition_rate_limit_period_sec: Option<f64>,
}

impl Queue {
    /// A queue without limits.
    pub fn named(name: &str) -> Queue {
        Queue {
            name: name.to_owned(),
            ..Queue::default()
        }
    }

    /// Whether the queue has a limit shared by all nodes (claims of it are serialized).
    pub fn has_shared_limit(&self) -> bool {
        self.concurrency.is_some()
            || self.rate_limit_max.is_some()
            || self.partition_concurrency.is_some()
            || self.partition_rate_limit_max.is_some()
    }

    /// Whether the queue is partitioned.
    pub fn is_partitioned(&self) -> bool {
        self.partition_concurrency.is_some()
            || self.partition_worker_concurrency.is_some()
            || self.partition_rate_limit_max.is_some()
    }
}

const COLUMNS: &str =
    "name, concurrency, worker_concurrency, rate_limit_max, rate_limit_period_sec,
    partition_concurrency, partition_worker_concurrency, partition_rate_limit_max,
    partition_rate_limit_period_sec";

fn bind<'q>(
    q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    queue: &'q Queue,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    q.bind(&queue.name)
        .bind(queue.concurrency)
        .bind(queue.worker_concurrency)
        .bind(queue.rate_limit_max)
        .bind(queue.rate_limit_period_sec)
        .bind(queue.partition_concurrency)
        .bind(queue.partition_worker_concurrency)
        .bind(queue.partition_rate_limit_max)
        .bind(queue.partition_rate_limit_period_sec)
        .bind(queue.is_partitioned())
}

/// Inserts a queue; `false` when the name is taken.
///
/// 1 round trip (index: `queues_name_key`).
///
/// # Errors
/// Database errors.
pub async fn insert<'c>(db: impl PgExecutor<'c>, queue: &Queue) -> Result<bool> {
    let r = bind(
        sqlx::query(&format!(
            "INSERT INTO dbos.queues ({COLUMNS}, partition_queue, priority_enabled)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, TRUE)
             ON CONFLICT (name) DO NOTHING"
        )),
        queue,
    )
    .execute(db)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Replaces a queue's settings; `false` when there is no such queue.
///
/// 1 round trip.
///
/// # Errors
/// Database errors.
pub async fn update<'c>(db: impl PgExecutor<'c>, queue: &Queue) -> Result<bool> {
    let r = bind(
        sqlx::query(
            "UPDATE dbos.queues SET concurrency = $2, worker_concurrency = $3,
                 rate_limit_max = $4, rate_limit_period_sec = $5, partition_concurrency = $6,
                 partition_worker_concurrency = $7, partition_rate_limit_max = $8,
                 partition_rate_limit_period_sec = $9, partition_queue = $10,
                 updated_at = kernel.now_ms()
             WHERE name = $1",
        ),
        queue,
    )
    .execute(db)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// One queue's settings.
///
/// 1 round trip.
///
/// # Errors
/// Database errors.
pub async fn get<'c>(db: impl PgExecutor<'c>, name: &str) -> Result<Option<Queue>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM dbos.queues WHERE name = $1"
    ))
    .bind(name)
    .fetch_optional(db)
    .await?)
}

/// Whether a queue of this name exists.
///
/// 1 round trip.
///
/// # Errors
/// Database errors.
pub async fn exists<'c>(db: impl PgExecutor<'c>, name: &str) -> Result<bool> {
    Ok(
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM dbos.queues WHERE name = $1)")
            .bind(name)
            .fetch_one(db)
            .await?,
    )
}

/// Every queue, by name.
///
/// 1 round trip.
///
/// # Errors
/// Database errors.
pub async fn list(conn: &mut PgConnection) -> Result<Vec<Queue>> {
    Ok(
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM dbos.queues ORDER BY name"))
            .fetch_all(conn)
            .await?,
    )
}

/// Deletes a queue's settings; `false` when there is no such queue.
///
/// 1 round trip.
///
/// # Errors
/// Database errors.
pub async fn delete<'c>(db: impl PgExecutor<'c>, name: &str) -> Result<bool> {
    let r = sqlx::query("DELETE FROM dbos.queues WHERE name = $1")
        .bind(name)
        .execute(db)
        .await?;
    Ok(r.rows_affected() == 1)
}
