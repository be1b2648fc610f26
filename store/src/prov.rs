//! Provenance (schema `prov`): what every workflow step touched — files, messages, events,
//! streams, topics, commands — written by the statement (or in the transaction) that records
//! the step, so capture costs no round trip of its own. The rows are written by
//! [`crate::batch`] and [`crate::operations`] (with `dbos_kernel::prov` events), and by the
//! messaging statements through [`crate::operations::prov_cte`]; this module reads and sweeps.
//!
//! `prov.config` says what is captured (`enabled`, `off_names`, `off_queues`) and for how long
//! (`retention`); the views `os.provenance`, `os.read_then_sent`, `os.files_of_failed_commands`
//! and the function `os.touched(id)` answer the usual questions.

use serde::Serialize;
use sqlx::PgExecutor;

use crate::error::Result;

/// One captured event, with its workflow and step.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct Touch {
    /// The workflow.
    pub workflow_id: String,
    /// Its function.
    pub workflow_name: Option<String>,
    /// The step's function ID.
    pub function_id: i32,
    /// The step's name.
    pub step: Option<String>,
    /// What happened (`file_write`, `send`, `command`, ...).
    pub kind: String,
    /// What it happened to (path, destination, key, topic, command line).
    pub object: Option<String>,
    /// The file's inode, for file events.
    pub inode: Option<i64>,
    /// Bytes read or written.
    pub bytes: Option<i64>,
    /// Anything else (argv, user, exit code, topic, ...), JSON text.
    pub detail: Option<String>,
    /// The node that ran the step.
    pub node_id: Option<String>,
    /// The application version that ran it.
    pub app_version: Option<String>,
    /// When, epoch ms.
    pub at_ms: i64,
}

const TOUCH_COLUMNS: &str =
    "e.workflow_uuid AS workflow_id, w.name AS workflow_name, e.function_id,
     o.function_name AS step, e.kind, e.object, e.inode, e.bytes, e.detail::text AS detail,
     e.node_id, e.app_version, e.at_ms
     FROM prov.events e
     LEFT JOIN dbos.workflow_status w ON w.workflow_uuid = e.workflow_uuid
     LEFT JOIN dbos.operation_outputs o
            ON o.workflow_uuid = e.workflow_uuid AND o.function_id = e.function_id";

/// Everything workflow `id` touched, in step order (1 round trip; index `events_by_workflow`).
///
/// # Errors
/// Database errors.
pub async fn of_workflow<'c>(db: impl PgExecutor<'c>, id: &str) -> Result<Vec<Touch>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {TOUCH_COLUMNS} WHERE e.workflow_uuid = $1 ORDER BY e.function_id, e.id"
    ))
    .bind(id)
    .fetch_all(db)
    .await?)
}

/// Everything that touched the object `object` (a path, a destination workflow, a key, a
/// topic), or file `inode`, oldest first (1 round trip; indexes `events_by_object`,
/// `events_by_inode`).
///
/// # Errors
/// Database errors.
pub async fn of_object<'c>(
    db: impl PgExecutor<'c>,
    object: &str,
    inode: Option<i64>,
) -> Result<Vec<Touch>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {TOUCH_COLUMNS} WHERE e.object = $1 OR e.inode = $2 ORDER BY e.at_ms, e.id"
    ))
    .bind(object)
    .bind(inode)
    .fetch_all(db)
    .await?)
}

/// Deletes up to `limit` events older than `prov.config.retention`; returns how many.
///
/// 1 round trip (index `events_by_time`).
///
/// # Errors
/// Database errors.
pub async fn sweep<'c>(db: impl PgExecutor<'c>, limit: i64) -> Result<u64> {
    let r = sqlx::query(
        "DELETE FROM prov.events WHERE id IN (
             SELECT id FROM prov.events
             WHERE at_ms < kernel.now_ms()
                 - (SELECT (extract(epoch FROM retention) * 1000)::int8 FROM prov.config)
             ORDER BY at_ms LIMIT $1)",
    )
    .bind(limit)
    .execute(db)
    .await?;
    Ok(r.rows_affected())
}
