//! Statements on `dbos.workflow_schedules`: cron schedules as DBOS keeps them. Times are
//! RFC 3339 text, as DBOS writes them.

use serde::Serialize;
use sqlx::{PgConnection, PgExecutor};

use crate::error::Result;

/// A schedule, as `dbos.workflow_schedules` keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, sqlx::FromRow)]
pub struct Schedule {
    /// Unique name.
    pub schedule_name: String,
    /// Workflow each tick enqueues.
    pub workflow_name: String,
    /// Cron expression.
    pub schedule: String,
    /// `ACTIVE` or `PAUSED`.
    pub status: String,
    /// Context handed to every run (JSON text).
    pub context: Option<String>,
    /// Latest tick enqueued (RFC 3339).
    pub last_fired_at: Option<String>,
    /// Whether ticks missed while no node was up are enqueued later.
    pub automatic_backfill: bool,
    /// IANA time zone of the expression; UTC when unset.
    pub cron_timezone: Option<String>,
    /// Queue the runs go to; the internal queue when unset.
    pub queue_name: Option<String>,
}

impl Schedule {
    /// An ACTIVE schedule `name` running `workflow_name` on the cron expression `expr`: no
    /// context, no backfill, UTC, the internal queue. Set the other fields as needed.
    pub fn new(name: &str, workflow_name: &str, expr: &str) -> Schedule {
        Schedule {
            schedule_name: name.to_owned(),
            workflow_name: workflow_name.to_owned(),
            schedule: expr.to_owned(),
            status: "ACTIVE".to_owned(),
            context: None,
            last_fired_at: None,
            automatic_backfill: false,
            cron_timezone: None,
            queue_name: None,
        }
    }
}

const COLUMNS: &str = "schedule_name, workflow_name, schedule, status, context, last_fired_at,
    COALESCE(automatic_backfill, FALSE) AS automatic_backfill, cron_timezone, queue_name";

/// Inserts an ACTIVE schedule that fires from `now` on; `false` when the name is taken.
///
/// 1 round trip (unique name).
///
/// # Errors
/// Database errors.
pub async fn insert<'c>(db: impl PgExecutor<'c>, s: &Schedule, now: &str) -> Result<bool> {
    let r = sqlx::query(
        "INSERT INTO dbos.workflow_schedules
             (schedule_id, schedule_name, workflow_name, schedule, status, context,
              last_fired_at, automatic_backfill, cron_timezone, queue_name)
         VALUES (gen_random_uuid()::text, $1, $2, $3, 'ACTIVE', $4, $5, $6, $7, $8)
         ON CONFLICT (schedule_name) DO NOTHING",
    )
    .bind(&s.schedule_name)
    .bind(&s.workflow_name)
    .bind(&s.schedule)
    // The column is NOT NULL in DBOS's schema: no context is JSON null.
    .bind(s.context.as_deref().unwrap_or("null"))
    .bind(now)
    .bind(s.automatic_backfill)
    .bind(&s.cron_timezone)
    .bind(&s.queue_name)
    .execute(db)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Every schedule (only the ACTIVE ones with `active_only`), by name.
///
/// 1 round trip.
///
/// # Errors
/// Database errors.
pub async fn list(conn: &mut PgConnection, active_only: bool) -> Result<Vec<Schedule>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM dbos.workflow_schedules
         WHERE NOT $1 OR status = 'ACTIVE' ORDER BY schedule_name"
    ))
    .bind(active_only)
    .fetch_all(conn)
    .await?)
}

/// One schedule.
///
/// 1 round trip.
///
/// # Errors
/// Database errors.
pub async fn get(conn: &mut PgConnection, name: &str) -> Result<Option<Schedule>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM dbos.workflow_schedules WHERE schedule_name = $1"
    ))
    .bind(name)
    .fetch_optional(conn)
    .await?)
}

/// Pauses (`true`) or resumes a schedule; a resumed schedule that does not backfill fires from
/// `now` on. `false` when there is no such schedule.
///
/// 1 round trip.
///
/// # Errors
/// Database errors.
pub async fn set_paused<'c>(
    db: impl PgExecutor<'c>,
    name: &str,
    paused: bool,
    now: &str,
) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE dbos.workflow_schedules
         SET status = CASE WHEN $2 THEN 'PAUSED' ELSE 'ACTIVE' END,
             last_fired_at = CASE WHEN NOT $2 AND NOT COALESCE(automatic_backfill, FALSE)
                                  THEN $3 ELSE last_fired_at END
         WHERE schedule_name = $1",
    )
    .bind(name)
    .bind(paused)
    .bind(now)
    .execute(db)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Removes a schedule; `false` when there is no such schedule.
///
/// 1 round trip.
///
/// # Errors
/// Database errors.
pub async fn delete<'c>(db: impl PgExecutor<'c>, name: &str) -> Result<bool> {
    let r = sqlx::query("DELETE FROM dbos.workflow_schedules WHERE schedule_name = $1")
        .bind(name)
        .execute(db)
        .await?;
    Ok(r.rows_affected() == 1)
}
