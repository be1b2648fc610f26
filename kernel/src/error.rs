//! The kernel's error type.

use std::path::PathBuf;

/// Everything that can go wrong in the kernel. Each message says what failed, with which input,
/// and what to do about it.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The PostgreSQL server binaries could not be found.
    #[error(
        "PostgreSQL server binaries (initdb, postgres, pg_ctl) not found (searched: {searched}); \
         install them with `apt-get install postgresql` (Debian/Ubuntu) or \
         `dnf install postgresql-server` (Fedora/RHEL), or point DBOS_PG_BINDIR at them"
    )]
    BinariesNotFound {
        /// The places that were searched.
        searched: String,
    },
    /// The data directory cannot be created or written.
    #[error("data directory {path} is not usable: {reason}; choose another --data-dir or fix its permissions")]
    DataDirNotWritable {
        /// The data directory.
        path: PathBuf,
        /// Why it is not usable.
        reason: String,
    },
    /// The data directory holds something that is not a cluster this system can use.
    #[error("{path} is not a usable PostgreSQL data directory: {reason}")]
    NotACluster {
        /// The offending directory.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The requested Postgres port is already taken by another process.
    #[error("port {port} on 127.0.0.1 is already in use; pick another --pg-port or leave it unset to use a free one")]
    PortInUse {
        /// The busy port.
        port: u16,
    },
    /// Running as root, but the unprivileged user meant to own Postgres does not exist.
    #[error(
        "running as root, Postgres must run as an unprivileged user, but user {user:?} does not exist; \
         create it (`useradd --system {user}`) or name another with --pg-user / DBOS_PG_USER"
    )]
    NoPgUser {
        /// The missing user name.
        user: String,
    },
    /// A Postgres server program (initdb, postgres) failed.
    #[error("{program} failed: {detail}")]
    Postgres {
        /// Which program failed.
        program: String,
        /// Its exit status and the tail of its output.
        detail: String,
    },
    /// No running embedded cluster was found for a data directory.
    #[error("no running cluster in {path}; start a node with `dbos boot --data-dir {path}` or pass --database-url", path = .path.display())]
    NoRunningCluster {
        /// The data directory searched.
        path: PathBuf,
    },
    /// The database URL does not parse.
    #[error("database URL {url:?} is invalid: {reason}")]
    BadUrl {
        /// The URL with any password hidden.
        url: String,
        /// The parser's complaint.
        reason: String,
    },
    /// The database stayed unreachable through every retry.
    #[error(
        "database at {url} unreachable after {attempts} attempts over {waited_ms} ms: {source}"
    )]
    Unreachable {
        /// The URL with any password hidden.
        url: String,
        /// Connection attempts made.
        attempts: u32,
        /// Time spent retrying.
        waited_ms: u64,
        /// The last connection error.
        #[source]
        source: sqlx::Error,
    },
    /// The database was migrated by a newer build of this program.
    #[error(
        "the database was migrated by a newer build: service {service} is at migration {recorded}, \
         this binary knows migrations up to {known}; upgrade the binary"
    )]
    NewerDatabase {
        /// The service whose migrations are ahead.
        service: String,
        /// The newest version recorded in the database.
        recorded: i32,
        /// The newest version this binary has.
        known: i32,
    },
    /// An applied migration differs from the one in this binary.
    #[error(
        "migration {service}/{version} in the database has checksum {recorded} but this binary's has \
         {expected}; the migration was edited after it was applied, restore it or use a fresh database"
    )]
    ChecksumMismatch {
        /// The service owning the migration.
        service: String,
        /// The migration's version.
        version: i32,
        /// Checksum recorded in the database.
        recorded: String,
        /// Checksum of this binary's migration.
        expected: String,
    },
    /// A migration failed to apply.
    #[error("migration {service}/{version} ({name}) failed: {source}")]
    Migration {
        /// The service owning the migration.
        service: String,
        /// The migration's version.
        version: i32,
        /// The migration's name.
        name: String,
        /// The database error.
        #[source]
        source: sqlx::Error,
    },
    /// Invalid configuration.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The kernel is shutting down and accepts no new work.
    #[error("the node is shutting down and accepts no new tasks")]
    ShuttingDown,
    /// A database operation failed.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// A file-system operation on the data directory failed.
    #[error("{what} {path}: {source}", path = .path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Result with the kernel's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether the operation that failed may succeed if simply run again
    /// ([`crate::sqlstate::is_transient`]).
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Db(e) if crate::sqlstate::is_transient(e))
    }

    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            what,
            path: path.into(),
            source,
        }
    }
}

/// Hides the password of a database URL so it can be printed or logged.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// Longest part of a value an error message quotes.
pub const QUOTED_CHARS_MAX: usize = 40;

/// `value` as an error message shows it: quoted, and cut to its first [`QUOTED_CHARS_MAX`]
/// characters (with its length) when longer, so a refusal stays one short line.
pub fn shown(value: &str) -> String {
    if value.chars().count() <= QUOTED_CHARS_MAX {
        format!("{value:?}")
    } else {
        let prefix: String = value.chars().take(QUOTED_CHARS_MAX).collect();
        format!("{prefix:?}… ({} bytes)", value.len())
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redact_url_hides_only_the_password() {
        assert_eq!(
            redact_url("postgres://dbos:s3cret@127.0.0.1:5432/dbos?sslmode=disable"),
            "postgres://dbos:***@127.0.0.1:5432/dbos?sslmode=disable"
        );
        assert_eq!(
            redact_url("postgres://dbos@host/db"),
            "postgres://dbos@host/db"
        );
        assert_eq!(
            redact_url("postgres:///db?host=/tmp"),
            "postgres:///db?host=/tmp"
        );
        assert_eq!(redact_url("not a url"), "not a url");
    }
}
