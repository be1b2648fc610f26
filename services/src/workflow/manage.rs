//! Managing workflows with SQL alone: list, inspect, cancel, resume, fork, delete. Every
//! function works on any pool, with or without a running node, as DBOS's client does.

use serde::Serialize;
use sqlx::{PgPool, Row};

use super::error::Error;
use super::service::{ENQUEUE_CHANNEL, INTERNAL_QUEUE};

/// A workflow's status row, as DBOS presents it.
#[derive(Clone, Debug, Serialize)]
pub struct WorkflowStatus {
    /// Workflow ID.
    pub workflow_id: String,
    /// PENDING, SUCCESS, ERROR, CANCELLED, ENQUEUED, DELAYED, MAX_RECOVERY_ATTEMPTS_EXCEEDED.
    pub status: Option<String>,
    /// Workflow function name.
    pub name: Option<String>,
    /// Inputs (portable JSON text).
    pub input: Option<String>,
    /// Output (portable JSON text).
    pub output: Option<String>,
    /// Error (portable JSON text).
    pub error: Option<String>,
    /// Node that runs or ran it.
    pub executor_id: Option<String>,
    /// Application version that must run it.
    pub app_version: Option<String>,
    /// Queue, for queued workflows.
    pub queue_name: Option<String>,
    /// Creation time, epoch ms.
    pub created_at: i64,
    /// Last update, epoch ms.
    pub updated_at: i64,
    /// Claims so far (1 after a direct start).
    pub recovery_attempts: Option<i64>,
    /// Parent, for child workflows.
    pub parent_workflow_id: Option<String>,
    /// Source of a fork.
    pub forked_from: Option<String>,
    /// Deadline, epoch ms.
    pub workflow_deadline_epoch_ms: Option<i64>,
}

/// A recorded operation of a workflow.
#[derive(Clone, Debug, Serialize)]
pub struct StepInfo {
    /// Position, from 1.
    pub function_id: i32,
    /// Operation name.
    pub function_name: String,
    /// Output (portable JSON text).
    pub output: Option<String>,
    /// Error (portable JSON text).
    pub error: Option<String>,
    /// Child workflow started or awaited.
    pub child_workflow_id: Option<String>,
    /// Start, epoch ms.
    pub started_at_epoch_ms: Option<i64>,
    /// End, epoch ms.
    pub completed_at_epoch_ms: Option<i64>,
}

/// Filters of [`list`], as DBOS's `list_workflows`.
#[derive(Clone, Debug, Default)]
pub struct ListFilter {
    /// Only these IDs.
    pub workflow_ids: Vec<String>,
    /// Only these statuses.
    pub status: Vec<String>,
    /// Only this function.
    pub name: Option<String>,
    /// Only this application version.
    pub app_version: Option<String>,
    /// Only this queue.
    pub queue_name: Option<String>,
    /// Only IDs with this prefix.
    pub workflow_id_prefix: Option<String>,
    /// Only children of this workflow.
    pub parent_workflow_id: Option<String>,
    /// Only this executor.
    pub executor_id: Option<String>,
    /// Created at or after (epoch ms).
    pub start_time_ms: Option<i64>,
    /// Created at or before (epoch ms).
    pub end_time_ms: Option<i64>,
    /// Most rows returned.
    pub limit: Option<i64>,
    /// Rows skipped.
    pub offset: Option<i64>,
    /// Newest first.
    pub sort_desc: bool,
}

/// Lists workflows (1 round trip; served by `workflow_status_created_at_index`).
///
/// # Errors
/// Database errors.
pub async fn list(pool: &PgPool, f: &ListFilter) -> Result<Vec<WorkflowStatus>, Error> {
    let order = if f.sort_desc { "DESC" } else { "ASC" };
    let sql = format!(
        "SELECT s.workflow_uuid, s.status, s.name, COALESCE(i.inputs, s.inputs) AS input,
                COALESCE(o.output, s.output) AS output, COALESCE(o.error, s.error) AS error,
                s.executor_id, s.application_version, s.queue_name, s.created_at, s.updated_at,
                s.recovery_attempts, s.parent_workflow_id, s.forked_from, s.workflow_deadline_epoch_ms
         FROM dbos.workflow_status s
         LEFT JOIN dbos.workflow_input i USING (workflow_uuid)
         LEFT JOIN dbos.workflow_output o USING (workflow_uuid)
         WHERE (cardinality($1::text[]) = 0 OR s.workflow_uuid = ANY($1))
           AND (cardinality($2::text[]) = 0 OR s.status = ANY($2))
           AND ($3::text IS NULL OR s.name = $3)
           AND ($4::text IS NULL OR s.application_version = $4)
           AND ($5::text IS NULL OR s.queue_name = $5)
           AND ($6::text IS NULL OR s.workflow_uuid LIKE replace(replace($6, '%', '\\%'), '_', '\\_') || '%')
           AND ($7::text IS NULL OR s.parent_workflow_id = $7)
           AND ($8::text IS NULL OR s.executor_id = $8)
           AND ($9::int8 IS NULL OR s.created_at >= $9)
           AND ($10::int8 IS NULL OR s.created_at <= $10)
         ORDER BY s.created_at {order}, s.workflow_uuid {order}
         LIMIT $11 OFFSET $12"
    );
    let rows = sqlx::query(&sql)
        .bind(&f.workflow_ids)
        .bind(&f.status)
        .bind(&f.name)
        .bind(&f.app_version)
        .bind(&f.queue_name)
        .bind(&f.workflow_id_prefix)
        .bind(&f.parent_workflow_id)
        .bind(&f.executor_id)
        .bind(f.start_time_ms)
        .bind(f.end_time_ms)
        .bind(f.limit)
        .bind(f.offset.unwrap_or(0))
        .fetch_all(pool)
        .await?;
    Ok(rows
        .iter()
        .map(|r| WorkflowStatus {
            workflow_id: r.get(0),
            status: r.get(1),
            name: r.get(2),
            input: r.get(3),
            output: r.get(4),
            error: r.get(5),
            executor_id: r.get(6),
            app_version: r.get(7),
            queue_name: r.get(8),
            created_at: r.get(9),
            updated_at: r.get(10),
            recovery_attempts: r.get(11),
            parent_workflow_id: r.get(12),
            forked_from: r.get(13),
            workflow_deadline_epoch_ms: r.get(14),
        })
        .collect())
}

/// One workflow's status.
///
/// # Errors
/// [`Error::NotFound`].
pub async fn get(pool: &PgPool, id: &str) -> Result<WorkflowStatus, Error> {
    let f = ListFilter {
        workflow_ids: vec![id.to_owned()],
        ..ListFilter::default()
    };
    list(pool, &f)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| Error::NotFound(id.to_owned()))
}

/// A workflow's recorded operations in order (1 round trip; primary key).
///
/// # Errors
/// [`Error::NotFound`] when the workflow does not exist.
pub async fn steps(pool: &PgPool, id: &str) -> Result<Vec<StepInfo>, Error> {
    let rows = sqlx::query(
        "SELECT function_id, function_name, output, error, child_workflow_id,
                started_at_epoch_ms, completed_at_epoch_ms
         FROM dbos.operation_outputs WHERE workflow_uuid = $1 ORDER BY function_id",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    if rows.is_empty() {
        exists(pool, id).await?;
    }
    Ok(rows
        .iter()
        .map(|r| StepInfo {
            function_id: r.get(0),
            function_name: r.get(1),
            output: r.get(2),
            error: r.get(3),
            child_workflow_id: r.get(4),
            started_at_epoch_ms: r.get(5),
            completed_at_epoch_ms: r.get(6),
        })
        .collect())
}

/// Tells "no such workflow" apart from "nothing to do": asked only after a statement that
/// touched nothing, so the common path stays one round trip.
async fn exists(pool: &PgPool, id: &str) -> Result<(), Error> {
    let found: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM dbos.workflow_status WHERE workflow_uuid = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?;
    found
        .map(|_| ())
        .ok_or_else(|| Error::NotFound(id.to_owned()))
}

/// Cancels a workflow (and, with `cascade`, its descendants) unless it already ended. The
/// running execution stops at its next step boundary. Returns the IDs cancelled.
///
/// 1 round trip, 1 commit.
///
/// # Errors
/// [`Error::NotFound`].
pub async fn cancel(pool: &PgPool, id: &str, cascade: bool) -> Result<Vec<String>, Error> {
    // Served by the primary key and idx_workflow_status_parent_workflow_id.
    let ids: Vec<String> = sqlx::query_scalar(
        "WITH RECURSIVE tree(id) AS (
             SELECT $1::text
             UNION
             SELECT w.workflow_uuid FROM dbos.workflow_status w JOIN tree ON w.parent_workflow_id = tree.id
             WHERE $2
         ), c AS (
             UPDATE dbos.workflow_status
             SET status = 'CANCELLED', owner_xid = NULL, queue_name = NULL, deduplication_id = NULL,
                 started_at_epoch_ms = NULL,
                 updated_at = (EXTRACT(epoch FROM now()) * 1000)::bigint,
                 completed_at = (EXTRACT(epoch FROM now()) * 1000)::bigint
             WHERE workflow_uuid IN (SELECT id FROM tree)
               AND status NOT IN ('SUCCESS', 'ERROR', 'CANCELLED')
             RETURNING workflow_uuid
         )
         -- Wakes the cancelled workflows' waits (recv, sleep, ...) at commit.
         SELECT c.workflow_uuid FROM c, LATERAL (SELECT pg_notify($3, c.workflow_uuid)) n",
    )
    .bind(id)
    .bind(cascade)
    .bind(dbos_msg::CANCEL_CHANNEL)
    .fetch_all(pool)
    .await?;
    if ids.is_empty() {
        exists(pool, id).await?;
    }
    Ok(ids)
}

/// Resumes a cancelled, dead-lettered or stuck workflow: it is enqueued on the internal queue
/// with its recovery counter and deadline reset, and replays its recorded steps.
///
/// 1 round trip, 1 commit.
///
/// # Errors
/// [`Error::NotFound`].
pub async fn resume(pool: &PgPool, id: &str) -> Result<bool, Error> {
    let r = sqlx::query(
        "WITH u AS (
             UPDATE dbos.workflow_status
             SET status = 'ENQUEUED', owner_xid = NULL, queue_name = $2, recovery_attempts = 0,
                 workflow_deadline_epoch_ms = NULL, deduplication_id = NULL,
                 started_at_epoch_ms = NULL, completed_at = NULL,
                 updated_at = (EXTRACT(epoch FROM now()) * 1000)::bigint
             WHERE workflow_uuid = $1 AND status NOT IN ('SUCCESS', 'ERROR')
             RETURNING 1
         )
         SELECT count(*), pg_notify($3, $2) IS NULL FROM u",
    )
    .bind(id)
    .bind(INTERNAL_QUEUE)
    .bind(ENQUEUE_CHANNEL)
    .fetch_one(pool)
    .await?;
    let resumed = r.get::<i64, _>(0) > 0;
    if !resumed {
        exists(pool, id).await?;
    }
    Ok(resumed)
}

/// Forks a workflow from step `start_step`: a new workflow with the same function and inputs
/// whose operations before `start_step` (and their events and stream values) are copied, so it
/// runs only the later steps. Returns the new ID.
///
/// 1 transaction of 6 statements.
///
/// # Errors
/// [`Error::NotFound`], [`Error::Invalid`] for a step below 1 or a taken ID.
pub async fn fork(
    pool: &PgPool,
    id: &str,
    start_step: i32,
    new_id: Option<String>,
    app_version: Option<String>,
) -> Result<String, Error> {
    if start_step < 1 {
        return Err(Error::Invalid(format!(
            "fork step must be at least 1, got {start_step}"
        )));
    }
    let new_id = super::service::workflow_id(new_id)?;
    let mut tx = pool.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO dbos.workflow_status
             (workflow_uuid, status, name, class_name, config_name, application_version,
              application_id, authenticated_user, assumed_role, authenticated_roles, queue_name,
              recovery_attempts, serialization, attributes, forked_from, workflow_timeout_ms,
              creator_xid, application_name)
         SELECT $2, 'ENQUEUED', name, class_name, config_name, $3, application_id,
                authenticated_user, assumed_role, authenticated_roles, $4, 0, serialization,
                attributes, workflow_uuid, workflow_timeout_ms, gen_random_uuid()::text,
                application_name
         FROM dbos.workflow_status WHERE workflow_uuid = $1
         ON CONFLICT (workflow_uuid) DO NOTHING",
    )
    .bind(id)
    .bind(&new_id)
    .bind(&app_version)
    .bind(INTERNAL_QUEUE)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(Error::Invalid(format!(
            "workflow ID {new_id} is already in use"
        )));
    }
    sqlx::query(
        "INSERT INTO dbos.workflow_input (workflow_uuid, inputs)
         SELECT $2, COALESCE(i.inputs, s.inputs) FROM dbos.workflow_status s
         LEFT JOIN dbos.workflow_input i USING (workflow_uuid) WHERE s.workflow_uuid = $1",
    )
    .bind(id)
    .bind(&new_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE dbos.workflow_status SET was_forked_from = true WHERE workflow_uuid = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO dbos.operation_outputs
             (workflow_uuid, function_id, function_name, output, error, child_workflow_id,
              started_at_epoch_ms, completed_at_epoch_ms, serialization, application_name)
         SELECT $2, function_id, function_name, output, error, child_workflow_id,
                started_at_epoch_ms, completed_at_epoch_ms, serialization, application_name
         FROM dbos.operation_outputs WHERE workflow_uuid = $1 AND function_id < $3",
    )
    .bind(id)
    .bind(&new_id)
    .bind(start_step)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "WITH h AS (
             INSERT INTO dbos.workflow_events_history (workflow_uuid, function_id, key, value, serialization)
             SELECT $2, function_id, key, value, serialization FROM dbos.workflow_events_history
             WHERE workflow_uuid = $1 AND function_id < $3
             RETURNING function_id, key, value, serialization
         )
         INSERT INTO dbos.workflow_events (workflow_uuid, key, value, serialization)
         SELECT DISTINCT ON (key) $2, key, value, serialization FROM h ORDER BY key, function_id DESC",
    )
    .bind(id)
    .bind(&new_id)
    .bind(start_step)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO dbos.streams (workflow_uuid, key, value, \"offset\", function_id, serialization)
         SELECT $2, key, value, \"offset\", function_id, serialization FROM dbos.streams
         WHERE workflow_uuid = $1 AND function_id < $3",
    )
    .bind(id)
    .bind(&new_id)
    .bind(start_step)
    .execute(&mut *tx)
    .await?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(ENQUEUE_CHANNEL)
        .bind(INTERNAL_QUEUE)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(new_id)
}

/// Deletes a workflow and everything recorded for it (with `children`, its descendants too).
/// Returns the IDs deleted.
///
/// 1 round trip, 1 commit.
///
/// # Errors
/// [`Error::NotFound`].
pub async fn delete(pool: &PgPool, id: &str, children: bool) -> Result<Vec<String>, Error> {
    let ids: Vec<String> = sqlx::query_scalar(
        "WITH RECURSIVE tree(id) AS (
             SELECT $1::text
             UNION
             SELECT w.workflow_uuid FROM dbos.workflow_status w JOIN tree ON w.parent_workflow_id = tree.id
             WHERE $2
         ), i AS (
             DELETE FROM dbos.workflow_input WHERE workflow_uuid IN (SELECT id FROM tree)
         ), o AS (
             DELETE FROM dbos.workflow_output WHERE workflow_uuid IN (SELECT id FROM tree)
         ), ops AS (
             DELETE FROM dbos.operation_outputs WHERE workflow_uuid IN (SELECT id FROM tree)
         )
         DELETE FROM dbos.workflow_status WHERE workflow_uuid IN (SELECT id FROM tree)
         RETURNING workflow_uuid",
    )
    .bind(id)
    .bind(children)
    .fetch_all(pool)
    .await?;
    if ids.is_empty() {
        return Err(Error::NotFound(id.to_owned()));
    }
    Ok(ids)
}

/// Rewinds an ended workflow in place to step `start_step`: its operations, events and stream
/// values from that step on are erased, messages it consumed from then on are forgotten, and it
/// is enqueued again to run from there.
///
/// 1 transaction of 8 statements.
///
/// # Errors
/// [`Error::NotFound`]; [`Error::Invalid`] for a workflow still running or a step below 1.
pub async fn rewind(pool: &PgPool, id: &str, start_step: i32) -> Result<(), Error> {
    if start_step < 1 {
        return Err(Error::Invalid(format!(
            "rewind step must be at least 1, got {start_step}"
        )));
    }
    let mut tx = pool.begin().await?;
    let status: Option<Option<String>> = sqlx::query_scalar(
        "SELECT status FROM dbos.workflow_status WHERE workflow_uuid = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    match status.flatten().as_deref() {
        None => return Err(Error::NotFound(id.to_owned())),
        Some("SUCCESS" | "ERROR" | "CANCELLED" | "MAX_RECOVERY_ATTEMPTS_EXCEEDED") => {}
        Some(other) => {
            return Err(Error::Invalid(format!(
                "workflow {id} is {other}; only ended workflows can be rewound (cancel it first)"
            )))
        }
    }
    for sql in [
        "DELETE FROM dbos.operation_outputs WHERE workflow_uuid = $1 AND function_id >= $2",
        "DELETE FROM dbos.workflow_events_history WHERE workflow_uuid = $1 AND function_id >= $2",
        "DELETE FROM dbos.streams WHERE workflow_uuid = $1 AND function_id >= $2",
        "DELETE FROM dbos.notifications WHERE destination_uuid = $1
             AND (NOT consumed OR consumed_by_function_id >= $2)",
        "DELETE FROM dbos.workflow_events WHERE workflow_uuid = $1 AND $2 > 0",
        "INSERT INTO dbos.workflow_events (workflow_uuid, key, value, serialization)
         SELECT DISTINCT ON (key) workflow_uuid, key, value, serialization
         FROM dbos.workflow_events_history WHERE workflow_uuid = $1 AND $2 > 0
         ORDER BY key, function_id DESC",
        "DELETE FROM dbos.workflow_output WHERE workflow_uuid = $1 AND $2 > 0",
    ] {
        sqlx::query(sql)
            .bind(id)
            .bind(start_step)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query(
        "UPDATE dbos.workflow_status
         SET status = 'ENQUEUED', owner_xid = NULL, queue_name = $2, recovery_attempts = 0,
             workflow_deadline_epoch_ms = NULL, deduplication_id = NULL, started_at_epoch_ms = NULL,
             completed_at = NULL, updated_at = (EXTRACT(epoch FROM now()) * 1000)::bigint
         WHERE workflow_uuid = $1",
    )
    .bind(id)
    .bind(INTERNAL_QUEUE)
    .execute(&mut *tx)
    .await?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(ENQUEUE_CHANNEL)
        .bind(INTERNAL_QUEUE)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}
