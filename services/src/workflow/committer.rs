//! Group commit of checkpoints, outcomes and starts.
//!
//! Workflows hand their step checkpoints, final outcomes and direct starts to the committer,
//! which writes everything queued in one statement and one commit ([`dbos_store::batch`]). While
//! `batches_in_flight_max` batches are being committed, new requests queue up and go out
//! together in the next one, so under concurrency many workflows share each commit (and its
//! fsync), and a lone workflow still pays exactly one round trip per write: a request that
//! finds a batch slot free starts the write itself, with no hand-off to the flusher.
//!
//! The flusher is a supervised loop of the kernel's [`Phase::Flush`]: at shutdown it stops only
//! after running work has drained, writing everything still queued first.

use std::sync::Arc;
use std::time::Duration;

use dbos_kernel::db::Kept;
use dbos_kernel::{CancellationToken, Loops, Phase};
use dbos_store::batch::{Batch, Checkpoint, Enqueue, Outcome, Start, Written};
use dbos_store::workflows::Created;
use parking_lot::Mutex;
use tokio::sync::{oneshot, Notify, OwnedSemaphorePermit, Semaphore};

use super::announce::Announcer;
use super::error::Error;

/// A batch's failure, shared by each of its requests.
type Failed = Arc<sqlx::Error>;

#[derive(Debug)]
enum Request {
    Checkpoint(Checkpoint, oneshot::Sender<Result<bool, Failed>>),
    Outcome(Outcome, oneshot::Sender<Result<bool, Failed>>),
    Start(Start, oneshot::Sender<Result<Option<Created>, Failed>>),
    Enqueue(Enqueue, oneshot::Sender<dbos_store::Result<Created>>),
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
    /// The batches' connections, kept between batches: the same few backends, with no round
    /// trip to test a connection between one batch and the next.
    conns: Kept,
    batch_max: usize,
    batches_in_flight_max: usize,
    in_flight: Arc<Semaphore>,
    executor_id: String,
    app_version: String,
    announcer: Announcer,
    /// Set once the flusher has stopped: requests are refused at once.
    stopped: CancellationToken,
}

impl Committer {
    /// Starts the flusher loop on `loops`. It runs until the [`Phase::Flush`] phase stops and
    /// the queue is empty.
    pub(crate) fn start(
        loops: &Loops,
        conns: Kept,
        batch_max: usize,
        batches_in_flight_max: usize,
        executor_id: String,
        app_version: String,
        announcer: Announcer,
    ) -> Committer {
        let batches_in_flight_max = batches_in_flight_max.max(1);
        let inner = Arc::new(Inner {
            queue: Mutex::new(Vec::new()),
            wake: Notify::new(),
            conns,
            batch_max: batch_max.max(1),
            batches_in_flight_max,
            in_flight: Arc::new(Semaphore::new(batches_in_flight_max)),
            executor_id,
            app_version,
            announcer,
            stopped: CancellationToken::new(),
        });
        let flusher = inner.clone();
        loops.spawn("committer", Phase::Flush, move |stop| {
            flush_until(flusher.clone(), stop)
        });
        Committer { inner }
    }

    /// Records checkpoints (of one workflow, in order) if the workflow is still PENDING and
    /// owned by `owner_xid`. Says per checkpoint whether it was written: not when the
    /// workflow is not (cancelled, or owned by another execution) or when the position was
    /// already recorded.
    ///
    /// 1 round trip, 1 commit, shared with concurrent requests.
    ///
    /// A request is checked before it joins a batch: a bad one is refused alone.
    pub(crate) async fn checkpoints(&self, cs: Vec<Checkpoint>) -> Result<Vec<bool>, Error> {
        let (requests, answers) = checkpoint_requests(cs)?;
        self.push(requests)?;
        let mut written = Vec::with_capacity(answers.len());
        for rx in answers {
            written.push(answer(rx).await?);
        }
        Ok(written)
    }

    /// Records a workflow's outcome, and with it the checkpoint its last step left pending,
    /// if it is still PENDING and owned by `owner_xid`. Says whether the outcome was written.
    ///
    /// 1 round trip, 1 commit, shared with concurrent requests.
    pub(crate) async fn outcome(
        &self,
        pending: Option<Checkpoint>,
        o: Outcome,
    ) -> Result<bool, Error> {
        o.validate()?;
        let (mut requests, checkpoint) = checkpoint_requests(pending.into_iter().collect())?;
        let (tx, rx) = oneshot::channel();
        requests.push(Request::Outcome(o, tx));
        self.push(requests)?;
        for c in checkpoint {
            // Written with the outcome or fenced out with it: the outcome's answer says which.
            answer(c).await?;
        }
        answer(rx).await
    }

    /// Inserts a PENDING workflow owned by `xid` with its input, unless the ID exists.
    ///
    /// 1 round trip, 1 commit, shared with concurrent requests.
    pub(crate) async fn start_workflow(&self, st: Start) -> Result<Created, Error> {
        st.validate()?;
        let (tx, rx) = oneshot::channel();
        let id = st.workflow_id.clone();
        self.push(vec![Request::Start(st, tx)])?;
        answer(rx).await?.ok_or_else(|| {
            Error::Invalid(format!(
                "the start of {id} returned no row; the group commit found no such workflow"
            ))
        })
    }

    /// Puts a workflow on its queue with its input, unless the ID exists.
    ///
    /// 1 round trip, 1 commit, shared with concurrent requests.
    ///
    /// # Errors
    /// [`dbos_store::Error::PartitionKey`] and [`dbos_store::Error::Deduplicated`] among
    /// others.
    pub(crate) async fn enqueue(&self, e: Enqueue) -> Result<Created, Error> {
        e.validate()?;
        let (tx, rx) = oneshot::channel();
        self.push(vec![Request::Enqueue(e, tx)])?;
        Ok(rx.await.map_err(|_| Error::ShuttingDown)??)
    }

    /// Queues requests next to each other, so they usually share a batch.
    fn push(&self, rs: Vec<Request>) -> Result<(), Error> {
        if self.inner.stopped.is_cancelled() {
            // The flusher has ended: answer at once rather than never.
            return Err(Error::ShuttingDown);
        }
        self.inner.queue.lock().extend(rs);
        // With a batch slot free, the request's own task starts the write: a lone workflow
        // pays its round trip without waiting for the flusher to be scheduled.
        match self.inner.in_flight.clone().try_acquire_owned() {
            Ok(permit) => {
                let requests = self.inner.take_batch();
                spawn_write(self.inner.clone(), requests, permit);
            }
            Err(_) => self.inner.wake.notify_one(),
        }
        Ok(())
    }
}

/// Checkpoint requests, each checked first, and the receivers of their answers.
#[allow(clippy::type_complexity)]
fn checkpoint_requests(
    cs: Vec<Checkpoint>,
) -> Result<(Vec<Request>, Vec<oneshot::Receiver<Result<bool, Failed>>>), Error> {
    let mut requests = Vec::with_capacity(cs.len() + 1);
    let mut answers = Vec::with_capacity(cs.len());
    for c in cs {
        c.validate()?;
        let (tx, rx) = oneshot::channel();
        requests.push(Request::Checkpoint(c, tx));
        answers.push(rx);
    }
    Ok((requests, answers))
}

async fn answer<T>(rx: oneshot::Receiver<Result<T, Failed>>) -> Result<T, Error> {
    match rx.await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Error::Store(dbos_store::Error::Batch(e))),
        Err(_) => Err(Error::ShuttingDown),
    }
}

impl Inner {
    /// Takes up to `batch_max` queued requests, oldest first.
    fn take_batch(&self) -> Vec<Request> {
        let mut q = self.queue.lock();
        let n = q.len().min(self.batch_max);
        q.drain(..n).collect()
    }
}

/// Writes `requests` on a task of its own, so a caller that stops waiting cancels no one's
/// write, and frees the batch slot `permit` only after the tasks its answers woke have run.
/// Those callers push their next requests while the slot is still taken, so the requests go
/// out together in the next batch: freed at once, the slot went to the first of them, alone,
/// and the rest waited for the batch after it. (`dbos bench workflow`, runs alternating:
/// commits per 3-step workflow at 8 callers 1.46 → 1.07, at 32 callers 0.41 → 0.30.)
///
/// A batch of one workflow's requests woke one caller, which has no one to wait for: its slot
/// is freed at once. The yield is not free: the runtime wakes an idle worker thread for the
/// yielded task, a wake-up across threads for every commit of a lone workflow.
fn spawn_write(inner: Arc<Inner>, requests: Vec<Request>, permit: OwnedSemaphorePermit) {
    tokio::spawn(async move {
        // A caller's requests are queued next to each other.
        let several = requests
            .windows(2)
            .any(|w| w[0].workflow_id() != w[1].workflow_id());
        write(&inner, requests).await;
        if several {
            tokio::task::yield_now().await;
        }
        drop(permit);
    });
}

/// Writes queued requests in batches until `stop`, then writes what is still queued and waits
/// for every batch in flight.
async fn flush_until(inner: Arc<Inner>, stop: CancellationToken) -> Result<(), Error> {
    loop {
        let empty = inner.queue.lock().is_empty();
        if empty {
            if stop.is_cancelled() {
                break;
            }
            tokio::select! {
                () = inner.wake.notified() => {}
                () = stop.cancelled() => {}
            }
            continue;
        }
        let permit = inner
            .in_flight
            .clone()
            .acquire_owned()
            .await
            .expect("the in-flight semaphore is never closed");
        let requests = inner.take_batch();
        if requests.is_empty() {
            // A request's own task took them while this loop waited for the slot.
            continue;
        }
        spawn_write(inner.clone(), requests, permit);
    }
    // Every batch in flight has answered once all permits are back.
    let _all = inner
        .in_flight
        .acquire_many(inner.batches_in_flight_max as u32)
        .await
        .expect("the in-flight semaphore is never closed");
    inner.stopped.cancel();
    // Requests pushed between the last look and the stop flag get their answer.
    let late: Vec<Request> = std::mem::take(&mut *inner.queue.lock());
    if !late.is_empty() {
        write(&inner, late).await;
    }
    inner.conns.release_all();
    Ok(())
}

/// SQLSTATE class 23: integrity constraint violations.
const INTEGRITY_CONSTRAINT_CLASS: &str = "23";

/// Attempts of a batch that failed for a transient reason (a deadlock with another batch, a
/// serialization failure, a lost connection) before its requests get the error.
const TRANSIENT_ATTEMPTS_MAX: u32 = 5;

/// Writes requests and answers each: one statement for all of them, except that a request that
/// cannot share a statement with another of the same workflow (a start and a write of one ID)
/// goes in a following one. Rows are written in workflow-ID order, so concurrent batches lock
/// them in the same order. A batch that fails for a transient reason is retried; one that fails
/// otherwise is split in halves until the request at fault is alone, so only it fails.
async fn write(inner: &Inner, mut requests: Vec<Request>) {
    requests.sort_by(|a, b| a.workflow_id().cmp(b.workflow_id()));
    let mut now = Vec::with_capacity(requests.len());
    let mut later = Vec::new();
    let mut batch = Batch::new();
    // Sorted, the requests of one ID are adjacent: what the batch holds for the ID at hand is
    // all a clash can be with (no scan of the batch per request).
    let (mut id_at_hand, mut started, mut written) = (String::new(), false, false);
    for r in requests {
        let id = r.workflow_id();
        if id != id_at_hand {
            (id_at_hand, started, written) = (id.to_owned(), false, false);
        }
        let clash = match &r {
            Request::Start(..) | Request::Enqueue(..) => started || written,
            _ => started,
        };
        if clash {
            later.push(r);
            continue;
        }
        match &r {
            Request::Checkpoint(c, _) => batch.push_checkpoint(c.clone()),
            Request::Outcome(o, _) => batch.push_outcome(o.clone()),
            Request::Start(st, _) => batch.push_start(st.clone()),
            Request::Enqueue(e, _) => batch.push_enqueue(e.clone()),
        }
        match &r {
            Request::Start(..) | Request::Enqueue(..) => started = true,
            _ => written = true,
        }
        now.push(r);
    }
    crate::metrics::METRICS
        .commit_batch_size
        .observe(batch.len() as f64);
    let mut attempt = 0;
    let result = loop {
        attempt += 1;
        match write_batch(inner, &batch).await {
            Err(e) if is_transient(&e) && attempt < TRANSIENT_ATTEMPTS_MAX => {
                tracing::debug!(error = %e, attempt, "a group commit failed; retrying it");
                tokio::time::sleep(Duration::from_millis(10 << attempt)).await;
            }
            other => break other,
        }
    };
    match result {
        Ok(mut w) => {
            for id in std::mem::take(&mut w.queued_outcomes) {
                inner.announcer.announce(dbos_store::OUTCOME_CHANNEL, id);
            }
            for queue in std::mem::take(&mut w.freed_queues) {
                inner.announcer.announce(dbos_store::ENQUEUE_CHANNEL, queue);
            }
            answer_all(now, w);
        }
        Err(e) if now.len() > 1 && !is_transient(&e) => {
            // One request is at fault: halve until it is alone.
            let second = now.split_off(now.len() / 2);
            Box::pin(write(inner, now)).await;
            Box::pin(write(inner, second)).await;
        }
        Err(e) => {
            // A request refused by a constraint (an enqueue whose deduplication ID is in use)
            // is an answer for its caller, not a fault of the node.
            let refused = e
                .as_database_error()
                .and_then(|d| d.code())
                .is_some_and(|c| c.starts_with(INTEGRITY_CONSTRAINT_CLASS));
            if refused {
                tracing::debug!(error = %e, "a group commit request was refused by a constraint");
            } else {
                tracing::warn!(error = %e, requests = now.len(), "a group commit failed");
            }
            let e = Arc::new(e);
            for r in now {
                r.fail(e.clone());
            }
        }
    }
    if !later.is_empty() {
        Box::pin(write(inner, later)).await;
    }
}

/// Writes `batch` on a kept connection, kept again when the statement succeeded.
async fn write_batch(inner: &Inner, batch: &Batch) -> Result<Written, sqlx::Error> {
    let mut conn = inner.conns.acquire().await?;
    let w = batch
        .write(&mut *conn, &inner.executor_id, &inner.app_version)
        .await?;
    conn.keep();
    Ok(w)
}

/// Answers each request, in the order they were pushed, with what the batch wrote for it.
fn answer_all(requests: Vec<Request>, w: Written) {
    let (mut ck, mut oc, mut st, mut eq) = (
        w.checkpoints.into_iter(),
        w.outcomes.into_iter(),
        w.starts.into_iter(),
        w.enqueues.into_iter(),
    );
    for r in requests {
        match r {
            Request::Checkpoint(_, tx) => {
                let _ = tx.send(Ok(ck.next().unwrap_or(false)));
            }
            Request::Outcome(_, tx) => {
                let _ = tx.send(Ok(oc.next().unwrap_or(false)));
            }
            Request::Start(_, tx) => {
                let _ = tx.send(Ok(st.next().flatten()));
            }
            Request::Enqueue(e, tx) => {
                let _ = tx.send(e.result(eq.next().flatten()));
            }
        }
    }
}

fn is_transient(e: &sqlx::Error) -> bool {
    dbos_kernel::sqlstate::is_transient(e)
}

impl Request {
    fn workflow_id(&self) -> &str {
        match self {
            Request::Checkpoint(c, _) => &c.workflow_id,
            Request::Outcome(o, _) => &o.workflow_id,
            Request::Start(s, _) => &s.workflow_id,
            Request::Enqueue(e, _) => &e.workflow_id,
        }
    }

    fn fail(self, e: Failed) {
        match self {
            Request::Checkpoint(_, tx) | Request::Outcome(_, tx) => {
                let _ = tx.send(Err(e));
            }
            Request::Start(_, tx) => {
                let _ = tx.send(Err(e));
            }
            Request::Enqueue(en, tx) => {
                let _ = tx.send(Err(en.failed(e)));
            }
        }
    }
}

/// The in-process half of one group commit, for the micro-benchmarks in `dbos-bench`: the
/// requests as workflows queue them, and the work a flush does before its round trip. Not a
/// stable API.
pub mod bench {
    use super::*;

    /// Requests queued for one flush.
    pub struct Requests(Vec<Checkpoint>);

    /// `n` step checkpoints of `n` workflows, each with `output` as its recorded output, as
    /// concurrent workflows hand them to the committer.
    pub fn checkpoints(n: usize, output: &str) -> Requests {
        Requests(
            (0..n)
                .map(|i| Checkpoint {
                    workflow_id: format!("0194c5d2-7a9e-7c3b-8f00-{i:012}"),
                    owner_xid: format!("9e1c4b7a-2f0d-4e55-a1b3-{i:012}"),
                    function_id: 2,
                    name: "noop".to_owned(),
                    output: Some(output.to_owned()),
                    error: None,
                    child_workflow_id: None,
                    started_at_ms: 1_700_000_000_000 + i as i64,
                    completed_at_ms: 1_700_000_000_001 + i as i64,
                    prov: None,
                })
                .collect(),
        )
    }

    /// Splits the requests into the statement's column arrays and binds them, exactly as a
    /// flush does before sending; returns how many requests the statement carries.
    pub fn build(requests: Requests) -> usize {
        let mut batch = Batch::new();
        for c in requests.0 {
            batch.push_checkpoint(c);
        }
        let statement = batch.query("bench-node", "bench-version");
        std::hint::black_box(&statement);
        batch.len()
    }
}
