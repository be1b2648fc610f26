//! The messaging service: DBOS's send/recv, events and streams on the DBOS tables, and our
//! pub/sub topics (schema `msg`).
//!
//! Every operation is a function over a connection or transaction ([`sql`]); the `*_recorded`
//! variants also write a workflow's checkpoint in the same statement, which is how workflows
//! (in `dbos-services`) get exactly-once messaging. Code outside workflows uses a [`Client`].
//! Waiting never holds a pooled connection: [`Waiters`] routes the node's notifications
//! (`dbos_notifications_channel`, `dbos_workflow_events_channel`, `dbos_streams_channel`, and
//! [`TOPICS_CHANNEL`]) to the waiters of one key, and waiters re-probe their table.
//!
//! ```no_run
//! # async fn demo(kernel: &dbos_kernel::Kernel) -> dbos_msg::Result<()> {
//! use std::time::Duration;
//! let waiters = dbos_msg::Waiters::start(kernel.notifier(), 10_000).await?;
//! let client = dbos_msg::Client::new(kernel.pool().clone(), waiters, Default::default());
//! client.send("order-42", &serde_json::json!({"paid": true}), Some("payments"), Some("pay-1")).await?;
//! client.subscribe("alerts", "pager", dbos_msg::Start::Next).await?;
//! client.publish("alerts", &["disk full"]).await?;
//! let got = client.consume("alerts", "pager", Duration::from_secs(1)).await?;
//! assert_eq!(got[0].payload, "\"disk full\"");
//! # Ok(()) }
//! ```
//!
//! Ordering of pub/sub: publishers of one topic update the topic's row, so its messages commit
//! in sequence order and a subscriber's cursor (the last sequence number it consumed) can never
//! pass a message that commits later. This serializes the publishers of one topic (batch
//! publishing amortizes it); different topics are independent.
#![warn(missing_docs, unreachable_pub)]

mod client;
mod error;
mod handoff;
pub mod sql;
mod wait;

pub use client::{decode, Client, Conn, Options, StreamReader};
pub use error::{Error, Result};
pub use handoff::{send_claimed, Claim, Offer, Recipient, Taken};
pub use sql::{Delivered, Outgoing, Start, Topic};
pub use wait::{Channel, Mark, Waiter, Waiters, Watch, Woke};

use dbos_kernel::{Migration, ServiceMigrations};

/// Channel of the DBOS notifications trigger (payload `"{workflow}::{topic}"`).
pub const NOTIFICATIONS_CHANNEL: &str = "dbos_notifications_channel";
/// Channel DBOS announces events on (payload `"{workflow}::{key}"`).
pub const EVENTS_CHANNEL: &str = "dbos_workflow_events_channel";
/// Channel DBOS announces stream values on (payload `"{workflow}::{key}"`).
pub const STREAMS_CHANNEL: &str = "dbos_streams_channel";
/// Channel on which cancelling a workflow wakes its waits (payload: the workflow ID).
pub use dbos_store::{CANCEL_CHANNEL, OUTCOME_CHANNEL};
/// Channel of our pub/sub topics (payload: the topic).
pub const TOPICS_CHANNEL: &str = "dbos_msg_topics";

/// Schema `msg` (pub/sub topics) and the messaging views in `os`. Applied after the DBOS
/// schema, whose tables the views read.
pub const MIGRATIONS: ServiceMigrations = ServiceMigrations {
    service: "msg",
    migrations: &[
        Migration {
            version: 1,
            name: "pub/sub topics and messaging views",
            sql: include_str!("../migrations/msg_0001_topics.sql"),
            earlier: &[],
        },
        Migration {
            version: 2,
            name: "topic message limit",
            sql: include_str!("../migrations/msg_0002_payload_limit.sql"),
            earlier: &[],
        },
        Migration {
            version: 3,
            name: "one topic check per statement",
            sql: include_str!("../migrations/msg_0003_messages_topic_check.sql"),
            earlier: &[],
        },
    ],
};
