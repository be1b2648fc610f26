//! Every statement that writes `dbos.workflow_status` with its inputs and outcome (except the
//! group commit, [`crate::batch`], and the claim, [`crate::claim`]), and the reads that go with
//! them. A workflow's inputs and outcome are read as COALESCE(the `workflow_input` /
//! `workflow_output` row's, the status row's): DBOS 3.x writes the rows, a node writes the
//! status row's columns (see [`crate::batch::statement`]).
//!
//! Ownership: a PENDING workflow belongs to the execution holding its `owner_xid`; statements
//! that act for an execution are fenced on `(status = 'PENDING', owner_xid)`, so a zombie
//! execution can never overwrite what another one (or a cancel) decided.

use std::sync::Arc;

use sqlx::{PgConnection, PgExecutor};

use crate::batch::Batch;

use crate::error::{Error, Result};
use crate::limits;
use crate::status::Status;
use crate::{CANCEL_CHANNEL, ENQUEUE_CHANNEL, INTERNAL_QUEUE};

/// A workflow to put on a queue (ENQUEUED, or DELAYED with a delay), with its input: for
/// [`enqueue`] alone, or many at once in a group commit ([`crate::batch::Batch::push_enqueue`]).
#[derive(Clone, Debug)]
pub struct Enqueue {
    /// Its ID.
    pub workflow_id: String,
    /// Its function.
    pub name: String,
    /// The queue.
    pub queue: String,
    /// Inputs, portable JSON text.
    pub inputs: String,
    /// Start-to-close timeout; the deadline is set when it is claimed.
    pub timeout_ms: Option<i64>,
    /// Absolute deadline, epoch ms.
    pub deadline_ms: Option<i64>,
    /// Lower runs earlier.
    pub priority: i32,
    /// Deduplication ID within the queue.
    pub deduplication_id: Option<String>,
    /// Enqueue as DELAYED until this time, epoch ms.
    pub delay_until_ms: Option<i64>,
    /// Partition of a partitioned queue.
    pub partition_key: Option<String>,
    /// Attributes (a JSON object), e.g. the placement labels a task requires.
    pub attributes: Option<serde_json::Value>,
    /// Set by a node that has the function and a free slot: when the queue would let any node
    /// take the workflow at once, the statement that enqueues it claims it for that node
    /// (PENDING, owned by this enqueue's creator token), and the node runs it without a claim
    /// round. See [`Here`].
    pub here: Option<Here>,
    /// The creator token: the row was created by this enqueue when it holds it.
    xid: String,
}

/// An enqueue that the enqueuing node runs itself when its queue lets it: the queue has no
/// limit, no placement rule and no partitions, is not paused, and has no workflow waiting before
/// this one; the workflow has no delay. Otherwise it is ENQUEUED as usual.
#[derive(Clone, Copy, Debug, Default)]
pub struct Here {
    /// Its deadline when it starts now (start-to-close timeouts start at the claim).
    pub deadline_ms: Option<i64>,
}

impl Enqueue {
    /// An enqueue of `name` as `workflow_id` on `queue`, with priority 0 and nothing else set.
    pub fn new(
        workflow_id: impl Into<String>,
        name: impl Into<String>,
        queue: impl Into<String>,
        inputs: impl Into<String>,
    ) -> Enqueue {
        Enqueue {
            workflow_id: workflow_id.into(),
            name: name.into(),
            queue: queue.into(),
            inputs: inputs.into(),
            timeout_ms: None,
            deadline_ms: None,
            priority: 0,
            deduplication_id: None,
            delay_until_ms: None,
            partition_key: None,
            attributes: None,
            here: None,
            xid: uuid::Uuid::new_v4().to_string(),
        }
    }

    /// The creator token, which is also the owner token of a workflow claimed as it is
    /// enqueued ([`Created::claimed`]).
    pub fn xid(&self) -> &str {
        &self.xid
    }

    /// Checks every field against [`crate::limits`] before anything is written.
    ///
    /// # Errors
    /// [`Error::Invalid`].
    pub fn validate(&self) -> Result<()> {
        limits::check_id("workflow ID", &self.workflow_id)?;
        limits::check_name("workflow name", &self.name)?;
        limits::check_name("queue name", &self.queue)?;
        if let Some(d) = &self.deduplication_id {
            limits::check_id("deduplication ID", d)?;
        }
        if let Some(k) = &self.partition_key {
            limits::check_id("partition key", k)?;
        }
        limits::check_payload("inputs", &self.inputs)
    }

    /// What the enqueue came to, from what its statement returned for it: no row when the
    /// queue's partitioning refused it (a partition key where none is taken, or none where one
    /// is required).
    ///
    /// # Errors
    /// [`Error::PartitionKey`].
    pub fn result(&self, found: Option<Created>) -> Result<Created> {
        found.ok_or_else(|| Error::PartitionKey {
            queue: self.queue.clone(),
            given: self.partition_key.is_some(),
        })
    }

    /// The error of a statement that failed with this enqueue alone in it: a unique violation
    /// is its deduplication ID in use on the queue (the only unique index an enqueue of a new
    /// ID can break).
    pub fn failed(&self, err: Arc<sqlx::Error>) -> Error {
        if dbos_kernel::sqlstate::is(&err, dbos_kernel::sqlstate::UNIQUE_VIOLATION) {
            Error::Deduplicated {
                workflow_id: self.workflow_id.clone(),
                queue: self.queue.clone(),
                deduplication_id: self.deduplication_id.clone().unwrap_or_default(),
            }
        } else {
            Error::Batch(err)
        }
    }
}

/// What a start or enqueue found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Created {
    /// The function recorded for the ID (the requested one when this call created it).
    pub name: Option<String>,
    /// Whether this call created the workflow (an existing ID is left alone).
    pub created: bool,
    /// Whether this enqueue created the workflow PENDING on the enqueuing node, for it to run
    /// ([`Enqueue::here`]).
    pub claimed: bool,
}

/// Enqueues a workflow (ENQUEUED, or DELAYED with a delay) with its input and wakes idle nodes
/// at commit: the group commit's statement for this one enqueue. An existing ID is left alone
/// and reported.
///
/// 1 round trip, 1 commit (primary keys; the deduplication index).
///
/// # Errors
/// [`Error::Deduplicated`], [`Error::PartitionKey`]; database errors.
pub async fn enqueue<'c>(db: impl PgExecutor<'c>, e: &Enqueue) -> Result<Created> {
    e.validate()?;
    let mut batch = Batch::new();
    batch.push_enqueue(e.clone());
    batch.announce_enqueues(ENQUEUE_CHANNEL);
    // Starts are the only part that records an executor and a version.
    let mut written = batch
        .write(db, "", "")
        .await
        .map_err(|err| e.failed(Arc::new(err)))?;
    e.result(written.enqueues.pop().flatten())
}

/// One run of a cron schedule.
#[derive(Clone, Debug)]
pub struct ScheduledRun {
    /// Deterministic ID of the tick.
    pub workflow_id: String,
    /// The schedule.
    pub schedule: String,
    /// The workflow each tick runs.
    pub name: String,
    /// The queue.
    pub queue: String,
    /// Inputs, portable JSON text.
    pub inputs: String,
}

/// Enqueues cron runs (an existing ID is left alone, so however many nodes fire a tick, one
/// run exists) and moves each schedule's `last_fired_at` forward to its given tick (never
/// back). Returns how many runs were new.
///
/// With `fired` (a sweep's due ticks), only the schedules still ACTIVE enqueue or move, locked
/// in name order for the statement: a pause or removal that has returned stops every later
/// tick, and one under way waits for the enqueue. Without (a trigger or a backfill asked for),
/// the runs are enqueued whatever the schedule's state.
///
/// 1 round trip, 1 commit (primary keys).
///
/// # Errors
/// Database errors.
pub async fn enqueue_scheduled<'c>(
    db: impl PgExecutor<'c>,
    runs: &[ScheduledRun],
    fired: &[(String, String)],
) -> Result<u64> {
    let col =
        |f: fn(&ScheduledRun) -> &String| runs.iter().map(|r| f(r).clone()).collect::<Vec<_>>();
    let (names, ats): (Vec<String>, Vec<String>) = fired.iter().cloned().unzip();
    let n: i64 = sqlx::query_scalar(
        "WITH active AS (
             SELECT schedule_name FROM dbos.workflow_schedules
             WHERE schedule_name = ANY($6::text[]) AND status = 'ACTIVE'
             ORDER BY schedule_name
             FOR NO KEY UPDATE
         ), r AS (
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
                 AS r(id, sched, wf, queue, inputs)
             WHERE cardinality($6::text[]) = 0 OR r.sched IN (SELECT schedule_name FROM active)
         ), ins AS (
             INSERT INTO dbos.workflow_status
                 (workflow_uuid, status, name, queue_name, schedule_name, recovery_attempts,
                  serialization, creator_xid, inputs)
             SELECT id, 'ENQUEUED', wf, queue, sched, 0, 'portable_json', gen_random_uuid()::text,
                    inputs
             FROM r
             ON CONFLICT (workflow_uuid) DO NOTHING
             RETURNING workflow_uuid
         ), f AS (
             UPDATE dbos.workflow_schedules s SET last_fired_at = u.at
             FROM unnest($6::text[], $7::text[]) AS u(name, at)
             WHERE s.schedule_name = u.name AND u.name IN (SELECT schedule_name FROM active)
               AND (s.last_fired_at IS NULL OR s.last_fired_at::timestamptz < u.at::timestamptz)
         )
         SELECT count(*) FROM ins, LATERAL (SELECT pg_notify($8, '')) wake",
    )
    .bind(col(|r| &r.workflow_id))
    .bind(col(|r| &r.schedule))
    .bind(col(|r| &r.name))
    .bind(col(|r| &r.queue))
    .bind(col(|r| &r.inputs))
    .bind(&names)
    .bind(&ats)
    .bind(ENQUEUE_CHANNEL)
    .fetch_one(db)
    .await?;
    Ok(n as u64)
}

/// A child workflow started by its parent's execution.
#[derive(Clone, Debug)]
pub struct StartChild<'a> {
    /// The parent.
    pub parent_id: &'a str,
    /// The parent execution's ownership token.
    pub parent_owner_xid: &'a str,
    /// The parent's operation that starts the child.
    pub function_id: i32,
    /// The child's ID.
    pub workflow_id: &'a str,
    /// The child's function.
    pub name: &'a str,
    /// The node that runs it.
    pub executor_id: &'a str,
    /// The application version that runs it.
    pub app_version: &'a str,
    /// The child execution's ownership token.
    pub owner_xid: &'a str,
    /// Start-to-close timeout.
    pub timeout_ms: Option<i64>,
    /// Absolute deadline, epoch ms.
    pub deadline_ms: Option<i64>,
    /// Priority.
    pub priority: i32,
    /// Inputs, portable JSON text.
    pub inputs: &'a str,
    /// When the parent's operation started, epoch ms.
    pub started_at_ms: i64,
}

/// What a child start found: `None` when the parent execution no longer owns the parent.
pub type ChildStarted = Option<Created>;

/// Starts a child as PENDING under its own execution, with its input and the parent's record of
/// it, in one statement fenced on the parent's ownership.
///
/// 1 round trip, 1 commit (primary keys).
///
/// # Errors
/// Database errors.
pub async fn start_child<'c>(db: impl PgExecutor<'c>, c: &StartChild<'_>) -> Result<ChildStarted> {
    let (owned, name, created): (i64, Option<String>, bool) = sqlx::query_as(
        "WITH own AS (
             SELECT 1 FROM dbos.workflow_status
             -- By key, as in dbos_store::operations::OWN_CTE.
             WHERE workflow_uuid = $1 AND owner_xid = $2 AND (status = 'PENDING') IS TRUE
             FOR NO KEY UPDATE
         ), child AS (
             INSERT INTO dbos.workflow_status AS w
                 (workflow_uuid, status, name, executor_id, application_version, recovery_attempts,
                  owner_xid, creator_xid, serialization, workflow_timeout_ms,
                  workflow_deadline_epoch_ms, parent_workflow_id, priority, inputs)
             SELECT $3, 'PENDING', $4, $5, $6, 1, $7, $7, 'portable_json', $8, $9, $1, $10, $11
             FROM own
             ON CONFLICT (workflow_uuid) DO UPDATE SET creator_xid = w.creator_xid
             RETURNING name, creator_xid
         ), op AS (
             INSERT INTO dbos.operation_outputs
                 (workflow_uuid, function_id, function_name, child_workflow_id,
                  started_at_epoch_ms, completed_at_epoch_ms, serialization)
             SELECT $1, $12, $4, $3, $13, $13, 'portable_json' FROM own
             ON CONFLICT DO NOTHING
         )
         SELECT (SELECT count(*) FROM own),
                (SELECT name FROM child),
                COALESCE((SELECT creator_xid = $7 FROM child), false)",
    )
    .bind(c.parent_id)
    .bind(c.parent_owner_xid)
    .bind(c.workflow_id)
    .bind(c.name)
    .bind(c.executor_id)
    .bind(c.app_version)
    .bind(c.owner_xid)
    .bind(c.timeout_ms)
    .bind(c.deadline_ms)
    .bind(c.priority)
    .bind(c.inputs)
    .bind(c.function_id)
    .bind(c.started_at_ms)
    .fetch_one(db)
    .await?;
    Ok((owned > 0).then_some(Created {
        name,
        created,
        claimed: false,
    }))
}

/// The statement that puts the PENDING workflows matching `cond` back on their queue (`$1`, the
/// internal queue, when they had none), owner cleared, with one wake-up per queue on `$2`;
/// `cond` binds from `$3`. It returns how many it released.
fn release_sql(cond: &str) -> String {
    format!(
        "WITH re AS (
             UPDATE dbos.workflow_status
             SET status = 'ENQUEUED', owner_xid = NULL, started_at_epoch_ms = NULL,
                 queue_name = COALESCE(queue_name, $1), updated_at = kernel.now_ms()
             WHERE status = 'PENDING' AND {cond}
             RETURNING queue_name
         ), wake AS (
             SELECT pg_notify($2, q) FROM (SELECT DISTINCT queue_name AS q FROM re) d
         )
         SELECT (SELECT count(*) FROM re) + 0 * (SELECT count(*) FROM wake)"
    )
}

/// Puts the PENDING workflows of `executors` that run `app_version` back on their queue (or the
/// internal one), owner cleared, and wakes the nodes. Returns how many. For a node's own
/// executions from before a restart: nothing of theirs runs any more.
///
/// 1 round trip, 1 commit (`idx_workflow_status_pending`).
///
/// # Errors
/// Database errors.
pub async fn release_executors<'c>(
    db: impl PgExecutor<'c>,
    executors: &[String],
    app_version: &str,
) -> Result<u64> {
    let sql = release_sql("executor_id = ANY($3) AND application_version = $4");
    let n: i64 = sqlx::query_scalar(&sql)
        .bind(INTERNAL_QUEUE)
        .bind(ENQUEUE_CHANNEL)
        .bind(executors)
        .bind(app_version)
        .fetch_one(db)
        .await?;
    Ok(n as u64)
}

/// Puts the PENDING workflows of gone nodes (`kernel.nodes` in state `dead` or `stopped`) back
/// on their queue (or the internal one), owner cleared, and wakes the nodes: the takeover half
/// of recovery. Racing callers re-enqueue each workflow once (it moves from PENDING).
///
/// 1 round trip (`idx_workflow_status_pending`).
///
/// # Errors
/// Database errors.
pub async fn release_gone_nodes(conn: &mut PgConnection) -> Result<u64> {
    let sql = release_sql(
        "executor_id IN (SELECT node_id FROM kernel.nodes WHERE state IN ('dead', 'stopped'))",
    );
    let n: i64 = sqlx::query_scalar(&sql)
        .bind(INTERNAL_QUEUE)
        .bind(ENQUEUE_CHANNEL)
        .fetch_one(conn)
        .await?;
    Ok(n as u64)
}

/// Releases a workflow its execution will not run (the node is shutting down or lost its
/// lease): back to ENQUEUED on its queue (or the internal one), owner cleared, so any node
/// claims it; the claim already counted the attempt. Fenced on the execution's ownership;
/// returns whether it released.
///
/// 1 round trip, 1 commit (primary key).
///
/// # Errors
/// Database errors.
pub async fn release<'c>(db: impl PgExecutor<'c>, id: &str, owner_xid: &str) -> Result<bool> {
    let sql = release_sql("workflow_uuid = $3 AND owner_xid = $4");
    let n: i64 = sqlx::query_scalar(&sql)
        .bind(INTERNAL_QUEUE)
        .bind(ENQUEUE_CHANNEL)
        .bind(id)
        .bind(owner_xid)
        .fetch_one(db)
        .await?;
    Ok(n == 1)
}

/// Dead-letters a claimed workflow that exceeded its recovery attempts (fenced on the claim's
/// ownership). Returns whether it did.
///
/// 1 round trip, 1 commit (primary key).
///
/// # Errors
/// Database errors.
pub async fn dead_letter<'c>(db: impl PgExecutor<'c>, id: &str, owner_xid: &str) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE dbos.workflow_status
         SET status = 'MAX_RECOVERY_ATTEMPTS_EXCEEDED', owner_xid = NULL, deduplication_id = NULL,
             started_at_epoch_ms = NULL, queue_name = NULL,
             updated_at = kernel.now_ms(), completed_at = kernel.now_ms()
         -- By key, as in dbos_store::operations::OWN_CTE.
         WHERE workflow_uuid = $1 AND (status = 'PENDING') IS TRUE AND owner_xid = $2",
    )
    .bind(id)
    .bind(owner_xid)
    .execute(db)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Moves DELAYED workflows whose time has come to ENQUEUED (releasing a debounce key); returns
/// how many, with the next pending delay (epoch ms). One node sweeps at a time; the others skip
/// the round.
///
/// 1 round trip, 1 commit (`idx_workflow_status_delayed`).
///
/// # Errors
/// Database errors.
pub async fn promote_delayed<'c>(db: impl PgExecutor<'c>) -> Result<(u64, Option<i64>)> {
    let (n, next): (i64, Option<i64>) = sqlx::query_as(
        "WITH p AS (
             UPDATE dbos.workflow_status
             SET status = 'ENQUEUED',
                 deduplication_id = CASE WHEN is_debounced THEN NULL ELSE deduplication_id END,
                 updated_at = kernel.now_ms()
             WHERE status = 'DELAYED' AND delay_until_epoch_ms <= kernel.now_ms()
               AND (SELECT pg_try_advisory_xact_lock(hashtextextended('dbos.sched.delayed', 0)))
             RETURNING queue_name
         ), wake AS (
             SELECT pg_notify($1, q) FROM (SELECT DISTINCT queue_name AS q FROM p) d
         )
         SELECT (SELECT count(*) FROM p) + 0 * (SELECT count(*) FROM wake),
                (SELECT min(delay_until_epoch_ms) FROM dbos.workflow_status
                 WHERE status = 'DELAYED' AND delay_until_epoch_ms > kernel.now_ms())",
    )
    .bind(ENQUEUE_CHANNEL)
    .fetch_one(db)
    .await?;
    Ok((n as u64, next))
}

/// A debounced enqueue.
#[derive(Clone, Debug)]
pub struct Debounce<'a> {
    /// The queue.
    pub queue: &'a str,
    /// The workflow's function.
    pub name: &'a str,
    /// The debounce key (the deduplication ID of the delayed workflow).
    pub key: &'a str,
    /// Start no earlier than this, epoch ms.
    pub until_ms: i64,
    /// Start no later than this, epoch ms (fixed by the first call).
    pub cap_ms: Option<i64>,
    /// Inputs, portable JSON text (the last call's win).
    pub inputs: &'a str,
}

/// Pushes back the start of the DELAYED debounced workflow under `key` (replacing its inputs),
/// or enqueues a fresh one. Returns its ID, or `None` when the key is held by a workflow that
/// is not debounced (or a racing first call won; retry).
///
/// 1 round trip, 1 commit.
///
/// # Errors
/// Database errors.
pub async fn debounce<'c>(db: impl PgExecutor<'c>, d: &Debounce<'_>) -> Result<Option<String>> {
    Ok(sqlx::query_scalar(
        "WITH upd AS (
             UPDATE dbos.workflow_status
             SET delay_until_epoch_ms = LEAST($4, COALESCE(debounce_deadline_epoch_ms, $4)),
                 updated_at = kernel.now_ms()
             WHERE name = $1 AND queue_name = $2 AND deduplication_id = $3
               AND status = 'DELAYED' AND is_debounced
             RETURNING workflow_uuid
         ), inp AS (
             UPDATE dbos.workflow_input SET inputs = $6
             WHERE workflow_uuid IN (SELECT workflow_uuid FROM upd)
         ), ins AS (
             INSERT INTO dbos.workflow_status
                 (workflow_uuid, status, name, queue_name, recovery_attempts, creator_xid,
                  serialization, deduplication_id, is_debounced, delay_until_epoch_ms,
                  debounce_deadline_epoch_ms)
             SELECT $7, 'DELAYED', $1, $2, 0, gen_random_uuid()::text,
                    'portable_json', $3, true, LEAST($4, COALESCE($5, $4)), $5
             WHERE NOT EXISTS (SELECT 1 FROM upd)
             ON CONFLICT DO NOTHING
             RETURNING workflow_uuid
         ), ins_inp AS (
             INSERT INTO dbos.workflow_input (workflow_uuid, inputs) SELECT workflow_uuid, $6 FROM ins
         )
         SELECT workflow_uuid FROM upd UNION ALL SELECT workflow_uuid FROM ins",
    )
    .bind(d.name)
    .bind(d.queue)
    .bind(d.key)
    .bind(d.until_ms)
    .bind(d.cap_ms)
    .bind(d.inputs)
    .bind(dbos_kernel::id::new_id())
    .fetch_optional(db)
    .await?)
}

/// Cancels the workflow `id` (every workflow when `None`) whose deadline has passed, waking its
/// waits at commit; returns how many. The sweep over every workflow runs on one node at a time.
///
/// 1 round trip, 1 commit (primary key, or `idx_workflow_status_deadline`).
///
/// # Errors
/// Database errors.
pub async fn cancel_expired<'c>(db: impl PgExecutor<'c>, id: Option<&str>) -> Result<u64> {
    let n: i64 = sqlx::query_scalar(
        "WITH c AS (
             UPDATE dbos.workflow_status
             SET status = 'CANCELLED', owner_xid = NULL, queue_name = NULL,
                 deduplication_id = NULL, started_at_epoch_ms = NULL,
                 updated_at = kernel.now_ms(), completed_at = kernel.now_ms()
             WHERE ($1::text IS NOT NULL AND workflow_uuid = $1
                    OR $1::text IS NULL AND (SELECT pg_try_advisory_xact_lock(
                           hashtextextended('dbos.sched.deadlines', 0))))
               AND status IN ('ENQUEUED', 'PENDING', 'DELAYED')
               AND workflow_deadline_epoch_ms <= kernel.now_ms()
             RETURNING workflow_uuid
         )
         SELECT count(pg_notify($2, workflow_uuid)) FROM c",
    )
    .bind(id)
    .bind(CANCEL_CHANNEL)
    .fetch_one(db)
    .await?;
    Ok(n as u64)
}

/// Cancels a workflow (and, with `cascade`, its descendants) unless it already ended, waking
/// their waits at commit. Returns the IDs cancelled.
///
/// 1 round trip, 1 commit (primary key, `idx_workflow_status_parent_workflow_id`); one more
/// to tell a missing workflow from an ended one.
///
/// # Errors
/// [`Error::NotFound`].
pub async fn cancel(conn: &mut PgConnection, id: &str, cascade: bool) -> Result<Vec<String>> {
    let ids: Vec<String> = sqlx::query_scalar(
        "WITH RECURSIVE tree(id) AS (
             SELECT $1::text
             UNION
             SELECT w.workflow_uuid FROM dbos.workflow_status w JOIN tree ON w.parent_workflow_id = tree.id
             WHERE $2
         ), c AS (
             UPDATE dbos.workflow_status
             SET status = 'CANCELLED', owner_xid = NULL, queue_name = NULL, deduplication_id = NULL,
                 started_at_epoch_ms = NULL, updated_at = kernel.now_ms(), completed_at = kernel.now_ms()
             WHERE workflow_uuid IN (SELECT id FROM tree)
               AND status NOT IN ('SUCCESS', 'ERROR', 'CANCELLED')
             RETURNING workflow_uuid
         )
         SELECT c.workflow_uuid FROM c, LATERAL (SELECT pg_notify($3, c.workflow_uuid)) n",
    )
    .bind(id)
    .bind(cascade)
    .bind(CANCEL_CHANNEL)
    .fetch_all(&mut *conn)
    .await?;
    if ids.is_empty() {
        exists(conn, id).await?;
    }
    Ok(ids)
}

/// Enqueues a cancelled, dead-lettered or stuck workflow again on the internal queue, its
/// recovery counter and deadline reset. Returns whether it did (an ended workflow is left).
///
/// A workflow running on a live node is refused: enqueued again, it would start a second
/// execution beside the running one, each running the steps not yet recorded (DBOS resumes it
/// anyway). Running on a node whose lease has expired, or on an executor that is not a node
/// of ours, it is enqueued as DBOS does. The row is locked first, so a claim that commits
/// meanwhile is seen.
///
/// 1 round trip, 1 commit (primary key); one more to tell a missing workflow from an ended one.
///
/// # Errors
/// [`Error::NotFound`]; [`Error::WrongStatus`] for a workflow running on a live node.
pub async fn resume(conn: &mut PgConnection, id: &str) -> Result<bool> {
    let (n, busy): (i64, Option<String>) = sqlx::query_as(
        "WITH cur AS (
             SELECT workflow_uuid, status, executor_id FROM dbos.workflow_status
             WHERE workflow_uuid = $1
             FOR UPDATE
         ), busy AS (
             SELECT n.node_id FROM cur JOIN kernel.nodes n ON n.node_id = cur.executor_id
             WHERE cur.status = 'PENDING' AND n.state = 'running'
               AND NOT kernel.lease_expired(n.heartbeat_at, n.lease_ms)
         ), u AS (
             UPDATE dbos.workflow_status w
             SET status = 'ENQUEUED', owner_xid = NULL, queue_name = $2, recovery_attempts = 0,
                 workflow_deadline_epoch_ms = NULL, deduplication_id = NULL,
                 started_at_epoch_ms = NULL, completed_at = NULL, updated_at = kernel.now_ms()
             FROM cur
             WHERE w.workflow_uuid = cur.workflow_uuid
               AND cur.status NOT IN ('SUCCESS', 'ERROR')
               AND NOT EXISTS (SELECT 1 FROM busy)
             RETURNING 1
         )
         SELECT (SELECT count(*) FROM u, LATERAL (SELECT pg_notify($3, $2)) n),
                (SELECT node_id FROM busy)",
    )
    .bind(id)
    .bind(INTERNAL_QUEUE)
    .bind(ENQUEUE_CHANNEL)
    .fetch_one(&mut *conn)
    .await?;
    if let Some(node) = busy {
        return Err(Error::WrongStatus {
            id: id.to_owned(),
            status: format!("running on node {node}"),
            wanted: "cancel it first (`dbos wf cancel`), or let it end",
        });
    }
    if n == 0 {
        exists(conn, id).await?;
    }
    Ok(n > 0)
}

/// Copies workflow `id` as a new ENQUEUED workflow `new_id` on the internal queue (same
/// function, inputs and attributes; `forked_from` set) with its operations before
/// `start_step`, and marks the source as forked. Run it in a transaction with the copies of the
/// source's events and streams.
///
/// 4 round trips.
///
/// # Errors
/// [`Error::NotFound`], [`Error::IdInUse`].
pub async fn fork(
    tx: &mut PgConnection,
    id: &str,
    new_id: &str,
    start_step: i32,
    app_version: Option<&str>,
) -> Result<()> {
    exists(&mut *tx, id).await?;
    let inserted = sqlx::query(
        "INSERT INTO dbos.workflow_status
             (workflow_uuid, status, name, class_name, config_name, application_version,
              application_id, authenticated_user, assumed_role, authenticated_roles, queue_name,
              recovery_attempts, serialization, attributes, forked_from, workflow_timeout_ms,
              creator_xid, application_name, inputs)
         SELECT $2, 'ENQUEUED', name, class_name, config_name, $3, application_id,
                authenticated_user, assumed_role, authenticated_roles, $4, 0, serialization,
                attributes, workflow_uuid, workflow_timeout_ms, gen_random_uuid()::text,
                application_name,
                COALESCE((SELECT inputs FROM dbos.workflow_input WHERE workflow_uuid = $1), inputs)
         FROM dbos.workflow_status WHERE workflow_uuid = $1
         ON CONFLICT (workflow_uuid) DO NOTHING",
    )
    .bind(id)
    .bind(new_id)
    .bind(app_version)
    .bind(INTERNAL_QUEUE)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(Error::IdInUse(new_id.to_owned()));
    }
    sqlx::query(
        "WITH ops AS (
             INSERT INTO dbos.operation_outputs
                 (workflow_uuid, function_id, function_name, output, error, child_workflow_id,
                  started_at_epoch_ms, completed_at_epoch_ms, serialization, application_name)
             SELECT $2, function_id, function_name, output, error, child_workflow_id,
                    started_at_epoch_ms, completed_at_epoch_ms, serialization, application_name
             FROM dbos.operation_outputs WHERE workflow_uuid = $1 AND function_id < $3
         )
         UPDATE dbos.workflow_status SET was_forked_from = true WHERE workflow_uuid = $1",
    )
    .bind(id)
    .bind(new_id)
    .bind(start_step)
    .execute(&mut *tx)
    .await?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(ENQUEUE_CHANNEL)
        .bind(INTERNAL_QUEUE)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Locks an ended workflow for a rewind; its status, or an error when it is missing or still
/// running.
///
/// 1 round trip (primary key).
///
/// # Errors
/// [`Error::NotFound`], [`Error::WrongStatus`].
pub async fn lock_ended(tx: &mut PgConnection, id: &str) -> Result<Status> {
    let status: Option<Option<String>> = sqlx::query_scalar(
        "SELECT status FROM dbos.workflow_status WHERE workflow_uuid = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let text = status
        .ok_or_else(|| Error::NotFound(id.to_owned()))?
        .unwrap_or_default();
    match text.parse::<Status>() {
        Ok(s) if s.is_terminal() => Ok(s),
        _ => Err(Error::WrongStatus {
            id: id.to_owned(),
            status: text,
            wanted: "only ended workflows can be rewound (cancel it first)",
        }),
    }
}

/// Erases a locked, ended workflow's operations from `start_step` on (and its output, unless it
/// restarts from the top) and enqueues it again on the internal queue, counters reset. Run it
/// in the transaction of [`lock_ended`], with the erasure of its messages, events and streams.
///
/// 2 round trips.
///
/// # Errors
/// Database errors.
pub async fn rewind(tx: &mut PgConnection, id: &str, start_step: i32) -> Result<()> {
    sqlx::query(
        "WITH ops AS (
             DELETE FROM dbos.operation_outputs WHERE workflow_uuid = $1 AND function_id >= $2
         ), o AS (
             DELETE FROM dbos.workflow_output WHERE workflow_uuid = $1 AND $2 > 0
         )
         UPDATE dbos.workflow_status
         SET status = 'ENQUEUED', owner_xid = NULL, queue_name = $3, recovery_attempts = 0,
             workflow_deadline_epoch_ms = NULL, deduplication_id = NULL, started_at_epoch_ms = NULL,
             completed_at = NULL, updated_at = kernel.now_ms(),
             output = CASE WHEN $2 > 0 THEN NULL ELSE output END,
             error = CASE WHEN $2 > 0 THEN NULL ELSE error END
         WHERE workflow_uuid = $1",
    )
    .bind(id)
    .bind(start_step)
    .bind(INTERNAL_QUEUE)
    .execute(&mut *tx)
    .await?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(ENQUEUE_CHANNEL)
        .bind(INTERNAL_QUEUE)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// The statements that erase what the workflow tables record for the workflows of CTE `gone`
/// (column `id`) beside their status rows: inputs, outputs and operations. Messages, events and
/// streams go with the status rows (their keys cascade).
const ERASE_RECORDS: &str = "i AS (
         DELETE FROM dbos.workflow_input WHERE workflow_uuid IN (SELECT id FROM gone)
     ), o AS (
         DELETE FROM dbos.workflow_output WHERE workflow_uuid IN (SELECT id FROM gone)
     ), ops AS (
         DELETE FROM dbos.operation_outputs WHERE workflow_uuid IN (SELECT id FROM gone)
     )";

/// Deletes a workflow and what is recorded for it in the workflow tables (with `children`, its
/// descendants too). Returns the IDs deleted.
///
/// 1 round trip, 1 commit.
///
/// # Errors
/// [`Error::NotFound`].
pub async fn delete<'c>(db: impl PgExecutor<'c>, id: &str, children: bool) -> Result<Vec<String>> {
    let ids: Vec<String> = sqlx::query_scalar(&format!(
        "WITH RECURSIVE gone(id) AS (
             SELECT $1::text
             UNION
             SELECT w.workflow_uuid FROM dbos.workflow_status w JOIN gone ON w.parent_workflow_id = gone.id
             WHERE $2
         ), {ERASE_RECORDS}
         DELETE FROM dbos.workflow_status WHERE workflow_uuid IN (SELECT id FROM gone)
         RETURNING workflow_uuid"
    ))
    .bind(id)
    .bind(children)
    .fetch_all(db)
    .await?;
    if ids.is_empty() {
        return Err(Error::NotFound(id.to_owned()));
    }
    Ok(ids)
}

/// How long ended workflows are kept: the one row of `sched.workflow_retention`, or the
/// arguments of `dbos wf gc`. An ended workflow (SUCCESS, ERROR, CANCELLED or dead-lettered)
/// goes once it is older than `max_age_ms`, or once `max_rows` workflows created after it exist,
/// as DBOS 2.x's `garbage_collect(cutoff, rows_threshold)` decided. Workflows still queued,
/// delayed or running always stay, and so does a child whose parent has not ended: the parent
/// may yet read its outcome. Both `None` keeps every workflow, as DBOS does by default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    /// Age (from `created_at`) past which an ended workflow goes.
    pub max_age_ms: Option<i64>,
    /// Most workflows kept: an ended workflow older than the `max_rows`-th newest goes (at
    /// least 1).
    pub max_rows: Option<i64>,
}

impl Retention {
    /// Whether this policy deletes anything at all.
    pub const fn is_set(&self) -> bool {
        self.max_age_ms.is_some() || self.max_rows.is_some()
    }
}

/// The retention policy the nodes' sweep applies (`sched.workflow_retention`).
///
/// 1 round trip.
///
/// # Errors
/// Database errors.
pub async fn retention<'c>(db: impl PgExecutor<'c>) -> Result<Retention> {
    let (max_age_ms, max_rows): (Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT (extract(epoch FROM max_age) * 1000)::int8, max_rows
         FROM sched.workflow_retention",
    )
    .fetch_optional(db)
    .await?
    .unwrap_or((None, None));
    Ok(Retention {
        max_age_ms,
        max_rows,
    })
}

/// Deletes at most `batch` ended workflows that `policy` no longer keeps, oldest first, with
/// everything recorded for them (as [`delete`]); returns how many went. A workflow that another
/// transaction holds (a resume, a rewind, another node's sweep) is skipped for this round.
///
/// 1 round trip, 1 commit (index `workflow_status_created_at_index`).
///
/// # Errors
/// Database errors.
pub async fn gc<'c>(db: impl PgExecutor<'c>, policy: &Retention, batch: i64) -> Result<u64> {
    if !policy.is_set() {
        return Ok(0);
    }
    let r = sqlx::query(&format!(
        "WITH {}, gone AS (
             SELECT w.workflow_uuid AS id FROM dbos.workflow_status w, bound
             WHERE {}
             ORDER BY w.created_at
             LIMIT $3
             FOR UPDATE OF w SKIP LOCKED
         ), {ERASE_RECORDS}
         DELETE FROM dbos.workflow_status WHERE workflow_uuid IN (SELECT id FROM gone)",
        GcPolicy::BOUND,
        GcPolicy::condition(),
    ))
    .bind(policy.max_age_ms)
    .bind(policy.max_rows.map(|n| n.max(1)))
    .bind(batch)
    .execute(db)
    .await?;
    Ok(r.rows_affected())
}

/// How many ended workflows [`gc`] would delete under `policy` now, deleting nothing.
///
/// 1 round trip.
///
/// # Errors
/// Database errors.
pub async fn gc_count<'c>(db: impl PgExecutor<'c>, policy: &Retention) -> Result<i64> {
    if !policy.is_set() {
        return Ok(0);
    }
    Ok(sqlx::query_scalar(&format!(
        "WITH {} SELECT count(*) FROM dbos.workflow_status w, bound WHERE {}",
        GcPolicy::BOUND,
        GcPolicy::condition(),
    ))
    .bind(policy.max_age_ms)
    .bind(policy.max_rows.map(|n| n.max(1)))
    .fetch_one(db)
    .await?)
}

/// The parts of [`gc`]'s statement that decide which workflows go ($1 the age in ms, $2 the
/// rows kept).
struct GcPolicy;

impl GcPolicy {
    /// CTE `bound`: the creation time below which an ended workflow goes. GREATEST skips a NULL
    /// bound; `OFFSET NULL` would mean no offset, hence the CASE.
    const BOUND: &'static str = "bound AS (
             SELECT GREATEST(
                 kernel.now_ms() - $1::int8,
                 CASE WHEN $2::int8 IS NOT NULL THEN
                     (SELECT created_at FROM dbos.workflow_status
                      ORDER BY created_at DESC OFFSET $2::int8 - 1 LIMIT 1) END) AS t
         )";

    /// Whether workflow `w` goes: created before the bound, ended, and not a child of a
    /// workflow that has not ended.
    fn condition() -> String {
        let ended = Status::ALL
            .iter()
            .filter(|s| s.is_terminal())
            .map(|s| format!("'{s}'"))
            .collect::<Vec<_>>()
            .join(", ");
        // The parent is looked up by its key for each candidate that has one. Written as NOT
        // EXISTS, the planner anti-joined every unended workflow of the table, found by a
        // full scan, once per statement: 18 ms of a 1,000-workflow statement's 80 beside
        // 100,000 workflows, and growing with the table.
        format!(
            "w.created_at < bound.t
             AND w.status IN ({ended})
             AND (w.parent_workflow_id IS NULL
                  OR COALESCE((SELECT p.status IN ({ended}) FROM dbos.workflow_status p
                               WHERE p.workflow_uuid = w.parent_workflow_id), true))"
        )
    }
}

/// `Ok` when a workflow has this ID: asked only after a statement that touched nothing, to tell
/// "no such workflow" from "nothing to do", so the common path stays one round trip.
///
/// # Errors
/// [`Error::NotFound`].
pub async fn exists<'c>(db: impl PgExecutor<'c>, id: &str) -> Result<()> {
    let found: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM dbos.workflow_status WHERE workflow_uuid = $1")
            .bind(id)
            .fetch_optional(db)
            .await?;
    found
        .map(|_| ())
        .ok_or_else(|| Error::NotFound(id.to_owned()))
}

/// A workflow's status, or [`Error::NotFound`]. A status text that is not DBOS's reads as
/// [`Error::WrongStatus`].
///
/// 1 round trip (primary key).
///
/// # Errors
/// [`Error::NotFound`].
pub async fn status<'c>(db: impl PgExecutor<'c>, id: &str) -> Result<Status> {
    let s: Option<Option<String>> =
        sqlx::query_scalar("SELECT status FROM dbos.workflow_status WHERE workflow_uuid = $1")
            .bind(id)
            .fetch_optional(db)
            .await?;
    let text = s
        .ok_or_else(|| Error::NotFound(id.to_owned()))?
        .unwrap_or_default();
    text.parse().map_err(|_| Error::WrongStatus {
        id: id.to_owned(),
        status: text,
        wanted: "its status is not one DBOS writes",
    })
}

/// Whether the execution holding `owner_xid` still owns workflow `id` (it is PENDING).
///
/// 1 round trip (primary key).
///
/// # Errors
/// Database errors.
pub async fn is_owner<'c>(db: impl PgExecutor<'c>, id: &str, owner_xid: &str) -> Result<bool> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM dbos.workflow_status
                        -- By key, as in dbos_store::operations::OWN_CTE.
                        WHERE workflow_uuid = $1 AND owner_xid = $2
                          AND (status = 'PENDING') IS TRUE)",
    )
    .bind(id)
    .bind(owner_xid)
    .fetch_one(db)
    .await?)
}

/// A workflow's status with its output and error (portable JSON text).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Its status.
    pub status: Status,
    /// Its output, when it succeeded.
    pub output: Option<String>,
    /// Its error, when it failed.
    pub error: Option<String>,
}

/// A workflow's status with its output and error.
///
/// 1 round trip (primary keys).
///
/// # Errors
/// [`Error::NotFound`].
pub async fn outcome<'c>(db: impl PgExecutor<'c>, id: &str) -> Result<Outcome> {
    let row: Option<(Option<String>, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT s.status, COALESCE(o.output, s.output), COALESCE(o.error, s.error)
         FROM dbos.workflow_status s LEFT JOIN dbos.workflow_output o USING (workflow_uuid)
         WHERE s.workflow_uuid = $1",
    )
    .bind(id)
    .fetch_optional(db)
    .await?;
    let (status, output, error) = row.ok_or_else(|| Error::NotFound(id.to_owned()))?;
    let text = status.unwrap_or_default();
    let status = text.parse().map_err(|_| Error::WrongStatus {
        id: id.to_owned(),
        status: text,
        wanted: "its status is not one DBOS writes",
    })?;
    Ok(Outcome {
        status,
        output,
        error,
    })
}

/// Registers an application version in `dbos.application_versions` (a known one is left
/// alone); the newest registered version is "latest".
///
/// 1 round trip, 1 commit.
///
/// # Errors
/// Database errors.
pub async fn register_version<'c>(db: impl PgExecutor<'c>, version: &str) -> Result<()> {
    sqlx::query(
        "INSERT INTO dbos.application_versions (version_id, version_name)
         VALUES (gen_random_uuid()::text, $1) ON CONFLICT DO NOTHING",
    )
    .bind(version)
    .execute(db)
    .await?;
    Ok(())
}
