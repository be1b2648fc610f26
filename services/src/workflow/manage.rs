//! Managing workflows with SQL alone: list, inspect, cancel, resume, fork, rewind, delete, and
//! the deletion of ended workflows past a retention policy ([`gc`]). Every
//! function works on any pool, with or without a running node, as DBOS's client does. The
//! statements are [`dbos_store`]'s (and, for events and streams, [`dbos_msg`]'s); a fork or a
//! rewind runs them in one transaction.

use sqlx::{Connection, PgPool};

pub use dbos_store::inspect::{ListFilter, StepInfo, WorkflowStatus};
pub use dbos_store::workflows::Retention;

use super::error::Error;

/// Lists workflows (1 round trip; served by `workflow_status_created_at_index`).
///
/// # Errors
/// [`Error::Invalid`] for a negative limit or offset; database errors.
pub async fn list(pool: &PgPool, f: &ListFilter) -> Result<Vec<WorkflowStatus>, Error> {
    if f.limit.is_some_and(|l| l < 0) || f.offset.is_some_and(|o| o < 0) {
        return Err(Error::Invalid(
            "limit and offset must be 0 or more".to_owned(),
        ));
    }
    Ok(dbos_store::inspect::list(pool, f).await?)
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
    let mut conn = pool.acquire().await?;
    Ok(dbos_store::inspect::steps(&mut conn, id).await?)
}

/// Cancels a workflow (and, with `cascade`, its descendants) unless it already ended. The
/// running execution stops at its next step boundary. Returns the IDs cancelled.
///
/// 1 round trip, 1 commit.
///
/// # Errors
/// [`Error::NotFound`].
pub async fn cancel(pool: &PgPool, id: &str, cascade: bool) -> Result<Vec<String>, Error> {
    let mut conn = pool.acquire().await?;
    Ok(dbos_store::workflows::cancel(&mut conn, id, cascade).await?)
}

/// Resumes a cancelled, dead-lettered or stuck workflow: it is enqueued on the internal queue
/// with its recovery counter and deadline reset, and replays its recorded steps. A workflow
/// running on a live node is refused: a second execution would run its unrecorded steps again
/// beside the first.
///
/// 1 round trip, 1 commit.
///
/// # Errors
/// [`Error::NotFound`], [`Error::Invalid`] for a workflow running on a live node.
pub async fn resume(pool: &PgPool, id: &str) -> Result<bool, Error> {
    let mut conn = pool.acquire().await?;
    dbos_store::workflows::resume(&mut conn, id)
        .await
        .map_err(wrong_status_invalid)
}

/// Forks a workflow from step `start_step`: a new workflow with the same function and inputs
/// whose operations before `start_step` (and their events and stream values) are copied, so it
/// runs only the later steps. Returns the new ID.
///
/// 1 transaction of 7 statements.
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
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin().await?;
    dbos_store::workflows::fork(&mut tx, id, &new_id, start_step, app_version.as_deref())
        .await
        .map_err(|e| match e {
            dbos_store::Error::IdInUse(taken) => {
                Error::Invalid(format!("workflow ID {taken} is already in use"))
            }
            other => other.into(),
        })?;
    dbos_msg::sql::copy_for_fork(&mut tx, id, &new_id, start_step).await?;
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
    Ok(dbos_store::workflows::delete(pool, id, children).await?)
}

/// Ended workflows deleted by one statement of [`gc`] or of a node's retention sweep at most:
/// each statement holds their rows locked until its commit.
const GC_BATCH: i64 = 1_000;

/// Deletes every ended workflow (SUCCESS, ERROR, CANCELLED, dead-lettered) that `policy` no
/// longer keeps, oldest first, with everything recorded for it, in batches of [`GC_BATCH`]
/// workflows, each its own transaction. Returns how many went. Workflows still queued, delayed
/// or running are never deleted, nor a child whose parent has not ended.
///
/// # Errors
/// [`Error::Invalid`] for a policy that keeps everything, a negative age or fewer than 1 row;
/// database errors.
pub async fn gc(pool: &PgPool, policy: &Retention) -> Result<u64, Error> {
    check_policy(policy)?;
    Ok(gc_until(pool, policy, &dbos_kernel::CancellationToken::new()).await?)
}

/// [`gc`]'s batches, until none is left or `stop` is cancelled (a node's retention sweep), for a
/// policy already checked; a policy that keeps everything deletes nothing.
pub(crate) async fn gc_until(
    pool: &PgPool,
    policy: &Retention,
    stop: &dbos_kernel::CancellationToken,
) -> dbos_store::Result<u64> {
    super::service::in_batches(GC_BATCH, stop, || {
        dbos_store::workflows::gc(pool, policy, GC_BATCH)
    })
    .await
}

/// How many ended workflows [`gc`] would delete under `policy` now; deletes nothing.
///
/// # Errors
/// As [`gc`].
pub async fn gc_count(pool: &PgPool, policy: &Retention) -> Result<i64, Error> {
    check_policy(policy)?;
    Ok(dbos_store::workflows::gc_count(pool, policy).await?)
}

fn check_policy(policy: &Retention) -> Result<(), Error> {
    if !policy.is_set() {
        return Err(Error::Invalid(
            "say which ended workflows to delete: an age, a number of newest workflows to keep, or both".to_owned(),
        ));
    }
    if policy.max_age_ms.is_some_and(|a| a < 0) {
        return Err(Error::Invalid("the age must be 0 or more".to_owned()));
    }
    if policy.max_rows.is_some_and(|n| n < 1) {
        return Err(Error::Invalid(
            "the number of workflows to keep must be at least 1".to_owned(),
        ));
    }
    Ok(())
}

/// Rewinds an ended workflow in place to step `start_step`: its operations, events and stream
/// values from that step on are erased, messages it consumed from then on are forgotten, and it
/// is enqueued again to run from there.
///
/// 1 transaction of 9 statements.
///
/// # Errors
/// [`Error::NotFound`]; [`Error::Invalid`] for a workflow still running or a step below 1.
pub async fn rewind(pool: &PgPool, id: &str, start_step: i32) -> Result<(), Error> {
    if start_step < 1 {
        return Err(Error::Invalid(format!(
            "rewind step must be at least 1, got {start_step}"
        )));
    }
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin().await?;
    dbos_store::workflows::lock_ended(&mut tx, id)
        .await
        .map_err(wrong_status_invalid)?;
    dbos_msg::sql::rewind(&mut tx, id, start_step).await?;
    dbos_store::workflows::rewind(&mut tx, id, start_step).await?;
    tx.commit().await?;
    Ok(())
}

/// A workflow in a status the operation refuses is bad input, said as such.
fn wrong_status_invalid(e: dbos_store::Error) -> Error {
    match e {
        dbos_store::Error::WrongStatus { id, status, wanted } => {
            Error::Invalid(format!("workflow {id} is {status}; {wanted}"))
        }
        other => other.into(),
    }
}
