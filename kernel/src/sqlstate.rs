//! Postgres error codes (SQLSTATEs) by name: the one place they are spelled out.
//!
//! Branch on these codes, never on an error's message text.

/// 23505: a unique constraint (or primary key) would be violated.
pub const UNIQUE_VIOLATION: &str = "23505";
/// 23503: a foreign key would be violated.
pub const FOREIGN_KEY_VIOLATION: &str = "23503";
/// 23514: a row breaks a CHECK constraint.
pub const CHECK_VIOLATION: &str = "23514";
/// 22P02: a value does not parse as its type (e.g. text that is not JSON).
pub const INVALID_TEXT_REPRESENTATION: &str = "22P02";
/// 40001: a serializable transaction could not be serialized; retry it.
pub const SERIALIZATION_FAILURE: &str = "40001";
/// 40P01: a deadlock was detected and this transaction was chosen to abort; retry it.
pub const DEADLOCK_DETECTED: &str = "40P01";
/// 55P03: a lock could not be taken at once (`NOWAIT`).
pub const LOCK_NOT_AVAILABLE: &str = "55P03";
/// 57P01: an administrator (or a restart) terminated this connection.
pub const ADMIN_SHUTDOWN: &str = "57P01";
/// 57P02: the server crashed and terminated this connection.
pub const CRASH_SHUTDOWN: &str = "57P02";
/// 57P03: the server is starting up or shutting down.
pub const CANNOT_CONNECT_NOW: &str = "57P03";
/// 53300: the server has no free connection slot.
pub const TOO_MANY_CONNECTIONS: &str = "53300";
/// read_only_sql_transaction: a write sent to a standby (a primary demoted by a failover).
pub const READ_ONLY_SQL_TRANSACTION: &str = "25006";
/// 3D000: the database does not exist.
pub const INVALID_CATALOG_NAME: &str = "3D000";
/// 42P04: the database exists already.
pub const DUPLICATE_DATABASE: &str = "42P04";

/// The SQLSTATE code of a database error, if the error came from Postgres.
pub fn of(err: &sqlx::Error) -> Option<String> {
    match err {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// Whether `err` came from Postgres with SQLSTATE `code`.
pub fn is(err: &sqlx::Error, code: &str) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.code().as_deref() == Some(code))
}

/// Whether a transaction that failed with `err` may simply be run again: a serialization
/// failure or a deadlock.
pub fn is_retryable_conflict(err: &sqlx::Error) -> bool {
    is(err, SERIALIZATION_FAILURE) || is(err, DEADLOCK_DETECTED)
}

/// Whether an operation that failed with `err` may succeed if simply tried again, with nothing
/// to fix first: a lost or refused connection (SQLSTATE class 08, I/O errors, a pool timeout),
/// a server that is restarting or terminated the connection (57P01, 57P02, 57P03), no free
/// connection slot (53300), a write sent to a standby (25006: after a failover, the node finds
/// the new primary), a serialization failure or a deadlock.
pub fn is_transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|c| {
            c.starts_with("08")
                || [
                    ADMIN_SHUTDOWN,
                    CRASH_SHUTDOWN,
                    CANNOT_CONNECT_NOW,
                    TOO_MANY_CONNECTIONS,
                    READ_ONLY_SQL_TRANSACTION,
                    SERIALIZATION_FAILURE,
                    DEADLOCK_DETECTED,
                ]
                .contains(&c.as_ref())
        }),
        _ => false,
    }
}
