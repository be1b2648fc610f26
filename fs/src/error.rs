//! The file system's error type: one variant per POSIX error it returns, each carrying the path
//! (or inode and name) it is about.

/// Everything a file-system operation can fail with. [`Error::errno`] gives the POSIX code.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// ENOENT: a component of the path does not exist, or the path is empty.
    #[error("{0}: no such file or directory")]
    NotFound(String),
    /// EEXIST: the name is already taken.
    #[error("{0}: file exists")]
    Exists(String),
    /// ENOTDIR: a component used as a directory is not one.
    #[error("{0}: not a directory")]
    NotDir(String),
    /// EISDIR: the operation needs a non-directory.
    #[error("{0}: is a directory")]
    IsDir(String),
    /// ENOTEMPTY: the directory still has entries.
    #[error("{0}: directory not empty")]
    NotEmpty(String),
    /// EACCES: the mode bits do not grant the caller the access it needs.
    #[error("{0}: permission denied")]
    Access(String),
    /// EPERM: only the owner (or root) may do this.
    #[error("{0}: operation not permitted")]
    NotPermitted(String),
    /// EINVAL: the request makes no sense (a bad name, a directory moved into itself).
    #[error("{what}: invalid argument: {why}")]
    Invalid {
        /// The path or name.
        what: String,
        /// Why it is refused.
        why: String,
    },
    /// ENAMETOOLONG: a name over 255 bytes or a path of 4096 bytes or more.
    #[error("{0}: file name too long (names are at most 255 bytes, paths under 4096)")]
    NameTooLong(String),
    /// ELOOP: more than 40 symbolic links while resolving one path.
    #[error("{0}: too many levels of symbolic links")]
    Loop(String),
    /// EFBIG: the file would exceed `file_bytes_max`.
    #[error("{what}: file too large: {bytes} bytes exceeds file_bytes_max ({max} bytes)")]
    TooBig {
        /// The file.
        what: String,
        /// The size it would have.
        bytes: u64,
        /// The configured limit.
        max: u64,
    },
    /// EBUSY: the root directory cannot be removed or renamed.
    #[error("{0}: device or resource busy")]
    Busy(String),
    /// EIO: a query returned no inode (or no symbolic-link target) where the schema guarantees
    /// one: the tables are damaged or were changed behind the file system's back. The view
    /// `fs.fsck` ([`crate::Fs::fsck`]) lists what is inconsistent.
    #[error(
        "the database returned no {missing} where one was expected: {what} \
         (the view fs.fsck lists inconsistencies in the tables)"
    )]
    Inconsistent {
        /// What was missing: "inode", "symbolic link target", ...
        missing: &'static str,
        /// Where it was expected: the inode, entry or path being worked on.
        what: String,
    },
    /// The database failed; the transaction should be rolled back (a serialization failure or
    /// deadlock can be retried).
    #[error("file system database error: {0}")]
    Db(#[from] sqlx::Error),
    /// Reading or writing a local file or stream failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being read or written.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The POSIX error number (`libc::ENOENT`, ...); EIO for database and I/O failures and for
    /// inconsistent tables.
    pub fn errno(&self) -> i32 {
        match self {
            Error::NotFound(_) => libc::ENOENT,
            Error::Exists(_) => libc::EEXIST,
            Error::NotDir(_) => libc::ENOTDIR,
            Error::IsDir(_) => libc::EISDIR,
            Error::NotEmpty(_) => libc::ENOTEMPTY,
            Error::Access(_) => libc::EACCES,
            Error::NotPermitted(_) => libc::EPERM,
            Error::Invalid { .. } => libc::EINVAL,
            Error::NameTooLong(_) => libc::ENAMETOOLONG,
            Error::Loop(_) => libc::ELOOP,
            Error::TooBig { .. } => libc::EFBIG,
            Error::Busy(_) => libc::EBUSY,
            Error::Inconsistent { .. } | Error::Db(_) | Error::Io { .. } => libc::EIO,
        }
    }

    /// Whether retrying the whole transaction may succeed (serialization failure, deadlock, or
    /// a name taken by a concurrent transaction).
    pub fn retryable(&self) -> bool {
        match self {
            Error::Db(e) => dbos_kernel::sqlstate::is_retryable_conflict(e),
            _ => false,
        }
    }

    pub(crate) fn invalid(what: impl Into<String>, why: impl Into<String>) -> Error {
        Error::Invalid {
            what: what.into(),
            why: why.into(),
        }
    }

    /// A query returned no inode where one was expected, while working on `what`.
    pub(crate) fn no_inode(what: impl Into<String>) -> Error {
        Error::Inconsistent {
            missing: "inode",
            what: what.into(),
        }
    }
}
