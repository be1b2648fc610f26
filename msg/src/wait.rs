//! Waiting for messages, events, stream values and topic messages without holding a connection.
//!
//! One router task per channel reads the node's notifier and wakes only the waiters of the key a
//! notification names (`"{workflow}::{topic}"`, `"{workflow}::{key}"`, or a topic name). A
//! waiter registers before it probes the table, so a notification committed between the probe
//! and the wait is never missed; it re-probes after every wake-up and at least every
//! `recheck_interval_ms`, so a lost notification costs latency, never correctness.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use dbos_kernel::{Notifier, Wake};
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::error::Result;
use crate::{EVENTS_CHANNEL, NOTIFICATIONS_CHANNEL, STREAMS_CHANNEL, TOPICS_CHANNEL};

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
}

impl Channel {
    const ALL: [Channel; 4] = [
        Channel::Notifications,
        Channel::Events,
        Channel::Streams,
        Channel::Topics,
    ];

    fn name(self) -> &'static str {
        match self {
            Channel::Notifications => NOTIFICATIONS_CHANNEL,
            Channel::Events => EVENTS_CHANNEL,
            Channel::Streams => STREAMS_CHANNEL,
            Channel::Topics => TOPICS_CHANNEL,
        }
    }
}

struct Entry {
    notify: Arc<Notify>,
    waiters: usize,
}

type Table = Mutex<HashMap<(Channel, String), Entry>>;

/// Wakes waiters by key. Cheap to clone.
#[derive(Clone)]
pub struct Waiters {
    table: Arc<Table>,
    recheck_interval: Duration,
}

impl std::fmt::Debug for Waiters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiters")
            .field("waiting", &self.table.lock().len())
            .finish()
    }
}

/// A registration; dropping it forgets the waiter.
struct Guard<'a> {
    table: &'a Table,
    key: (Channel, String),
    notify: Arc<Notify>,
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        let mut t = self.table.lock();
        if let Some(e) = t.get_mut(&self.key) {
            e.waiters -= 1;
            if e.waiters == 0 {
                t.remove(&self.key);
            }
        }
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
                    let t = table.lock();
                    match wake {
                        Wake::Notified(key) => {
                            if let Some(e) = t.get(&(chan, key)) {
                                e.notify.notify_waiters();
                            }
                        }
                        Wake::Recheck => {
                            for ((c, _), e) in t.iter() {
                                if *c == chan {
                                    e.notify.notify_waiters();
                                }
                            }
                        }
                    }
                }
            });
        }
        Ok(Waiters {
            table,
            recheck_interval: Duration::from_millis(recheck_interval_ms.max(1)),
        })
    }

    fn register(&self, chan: Channel, key: String) -> Guard<'_> {
        let mut t = self.table.lock();
        let e = t.entry((chan, key.clone())).or_insert_with(|| Entry {
            notify: Arc::new(Notify::new()),
            waiters: 0,
        });
        e.waiters += 1;
        Guard {
            table: &self.table,
            key: (chan, key),
            notify: e.notify.clone(),
        }
    }

    /// Waiters registered now (distinct keys).
    pub fn waiting(&self) -> usize {
        self.table.lock().len()
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
        let guard = self.register(chan, key);
        loop {
            let notified = guard.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(v) = probe().await? {
                return Ok(Some(v));
            }
            let now = Instant::now();
            let mut until = now + self.recheck_interval;
            if let Some(d) = deadline {
                if d <= now {
                    return Ok(None);
                }
                until = until.min(d);
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }
}
