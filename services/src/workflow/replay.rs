//! Replay: registered workflow code re-executed against recorded histories, writing nothing.
//!
//! A replay runs a workflow function with a context in replay mode: every step, transaction,
//! message, event, stream read, sleep and child returns what the history recorded, and the
//! first operation the history does not have (or has under another name) stops it. The
//! verdict says whether the code still fits the history — before a deploy, "does the new build
//! replay last week's workflows?" — and where it first parts from it.
//!
//! ```no_run
//! # async fn demo(pool: sqlx::PgPool, registry: dbos_services::workflow::Registry)
//! # -> Result<(), dbos_services::workflow::Error> {
//! use dbos_services::workflow::Replayer;
//! let replayer = Replayer::new(&pool, registry);
//! let report = replayer.replay("order-42").await?;
//! println!("{report}");
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

use super::codec;
use super::ctx::{Context, CtxInner, Mode};
use super::error::Error;
use super::service::{run_guarded, Registry};
use dbos_store::inspect::{self, ListFilter, WorkflowStatus};
use dbos_store::operations::Recorded;
use dbos_store::Status;

/// What a replay context keeps: the limits its messaging checks, and where it stopped.
pub(crate) struct ReplayLog {
    pub(crate) msg_options: dbos_msg::Options,
    first: Mutex<Option<Stop>>,
}

/// The first operation a replay could not serve.
#[derive(Clone, Debug)]
struct Stop {
    function_id: i32,
    called: String,
    /// What the history has there, when it has something else.
    recorded: Option<String>,
}

impl ReplayLog {
    /// Notes where the replay stopped, unless it stopped before.
    pub(crate) fn stop(&self, function_id: i32, called: &str, err: &Error) {
        let mut first = self.first.lock();
        if first.is_none() {
            *first = Some(Stop {
                function_id,
                called: called.to_owned(),
                recorded: match err {
                    Error::Determinism { recorded, .. } => Some(recorded.clone()),
                    _ => None,
                },
            });
        }
    }
}

/// Re-executes registered workflow code against recorded histories without side effects.
///
/// Its database sessions are read-only (`default_transaction_read_only`): what the workflow
/// code reads through [`Context::pool`] it reads, and nothing it tries to write is written.
#[derive(Clone)]
pub struct Replayer {
    pool: PgPool,
    registry: Registry,
    msg_options: dbos_msg::Options,
    timeout: Duration,
}

impl std::fmt::Debug for Replayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replayer")
            .field("registry", &self.registry)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The name a durable timer is recorded under.
const TIMER: &str = "DBOS.sleep";

/// How long one workflow's code may take to replay by default.
pub const REPLAY_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);

/// The outcome of replaying one workflow.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Replay {
    /// The workflow.
    pub workflow_id: String,
    /// Its function.
    pub name: String,
    /// Its status when replayed.
    pub status: String,
    /// Operations in its history.
    pub recorded: usize,
    /// What the replay found.
    #[serde(flatten)]
    pub verdict: Verdict,
}

impl Replay {
    /// Whether the code fits the history (a workflow still running: the history so far).
    pub fn is_consistent(&self) -> bool {
        matches!(
            self.verdict,
            Verdict::Consistent | Verdict::ConsistentPrefix
        )
    }
}

/// What a replay found.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// The code asked for exactly the recorded operations, in order, and ended as the workflow
    /// ended.
    Consistent,
    /// The workflow has not ended (or was cancelled): the code fits the history recorded so far.
    ConsistentPrefix,
    /// The code and the history part; the first place where they do.
    Diverged(Divergence),
    /// No code of this name is registered.
    NotRegistered,
    /// The code did not finish replaying within the replayer's timeout.
    Unfinished {
        /// How long it was given, ms.
        waited_ms: u64,
    },
}

/// The first difference between the code and a workflow's history.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Divergence {
    /// The operation's position (function ID); none when the code ended differently.
    pub function_id: Option<i32>,
    /// What the history has there.
    pub recorded: Option<String>,
    /// What the code asked for there.
    pub called: Option<String>,
    /// The difference, in one line.
    pub detail: String,
}

impl std::fmt::Display for Replay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}, {}): ", self.workflow_id, self.name, self.status)?;
        match &self.verdict {
            Verdict::Consistent => write!(f, "consistent ({} operations)", self.recorded),
            Verdict::ConsistentPrefix => write!(
                f,
                "consistent with the {} operations recorded so far",
                self.recorded
            ),
            Verdict::Diverged(d) => write!(f, "diverged: {}", d.detail),
            Verdict::NotRegistered => write!(f, "no workflow named {:?} is registered", self.name),
            Verdict::Unfinished { waited_ms } => {
                write!(f, "the code did not finish replaying within {waited_ms} ms")
            }
        }
    }
}

impl Replayer {
    /// A replayer of `registry`'s code over the database of `pool`; it opens read-only
    /// sessions of its own with `pool`'s connect options.
    pub fn new(pool: &PgPool, registry: Registry) -> Replayer {
        let opts = pool
            .connect_options()
            .as_ref()
            .clone()
            .options([("default_transaction_read_only", "on")]);
        Replayer {
            pool: PgPoolOptions::new()
                .max_connections(4)
                .acquire_timeout(Duration::from_secs(30))
                .connect_lazy_with(opts),
            registry,
            msg_options: dbos_msg::Options::default(),
            timeout: REPLAY_TIMEOUT_DEFAULT,
        }
    }

    /// How long one workflow's code may take to replay.
    pub fn with_timeout(mut self, timeout: Duration) -> Replayer {
        self.timeout = timeout;
        self
    }

    /// Replays one workflow.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown ID; database errors.
    pub async fn replay(&self, workflow_id: &str) -> Result<Replay, Error> {
        let filter = ListFilter {
            workflow_ids: vec![workflow_id.to_owned()],
            ..ListFilter::default()
        };
        let row = inspect::list(&self.pool, &filter)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| Error::NotFound(workflow_id.to_owned()))?;
        self.replay_row(row).await
    }

    /// Replays every workflow `filter` selects, oldest first.
    ///
    /// # Errors
    /// Database errors.
    pub async fn replay_all(&self, filter: &ListFilter) -> Result<Vec<Replay>, Error> {
        let rows = inspect::list(&self.pool, filter).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            out.push(self.replay_row(row).await?);
        }
        Ok(out)
    }

    async fn replay_row(&self, row: WorkflowStatus) -> Result<Replay, Error> {
        let name = row.name.clone().unwrap_or_default();
        let status = row.status.clone().unwrap_or_default();
        let mut conn = self.pool.acquire().await?;
        let steps = inspect::steps(&mut conn, &row.workflow_id).await?;
        drop(conn);
        let report = |recorded: usize, verdict: Verdict| Replay {
            workflow_id: row.workflow_id.clone(),
            name: name.clone(),
            status: status.clone(),
            recorded,
            verdict,
        };
        let Some(f) = self.registry.function(&name) else {
            return Ok(report(steps.len(), Verdict::NotRegistered));
        };
        let history: HashMap<i32, Recorded> = steps
            .into_iter()
            .map(|s| {
                (
                    s.function_id,
                    Recorded {
                        function_id: s.function_id,
                        function_name: s.function_name,
                        output: s.output,
                        error: s.error,
                        child_workflow_id: s.child_workflow_id,
                    },
                )
            })
            .collect();
        let recorded = history.len();
        let names: HashMap<i32, String> = history
            .iter()
            .map(|(k, r)| (*k, r.function_name.clone()))
            .collect();
        let log = Arc::new(ReplayLog {
            msg_options: self.msg_options.clone(),
            first: Mutex::new(None),
        });
        let ctx = Context {
            inner: Arc::new(CtxInner {
                mode: Mode::Replay(log.clone()),
                pool: self.pool.clone(),
                workflow_id: row.workflow_id.clone(),
                owner_xid: String::new(),
                next_fid: AtomicI32::new(0),
                recorded: Mutex::new(history),
                deadline_ms: None,
                pending: Mutex::new(None),
                slot: std::sync::OnceLock::new(),
            }),
        };
        let inputs = row.input.clone().unwrap_or_else(|| "{}".into());
        let ran = tokio::time::timeout(self.timeout, run_guarded(f, ctx.clone(), inputs)).await;
        let ended = matches!(
            status.parse::<Status>(),
            Ok(Status::Success | Status::Error)
        );
        let stop = log.first.lock().clone();
        let verdict = match (stop, ran) {
            (Some(stop), _) => judge_stop(stop, &names, ended, &status),
            (None, Err(_)) => Verdict::Unfinished {
                waited_ms: self.timeout.as_millis() as u64,
            },
            (None, Ok(result)) => {
                let used = ctx.inner.next_fid.load(Ordering::SeqCst);
                match names.iter().filter(|(k, _)| **k > used).min() {
                    Some((fid, op)) => Verdict::Diverged(Divergence {
                        function_id: Some(*fid),
                        recorded: Some(op.clone()),
                        called: None,
                        detail: match &result {
                            Ok(_) => format!(
                                "step {fid}: the history has {op:?}; the code ended without \
                                 calling it"
                            ),
                            Err(e) => format!(
                                "step {fid}: the history has {op:?}; the code failed before \
                                 calling it: {}",
                                short(&e.to_string())
                            ),
                        },
                    }),
                    None if ended => judge_outcome(&row, result),
                    None => Verdict::ConsistentPrefix,
                }
            }
        };
        Ok(report(recorded, verdict))
    }
}

/// The verdict when the code asked for an operation the history could not give.
fn judge_stop(stop: Stop, names: &HashMap<i32, String>, ended: bool, status: &str) -> Verdict {
    let Stop {
        function_id: fid,
        called,
        recorded,
    } = stop;
    let last_recorded = names.keys().copied().max().unwrap_or(0);
    // A wait still waiting: its timer (the next function ID) is recorded before the wait is.
    let waiting = last_recorded == fid + 1
        && names.get(&last_recorded).map(String::as_str) == Some(TIMER)
        && !ended;
    let detail = match &recorded {
        None if waiting => return Verdict::ConsistentPrefix,
        Some(r) => format!("step {fid}: the code called {called:?} where the history has {r:?}"),
        None if fid < last_recorded => format!(
            "step {fid}: the code called {called:?} where the history has nothing \
             (it goes on at step {last_recorded})"
        ),
        None if ended => format!(
            "step {fid}: the code called {called:?} after the last recorded operation of a \
             workflow that ended ({status})"
        ),
        None => return Verdict::ConsistentPrefix,
    };
    Verdict::Diverged(Divergence {
        function_id: Some(fid),
        recorded,
        called: Some(called),
        detail,
    })
}

/// The verdict when the code ended where the history ends: same outcome or not.
fn judge_outcome(row: &WorkflowStatus, result: Result<String, Error>) -> Verdict {
    let json = |t: &str| serde_json::from_str::<serde_json::Value>(t).ok();
    let differs = |detail: String| {
        Verdict::Diverged(Divergence {
            function_id: None,
            recorded: None,
            called: None,
            detail,
        })
    };
    let succeeded = row.status.as_deref() == Some(Status::Success.as_str());
    match (succeeded, result) {
        (true, Ok(out)) => {
            let recorded = row.output.as_deref().unwrap_or("null");
            if json(recorded) == json(&out) {
                Verdict::Consistent
            } else {
                differs(format!(
                    "the code returned {} where the workflow returned {}",
                    short(&out),
                    short(recorded)
                ))
            }
        }
        (true, Err(e)) => differs(format!(
            "the code failed ({}) where the workflow succeeded",
            short(&e.to_string())
        )),
        (false, Ok(out)) => differs(format!(
            "the code returned {} where the workflow failed",
            short(&out)
        )),
        (false, Err(e)) => {
            let now = e.to_portable();
            let then = codec::decode_error(row.error.as_deref().unwrap_or("null"));
            if (now.name.as_str(), now.message.as_str())
                == (then.name.as_str(), then.message.as_str())
            {
                Verdict::Consistent
            } else {
                differs(format!(
                    "the code failed with {} where the workflow failed with {}",
                    short(&now.to_string()),
                    short(&then.to_string())
                ))
            }
        }
    }
}

/// At most 160 characters of `s`, on one line.
fn short(s: &str) -> String {
    let line = s.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(160) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line,
    }
}
