//! Messaging for code outside workflows: send, events, streams, publish and subscribe.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use dbos_kernel::db::{Kept, KeptConn};
use futures_util::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::sql::{self, Delivered, Outgoing, Start};
use crate::wait::{Channel, Waiters};

/// Limits of the messaging service.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Options {
    /// Largest message, event value, stream value or topic payload, in bytes of JSON.
    pub message_bytes_max: usize,
    /// Waiters re-probe at least this often even without a notification.
    pub recheck_interval_ms: u64,
    /// Stream values fetched in one round trip at most.
    pub stream_batch_max: i32,
    /// Topic messages consumed in one round trip at most.
    pub topic_batch_max: i64,
    /// Messages in one bulk send or batch publish at most.
    pub batch_max: usize,
    /// Pause between retention sweeps of pub/sub topics.
    pub sweep_interval_ms: u64,
    /// Connections of the node's messaging statements (sends, receives, events, streams,
    /// publishes, consumes), a pool of their own kept between statements
    /// ([`Client::with_hot`]).
    pub hot_connections_max: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            message_bytes_max: 1 << 20,
            recheck_interval_ms: 10_000,
            stream_batch_max: 100,
            topic_batch_max: 1_000,
            batch_max: 10_000,
            sweep_interval_ms: 60_000,
            hot_connections_max: 8,
        }
    }
}

impl Options {
    /// Encodes `value` as portable JSON, refusing it when over `message_bytes_max`.
    ///
    /// # Errors
    /// [`Error::Payload`], [`Error::TooLarge`].
    pub fn encode<T: Serialize + ?Sized>(&self, what: &'static str, value: &T) -> Result<String> {
        let text = serde_json::to_string(value)?;
        self.check_size(what, &text)?;
        Ok(text)
    }

    /// Refuses JSON text over `message_bytes_max`.
    ///
    /// # Errors
    /// [`Error::TooLarge`].
    pub fn check_size(&self, what: &'static str, text: &str) -> Result<()> {
        if text.len() > self.message_bytes_max {
            return Err(Error::TooLarge {
                what,
                bytes: text.len(),
                max: self.message_bytes_max,
            });
        }
        Ok(())
    }

    /// Refuses a batch over `batch_max`.
    ///
    /// # Errors
    /// [`Error::TooLarge`].
    pub fn check_batch(&self, n: usize) -> Result<()> {
        if n > self.batch_max {
            return Err(Error::TooLarge {
                what: "batch (messages)",
                bytes: n,
                max: self.batch_max,
            });
        }
        Ok(())
    }
}

/// Decodes portable JSON text.
///
/// # Errors
/// [`Error::Payload`].
pub fn decode<T: DeserializeOwned>(text: &str) -> Result<T> {
    Ok(serde_json::from_str(text)?)
}

/// Messaging operations for code outside workflows. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Client {
    src: Source,
    waiters: Waiters,
    opts: Options,
    consumes: Arc<Consumes>,
}

/// Where a client's statements take their connections.
#[derive(Clone, Debug)]
struct Source {
    pool: PgPool,
    /// Where the hot operations take their connections, when set ([`Client::with_hot`]).
    hot: Option<Arc<Kept>>,
}

impl Source {
    async fn connection(&self) -> Result<Conn<'_>> {
        Ok(Conn(match &self.hot {
            Some(k) => Held::Kept(k.acquire().await?),
            None => Held::Pooled(self.pool.acquire().await?),
        }))
    }
}

/// How [`Client::wait_topic`] reads a topic.
#[derive(Clone, Copy)]
enum TopicRead<'a> {
    /// Consume through this subscriber's cursor.
    Consume(&'a str),
    /// Read the retained messages after this sequence number.
    After(i64),
}

/// A reader of one workflow stream, from an offset.
#[derive(Debug)]
pub struct StreamReader {
    client: Client,
    workflow_id: String,
    key: String,
    offset: i32,
    buffered: std::collections::VecDeque<String>,
    done: bool,
}

/// Notifications a standalone client's subscriptions hold before a slow reader is told to
/// re-check.
const NOTIFY_BUFFER: usize = 1024;

impl Client {
    /// A client over `pool`, waking waiters through `waiters`.
    pub fn new(pool: PgPool, waiters: Waiters, opts: Options) -> Client {
        Client {
            src: Source { pool, hot: None },
            waiters,
            opts,
            consumes: Arc::default(),
        }
    }

    /// A client for a program that runs no node (a command line): its own `LISTEN` connection
    /// on a side pool of `pool`, which lives as long as the client or a clone of it does.
    ///
    /// # Errors
    /// The listening connection cannot be opened.
    pub async fn standalone(pool: PgPool, opts: Options) -> Result<Client> {
        let notifier = dbos_kernel::Notifier::start(
            &pool,
            dbos_kernel::db::side_pool(&pool),
            NOTIFY_BUFFER,
            &dbos_kernel::Loops::new(),
        )
        .await?;
        let waiters = Waiters::start(&notifier, opts.recheck_interval_ms).await?;
        Ok(Client::new(pool, waiters, opts))
    }

    /// Runs the messaging statements ([`Client::connection`]) on `hot`, whose connections are
    /// kept between statements, the one used last first. Through the pool, whose connections
    /// take turns, a node's first hundred or so of them each met a backend that had not yet
    /// run the statement or read the tables' catalog entries, a few milliseconds each.
    pub fn with_hot(mut self, hot: Kept) -> Client {
        self.src.hot = Some(Arc::new(hot));
        // Consumes combined from now on take the kept connections too.
        self.consumes = Arc::default();
        self
    }

    /// A connection for one statement of a messaging operation: kept ([`Client::with_hot`])
    /// or from the pool. [`Conn::keep`] it after a statement that succeeded.
    ///
    /// # Errors
    /// The pool's, when no connection could be had within its acquire timeout.
    pub async fn connection(&self) -> Result<Conn<'_>> {
        self.src.connection().await
    }

    /// The limits in force.
    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// The waiter registry.
    pub fn waiters(&self) -> &Waiters {
        &self.waiters
    }

    /// Sends `message` to a workflow's mailbox `topic`; with an idempotency key a repeated send
    /// is delivered once. Returns whether it was newly stored.
    ///
    /// 1 round trip, 1 commit.
    ///
    /// # Errors
    /// [`Error::NoSuchWorkflow`], [`Error::TooLarge`].
    pub async fn send<T: Serialize + ?Sized>(
        &self,
        destination: &str,
        message: &T,
        topic: Option<&str>,
        idempotency_key: Option<&str>,
    ) -> Result<bool> {
        let m = Outgoing {
            destination: destination.to_owned(),
            message: self.opts.encode("message", message)?,
            topic: topic.map(str::to_owned),
            idempotency_key: idempotency_key.map(str::to_owned),
        };
        Ok(self.send_bulk(std::slice::from_ref(&m)).await? == 1)
    }

    /// Sends many messages in one statement; returns how many were newly stored.
    ///
    /// 1 round trip, 1 commit.
    ///
    /// # Errors
    /// [`Error::NoSuchWorkflow`] (nothing is stored), [`Error::TooLarge`].
    pub async fn send_bulk(&self, msgs: &[Outgoing]) -> Result<u64> {
        self.opts.check_batch(msgs.len())?;
        for m in msgs {
            self.opts.check_size("message", &m.message)?;
        }
        // A receive waiting here for this message takes it in this send's commit.
        let claim = self.waiters.claim_for(msgs).await;
        let mut conn = self.connection().await?;
        if let Some(claim) = claim {
            if let Some(sent) =
                crate::handoff::send_claimed(&mut conn, None, &msgs[0], claim).await?
            {
                conn.keep();
                return Ok(u64::from(sent));
            }
        }
        let sent = sql::send(&mut conn, msgs).await?;
        conn.keep();
        self.waiters.wake_mailboxes(msgs);
        Ok(sent)
    }

    /// The latest value of a workflow's event, waiting up to `timeout` for it to be set;
    /// `None` when it is not set by then.
    ///
    /// # Errors
    /// [`Error::Payload`] when the value does not decode to `T`.
    pub async fn get_event<T: DeserializeOwned>(
        &self,
        workflow_id: &str,
        key: &str,
        timeout: Duration,
    ) -> Result<Option<T>> {
        let text = self.get_event_text(workflow_id, key, timeout).await?;
        text.map(|t| decode(&t)).transpose()
    }

    /// As [`Client::get_event`], returning the JSON text.
    ///
    /// # Errors
    /// Database errors.
    pub async fn get_event_text(
        &self,
        workflow_id: &str,
        key: &str,
        timeout: Duration,
    ) -> Result<Option<String>> {
        let deadline = Instant::now() + timeout;
        self.waiters
            .wait_for(
                Channel::Events,
                format!("{workflow_id}::{key}"),
                Some(deadline),
                || async move {
                    let mut conn = self.connection().await?;
                    let v = sql::get_event(&mut conn, workflow_id, key).await?;
                    conn.keep();
                    Ok(v)
                },
            )
            .await
    }

    /// Every event of a workflow, latest values by key.
    ///
    /// # Errors
    /// Database errors.
    pub async fn get_all_events(&self, workflow_id: &str) -> Result<Vec<(String, String)>> {
        let mut conn = self.src.pool.acquire().await?;
        sql::get_all_events(&mut conn, workflow_id).await
    }

    /// A reader of stream `key` of a workflow from `offset`.
    pub fn read_stream(&self, workflow_id: &str, key: &str, offset: i32) -> StreamReader {
        StreamReader {
            client: self.clone(),
            workflow_id: workflow_id.to_owned(),
            key: key.to_owned(),
            offset,
            buffered: Default::default(),
            done: false,
        }
    }

    /// Publishes payloads to `topic` in order; returns the first and last sequence numbers.
    ///
    /// 1 round trip, 1 commit.
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::TooLarge`].
    pub async fn publish<T: Serialize>(&self, topic: &str, payloads: &[T]) -> Result<(i64, i64)> {
        self.opts.check_batch(payloads.len())?;
        let texts = payloads
            .iter()
            .map(|p| self.opts.encode("payload", p))
            .collect::<Result<Vec<_>>>()?;
        self.publish_text(topic, &texts).await
    }

    /// As [`Client::publish`], with payloads already JSON text.
    ///
    /// # Errors
    /// As [`Client::publish`].
    pub async fn publish_text(&self, topic: &str, payloads: &[String]) -> Result<(i64, i64)> {
        self.opts.check_batch(payloads.len())?;
        for p in payloads {
            self.opts.check_size("payload", p)?;
        }
        let mut conn = self.connection().await?;
        let seqs = sql::publish(&mut conn, topic, payloads, None).await?;
        conn.keep();
        Ok(seqs)
    }

    /// Subscribes `subscriber` to `topic`; an existing subscription keeps its place. Returns
    /// the cursor.
    ///
    /// # Errors
    /// [`Error::InvalidName`].
    pub async fn subscribe(&self, topic: &str, subscriber: &str, start: Start) -> Result<i64> {
        let mut conn = self.src.pool.acquire().await?;
        sql::subscribe(&mut conn, topic, subscriber, start).await
    }

    /// Ends a subscription; returns whether there was one.
    ///
    /// # Errors
    /// Database errors.
    pub async fn unsubscribe(&self, topic: &str, subscriber: &str) -> Result<bool> {
        let mut conn = self.src.pool.acquire().await?;
        sql::unsubscribe(&mut conn, topic, subscriber).await
    }

    /// Consumes up to `topic_batch_max` messages of a subscription, waiting up to `timeout`
    /// for the first; empty when none came. Each message is taken once (the cursor commits
    /// with the read); a caller that must not lose one on a crash consumes with
    /// [`sql::consume`] inside the transaction that handles it, or from a workflow. Consumes
    /// of this client that arrive while both of its consume statements are busy share the
    /// next one and its commit ([`sql::consume_many`]).
    ///
    /// # Errors
    /// [`Error::NotSubscribed`].
    pub async fn consume(
        &self,
        topic: &str,
        subscriber: &str,
        timeout: Duration,
    ) -> Result<Vec<Delivered>> {
        self.wait_topic(topic, TopicRead::Consume(subscriber), timeout)
            .await
    }

    /// A workflow's probe of its subscription ([`sql::consume_recorded`], up to
    /// `topic_batch_max` messages, recorded as `op`): `None` when the caller does not own the
    /// workflow. Probes of several workflows that arrive while both of this client's statements
    /// for them are busy share the next one and its commit ([`sql::consume_recorded_many`]);
    /// the final probe (`last`, which records an empty result too) runs alone.
    ///
    /// # Errors
    /// [`Error::NotSubscribed`].
    pub async fn consume_recorded(
        &self,
        op: &sql::Op<'_>,
        topic: &str,
        subscriber: &str,
        last: bool,
    ) -> Result<Option<Vec<Delivered>>> {
        let max = self.opts.topic_batch_max;
        if last {
            let mut conn = self.connection().await?;
            let v = sql::consume_recorded(&mut conn, op, topic, subscriber, max, true).await?;
            conn.keep();
            return Ok(v);
        }
        let request = WorkflowConsume::of(op, topic, subscriber);
        self.consumes.recorded.ask(&self.src, max, request).await
    }

    /// Retained messages of `topic` after sequence number `after`, waiting up to `timeout` for
    /// the first; no subscription needed, nothing is consumed.
    ///
    /// # Errors
    /// Database errors.
    pub async fn read_topic(
        &self,
        topic: &str,
        after: i64,
        timeout: Duration,
    ) -> Result<Vec<Delivered>> {
        self.wait_topic(topic, TopicRead::After(after), timeout)
            .await
    }

    /// Reads a batch of `topic` as `read` says, waiting up to `timeout` for the first message.
    async fn wait_topic(
        &self,
        topic: &str,
        read: TopicRead<'_>,
        timeout: Duration,
    ) -> Result<Vec<Delivered>> {
        let deadline = Instant::now() + timeout;
        let max = self.opts.topic_batch_max;
        let got = self
            .waiters
            .wait_for(
                Channel::Topics,
                topic.to_owned(),
                Some(deadline),
                || async move {
                    let v = match read {
                        TopicRead::Consume(subscriber) => {
                            let sub = (topic.to_owned(), subscriber.to_owned());
                            self.consumes.plain.ask(&self.src, max, sub).await?
                        }
                        TopicRead::After(after) => {
                            let mut conn = self.connection().await?;
                            let v = sql::read_topic(&mut conn, topic, after, max).await?;
                            conn.keep();
                            v
                        }
                    };
                    Ok((!v.is_empty()).then_some(v))
                },
            )
            .await?;
        Ok(got.unwrap_or_default())
    }

    /// Sets a topic's retention.
    ///
    /// # Errors
    /// [`Error::InvalidName`], or a limit that is not positive.
    pub async fn set_retention(
        &self,
        topic: &str,
        max_age_ms: Option<i64>,
        max_count: Option<i64>,
    ) -> Result<()> {
        let mut conn = self.src.pool.acquire().await?;
        sql::set_retention(&mut conn, topic, max_age_ms, max_count).await
    }

    /// Every topic with its head, stored messages, subscribers and retention, by name.
    ///
    /// # Errors
    /// Database errors.
    pub async fn topics(&self) -> Result<Vec<sql::Topic>> {
        let mut conn = self.src.pool.acquire().await?;
        sql::topics(&mut conn).await
    }

    /// Sweeps messages beyond retention every `sweep_interval_ms` until `stop` fires.
    pub async fn run_sweeper(self, stop: dbos_kernel::CancellationToken) {
        let pause = Duration::from_millis(self.opts.sweep_interval_ms.max(1));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
            let swept = match self.src.pool.acquire().await {
                Ok(mut conn) => sql::sweep(&mut conn).await,
                Err(e) => Err(e.into()),
            };
            match swept {
                Ok(0) => {}
                Ok(n) => tracing::debug!(deleted = n, "swept topic messages beyond retention"),
                Err(e) => tracing::warn!(error = %e, "topic retention sweep failed"),
            }
        }
    }
}

impl StreamReader {
    /// The next value, waiting up to `timeout` for it; `Ok(None)` at the end of the stream (it
    /// was closed, or its writer ended without closing it) or when `timeout` passes first
    /// (see [`StreamReader::is_done`]).
    ///
    /// # Errors
    /// [`Error::NoSuchWorkflow`]; [`Error::Payload`] when the value does not decode to `T`.
    pub async fn next<T: DeserializeOwned>(&mut self, timeout: Duration) -> Result<Option<T>> {
        self.next_text(timeout)
            .await?
            .map(|t| decode(&t))
            .transpose()
    }

    /// As [`StreamReader::next`], returning the JSON text.
    ///
    /// # Errors
    /// [`Error::NoSuchWorkflow`].
    pub async fn next_text(&mut self, timeout: Duration) -> Result<Option<String>> {
        if let Some(v) = self.buffered.pop_front() {
            return Ok(Some(v));
        }
        if self.done {
            return Ok(None);
        }
        let deadline = Instant::now() + timeout;
        let c = &self.client;
        let (wf, key, offset) = (&self.workflow_id, &self.key, self.offset);
        // A writer that ends without closing the stream (cancelled, failed, or done) writes
        // nothing to it: its cancel and its outcome wake the reader too.
        let mut ended = (
            c.waiters.watch(Channel::Cancel, wf.clone()),
            c.waiters.watch(Channel::Outcome, wf.clone()),
        );
        let got = loop {
            let wait = c.waiters.wait_for(
                Channel::Streams,
                format!("{wf}::{key}"),
                Some(deadline),
                || async move {
                    let mut conn = c.connection().await?;
                    let chunk =
                        sql::read_stream(&mut conn, wf, key, offset, c.opts.stream_batch_max)
                            .await?
                            .ok_or_else(|| Error::NoSuchWorkflow(wf.clone()))?;
                    conn.keep();
                    if !chunk.values.is_empty() || sql::is_terminal(&chunk.status) {
                        Ok(Some(chunk.values))
                    } else {
                        Ok(None)
                    }
                },
            );
            tokio::select! {
                got = wait => break got?,
                () = ended.0.changed() => {}
                () = ended.1.changed() => {}
            }
        };
        let Some(values) = got else {
            return Ok(None);
        };
        if values.is_empty() {
            // The writer has ended and nothing more was written.
            self.done = true;
            return Ok(None);
        }
        for v in values {
            if v == sql::STREAM_CLOSED {
                self.done = true;
                break;
            }
            self.offset += 1;
            self.buffered.push_back(v);
        }
        Ok(self.buffered.pop_front())
    }

    /// Passes over the next value without reading it (a replayed read already returned it).
    pub fn skip_one(&mut self) {
        if self.buffered.pop_front().is_none() {
            self.offset += 1;
        }
    }

    /// Whether the stream has ended (closed, or its writer finished).
    pub fn is_done(&self) -> bool {
        self.done && self.buffered.is_empty()
    }

    /// The offset of the next value to be returned.
    pub fn offset(&self) -> i32 {
        self.offset - self.buffered.len() as i32
    }
}

/// Requests in one combined consume statement at most.
const CONSUMES_PER_STATEMENT: usize = 64;
/// Combined consume statements in flight at once: while one commits, the next gathers.
const CONSUMES_IN_FLIGHT: usize = 2;

/// The consumes of one client, combined: those that arrive while [`CONSUMES_IN_FLIGHT`]
/// statements are in flight go together in the next, one commit for all. A broadcast to many
/// subscribers of one node otherwise pays a commit per subscriber per message batch. Plain
/// consumes ([`Subscription`], [`sql::consume_many`]) and workflows' ([`WorkflowConsume`],
/// [`sql::consume_recorded_many`]) each have their own.
#[derive(Debug, Default)]
struct Consumes {
    plain: Combiner<Subscription>,
    recorded: Combiner<WorkflowConsume>,
}

/// A kind of consume a [`Combiner`] gathers into statements.
trait Combinable: Send + Sync + Sized + 'static {
    /// What one request gets.
    type Answer: Send + 'static;

    /// Whether the two may not share a statement (they would take the same messages, or lock
    /// the same row twice).
    fn clashes(&self, other: &Self) -> bool;

    /// The combined statement: one answer per request, in order.
    fn many<'a>(
        conn: &'a mut PgConnection,
        batch: &'a [Self],
        max: i64,
    ) -> BoxFuture<'a, Result<Vec<Result<Self::Answer>>>>;

    /// One request's statement alone.
    fn one<'a>(
        conn: &'a mut PgConnection,
        request: &'a Self,
        max: i64,
    ) -> BoxFuture<'a, Result<Self::Answer>>;
}

/// A plain subscriber's consume: `(topic, subscriber)`.
type Subscription = (String, String);

impl Combinable for Subscription {
    type Answer = Vec<Delivered>;

    fn clashes(&self, other: &Self) -> bool {
        self == other
    }

    fn many<'a>(
        conn: &'a mut PgConnection,
        batch: &'a [Self],
        max: i64,
    ) -> BoxFuture<'a, Result<Vec<Result<Self::Answer>>>> {
        Box::pin(sql::consume_many(conn, batch, max))
    }

    fn one<'a>(
        conn: &'a mut PgConnection,
        (topic, subscriber): &'a Self,
        max: i64,
    ) -> BoxFuture<'a, Result<Self::Answer>> {
        Box::pin(sql::consume(conn, topic, subscriber, max))
    }
}

/// A workflow's consume probe, recorded as its operation ([`sql::consume_recorded`]).
#[derive(Debug)]
struct WorkflowConsume {
    workflow_id: String,
    owner_xid: String,
    function_id: i32,
    name: String,
    started_at_ms: i64,
    topic: String,
    subscriber: String,
}

impl WorkflowConsume {
    fn of(op: &sql::Op<'_>, topic: &str, subscriber: &str) -> WorkflowConsume {
        WorkflowConsume {
            workflow_id: op.workflow_id.to_owned(),
            owner_xid: op.owner_xid.to_owned(),
            function_id: op.function_id,
            name: op.name.to_owned(),
            started_at_ms: op.started_at_ms,
            topic: topic.to_owned(),
            subscriber: subscriber.to_owned(),
        }
    }

    fn borrowed(&self) -> sql::RecordedConsume<'_> {
        sql::RecordedConsume {
            op: sql::Op {
                workflow_id: &self.workflow_id,
                owner_xid: &self.owner_xid,
                function_id: self.function_id,
                name: &self.name,
                started_at_ms: self.started_at_ms,
            },
            topic: &self.topic,
            subscriber: &self.subscriber,
        }
    }
}

impl Combinable for WorkflowConsume {
    type Answer = Option<Vec<Delivered>>;

    fn clashes(&self, other: &Self) -> bool {
        self.workflow_id == other.workflow_id
    }

    fn many<'a>(
        conn: &'a mut PgConnection,
        batch: &'a [Self],
        max: i64,
    ) -> BoxFuture<'a, Result<Vec<Result<Self::Answer>>>> {
        Box::pin(async move {
            let reqs: Vec<_> = batch.iter().map(WorkflowConsume::borrowed).collect();
            sql::consume_recorded_many(conn, &reqs, max).await
        })
    }

    fn one<'a>(
        conn: &'a mut PgConnection,
        request: &'a Self,
        max: i64,
    ) -> BoxFuture<'a, Result<Self::Answer>> {
        Box::pin(async move {
            let r = request.borrowed();
            sql::consume_recorded(conn, &r.op, r.topic, r.subscriber, max, false).await
        })
    }
}

/// One request waiting for its statement.
#[derive(Debug)]
struct Request<R: Combinable> {
    request: R,
    reply: oneshot::Sender<Result<R::Answer>>,
}

/// Gathers requests of one kind into combined statements, started on the first request.
#[derive(Debug)]
struct Combiner<R: Combinable>(OnceLock<mpsc::UnboundedSender<Request<R>>>);

impl<R: Combinable> Default for Combiner<R> {
    fn default() -> Self {
        Combiner(OnceLock::new())
    }
}

impl<R: Combinable> Combiner<R> {
    /// `request`'s answer, from the next combined statement (up to `max` messages each).
    async fn ask(&self, src: &Source, max: i64, request: R) -> Result<R::Answer> {
        let requests = self.0.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(combine(rx, src.clone(), max));
            tx
        });
        let (reply, answer) = oneshot::channel();
        // The combiner ends only with its runtime: then there is no answer to wait for.
        let gone = || Error::Db(sqlx::Error::WorkerCrashed);
        requests
            .send(Request { request, reply })
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

/// Gathers requests into statements, at most [`CONSUMES_IN_FLIGHT`] at once, until every
/// sender is gone.
async fn combine<R: Combinable>(
    mut requests: mpsc::UnboundedReceiver<Request<R>>,
    src: Source,
    max: i64,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(CONSUMES_IN_FLIGHT));
    let mut waiting = VecDeque::new();
    loop {
        if waiting.is_empty() {
            match requests.recv().await {
                Some(r) => waiting.push_back(r),
                None => return,
            }
        }
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        while let Ok(r) = requests.try_recv() {
            waiting.push_back(r);
        }
        let batch = take(&mut waiting);
        if batch.is_empty() {
            continue;
        }
        let src = src.clone();
        tokio::spawn(async move {
            answer(&src, batch, max).await;
            drop(slot);
        });
    }
}

/// The next statement's requests from `waiting`: none that clashes with one taken (it waits
/// for the next statement), none whose caller has gone (nothing is done for it).
fn take<R: Combinable>(waiting: &mut VecDeque<Request<R>>) -> Vec<Request<R>> {
    let mut batch: Vec<Request<R>> = Vec::new();
    let mut later = VecDeque::new();
    for r in waiting.drain(..) {
        if r.reply.is_closed() {
            continue;
        }
        let clash = batch.iter().any(|b| b.request.clashes(&r.request));
        if clash || batch.len() == CONSUMES_PER_STATEMENT {
            later.push_back(r);
        } else {
            batch.push(r);
        }
    }
    *waiting = later;
    batch
}

/// Runs one combined statement and answers its requests. A lone request runs alone; when the
/// combined statement fails, each request runs alone (all at once), so one that cannot be
/// served fails only itself. The failed statement may have committed unseen (a backend ended
/// at its commit): a workflow's consume, run again at its position, then answers the record
/// that commit left and takes nothing more ([`sql::consume_recorded`]); a plain consume outside
/// a transaction has no record, and what that commit took is lost to it, as with any consume
/// of its kind whose commit goes unseen.
async fn answer<R: Combinable>(src: &Source, batch: Vec<Request<R>>, max: i64) {
    let (requests, replies): (Vec<R>, Vec<_>) =
        batch.into_iter().map(|r| (r.request, r.reply)).unzip();
    if requests.len() > 1 {
        let combined = async {
            let mut conn = src.connection().await?;
            let answers = R::many(&mut conn, &requests, max).await?;
            conn.keep();
            Ok::<_, Error>(answers)
        }
        .await;
        match combined {
            Ok(answers) => {
                for (reply, a) in replies.into_iter().zip(answers) {
                    let _ = reply.send(a);
                }
                return;
            }
            Err(e) => tracing::debug!(error = %e, requests = requests.len(),
                "combined consume failed; each request runs alone"),
        }
    }
    // At once, so that requests that cannot reach the database each wait their own timeout
    // side by side rather than one after another.
    futures_util::future::join_all(requests.iter().zip(replies).map(|(r, reply)| async move {
        let alone = async {
            let mut conn = src.connection().await?;
            let v = R::one(&mut conn, r, max).await?;
            conn.keep();
            Ok(v)
        }
        .await;
        let _ = reply.send(alone);
    }))
    .await;
}

/// A connection for one statement of a messaging operation ([`Client::connection`]).
pub struct Conn<'a>(Held<'a>);

enum Held<'a> {
    Pooled(sqlx::pool::PoolConnection<sqlx::Postgres>),
    Kept(KeptConn<'a>),
}

impl Conn<'_> {
    /// After a statement that succeeded: a kept connection serves the next statement (a pooled
    /// one goes back to its pool, as when dropped).
    pub fn keep(self) {
        if let Held::Kept(c) = self.0 {
            c.keep();
        }
    }
}

impl std::ops::Deref for Conn<'_> {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        match &self.0 {
            Held::Pooled(c) => c,
            Held::Kept(c) => c,
        }
    }
}

impl std::ops::DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        match &mut self.0 {
            Held::Pooled(c) => c,
            Held::Kept(c) => c,
        }
    }
}
