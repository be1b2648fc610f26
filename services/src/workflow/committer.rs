//! Group commit of checkpoints and outcomes.
//!
//! Workflows hand their step checkpoints and final outcomes to the committer, which writes
//! everything queued in one statement and one commit. While `batches_in_flight_max` batches are
//! being committed, new requests queue up and go out together in the next one, so under
//! concurrency many workflows share each commit (and its fsync), and a lone workflow still pays
//! exactly one round trip per write.

use std::sync::Arc;

use parking_lot::Mutex;
use sqlx::PgPool;
use tokio::sync::{oneshot, Notify, Semaphore};

use super::error::WfError;

/// One operation checkpoint.
#[derive(Debug)]
pub(crate) struct Checkpoint {
    pub(crate) workflow_id: String,
    pub(crate) owner_xid: String,
    pub(crate) function_id: i32,
    pub(crate) name: String,
    pub(crate) output: Option<String>,
    pub(crate) error: Option<String>,
    pub(crate) child_workflow_id: Option<String>,
    pub(crate) started_at_ms: i64,
    pub(crate) completed_at_ms: i64,
}

/// A workflow's final outcome.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) workflow_id: String,
    pub(crate) owner_xid: String,
    /// SUCCESS or ERROR.
    pub(crate) status: &'static str,
    pub(crate) output: Option<String>,
    pub(crate) error: Option<String>,
}

#[derive(Debug)]
enum Request {
    Checkpoint(Checkpoint, oneshot::Sender<Result<bool, String>>),
    Outcome(Outcome, oneshot::Sender<Result<bool, String>>),
}

/// Handle to the committer. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Committer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    queue: Mutex<Vec<Request>>,
    wake: Notify,
    pool: PgPool,
    batch_max: usize,
    in_flight: Arc<Semaphore>,
}

impl Committer {
    /// Starts the flusher loop; it ends when `shutdown` fires and the queue is empty.
    pub(crate) fn start(
        pool: PgPool,
        batch_max: usize,
        batches_in_flight_max: usize,
        shutdown: dbos_kernel::CancellationToken,
    ) -> Committer {
        let inner = Arc::new(Inner {
            queue: Mutex::new(Vec::new()),
            wake: Notify::new(),
            pool,
            batch_max,
            in_flight: Arc::new(Semaphore::new(batches_in_flight_max)),
        });
        tokio::spawn(flusher(inner.clone(), shutdown));
        Committer { inner }
    }

    /// Records a checkpoint if the workflow is still PENDING and owned by `owner_xid`.
    /// Returns `false` when it is not (cancelled, or owned by another execution) or when the
    /// position was already recorded.
    ///
    /// 1 round trip, 1 commit, shared with concurrent requests.
    pub(crate) async fn checkpoint(&self, c: Checkpoint) -> Result<bool, WfError> {
        let (tx, rx) = oneshot::channel();
        self.push(Request::Checkpoint(c, tx));
        Self::answer(rx).await
    }

    /// Records a workflow's outcome if it is still PENDING and owned by `owner_xid`.
    ///
    /// 1 round trip, 1 commit, shared with concurrent requests.
    pub(crate) async fn outcome(&self, o: Outcome) -> Result<bool, WfError> {
        let (tx, rx) = oneshot::channel();
        self.push(Request::Outcome(o, tx));
        Self::answer(rx).await
    }

    fn push(&self, r: Request) {
        self.inner.queue.lock().push(r);
        self.inner.wake.notify_one();
    }

    async fn answer(rx: oneshot::Receiver<Result<bool, String>>) -> Result<bool, WfError> {
        match rx.await {
            Ok(Ok(written)) => Ok(written),
            Ok(Err(e)) => Err(WfError::Db(sqlx::Error::Protocol(e))),
            Err(_) => Err(WfError::ShuttingDown),
        }
    }
}

async fn flusher(inner: Arc<Inner>, shutdown: dbos_kernel::CancellationToken) {
    loop {
        let empty = inner.queue.lock().is_empty();
        if empty {
            tokio::select! {
                () = inner.wake.notified() => {}
                () = shutdown.cancelled() => {
                    if inner.queue.lock().is_empty() {
                        return;
                    }
                }
            }
            continue;
        }
        let permit = inner
            .in_flight
            .clone()
            .acquire_owned()
            .await
            .expect("the in-flight semaphore is never closed");
        let batch: Vec<Request> = {
            let mut q = inner.queue.lock();
            let n = q.len().min(inner.batch_max);
            q.drain(..n).collect()
        };
        if batch.is_empty() {
            continue;
        }
        let pool = inner.pool.clone();
        tokio::spawn(async move {
            write_batch(&pool, batch).await;
            drop(permit);
        });
    }
}

/// Writes a batch in one statement: checkpoints of owned PENDING workflows, and outcomes with
/// their output rows. Answers every request.
async fn write_batch(pool: &PgPool, batch: Vec<Request>) {
    let mut ck = CheckpointColumns::default();
    let mut oc = OutcomeColumns::default();
    let mut ck_tx = Vec::new();
    let mut oc_tx = Vec::new();
    for r in batch {
        match r {
            Request::Checkpoint(c, tx) => {
                ck.push(c);
                ck_tx.push(tx);
            }
            Request::Outcome(o, tx) => {
                oc.push(o);
                oc_tx.push(tx);
            }
        }
    }
    // Served by the primary keys of workflow_status and operation_outputs.
    let result = sqlx::query_as::<_, (String, String, i32)>(
        "WITH c AS (
             SELECT * FROM unnest($1::text[], $2::text[], $3::int4[], $4::text[], $5::text[],
                                  $6::text[], $7::text[], $8::int8[], $9::int8[])
                 AS c(wf, owner, fid, name, output, error, child, started, completed)
         ), owned AS (
             SELECT c.* FROM c JOIN dbos.workflow_status w
                 ON w.workflow_uuid = c.wf AND w.owner_xid = c.owner AND w.status = 'PENDING'
             FOR NO KEY UPDATE OF w
         ), ck AS (
             INSERT INTO dbos.operation_outputs
                 (workflow_uuid, function_id, function_name, output, error, child_workflow_id,
                  started_at_epoch_ms, completed_at_epoch_ms, serialization)
             SELECT wf, fid, name, output, error, child, started, completed, 'portable_json' FROM owned
             ON CONFLICT DO NOTHING
             RETURNING workflow_uuid, function_id
         ), o AS (
             SELECT * FROM unnest($10::text[], $11::text[], $12::text[], $13::text[], $14::text[])
                 AS o(wf, owner, status, output, error)
         ), done AS (
             UPDATE dbos.workflow_status w
             SET status = o.status, owner_xid = NULL, deduplication_id = NULL,
                 updated_at = (EXTRACT(epoch FROM now()) * 1000)::bigint,
                 completed_at = (EXTRACT(epoch FROM now()) * 1000)::bigint
             FROM o
             WHERE w.workflow_uuid = o.wf AND w.status = 'PENDING' AND w.owner_xid = o.owner
             RETURNING w.workflow_uuid
         ), out AS (
             INSERT INTO dbos.workflow_output (workflow_uuid, output, error)
             SELECT o.wf, o.output, o.error FROM o JOIN done ON done.workflow_uuid = o.wf
             ON CONFLICT (workflow_uuid) DO UPDATE SET output = excluded.output, error = excluded.error
         )
         SELECT 'c', workflow_uuid, function_id FROM ck
         UNION ALL SELECT 'o', workflow_uuid, 0 FROM done",
    )
    .bind(&ck.wf)
    .bind(&ck.owner)
    .bind(&ck.fid)
    .bind(&ck.name)
    .bind(&ck.output)
    .bind(&ck.error)
    .bind(&ck.child)
    .bind(&ck.started)
    .bind(&ck.completed)
    .bind(&oc.wf)
    .bind(&oc.owner)
    .bind(&oc.status)
    .bind(&oc.output)
    .bind(&oc.error)
    .fetch_all(pool)
    .await;
    match result {
        Ok(rows) => {
            for (i, tx) in ck_tx.into_iter().enumerate() {
                let written = rows
                    .iter()
                    .any(|(k, wf, fid)| k == "c" && *wf == ck.wf[i] && *fid == ck.fid[i]);
                let _ = tx.send(Ok(written));
            }
            for (i, tx) in oc_tx.into_iter().enumerate() {
                let written = rows.iter().any(|(k, wf, _)| k == "o" && *wf == oc.wf[i]);
                let _ = tx.send(Ok(written));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "a checkpoint batch failed");
            let msg = e.to_string();
            for tx in ck_tx.into_iter().chain(oc_tx) {
                let _ = tx.send(Err(msg.clone()));
            }
        }
    }
}

#[derive(Default)]
struct CheckpointColumns {
    wf: Vec<String>,
    owner: Vec<String>,
    fid: Vec<i32>,
    name: Vec<String>,
    output: Vec<Option<String>>,
    error: Vec<Option<String>>,
    child: Vec<Option<String>>,
    started: Vec<i64>,
    completed: Vec<i64>,
}

impl CheckpointColumns {
    fn push(&mut self, c: Checkpoint) {
        self.wf.push(c.workflow_id);
        self.owner.push(c.owner_xid);
        self.fid.push(c.function_id);
        self.name.push(c.name);
        self.output.push(c.output);
        self.error.push(c.error);
        self.child.push(c.child_workflow_id);
        self.started.push(c.started_at_ms);
        self.completed.push(c.completed_at_ms);
    }
}

#[derive(Default)]
struct OutcomeColumns {
    wf: Vec<String>,
    owner: Vec<String>,
    status: Vec<&'static str>,
    output: Vec<Option<String>>,
    error: Vec<Option<String>>,
}

impl OutcomeColumns {
    fn push(&mut self, o: Outcome) {
        self.wf.push(o.workflow_id);
        self.owner.push(o.owner_xid);
        self.status.push(o.status);
        self.output.push(o.output);
        self.error.push(o.error);
    }
}
