//! The file system service: files in Postgres tables, a POSIX-like API whose operations are
//! functions over a transaction, and a FUSE mount so ordinary Linux tools work on the tree.
//!
//! Schema `fs` holds `inodes` (kind, mode, owner, size, link count, times, symlink target),
//! `dirents` (parent, name, child; unique per directory) and `blocks` (inode, index, bytes) of
//! at most [`BLOCK_BYTES`]. Every operation takes the caller's connection or transaction, so
//! several operations — and a workflow step's checkpoint — commit or vanish together. Mode
//! bits are checked for the calling [`Identity`] on every operation, root bypassing them as on
//! Linux. Errors are POSIX errors ([`Error::errno`]).
//!
//! ```no_run
//! use dbos_fs::{Fs, Identity, Options};
//! use sqlx::Connection;
//!
//! # async fn demo(pool: &sqlx::PgPool) -> dbos_fs::Result<()> {
//! let fs = Fs::new(Options::default());
//! let me = Identity::root();
//! let mut conn = pool.acquire().await?;
//! let mut tx = conn.begin().await?;
//! fs.mkdir_all(&mut tx, &me, "/reports/2026", 0o755).await?;
//! fs.create(&mut tx, &me, "/reports/2026/q1.txt", 0o644).await?;
//! fs.write(&mut tx, &me, "/reports/2026/q1.txt", 0, b"revenue: up").await?;
//! tx.commit().await?; // the directories and the file appear together, or not at all
//! let bytes = fs.read(&mut *conn, &me, "/reports/2026/q1.txt", 0, 1 << 20).await?;
//! assert_eq!(bytes, b"revenue: up");
//! # Ok(())
//! # }
//! ```
//!
//! Costs: a path resolves in 1 round trip (a recursive query walks every component); reading
//! up to 1 MiB is 1 round trip; so is a write of up to 1 MiB (the SQL function `fs.write` locks
//! the inode, checks it, and upserts its blocks and size; whole blocks replace theirs unread);
//! creating a name (with up to 1 MiB of content: [`Fs::create_with`]) or removing one is 1,
//! through the SQL functions `fs.make` and `fs.remove`, which lock the directory, check the
//! caller's permissions with `fs.may` (the same rule as [`Identity::may`]) and change the rows
//! in one call. A single statement needs no explicit
//! transaction to be atomic, which saves BEGIN and COMMIT.
#![warn(missing_docs, unreachable_pub)]

mod error;
pub mod fuse;
mod ops;
pub mod path;
pub mod perm;
mod sql;

use chrono::{DateTime, Utc};
use dbos_kernel::{Migration, ServiceMigrations};
use serde::{Deserialize, Serialize};

pub use error::{Error, Result};
pub use ops::Fs;
pub use perm::Identity;

/// Inode number of the root directory.
pub const ROOT: u64 = 1;
/// Bytes per data block. 64 KiB makes a 1 MiB read 16 rows fetched by one query.
pub const BLOCK_BYTES: usize = 65_536;
/// Symbolic links followed while resolving one path before [`Error::Loop`] (as Linux).
pub const SYMLINKS_FOLLOWED_MAX: usize = 40;
/// Bytes written by one statement when streaming: 16 blocks.
pub const WRITE_BATCH_BYTES: usize = 16 * BLOCK_BYTES;

/// The file system's migrations: schema `fs` and its views in `os`.
pub const MIGRATIONS: ServiceMigrations = ServiceMigrations {
    service: "fs",
    migrations: &[
        Migration {
            version: 1,
            name: "inodes, dirents, blocks",
            sql: include_str!("../migrations/0001_schema.sql"),
            earlier: &[],
        },
        Migration {
            version: 2,
            name: "os views of files",
            sql: include_str!("../migrations/0002_os_views.sql"),
            earlier: &[],
        },
        Migration {
            version: 3,
            name: "row security of blocks",
            sql: include_str!("../migrations/0003_row_security.sql"),
            earlier: &[],
        },
        Migration {
            version: 4,
            name: "a write in one statement",
            sql: include_str!("../migrations/0004_write_in_one_statement.sql"),
            earlier: &[],
        },
        Migration {
            version: 5,
            name: "an empty write checks only",
            sql: include_str!("../migrations/0005_empty_write_checks_only.sql"),
            earlier: &[],
        },
        Migration {
            version: 6,
            name: "the checks of an inode in one constraint",
            sql: include_str!("../migrations/0006_inode_checks_in_one.sql"),
            earlier: &[],
        },
        Migration {
            version: 7,
            name: "whole blocks replaced without reading them",
            sql: include_str!("../migrations/0007_whole_blocks_replaced.sql"),
            earlier: &[],
        },
    ],
};

/// Limits of the file system.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Options {
    /// Largest file size in bytes; writes and truncations beyond it fail with EFBIG.
    pub file_bytes_max: u64,
    /// Most entries one readdir page returns.
    pub readdir_page_max: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            file_bytes_max: 1 << 40,
            readdir_page_max: 1_024,
        }
    }
}

/// What an inode is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
}

impl Kind {
    /// The name stored in `fs.inodes.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "dir",
            Kind::Symlink => "symlink",
        }
    }

    fn parse(s: &str) -> Kind {
        match s {
            "dir" => Kind::Dir,
            "symlink" => Kind::Symlink,
            _ => Kind::File,
        }
    }

    /// The file-type bits of `st_mode` (`S_IFREG`, ...).
    pub fn mode_bits(self) -> u32 {
        match self {
            Kind::File => libc::S_IFREG,
            Kind::Dir => libc::S_IFDIR,
            Kind::Symlink => libc::S_IFLNK,
        }
    }
}

/// The attributes of an inode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stat {
    /// Inode number; the root is 1.
    pub ino: u64,
    /// File, directory or symbolic link.
    pub kind: Kind,
    /// Permission bits with setuid, setgid and sticky (at most 0o7777).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Bytes (a symbolic link: its target's length; a directory: 0).
    pub size: u64,
    /// Hard links.
    pub nlink: u32,
    /// Last access (changed only by utimens).
    pub atime: DateTime<Utc>,
    /// Last modification of the content.
    pub mtime: DateTime<Utc>,
    /// Last change of the inode.
    pub ctime: DateTime<Utc>,
}

impl Stat {
    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        self.kind == Kind::Dir
    }
}

/// A directory entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    /// Its name.
    pub name: String,
    /// The inode it names.
    pub stat: Stat,
}

/// Disk usage of a directory's subtree, one row of [`Fs::du`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Usage {
    /// The directory's full path.
    pub path: String,
    /// Bytes of the regular files below it.
    #[sqlx(try_from = "i64")]
    pub bytes: u64,
    /// Regular files below it (a file with several names below it counts once per name).
    #[sqlx(try_from = "i64")]
    pub files: u64,
}

/// Attribute changes for [`Fs::setattr`]; `None` leaves an attribute alone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SetAttr {
    /// New permission bits (chmod).
    pub mode: Option<u32>,
    /// New owner (chown).
    pub uid: Option<u32>,
    /// New group (chown).
    pub gid: Option<u32>,
    /// New size (truncate, growing or shrinking).
    pub size: Option<u64>,
    /// New access time.
    pub atime: Option<TimeSet>,
    /// New modification time.
    pub mtime: Option<TimeSet>,
}

/// A time to set with utimens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeSet {
    /// The current time.
    Now,
    /// A given time.
    At(DateTime<Utc>),
}
