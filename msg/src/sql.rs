//! Every statement of the messaging service, each a function over a connection or transaction.
//!
//! Functions named `*_recorded` also write the workflow's checkpoint row in
//! `dbos.operation_outputs` in the same statement, after locking the workflow's status row and
//! checking that the caller still owns it (`owner_xid`) and that it is `PENDING`: the effect and
//! its record commit together or not at all, so a replay neither repeats nor loses the effect.
//! They return `None` (or `false`) when the caller no longer owns the workflow; nothing is
//! written then.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Row};

use crate::error::{Error, Result};

/// Topic stored for messages sent without one (DBOS's convention).
pub const NULL_TOPIC: &str = "__null__topic__";
/// The value that closes a stream, in portable JSON (DBOS's convention).
pub const STREAM_CLOSED: &str = "\"__DBOS_STREAM_CLOSED__\"";

pub use dbos_store::operations::Op;
use dbos_store::operations::{
    bind_op, own_cte_for, own_cte_if, prov_cte_for, prov_many_cte, record_cte_for, record_many_cte,
    Params, OWNED,
};

/// A message to send.
#[derive(Clone, Debug)]
pub struct Outgoing {
    /// Destination workflow ID.
    pub destination: String,
    /// The message, portable JSON text.
    pub message: String,
    /// Mailbox of the destination; `None` is the default mailbox.
    pub topic: Option<String>,
    /// A repeated send with the same key to the same destination is delivered once.
    pub idempotency_key: Option<String>,
}

impl Outgoing {
    fn message_uuid(&self) -> String {
        match &self.idempotency_key {
            Some(k) => format!("{k}::{}", self.destination),
            None => dbos_kernel::id::new_id(),
        }
    }

    fn topic(&self) -> &str {
        self.topic.as_deref().unwrap_or(NULL_TOPIC)
    }

    /// The key its destination's `recv` waits on (`"{workflow}::{topic}"`).
    pub fn mailbox(&self) -> String {
        format!("{}::{}", self.destination, self.topic())
    }
}

/// One message of a pub/sub topic.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Delivered {
    /// Its sequence number in the topic (from 1, gapless as published).
    pub seq: i64,
    /// Its payload, JSON text.
    pub payload: String,
}

/// Values of a stream read from an offset, with the writer's status.
#[derive(Clone, Debug)]
pub struct Chunk {
    /// Status of the writing workflow.
    pub status: String,
    /// Consecutive values from the offset asked for; the close marker ends a stream.
    pub values: Vec<String>,
}

/// Locks the workflow row if the caller owns it: `$1` workflow, `$2` owner.
const OWN: &str = dbos_store::operations::OWN_CTE;

/// The checkpoint row: `$3` function ID, `$4` started at, `$5` name.
fn rec(output: &str, cond: &str) -> String {
    dbos_store::operations::record_cte(output, cond)
}

/// The provenance rows of the operation `rec` records: `rows` selects kind, object, inode,
/// bytes, detail.
fn pv(rows: &str) -> String {
    dbos_store::operations::prov_cte(rows)
}

fn columns(msgs: &[Outgoing]) -> [Vec<String>; 4] {
    let mut c: [Vec<String>; 4] = Default::default();
    for m in msgs {
        c[0].push(m.message_uuid());
        c[1].push(m.destination.clone());
        c[2].push(m.topic().to_owned());
        c[3].push(m.message.clone());
    }
    c
}

/// Names the destinations of `msgs` that do not exist (after a foreign-key violation).
async fn missing(conn: &mut PgConnection, msgs: &[Outgoing]) -> Error {
    let dests: Vec<String> = msgs.iter().map(|m| m.destination.clone()).collect();
    let found: Result<Vec<String>, _> = sqlx::query_scalar(
        "SELECT d FROM unnest($1::text[]) d
         WHERE NOT EXISTS (SELECT 1 FROM dbos.workflow_status WHERE workflow_uuid = d)",
    )
    .bind(&dests)
    .fetch_all(conn)
    .await;
    match found {
        Ok(v) if !v.is_empty() => Error::NoSuchWorkflow(v.join(", ")),
        _ => Error::NoSuchWorkflow(dests.join(", ")),
    }
}

fn is_fk(e: &sqlx::Error) -> bool {
    dbos_kernel::sqlstate::is(e, dbos_kernel::sqlstate::FOREIGN_KEY_VIOLATION)
}

/// Sends messages; a message whose idempotency key was used before for the same destination is
/// not delivered again. Returns how many were newly stored.
///
/// 1 round trip (index: `notifications` primary key; the trigger notifies each destination's
/// waiters at commit).
///
/// # Errors
/// [`Error::NoSuchWorkflow`] naming the missing destinations; nothing is stored then.
pub async fn send(conn: &mut PgConnection, msgs: &[Outgoing]) -> Result<u64> {
    let [ids, dests, topics, bodies] = columns(msgs);
    let r = sqlx::query(
        "INSERT INTO dbos.notifications
             (message_uuid, destination_uuid, topic, message, serialization)
         SELECT u, d, t, m, 'portable_json'
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS x(u, d, t, m)
         ON CONFLICT (message_uuid) DO NOTHING",
    )
    .bind(&ids)
    .bind(&dests)
    .bind(&topics)
    .bind(&bodies)
    .execute(&mut *conn)
    .await;
    match r {
        Ok(r) => Ok(r.rows_affected()),
        Err(e) if is_fk(&e) => Err(missing(conn, msgs).await),
        Err(e) => Err(e.into()),
    }
}

/// [`send`] from a workflow, recorded as `op`. `Ok(false)`: not the owner, nothing sent.
///
/// 1 round trip, and 1 commit when run outside a transaction.
///
/// # Errors
/// As [`send`].
pub async fn send_recorded(
    conn: &mut PgConnection,
    op: &Op<'_>,
    msgs: &[Outgoing],
) -> Result<bool> {
    let [ids, dests, topics, bodies] = columns(msgs);
    let sql = format!(
        "WITH {OWN}, sent AS (
             INSERT INTO dbos.notifications
                 (message_uuid, destination_uuid, topic, message, serialization)
             SELECT u, d, t, m, 'portable_json'
             FROM unnest($6::text[], $7::text[], $8::text[], $9::text[]) AS x(u, d, t, m)
             WHERE EXISTS (SELECT 1 FROM own)
             ON CONFLICT (message_uuid) DO NOTHING
             RETURNING 1
         ), {}, {}
         SELECT EXISTS (SELECT 1 FROM rec) AS recorded, (SELECT count(*) FROM sent) AS sent",
        rec("NULL", ""),
        pv(&format!(
            "SELECT 'send', d, NULL::int8, octet_length(m)::int8,
                    jsonb_build_object('topic', NULLIF(t, '{NULL_TOPIC}'))
             FROM unnest($7::text[], $8::text[], $9::text[]) AS x(d, t, m)"
        ))
    );
    let r = bind_op(sqlx::query(&sql), op)
        .bind(&ids)
        .bind(&dests)
        .bind(&topics)
        .bind(&bodies)
        .fetch_one(&mut *conn)
        .await;
    match r {
        Ok(row) => Ok(row.try_get::<bool, _>("recorded")?),
        Err(e) if is_fk(&e) => Err(missing(conn, msgs).await),
        Err(e) => Err(e.into()),
    }
}

/// What [`send_handoff`] did.
#[derive(Debug, PartialEq, Eq)]
pub struct HandedOff {
    /// The sending operation was recorded (always, for a send from outside a workflow); when
    /// not, the sender does not own its workflow and nothing was written.
    pub recorded: bool,
    /// The message recorded as the waiting receive's receipt and consumed: the oldest
    /// unconsumed message of the mailbox, this one when there was none. `None`: the receiver's
    /// execution no longer owns its workflow (or its receipt was recorded already), and the
    /// message waits in the mailbox like any other.
    pub delivered: Option<String>,
    /// With a delivery, the mailbox held no other unconsumed message: the one delivered is
    /// this one, and the mailbox is left empty as of the statement.
    pub fresh: bool,
}

/// Sends one message `m` (without an idempotency key) to a receive waiting for it on this node
/// ([`crate::Claim`]), and in the same statement consumes the oldest message of the mailbox,
/// this one when it was empty, as that receive: records it at the receiver's position, fenced
/// on the receiver's ownership as [`recv_recorded`] is. With `sender`, the send is recorded as
/// that workflow's operation, as in [`send_recorded`], and nothing is written unless it owns
/// its workflow. The sender's row is locked before the receiver's.
///
/// 1 round trip, 1 commit (indexes: primary keys of `workflow_status`, `operation_outputs`
/// and `notifications`, `idx_workflow_topic`).
///
/// # Errors
/// As [`send`].
pub async fn send_handoff(
    conn: &mut PgConnection,
    sender: Option<&Op<'_>>,
    m: &Outgoing,
    to: &crate::Recipient,
) -> Result<HandedOff> {
    debug_assert!(m.idempotency_key.is_none() && m.destination == to.workflow_id);
    let sql = handoff_sql(sender.is_some());
    let q = match sender {
        Some(op) => bind_op(sqlx::query(sql), op),
        None => sqlx::query(sql),
    };
    let r = q
        .bind(m.message_uuid())
        .bind(&m.destination)
        .bind(m.topic())
        .bind(&m.message)
        .bind(&to.owner_xid)
        .bind(to.function_id)
        .bind(to.started_at_ms)
        .bind(&to.name)
        .fetch_one(&mut *conn)
        .await;
    match r {
        Ok(row) => Ok(HandedOff {
            recorded: row.try_get("recorded")?,
            delivered: row.try_get("delivered")?,
            fresh: row.try_get("fresh")?,
        }),
        Err(e) if is_fk(&e) => Err(missing(conn, std::slice::from_ref(m)).await),
        Err(e) => Err(e.into()),
    }
}

/// The statement of [`send_handoff`], with or without a sending workflow's record.
fn handoff_sql(recorded: bool) -> &'static str {
    static SQL: OnceLock<[String; 2]> = OnceLock::new();
    &SQL.get_or_init(|| [compose_handoff(false), compose_handoff(true)])[usize::from(recorded)]
}

fn compose_handoff(recorded: bool) -> String {
    // The sender's operation binds $1..$5; the message and the receiver follow.
    let first = if recorded { 6 } else { 1 };
    let p: Vec<String> = (first..first + 8).map(|i| format!("${i}")).collect();
    let [uuid, dest, topic, body, owner, fid, started, name] =
        [0, 1, 2, 3, 4, 5, 6, 7].map(|i| &p[i]);
    // The receiver's operation, its CTEs named apart from the sender's.
    let to = Params {
        wf: dest,
        owner,
        fid,
        started,
        name,
        own: "h_own",
        rec: "h_rec",
        pv: "h_pv",
    };
    let (sender, gate, record) = if recorded {
        (
            format!("{OWN}, "),
            " AND EXISTS (SELECT 1 FROM own)",
            format!(
                ", {}, {}",
                rec("NULL", ""),
                pv(&format!(
                    "SELECT 'send', {dest}::text, NULL::int8, octet_length({body})::int8,
                            jsonb_build_object('topic', NULLIF({topic}, '{NULL_TOPIC}'))"
                ))
            ),
        )
    } else {
        (String::new(), "", String::new())
    };
    let recorded_col = if recorded {
        "EXISTS (SELECT 1 FROM rec)"
    } else {
        "true"
    };
    format!(
        "WITH {sender}{}, h_next AS (
             SELECT message_uuid, message FROM dbos.notifications
             WHERE destination_uuid = {dest} AND topic = {topic} AND NOT consumed
               AND EXISTS (SELECT 1 FROM h_own)
             ORDER BY created_at_epoch_ms, age(xmin) DESC, ctid
             LIMIT 1
             FOR UPDATE
         ), {}, h_old AS (
             UPDATE dbos.notifications SET consumed = TRUE, consumed_by_function_id = {fid}
             WHERE message_uuid = (SELECT message_uuid FROM h_next)
               AND EXISTS (SELECT 1 FROM h_rec)
             RETURNING 1
         ), sent AS (
             INSERT INTO dbos.notifications
                 (message_uuid, destination_uuid, topic, message, serialization, consumed,
                  consumed_by_function_id)
             SELECT {uuid}, {dest}, {topic}, {body}, 'portable_json', h.mine,
                    CASE WHEN h.mine THEN {fid} END
             FROM (SELECT EXISTS (SELECT 1 FROM h_rec) AND NOT EXISTS (SELECT 1 FROM h_next)
                       AS mine) h
             WHERE true{gate}
             ON CONFLICT (message_uuid) DO NOTHING
             RETURNING 1
         ), {}{record}
         SELECT {recorded_col} AS recorded, (SELECT output FROM h_rec) AS delivered,
                NOT EXISTS (SELECT 1 FROM h_next) AS fresh",
        own_cte_for(&to, gate),
        record_cte_for(
            &to,
            &format!("COALESCE((SELECT message FROM h_next), {body})"),
            "",
            "output"
        ),
        prov_cte_for(
            &to,
            &format!(
                "SELECT 'recv', NULLIF({topic}, '{NULL_TOPIC}'), NULL::int8,
                        octet_length(output)::int8, NULL::jsonb FROM h_rec"
            )
        ),
    )
}

/// What [`recv_recorded`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// The oldest unconsumed message of the mailbox, now consumed and recorded.
    Message(String),
    /// No message; recorded as `null` if the caller said this was the final probe.
    Empty,
    /// The caller does not own the workflow; nothing was consumed.
    NotOwner,
}

/// Consumes the oldest unconsumed message of `topic` in the workflow's mailbox and records it as
/// `op` (output: the message), in one statement. With `last` set, an empty mailbox is recorded
/// as `null` (the receive timed out).
///
/// 1 round trip, 1 commit, which writes nothing when the mailbox is empty and `last` is unset
/// (index: `idx_workflow_topic (destination_uuid, topic)`). The mailbox is read once (`next`):
/// DBOS keeps consumed messages and indexes no `consumed`, so each read visits every message the
/// mailbox ever had. Messages of
/// one mailbox are taken oldest first: by send time, then by inserting transaction, then by
/// position, so messages of one sender keep their order even within a millisecond.
///
/// # Errors
/// Database errors.
pub async fn recv_recorded(
    conn: &mut PgConnection,
    op: &Op<'_>,
    topic: Option<&str>,
    last: bool,
) -> Result<Received> {
    // An empty mailbox is not locked (unless `last` records it): waiting costs no commit.
    let sql = format!(
        "WITH next AS (
             SELECT message_uuid FROM dbos.notifications
             WHERE destination_uuid = $1 AND topic = $6 AND NOT consumed
             ORDER BY created_at_epoch_ms, age(xmin) DESC, ctid
             LIMIT 1
         ), {}, got AS (
             UPDATE dbos.notifications SET consumed = TRUE, consumed_by_function_id = $3
             WHERE message_uuid = (SELECT message_uuid FROM next)
               AND NOT consumed AND EXISTS (SELECT 1 FROM own)
             RETURNING message
         ), {}, {}
         SELECT (SELECT message FROM got) AS message, {OWNED} AS owned",
        own_cte_if("$7 OR EXISTS (SELECT 1 FROM next)"),
        rec(
            "COALESCE((SELECT message FROM got), 'null')",
            "WHERE EXISTS (SELECT 1 FROM got) OR $7"
        ),
        pv(&format!(
            "SELECT 'recv', NULLIF($6, '{NULL_TOPIC}'), NULL::int8,
                    octet_length(message)::int8, NULL::jsonb FROM got"
        ))
    );
    let row = bind_op(sqlx::query(&sql), op)
        .bind(topic.unwrap_or(NULL_TOPIC))
        .bind(last)
        .fetch_one(conn)
        .await?;
    let message: Option<String> = row.try_get("message")?;
    Ok(match (message, row.try_get::<bool, _>("owned")?) {
        (_, false) => Received::NotOwner,
        (Some(m), true) => Received::Message(m),
        (None, true) => Received::Empty,
    })
}

/// Sets an event of a workflow (latest value wins) and appends it to the event history under
/// the operation's function ID, recorded as `op`; waiters of the event are notified at commit.
/// `Ok(false)`: not the owner, nothing written.
///
/// 1 round trip, 1 commit (indexes: primary keys of `workflow_events`, `_history`).
///
/// # Errors
/// Database errors.
pub async fn set_event_recorded(
    conn: &mut PgConnection,
    op: &Op<'_>,
    key: &str,
    value: &str,
) -> Result<bool> {
    let sql = format!(
        "WITH {OWN}, ev AS (
             INSERT INTO dbos.workflow_events (workflow_uuid, key, value, serialization)
             SELECT $1, $6, $7, 'portable_json' FROM own
             ON CONFLICT (workflow_uuid, key)
                 DO UPDATE SET value = excluded.value, serialization = excluded.serialization
             RETURNING 1
         ), hist AS (
             INSERT INTO dbos.workflow_events_history
                 (workflow_uuid, function_id, key, value, serialization)
             SELECT $1, $3, $6, $7, 'portable_json' FROM own
             ON CONFLICT (workflow_uuid, function_id, key)
                 DO UPDATE SET value = excluded.value, serialization = excluded.serialization
             RETURNING 1
         ), {}, {}
         SELECT EXISTS (SELECT 1 FROM rec) AS recorded,
                (SELECT count(pg_notify('{}', $1 || '::' || $6)) FROM own) AS notified",
        rec("NULL", ""),
        pv("SELECT 'set_event', $6::text, NULL::int8, octet_length($7)::int8, NULL::jsonb"),
        crate::EVENTS_CHANNEL
    );
    let row = bind_op(sqlx::query(&sql), op)
        .bind(key)
        .bind(value)
        .fetch_one(conn)
        .await?;
    Ok(row.try_get::<bool, _>("recorded")?)
}

/// The latest value of a workflow's event.
///
/// 1 round trip (index: `workflow_events` primary key).
///
/// # Errors
/// Database errors.
pub async fn get_event(
    conn: &mut PgConnection,
    workflow_id: &str,
    key: &str,
) -> Result<Option<String>> {
    Ok(sqlx::query_scalar(
        "SELECT value FROM dbos.workflow_events WHERE workflow_uuid = $1 AND key = $2",
    )
    .bind(workflow_id)
    .bind(key)
    .fetch_optional(conn)
    .await?)
}

/// Every event of a workflow with its latest value, by key.
///
/// 1 round trip (index: `workflow_events` primary key).
///
/// # Errors
/// Database errors.
pub async fn get_all_events(
    conn: &mut PgConnection,
    workflow_id: &str,
) -> Result<Vec<(String, String)>> {
    Ok(sqlx::query_as(
        "SELECT key, value FROM dbos.workflow_events WHERE workflow_uuid = $1 ORDER BY key",
    )
    .bind(workflow_id)
    .fetch_all(conn)
    .await?)
}

/// Whether a workflow exists.
///
/// 1 round trip (index: `workflow_status` primary key).
///
/// # Errors
/// Database errors.
pub async fn workflow_exists(conn: &mut PgConnection, workflow_id: &str) -> Result<bool> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM dbos.workflow_status WHERE workflow_uuid = $1)",
    )
    .bind(workflow_id)
    .fetch_one(conn)
    .await?)
}

/// Appends `value` to the workflow's stream `key`, recorded as `op`; readers are notified at
/// commit. Returns the value's offset, `None` when the caller is not the owner.
///
/// 1 round trip, 1 commit (index: `streams` primary key). The workflow row lock orders the
/// writers of one workflow; a writer that still collides on an offset retries.
///
/// # Errors
/// Database errors.
pub async fn write_stream_recorded(
    conn: &mut PgConnection,
    op: &Op<'_>,
    key: &str,
    value: &str,
) -> Result<Option<i32>> {
    write_stream(conn, op, key, value, true).await
}

/// Appends `value` to the workflow's stream `key` from inside a step: ownership is checked and
/// the value carries the step's function ID (`op.function_id`), but no operation is recorded,
/// as DBOS does for streams written by steps. Returns the offset, `None` when the caller is not
/// the owner.
///
/// 1 round trip, 1 commit.
///
/// # Errors
/// Database errors.
pub async fn write_stream_from_step(
    conn: &mut PgConnection,
    op: &Op<'_>,
    key: &str,
    value: &str,
) -> Result<Option<i32>> {
    write_stream(conn, op, key, value, false).await
}

async fn write_stream(
    conn: &mut PgConnection,
    op: &Op<'_>,
    key: &str,
    value: &str,
    record: bool,
) -> Result<Option<i32>> {
    let sql = format!(
        "WITH {OWN}, s AS (
             INSERT INTO dbos.streams
                 (workflow_uuid, key, value, \"offset\", function_id, serialization)
             SELECT $1, $6, $7,
                    COALESCE((SELECT max(\"offset\") FROM dbos.streams
                              WHERE workflow_uuid = $1 AND key = $6), -1) + 1,
                    $3, 'portable_json'
             FROM own
             RETURNING \"offset\"
         ), {}, {}
         SELECT (SELECT \"offset\" FROM s) AS off, EXISTS (SELECT 1 FROM rec) AS recorded,
                (SELECT count(pg_notify('{}', $1 || '::' || $6)) FROM own) AS notified",
        rec("NULL", "WHERE $8"),
        pv("SELECT 'write_stream', $6::text, NULL::int8, octet_length($7)::int8, NULL::jsonb"),
        crate::STREAMS_CHANNEL
    );
    let mut attempt = 0;
    loop {
        attempt += 1;
        let r = bind_op(sqlx::query(&sql), op)
            .bind(key)
            .bind(value)
            .bind(record)
            .fetch_one(&mut *conn)
            .await;
        match r {
            Ok(row) => {
                let off: Option<i32> = row.try_get("off")?;
                let recorded: bool = row.try_get("recorded")?;
                return Ok(off.filter(|_| !record || recorded));
            }
            Err(e)
                if dbos_kernel::sqlstate::is(&e, dbos_kernel::sqlstate::UNIQUE_VIOLATION)
                    && attempt < 10 =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(attempt * 5)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Up to `max` consecutive values of stream `key` from `offset`, with the writer's status;
/// `None` when the workflow does not exist.
///
/// 1 round trip (index: `streams` primary key).
///
/// # Errors
/// Database errors.
pub async fn read_stream(
    conn: &mut PgConnection,
    workflow_id: &str,
    key: &str,
    offset: i32,
    max: i32,
) -> Result<Option<Chunk>> {
    let rows: Vec<(String, Option<i32>, Option<String>)> = sqlx::query_as(
        "SELECT w.status, s.\"offset\", s.value
         FROM dbos.workflow_status w
         LEFT JOIN dbos.streams s
             ON s.workflow_uuid = w.workflow_uuid AND s.key = $2
            AND s.\"offset\" >= $3 AND s.\"offset\" < $3 + $4
         WHERE w.workflow_uuid = $1
         ORDER BY s.\"offset\"",
    )
    .bind(workflow_id)
    .bind(key)
    .bind(offset)
    .bind(max)
    .fetch_all(conn)
    .await?;
    let Some(status) = rows.first().map(|r| r.0.clone()) else {
        return Ok(None);
    };
    let mut values = Vec::new();
    for (_, off, value) in rows {
        match (off, value) {
            (Some(o), Some(v)) if o == offset + values.len() as i32 => values.push(v),
            _ => break,
        }
    }
    Ok(Some(Chunk { status, values }))
}

/// Whether a workflow status is final (no more stream values can come).
pub fn is_terminal(status: &str) -> bool {
    !matches!(status, "PENDING" | "ENQUEUED" | "DELAYED")
}

fn check_topic(topic: &str) -> Result<()> {
    check_name("topic", topic)
}

/// Topic, subscriber and key names: 1 to 255 bytes.
pub(crate) fn check_name(what: &'static str, value: &str) -> Result<()> {
    let why = if value.is_empty() {
        "it is empty"
    } else if value.len() > 255 {
        "it is longer than 255 bytes"
    } else {
        return Ok(());
    };
    Err(Error::InvalidName {
        what,
        value: dbos_store::limits::shown(value),
        why,
    })
}

/// Publishes `payloads` to `topic` (created if new) in order; returns the first and last
/// sequence numbers. Subscribers are notified at commit.
///
/// 1 round trip (indexes: `topics` and `messages` primary keys). The topic row stays locked
/// until commit, so the messages of a topic commit in sequence order.
///
/// # Errors
/// [`Error::InvalidName`].
pub async fn publish(
    conn: &mut PgConnection,
    topic: &str,
    payloads: &[String],
    publisher: Option<&str>,
) -> Result<(i64, i64)> {
    check_topic(topic)?;
    let row = sqlx::query(&format!(
        "WITH t AS (
             INSERT INTO msg.topics AS t (name, next_seq) VALUES ($1, 1 + $3)
             ON CONFLICT (name) DO UPDATE SET next_seq = t.next_seq + $3
             RETURNING next_seq - $3 AS first
         ), ins AS (
             INSERT INTO msg.messages (topic, seq, payload, publisher)
             SELECT $1, t.first + p.ord - 1, p.payload, $4
             FROM t, unnest($2::text[]) WITH ORDINALITY AS p(payload, ord)
             RETURNING seq
         )
         SELECT (SELECT min(seq) FROM ins) AS first, (SELECT max(seq) FROM ins) AS last,
                pg_notify('{}', $1)",
        crate::TOPICS_CHANNEL
    ))
    .bind(topic)
    .bind(payloads)
    .bind(payloads.len() as i64)
    .bind(publisher)
    .fetch_one(conn)
    .await?;
    Ok((
        row.try_get::<Option<i64>, _>("first")?.unwrap_or(0),
        row.try_get::<Option<i64>, _>("last")?.unwrap_or(0),
    ))
}

/// [`publish`] from a workflow, recorded as `op` (output: `[first, last]`); `None` when the
/// caller is not the owner.
///
/// 1 round trip, 1 commit.
///
/// # Errors
/// [`Error::InvalidName`].
pub async fn publish_recorded(
    conn: &mut PgConnection,
    op: &Op<'_>,
    topic: &str,
    payloads: &[String],
) -> Result<Option<(i64, i64)>> {
    check_topic(topic)?;
    // The topic row is only touched when the caller owns the workflow.
    let sql = format!(
        "WITH {OWN}, t AS (
             INSERT INTO msg.topics AS t (name, next_seq) SELECT $6, 1 + $8 FROM own
             ON CONFLICT (name) DO UPDATE SET next_seq = t.next_seq + $8
             RETURNING next_seq - $8 AS first
         ), ins AS (
             INSERT INTO msg.messages (topic, seq, payload, publisher)
             SELECT $6, t.first + p.ord - 1, p.payload, $9
             FROM t, unnest($7::text[]) WITH ORDINALITY AS p(payload, ord)
             RETURNING seq
         ), {}, {}
         SELECT (SELECT min(seq) FROM ins) AS first, (SELECT max(seq) FROM ins) AS last,
                EXISTS (SELECT 1 FROM rec) AS recorded,
                (SELECT count(pg_notify('{}', $6)) FROM own) AS notified",
        rec(
            "json_build_array((SELECT min(seq) FROM ins), (SELECT max(seq) FROM ins))::text",
            ""
        ),
        pv("SELECT 'publish', $6::text, NULL::int8,
                   (SELECT sum(octet_length(p))::int8 FROM unnest($7::text[]) p),
                   jsonb_build_object('messages', $8::int8)"),
        crate::TOPICS_CHANNEL
    );
    let row = bind_op(sqlx::query(&sql), op)
        .bind(topic)
        .bind(payloads)
        .bind(payloads.len() as i64)
        .bind(op.workflow_id)
        .fetch_one(conn)
        .await?;
    if !row.try_get::<bool, _>("recorded")? {
        return Ok(None);
    }
    Ok(Some((
        row.try_get::<Option<i64>, _>("first")?.unwrap_or(0),
        row.try_get::<Option<i64>, _>("last")?.unwrap_or(0),
    )))
}

/// Where a new subscription starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// With the next message published.
    Next,
    /// With the oldest message retained.
    Oldest,
}

/// Subscribes `subscriber` to `topic` (created if new); an existing subscription keeps its
/// cursor. Returns the cursor (last consumed sequence number).
///
/// 1 round trip (indexes: `topics` and `subscriptions` primary keys).
///
/// # Errors
/// [`Error::InvalidName`].
pub async fn subscribe(
    conn: &mut PgConnection,
    topic: &str,
    subscriber: &str,
    start: Start,
) -> Result<i64> {
    check_topic(topic)?;
    check_name("subscriber", subscriber)?;
    let cursor = match start {
        Start::Next => "t.next_seq - 1",
        Start::Oldest => "0",
    };
    // Both inserts return the row on a conflict (`DO UPDATE` of nothing): a topic or a
    // subscription that a concurrent statement inserts commits after this statement's snapshot,
    // so a read of it beside `DO NOTHING` would find no row.
    Ok(sqlx::query_scalar(&format!(
        "WITH t AS (
             INSERT INTO msg.topics AS t (name) VALUES ($1)
             ON CONFLICT (name) DO UPDATE SET name = t.name
             RETURNING next_seq
         ), s AS (
             INSERT INTO msg.subscriptions AS s (topic, subscriber, cursor)
             SELECT $1, $2, {cursor} FROM t
             ON CONFLICT (topic, subscriber) DO UPDATE SET cursor = s.cursor
             RETURNING cursor
         )
         SELECT cursor FROM s"
    ))
    .bind(topic)
    .bind(subscriber)
    .fetch_one(conn)
    .await?)
}

/// Ends a subscription; returns whether there was one.
///
/// 1 round trip.
///
/// # Errors
/// Database errors.
pub async fn unsubscribe(conn: &mut PgConnection, topic: &str, subscriber: &str) -> Result<bool> {
    Ok(
        sqlx::query("DELETE FROM msg.subscriptions WHERE topic = $1 AND subscriber = $2")
            .bind(topic)
            .bind(subscriber)
            .execute(conn)
            .await?
            .rows_affected()
            == 1,
    )
}

/// The CTEs of a consume of topic `t` by subscriber `s`: `sub`, the subscription, locked when
/// `lock_if` holds; `got`, up to `n` messages after its cursor, when `guard` (an extra
/// condition) holds. [`advance_cte`] moves the cursor past them.
fn consume_cte(t: &str, s: &str, n: &str, guard: &str, lock_if: &str) -> String {
    format!(
        "sub AS (
        SELECT cursor FROM msg.subscriptions
        WHERE topic = {t} AND subscriber = {s} AND ({lock_if}) FOR UPDATE
    ), got AS (
        SELECT m.seq, m.payload FROM msg.messages m, sub
        WHERE m.topic = {t} AND m.seq > sub.cursor {guard}
        ORDER BY m.seq LIMIT {n}
    )"
    )
}

/// The CTE `adv` after [`consume_cte`]: moves the cursor past the messages of `got`, when
/// there are any and `cond` holds.
fn advance_cte(t: &str, s: &str, cond: &str) -> String {
    format!(
        "adv AS (
        UPDATE msg.subscriptions SET cursor = (SELECT max(seq) FROM got), consumed_at = now()
        WHERE topic = {t} AND subscriber = {s} AND EXISTS (SELECT 1 FROM got) {cond}
        RETURNING 1
    )"
    )
}

fn delivered(
    rows: Vec<sqlx::postgres::PgRow>,
    topic: &str,
    subscriber: &str,
) -> Result<Vec<Delivered>> {
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        if !r.try_get::<bool, _>("subscribed")? {
            return Err(Error::NotSubscribed {
                topic: topic.to_owned(),
                subscriber: subscriber.to_owned(),
            });
        }
        if let (Some(seq), Some(payload)) = (r.try_get("seq")?, r.try_get("payload")?) {
            out.push(Delivered { seq, payload });
        }
    }
    Ok(out)
}

/// Takes up to `max` messages after the subscription's cursor and advances it, in the caller's
/// transaction: the caller's other writes and the cursor commit together.
///
/// 1 round trip (indexes: `subscriptions`, `messages` primary keys).
///
/// # Errors
/// [`Error::NotSubscribed`].
pub async fn consume(
    conn: &mut PgConnection,
    topic: &str,
    subscriber: &str,
    max: i64,
) -> Result<Vec<Delivered>> {
    let rows = sqlx::query(&format!(
        "WITH {}, {}
         SELECT EXISTS (SELECT 1 FROM sub) AS subscribed, g.seq, g.payload
         FROM (SELECT 1) one LEFT JOIN got g ON TRUE ORDER BY g.seq",
        consume_cte("$1", "$2", "$3", "", "true"),
        advance_cte("$1", "$2", "")
    ))
    .bind(topic)
    .bind(subscriber)
    .bind(max)
    .fetch_all(conn)
    .await?;
    delivered(rows, topic, subscriber)
}

/// [`consume`] for several subscriptions in one statement and one commit: `subs[i]` is a
/// `(topic, subscriber)`, and the answer's element `i` its messages (up to `max`), or
/// [`Error::NotSubscribed`]. Each subscription at most once.
///
/// The subscriptions are locked in the order of their keys, so two of these statements never
/// wait on each other in a cycle. A message that several
/// of them take comes back once, and each gets its own copy here: subscribers of one topic
/// consuming together are mostly at the same place.
///
/// 1 round trip (indexes: `subscriptions`, `messages` primary keys).
///
/// # Errors
/// [`Error::NamedTwice`] (nothing is consumed); database errors, for the whole batch.
pub async fn consume_many(
    conn: &mut PgConnection,
    subs: &[(String, String)],
    max: i64,
) -> Result<Vec<Result<Vec<Delivered>>>> {
    let mut seen = HashSet::with_capacity(subs.len());
    if let Some((topic, subscriber)) = subs.iter().find(|s| !seen.insert(*s)) {
        return Err(Error::NamedTwice {
            topic: topic.clone(),
            subscriber: subscriber.clone(),
        });
    }
    let (topics, subscribers): (Vec<&str>, Vec<&str>) =
        subs.iter().map(|(t, s)| (t.as_str(), s.as_str())).unzip();
    // Rows of kind 'r': request `i`, whether subscribed, and the range (cursor, last] it takes;
    // of kind 'm': a message some request takes.
    static SQL: OnceLock<String> = OnceLock::new();
    let sql = SQL.get_or_init(|| {
        format!(
            "WITH r AS (
             SELECT * FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS r(topic, subscriber, i)
         ), {}, {}
         SELECT 'r' AS kind, r.i, span.i IS NOT NULL AS subscribed, NULL::text AS topic,
                span.cursor AS seq, span.last, NULL::text AS payload
         FROM r LEFT JOIN span ON span.i = r.i
         UNION ALL
         SELECT 'm', NULL, NULL, {}",
            spans_cte("r", "$3"),
            advance_many_cte(""),
            messages_taken("m.payload"),
        )
    });
    let rows = sqlx::query(sql)
        .bind(&topics)
        .bind(&subscribers)
        .bind(max)
        .fetch_all(conn)
        .await?;
    let (requests, taken) = split_rows(rows, subs.len())?;
    let mut answers = Vec::with_capacity(subs.len());
    for ((topic, subscriber), row) in subs.iter().zip(requests) {
        let subscribed = match &row {
            Some(r) => r.try_get::<bool, _>("subscribed")?,
            None => false,
        };
        answers.push(if subscribed {
            Ok(in_range(taken.get(topic), range(row.as_ref())?))
        } else {
            Err(Error::NotSubscribed {
                topic: topic.clone(),
                subscriber: subscriber.clone(),
            })
        });
    }
    Ok(answers)
}

/// The CTEs of a combined consume that take the messages: `sub`, the subscriptions of the
/// requests in `from` (rows of `r`: `i`, `topic`, `subscriber`), locked in key order; `span`,
/// each one's cursor and the last of the messages it takes (up to `max` after the cursor);
/// `ranges`, per topic, from the lowest cursor to the highest last. [`advance_many_cte`] moves
/// the cursors.
fn spans_cte(from: &str, max: &str) -> String {
    format!(
        "sub AS (
             SELECT r.i, s.topic, s.subscriber, s.cursor
             FROM {from}
             JOIN msg.subscriptions s ON s.topic = r.topic AND s.subscriber = r.subscriber
             ORDER BY s.topic, s.subscriber
             FOR UPDATE OF s
         ), span AS (
             SELECT sub.*, (SELECT max(x.seq) FROM (
                                SELECT m.seq FROM msg.messages m
                                WHERE m.topic = sub.topic AND m.seq > sub.cursor
                                ORDER BY m.seq LIMIT {max}) x) AS last
             FROM sub
         ), ranges AS (
             SELECT topic, min(cursor) AS lo, max(last) AS hi FROM span
             WHERE last IS NOT NULL GROUP BY topic
         )"
    )
}

/// The CTE `adv` after [`spans_cte`]: moves each cursor of `span` that takes messages, when
/// `cond` (SQL over `span`) holds.
fn advance_many_cte(cond: &str) -> String {
    format!(
        "adv AS (
             UPDATE msg.subscriptions s SET cursor = span.last, consumed_at = now()
             FROM span
             WHERE s.topic = span.topic AND s.subscriber = span.subscriber
               AND span.last IS NOT NULL {cond}
         )"
    )
}

/// The end of the select of rows of kind 'm' after [`spans_cte`]: topic, sequence number, a
/// column left empty, and `payload` (SQL over the message `m`) of each message some request
/// takes, once.
fn messages_taken(payload: &str) -> String {
    format!(
        "m.topic, m.seq, NULL, {payload}
         FROM ranges g JOIN msg.messages m ON m.topic = g.topic AND m.seq > g.lo AND m.seq <= g.hi
         WHERE EXISTS (SELECT 1 FROM span
                       WHERE span.topic = m.topic AND m.seq > span.cursor AND m.seq <= span.last)"
    )
}

/// The rows of a combined consume: each request's own (kind 'r', by its ordinal `i`), and the
/// messages taken, each once (kind 'm'), by topic in sequence order.
type Split = (
    Vec<Option<sqlx::postgres::PgRow>>,
    HashMap<String, Vec<(i64, String)>>,
);

fn split_rows(rows: Vec<sqlx::postgres::PgRow>, requests: usize) -> Result<Split> {
    let mut per_request = Vec::new();
    per_request.resize_with(requests, || None);
    let mut taken: HashMap<String, Vec<(i64, String)>> = HashMap::new();
    for r in rows {
        if r.try_get::<&str, _>("kind")? == "m" {
            taken
                .entry(r.try_get("topic")?)
                .or_default()
                .push((r.try_get("seq")?, r.try_get("payload")?));
            continue;
        }
        let i = usize::try_from(r.try_get::<i64, _>("i")? - 1).unwrap_or(usize::MAX);
        if let Some(slot) = per_request.get_mut(i) {
            *slot = Some(r);
        }
    }
    for messages in taken.values_mut() {
        messages.sort_unstable_by_key(|(seq, _)| *seq);
    }
    Ok((per_request, taken))
}

/// The range `(cursor, last]` a request's row says it took, if any (`seq` and `last`).
fn range(row: Option<&sqlx::postgres::PgRow>) -> Result<Option<(i64, i64)>> {
    let Some(r) = row else {
        return Ok(None);
    };
    Ok(
        match (
            r.try_get::<Option<i64>, _>("seq")?,
            r.try_get::<Option<i64>, _>("last")?,
        ) {
            (Some(cursor), Some(last)) => Some((cursor, last)),
            _ => None,
        },
    )
}

/// [`consume`] from a workflow, recorded as `op` (output: the messages as a JSON array of
/// `{seq, payload}`): each message is consumed exactly once. Nothing is recorded when there is
/// no message, unless `last`. `None` when the caller is not the owner.
///
/// The cursor moves only with the record: when `op` was recorded already (an earlier attempt
/// committed, though its caller saw an error), nothing is taken, and the answer is what that
/// attempt recorded.
///
/// 1 round trip, 1 commit, which writes nothing when no message waits and `last` is unset.
///
/// # Errors
/// [`Error::NotSubscribed`].
pub async fn consume_recorded(
    conn: &mut PgConnection,
    op: &Op<'_>,
    topic: &str,
    subscriber: &str,
    max: i64,
    last: bool,
) -> Result<Option<Vec<Delivered>>> {
    // Nothing is locked when nothing waits (unless `last` records it): waiting costs no commit.
    let waiting = "$9 OR EXISTS (
        SELECT 1 FROM msg.subscriptions s JOIN msg.messages m ON m.topic = s.topic
        WHERE s.topic = $6 AND s.subscriber = $7 AND m.seq > s.cursor)";
    static SQL: OnceLock<String> = OnceLock::new();
    let sql = SQL.get_or_init(|| {
        format!(
            "WITH {}, {}, {}, {}, {}
             SELECT EXISTS (SELECT 1 FROM sub) OR EXISTS (
                        SELECT 1 FROM msg.subscriptions WHERE topic = $6 AND subscriber = $7)
                        AS subscribed,
                    EXISTS (SELECT 1 FROM rec) AS recorded, {OWNED} AS owned,
                    {EARLIER} AS earlier, g.seq, g.payload
             FROM (SELECT 1) one LEFT JOIN got g ON TRUE ORDER BY g.seq",
            own_cte_if(waiting),
            consume_cte("$6", "$7", "$8", "AND EXISTS (SELECT 1 FROM own)", waiting),
            rec(
                "(SELECT COALESCE(json_agg(json_build_object('seq', seq, 'payload', payload::json)
                                            ORDER BY seq), '[]')::text FROM got)",
                "WHERE EXISTS (SELECT 1 FROM got) OR $9"
            ),
            pv(
                "SELECT 'consume', $6::text, NULL::int8, sum(octet_length(payload))::int8,
                       jsonb_build_object('messages', count(*)) FROM got HAVING count(*) > 0"
            ),
            advance_cte("$6", "$7", "AND EXISTS (SELECT 1 FROM rec)")
        )
    });
    // A non-owner takes nothing (`got` is guarded), and the cursor moves only with the record.
    let rows = bind_op(sqlx::query(sql), op)
        .bind(topic)
        .bind(subscriber)
        .bind(max)
        .bind(last)
        .fetch_all(&mut *conn)
        .await?;
    let (owned, recorded, earlier) = match rows.first() {
        Some(r) => (
            r.try_get::<bool, _>("owned")?,
            r.try_get::<bool, _>("recorded")?,
            r.try_get::<Option<String>, _>("earlier")?,
        ),
        None => (false, false, None),
    };
    let msgs = delivered(rows, topic, subscriber)?;
    if !owned {
        return Ok(None);
    }
    if recorded {
        return Ok(Some(msgs));
    }
    // This statement wrote nothing. With no record before it and nothing to take, nothing
    // waited; else an earlier attempt recorded the operation, maybe after this statement's
    // snapshot (its insert then blocked this one's until it committed).
    match earlier {
        Some(text) => Ok(Some(recorded_messages(&text)?)),
        None if msgs.is_empty() && !last => Ok(Some(msgs)),
        None => Ok(Some(recorded_messages(&earlier_output(conn, op).await?)?)),
    }
}

/// What was recorded for the operation (`$1` workflow, `$3` function ID) before the statement
/// began, as [`consume_recorded`] reads it.
const EARLIER: &str = "(SELECT o.output FROM dbos.operation_outputs o
                        WHERE o.workflow_uuid = $1 AND o.function_id = $3)";

/// The output recorded for `op`, read after a statement that found it recorded (by a
/// transaction that committed after that statement's snapshot).
async fn earlier_output(conn: &mut PgConnection, op: &Op<'_>) -> Result<String> {
    let output: Option<String> = sqlx::query_scalar(
        "SELECT output FROM dbos.operation_outputs WHERE workflow_uuid = $1 AND function_id = $2",
    )
    .bind(op.workflow_id)
    .bind(op.function_id)
    .fetch_one(conn)
    .await?;
    Ok(output.unwrap_or_default())
}

/// The messages a consume's record holds: its output, a JSON array of `{seq, payload}`.
fn recorded_messages(text: &str) -> Result<Vec<Delivered>> {
    #[derive(serde::Deserialize)]
    struct Taken {
        seq: i64,
        payload: serde_json::Value,
    }
    let taken: Vec<Taken> = serde_json::from_str(text)?;
    Ok(taken
        .into_iter()
        .map(|t| Delivered {
            seq: t.seq,
            payload: t.payload.to_string(),
        })
        .collect())
}

/// One workflow's consume in [`consume_recorded_many`]: the operation that records it, and the
/// subscription it takes from.
#[derive(Clone, Copy, Debug)]
pub struct RecordedConsume<'a> {
    /// The operation, as [`consume_recorded`] records it.
    pub op: Op<'a>,
    /// The topic.
    pub topic: &'a str,
    /// The subscriber.
    pub subscriber: &'a str,
}

/// [`consume_recorded`] (its probe, `last` unset) for the consumes of several workflows, in one
/// statement and one commit: element `i` of the answer is what `reqs[i]` took (`None` when its
/// caller does not own its workflow), or [`Error::NotSubscribed`]. Each workflow at most once:
/// its row is locked once.
///
/// Only a request with a message waiting locks its workflow's row and its subscription, so a
/// probe that finds nothing writes nothing. The workflow rows are locked in key order, then the
/// subscriptions in theirs.
///
/// 1 round trip (indexes: primary keys of `workflow_status`, `subscriptions`, `messages` and
/// `operation_outputs`).
///
/// # Errors
/// [`Error::WorkflowTwice`] (nothing is consumed); database errors, for the whole batch.
pub async fn consume_recorded_many(
    conn: &mut PgConnection,
    reqs: &[RecordedConsume<'_>],
    max: i64,
) -> Result<Vec<Result<Option<Vec<Delivered>>>>> {
    let mut seen = HashSet::with_capacity(reqs.len());
    if let Some(r) = reqs.iter().find(|r| !seen.insert(r.op.workflow_id)) {
        return Err(Error::WorkflowTwice(r.op.workflow_id.to_owned()));
    }
    static SQL: OnceLock<String> = OnceLock::new();
    let sql = SQL.get_or_init(|| {
        format!(
        "WITH r AS (
             SELECT * FROM unnest($1::text[], $2::text[], $3::int4[], $4::int8[], $5::text[],
                                  $6::text[], $7::text[])
                 WITH ORDINALITY AS r(wf, owner, fid, started, name, topic, subscriber, i)
         ), own AS (
             SELECT r.i, w.executor_id, w.application_version, w.name AS wf_name, w.queue_name
             FROM r JOIN dbos.workflow_status w
                 ON w.workflow_uuid = r.wf AND w.owner_xid = r.owner
                    AND (w.status = 'PENDING') IS TRUE
             WHERE EXISTS (
                 SELECT 1 FROM msg.subscriptions s JOIN msg.messages m ON m.topic = s.topic
                 WHERE s.topic = r.topic AND s.subscriber = r.subscriber AND m.seq > s.cursor)
             ORDER BY w.workflow_uuid
             FOR NO KEY UPDATE OF w
         ), {}, got AS (
             -- Each request's messages, one row each, for its record.
             SELECT span.i, m.seq, m.payload
             FROM span JOIN msg.messages m
                 ON m.topic = span.topic AND m.seq > span.cursor AND m.seq <= span.last
         ), taken AS (
             -- Each request's record, written as text: the payloads are JSON already.
             SELECT i, '[' || string_agg('{{\"seq\":' || seq || ',\"payload\":' || payload || '}}',
                                         ',' ORDER BY seq) || ']' AS output,
                    sum(octet_length(payload))::int8 AS bytes, count(*) AS n
             FROM got GROUP BY i
         ), {}, {}, {}
         -- Rows of kind 'r': request `i`, whether subscribed and owned, whether this statement
         -- recorded it, what an earlier attempt recorded, and the range (cursor, last] it
         -- took; of kind 'm': a message some request took, once.
         SELECT 'r' AS kind, r.i,
                EXISTS (SELECT 1 FROM msg.subscriptions s
                        WHERE s.topic = r.topic AND s.subscriber = r.subscriber) AS subscribed,
                EXISTS (SELECT 1 FROM own WHERE own.i = r.i) OR EXISTS (
                    SELECT 1 FROM dbos.workflow_status w
                    WHERE w.workflow_uuid = r.wf AND w.owner_xid = r.owner
                      AND (w.status = 'PENDING') IS TRUE) AS owned,
                EXISTS (SELECT 1 FROM rec
                        WHERE rec.workflow_uuid = r.wf AND rec.function_id = r.fid) AS recorded,
                (SELECT o.output FROM dbos.operation_outputs o
                 WHERE o.workflow_uuid = r.wf AND o.function_id = r.fid) AS earlier,
                NULL::text AS topic, span.cursor AS seq, span.last, NULL::text AS payload
         FROM r LEFT JOIN span ON span.i = r.i
         UNION ALL
         -- Each message read once is checked once to be JSON: a payload published as text
         -- that is not fails the statement, and nothing is recorded, as in `consume_recorded`.
         SELECT 'm', NULL, NULL, NULL, NULL, NULL, {}",
        spans_cte("own JOIN r ON r.i = own.i", "$8"),
        record_many_cte(
            "SELECT r.wf, r.fid, r.name, tk.output, r.started FROM r JOIN taken tk ON tk.i = r.i"
        ),
        prov_many_cte(
            "SELECT r.wf, r.fid, 'consume', r.topic, NULL::int8, tk.bytes,
                    jsonb_build_object('messages', tk.n), own.executor_id,
                    own.application_version, own.wf_name, own.queue_name
             FROM r JOIN own ON own.i = r.i JOIN taken tk ON tk.i = r.i"
        ),
        // A cursor moves only with its record: a request recorded by an earlier attempt
        // takes nothing.
        advance_many_cte(
            "AND span.i IN (SELECT r.i FROM r JOIN rec
                            ON rec.workflow_uuid = r.wf AND rec.function_id = r.fid)"
        ),
        messages_taken("m.payload::json::text"),
        )
    });
    let rows = sqlx::query(sql)
        .bind(reqs.iter().map(|r| r.op.workflow_id).collect::<Vec<_>>())
        .bind(reqs.iter().map(|r| r.op.owner_xid).collect::<Vec<_>>())
        .bind(reqs.iter().map(|r| r.op.function_id).collect::<Vec<i32>>())
        .bind(
            reqs.iter()
                .map(|r| r.op.started_at_ms)
                .collect::<Vec<i64>>(),
        )
        .bind(reqs.iter().map(|r| r.op.name).collect::<Vec<_>>())
        .bind(reqs.iter().map(|r| r.topic).collect::<Vec<_>>())
        .bind(reqs.iter().map(|r| r.subscriber).collect::<Vec<_>>())
        .bind(max)
        .fetch_all(&mut *conn)
        .await?;
    let (requests, taken) = split_rows(rows, reqs.len())?;
    let mut answers = Vec::with_capacity(reqs.len());
    for (r, row) in reqs.iter().zip(requests) {
        let subscribed = match &row {
            Some(row) => row.try_get("subscribed")?,
            None => false,
        };
        let Some(row) = row.filter(|_| subscribed) else {
            answers.push(Err(Error::NotSubscribed {
                topic: r.topic.to_owned(),
                subscriber: r.subscriber.to_owned(),
            }));
            continue;
        };
        if !row.try_get::<bool, _>("owned")? {
            answers.push(Ok(None));
            continue;
        }
        let took = range(Some(&row))?;
        answers.push(if row.try_get("recorded")? {
            Ok(Some(in_range(taken.get(r.topic), took)))
        } else if let Some(text) = row.try_get::<Option<String>, _>("earlier")? {
            recorded_messages(&text).map(Some)
        } else if took.is_none() {
            Ok(Some(Vec::new()))
        } else {
            // Recorded by an attempt that committed after this statement's snapshot.
            let text = earlier_output(&mut *conn, &r.op).await?;
            recorded_messages(&text).map(Some)
        });
    }
    Ok(answers)
}

/// The messages of `all` (sorted by sequence number) in the range `(cursor, last]`; none
/// without a range.
fn in_range(all: Option<&Vec<(i64, String)>>, range: Option<(i64, i64)>) -> Vec<Delivered> {
    let Some((cursor, last)) = range else {
        return Vec::new();
    };
    let all = all.map_or(&[][..], Vec::as_slice);
    let from = all.partition_point(|(seq, _)| *seq <= cursor);
    all[from..]
        .iter()
        .take_while(|(seq, _)| *seq <= last)
        .map(|(seq, payload)| Delivered {
            seq: *seq,
            payload: payload.clone(),
        })
        .collect()
}

/// Up to `max` retained messages of `topic` after `after`, without a subscription.
///
/// 1 round trip (index: `messages` primary key).
///
/// # Errors
/// Database errors.
pub async fn read_topic(
    conn: &mut PgConnection,
    topic: &str,
    after: i64,
    max: i64,
) -> Result<Vec<Delivered>> {
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "SELECT seq, payload FROM msg.messages WHERE topic = $1 AND seq > $2 ORDER BY seq LIMIT $3",
    )
    .bind(topic)
    .bind(after)
    .bind(max)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(seq, payload)| Delivered { seq, payload })
        .collect())
}

/// Sets a topic's retention (created if new); `None` keeps no limit of that kind.
///
/// 1 round trip.
///
/// # Errors
/// [`Error::InvalidName`]; a limit that is zero or negative (violates the table's CHECK).
pub async fn set_retention(
    conn: &mut PgConnection,
    topic: &str,
    max_age_ms: Option<i64>,
    max_count: Option<i64>,
) -> Result<()> {
    check_topic(topic)?;
    sqlx::query(
        "INSERT INTO msg.topics (name, retain_max_age_ms, retain_max_count) VALUES ($1, $2, $3)
         ON CONFLICT (name) DO UPDATE
             SET retain_max_age_ms = excluded.retain_max_age_ms,
                 retain_max_count = excluded.retain_max_count",
    )
    .bind(topic)
    .bind(max_age_ms)
    .bind(max_count)
    .execute(conn)
    .await?;
    Ok(())
}

/// A pub/sub topic as `os.topics` shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct Topic {
    /// Its name.
    pub topic: String,
    /// Sequence number of its newest message (0 before the first).
    pub head_seq: i64,
    /// Messages still stored.
    pub retained: i64,
    /// Subscriptions to it.
    pub subscribers: i64,
    /// When the oldest stored message was published.
    pub oldest_at: Option<DateTime<Utc>>,
    /// Messages older than this are swept, in ms.
    pub retain_max_age_ms: Option<i64>,
    /// At most this many newest messages are kept.
    pub retain_max_count: Option<i64>,
}

/// Every topic with its head, stored messages, subscribers and retention, by name.
///
/// 1 round trip (a scan of `msg.topics`; per topic, the `messages` and `subscriptions`
/// primary keys).
///
/// # Errors
/// Database errors.
pub async fn topics(conn: &mut PgConnection) -> Result<Vec<Topic>> {
    Ok(sqlx::query_as(
        "SELECT topic, head_seq, retained, subscribers, oldest_at, retain_max_age_ms,
                retain_max_count
         FROM os.topics ORDER BY topic",
    )
    .fetch_all(conn)
    .await?)
}

/// Deletes messages beyond their topic's retention; returns how many. Only one node sweeps at a
/// time (a transaction-scoped advisory lock; the others skip).
///
/// 1 round trip (indexes: `messages` primary key and `published_at`).
///
/// # Errors
/// Database errors.
pub async fn sweep(conn: &mut PgConnection) -> Result<u64> {
    Ok(sqlx::query(
        "WITH lock AS (SELECT pg_try_advisory_xact_lock(hashtext('dbos.msg.sweep')) AS got)
         DELETE FROM msg.messages m USING msg.topics t
         WHERE (SELECT got FROM lock) AND m.topic = t.name
           AND ((t.retain_max_age_ms IS NOT NULL
                 AND m.published_at < now() - t.retain_max_age_ms * interval '1 millisecond')
             OR (t.retain_max_count IS NOT NULL AND m.seq < t.next_seq - t.retain_max_count))",
    )
    .execute(conn)
    .await?
    .rows_affected())
}

/// Copies workflow `from`'s events (with their history) and stream values recorded before
/// `start_step` to workflow `to`: the messaging half of a fork, run in its transaction.
///
/// 2 round trips.
///
/// # Errors
/// Database errors.
pub async fn copy_for_fork(
    tx: &mut PgConnection,
    from: &str,
    to: &str,
    start_step: i32,
) -> Result<()> {
    sqlx::query(
        "WITH h AS (
             INSERT INTO dbos.workflow_events_history (workflow_uuid, function_id, key, value, serialization)
             SELECT $2, function_id, key, value, serialization FROM dbos.workflow_events_history
             WHERE workflow_uuid = $1 AND function_id < $3
             RETURNING function_id, key, value, serialization
         )
         INSERT INTO dbos.workflow_events (workflow_uuid, key, value, serialization)
         SELECT DISTINCT ON (key) $2, key, value, serialization FROM h ORDER BY key, function_id DESC",
    )
    .bind(from)
    .bind(to)
    .bind(start_step)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO dbos.streams (workflow_uuid, key, value, \"offset\", function_id, serialization)
         SELECT $2, key, value, \"offset\", function_id, serialization FROM dbos.streams
         WHERE workflow_uuid = $1 AND function_id < $3",
    )
    .bind(from)
    .bind(to)
    .bind(start_step)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Erases what workflow `id` recorded from `start_step` on in the messaging tables — event
/// history and stream values from that step, messages it has not consumed or consumed from that
/// step — and rebuilds its latest events from the history kept: the messaging half of a
/// rewind, run in its transaction.
///
/// 5 round trips.
///
/// # Errors
/// Database errors.
pub async fn rewind(tx: &mut PgConnection, id: &str, start_step: i32) -> Result<()> {
    for sql in [
        "DELETE FROM dbos.workflow_events_history WHERE workflow_uuid = $1 AND function_id >= $2",
        "DELETE FROM dbos.streams WHERE workflow_uuid = $1 AND function_id >= $2",
        "DELETE FROM dbos.notifications WHERE destination_uuid = $1
             AND (NOT consumed OR consumed_by_function_id >= $2)",
        "DELETE FROM dbos.workflow_events WHERE workflow_uuid = $1 AND $2 > 0",
        "INSERT INTO dbos.workflow_events (workflow_uuid, key, value, serialization)
         SELECT DISTINCT ON (key) workflow_uuid, key, value, serialization
         FROM dbos.workflow_events_history WHERE workflow_uuid = $1 AND $2 > 0
         ORDER BY key, function_id DESC",
    ] {
        sqlx::query(sql)
            .bind(id)
            .bind(start_step)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}
