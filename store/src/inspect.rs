//! Reading workflows as DBOS presents them: list with filters, and a workflow's recorded
//! operations.

use serde::Serialize;
use sqlx::{PgConnection, PgExecutor};

use crate::error::Result;

/// A workflow's status row, as DBOS presents it.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
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
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
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

/// Lists workflows (1 round trip; served by `workflow_status_created_at_index`, read from
/// the end the order starts at and bounded by the creation times given).
///
/// The page is cut along that index first, by creation time alone, with the rows that tie at
/// its edge (`FETCH ... WITH TIES`); only those are sorted by ID too and joined to their
/// inputs and outputs. The limit and offset are written into the statement: a node's sessions
/// plan generically, and a generic plan, which cannot know a parameter's limit nor how many
/// rows the filters keep, sorted a long history whole (2.9 s for the newest 10 of 1,000,000
/// on a 2-core host) instead of reading the index's first rows.
///
/// # Errors
/// Database errors; a negative limit or offset is refused by Postgres.
pub async fn list<'c>(db: impl PgExecutor<'c>, f: &ListFilter) -> Result<Vec<WorkflowStatus>> {
    let order = if f.sort_desc { "DESC" } else { "ASC" };
    let offset = f.offset.unwrap_or(0);
    let (limit, first) = match f.limit {
        Some(n) => (
            n.to_string(),
            format!("FETCH FIRST {} ROWS WITH TIES", n.saturating_add(offset)),
        ),
        None => ("ALL".to_owned(), String::new()),
    };
    let sql = format!(
        "SELECT s.workflow_uuid AS workflow_id, s.status, s.name, COALESCE(i.inputs, s.inputs) AS input,
                COALESCE(o.output, s.output) AS output, COALESCE(o.error, s.error) AS error,
                s.executor_id, s.application_version AS app_version, s.queue_name, s.created_at, s.updated_at,
                s.recovery_attempts, s.parent_workflow_id, s.forked_from, s.workflow_deadline_epoch_ms
         FROM (
             SELECT * FROM dbos.workflow_status s
             WHERE (cardinality($1::text[]) = 0 OR s.workflow_uuid = ANY($1))
               AND (cardinality($2::text[]) = 0 OR s.status = ANY($2))
               AND ($3::text IS NULL OR s.name = $3)
               AND ($4::text IS NULL OR s.application_version = $4)
               AND ($5::text IS NULL OR s.queue_name = $5)
               AND ($6::text IS NULL OR s.workflow_uuid LIKE replace(replace($6, '%', '\\%'), '_', '\\_') || '%')
               AND ($7::text IS NULL OR s.parent_workflow_id = $7)
               AND ($8::text IS NULL OR s.executor_id = $8)
               AND s.created_at BETWEEN COALESCE($9::int8, '{min}'::int8)
                                    AND COALESCE($10::int8, '{max}'::int8)
             ORDER BY s.created_at {order}
             {first}
         ) s
         LEFT JOIN dbos.workflow_input i USING (workflow_uuid)
         LEFT JOIN dbos.workflow_output o USING (workflow_uuid)
         ORDER BY s.created_at {order}, s.workflow_uuid {order}
         LIMIT {limit} OFFSET {offset}",
        min = i64::MIN,
        max = i64::MAX
    );
    Ok(sqlx::query_as(&sql)
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
        .fetch_all(db)
        .await?)
}

/// A workflow's recorded operations in order (1 round trip; primary key), or
/// [`Error::NotFound`] when the workflow does not exist.
///
/// # Errors
/// [`Error::NotFound`].
pub async fn steps(conn: &mut PgConnection, id: &str) -> Result<Vec<StepInfo>> {
    let rows: Vec<StepInfo> = sqlx::query_as(
        "SELECT function_id, function_name, output, error, child_workflow_id,
                started_at_epoch_ms, completed_at_epoch_ms
         FROM dbos.operation_outputs WHERE workflow_uuid = $1 ORDER BY function_id",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    if rows.is_empty() {
        crate::workflows::exists(conn, id).await?;
    }
    Ok(rows)
}
