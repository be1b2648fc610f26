//! Command tasks as users see them: [`submit`] a Linux command (one enqueue, its placement
//! labels written in the same statement), [`list`] and [`get`] them and find those [`waiting`]
//! for a node (from the `os.tasks` view, every value bound), and how one ended as a typed
//! [`Outcome`] with the exit code a shell would report ([`Outcome::exit_code`], the one place
//! that mapping is made).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use dbos_store::workflows::{self, Enqueue};
use dbos_store::Status;
use serde::Serialize;
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{PgExecutor, PgPool};

use crate::command::{CommandResult, CommandSpec};
use crate::Error;

/// Name of the command-task workflow: runs a Linux command on the node that claims it.
pub const COMMAND: &str = "dbos.command";
/// Name of the command-task workflow cron schedules run: inputs `(scheduled_at, command)`.
pub const SCHEDULED_COMMAND: &str = "dbos.command.scheduled";
/// Error name of a command that ran and did not exit with 0 (its result is in `data`).
pub const COMMAND_FAILED: &str = "CommandFailed";
/// Error name of a command that could not be started (bad program, cwd, ...).
pub const COMMAND_ERROR: &str = "CommandError";
/// Error name of an invalid command spec.
pub const INVALID_COMMAND: &str = "InvalidCommand";
/// Error name of a task lost with its node under `no_retry`.
pub const TASK_LOST: &str = "TaskLost";

/// A command to submit as a task.
#[derive(Clone, Debug, Default)]
pub struct Submit {
    /// The command.
    pub spec: CommandSpec,
    /// Queue; it must exist.
    pub queue: String,
    /// Lower runs earlier; 0 is highest.
    pub priority: i32,
    /// A second submission with this key to the same queue is refused while the first is
    /// queued or running.
    pub deduplication_id: Option<String>,
    /// Start no earlier than this long from now.
    pub delay: Option<Duration>,
    /// Labels a node must have to run it.
    pub labels: BTreeMap<String, String>,
    /// Labels it prefers, on a queue with the locality policy.
    pub prefer: BTreeMap<String, String>,
    /// Task ID; a fresh UUID when `None`. Submitting an existing ID returns that task unchanged.
    pub id: Option<String>,
    /// Partition of a partitioned queue, whose limits hold per partition; required there, and
    /// refused on a queue without partitions.
    pub partition_key: Option<String>,
}

/// Submits a command task; returns its ID.
///
/// 2 round trips (the queue's existence, then 1 enqueue that also wakes idle nodes).
///
/// # Errors
/// [`Error::Invalid`] for a bad spec or priority; [`Error::Conflict`] for a deduplication key
/// in use or an ID used by another workflow; [`Error::NoSuchQueue`].
pub async fn submit(pool: &PgPool, s: &Submit) -> Result<String, Error> {
    s.spec.validate()?;
    if s.priority < 0 {
        return Err(Error::Invalid(format!(
            "priority: must be between 0 and {}, got {}",
            i32::MAX,
            s.priority
        )));
    }
    if !dbos_store::queues::exists(pool, &s.queue).await? {
        return Err(Error::NoSuchQueue(s.queue.clone()));
    }
    let id = s.id.clone().unwrap_or_else(dbos_kernel::id::new_id);
    let inputs = serde_json::json!({"positionalArgs": [&s.spec], "namedArgs": {}}).to_string();
    let mut attributes = serde_json::Map::new();
    for (key, labels) in [("sched.labels", &s.labels), ("sched.prefer", &s.prefer)] {
        if !labels.is_empty() {
            attributes.insert(key.into(), serde_json::json!(labels));
        }
    }
    let attributes = (!attributes.is_empty()).then_some(Value::Object(attributes));
    let delay_until_ms = s
        .delay
        .map(|d| Utc::now().timestamp_millis() + d.as_millis() as i64);
    let mut e = Enqueue::new(id.clone(), COMMAND, s.queue.clone(), inputs);
    e.priority = s.priority;
    e.deduplication_id = s.deduplication_id.clone();
    e.delay_until_ms = delay_until_ms;
    e.attributes = attributes;
    e.partition_key = s.partition_key.clone();
    let created = workflows::enqueue(pool, &e)
    .await
    .map_err(|e| match e {
        dbos_store::Error::Deduplicated {
            queue,
            deduplication_id,
            ..
        } => Error::Conflict(format!(
            "a task with deduplication key {deduplication_id:?} is already queued or running on queue {queue:?}"
        )),
        dbos_store::Error::PartitionKey { queue, given: false } => Error::Invalid(format!(
            "partition key: queue {queue:?} is partitioned; submit with --partition-key"
        )),
        dbos_store::Error::PartitionKey { queue, given: true } => Error::Invalid(format!(
            "partition key: queue {queue:?} has no partitions; submit without --partition-key"
        )),
        other => Error::Store(other),
    })?;
    match created.name.as_deref() {
        Some(name) if name != COMMAND && name != SCHEDULED_COMMAND => Err(Error::Conflict(
            format!("ID {id:?} is in use by a workflow of {name:?}, not a task"),
        )),
        _ => Ok(id),
    }
}

/// A command task as `os.tasks` shows it.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct Task {
    /// Its ID.
    pub task_id: String,
    /// Its workflow status.
    pub status: Option<String>,
    /// Its exit code, once it exited.
    pub exit_code: Option<i32>,
    /// The command and its arguments.
    pub argv: Option<Json<Value>>,
    /// Its queue (cleared once it ended by cancel).
    pub queue: Option<String>,
    /// The node that runs or ran it.
    pub node: Option<String>,
    /// When it was submitted.
    pub submitted_at: Option<DateTime<Utc>>,
    /// How long the command ran, in ms.
    pub duration_ms: Option<i64>,
    /// The signal that ended it.
    pub signal: Option<i32>,
    /// Its error message.
    pub error: Option<String>,
    /// Its priority.
    pub priority: Option<i32>,
    /// Labels a node needs to run it.
    pub labels: Option<Json<Value>>,
    /// Why it waits, when no live node can run it.
    pub waiting_for: Option<String>,
    /// When it started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub completed_at: Option<DateTime<Utc>>,
}

const TASK_COLUMNS: &str = "task_id, status, exit_code, argv, queue, node, submitted_at,
    duration_ms, signal, error, priority, labels, waiting_for, started_at, completed_at";

/// Tasks, newest first: only those of `status` when given, at most `limit`.
///
/// 1 round trip.
///
/// # Errors
/// [`Error::Invalid`] for an unknown status or a negative limit.
pub async fn list(pool: &PgPool, status: Option<&str>, limit: i64) -> Result<Vec<Task>, Error> {
    if limit < 0 {
        return Err(Error::Invalid(format!(
            "limit: must be 0 or more, got {limit}"
        )));
    }
    let status = status
        .map(|s| {
            s.parse::<Status>().map_err(|_| {
                Error::Invalid(format!(
                    "status {}: one of {}",
                    dbos_store::limits::shown(s),
                    Status::ALL.map(Status::as_str).join(", ")
                ))
            })
        })
        .transpose()?;
    // The newest tasks are found along `workflow_status_created_at_index` first: the view's
    // times are computed, and no index orders them. The limit is written into the statement,
    // as `dbos_store::inspect::list` explains.
    Ok(sqlx::query_as(&format!(
        "SELECT {TASK_COLUMNS} FROM os.tasks
         WHERE task_id IN (
             SELECT workflow_uuid FROM dbos.workflow_status
             WHERE name IN ('{COMMAND}', '{SCHEDULED_COMMAND}') AND ($1::text IS NULL OR status = $1)
             ORDER BY created_at DESC LIMIT {limit})
         ORDER BY submitted_at DESC"
    ))
    .bind(status.map(Status::as_str))
    .fetch_all(pool)
    .await?)
}

/// One task.
///
/// 1 round trip.
///
/// # Errors
/// [`Error::NoSuchTask`].
pub async fn get(pool: &PgPool, id: &str) -> Result<Task, Error> {
    sqlx::query_as(&format!(
        "SELECT {TASK_COLUMNS} FROM os.tasks WHERE task_id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| Error::NoSuchTask(id.to_owned()))
}

/// The oldest tasks no live node can run now (`waiting_for` says why), oldest first, at most
/// `limit`. Only queued tasks can wait so.
///
/// 1 round trip (the ENQUEUED rows, served by `idx_workflow_status_in_flight_v2`: the status is
/// written into the statement, for a generic plan cannot prove that partial index's predicate
/// from a parameter, and read every workflow instead).
///
/// # Errors
/// [`Error::Invalid`] for a negative limit.
pub async fn waiting<'c>(db: impl PgExecutor<'c>, limit: i64) -> Result<Vec<Task>, Error> {
    if limit < 0 {
        return Err(Error::Invalid(format!(
            "limit: must be 0 or more, got {limit}"
        )));
    }
    Ok(sqlx::query_as(&format!(
        "SELECT {TASK_COLUMNS} FROM os.tasks WHERE status = 'ENQUEUED' AND waiting_for IS NOT NULL
         ORDER BY submitted_at LIMIT {limit}"
    ))
    .fetch_all(db)
    .await?)
}

/// How a task ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// The command exited with this code (0 is success).
    Exited {
        /// The exit code.
        code: i32,
    },
    /// A signal ended the command.
    Signaled {
        /// The signal number.
        signal: i32,
    },
    /// The timeout stopped it.
    TimedOut,
    /// It was cancelled.
    Cancelled,
    /// Its node died while it ran, and it was submitted with `no_retry`.
    Lost,
    /// It could not start (no such program, bad working directory, invalid spec).
    NotStarted {
        /// Why.
        message: String,
    },
    /// It ended otherwise (dead-lettered, or an error of the system).
    Failed {
        /// Why.
        message: String,
    },
}

impl Outcome {
    /// The outcome of a task whose workflow ended with `status` and this recorded output and
    /// error (portable JSON text); `None` while it has not ended.
    pub fn of(status: Status, output: Option<&str>, error: Option<&str>) -> Option<Outcome> {
        let parse = |t: Option<&str>| -> Value {
            t.and_then(|t| serde_json::from_str(t).ok())
                .unwrap_or(Value::Null)
        };
        Some(match status {
            Status::Success => {
                let r: Option<CommandResult> = serde_json::from_value(parse(output)).ok();
                Outcome::Exited {
                    code: r.and_then(|r| r.exit_code).unwrap_or(0),
                }
            }
            Status::Cancelled => Outcome::Cancelled,
            Status::Error | Status::MaxRecoveryAttemptsExceeded => {
                let err = parse(error);
                let message = err["message"].as_str().unwrap_or("(no message)").to_owned();
                let result: Option<CommandResult> =
                    serde_json::from_value(err["data"].clone()).ok();
                match (err["name"].as_str(), result) {
                    (Some(TASK_LOST), _) => Outcome::Lost,
                    (Some(COMMAND_FAILED), Some(r)) if r.timed_out => Outcome::TimedOut,
                    (Some(COMMAND_FAILED), Some(r)) if r.cancelled => Outcome::Cancelled,
                    (Some(COMMAND_FAILED), Some(r)) => match (r.exit_code, r.signal) {
                        (Some(code), _) => Outcome::Exited { code },
                        (None, Some(signal)) => Outcome::Signaled { signal },
                        (None, None) => Outcome::Failed { message },
                    },
                    (Some(COMMAND_ERROR | INVALID_COMMAND), _) => Outcome::NotStarted { message },
                    _ if status == Status::MaxRecoveryAttemptsExceeded => {
                        Outcome::Failed { message }
                    }
                    _ => Outcome::NotStarted { message },
                }
            }
            Status::Enqueued | Status::Delayed | Status::Pending => return None,
        })
    }

    /// The exit code a shell reports for this outcome: the command's own, 128+N when killed
    /// by signal N, 124 on timeout, 127 when it could not start, 130 when cancelled, 1 when lost
    /// with its node or failed otherwise.
    pub fn exit_code(&self) -> u8 {
        let code = match self {
            Outcome::Exited { code } => *code,
            Outcome::Signaled { signal } => 128 + signal,
            Outcome::TimedOut => 124,
            Outcome::Cancelled => 130,
            Outcome::Lost | Outcome::Failed { .. } => 1,
            Outcome::NotStarted { .. } => 127,
        };
        code.clamp(0, 255) as u8
    }

    /// One line saying how it ended.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Exited { code } => format!("exited with code {code}"),
            Outcome::Signaled { signal } => format!("killed by signal {signal}"),
            Outcome::TimedOut => "timed out".to_owned(),
            Outcome::Cancelled => "was cancelled".to_owned(),
            Outcome::Lost => "was lost with its node (not run again: no_retry)".to_owned(),
            Outcome::NotStarted { message } => format!("could not start: {message}"),
            Outcome::Failed { message } => format!("failed: {message}"),
        }
    }
}

/// Waits until task `id` ends and returns how.
///
/// Polls its status (1 round trip each), backing off from 20 ms to 500 ms.
///
/// # Errors
/// [`Error::Store`] with `NotFound` for an unknown ID.
pub async fn wait(pool: &PgPool, id: &str) -> Result<Outcome, Error> {
    let mut pause = Duration::from_millis(20);
    loop {
        let o = workflows::outcome(pool, id).await?;
        if let Some(outcome) = Outcome::of(o.status, o.output.as_deref(), o.error.as_deref()) {
            return Ok(outcome);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(name: &str, data: Value) -> String {
        serde_json::json!({"name": name, "message": "m", "code": null, "data": data}).to_string()
    }

    #[test]
    fn outcomes_map_to_the_exit_codes_a_shell_reports() {
        let ok = serde_json::json!({"exit_code": 0, "duration_ms": 1, "stdout_bytes": 0,
            "stderr_bytes": 0, "truncated": false, "timed_out": false, "cancelled": false});
        let mut exit7 = ok.clone();
        exit7["exit_code"] = 7.into();
        let mut killed = ok.clone();
        killed["exit_code"] = Value::Null;
        killed["signal"] = 9.into();
        let mut timed = killed.clone();
        timed["timed_out"] = true.into();
        let cases = [
            (Status::Success, Some(ok.to_string()), None, 0),
            (Status::Error, None, Some(failed(COMMAND_FAILED, exit7)), 7),
            (
                Status::Error,
                None,
                Some(failed(COMMAND_FAILED, killed)),
                137,
            ),
            (
                Status::Error,
                None,
                Some(failed(COMMAND_FAILED, timed)),
                124,
            ),
            (
                Status::Error,
                None,
                Some(failed(COMMAND_ERROR, Value::Null)),
                127,
            ),
            (Status::Error, None, Some(failed(TASK_LOST, Value::Null)), 1),
            (Status::Cancelled, None, None, 130),
            (Status::MaxRecoveryAttemptsExceeded, None, None, 1),
        ];
        for (status, out, err, want) in cases {
            let o = Outcome::of(status, out.as_deref(), err.as_deref()).expect("ended");
            assert_eq!(o.exit_code(), want, "{o:?}");
        }
        assert_eq!(Outcome::of(Status::Pending, None, None), None);
    }
}
