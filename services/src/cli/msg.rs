//! `dbos msg ...`: send to workflows, read their events and streams, publish and subscribe.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Subcommand;
use dbos_msg::{Client, Start};
use serde_json::{json, Value};

use super::render::{self, Format};
use super::{parse_duration, ConnArgs};

#[derive(Debug, Subcommand)]
pub(super) enum MsgCommand {
    /// Send a JSON message to a workflow's mailbox (what its `recv` takes).
    Send {
        /// Destination workflow ID.
        workflow_id: String,
        /// The message, as JSON (a string is '"text"'); `-` reads it from standard input,
        /// `@FILE` from a file.
        message: String,
        /// Mailbox topic; the default mailbox when unset.
        #[arg(long)]
        topic: Option<String>,
        /// Idempotency key: a repeated send with the same key is delivered once.
        #[arg(long)]
        key: Option<String>,
    },
    /// Show a workflow's events (latest value of each key).
    Events {
        /// Workflow ID.
        workflow_id: String,
        /// Only this key, waiting up to --wait for it to be set.
        #[arg(long)]
        key: Option<String>,
        /// How long to wait for --key (e.g. 500ms, 10s, 2m).
        #[arg(long, value_parser = parse_duration, default_value = "0s")]
        wait: Duration,
    },
    /// Print the values of a workflow's stream, one JSON value per line.
    Stream {
        /// Workflow ID.
        workflow_id: String,
        /// Stream key.
        key: String,
        /// First offset to print.
        #[arg(long, default_value_t = 0)]
        offset: i32,
        /// Keep printing values as they are written, until the stream is closed or its
        /// writer ends.
        #[arg(short = 'f', long)]
        follow: bool,
    },
    /// Publish JSON messages to a topic, in order, in one transaction.
    Publish {
        /// Topic.
        topic: String,
        /// Messages, as JSON; `-` reads one from standard input, `@FILE` from a file.
        #[arg(required = true)]
        messages: Vec<String>,
    },
    /// Print a topic's messages: the retained ones, or a named subscription's new ones.
    Subscribe {
        /// Topic.
        topic: String,
        /// Durable subscription name: consume from its cursor (created at the next message, or
        /// the oldest with --from-start), advancing it. Without a name, retained messages are
        /// printed and nothing is consumed.
        #[arg(long)]
        name: Option<String>,
        /// A new named subscription starts at the oldest retained message.
        #[arg(long)]
        from_start: bool,
        /// Keep printing messages as they are published (Ctrl-C stops).
        #[arg(short = 'f', long)]
        follow: bool,
    },
    /// Show topics: head, retained messages, subscribers and retention.
    Topics,
    /// Set a topic's retention (creating the topic if new).
    Retain {
        /// Topic.
        topic: String,
        /// Drop messages older than this (e.g. 7d, 12h).
        #[arg(long, value_parser = parse_duration)]
        max_age: Option<Duration>,
        /// Keep at most this many newest messages.
        #[arg(long)]
        max_count: Option<i64>,
    },
}

fn parse_json(what: &str, text: &str) -> Result<Value> {
    serde_json::from_str(text).with_context(|| {
        format!(
            "{what} must be JSON, e.g. '\"text\"', '42' or '{{\"k\":1}}'; got {}",
            dbos_store::limits::shown(text)
        )
    })
}

/// A message argument: JSON text, `-` for standard input, or `@FILE` for a file's content (no
/// JSON value starts with `@`), so a message is not bounded by the size of one argument.
fn message_arg(what: &str, arg: &str) -> Result<Value> {
    let text = if arg == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .context("reading the message from standard input")?;
        text
    } else if let Some(file) = arg.strip_prefix('@') {
        std::fs::read_to_string(file).with_context(|| format!("reading the message from {file}"))?
    } else {
        arg.to_owned()
    };
    parse_json(what, &text)
}

/// A messaging client with its own LISTEN connection.
async fn client(conn: &ConnArgs) -> Result<Client> {
    client_on(super::pool(conn).await?).await
}

/// A messaging client on `pool`, with its own LISTEN connection.
pub(super) async fn client_on(pool: sqlx::PgPool) -> Result<Client> {
    Ok(Client::standalone(pool, dbos_msg::Options::default()).await?)
}

fn line(out: &mut impl Write, format: Format, seq: i64, payload: &str) -> Result<()> {
    if format == Format::Json {
        let v: Value = serde_json::from_str(payload).unwrap_or(Value::String(payload.into()));
        writeln!(out, "{}", json!({"seq": seq, "payload": v}))?;
    } else {
        writeln!(out, "{seq}\t{payload}")?;
    }
    out.flush()?;
    Ok(())
}

pub(super) async fn run(conn: &ConnArgs, format: Format, command: MsgCommand) -> Result<ExitCode> {
    let c = client(conn).await?;
    match command {
        MsgCommand::Send {
            workflow_id,
            message,
            topic,
            key,
        } => {
            let m = message_arg("MESSAGE", &message)?;
            let stored = c
                .send(&workflow_id, &m, topic.as_deref(), key.as_deref())
                .await?;
            render::print_message(
                &json!({"destination": workflow_id, "stored": stored,
                        "note": if stored { "sent" } else { "already sent with this key" }}),
                format,
            )?;
        }
        MsgCommand::Events {
            workflow_id,
            key,
            wait,
        } => {
            // Events of a workflow that does not exist are refused as its stream is, rather
            // than shown as none (or waited for).
            let mut conn = c.connection().await?;
            if !dbos_msg::sql::workflow_exists(&mut conn, &workflow_id).await? {
                return Err(dbos_msg::Error::NoSuchWorkflow(workflow_id).into());
            }
            drop(conn);
            let rows: Vec<(String, String)> = match key {
                Some(k) => match c.get_event_text(&workflow_id, &k, wait).await? {
                    Some(v) => vec![(k, v)],
                    None => {
                        eprintln!("event {k:?} of {workflow_id} is not set");
                        return Ok(ExitCode::FAILURE);
                    }
                },
                None => c.get_all_events(&workflow_id).await?,
            };
            let rows: Vec<Value> = rows
                .into_iter()
                .map(|(k, v)| {
                    let v = serde_json::from_str(&v).unwrap_or(Value::String(v));
                    json!({"key": k, "value": v})
                })
                .collect();
            render::print_json_rows(&rows, &["key", "value"], format)?;
        }
        MsgCommand::Stream {
            workflow_id,
            key,
            offset,
            follow,
        } => {
            let mut r = c.read_stream(&workflow_id, &key, offset);
            let mut out = std::io::stdout().lock();
            let wait = if follow {
                Duration::from_secs(3600)
            } else {
                Duration::ZERO
            };
            loop {
                let at = r.offset();
                match r.next_text(wait).await? {
                    Some(v) => line(&mut out, format, at as i64, &v)?,
                    None if r.is_done() || !follow => break,
                    None => {}
                }
            }
        }
        MsgCommand::Publish { topic, messages } => {
            let payloads = messages
                .iter()
                .map(|m| message_arg("MESSAGE", m).map(|v| v.to_string()))
                .collect::<Result<Vec<_>>>()?;
            let (first, last) = c.publish_text(&topic, &payloads).await?;
            render::print_message(
                &json!({"topic": topic, "first_seq": first, "last_seq": last}),
                format,
            )?;
        }
        MsgCommand::Subscribe {
            topic,
            name,
            from_start,
            follow,
        } => {
            let mut out = std::io::stdout().lock();
            let wait = if follow {
                Duration::from_secs(3600)
            } else {
                Duration::ZERO
            };
            let mut after = 0;
            if let Some(name) = &name {
                let start = if from_start {
                    Start::Oldest
                } else {
                    Start::Next
                };
                c.subscribe(&topic, name, start).await?;
            }
            loop {
                let got = match &name {
                    Some(n) => c.consume(&topic, n, wait).await?,
                    None => c.read_topic(&topic, after, wait).await?,
                };
                for d in &got {
                    line(&mut out, format, d.seq, &d.payload)?;
                    after = d.seq;
                }
                if got.is_empty() && !follow {
                    break;
                }
            }
        }
        MsgCommand::Topics => {
            let rows = super::json_rows(&c.topics().await?)?;
            render::print_json_rows(
                &rows,
                &[
                    "topic",
                    "head_seq",
                    "retained",
                    "subscribers",
                    "oldest_at",
                    "retain_max_age_ms",
                    "retain_max_count",
                ],
                format,
            )?;
        }
        MsgCommand::Retain {
            topic,
            max_age,
            max_count,
        } => {
            if max_count.is_some_and(|n| n <= 0) {
                anyhow::bail!("--max-count must be at least 1");
            }
            let age_ms = max_age.map(|d| d.as_millis() as i64);
            if age_ms == Some(0) {
                anyhow::bail!("--max-age must be longer than 0");
            }
            c.set_retention(&topic, age_ms, max_count).await?;
            render::print_message(
                &json!({"topic": topic, "retain_max_age_ms": age_ms, "retain_max_count": max_count}),
                format,
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// JSON values of every kind, nested.
    fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            "\\PC{0,16}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 32, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                proptest::collection::btree_map("\\PC{0,8}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// Any message text is a JSON value or refused with one line quoting a short prefix;
        /// never a panic.
        #[test]
        fn any_message_text_is_parsed_or_refused_on_one_line(s in "\\PC{0,300}") {
            if let Err(e) = parse_json("a message", &s) {
                let line = super::super::one_line(&e);
                proptest::prop_assert!(!line.contains('\n'));
                // The value is quoted by a prefix of 40 characters, each escaped to at most
                // 10 (`\u{10ffff}`), after about 100 of explanation.
                proptest::prop_assert!(line.chars().count() < 100 + 40 * 10, "{}", line);
            }
        }

        /// Every JSON value, as text, is accepted as itself.
        #[test]
        fn every_json_value_round_trips(v in json_value()) {
            let text = v.to_string();
            proptest::prop_assert_eq!(message_arg("a message", &text).unwrap(), v);
        }
    }
}
