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

use super::error::Error;

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

/// A direct start of a top-level workflow.
#[derive(Debug)]
pub(crate) struct Start {
    pub(crate) workflow_id: String,
    pub(crate) name: String,
    pub(crate) xid: String,
    pub(crate) timeout_ms: Option<i64>,
    pub(crate) deadline_ms: Option<i64>,
    pub(crate) priority: i32,
    pub(crate) inputs: String,
}

/// What a start found: the workflow's recorded function name, and whether this start made it.
pub(crate) type Started = (Option<String>, bool);

#[derive(Debug)]
enum Request {
    Checkpoint(Checkpoint, oneshot::Sender<Result<bool, String>>),
    Outcome(Outcome, oneshot::Sender<Result<bool, String>>),
    Start(Start, oneshot::Sender<Result<Started, String>>),
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
    executor_id: String,
    app_version: String,
}

impl Committer {
    /// Starts the flusher loop. It runs until the pool is closed (after the node's drain, so
    /// workflows finishing during the drain still record their steps) and the queue is empty.
    pub(crate) fn start(
        pool: PgPool,
        batch_max: usize,
        batches_in_flight_max: usize,
        executor_id: String,
        app_version: String,
    ) -> Committer {
        let inner = Arc::new(Inner {
            queue: Mutex::new(Vec::new()),
            wake: Notify::new(),
            pool,
            batch_max,
            in_flight: Arc::new(Semaphore::new(batches_in_flight_max)),
            executor_id,
            app_version,
        });
        tokio::spawn(flusher(inner.clone()));
        Committer { inner }
    }

    /// Records a checkpoint if the workflow is still PENDING and owned by `owner_xid`.
    /// Returns `false` when it is not (cancelled, or owned by another execution) or when the
    /// position was already recorded.
    ///
    /// 1 round trip, 1 commit, shared with concurrent requests.
    pub(crate) async fn checkpoint(&self, c: Checkpoint) -> Result<bool, Error> {
        let (tx, rx) = oneshot::channel();
        self.push(Request::Checkpoint(c, tx));
        Self::answer(rx).await
    }

    /// Records a workflow's outcome if it is still PENDING and owned by `owner_xid`.
    ///
    /// 1 round trip, 1 commit, shared with concurrent requests.
    pub(crate) async fn outcome(&self, o: Outcome) -> Result<bool, Error> {
        let (tx, rx) = oneshot::channel();
        self.push(Request::Outcome(o, tx));
        Self::answer(rx).await
    }

    /// Inserts a PENDING workflow owned by `xid` with its input, unless the ID exists.
    ///
    /// 1 round trip, 1 commit, shared with concurrent requests.
    pub(crate) async fn start_workflow(&self, st: Start) -> Result<Started, Error> {
        let (tx, rx) = oneshot::channel();
        self.push(Request::Start(st, tx));
        match rx.await {
            Ok(Ok(started)) => Ok(started),
            Ok(Err(e)) => Err(Error::Db(sqlx::Error::Protocol(e))),
            Err(_) => Err(Error::ShuttingDown),
        }
    }

    fn push(&self, r: Request) {
        if self.inner.pool.is_closed() {
            // The flusher has ended: answer at once rather than never.
            let msg = "the node has shut down; nothing was written".to_owned();
            match r {
                Request::Checkpoint(_, tx) | Request::Outcome(_, tx) => {
                    let _ = tx.send(Err(msg));
                }
                Request::Start(_, tx) => {
                    let _ = tx.send(Err(msg));
                }
            }
            return;
        }
        self.inner.queue.lock().push(r);
        self.inner.wake.notify_one();
    }

    async fn answer(rx: oneshot::Receiver<Result<bool, String>>) -> Result<bool, Error> {
        match rx.await {
            Ok(Ok(written)) => Ok(written),
            Ok(Err(e)) => Err(Error::Db(sqlx::Error::Protocol(e))),
            Err(_) => Err(Error::ShuttingDown),
        }
    }
}

async fn flusher(inner: Arc<Inner>) {
    loop {
        let empty = inner.queue.lock().is_empty();
        if empty {
            if inner.pool.is_closed() {
                return;
            }
            tokio::select! {
                () = inner.wake.notified() => {}
                () = inner.pool.close_event() => {}
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
        let inner = inner.clone();
        tokio::spawn(async move {
            write_batch(&inner, batch).await;
            drop(permit);
        });
    }
}

/// The statement of one batch: starts, checkpoints of owned PENDING workflows, and outcomes
/// with their output rows. Served by the primary keys of workflow_status, workflow_input and
/// operation_outputs.
const WRITE_BATCH: &str = "WITH c AS (
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
         ), s AS (
             SELECT * FROM unnest($15::text[], $16::text[], $17::text[], $18::int8[], $19::int8[],
                                  $20::int4[], $21::text[])
                 AS s(id, name, xid, timeout, deadline, priority, inputs)
         ), st AS (
             INSERT INTO dbos.workflow_status AS w
                 (workflow_uuid, status, name, executor_id, application_version, recovery_attempts,
                  owner_xid, creator_xid, serialization, workflow_timeout_ms,
                  workflow_deadline_epoch_ms, priority)
             SELECT id, 'PENDING', name, $22, $23, 1, xid, xid, 'portable_json', timeout, deadline,
                    priority
             FROM s
             ON CONFLICT (workflow_uuid) DO UPDATE SET creator_xid = w.creator_xid
             RETURNING workflow_uuid, name, creator_xid
         ), st_in AS (
             INSERT INTO dbos.workflow_input (workflow_uuid, inputs)
             SELECT s.id, s.inputs FROM s JOIN st ON st.workflow_uuid = s.id AND st.creator_xid = s.xid
             ON CONFLICT DO NOTHING
         )
         SELECT 'c', workflow_uuid, function_id, NULL::text, NULL::text FROM ck
         UNION ALL SELECT 'o', workflow_uuid, 0, NULL, NULL FROM done
         UNION ALL SELECT 's', workflow_uuid, 0, name, creator_xid FROM st";

/// One row the batch statement returns: kind ('c', 'o' or 's'), workflow, function id, and for
/// starts the recorded name and creator.
type BatchRow = (String, String, i32, Option<String>, Option<String>);

/// A batch split into the statement's column arrays, with each request's answer channel in
/// the same order.
#[derive(Default)]
struct Split {
    ck: CheckpointColumns,
    oc: OutcomeColumns,
    st: StartColumns,
    ck_tx: Vec<oneshot::Sender<Result<bool, String>>>,
    oc_tx: Vec<oneshot::Sender<Result<bool, String>>>,
    st_tx: Vec<oneshot::Sender<Result<Started, String>>>,
    /// Starts of an ID already in this batch: one statement cannot insert the same ID twice,
    /// so they go in a batch of their own.
    later: Vec<Request>,
}

impl Split {
    fn of(batch: Vec<Request>) -> Split {
        let mut s = Split::default();
        for r in batch {
            match r {
                Request::Checkpoint(c, tx) => {
                    s.ck.push(c);
                    s.ck_tx.push(tx);
                }
                Request::Outcome(o, tx) => {
                    s.oc.push(o);
                    s.oc_tx.push(tx);
                }
                Request::Start(st, tx) if s.st.id.contains(&st.workflow_id) => {
                    s.later.push(Request::Start(st, tx))
                }
                Request::Start(st, tx) => {
                    s.st.push(st);
                    s.st_tx.push(tx);
                }
            }
        }
        s
    }

    /// The batch statement with every column bound (sqlx encodes at bind time), ready to send.
    fn statement<'q>(
        &'q self,
        executor_id: &'q String,
        app_version: &'q String,
    ) -> sqlx::query::QueryAs<'q, sqlx::Postgres, BatchRow, sqlx::postgres::PgArguments> {
        let (ck, oc, st) = (&self.ck, &self.oc, &self.st);
        sqlx::query_as::<_, BatchRow>(WRITE_BATCH)
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
            .bind(&st.id)
            .bind(&st.name)
            .bind(&st.xid)
            .bind(&st.timeout)
            .bind(&st.deadline)
            .bind(&st.priority)
            .bind(&st.inputs)
            .bind(executor_id)
            .bind(app_version)
    }
}

/// Writes a batch in one statement (see [`WRITE_BATCH`]) and answers every request.
async fn write_batch(inner: &Inner, batch: Vec<Request>) {
    let split = Split::of(batch);
    let result = split
        .statement(&inner.executor_id, &inner.app_version)
        .fetch_all(&inner.pool)
        .await;
    let Split {
        ck,
        oc,
        st,
        ck_tx,
        oc_tx,
        st_tx,
        later,
    } = split;
    match result {
        Ok(rows) => {
            for (i, tx) in ck_tx.into_iter().enumerate() {
                let written = rows
                    .iter()
                    .any(|(k, wf, fid, ..)| k == "c" && *wf == ck.wf[i] && *fid == ck.fid[i]);
                let _ = tx.send(Ok(written));
            }
            for (i, tx) in oc_tx.into_iter().enumerate() {
                let written = rows.iter().any(|(k, wf, ..)| k == "o" && *wf == oc.wf[i]);
                let _ = tx.send(Ok(written));
            }
            for (i, tx) in st_tx.into_iter().enumerate() {
                let found = rows.iter().find(|(k, wf, ..)| k == "s" && *wf == st.id[i]);
                let answer = match found {
                    Some((.., name, xid)) => {
                        Ok((name.clone(), xid.as_deref() == Some(st.xid[i].as_str())))
                    }
                    None => Err(format!("the start of {} returned no row", st.id[i])),
                };
                let _ = tx.send(answer);
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "a checkpoint batch failed");
            let msg = e.to_string();
            for tx in ck_tx.into_iter().chain(oc_tx) {
                let _ = tx.send(Err(msg.clone()));
            }
            for tx in st_tx {
                let _ = tx.send(Err(msg.clone()));
            }
        }
    }
    if !later.is_empty() {
        Box::pin(write_batch(inner, later)).await;
    }
}

#[derive(Default)]
struct StartColumns {
    id: Vec<String>,
    name: Vec<String>,
    xid: Vec<String>,
    timeout: Vec<Option<i64>>,
    deadline: Vec<Option<i64>>,
    priority: Vec<i32>,
    inputs: Vec<String>,
}

impl StartColumns {
    fn push(&mut self, s: Start) {
        self.id.push(s.workflow_id);
        self.name.push(s.name);
        self.xid.push(s.xid);
        self.timeout.push(s.timeout_ms);
        self.deadline.push(s.deadline_ms);
        self.priority.push(s.priority);
        self.inputs.push(s.inputs);
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

/// The in-process half of one group commit, for the micro-benchmarks in `dbos-bench`: the
/// requests as workflows queue them, and the work a flush does before its round trip. Not a
/// stable API.
pub mod bench {
    use super::*;

    /// Requests queued for one flush.
    pub struct Requests(Vec<Request>);

    /// `n` step checkpoints of `n` workflows, each with `output` as its recorded output, as
    /// concurrent workflows hand them to the committer.
    pub fn checkpoints(n: usize, output: &str) -> Requests {
        Requests(
            (0..n)
                .map(|i| {
                    let (tx, _) = oneshot::channel();
                    Request::Checkpoint(
                        Checkpoint {
                            workflow_id: format!("0194c5d2-7a9e-7c3b-8f00-{i:012}"),
                            owner_xid: format!("9e1c4b7a-2f0d-4e55-a1b3-{i:012}"),
                            function_id: 2,
                            name: "noop".to_owned(),
                            output: Some(output.to_owned()),
                            error: None,
                            child_workflow_id: None,
                            started_at_ms: 1_700_000_000_000 + i as i64,
                            completed_at_ms: 1_700_000_000_001 + i as i64,
                        },
                        tx,
                    )
                })
                .collect(),
        )
    }

    /// Splits the requests into the statement's column arrays and binds them, exactly as a
    /// flush does before sending; returns how many requests the statement carries.
    pub fn build(requests: Requests) -> usize {
        let split = Split::of(requests.0);
        let (executor_id, app_version) = ("bench-node".to_owned(), "bench-version".to_owned());
        let statement = split.statement(&executor_id, &app_version);
        std::hint::black_box(&statement);
        split.ck_tx.len() + split.oc_tx.len() + split.st_tx.len()
    }
}
