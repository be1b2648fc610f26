//! Messaging inside workflows: send/recv, events, streams and pub/sub topics, each recorded
//! in the same statement as its effect (see `dbos_msg::sql`), so a replay neither repeats an
//! effect nor takes a message twice.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dbos_msg::sql::{self, Op, Outgoing, Received};
use dbos_msg::{Channel, Recipient, Start, Taken, Woke};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::codec;
use super::ctx::{Context, Mode};
use super::error::Error;

/// How long a wait lasts before its timer is recorded. A wait that ends sooner (most do: the
/// message or event was on its way) records no timer, which saves a commit per wait; the
/// price is that an execution that crashes within this time of starting to wait waits its
/// whole timeout again when recovered, instead of what was left of it.
const TIMER_RECORD_AFTER: Duration = Duration::from_millis(100);

/// A message taken from a pub/sub topic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopicMessage<T> {
    /// Its sequence number in the topic.
    pub seq: i64,
    /// Its payload.
    pub payload: T,
}

/// How a stream read inside a workflow is recorded.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum StreamRead {
    Value(serde_json::Value),
    End,
    Timeout,
}

/// A stream of another (or this) workflow, read from inside a workflow; every read is
/// recorded, so a replay sees the same values.
#[derive(Debug)]
pub struct WfStream {
    ctx: Context,
    /// The live reader; none in a replay.
    reader: Option<dbos_msg::StreamReader>,
    ended: bool,
}

impl Context {
    fn op<'a>(&'a self, function_id: i32, name: &'a str, started_at_ms: i64) -> Op<'a> {
        Op {
            workflow_id: &self.inner.workflow_id,
            owner_xid: &self.inner.owner_xid,
            function_id,
            name,
            started_at_ms,
        }
    }

    fn msg(&self) -> Result<&dbos_msg::Client, Error> {
        Ok(self.svc()?.messages())
    }

    /// Keeps mailbox `key` of this workflow registered until the execution ends, so that
    /// notifications for it that come between two receives are counted.
    fn keep_mailbox(&self, key: &str) {
        if let Mode::Live { svc, mailboxes, .. } = &self.inner.mode {
            // Most workflows receive on one or two topics: a short list, not a map.
            let mut kept = mailboxes.lock();
            if !kept.iter().any(|w| w.key() == key) {
                kept.push(
                    svc.messages()
                        .waiters()
                        .watch(Channel::Notifications, key.to_owned()),
                );
            }
        }
    }

    /// Wakes this node's waiters of what this workflow has just committed (see
    /// [`dbos_msg::Waiters::wake`]).
    fn wake_here(&self, wake: impl FnOnce(&dbos_msg::Waiters)) {
        if let Ok(m) = self.msg() {
            wake(m.waiters());
        }
    }

    /// [`Context::wake_here`] for this workflow's event or stream `key` on `chan`.
    fn wake_own(&self, chan: Channel, key: &str) {
        self.wake_here(|w| w.wake(chan, format!("{}::{key}", self.inner.workflow_id)));
    }

    /// Limits of messaging, in a replay as well.
    fn msg_options(&self) -> &dbos_msg::Options {
        match &self.inner.mode {
            Mode::Live { svc, .. } => svc.messages().options(),
            Mode::Replay(log) => &log.msg_options,
        }
    }

    /// The function IDs of a waiting operation named `name` and of its timer, or (as `Err`)
    /// the value recorded for it when replaying.
    fn wait_ids<T: DeserializeOwned>(&self, name: &str) -> Result<Result<(i32, i32), T>, Error> {
        let fid = self.next_fid();
        let timer_fid = self.next_fid();
        match self.replay(fid, name)? {
            Some(r) => Ok(Err(self.replay_value(&r)?)),
            None => Ok(Ok((fid, timer_fid))),
        }
    }

    /// After a cancellation notice: the error to stop with, unless this execution still owns
    /// the workflow (the notice was for an earlier execution).
    pub(super) async fn stop_if_cancelled(&self) -> Result<(), Error> {
        let svc = self.svc()?;
        if svc
            .still_owner(&self.inner.workflow_id, &self.inner.owner_xid)
            .await?
        {
            Ok(())
        } else {
            Err(self.not_owner().await)
        }
    }

    async fn not_owner(&self) -> Error {
        match self.svc() {
            Ok(svc) => svc.why_not_owner(&self.inner.workflow_id).await,
            Err(e) => e,
        }
    }

    /// Sends `message` to workflow `destination`'s mailbox `topic` (`None`: the default one),
    /// exactly once: the message and this workflow's record of sending it commit together.
    ///
    /// 1 round trip, 1 commit; none on replay.
    ///
    /// # Errors
    /// [`Error::NotFound`] for a destination that does not exist (nothing is sent),
    /// [`Error::Invalid`] for a message over `message_bytes_max`, [`Error::Cancelled`].
    pub async fn send<T: Serialize + ?Sized>(
        &self,
        destination: &str,
        message: &T,
        topic: Option<&str>,
    ) -> Result<(), Error> {
        let m = Outgoing {
            destination: destination.to_owned(),
            message: self.msg_options().encode("message", message)?,
            topic: topic.map(str::to_owned),
            idempotency_key: None,
        };
        self.send_recorded("DBOS.send", &[m]).await
    }

    /// Sends many messages in one statement, exactly once as a whole.
    ///
    /// 1 round trip, 1 commit; none on replay.
    ///
    /// # Errors
    /// As [`Context::send`]; a missing destination stores none of them.
    pub async fn send_bulk(&self, msgs: &[Outgoing]) -> Result<(), Error> {
        let opts = self.msg_options();
        opts.check_batch(msgs.len())?;
        for m in msgs {
            opts.check_size("message", &m.message)?;
        }
        self.send_recorded("DBOS.send_bulk", msgs).await
    }

    async fn send_recorded(&self, name: &str, msgs: &[Outgoing]) -> Result<(), Error> {
        let fid = self.next_fid();
        if self.replay(fid, name)?.is_some() {
            return Ok(());
        }
        self.check_deadline().await?;
        let op = self.op(fid, name, self.clock_ms());
        // A receive waiting here for this message takes it in this send's commit.
        let claim = self.msg()?.waiters().claim_for(msgs).await;
        let mut conn = self.msg()?.connection().await?;
        if let Some(claim) = claim {
            if let Some(recorded) =
                dbos_msg::send_claimed(&mut conn, Some(&op), &msgs[0], claim).await?
            {
                conn.keep();
                return if recorded {
                    Ok(())
                } else {
                    Err(self.not_owner().await)
                };
            }
        }
        let sent = sql::send_recorded(&mut conn, &op, msgs).await?;
        conn.keep();
        if sent {
            self.wake_here(|w| w.wake_mailboxes(msgs));
            Ok(())
        } else {
            Err(self.not_owner().await)
        }
    }

    /// Takes the oldest message of this workflow's mailbox `topic`, waiting up to `timeout`;
    /// only a workflow has a mailbox, so there is no `recv` outside one:
    ///
    /// ```compile_fail
    /// # async fn outside(client: &dbos_msg::Client) {
    /// let _ = client.recv::<String>(None, std::time::Duration::from_secs(1)).await;
    /// # }
    /// ```
    ///
    /// `None` when none came. The message is consumed and recorded in one statement; a
    /// recovered workflow gets the same message back, and waits only for what is left of
    /// `timeout` once the wait had lasted [`TIMER_RECORD_AFTER`]. Uses two function IDs
    /// (`DBOS.recv` and its `DBOS.sleep` timer), as DBOS does.
    /// No connection is held while waiting.
    ///
    /// # Errors
    /// [`Error::Encode`] when the message does not decode to `T`, [`Error::Cancelled`].
    pub async fn recv<T: DeserializeOwned>(
        &self,
        topic: Option<&str>,
        timeout: Duration,
    ) -> Result<Option<T>, Error> {
        let name = "DBOS.recv";
        let (fid, timer_fid) = match self.wait_ids(name)? {
            Ok(ids) => ids,
            Err(replayed) => return Ok(replayed),
        };
        self.check_deadline().await?;
        let op = self.op(fid, name, self.clock_ms());
        let msg = self.msg()?;
        let key = format!(
            "{}::{}",
            self.inner.workflow_id,
            topic.unwrap_or(sql::NULL_TOPIC)
        );
        // A send from this node may take the message to this receive in its own commit
        // (`dbos_msg::Offer`): this receive then writes nothing.
        let offer = self.msg()?.waiters().offer(
            key.clone(),
            Recipient {
                workflow_id: self.inner.workflow_id.clone(),
                owner_xid: self.inner.owner_xid.clone(),
                function_id: fid,
                name: name.to_owned(),
                started_at_ms: op.started_at_ms,
            },
        );
        let offer = offer.as_ref();
        self.keep_mailbox(&key);
        let mailbox = key.as_str();
        let waiters = msg.waiters();
        let got = self
            .wait_recorded(
                Channel::Notifications,
                key.clone(),
                timer_fid,
                timeout,
                |last| {
                    let op = &op;
                    async move {
                        if let Some(o) = offer {
                            match o.take().await {
                                Taken::Delivered(m) => return Ok(Some(Received::Message(m))),
                                Taken::Unknown => {
                                    let mut conn = msg.connection().await?;
                                    let r =
                                        dbos_store::operations::recorded_by_owner(&mut conn, op)
                                            .await?;
                                    conn.keep();
                                    if let Some(out) = r.and_then(|r| r.output) {
                                        return Ok(Some(Received::Message(out)));
                                    }
                                }
                                Taken::Probe => {}
                            }
                        }
                        // Found empty since, by a look of this receive's or by the send that
                        // handed it its last message: nothing to look for until a notification.
                        let mark = waiters.mark(mailbox);
                        if !last && mark.known_empty() {
                            offer.map(dbos_msg::Offer::reopen);
                            return Ok(None);
                        }
                        let mut conn = msg.connection().await?;
                        let got = match sql::recv_recorded(&mut conn, op, topic, last).await? {
                            Received::Empty if !last => None,
                            other => Some(other),
                        };
                        conn.keep();
                        match &got {
                            None | Some(Received::Empty) => waiters.found_empty(mailbox, mark, 0),
                            Some(_) => waiters.forget(mailbox),
                        }
                        if got.is_none() {
                            offer.map(dbos_msg::Offer::reopen);
                        }
                        Ok(got)
                    }
                },
            )
            .await?;
        match got {
            Received::Message(m) => Ok(codec::decode(&m)?),
            Received::Empty => Ok(None),
            Received::NotOwner => Err(self.not_owner().await),
        }
    }

    /// Waits the way `recv`, `get_event` and `next_messages` do: registers for `key` on `chan`,
    /// probes; when the first probe finds nothing, starts the timeout timer at `timer_fid`
    /// (recorded while waiting, so a recovered wait only waits for what is left) and probes
    /// again on every wake-up, the last time with `last` set, which must give a value.
    async fn wait_recorded<T, F, Fut>(
        &self,
        chan: Channel,
        key: String,
        timer_fid: i32,
        timeout: Duration,
        mut probe: F,
    ) -> Result<T, Error>
    where
        F: FnMut(bool) -> Fut,
        Fut: std::future::Future<Output = Result<Option<T>, Error>>,
    {
        let waiters = self.msg()?.waiters();
        let mut waiter = waiters
            .register(chan, key.clone())
            .also(Channel::Cancel, self.inner.workflow_id.clone());
        // Something already there is taken at once: 1 round trip, no timer recorded (its
        // function ID stays reserved, so numbering is the same either way).
        // Each probe is boxed: held inline, its queries would size this wait's future for as
        // long as it waits (see `Service::still_owner`).
        if let Some(v) = Box::pin(probe(false)).await? {
            return Ok(v);
        }
        let (end_ms, record) = self.plan_timer(timer_fid, timeout).await?;
        let deadline = self.instant_at(end_ms);
        // The workflow's own deadline cuts the wait short (and then cancels it).
        let wf_deadline = self.inner.deadline_ms.map(|d| self.instant_at(d));
        // The timer is recorded only once the wait has lasted TIMER_RECORD_AFTER: most waits
        // end sooner, and then cost no commit for it.
        let recording = AtomicBool::new(false);
        let record = async {
            match record {
                Some(c) => {
                    tokio::time::sleep(TIMER_RECORD_AFTER).await;
                    recording.store(true, Ordering::Relaxed);
                    self.record(c).await
                }
                None => std::future::pending().await,
            }
        };
        let wait = async {
            loop {
                let until = wf_deadline.map_or(deadline, |d| d.min(deadline));
                match waiter.wait(Some(until)).await {
                    Woke::Key(1) => self.stop_if_cancelled().await?,
                    // The periodic look at the table stands for notifications that may have
                    // gone missing: it does not trust what was known of the mailbox.
                    Woke::Timer if chan == Channel::Notifications => waiters.forget(&key),
                    _ => {}
                }
                if wf_deadline.is_some_and(|d| Instant::now() >= d) {
                    self.check_deadline().await?;
                }
                let last = Instant::now() >= deadline;
                if let Some(v) = Box::pin(probe(last)).await? {
                    return Ok(v);
                }
                if last {
                    return Err(Error::Invalid("a final probe must give a value".to_owned()));
                }
            }
        };
        tokio::pin!(record, wait);
        // Nothing was there: the wait gives the node slot back until it ends.
        self.idle(Box::pin(async {
            tokio::select! {
                // A refused timer record (cancelled, or owned elsewhere) ends the wait at once.
                recorded = &mut record => {
                    recorded?;
                    wait.await
                }
                got = &mut wait => {
                    let got = got?;
                    // A record under way is seen to its end; one not begun is not needed.
                    if recording.load(Ordering::Relaxed) {
                        record.await?;
                    }
                    Ok(got)
                }
            }
        }))
        .await
    }

    /// Sets this workflow's event `key` to `value` (the latest value wins; every value is kept
    /// in the event history), recorded with it in one statement. Waiting readers wake at commit.
    ///
    /// 1 round trip, 1 commit; none on replay.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a value over `message_bytes_max`, [`Error::Cancelled`].
    pub async fn set_event<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<(), Error> {
        let name = "DBOS.setEvent";
        let fid = self.next_fid();
        if self.replay(fid, name)?.is_some() {
            return Ok(());
        }
        self.check_deadline().await?;
        let text = self.msg_options().encode("event value", value)?;
        let mut conn = self.msg()?.connection().await?;
        let set =
            sql::set_event_recorded(&mut conn, &self.op(fid, name, self.clock_ms()), key, &text)
                .await?;
        conn.keep();
        if set {
            self.wake_own(Channel::Events, key);
            Ok(())
        } else {
            Err(self.not_owner().await)
        }
    }

    /// The value of workflow `workflow_id`'s event `key`, waiting up to `timeout` for it to be
    /// set; `None` when it is not. Recorded, so a replay sees the same value. Uses two function
    /// IDs (`DBOS.getEvent` and its timer).
    ///
    /// # Errors
    /// [`Error::Encode`] when the value does not decode to `T`, [`Error::Cancelled`].
    pub async fn get_event<T: DeserializeOwned>(
        &self,
        workflow_id: &str,
        key: &str,
        timeout: Duration,
    ) -> Result<Option<T>, Error> {
        let name = "DBOS.getEvent";
        let (fid, timer_fid) = match self.wait_ids(name)? {
            Ok(ids) => ids,
            Err(replayed) => return Ok(replayed),
        };
        self.check_deadline().await?;
        let started = self.clock_ms();
        let msg = self.msg()?;
        let text: Option<String> = self
            .wait_recorded(
                Channel::Events,
                format!("{workflow_id}::{key}"),
                timer_fid,
                timeout,
                |last| async move {
                    let mut conn = msg.connection().await?;
                    let v = sql::get_event(&mut conn, workflow_id, key).await?;
                    conn.keep();
                    Ok(if v.is_some() || last { Some(v) } else { None })
                },
            )
            .await?;
        let out = text.clone().unwrap_or_else(|| "null".to_owned());
        self.record(self.checkpoint(fid, name, &Ok(out), started, self.clock_ms(), None))
            .await?;
        match text {
            Some(t) => Ok(Some(codec::decode(&t)?)),
            None => Ok(None),
        }
    }

    /// Appends `value` to this workflow's stream `key`, recorded with it in one statement.
    ///
    /// 1 round trip, 1 commit; none on replay.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a value over `message_bytes_max`, [`Error::Cancelled`].
    pub async fn write_stream<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<(), Error> {
        let text = self.msg_options().encode("stream value", value)?;
        self.stream_recorded("DBOS.writeStream", key, &text).await
    }

    /// Closes this workflow's stream `key`: readers stop after its last value.
    ///
    /// # Errors
    /// [`Error::Cancelled`].
    pub async fn close_stream(&self, key: &str) -> Result<(), Error> {
        self.stream_recorded("DBOS.closeStream", key, sql::STREAM_CLOSED)
            .await
    }

    async fn stream_recorded(&self, name: &str, key: &str, text: &str) -> Result<(), Error> {
        let fid = self.next_fid();
        if self.replay(fid, name)?.is_some() {
            return Ok(());
        }
        self.check_deadline().await?;
        let mut conn = self.msg()?.connection().await?;
        let written =
            sql::write_stream_recorded(&mut conn, &self.op(fid, name, self.clock_ms()), key, text)
                .await?;
        conn.keep();
        match written {
            Some(_) => {
                self.wake_own(Channel::Streams, key);
                Ok(())
            }
            None => Err(self.not_owner().await),
        }
    }

    /// Appends `value` to this workflow's stream `key` from inside a step (where operations
    /// cannot be recorded): the value is written at once, owner-checked, but a step that runs
    /// again after a crash writes its values again. `step_function_id` is stored with it.
    ///
    /// 1 round trip, 1 commit.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a value over `message_bytes_max`, [`Error::Cancelled`].
    pub async fn write_stream_from_step<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<(), Error> {
        let text = self.msg_options().encode("stream value", value)?;
        let fid = self
            .inner
            .next_fid
            .load(std::sync::atomic::Ordering::SeqCst);
        let mut conn = self.msg()?.connection().await?;
        let op = self.op(fid, "", self.clock_ms());
        let written = sql::write_stream_from_step(&mut conn, &op, key, &text).await?;
        conn.keep();
        match written {
            Some(_) => {
                self.wake_own(Channel::Streams, key);
                Ok(())
            }
            None => Err(self.not_owner().await),
        }
    }

    /// Resolves once this execution no longer owns the workflow (it was cancelled, timed out,
    /// or taken over) or this node gave its lease up: woken by the cancellation notice,
    /// re-checked every `recheck_interval_ms` as well.
    /// A replay is never cancelled: there it never resolves.
    pub async fn cancelled(&self) {
        let Ok(svc) = self.svc() else {
            return std::future::pending().await;
        };
        let mut waiter = svc
            .messages()
            .waiters()
            .register(Channel::Cancel, self.inner.workflow_id.clone());
        let lease_lost = svc.lease().lost();
        loop {
            tokio::select! {
                _ = waiter.wait(None) => {}
                // The node gave its lease up: another node may run this workflow soon.
                () = lease_lost.cancelled() => return,
            }
            match svc
                .still_owner(&self.inner.workflow_id, &self.inner.owner_xid)
                .await
            {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => tracing::debug!(error = %e, "ownership check failed; will re-check"),
            }
        }
    }

    /// A reader of workflow `workflow_id`'s stream `key` from its start.
    pub fn read_stream(&self, workflow_id: &str, key: &str) -> WfStream {
        WfStream {
            ctx: self.clone(),
            reader: self.msg().ok().map(|m| m.read_stream(workflow_id, key, 0)),
            ended: false,
        }
    }

    /// Publishes payloads to a pub/sub topic, in order, exactly once; returns the first and last
    /// sequence numbers given.
    ///
    /// 1 round trip, 1 commit; none on replay.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad topic name or a payload over `message_bytes_max`.
    pub async fn publish<T: Serialize>(
        &self,
        topic: &str,
        payloads: &[T],
    ) -> Result<(i64, i64), Error> {
        let name = "msg.publish";
        let fid = self.next_fid();
        if let Some(r) = self.replay(fid, name)? {
            return self.replay_value(&r);
        }
        self.check_deadline().await?;
        let opts = self.msg_options();
        opts.check_batch(payloads.len())?;
        let texts = payloads
            .iter()
            .map(|p| opts.encode("payload", p))
            .collect::<Result<Vec<_>, _>>()?;
        let mut conn = self.msg()?.connection().await?;
        let published = sql::publish_recorded(
            &mut conn,
            &self.op(fid, name, self.clock_ms()),
            topic,
            &texts,
        )
        .await?;
        conn.keep();
        match published {
            Some(range) => Ok(range),
            None => Err(self.not_owner().await),
        }
    }

    /// Subscribes this workflow (its ID is the subscriber) to a topic; an existing
    /// subscription keeps its place.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad topic name.
    pub async fn subscribe(&self, topic: &str, start: Start) -> Result<(), Error> {
        let (ctx, wf) = (self.clone(), self.inner.workflow_id.clone());
        let topic = topic.to_owned();
        self.step("msg.subscribe", move || {
            let (ctx, wf, topic) = (ctx.clone(), wf.clone(), topic.clone());
            async move {
                ctx.msg()?.subscribe(&topic, &wf, start).await?;
                Ok(())
            }
        })
        .await
    }

    /// Takes the next messages (up to `topic_batch_max`) of this workflow's subscription to
    /// `topic`, waiting up to `timeout` for the first; empty when none came. The cursor moves
    /// in the statement that records the messages, so each is consumed exactly once. Uses two
    /// function IDs (`msg.consume` and its timer).
    ///
    /// # Errors
    /// [`Error::Invalid`] when not subscribed; [`Error::Encode`] when a payload does not
    /// decode to `T`.
    pub async fn next_messages<T: DeserializeOwned>(
        &self,
        topic: &str,
        timeout: Duration,
    ) -> Result<Vec<TopicMessage<T>>, Error> {
        let name = "msg.consume";
        let (fid, timer_fid) = match self.wait_ids(name)? {
            Ok(ids) => ids,
            Err(replayed) => return Ok(replayed),
        };
        self.check_deadline().await?;
        let op = self.op(fid, name, self.clock_ms());
        let msg = self.msg()?;
        let subscriber = self.inner.workflow_id.as_str();
        let got = self
            .wait_recorded(
                Channel::Topics,
                topic.to_owned(),
                timer_fid,
                timeout,
                |last| {
                    let op = &op;
                    async move {
                        let v = msg.consume_recorded(op, topic, subscriber, last).await?;
                        Ok(match v {
                            Some(v) if v.is_empty() && !last => None,
                            other => Some(other),
                        })
                    }
                },
            )
            .await?;
        let Some(msgs) = got else {
            return Err(self.not_owner().await);
        };
        msgs.into_iter()
            .map(|d| {
                Ok(TopicMessage {
                    seq: d.seq,
                    payload: codec::decode(&d.payload)?,
                })
            })
            .collect()
    }
}

impl WfStream {
    /// The next value, waiting up to `timeout` for it; `None` at the end of the stream (closed,
    /// or its writer ended) or on timeout ([`WfStream::is_done`] tells which). Every call is
    /// recorded (`DBOS.readStream`), so a replay returns the same values.
    ///
    /// # Errors
    /// [`Error::NotFound`] when the writer does not exist; [`Error::Encode`].
    pub async fn next<T: DeserializeOwned>(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<T>, Error> {
        let name = "DBOS.readStream";
        let ctx = &self.ctx;
        let fid = ctx.next_fid();
        let read: StreamRead = match ctx.replay(fid, name)? {
            Some(r) => {
                let read = ctx.replay_value(&r)?;
                if let StreamRead::Value(_) = read {
                    // The live reader keeps pace with replayed reads, to resume after them.
                    if let Some(r) = &mut self.reader {
                        r.skip_one();
                    }
                }
                read
            }
            None => {
                ctx.check_deadline().await?;
                let started = ctx.clock_ms();
                let reader = self
                    .reader
                    .as_mut()
                    .ok_or_else(|| ctx.unrecorded(fid, name))?;
                let read = match reader.next_text(timeout).await? {
                    Some(v) => StreamRead::Value(codec::decode(&v)?),
                    None if reader.is_done() => StreamRead::End,
                    None => StreamRead::Timeout,
                };
                let text = codec::encode(&read)?;
                ctx.record(ctx.checkpoint(fid, name, &Ok(text), started, ctx.clock_ms(), None))
                    .await?;
                read
            }
        };
        match read {
            StreamRead::Value(v) => Ok(Some(serde_json::from_value(v)?)),
            StreamRead::End => {
                self.ended = true;
                Ok(None)
            }
            StreamRead::Timeout => Ok(None),
        }
    }

    /// Whether the stream has ended.
    pub fn is_done(&self) -> bool {
        self.ended
    }
}

impl Context {
    /// The tokio instant at epoch-ms `end_ms` by the node's clock.
    fn instant_at(&self, end_ms: i64) -> Instant {
        Instant::now() + Duration::from_millis((end_ms - self.clock_ms()).max(0) as u64)
    }
}
