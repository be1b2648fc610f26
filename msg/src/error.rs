//! Errors of the messaging service.

/// What went wrong in a messaging operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The destination (or source) workflow does not exist.
    #[error("non-existent workflow ID {0:?}: send to, or read from, a workflow that was started")]
    NoSuchWorkflow(String),
    /// A payload is larger than the configured limit; nothing was stored.
    #[error("{what} is {bytes} bytes, over the limit of {max} bytes (message_bytes_max); nothing was stored")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// A name (topic, subscriber, key) is empty or too long.
    #[error("invalid {what} {value}: {why}")]
    InvalidName {
        /// Which kind of name.
        what: &'static str,
        /// The name given, as an error shows it (`dbos_kernel::shown`).
        value: String,
        /// The rule it breaks.
        why: &'static str,
    },
    /// A payload is not valid JSON, or does not decode to the type asked for.
    #[error("payload is not valid for this use: {0}")]
    Payload(#[from] serde_json::Error),
    /// The subscriber has no subscription to the topic.
    #[error("{subscriber:?} is not subscribed to topic {topic:?}; subscribe first")]
    NotSubscribed {
        /// The topic.
        topic: String,
        /// The subscriber.
        subscriber: String,
    },
    /// One consume of several subscriptions names one of them twice.
    #[error("subscription of {subscriber:?} to topic {topic:?} is named twice in one consume; name each once")]
    NamedTwice {
        /// The topic.
        topic: String,
        /// The subscriber.
        subscriber: String,
    },
    /// One consume of several workflows names one of them twice.
    #[error("workflow {0:?} is named twice in one consume; name each once")]
    WorkflowTwice(String),
    /// A database error.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// A kernel error (the notifier).
    #[error(transparent)]
    Kernel(#[from] dbos_kernel::Error),
}

/// The messaging service's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
