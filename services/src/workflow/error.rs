//! Errors of the workflow service.

use serde::{Deserialize, Serialize};

/// An application error in DBOS's portable shape: what workflows and steps fail with, what is
/// recorded, and what replays re-raise.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PortableError {
    /// Error class name, e.g. `ValueError`.
    pub name: String,
    /// Human-readable message.
    pub message: String,
    /// Optional machine-readable code (always written, null when absent, as DBOS does).
    #[serde(default)]
    pub code: Option<serde_json::Value>,
    /// Optional structured data (omitted when absent, as DBOS does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

impl std::fmt::Display for PortableError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.name, self.message)
    }
}

/// Everything a workflow operation can fail with.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The workflow or step failed with an application error (recorded, replayed identically).
    #[error("{0}")]
    Failed(Box<PortableError>),
    /// The workflow was cancelled (or passed its deadline); observed at a step boundary.
    #[error("workflow {0} was cancelled")]
    Cancelled(String),
    /// The workflow exceeded its recovery attempts and was dead-lettered.
    #[error("workflow {0} exceeded its maximum recovery attempts and was dead-lettered")]
    MaxRecoveryAttemptsExceeded(String),
    /// A replay found a different operation recorded at this position: the workflow code is not
    /// deterministic, or changed since the workflow started.
    #[error(
        "workflow {workflow_id} step {function_id}: the code called {called:?} where the recorded \
         run called {recorded:?}; workflow code must be deterministic (use patch() for code changes)"
    )]
    Determinism {
        /// The workflow.
        workflow_id: String,
        /// The position.
        function_id: i32,
        /// What the code called now.
        called: String,
        /// What was recorded.
        recorded: String,
    },
    /// A replay reached an operation its recorded history does not have: the replay stops
    /// there (never raised by a live execution).
    #[error(
        "workflow {workflow_id} step {function_id}: the code called {called:?} where the \
         recorded history has no operation"
    )]
    Unrecorded {
        /// The workflow.
        workflow_id: String,
        /// The position.
        function_id: i32,
        /// What the code called.
        called: String,
    },
    /// Another execution owns the workflow now (it was recovered elsewhere, or cancelled).
    #[error("workflow {0} is owned by another execution; this one stops without writing")]
    NotOwner(String),
    /// An ID is in use by a workflow of another function.
    #[error("workflow {id} already exists with function {existing:?}, not {requested:?}")]
    Conflict {
        /// The workflow ID.
        id: String,
        /// Its recorded function.
        existing: String,
        /// The function asked for now.
        requested: String,
    },
    /// No workflow has this ID.
    #[error("no workflow has ID {0:?}")]
    NotFound(String),
    /// No workflow function of this name is registered on this node.
    #[error("no workflow named {0:?} is registered here")]
    NotRegistered(String),
    /// A step failed on every attempt.
    #[error("step {name} has exceeded its maximum of {attempts} attempts: {last}")]
    MaxStepRetries {
        /// The step.
        name: String,
        /// Attempts made.
        attempts: u32,
        /// The last error.
        last: Box<PortableError>,
    },
    /// A payload cannot be encoded or decoded.
    #[error("payload error: {0}")]
    Encode(String),
    /// Bad arguments to an operation.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// The service is shutting down.
    #[error("the workflow service is shutting down")]
    ShuttingDown,
    /// Waiting for a workflow's result took longer than the caller allowed; the workflow goes on.
    #[error("workflow {workflow_id} did not end within {waited_ms} ms")]
    Timeout {
        /// The workflow waited for.
        workflow_id: String,
        /// How long the caller waited.
        waited_ms: u64,
    },
    /// A database error.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// A statement of the system database failed (in a group commit, shared by its requests).
    #[error(transparent)]
    Store(dbos_store::Error),
    /// A messaging operation failed.
    #[error(transparent)]
    Msg(dbos_msg::Error),
    /// A scheduler operation failed.
    #[error(transparent)]
    Scheduler(dbos_scheduler::Error),
    /// A kernel error.
    #[error(transparent)]
    Kernel(#[from] dbos_kernel::Error),
}

impl Error {
    /// An application error with a class name and message.
    pub fn failed(name: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Failed(Box::new(PortableError {
            name: name.into(),
            message: message.into(),
            code: None,
            data: None,
        }))
    }

    pub(crate) fn encode(e: serde_json::Error) -> Error {
        Error::Encode(e.to_string())
    }

    /// The error as it is recorded: application errors as they are, others under DBOS's names.
    pub fn to_portable(&self) -> PortableError {
        if let Error::Failed(p) = self {
            return (**p).clone();
        }
        let name = match self {
            Error::Cancelled(_) => "DBOSWorkflowCancelledError",
            Error::MaxRecoveryAttemptsExceeded(_) => "DBOSMaxRecoveryAttemptsExceededError",
            Error::Determinism { .. } | Error::Unrecorded { .. } => "DBOSUnexpectedStepError",
            Error::NotOwner(_) => "DBOSWorkflowConflictIDError",
            Error::Conflict { .. } => "DBOSConflictingWorkflowError",
            Error::NotFound(_) => "DBOSNonExistentWorkflowError",
            Error::NotRegistered(_) => "DBOSWorkflowFunctionNotFoundError",
            Error::MaxStepRetries { .. } => "DBOSMaxStepRetriesExceeded",
            Error::Encode(_) => "DBOSSerializationError",
            Error::Invalid(_) => "ValueError",
            Error::Timeout { .. } => "TimeoutError",
            Error::ShuttingDown
            | Error::Db(_)
            | Error::Store(_)
            | Error::Msg(_)
            | Error::Scheduler(_)
            | Error::Kernel(_) => "DBOSException",
            Error::Failed(_) => unreachable!("returned above"),
        };
        PortableError {
            name: name.into(),
            message: self.to_string(),
            code: None,
            data: None,
        }
    }

    /// What an execution that ends with this error does with its workflow (the one place
    /// that decides it; see the error model in the README).
    pub(crate) fn fate(&self) -> Fate {
        use dbos_store::Error as S;
        match self {
            Error::Cancelled(_)
            | Error::NotOwner(_)
            | Error::MaxRecoveryAttemptsExceeded(_)
            | Error::Unrecorded { .. } => Fate::Leave,
            Error::ShuttingDown | Error::Kernel(_) => Fate::Release,
            Error::Msg(dbos_msg::Error::Kernel(_))
            | Error::Scheduler(dbos_scheduler::Error::Kernel(_)) => Fate::Release,
            Error::Db(e)
            | Error::Store(S::Db(e))
            | Error::Msg(dbos_msg::Error::Db(e))
            | Error::Scheduler(dbos_scheduler::Error::Db(e))
            | Error::Scheduler(dbos_scheduler::Error::Store(S::Db(e))) => db_fate(e),
            Error::Store(S::Batch(e))
            | Error::Scheduler(dbos_scheduler::Error::Store(S::Batch(e))) => db_fate(e),
            _ => Fate::Record,
        }
    }

    /// Whether the same statement may succeed if tried again soon: a lost connection, a
    /// server restarting, a deadlock (not the node shutting down).
    pub(crate) fn may_pass(&self) -> bool {
        self.fate() == Fate::Release && !matches!(self, Error::ShuttingDown)
    }

    /// Whether this error ends the execution without recording it as the workflow's or the
    /// step's outcome (someone else decided the workflow's fate, or this node cannot go on).
    pub(crate) fn parks(&self) -> bool {
        self.fate() != Fate::Record
    }
}

/// A database error that may pass (a lost connection, a restart, a deadlock) or that means the
/// node is closing its pool releases the workflow; any other (a constraint the user's SQL
/// broke, bad SQL) is the user's error and is recorded.
fn db_fate(e: &sqlx::Error) -> Fate {
    if dbos_kernel::sqlstate::is_transient(e)
        || matches!(e, sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed)
    {
        Fate::Release
    } else {
        Fate::Record
    }
}

/// What becomes of a workflow whose execution ended with an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fate {
    /// A user error: recorded as the workflow's (or step's) error, as DBOS records it.
    Record,
    /// Someone else decided (a cancel, another execution owns it): nothing is written.
    Leave,
    /// The execution cannot go on here (the database failed, the node is shutting down): the
    /// workflow is released — back to ENQUEUED, owner cleared — so any node runs it again,
    /// replaying what was recorded.
    Release,
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::encode(e)
    }
}

/// Messaging errors keep their type; a missing workflow and a payload that does not decode
/// read as the workflow service's own.
impl From<dbos_msg::Error> for Error {
    fn from(e: dbos_msg::Error) -> Self {
        match e {
            dbos_msg::Error::NoSuchWorkflow(id) => Error::NotFound(id),
            dbos_msg::Error::Payload(e) => Error::encode(e),
            other => Error::Msg(other),
        }
    }
}

/// Scheduler errors keep their type.
impl From<dbos_scheduler::Error> for Error {
    fn from(e: dbos_scheduler::Error) -> Self {
        Error::Scheduler(e)
    }
}

/// Store errors keep their type; a missing workflow reads as the service's own.
impl From<dbos_store::Error> for Error {
    fn from(e: dbos_store::Error) -> Self {
        match e {
            dbos_store::Error::NotFound(id) => Error::NotFound(id),
            dbos_store::Error::Db(db) => Error::Db(db),
            other => Error::Store(other),
        }
    }
}

/// File-system errors inside a step: database failures stay database failures (so a
/// transaction step retries serialization failures), POSIX errors become application errors
/// named `OSError` with the errno as their code, as Python reports them.
impl From<dbos_fs::Error> for Error {
    fn from(e: dbos_fs::Error) -> Self {
        match e {
            dbos_fs::Error::Db(db) => Error::Db(db),
            other => Error::Failed(Box::new(PortableError {
                name: "OSError".into(),
                message: other.to_string(),
                code: Some(serde_json::Value::from(other.errno())),
                data: None,
            })),
        }
    }
}
