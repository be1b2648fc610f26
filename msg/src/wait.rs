//! Waiting for messages, events, stream values and topic messages without holding a connection.
//!
//! One router task per channel reads the node's notifier and wakes only the waiters of the key a
//! notification names (`"{workflow}::{topic}"`, `"{workflow}::{key}"`, or a topic name). A
//! waiter registers before it probes the table, so a notification committed between the probe
//! and the wait is never missed; it re-probes after every wake-up and at least every
//! `recheck_interval_ms` (longer when so many wait that their re-checks together would pass 200
//! a second), so a lost notification costs latency, never correctness.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use dbos_kernel::{Notifier, Wake};
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::error::Result;
use crate::{
    CANCEL_CHANNEL, EVENTS_CHANNEL, NOTIFICATIONS_CHANNEL, OUTCOME_CHANNEL, STREAMS_CHANNEL,
    TOPICS_CHANNEL,
};

/// The channels waiters wait on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Channel {
    /// `dbos_notifications_channel`, key `"{workflow}::{topic}"`.
    Notifications,
    /// `dbos_workflow_events_channel`, key `"{workflow}::{key}"`.
    Events,
    /// `dbos_streams_channel`, key `"{workflow}::{key}"`.
    Streams,
    /// Our pub/sub channel, key the topic.
    Topics,
    /// Workflows cancelled, key the workflow ID.
    Cancel,
    /// Outcomes of workflows that came through a queue, key the workflow ID.
    Outcome,
}

impl Channel {
    const ALL: [Channel; 6] = [
        Channel::Notifications,
        Channel::Events,
        Channel::Streams,
        Channel::Topics,
        Channel::Cancel,
        Channel::Outcome,
    ];

    fn name(self) -> &'static str {
        match self {
            Channel::Notifications => NOTIFICATIONS_CHANNEL,
            Channel::Events => EVENTS_CHANNEL,
            Channel::Streams => STREAMS_CHANNEL,
            Channel::Topics => TOPICS_CHANNEL,
            Channel::Cancel => CANCEL_CHANNEL,
            Channel::Outcome => OUTCOME_CHANNEL,
        }
    }
}

struct Entry {
    /// Bumped on every wake-up for the key; each waiter watches it.
    wakes: watch::Sender<u64>,
    /// Registrations of the key: [`Waiter`]s and [`Watch`]es.
    waiters: usize,
    /// Of those, [`Waiter`]s: something waits on the key now.
    waiting: usize,
    /// Which registration of the key this is: unique in the process.
    generation: u64,
    /// Notifications of the key from the server (not this process's own wake-ups).
    notified: u64,
    /// Times the node's notifications may have been lost since the registration.
    rechecks: u64,
    /// The mailbox was empty as of a look, unless notifications came since ([`Waiters::mark`]).
    empty: Option<Empty>,
}

/// A mailbox found empty: by a statement that began after `notified` notifications of its key
/// had arrived, and whose own writes notify `own` times more.
#[derive(Clone, Copy, Debug)]
struct Empty {
    notified: u64,
    own: u64,
}

impl Entry {
    fn wake(&self) {
        self.wakes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Whether the mailbox is known to be empty: no message was committed since the look that
    /// found it empty, beyond the ones that look wrote itself.
    fn known_empty(&self) -> bool {
        self.empty
            .is_some_and(|e| self.notified.wrapping_sub(e.notified) <= e.own)
    }
}

/// Generations of [`Entry`]: a mark taken on one registration never applies to a later one.
static GENERATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Where a mailbox's notifications stood before a statement that may find it empty
/// ([`Waiters::mark`]).
#[derive(Clone, Copy, Debug)]
pub struct Mark {
    generation: u64,
    notified: u64,
    rechecks: u64,
    known_empty: bool,
}

impl Mark {
    /// Whether the mailbox was known to be empty when the mark was taken
    /// ([`Waiters::known_empty`]): a receive then need not look.
    pub fn known_empty(&self) -> bool {
        self.known_empty
    }
}

type Table = Mutex<HashMap<(Channel, String), Entry>>;

/// Wakes waiters by key. Cheap to clone.
#[derive(Clone)]
pub struct Waiters {
    table: Arc<Table>,
    /// Receives this node's sends may complete ([`crate::handoff`]).
    offers: Arc<crate::handoff::Offers>,
    recheck_interval: Duration,
    /// The notifier whose subscriptions wake the table: its LISTEN loop runs while a handle to
    /// it lives, so the waiters keep one (a command's client has no node to hold it).
    _notifier: Notifier,
}

impl std::fmt::Debug for Waiters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiters")
            .field("waiting", &self.table.lock().len())
            .finish()
    }
}

/// A registered waiter: notifications for its keys that arrive after registration wake it,
/// however late it starts waiting. Dropping it forgets the registration.
pub struct Waiter<'a> {
    table: &'a Table,
    keys: Vec<((Channel, String), watch::Receiver<u64>)>,
    recheck_interval: Duration,
}

/// Why [`Waiter::wait`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Woke {
    /// A notification for the registration at this index (0: the first key).
    Key(usize),
    /// The deadline or the recheck interval passed.
    Timer,
}

impl Waiter<'_> {
    /// Also wakes on notifications for `key` on `chan` (e.g. the waiting workflow's
    /// cancellation); its index in [`Woke::Key`] is the number of keys registered before it.
    pub fn also(mut self, chan: Channel, key: String) -> Self {
        let rx = register_key(self.table, chan, key.clone(), true);
        self.keys.push(((chan, key), rx));
        self
    }

    /// Sleeps until a notification for one of the keys arrives (or arrived since the last
    /// wake-up), `recheck_interval_ms` passes, or `deadline` passes; then the caller re-probes.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn wait(&mut self, deadline: Option<Instant>) -> Woke {
        let mut until = Instant::now() + recheck_after(self.recheck_interval, self.table);
        if let Some(d) = deadline {
            until = until.min(d);
        }
        let changed = self.keys.iter_mut().enumerate().map(|(i, (_, rx))| {
            Box::pin(async move {
                // The sender lives as long as this registration, so this only returns on a
                // change; an error would mean it is gone, which is a wake-up too.
                let _ = rx.changed().await;
                i
            })
        });
        let any = futures_util::future::select_all(changed);
        tokio::select! {
            (i, _, _) = any => Woke::Key(i),
            _ = tokio::time::sleep_until(until) => Woke::Timer,
        }
    }
}

/// Re-checks without a notification, all waiters of the node together, at most this many
/// times a second: with many waiting, each re-checks less often than `recheck_interval_ms`.
/// (Notifications are not lost while the node's `LISTEN` connection stays up; a reconnect
/// wakes every waiter at once.)
const RECHECKS_PER_S_MAX: u64 = 200;

/// How long a waiter sleeps without a notification before it re-checks: the configured
/// interval, or longer when so many wait that their re-checks would pass
/// [`RECHECKS_PER_S_MAX`].
fn recheck_after(interval: Duration, table: &Table) -> Duration {
    let waiting = table.lock().len() as u64;
    interval.max(Duration::from_millis(waiting * 1_000 / RECHECKS_PER_S_MAX))
}

fn register_key(table: &Table, chan: Channel, key: String, waiting: bool) -> watch::Receiver<u64> {
    let mut t = table.lock();
    let e = t.entry((chan, key)).or_insert_with(|| Entry {
        wakes: watch::channel(0).0,
        waiters: 0,
        waiting: 0,
        generation: GENERATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        notified: 0,
        rechecks: 0,
        empty: None,
    });
    e.waiters += 1;
    e.waiting += usize::from(waiting);
    e.wakes.subscribe()
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        for (key, _) in &self.keys {
            unregister_key(self.table, key, true);
        }
    }
}

fn unregister_key(table: &Table, key: &(Channel, String), waiting: bool) {
    let mut t = table.lock();
    if let Some(e) = t.get_mut(key) {
        e.waiters -= 1;
        e.waiting -= usize::from(waiting);
        if e.waiters == 0 {
            t.remove(key);
        }
    }
}

/// An owned registration for one key that tells, without waiting, whether a notification
/// arrived since the last look (e.g. a running workflow's cancellation, looked at before each
/// step). Dropping it forgets the registration.
pub struct Watch {
    table: Arc<Table>,
    key: (Channel, String),
    rx: watch::Receiver<u64>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch").field("key", &self.key).finish()
    }
}

impl Watch {
    /// The key it registers.
    pub fn key(&self) -> &str {
        &self.key.1
    }

    /// Whether a notification for the key arrived since the registration or the last call.
    pub fn notified(&mut self) -> bool {
        let changed = self.rx.has_changed().unwrap_or(true);
        if changed {
            self.rx.borrow_and_update();
        }
        changed
    }

    /// Waits for a notification for the key (one that arrived since the last look counts).
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn changed(&mut self) {
        if self.rx.changed().await.is_err() {
            // The registration outlives its entry only at shutdown: never wake.
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        unregister_key(&self.table, &self.key, false);
    }
}

impl Waiters {
    /// Subscribes to the four messaging channels of `notifier` and routes their notifications.
    ///
    /// # Errors
    /// The notifier has stopped.
    pub async fn start(notifier: &Notifier, recheck_interval_ms: u64) -> Result<Waiters> {
        let table: Arc<Table> = Arc::default();
        for chan in Channel::ALL {
            let mut sub = notifier.subscribe(chan.name()).await?;
            let table = Arc::downgrade(&table);
            tokio::spawn(async move {
                while let Some(wake) = sub.recv().await {
                    let Some(table) = table.upgrade() else { return };
                    let mut t = table.lock();
                    match wake {
                        Wake::Notified(key) => {
                            if let Some(e) = t.get_mut(&(chan, key)) {
                                e.notified = e.notified.wrapping_add(1);
                                e.wake();
                            }
                        }
                        Wake::Recheck => {
                            for ((c, _), e) in t.iter_mut() {
                                if *c == chan {
                                    e.rechecks = e.rechecks.wrapping_add(1);
                                    e.empty = None;
                                    e.wake();
                                }
                            }
                        }
                    }
                }
            });
        }
        Ok(Waiters {
            table,
            offers: Arc::default(),
            recheck_interval: Duration::from_millis(recheck_interval_ms.max(1)),
            _notifier: notifier.clone(),
        })
    }

    /// Registers a waiter for `key` on `chan`. Register before probing the table, so that a
    /// notification committed between the probe and the wait is not missed.
    pub fn register(&self, chan: Channel, key: String) -> Waiter<'_> {
        let rx = register_key(&self.table, chan, key.clone(), true);
        Waiter {
            table: &self.table,
            keys: vec![((chan, key), rx)],
            recheck_interval: self.recheck_interval,
        }
    }

    /// An owned registration for `key` on `chan` (see [`Watch`]).
    pub fn watch(&self, chan: Channel, key: String) -> Watch {
        let rx = register_key(&self.table, chan, key.clone(), false);
        Watch {
            table: self.table.clone(),
            key: (chan, key),
            rx,
        }
    }

    /// Wakes the waiters of `key` on `chan` in this process at once, as the notification of a
    /// write this process has just committed will when it comes back from the server: a waiter
    /// here re-probes one trip through the server sooner. A wake only asks for another probe,
    /// so the notification that follows costs at most an empty one: cheap for a one-off wait
    /// (`recv`, `get_event`, a stream's reader), not for subscribers that consume in a loop
    /// and would each probe twice per publish, so a publish is left to its notification.
    pub fn wake(&self, chan: Channel, key: String) {
        if let Some(e) = self.table.lock().get(&(chan, key)) {
            e.wake();
        }
    }

    /// [`Waiters::wake`] for the mailboxes of messages this process has just sent.
    /// Those mailboxes are no longer known to be empty ([`Waiters::known_empty`]).
    pub fn wake_mailboxes(&self, msgs: &[crate::sql::Outgoing]) {
        for m in msgs {
            let key = m.mailbox();
            self.forget(&key);
            self.wake(Channel::Notifications, key);
        }
    }

    /// Where the notifications of mailbox `key` stand, taken before a statement that may find
    /// the mailbox empty and passed to [`Waiters::found_empty`] after it. A mailbox is tracked
    /// only while something registers its key (a [`Watch`] kept between receives).
    pub fn mark(&self, key: &str) -> Mark {
        let t = self.table.lock();
        match t.get(&(Channel::Notifications, key.to_owned())) {
            Some(e) => Mark {
                generation: e.generation,
                notified: e.notified,
                rechecks: e.rechecks,
                known_empty: e.known_empty(),
            },
            None => Mark {
                generation: 0,
                notified: 0,
                rechecks: 0,
                known_empty: false,
            },
        }
    }

    /// A statement begun after `mark` found mailbox `key` without an unconsumed message, and
    /// itself inserted `own` messages into it (each notifies once). Until a notification beyond
    /// those arrives, or the node may have lost some, [`Waiters::known_empty`] holds and a
    /// receive need not look again: every message committed after the statement's snapshot
    /// notifies after the mark was taken. Ignored when the registration changed since the mark.
    pub fn found_empty(&self, key: &str, mark: Mark, own: u64) {
        let mut t = self.table.lock();
        if let Some(e) = t.get_mut(&(Channel::Notifications, key.to_owned())) {
            if e.generation == mark.generation && e.rechecks == mark.rechecks {
                e.empty = Some(Empty {
                    notified: mark.notified,
                    own,
                });
            }
        }
    }

    /// Mailbox `key` may hold messages: the next receive looks.
    pub fn forget(&self, key: &str) {
        if let Some(e) = self
            .table
            .lock()
            .get_mut(&(Channel::Notifications, key.to_owned()))
        {
            e.empty = None;
        }
    }

    /// Whether mailbox `key` is known to hold no unconsumed message ([`Waiters::found_empty`]).
    /// A message inserted without its notification (triggers disabled) is found at the next
    /// look after the recheck interval.
    pub fn known_empty(&self, key: &str) -> bool {
        self.table
            .lock()
            .get(&(Channel::Notifications, key.to_owned()))
            .is_some_and(Entry::known_empty)
    }

    pub(crate) fn offers(&self) -> &crate::handoff::Offers {
        &self.offers
    }

    /// Keys something waits on now ([`Waiter`]s, not [`Watch`]es).
    pub fn waiting(&self) -> usize {
        self.table.lock().values().filter(|e| e.waiting > 0).count()
    }

    /// Whether a [`Waiter`] is registered for `key` on `chan` now.
    pub fn is_waiting(&self, chan: Channel, key: &str) -> bool {
        self.table
            .lock()
            .get(&(chan, key.to_owned()))
            .is_some_and(|e| e.waiting > 0)
    }

    /// Runs `probe` until it returns a value or `deadline` passes (then `None`), sleeping between
    /// probes until a notification for `key` on `chan` arrives. The probe is run at least once.
    /// No connection is held while sleeping.
    ///
    /// # Errors
    /// The probe's error.
    ///
    /// # Cancel safety
    /// Cancel safe if the probe is: nothing is held between probes.
    pub async fn wait_for<T, F, Fut>(
        &self,
        chan: Channel,
        key: String,
        deadline: Option<Instant>,
        mut probe: F,
    ) -> Result<Option<T>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Option<T>>>,
    {
        let mut waiter = self.register(chan, key);
        loop {
            if let Some(v) = probe().await? {
                return Ok(Some(v));
            }
            if deadline.is_some_and(|d| d <= Instant::now()) {
                return Ok(None);
            }
            waiter.wait(deadline).await;
        }
    }
}
