//! The notifier: one LISTEN connection per node, fanned out to in-process waiters.
//!
//! Notifications are hints. A waiter that wakes always re-checks its table, and after the
//! LISTEN connection is lost and re-established (when notifications may have been missed) every
//! waiter receives [`Wake::Recheck`], so a lost notification costs latency, never correctness.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::loops::{Loops, Phase};

/// Channel the notifier itself listens on, to learn of new subscriptions while it waits.
const CONTROL_CHANNEL: &str = "dbos_kernel_notifier";
/// Longest pause between reconnection attempts of the LISTEN connection.
const RECONNECT_PAUSE_MS_MAX: u64 = 2_000;
/// Longest channel name Postgres accepts (NAMEDATALEN - 1).
const CHANNEL_BYTES_MAX: usize = 63;

/// Why a waiter woke.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wake {
    /// A NOTIFY arrived on the channel, with its payload.
    Notified(String),
    /// Notifications may have been lost (reconnect, or this waiter fell behind): re-check.
    Recheck,
}

/// Handle to the node's notifier. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Notifier {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    channels: Mutex<HashMap<String, broadcast::Sender<Wake>>>,
    commands: mpsc::UnboundedSender<(String, oneshot::Sender<()>)>,
    pool: PgPool,
    buffer_max: usize,
    /// The `Listen` phase's token of the node's loops.
    stop: CancellationToken,
    /// Cancelled once the LISTEN loop has ended.
    done: CancellationToken,
}

/// A subscription to one channel.
#[derive(Debug)]
pub struct Subscription {
    rx: broadcast::Receiver<Wake>,
}

impl Subscription {
    /// Waits for the next wake-up; `None` once the notifier has stopped.
    ///
    /// # Cancel safety
    /// Cancel safe: a wake-up not returned stays queued.
    pub async fn recv(&mut self) -> Option<Wake> {
        match self.rx.recv().await {
            Ok(w) => Some(w),
            Err(broadcast::error::RecvError::Lagged(_)) => Some(Wake::Recheck),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

impl Notifier {
    /// Starts the notifier with its own connection, from `listen_pool` (of one connection,
    /// not one of `pool`'s: see [`crate::db::side_pool`]); its loop runs in the
    /// [`Phase::Listen`] phase of `loops`.
    ///
    /// # Errors
    /// The first LISTEN connection cannot be made.
    pub async fn start(
        pool: &PgPool,
        listen_pool: PgPool,
        buffer_max: usize,
        loops: &Loops,
    ) -> Result<Notifier> {
        let listener = open(&listen_pool, &[]).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            channels: Mutex::new(HashMap::new()),
            commands: tx,
            pool: pool.clone(),
            buffer_max,
            stop: loops.token(Phase::Listen),
            done: CancellationToken::new(),
        });
        let (weak, stop, done) = (
            Arc::downgrade(&inner),
            inner.stop.clone(),
            inner.done.clone(),
        );
        loops.spawn_once("notifier", Phase::Listen, async move {
            let _done = done.drop_guard();
            run(listen_pool, listener, rx, weak, stop).await;
        });
        Ok(Notifier { inner })
    }

    /// Subscribes to `channel`; returns once the node is listening on it, so any NOTIFY
    /// committed afterwards wakes the subscription.
    ///
    /// # Errors
    /// An invalid channel name, or the notifier has stopped.
    pub async fn subscribe(&self, channel: &str) -> Result<Subscription> {
        if channel.is_empty() || channel.len() > CHANNEL_BYTES_MAX {
            return Err(Error::Config(format!(
                "channel name {channel:?} must be 1 to {CHANNEL_BYTES_MAX} bytes"
            )));
        }
        let (rx, fresh) = {
            let mut channels = self.inner.channels.lock();
            match channels.get(channel) {
                Some(tx) => (tx.subscribe(), false),
                None => {
                    let (tx, rx) = broadcast::channel(self.inner.buffer_max);
                    channels.insert(channel.to_owned(), tx);
                    (rx, true)
                }
            }
        };
        if fresh {
            let (ack_tx, ack_rx) = oneshot::channel();
            self.inner
                .commands
                .send((channel.to_owned(), ack_tx))
                .map_err(|_| Error::ShuttingDown)?;
            // Wakes the loop, which is waiting for notifications, to LISTEN on the channel.
            let woken = crate::db::retry_transient(
                "waking the notifier",
                WAKE_RETRY_MS_MAX,
                crate::sqlstate::is_transient,
                || {
                    sqlx::query("SELECT pg_notify($1, '')")
                        .bind(CONTROL_CHANNEL)
                        .execute(&self.inner.pool)
                },
            )
            .await;
            // On failure the request stays queued and the channel known: the loop listens on
            // it at its next wake-up, or on its next connection, which listens on every known
            // channel (and wakes every subscriber to re-check).
            woken?;
            ack_rx.await.map_err(|_| Error::ShuttingDown)?;
        }
        Ok(Subscription { rx })
    }

    /// Stops listening (with the rest of the `Listen` phase); subscriptions then return `None`.
    pub async fn stop(&self) {
        self.inner.stop.cancel();
        self.inner.done.cancelled().await;
        self.inner.channels.lock().clear();
    }
}

/// Longest a subscription retries waking the notifier while the server restarts.
const WAKE_RETRY_MS_MAX: u64 = 10_000;

/// A LISTEN connection on the control channel and `channels`.
async fn open(listen_pool: &PgPool, channels: &[String]) -> Result<PgListener> {
    let mut listener = PgListener::connect_with(listen_pool).await?;
    listener.ignore_pool_close_event(true);
    listener.eager_reconnect(true);
    let mut all = vec![CONTROL_CHANNEL];
    all.extend(channels.iter().map(String::as_str));
    listener.listen_all(all).await?;
    Ok(listener)
}

async fn run(
    listen_pool: PgPool,
    listener: PgListener,
    mut commands: mpsc::UnboundedReceiver<(String, oneshot::Sender<()>)>,
    inner: std::sync::Weak<Inner>,
    stop: CancellationToken,
) {
    let mut pause_ms = 50;
    // `None` while broken: a LISTEN on a broken connection fails for ever (only receiving
    // reconnects), so a broken connection is dropped and the loop starts over on a new one.
    let mut listener = Some(listener);
    loop {
        let Some(l) = listener.as_mut() else {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(pause_ms)) => {}
            }
            pause_ms = (pause_ms * 2).min(RECONNECT_PAUSE_MS_MAX);
            let Some(inner) = inner.upgrade() else { return };
            let channels: Vec<String> = inner.channels.lock().keys().cloned().collect();
            match open(&listen_pool, &channels).await {
                Ok(l) => {
                    listener = Some(l);
                    pause_ms = 50;
                    broadcast_all(&inner, Wake::Recheck);
                    tracing::info!("notifier reconnected; waiters re-check");
                }
                Err(e) => tracing::debug!(error = %e, "notifier reconnection failed; retrying"),
            }
            continue;
        };
        // Subscriptions requested since the last wake-up.
        let mut failed = false;
        while let Ok((channel, ack)) = commands.try_recv() {
            match l.listen(&channel).await {
                Ok(()) => {
                    let _ = ack.send(());
                }
                Err(e) => {
                    tracing::warn!(%channel, error = %e, "LISTEN failed; reconnecting");
                    // Keep the request for the next round.
                    let Some(inner) = inner.upgrade() else { return };
                    let _ = inner.commands.send((channel, ack));
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            listener = None;
            continue;
        }
        let next = tokio::select! {
            () = stop.cancelled() => return,
            next = l.try_recv() => next,
        };
        let Some(inner) = inner.upgrade() else { return };
        match next {
            Ok(Some(n)) if n.channel() == CONTROL_CHANNEL => {}
            Ok(Some(n)) => {
                RECEIVED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Some(tx) = inner.channels.lock().get(n.channel()) {
                    let _ = tx.send(Wake::Notified(n.payload().to_owned()));
                }
            }
            // Lost and re-established (eager reconnect): anything in between was missed.
            Ok(None) => {
                broadcast_all(&inner, Wake::Recheck);
                tracing::info!("notifier connection was lost and re-established; waiters re-check");
            }
            Err(e) => {
                tracing::warn!(error = %e, "notifier connection lost; reconnecting");
                listener = None;
                broadcast_all(&inner, Wake::Recheck);
            }
        }
    }
}

/// Notifications this process's notifiers received (their own control channel aside).
static RECEIVED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Notifications this process's notifiers received so far.
pub fn received() -> u64 {
    RECEIVED.load(std::sync::atomic::Ordering::Relaxed)
}

fn broadcast_all(inner: &Inner, wake: Wake) {
    for tx in inner.channels.lock().values() {
        let _ = tx.send(wake.clone());
    }
}
