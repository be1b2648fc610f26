//! Errors of the scheduler.

/// What went wrong in a scheduler operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bad input: a command spec, queue settings, a cron expression, ...
    #[error("invalid {0}")]
    Invalid(String),
    /// No queue has this name.
    #[error("no queue named {}; `dbos queue list` shows the queues", dbos_store::limits::shown(.0))]
    NoSuchQueue(String),
    /// No task has this ID.
    #[error("no task has ID {}; `dbos task list` shows the tasks", dbos_store::limits::shown(.0))]
    NoSuchTask(String),
    /// No schedule has this name.
    #[error("no schedule named {}; `dbos cron list` shows the schedules", dbos_store::limits::shown(.0))]
    NoSuchSchedule(String),
    /// The request is well formed but conflicts with work that exists: a deduplication key in
    /// use, an ID taken by a workflow of another function.
    #[error("{0}")]
    Conflict(String),
    /// A queue of this name exists already.
    #[error("a queue named {} exists already; use `dbos queue update` to change it", dbos_store::limits::shown(.0))]
    QueueExists(String),
    /// The program of a command could not be started (not found, not executable, bad cwd, ...).
    #[error("cannot start {program:?}{}: {source}", in_dir(.cwd.as_deref()))]
    Spawn {
        /// The program.
        program: String,
        /// The working directory it was to start in, when one was given: as the task's user,
        /// entering it may be what failed.
        cwd: Option<String>,
        /// Why.
        source: std::io::Error,
    },
    /// A command's working directory cannot be used.
    #[error("working directory {cwd:?}: {source}")]
    Cwd {
        /// The directory.
        cwd: String,
        /// Why.
        source: std::io::Error,
    },
    /// The user that is to run command tasks cannot be used.
    #[error("{0}")]
    TaskUser(String),
    /// Reading a command's output or waiting for it failed.
    #[error("while running the command: {0}")]
    Io(#[from] std::io::Error),
    /// A database error.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// A statement of the system database failed.
    #[error(transparent)]
    Store(#[from] dbos_store::Error),
    /// The kernel failed (the notifier stopped, ...).
    #[error(transparent)]
    Kernel(#[from] dbos_kernel::Error),
}

/// " in working directory D", or nothing.
fn in_dir(cwd: Option<&str>) -> String {
    cwd.map(|d| format!(" in working directory {d:?}"))
        .unwrap_or_default()
}
