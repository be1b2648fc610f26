//! Receives waiting on this node that a send from this node completes in its own commit.
//!
//! A `recv` that found its mailbox empty leaves an offer under its mailbox key: which execution
//! waits, and at which position its receipt is to be recorded. A send of one message from this
//! node to that mailbox claims the offer and writes, in its own statement, the message, the
//! receiver's record of receiving it (fenced on the receiver's ownership, as the receiver's own
//! statement is) and its consumption: the receipt costs no commit of its own, and the waiter
//! wakes with the message in hand.
//!
//! Only one side writes the receipt at a time. The receiver takes its offer back before each
//! probe of the mailbox and opens it again when the probe found nothing; a send claims only an
//! open offer, and the receiver waits while a claim is under way. A claim ends as delivered
//! (the receiver returns the message), declined (nothing was handed over: the message, if
//! stored, waits in the mailbox) or unknown (the statement failed or was dropped, and may have
//! committed: the receiver reads what is recorded at its position before it probes again).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::sql::{self, Op, Outgoing};
use crate::wait::{Channel, Waiters};

/// The waiting receive an offer stands for: the receiver's checkpoint to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipient {
    /// The receiving workflow (the mailbox's owner).
    pub workflow_id: String,
    /// The receiving execution's ownership token.
    pub owner_xid: String,
    /// The position of its `recv`.
    pub function_id: i32,
    /// The name the receipt is recorded under (`DBOS.recv`).
    pub name: String,
    /// When the `recv` started, epoch ms.
    pub started_at_ms: i64,
}

#[derive(Debug)]
enum State {
    /// The receiver is probing its mailbox itself.
    Probing,
    /// The receiver waits; a send may claim the offer.
    Open,
    /// A send's statement is under way.
    Claimed,
    /// A send recorded this message as the receipt and consumed it.
    Delivered(String),
    /// A send's statement failed or was dropped: it may have recorded the receipt.
    Unknown,
    /// The receive has ended.
    Withdrawn,
}

#[derive(Debug)]
pub(crate) struct Slot {
    recipient: Recipient,
    state: Mutex<State>,
    /// Signalled when a claim ends (the receiver waits for it).
    ended: Notify,
    /// Signalled when the receiver opens or withdraws its offer (a send may wait for it).
    settled: Notify,
}

/// How long a send waits for a receiver's probe under way to end before it sends the usual
/// way: a probe is one statement.
const PROBE_WAIT: std::time::Duration = std::time::Duration::from_millis(2);

/// Offers by mailbox key (`"{workflow}::{topic}"`).
pub(crate) type Offers = Mutex<HashMap<String, Arc<Slot>>>;

/// What the receiver finds when it takes its offer back.
#[derive(Debug, PartialEq, Eq)]
pub enum Taken {
    /// Nothing was handed over: probe the mailbox.
    Probe,
    /// A send recorded this message as the receipt: return it.
    Delivered(String),
    /// A send may have recorded the receipt: read it before probing.
    Unknown,
}

/// A receiver's offer, held while it waits. Dropping it withdraws the offer.
#[derive(Debug)]
pub struct Offer {
    waiters: Waiters,
    key: String,
    slot: Arc<Slot>,
}

impl Offer {
    /// Takes the offer back before a probe, waiting for a claim under way to end.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn take(&self) -> Taken {
        loop {
            let ended = self.slot.ended.notified();
            {
                let mut s = self.slot.state.lock();
                match &*s {
                    State::Probing | State::Open => {
                        *s = State::Probing;
                        return Taken::Probe;
                    }
                    State::Delivered(m) => return Taken::Delivered(m.clone()),
                    State::Unknown => {
                        *s = State::Probing;
                        return Taken::Unknown;
                    }
                    State::Claimed | State::Withdrawn => {}
                }
            }
            ended.await;
        }
    }

    /// Opens the offer again after a probe that found nothing.
    pub fn reopen(&self) {
        let mut s = self.slot.state.lock();
        if matches!(*s, State::Probing) {
            *s = State::Open;
            drop(s);
            self.slot.settled.notify_waiters();
        }
    }
}

impl Drop for Offer {
    fn drop(&mut self) {
        *self.slot.state.lock() = State::Withdrawn;
        self.slot.settled.notify_waiters();
        let mut offers = self.waiters.offers().lock();
        if offers
            .get(&self.key)
            .is_some_and(|s| Arc::ptr_eq(s, &self.slot))
        {
            offers.remove(&self.key);
        }
    }
}

/// A send's claim on an open offer. End it with [`Claim::delivered`] or [`Claim::declined`];
/// dropped otherwise, the receiver reads what was recorded before it probes again.
#[derive(Debug)]
pub struct Claim {
    waiters: Waiters,
    key: String,
    slot: Arc<Slot>,
    ended: bool,
}

impl Claim {
    /// The receive to record.
    pub fn recipient(&self) -> &Recipient {
        &self.slot.recipient
    }

    /// The send recorded `message` as the receipt and consumed it (committed).
    pub fn delivered(mut self, message: String) {
        self.end(State::Delivered(message));
    }

    /// Nothing was handed over (committed or rolled back): the receiver probes as usual.
    pub fn declined(mut self) {
        self.end(State::Open);
    }

    fn end(&mut self, state: State) {
        *self.slot.state.lock() = state;
        self.ended = true;
        self.slot.ended.notify_one();
        self.waiters.wake(Channel::Notifications, self.key.clone());
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if !self.ended {
            self.waiters.forget(&self.key);
            self.end(State::Unknown);
        }
    }
}

impl Waiters {
    /// Leaves an offer for the mailbox `key` (`"{workflow}::{topic}"`) while a receive waits,
    /// taken back (state: probing) until [`Offer::reopen`]. `None` when another receive of the
    /// same mailbox has one.
    pub fn offer(&self, key: String, recipient: Recipient) -> Option<Offer> {
        let slot = Arc::new(Slot {
            recipient,
            state: Mutex::new(State::Probing),
            ended: Notify::new(),
            settled: Notify::new(),
        });
        let mut offers = self.offers().lock();
        if offers.contains_key(&key) {
            return None;
        }
        offers.insert(key.clone(), slot.clone());
        drop(offers);
        Some(Offer {
            waiters: self.clone(),
            key,
            slot,
        })
    }

    /// Claims the open offer of the mailbox of `msgs` when they are one message without an
    /// idempotency key (a repeated send of a keyed one must not be delivered twice).
    pub async fn claim_for(&self, msgs: &[Outgoing]) -> Option<Claim> {
        match msgs {
            [m] if m.idempotency_key.is_none() => self.claim(&m.mailbox()).await,
            _ => None,
        }
    }

    /// Claims the open offer of mailbox `key`, if there is one. An offer the receiver has taken
    /// back to probe is waited for, up to [`PROBE_WAIT`]: a receive usually probes once as it
    /// begins, and a reply sent meanwhile would otherwise cost the receive its own commit.
    pub async fn claim(&self, key: &str) -> Option<Claim> {
        let slot = self.offers().lock().get(key)?.clone();
        {
            let settled = slot.settled.notified();
            tokio::pin!(settled);
            let mut waited = false;
            loop {
                settled.as_mut().enable();
                {
                    let mut s = slot.state.lock();
                    match *s {
                        State::Open => {
                            *s = State::Claimed;
                            break;
                        }
                        State::Probing if !waited => {}
                        _ => return None,
                    }
                }
                waited = true;
                tokio::time::timeout(PROBE_WAIT, settled.as_mut())
                    .await
                    .ok()?;
                settled.set(slot.settled.notified());
            }
        }
        Some(Claim {
            waiters: self.clone(),
            key: key.to_owned(),
            slot,
            ended: false,
        })
    }
}

/// Sends `m` under `claim` ([`sql::send_handoff`]) and ends the claim with what the statement
/// did. `Some(recorded)` as [`sql::HandedOff::recorded`]; `None` when the statement was rolled
/// back by a conflict (a deadlock with a send the other way, a serialization failure): nothing
/// was written, the offer is open again, and the caller sends the usual way.
///
/// # Errors
/// As [`sql::send`]; the receiver then reads what was recorded before it probes again.
pub async fn send_claimed(
    conn: &mut sqlx::PgConnection,
    sender: Option<&Op<'_>>,
    m: &Outgoing,
    claim: Claim,
) -> crate::Result<Option<bool>> {
    // The receiver's next receive need not look when this statement leaves its mailbox
    // empty: it delivers the message sent and found no older one.
    let mark = claim.waiters.mark(&claim.key);
    match sql::send_handoff(conn, sender, m, claim.recipient()).await {
        Ok(h) => {
            match h.delivered {
                Some(message) => {
                    if h.fresh {
                        // The insert of the message sent notifies once.
                        claim.waiters.found_empty(&claim.key, mark, 1);
                    } else {
                        claim.waiters.forget(&claim.key);
                    }
                    claim.delivered(message);
                }
                None => {
                    claim.waiters.forget(&claim.key);
                    claim.declined();
                }
            }
            Ok(Some(h.recorded))
        }
        Err(crate::Error::Db(e)) if dbos_kernel::sqlstate::is_retryable_conflict(&e) => {
            claim.declined();
            Ok(None)
        }
        Err(e) => {
            claim.waiters.forget(&claim.key);
            Err(e)
        }
    }
}
