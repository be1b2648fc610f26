//! Errors of the system-database statements.

use std::sync::Arc;

/// What a statement of the system database can fail with.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database refused or could not be reached.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// The group-commit statement this request was part of failed; every request of that
    /// statement gets the same error.
    #[error("database error in a group commit: {0}")]
    Batch(#[source] Arc<sqlx::Error>),
    /// An enqueue found its deduplication ID in use on its queue.
    #[error("workflow {workflow_id} was deduplicated: queue {queue:?} already has a workflow with deduplication ID {deduplication_id:?}")]
    Deduplicated {
        /// The workflow that was not enqueued.
        workflow_id: String,
        /// The queue.
        queue: String,
        /// The deduplication ID.
        deduplication_id: String,
    },
    /// A partitioned queue got no partition key, or another queue got one.
    #[error("{}", if *given {
        format!("queue {queue:?} is not partitioned: enqueue without a partition key")
    } else {
        format!("queue {queue:?} is partitioned: give a partition key")
    })]
    PartitionKey {
        /// The queue.
        queue: String,
        /// Whether a key was given.
        given: bool,
    },
    /// A value is refused before anything is written (see [`crate::limits`]).
    #[error("{what} {why}")]
    Invalid {
        /// What the value is, e.g. "workflow ID".
        what: &'static str,
        /// The rule it breaks.
        why: String,
    },
    /// No workflow has this ID.
    #[error("no workflow has ID {0:?}")]
    NotFound(String),
    /// The workflow is not in a status the operation accepts.
    #[error("workflow {id} is {status}; {wanted}")]
    WrongStatus {
        /// The workflow.
        id: String,
        /// Its status now.
        status: String,
        /// What the operation needs, said to the user.
        wanted: &'static str,
    },
    /// A workflow ID is in use already.
    #[error("workflow ID {0:?} is already in use")]
    IdInUse(String),
}

impl Error {
    /// Whether the statement may succeed if simply run again
    /// ([`dbos_kernel::sqlstate::is_transient`]).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Db(e) => dbos_kernel::sqlstate::is_transient(e),
            Error::Batch(e) => dbos_kernel::sqlstate::is_transient(e),
            _ => false,
        }
    }
}

impl Error {
    /// The underlying database error, if this is one.
    pub fn db(&self) -> Option<&sqlx::Error> {
        match self {
            Error::Db(e) => Some(e),
            Error::Batch(e) => Some(e),
            _ => None,
        }
    }

    /// The SQLSTATE of the underlying database error, if Postgres sent one.
    pub fn sqlstate(&self) -> Option<String> {
        self.db().and_then(dbos_kernel::sqlstate::of)
    }
}

/// Result with the store's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
