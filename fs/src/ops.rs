//! The operations: functions over the caller's connection or transaction.

use std::future::Future;

use sqlx::{Connection, PgConnection, Postgres, Row, Transaction};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::{Error, Result};
use crate::path::{self, check_name, check_target};
use crate::perm::{Identity, R, W, X};
use crate::sql::{self, COLS};
use crate::{
    DirEntry, Kind, Options, SetAttr, Stat, TimeSet, Usage, BLOCK_BYTES, ROOT,
    SYMLINKS_FOLLOWED_MAX, WRITE_BATCH_BYTES,
};

/// The file system: limits plus the operations. Cheap to clone; holds no state of its own, so
/// any number of processes may work on the same tables at once.
///
/// Inode-level operations (`*_at`, [`Fs::getattr`], [`Fs::lookup`], [`Fs::setattr`]) name a
/// directory by inode and an entry by name, as FUSE does; path-level ones resolve a path first
/// (in one round trip, following symbolic links). Every operation checks the caller's
/// permissions. An operation that fails with a database error leaves the transaction aborted:
/// roll it back (and retry when [`Error::retryable`]).
#[derive(Clone, Debug, Default)]
pub struct Fs {
    opts: Options,
}

/// What a new inode is.
enum New<'a> {
    File,
    Dir,
    Symlink(&'a str),
}

fn at(parent: u64, name: &str) -> String {
    format!("{name:?} in directory inode {parent}")
}

fn ino_what(ino: u64) -> String {
    format!("inode {ino}")
}

impl Fs {
    /// A file system with these limits.
    pub fn new(opts: Options) -> Fs {
        Fs { opts }
    }

    /// The limits.
    pub fn options(&self) -> &Options {
        &self.opts
    }

    // ---------------------------------------------------------------------------------------
    // Inode level.

    /// The attributes of inode `ino`. 1 round trip.
    ///
    /// # Errors
    /// [`Error::NotFound`] when no such inode exists.
    pub async fn getattr(&self, c: &mut PgConnection, ino: u64) -> Result<Stat> {
        let row = sqlx::query(sql::GETATTR)
            .bind(ino as i64)
            .fetch_optional(&mut *c)
            .await?;
        match row {
            Some(r) => sql::inode(&r, 0, || ino_what(ino)),
            None => Err(Error::NotFound(ino_what(ino))),
        }
    }

    /// What the file system takes in the database: the bytes its tables and their indexes
    /// occupy, and its inodes as the server's statistics count them (they lag by about a
    /// second). For `statfs`: read from the catalog and the statistics, so as cheap for a
    /// million files as for ten. 1 round trip.
    ///
    /// # Errors
    /// Database errors.
    pub async fn space(&self, c: &mut PgConnection) -> Result<(u64, u64)> {
        let (bytes, inodes): (i64, i64) = sqlx::query_as(sql::SPACE).fetch_one(&mut *c).await?;
        Ok((bytes.max(0) as u64, inodes.max(0) as u64))
    }

    async fn getattr_lock(&self, c: &mut PgConnection, ino: u64) -> Result<Stat> {
        let row = sqlx::query(sql::GETATTR_LOCK)
            .bind(ino as i64)
            .fetch_optional(&mut *c)
            .await?;
        match row {
            Some(r) => sql::inode(&r, 0, || ino_what(ino)),
            None => Err(Error::NotFound(ino_what(ino))),
        }
    }

    /// Directory `parent` and the inode its entry `name` names, optionally locking the
    /// directory. 1 round trip.
    async fn dir_and_child(
        &self,
        c: &mut PgConnection,
        who: &Identity,
        parent: u64,
        name: &str,
        lock: bool,
        want: u32,
    ) -> Result<(Stat, Option<Stat>)> {
        let q = if lock { sql::LOOKUP_LOCK } else { sql::LOOKUP };
        let row = sqlx::query(q)
            .bind(parent as i64)
            .bind(name)
            .fetch_optional(&mut *c)
            .await?;
        let Some(row) = row else {
            return Err(Error::NotFound(ino_what(parent)));
        };
        let dir = sql::inode(&row, 0, || ino_what(parent))?;
        if dir.kind != Kind::Dir {
            return Err(Error::NotDir(ino_what(parent)));
        }
        who.require(&dir, want, || at(parent, name))?;
        Ok((dir, sql::stat(&row, COLS)?))
    }

    /// The inode that entry `name` of directory `parent` names; `.` and `..` name the
    /// directory and its parent. Needs search permission on `parent`. 1 round trip.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::NotDir`], [`Error::Access`], [`Error::NameTooLong`].
    pub async fn lookup(
        &self,
        c: &mut PgConnection,
        who: &Identity,
        parent: u64,
        name: &str,
    ) -> Result<Stat> {
        if name.len() > path::NAME_BYTES_MAX {
            return Err(Error::NameTooLong(at(parent, name)));
        }
        if name == "." || name == ".." {
            let nodes = self.walk(c, parent, &[name]).await?;
            let (Some((dir, _)), Some((reached, _))) = (nodes.first(), nodes.last()) else {
                return Err(Error::NotFound(ino_what(parent)));
            };
            if dir.kind != Kind::Dir {
                return Err(Error::NotDir(ino_what(parent)));
            }
            who.require(dir, X, || at(parent, name))?;
            return Ok(reached.clone());
        }
        let (_, child) = self.dir_and_child(c, who, parent, name, false, X).await?;
        child.ok_or_else(|| Error::NotFound(at(parent, name)))
    }

    #[allow(clippy::too_many_arguments)]
    async fn make(
        &self,
        c: &mut PgConnection,
        who: &Identity,
        parent: u64,
        name: &str,
        new: New<'_>,
        mode: u32,
        data: Option<&[u8]>,
    ) -> Result<Stat> {
        check_name(name)?;
        if let New::Symlink(target) = new {
            check_target(target)?;
        }
        let (kind, target, mode) = match new {
            New::File => (Kind::File, None, mode & 0o7777),
            New::Dir => (Kind::Dir, None, mode & 0o7777),
            New::Symlink(t) => (Kind::Symlink, Some(t), 0o777),
        };
        let row = sqlx::query(sql::MAKE)
            .bind(parent as i64)
            .bind(name)
            .bind(kind.as_str())
            .bind(mode as i32)
            .bind(i64::from(who.uid))
            .bind(i64::from(who.gid))
            .bind(groups(who))
            .bind(target)
            .bind(data)
            .fetch_one(&mut *c)
            .await?;
        let status: String = row.try_get(0)?;
        match status.as_str() {
            "ok" => sql::inode(&row, 1, || at(parent, name)),
            other => Err(status_error(other, parent, name)),
        }
    }

    /// Creates regular file `name` in directory `parent` holding `data`, in one statement (1
    /// round trip; on a connection outside a transaction it is atomic by itself). `data` is at
    /// most [`WRITE_BATCH_BYTES`]; write more with [`Fs::write_at`].
    ///
    /// # Errors
    /// [`Error::Invalid`] when `data` is too long, and those of [`Fs::create_at`].
    pub async fn create_with(
        &self,
        c: &mut PgConnection,
        who: &Identity,
        parent: u64,
        name: &str,
        mode: u32,
        data: &[u8],
    ) -> Result<Stat> {
        if data.len() > WRITE_BATCH_BYTES || data.len() as u64 > self.opts.file_bytes_max {
            return Err(Error::invalid(
                at(parent, name),
                format!(
                    "initial content of {} bytes exceeds {WRITE_BATCH_BYTES} bytes or file_bytes_max",
                    data.len()
                ),
            ));
        }
        let st = self
            .make(c, who, parent, name, New::File, mode, Some(data))
            .await?;
        touched("file_create", None, st.ino, data.len() as u64);
        Ok(st)
    }

    /// Creates an empty regular file `name` in directory `parent` with permission bits `mode`
    /// (the caller applies its umask). 1 round trip (function `fs.make`).
    ///
    /// # Errors
    /// [`Error::Exists`], [`Error::NotFound`], [`Error::NotDir`], [`Error::Access`], and the
    /// name errors of [`path::check_name`].
    pub async fn create_at(
        &self,
        c: &mut PgConnection,
        who: &Identity,
        parent: u64,
        name: &str,
        mode: u32,
    ) -> Result<Stat> {
        let st = self
            .make(c, who, parent, name, New::File, mode, None)
            .await?;
        touched("file_create", None, st.ino, 0);
        Ok(st)
    }

    /// Creates directory `name` in directory `parent`. 1 round trip.
    ///
    /// # Errors
    /// As [`Fs::create_at`].
    pub async fn mkdir_at(
        &self,
        c: &mut PgConnection,
        who: &Identity,
        parent: u64,
        name: &str,
        mode: u32,
    ) -> Result<Stat> {
        self.make(c, who, parent, name, New::Dir, mode, None).await
    }

    /// Creates symbolic link `name` in directory `parent` pointing at `target`. 1 round
    /// trip.
    ///
    /// # Errors
    /// As [`Fs::create_at`], and [`path::check_target`]'s.
    pub async fn symlink_at(
        &self,
        c: &mut PgConnection,
        who: &Identity,
        parent: u64,
        name: &str,
        target: &str,
    ) -> Result<Stat> {
        self.make(c, who, parent, name, New::Symlink(target), 0o777, None)
            .await
    }

    /// Adds entry `name` in directory `parent` for the existing non-directory `ino` (a hard
    /// link). 3 round trips.
    ///
    /// # Errors
    /// [`Error::Exists`], [`Error::NotPermitted`] for a directory, [`Error::NotFound`],
    /// [`Error::NotDir`], [`Error::Access`].
    pub async fn link_at(
        &self,
        c: &mut PgConnection,
        who: &Identity,
        ino: u64,
        parent: u64,
        name: &str,
    ) -> Result<Stat> {
        check_name(name)?;
        let (_, existing) = self
            .dir_and_child(c, who, parent, name, true, W | X)
            .await?;
        if existing.is_some() {
            return Err(Error::Exists(at(parent, name)));
        }
        let target = self.getattr_lock(c, ino).await?;
        if target.kind == Kind::Dir {
            return Err(Error::NotPermitted(format!(
                "{}: hard links to directories are not allowed",
                ino_what(ino)
            )));
        }
        let row = sqlx::query(sql::LINK)
            .bind(parent as i64)
            .bind(name)
            .bind(ino as i64)
            .fetch_one(&mut *c)
            .await?;
        sql::inode(&row, 0, || at(parent, name))
    }

    /// Removes entry `name` (not a directory) from directory `parent`; the inode and its
    /// blocks are freed with its last name. 1 round trip (function `fs.remove` locks the
    /// directory and the inode, then removes).
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::IsDir`], [`Error::NotDir`], [`Error::Access`],
    /// [`Error::NotPermitted`] (sticky directory).
    pub async fn unlink_at(
        &self,
        c: &mut PgConnection,
        who: &Identity,
        parent: u64,
        name: &str,
    ) -> Result<()> {
        if name == "." || name == ".." {
            return Err(Error::IsDir(at(parent, name)));
        }
        self.remove(c, who, parent, name, false).await
    }

    /// Removes an entry in one statement (function `fs.remove`).
    async fn remove(
        &self,
        c: &mut PgConnection,
        who: &Identity,
        parent: u64,
        name: &str,
        rmdir: bool,
    ) -> Result<()> {
        let status: String = sqlx::query_scalar(sql::REMOVE)
            .bind(parent as i64)
            .bind(name)
            .bind(i64::from(who.uid))
            .bind(i64::from(who.gid))
            .bind(groups(who))
            .bind(rmdir)
            .fetch_one(&mut *c)
            .await?;
        match status.as_str() {
            "ok" => Ok(()),
            other => Err(status_error(other, parent, name)),
        }
    }

    async fn remove_entry(
        &self,
        c: &mut PgConnection,
        parent: u64,
        name: &str,
        child: &Stat,
    ) -> Result<()> {
        let is_dir = child.kind == Kind::Dir;
        sqlx::query(sql::REMOVE_ENTRY)
            .bind(parent as i64)
            .bind(name)
            .bind(child.ino as i64)
            .bind(i32::from(is_dir))
            .bind(!is_dir && child.nlink > 1)
            .execute(&mut *c)
            .await?;
        Ok(())
    }

    /// Removes the empty directory `name` from directory `parent`. 1 round trip (function
    /// `fs.remove`).
    ///
    /// # Errors
    /// [`Error::NotEmpty`], [`Error::NotDir`], [`Error::NotFound`], [`Error::Access`],
    /// [`Error::NotPermitted`], [`Error::Invalid`] for `.`, [`Error::NotEmpty`] for `..`.
    pub async fn rmdir_at(
        &self,
        c: &mut PgConnection,
        who: &Identity,
        parent: u64,
        name: &str,
    ) -> Result<()> {
        if name == "." {
            return Err(Error::invalid(at(parent, name), "cannot remove \".\""));
        }
        if name == ".." {
            return Err(Error::NotEmpty(at(parent, name)));
        }
        self.remove(c, who, parent, name, true).await
    }

    async fn has_entries(&self, c: &mut PgConnection, dir: u64) -> Result<bool> {
        Ok(sqlx::query_scalar(sql::HAS_ENTRIES)
            .bind(dir as i64)
            .fetch_one(&mut *c)
            .await?)
    }

    /// Renames entry `from` of directory `from_dir` to `to` in `to_dir`, atomically replacing
    /// an existing `to` as POSIX rename does (a directory only by an empty directory). With
    /// `no_replace`, an existing `to` is an error instead. Moving a directory into its own
    /// subtree is refused. 3 (`to` already names the same inode) to 7 round trips.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Exists`] (with `no_replace`), [`Error::IsDir`],
    /// [`Error::NotDir`], [`Error::NotEmpty`], [`Error::Invalid`], [`Error::Access`],
    /// [`Error::NotPermitted`].
    #[allow(clippy::too_many_arguments)]
    pub async fn rename_at(
        &self,
        c: &mut PgConnection,
        who: &Identity,
        from_dir: u64,
        from: &str,
        to_dir: u64,
        to: &str,
        no_replace: bool,
    ) -> Result<()> {
        for n in [from, to] {
            if n == "." || n == ".." {
                return Err(Error::invalid(
                    at(from_dir, n),
                    "\".\" and \"..\" cannot be renamed or replaced",
                ));
            }
        }
        check_name(to)?;
        // Both directories, locked in inode order.
        let rows = sqlx::query(sql::LOCK_MANY)
            .bind(vec![from_dir as i64, to_dir as i64])
            .fetch_all(&mut *c)
            .await?;
        let mut dirs = Vec::with_capacity(2);
        for r in &rows {
            dirs.push(sql::inode(r, 0, || {
                format!("{} or {}", ino_what(from_dir), ino_what(to_dir))
            })?);
        }
        let find = |ino: u64| -> Result<Stat> {
            let d = dirs
                .iter()
                .find(|d| d.ino == ino)
                .cloned()
                .ok_or_else(|| Error::NotFound(ino_what(ino)))?;
            if d.kind != Kind::Dir {
                return Err(Error::NotDir(ino_what(ino)));
            }
            Ok(d)
        };
        let (src_dir, dst_dir) = (find(from_dir)?, find(to_dir)?);
        who.require(&src_dir, W | X, || at(from_dir, from))?;
        who.require(&dst_dir, W | X, || at(to_dir, to))?;
        let src = self
            .child_lock(c, from_dir, from)
            .await?
            .ok_or_else(|| Error::NotFound(at(from_dir, from)))?;
        let dst = self.child_lock(c, to_dir, to).await?;
        if !who.may_unlink_from(&src_dir, &src) {
            return Err(Error::NotPermitted(at(from_dir, from)));
        }
        if let Some(d) = &dst {
            if d.ino == src.ino {
                return Ok(());
            }
            if no_replace {
                return Err(Error::Exists(at(to_dir, to)));
            }
            if !who.may_unlink_from(&dst_dir, d) {
                return Err(Error::NotPermitted(at(to_dir, to)));
            }
        }
        let src_is_dir = src.kind == Kind::Dir;
        if src_is_dir {
            if from_dir != to_dir {
                // Its ".." entry changes.
                who.require(&src, W, || at(from_dir, from))?;
            }
            let inside: bool = sqlx::query_scalar(sql::IS_ANCESTOR)
                .bind(to_dir as i64)
                .bind(src.ino as i64)
                .fetch_one(&mut *c)
                .await?;
            if inside {
                return Err(Error::invalid(
                    at(from_dir, from),
                    "a directory cannot be moved into its own subtree",
                ));
            }
        }
        if let Some(d) = &dst {
            match (src_is_dir, d.kind == Kind::Dir) {
                (true, false) => return Err(Error::NotDir(at(to_dir, to))),
                (false, true) => return Err(Error::IsDir(at(to_dir, to))),
                (true, true) if self.has_entries(c, d.ino).await? => {
                    return Err(Error::NotEmpty(at(to_dir, to)))
                }
                _ => {}
            }
            self.remove_entry(c, to_dir, to, d).await?;
        }
        sqlx::query(sql::MOVE_ENTRY)
            .bind(from_dir as i64)
            .bind(from)
            .bind(to_dir as i64)
            .bind(to)
            .bind(i32::from(src_is_dir))
            .execute(&mut *c)
            .await?;
        Ok(())
    }

    async fn child_lock(&self, c: &mut PgConnection, dir: u64, name: &str) -> Result<Option<Stat>> {
        let row = sqlx::query(sql::CHILD_LOCK)
            .bind(dir as i64)
            .bind(name)
            .fetch_optional(&mut *c)
            .await?;
        match row {
            Some(r) => sql::stat(&r, 0),
            None => Ok(None),
        }
    }

    /// Reads up to `len` bytes of file `ino` from `offset`; fewer at the end of the file,
    /// none past it. Holes read as zeros. 1 round trip (the inode and every block piece of
    /// the range in one query).
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::IsDir`], [`Error::Invalid`] for a symbolic link,
    /// [`Error::Access`].
    pub async fn read_at(
        &self,
        c: &mut PgConnection,
        who: &Identity,
        ino: u64,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>> {
        let data = self.read_chunk(c, who, ino, offset, len).await?;
        touched("file_read", None, ino, data.len() as u64);
        Ok(data)
    }

    /// [`Fs::read_at`] without noting the read for provenance (its callers note theirs).
    async fn read_chunk(
        &self,
        c: &mut PgConnection,
        who: &Identity,
        ino: u64,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>> {
        let end = offset.saturating_add(len as u64).min(i64::MAX as u64);
        let offset = offset.min(end);
        let rows = sqlx::query(sql::READ)
            .bind(ino as i64)
            .bind(offset as i64)
            .bind(end.max(offset + 1) as i64)
            .fetch_all(&mut *c)
            .await?;
        let Some(first) = rows.first() else {
            return Err(Error::NotFound(ino_what(ino)));
        };
        let st = sql::inode(first, 0, || ino_what(ino))?;
        check_file(&st)?;
        who.require(&st, R, || ino_what(ino))?;
        let end = end.min(st.size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let n = (end - offset) as usize;
        let mut buf = vec![0u8; n];
        for r in &rows {
            let idx: Option<i64> = r.try_get(COLS)?;
            let Some(idx) = idx else { continue };
            let piece: Vec<u8> = r.try_get(COLS + 1)?;
            let start = (idx as u64 * BLOCK_BYTES as u64).max(offset);
            let pos = (start - offset) as usize;
            if pos >= n {
                continue;
            }
            let take = piece.len().min(n - pos);
            buf[pos..pos + take].copy_from_slice(&piece[..take]);
        }
        Ok(buf)
    }

    /// Writes `data` into file `ino` at `offset`, growing it as needed (a gap becomes a hole).
    /// Returns the bytes written. 1 round trip per [`WRITE_BATCH_BYTES`] (function `fs.write`
    /// locks the inode, checks it, and writes the blocks and the size); a write of nothing
    /// checks only, in `fs.write` too.
    ///
    /// # Errors
    /// [`Error::TooBig`] past `file_bytes_max`, [`Error::NotFound`], [`Error::IsDir`],
    /// [`Error::Invalid`] for a symbolic link, [`Error::Access`].
    pub async fn write_at(
        &self,
        c: &mut PgConnection,
        who: &Identity,
        ino: u64,
        offset: u64,
        data: &[u8],
    ) -> Result<u64> {
        let n = self.write_batches(c, who, ino, offset, data).await?;
        touched("file_write", None, ino, data.len() as u64);
        Ok(n)
    }

    /// Appends `data` to file `ino`, at its size as seen under its lock. 2 round trips up to
    /// [`WRITE_BATCH_BYTES`].
    ///
    /// # Errors
    /// As [`Fs::write_at`].
    pub async fn append_at(
        &self,
        c: &mut PgConnection,
        who: &Identity,
        ino: u64,
        data: &[u8],
    ) -> Result<u64> {
        let st = self.getattr_lock(c, ino).await?;
        check_file(&st)?;
        who.require(&st, W, || ino_what(ino))?;
        let n = self.write_batches(c, who, ino, st.size, data).await?;
        touched("file_write", None, ino, data.len() as u64);
        Ok(n)
    }

    /// Writes `data` at `offset` in statements of at most [`WRITE_BATCH_BYTES`], each of which
    /// locks and checks the inode; a write of nothing is one statement that checks only.
    async fn write_batches(
        &self,
        c: &mut PgConnection,
        who: &Identity,
        ino: u64,
        offset: u64,
        data: &[u8],
    ) -> Result<u64> {
        // A write of nothing is no write past the limit, wherever it is.
        offset
            .checked_add(data.len() as u64)
            .filter(|e| *e <= self.opts.file_bytes_max || data.is_empty())
            .ok_or_else(|| Error::TooBig {
                what: ino_what(ino),
                bytes: offset.saturating_add(data.len() as u64),
                max: self.opts.file_bytes_max,
            })?;
        let nothing = data.is_empty().then_some(data);
        for (k, batch) in nothing
            .into_iter()
            .chain(data.chunks(WRITE_BATCH_BYTES))
            .enumerate()
        {
            let at = offset + (k * WRITE_BATCH_BYTES) as u64;
            let (idxs, offs, pieces) = pieces(at, batch);
            let status: String = sqlx::query_scalar(sql::WRITE)
                .bind(ino as i64)
                .bind(i64::from(who.uid))
                .bind(i64::from(who.gid))
                .bind(groups(who))
                .bind(idxs)
                .bind(offs)
                .bind(pieces)
                .bind((at + batch.len() as u64) as i64)
                .fetch_one(&mut *c)
                .await?;
            match status.as_str() {
                "ok" => {}
                "ENOENT" => return Err(Error::NotFound(ino_what(ino))),
                "EISDIR" => return Err(Error::IsDir(ino_what(ino))),
                "EINVAL" => return Err(symlink_has_no_data(ino)),
                "EACCES" => return Err(Error::Access(ino_what(ino))),
                other => {
                    return Err(Error::invalid(
                        ino_what(ino),
                        format!("unexpected status {other:?}"),
                    ))
                }
            }
        }
        Ok(data.len() as u64)
    }

    /// Changes attributes of inode `ino`: chmod (owner or root), chown (root; the owner may
    /// change the group to one of its groups), truncate (write permission; grows with a hole
    /// or shrinks, freeing blocks), utimens (to now: owner or write permission; to a given
    /// time: owner). Returns the new attributes. 2 to 3 round trips.
    ///
    /// # Errors
    /// [`Error::NotPermitted`], [`Error::Access`], [`Error::TooBig`], [`Error::IsDir`] and
    /// [`Error::Invalid`] (truncating a directory or link), [`Error::NotFound`].
    pub async fn setattr(
        &self,
        c: &mut PgConnection,
        who: &Identity,
        ino: u64,
        set: &SetAttr,
    ) -> Result<Stat> {
        let st = self.getattr_lock(c, ino).await?;
        let what = || ino_what(ino);
        let mut mode = set.mode.map(|m| m & 0o7777);
        if let Some(m) = mode.as_mut() {
            if !who.owns(&st) {
                return Err(Error::NotPermitted(what()));
            }
            if !who.is_root() && st.kind != Kind::Dir && !who.in_group(set.gid.unwrap_or(st.gid)) {
                *m &= !0o2000;
            }
        }
        if let Some(uid) = set.uid {
            if uid != st.uid && !who.is_root() {
                return Err(Error::NotPermitted(format!(
                    "{}: only root may change the owner",
                    what()
                )));
            }
        }
        if let Some(gid) = set.gid {
            if gid != st.gid && !who.is_root() && !(who.uid == st.uid && who.in_group(gid)) {
                return Err(Error::NotPermitted(format!(
                    "{}: only root, or the owner for a group it belongs to, may change the group",
                    what()
                )));
            }
        }
        if (set.uid.is_some_and(|u| u != st.uid) || set.gid.is_some_and(|g| g != st.gid))
            && mode.is_none()
            && !who.is_root()
            && st.kind == Kind::File
            && st.mode & 0o6000 != 0
        {
            mode = Some(st.mode & !0o6000);
        }
        for t in [set.atime, set.mtime].into_iter().flatten() {
            match t {
                TimeSet::Now if !who.owns(&st) => who.require(&st, W, what)?,
                TimeSet::At(_) if !who.owns(&st) => return Err(Error::NotPermitted(what())),
                _ => {}
            }
        }
        if let Some(size) = set.size {
            check_file(&st)?;
            who.require(&st, W, what)?;
            if size > self.opts.file_bytes_max || size > i64::MAX as u64 {
                return Err(Error::TooBig {
                    what: what(),
                    bytes: size,
                    max: self.opts.file_bytes_max,
                });
            }
            sqlx::query(sql::TRUNCATE)
                .bind(ino as i64)
                .bind(size as i64)
                .execute(&mut *c)
                .await?;
        }
        let time = |t: Option<TimeSet>| {
            t.map(|t| match t {
                TimeSet::Now => chrono::Utc::now(),
                TimeSet::At(at) => at,
            })
        };
        let row = sqlx::query(sql::SETATTR)
            .bind(ino as i64)
            .bind(mode.map(|m| m as i32))
            .bind(set.uid.map(i64::from))
            .bind(set.gid.map(i64::from))
            .bind(time(set.atime))
            .bind(time(set.mtime))
            .fetch_one(&mut *c)
            .await?;
        sql::inode(&row, 0, || ino_what(ino))
    }

    /// Up to `limit` (at most `readdir_page_max`) entries of directory `ino` whose names sort
    /// after `after` (bytewise), in name order: pass the last name of a page to get the next.
    /// `.` and `..` are not listed. 2 round trips.
    ///
    /// # Errors
    /// [`Error::NotDir`], [`Error::Access`], [`Error::NotFound`].
    pub async fn readdir_at(
        &self,
        c: &mut PgConnection,
        who: &Identity,
        ino: u64,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DirEntry>> {
        self.check_listable(c, who, ino).await?;
        let rows = sqlx::query(sql::READDIR_AFTER)
            .bind(ino as i64)
            .bind(after.unwrap_or(""))
            .bind(limit.min(self.opts.readdir_page_max) as i64)
            .fetch_all(&mut *c)
            .await?;
        entries(ino, &rows)
    }

    /// As [`Fs::readdir_at`], from position `skip` in name order instead of after a name.
    ///
    /// # Errors
    /// As [`Fs::readdir_at`].
    pub async fn readdir_from(
        &self,
        c: &mut PgConnection,
        who: &Identity,
        ino: u64,
        skip: u64,
        limit: usize,
    ) -> Result<Vec<DirEntry>> {
        self.check_listable(c, who, ino).await?;
        let rows = sqlx::query(sql::READDIR_AT)
            .bind(ino as i64)
            .bind(skip.min(i64::MAX as u64) as i64)
            .bind(limit.min(self.opts.readdir_page_max) as i64)
            .fetch_all(&mut *c)
            .await?;
        entries(ino, &rows)
    }

    async fn check_listable(&self, c: &mut PgConnection, who: &Identity, ino: u64) -> Result<()> {
        let dir = self.getattr(c, ino).await?;
        if dir.kind != Kind::Dir {
            return Err(Error::NotDir(ino_what(ino)));
        }
        who.require(&dir, R, || ino_what(ino))
    }

    /// The target of symbolic link `ino`. 1 round trip.
    ///
    /// # Errors
    /// [`Error::Invalid`] when `ino` is not a symbolic link, [`Error::NotFound`].
    pub async fn readlink_at(&self, c: &mut PgConnection, ino: u64) -> Result<String> {
        let row: Option<(String, Option<String>)> = sqlx::query_as(sql::READLINK)
            .bind(ino as i64)
            .fetch_optional(&mut *c)
            .await?;
        match row {
            None => Err(Error::NotFound(ino_what(ino))),
            Some((_, Some(t))) => Ok(t),
            Some((_, None)) => Err(Error::invalid(ino_what(ino), "not a symbolic link")),
        }
    }

    /// Streams `reader` into file `ino` from `offset`, one statement per
    /// [`WRITE_BATCH_BYTES`], so memory stays at one batch whatever the size. Returns the
    /// bytes written.
    ///
    /// # Errors
    /// As [`Fs::write_at`], and [`Error::Io`] when reading fails.
    pub async fn write_from<Rd: AsyncRead + Unpin>(
        &self,
        c: &mut PgConnection,
        who: &Identity,
        ino: u64,
        offset: u64,
        mut reader: Rd,
    ) -> Result<u64> {
        let st = self.getattr_lock(c, ino).await?;
        check_file(&st)?;
        who.require(&st, W, || ino_what(ino))?;
        let mut buf = vec![0u8; WRITE_BATCH_BYTES];
        let mut total = 0u64;
        loop {
            let mut filled = 0;
            while filled < buf.len() {
                let n = reader
                    .read(&mut buf[filled..])
                    .await
                    .map_err(|e| Error::Io {
                        what: format!("reading the data for {}", ino_what(ino)),
                        source: e,
                    })?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 {
                touched("file_write", None, ino, total);
                return Ok(total);
            }
            self.write_batches(c, who, ino, offset + total, &buf[..filled])
                .await?;
            total += filled as u64;
            if filled < buf.len() {
                touched("file_write", None, ino, total);
                return Ok(total);
            }
        }
    }

    /// Begins a transaction whose queries all see one snapshot (REPEATABLE READ), so a file
    /// read in several queries ([`Fs::read_to`]) is its content at one moment even while
    /// others write it.
    ///
    /// 1 round trip (the BEGIN).
    ///
    /// # Errors
    /// A database error, or a connection already in a transaction.
    pub async fn snapshot<'c>(&self, c: &'c mut PgConnection) -> Result<Transaction<'c, Postgres>> {
        Ok(c.begin_with(sql::BEGIN_SNAPSHOT).await?)
    }

    /// Streams file `ino` into `writer`, [`WRITE_BATCH_BYTES`] per query. Returns the bytes
    /// written.
    ///
    /// # Errors
    /// As [`Fs::read_at`], and [`Error::Io`] when writing fails.
    pub async fn read_to<Wr: AsyncWrite + Unpin>(
        &self,
        c: &mut PgConnection,
        who: &Identity,
        ino: u64,
        mut writer: Wr,
    ) -> Result<u64> {
        let mut offset = 0u64;
        loop {
            let chunk = self
                .read_chunk(c, who, ino, offset, WRITE_BATCH_BYTES)
                .await?;
            if chunk.is_empty() {
                break;
            }
            writer.write_all(&chunk).await.map_err(|e| Error::Io {
                what: format!("writing the data of {}", ino_what(ino)),
                source: e,
            })?;
            offset += chunk.len() as u64;
        }
        writer.flush().await.map_err(|e| Error::Io {
            what: format!("writing the data of {}", ino_what(ino)),
            source: e,
        })?;
        touched("file_read", None, ino, offset);
        Ok(offset)
    }

    /// Inconsistencies in the tables (link counts that do not match the entries, inodes no
    /// entry reaches, blocks past the end of their file); empty when consistent.
    ///
    /// # Errors
    /// A database error.
    pub async fn fsck(&self, c: &mut PgConnection) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(sql::FSCK).fetch_all(&mut *c).await?)
    }

    // ---------------------------------------------------------------------------------------
    // Path resolution.

    /// Walks `comps` from directory `start`: the inodes reached with their symlink targets,
    /// `start` first. 1 round trip.
    async fn walk(
        &self,
        c: &mut PgConnection,
        start: u64,
        comps: &[&str],
    ) -> Result<Vec<(Stat, Option<String>)>> {
        let rows = sqlx::query(sql::WALK)
            .bind(start as i64)
            .bind(comps)
            .fetch_all(&mut *c)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let st = sql::inode(r, 0, || format!("a path walked from {}", ino_what(start)))?;
            let target: Option<String> = r.try_get(COLS)?;
            out.push((st, target));
        }
        if out.is_empty() {
            return Err(Error::NotFound(ino_what(start)));
        }
        Ok(out)
    }

    /// Resolves components from `start` (a directory), following symbolic links in the middle
    /// and, when `follow`, at the end.
    async fn resolve_from(
        &self,
        c: &mut PgConnection,
        who: &Identity,
        mut start: u64,
        comps: &[&str],
        follow: bool,
        shown: &str,
    ) -> Result<Stat> {
        let mut owned: Vec<String> = comps.iter().map(|s| (*s).to_owned()).collect();
        let mut links = 0usize;
        loop {
            let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
            let nodes = self.walk(c, start, &refs).await?;
            let reached = nodes.len() - 1;
            // Search permission on every directory a name was looked up in.
            for (i, (st, _)) in nodes.iter().enumerate() {
                if i < reached || (reached < refs.len() && i == reached && st.is_dir()) {
                    who.require(st, X, || shown.to_owned())?;
                }
            }
            let (st, target) = &nodes[reached];
            let expand = match (reached == refs.len(), st.kind) {
                (true, Kind::Symlink) if follow && reached > 0 => true,
                (true, _) => return Ok(st.clone()),
                (false, Kind::Dir) => return Err(Error::NotFound(shown.to_owned())),
                (false, Kind::File) => return Err(Error::NotDir(shown.to_owned())),
                (false, Kind::Symlink) => true,
            };
            debug_assert!(expand);
            links += 1;
            if links > SYMLINKS_FOLLOWED_MAX {
                return Err(Error::Loop(shown.to_owned()));
            }
            let Some(target) = target.as_deref() else {
                return Err(Error::Inconsistent {
                    missing: "symbolic link target",
                    what: format!("{shown} (symbolic link {})", ino_what(st.ino)),
                });
            };
            let parsed = path::parse(target)?;
            let mut next: Vec<String> = parsed.components.iter().map(|s| (*s).to_owned()).collect();
            next.extend(owned[reached..].iter().cloned());
            start = if target.starts_with('/') {
                ROOT
            } else {
                // The directory the link is in; the walk goes on only from directories, so
                // only a start that is not one leaves none.
                match reached.checked_sub(1).and_then(|i| nodes.get(i)) {
                    Some((dir, _)) => dir.ino,
                    None => {
                        return Err(Error::Inconsistent {
                            missing: "directory",
                            what: format!("{shown} (walked from {})", ino_what(start)),
                        })
                    }
                }
            };
            owned = next;
        }
    }

    /// Resolves `path` from the root. With `follow`, a symbolic link at the end is followed
    /// (stat); without, it is returned itself (lstat). 1 round trip, plus 1 per symbolic link
    /// followed.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::NotDir`], [`Error::Access`], [`Error::Loop`], and
    /// [`path::parse`]'s.
    pub async fn resolve(
        &self,
        c: &mut PgConnection,
        who: &Identity,
        path: &str,
        follow: bool,
    ) -> Result<Stat> {
        let parsed = path::parse(path)?;
        let st = self
            .resolve_from(
                c,
                who,
                ROOT,
                &parsed.components,
                follow || parsed.trailing_slash,
                path,
            )
            .await?;
        if parsed.trailing_slash && st.kind != Kind::Dir {
            return Err(Error::NotDir(path.to_owned()));
        }
        Ok(st)
    }

    /// The directory that holds (or will hold) the last component of `path`, by inode, and
    /// that component. The root has neither: `at_root` makes the error an operation on it
    /// fails with (EEXIST for a create, EBUSY for rmdir or rename, ...). 1 round trip, plus 1
    /// per symbolic link followed.
    async fn parent_of<'p>(
        &self,
        c: &mut PgConnection,
        who: &Identity,
        path: &'p str,
        at_root: fn(String) -> Error,
    ) -> Result<(u64, &'p str)> {
        let parsed = path::parse(path)?;
        let Some((name, dirs)) = parsed.split_last() else {
            return Err(at_root(path.to_owned()));
        };
        let dir = self.resolve_from(c, who, ROOT, dirs, true, path).await?;
        if dir.kind != Kind::Dir {
            return Err(Error::NotDir(path.to_owned()));
        }
        Ok((dir.ino, name))
    }

    /// The shape of every path-level operation on names (create, mkdir, symlink, link, unlink,
    /// rmdir, rename): resolves each of `paths`, in order, to its directory and last component
    /// with [`Fs::parent_of`], then runs `op`, the inode-level operation, on them. Errors of
    /// `op`, which name inodes, are renamed to the paths (`from -> to` for two); errors of the
    /// resolution already name their path. Costs `op`'s round trips plus those of
    /// [`Fs::parent_of`] for each path.
    ///
    /// `op` is a closure returning the inode-level future, with the connection's lifetime
    /// `'c` named, rather than an async closure: with the latter the callers' futures are
    /// `Send` only for some lifetimes and cannot be spawned (the test below checks this).
    async fn on_names<'c, 'p, const N: usize, T, Op>(
        &self,
        c: &'c mut PgConnection,
        who: &Identity,
        paths: [&'p str; N],
        at_root: fn(String) -> Error,
        op: impl FnOnce(&'c mut PgConnection, [(u64, &'p str); N]) -> Op,
    ) -> Result<T>
    where
        Op: Future<Output = Result<T>>,
    {
        let mut names = [(ROOT, ""); N]; // each slot is filled below
        for (slot, path) in names.iter_mut().zip(paths) {
            *slot = self.parent_of(&mut *c, who, path, at_root).await?;
        }
        op(c, names)
            .await
            .map_err(|e| rename_what(e, &paths.join(" -> ")))
    }

    // ---------------------------------------------------------------------------------------
    // Path level.

    /// stat(2): the attributes of `path`, following a final symbolic link.
    ///
    /// # Errors
    /// As [`Fs::resolve`].
    pub async fn stat(&self, c: &mut PgConnection, who: &Identity, path: &str) -> Result<Stat> {
        self.resolve(c, who, path, true).await
    }

    /// lstat(2): as [`Fs::stat`] without following a final symbolic link.
    ///
    /// # Errors
    /// As [`Fs::resolve`].
    pub async fn lstat(&self, c: &mut PgConnection, who: &Identity, path: &str) -> Result<Stat> {
        self.resolve(c, who, path, false).await
    }

    /// Creates an empty regular file (`open(O_CREAT | O_EXCL)`).
    ///
    /// # Errors
    /// [`Error::Exists`] when the name is taken, and the errors of [`Fs::create_at`] and
    /// [`Fs::resolve`].
    pub async fn create(
        &self,
        c: &mut PgConnection,
        who: &Identity,
        path: &str,
        mode: u32,
    ) -> Result<Stat> {
        let st = self
            .on_names(c, who, [path], Error::Exists, |c, [(dir, name)]| {
                self.create_at(c, who, dir, name, mode)
            })
            .await?;
        named(st.ino, path);
        Ok(st)
    }

    /// Opens `path` for writing from scratch (`open(O_CREAT | O_TRUNC)`): an existing file is
    /// truncated to 0, a missing one created.
    ///
    /// # Errors
    /// [`Error::IsDir`], and the errors of [`Fs::create`] and [`Fs::setattr`].
    pub async fn create_or_truncate(
        &self,
        c: &mut PgConnection,
        who: &Identity,
        path: &str,
        mode: u32,
    ) -> Result<Stat> {
        match self.resolve(c, who, path, true).await {
            Ok(st) if st.kind == Kind::Dir => Err(Error::IsDir(path.to_owned())),
            Ok(st) => {
                let set = SetAttr {
                    size: Some(0),
                    ..SetAttr::default()
                };
                let st = self
                    .setattr(c, who, st.ino, &set)
                    .await
                    .map_err(|e| rename_what(e, path))?;
                touched("file_write", Some(path), st.ino, 0);
                Ok(st)
            }
            Err(Error::NotFound(_)) => self.create(c, who, path, mode).await,
            Err(e) => Err(e),
        }
    }

    /// mkdir(2).
    ///
    /// # Errors
    /// [`Error::Exists`], and the errors of [`Fs::mkdir_at`] and [`Fs::resolve`].
    pub async fn mkdir(
        &self,
        c: &mut PgConnection,
        who: &Identity,
        path: &str,
        mode: u32,
    ) -> Result<Stat> {
        self.on_names(c, who, [path], Error::Exists, |c, [(dir, name)]| {
            self.mkdir_at(c, who, dir, name, mode)
        })
        .await
    }

    /// `mkdir -p`: creates every missing directory of `path`; existing directories (or
    /// symbolic links to them) are fine.
    ///
    /// # Errors
    /// [`Error::Exists`] when a component is a file, and the errors of [`Fs::mkdir_at`].
    pub async fn mkdir_all(
        &self,
        c: &mut PgConnection,
        who: &Identity,
        path: &str,
        mode: u32,
    ) -> Result<Stat> {
        let parsed = path::parse(path)?;
        let mut cur = self.getattr(c, ROOT).await?;
        for (i, name) in parsed.components.iter().enumerate() {
            let shown = path::join(&parsed.components[..=i]);
            let next = match self.lookup(c, who, cur.ino, name).await {
                Ok(st) if st.kind == Kind::Symlink => self.resolve(c, who, &shown, true).await?,
                Ok(st) => st,
                Err(Error::NotFound(_)) => match self.mkdir_at(c, who, cur.ino, name, mode).await {
                    Ok(st) => st,
                    Err(e) => return Err(rename_what(e, &shown)),
                },
                Err(e) => return Err(rename_what(e, &shown)),
            };
            if next.kind != Kind::Dir {
                return Err(if i + 1 == parsed.components.len() {
                    Error::Exists(shown)
                } else {
                    Error::NotDir(shown)
                });
            }
            cur = next;
        }
        Ok(cur)
    }

    /// Reads up to `len` bytes of `path` from `offset`.
    ///
    /// # Errors
    /// As [`Fs::read_at`] and [`Fs::resolve`].
    pub async fn read(
        &self,
        c: &mut PgConnection,
        who: &Identity,
        path: &str,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>> {
        let st = self.resolve(c, who, path, true).await?;
        let data = self
            .read_at(c, who, st.ino, offset, len)
            .await
            .map_err(|e| rename_what(e, path))?;
        named(st.ino, path);
        Ok(data)
    }

    /// Writes `data` into `path` at `offset`.
    ///
    /// # Errors
    /// As [`Fs::write_at`] and [`Fs::resolve`].
    pub async fn write(
        &self,
        c: &mut PgConnection,
        who: &Identity,
        path: &str,
        offset: u64,
        data: &[u8],
    ) -> Result<u64> {
        let st = self.resolve(c, who, path, true).await?;
        let n = self
            .write_at(c, who, st.ino, offset, data)
            .await
            .map_err(|e| rename_what(e, path))?;
        named(st.ino, path);
        Ok(n)
    }

    /// Appends `data` to `path`.
    ///
    /// # Errors
    /// As [`Fs::write_at`] and [`Fs::resolve`].
    pub async fn append(
        &self,
        c: &mut PgConnection,
        who: &Identity,
        path: &str,
        data: &[u8],
    ) -> Result<u64> {
        let st = self.resolve(c, who, path, true).await?;
        let n = self
            .append_at(c, who, st.ino, data)
            .await
            .map_err(|e| rename_what(e, path))?;
        named(st.ino, path);
        Ok(n)
    }

    /// truncate(2): sets the size of `path`, growing with a hole or shrinking.
    ///
    /// # Errors
    /// As [`Fs::setattr`] and [`Fs::resolve`].
    pub async fn truncate(
        &self,
        c: &mut PgConnection,
        who: &Identity,
        path: &str,
        size: u64,
    ) -> Result<Stat> {
        let set = SetAttr {
            size: Some(size),
            ..SetAttr::default()
        };
        let st = self.set_path(c, who, path, &set).await?;
        touched("file_write", Some(path), st.ino, 0);
        Ok(st)
    }

    /// chmod(2).
    ///
    /// # Errors
    /// As [`Fs::setattr`] and [`Fs::resolve`].
    pub async fn chmod(
        &self,
        c: &mut PgConnection,
        who: &Identity,
        path: &str,
        mode: u32,
    ) -> Result<Stat> {
        let set = SetAttr {
            mode: Some(mode),
            ..SetAttr::default()
        };
        self.set_path(c, who, path, &set).await
    }

    /// chown(2); `None` leaves the owner or group as is.
    ///
    /// # Errors
    /// As [`Fs::setattr`] and [`Fs::resolve`].
    pub async fn chown(
        &self,
        c: &mut PgConnection,
        who: &Identity,
        path: &str,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> Result<Stat> {
        let set = SetAttr {
            uid,
            gid,
            ..SetAttr::default()
        };
        self.set_path(c, who, path, &set).await
    }

    /// utimensat(2); `None` leaves a time as is.
    ///
    /// # Errors
    /// As [`Fs::setattr`] and [`Fs::resolve`].
    pub async fn utimens(
        &self,
        c: &mut PgConnection,
        who: &Identity,
        path: &str,
        atime: Option<TimeSet>,
        mtime: Option<TimeSet>,
    ) -> Result<Stat> {
        let set = SetAttr {
            atime,
            mtime,
            ..SetAttr::default()
        };
        self.set_path(c, who, path, &set).await
    }

    async fn set_path(
        &self,
        c: &mut PgConnection,
        who: &Identity,
        path: &str,
        set: &SetAttr,
    ) -> Result<Stat> {
        let st = self.resolve(c, who, path, true).await?;
        self.setattr(c, who, st.ino, set)
            .await
            .map_err(|e| rename_what(e, path))
    }

    /// rename(2): atomic, replacing an existing target as POSIX does.
    ///
    /// # Errors
    /// As [`Fs::rename_at`] and [`Fs::resolve`]; [`Error::Busy`] for the root;
    /// [`Error::NotDir`] when either path ends in `/` and the source is no directory.
    pub async fn rename(
        &self,
        c: &mut PgConnection,
        who: &Identity,
        from: &str,
        to: &str,
    ) -> Result<()> {
        // A trailing slash names a directory, as on Linux.
        if [from, to].iter().any(|p| p.len() > 1 && p.ends_with('/')) {
            let st = self.lstat(c, who, from.trim_end_matches('/')).await?;
            if !st.is_dir() {
                return Err(Error::NotDir(from.to_owned()));
            }
        }
        self.on_names(
            c,
            who,
            [from, to],
            Error::Busy,
            |c, [(src_dir, src), (dst_dir, dst)]| {
                self.rename_at(c, who, src_dir, src, dst_dir, dst, false)
            },
        )
        .await?;
        dbos_kernel::prov::note(|| dbos_kernel::prov::Event {
            kind: "file_rename",
            object: Some(from.to_owned()),
            inode: None,
            bytes: None,
            detail: Some(serde_json::json!({ "to": to })),
        });
        Ok(())
    }

    /// link(2): a new name `new` for the file `existing` (not followed if a symbolic link).
    ///
    /// # Errors
    /// As [`Fs::link_at`] and [`Fs::resolve`].
    pub async fn link(
        &self,
        c: &mut PgConnection,
        who: &Identity,
        existing: &str,
        new: &str,
    ) -> Result<Stat> {
        let st = self.resolve(c, who, existing, false).await?;
        self.on_names(c, who, [new], Error::Exists, |c, [(dir, name)]| {
            self.link_at(c, who, st.ino, dir, name)
        })
        .await
    }

    /// unlink(2).
    ///
    /// # Errors
    /// As [`Fs::unlink_at`] and [`Fs::resolve`].
    pub async fn unlink(&self, c: &mut PgConnection, who: &Identity, path: &str) -> Result<()> {
        self.on_names(c, who, [path], Error::IsDir, |c, [(dir, name)]| {
            self.unlink_at(c, who, dir, name)
        })
        .await?;
        dbos_kernel::prov::note(|| dbos_kernel::prov::Event {
            kind: "file_remove",
            object: Some(path.to_owned()),
            inode: None,
            bytes: None,
            detail: None,
        });
        Ok(())
    }

    /// rmdir(2): only an empty directory.
    ///
    /// # Errors
    /// As [`Fs::rmdir_at`] and [`Fs::resolve`]; [`Error::Busy`] for the root.
    pub async fn rmdir(&self, c: &mut PgConnection, who: &Identity, path: &str) -> Result<()> {
        self.on_names(c, who, [path], Error::Busy, |c, [(dir, name)]| {
            self.rmdir_at(c, who, dir, name)
        })
        .await
    }

    /// `rm -r`: removes `path` and, for a directory, everything below it (a symbolic link is
    /// removed, not followed). Returns the names removed.
    ///
    /// # Errors
    /// The first error of the removals; the transaction should then be rolled back.
    pub async fn remove_all(
        &self,
        c: &mut PgConnection,
        who: &Identity,
        path: &str,
    ) -> Result<u64> {
        // As `rm -r`: `..` (an ancestor of the path itself) is refused before anything is
        // removed, and so is anything that resolves to the root; without this, `/a/..` emptied
        // the root, statement by statement, before its last step failed.
        if path::parse(path)?.components.last() == Some(&"..") {
            return Err(Error::invalid(path.to_owned(), "refusing to remove '..'"));
        }
        let st = self.resolve(c, who, path, false).await?;
        if st.ino == ROOT {
            return Err(Error::Busy(path.to_owned()));
        }
        // Not through on_names: an error below names the entry that failed, not `path`.
        let (dir, name) = self.parent_of(c, who, path, Error::Busy).await?;
        if st.kind != Kind::Dir {
            self.unlink_at(c, who, dir, name).await?;
            return Ok(1);
        }
        let n = self.empty_dir(c, who, st.ino).await?;
        self.rmdir_at(c, who, dir, name)
            .await
            .map_err(|e| rename_what(e, path))?;
        Ok(n + 1)
    }

    fn empty_dir<'a>(
        &'a self,
        c: &'a mut PgConnection,
        who: &'a Identity,
        dir: u64,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<u64>> + Send + 'a>> {
        Box::pin(async move {
            let mut removed = 0;
            loop {
                let page = self
                    .readdir_at(c, who, dir, None, self.opts.readdir_page_max)
                    .await?;
                if page.is_empty() {
                    return Ok(removed);
                }
                for e in page {
                    if e.stat.kind == Kind::Dir {
                        removed += self.empty_dir(c, who, e.stat.ino).await?;
                        self.rmdir_at(c, who, dir, &e.name).await?;
                    } else {
                        self.unlink_at(c, who, dir, &e.name).await?;
                    }
                    removed += 1;
                }
            }
        })
    }

    /// readdir: up to `limit` entries of the directory `path` after name `after`.
    ///
    /// # Errors
    /// As [`Fs::readdir_at`] and [`Fs::resolve`].
    pub async fn readdir(
        &self,
        c: &mut PgConnection,
        who: &Identity,
        path: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DirEntry>> {
        let st = self.resolve(c, who, path, true).await?;
        self.readdir_at(c, who, st.ino, after, limit)
            .await
            .map_err(|e| rename_what(e, path))
    }

    /// du: the directory `path` (following symbolic links) and every directory below it, by
    /// path, each with the bytes and files of its whole subtree, as the view `os.du` counts
    /// them. Needs search permission along `path`; below it, as the view, it counts without
    /// checking permissions (sizes, not contents).
    ///
    /// 1 round trip to resolve `path` (plus 1 per symbolic link followed), then 1 that walks
    /// the whole tree (the view starts at the root) and keeps the subtree.
    ///
    /// # Errors
    /// [`Error::NotDir`] when `path` is not a directory, and those of [`Fs::resolve`].
    pub async fn du(&self, c: &mut PgConnection, who: &Identity, path: &str) -> Result<Vec<Usage>> {
        let st = self.resolve(c, who, path, true).await?;
        if !st.is_dir() {
            return Err(Error::NotDir(path.to_owned()));
        }
        Ok(sqlx::query_as(sql::DU)
            .bind(st.ino as i64)
            .fetch_all(&mut *c)
            .await?)
    }

    /// symlink(2): creates `link` pointing at `target` (which need not exist).
    ///
    /// # Errors
    /// As [`Fs::symlink_at`] and [`Fs::resolve`].
    pub async fn symlink(
        &self,
        c: &mut PgConnection,
        who: &Identity,
        target: &str,
        link: &str,
    ) -> Result<Stat> {
        self.on_names(c, who, [link], Error::Exists, |c, [(dir, name)]| {
            self.symlink_at(c, who, dir, name, target)
        })
        .await
    }

    /// readlink(2).
    ///
    /// # Errors
    /// [`Error::Invalid`] when `path` is not a symbolic link, and [`Fs::resolve`]'s.
    pub async fn readlink(
        &self,
        c: &mut PgConnection,
        who: &Identity,
        path: &str,
    ) -> Result<String> {
        let st = self.resolve(c, who, path, false).await?;
        self.readlink_at(c, st.ino)
            .await
            .map_err(|e| rename_what(e, path))
    }
}

/// The caller's groups for the SQL permission check.
fn groups(who: &Identity) -> Vec<i64> {
    who.groups.iter().map(|g| i64::from(*g)).collect()
}

/// The error a status of `fs.make` or `fs.remove` names.
fn status_error(status: &str, parent: u64, name: &str) -> Error {
    match status {
        "ENOENT" => Error::NotFound(ino_what(parent)),
        "ENOENT_NAME" => Error::NotFound(at(parent, name)),
        "ENOTDIR" => Error::NotDir(at(parent, name)),
        "EISDIR" => Error::IsDir(at(parent, name)),
        "EACCES" => Error::Access(at(parent, name)),
        "EPERM" => Error::NotPermitted(at(parent, name)),
        "EEXIST" => Error::Exists(at(parent, name)),
        "ENOTEMPTY" => Error::NotEmpty(at(parent, name)),
        other => Error::invalid(at(parent, name), format!("unexpected status {other:?}")),
    }
}

fn check_file(st: &Stat) -> Result<()> {
    match st.kind {
        Kind::File => Ok(()),
        Kind::Dir => Err(Error::IsDir(ino_what(st.ino))),
        Kind::Symlink => Err(symlink_has_no_data(st.ino)),
    }
}

fn symlink_has_no_data(ino: u64) -> Error {
    Error::invalid(
        ino_what(ino),
        "a symbolic link has no data to read or write",
    )
}

/// `data` written at `offset`, cut at block boundaries: each piece's block index, its offset
/// in the block, and its bytes.
fn pieces(offset: u64, data: &[u8]) -> (Vec<i64>, Vec<i32>, Vec<&[u8]>) {
    let block = BLOCK_BYTES as u64;
    let (mut idxs, mut offs, mut pieces) = (Vec::new(), Vec::new(), Vec::new());
    let mut p = 0usize;
    while p < data.len() {
        let at = offset + p as u64;
        let in_block = (at % block) as usize;
        let n = (BLOCK_BYTES - in_block).min(data.len() - p);
        idxs.push((at / block) as i64);
        offs.push(in_block as i32);
        pieces.push(&data[p..p + n]);
        p += n;
    }
    (idxs, offs, pieces)
}

/// The entries of a readdir page of directory `dir`.
fn entries(dir: u64, rows: &[sqlx::postgres::PgRow]) -> Result<Vec<DirEntry>> {
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let name: String = r.try_get(0)?;
        let stat = sql::inode(r, 1, || at(dir, &name))?;
        out.push(DirEntry { name, stat });
    }
    Ok(out)
}

/// Names the path in an error that an inode-level operation described by inode number.
fn rename_what(e: Error, path: &str) -> Error {
    let p = || path.to_owned();
    match e {
        Error::NotFound(_) => Error::NotFound(p()),
        Error::Exists(_) => Error::Exists(p()),
        Error::NotDir(_) => Error::NotDir(p()),
        Error::IsDir(_) => Error::IsDir(p()),
        Error::NotEmpty(_) => Error::NotEmpty(p()),
        Error::Access(_) => Error::Access(p()),
        Error::NotPermitted(_) => Error::NotPermitted(p()),
        Error::Invalid { why, .. } => Error::Invalid { what: p(), why },
        Error::NameTooLong(_) => Error::NameTooLong(p()),
        Error::Loop(_) => Error::Loop(p()),
        Error::TooBig { bytes, max, .. } => Error::TooBig {
            what: p(),
            bytes,
            max,
        },
        Error::Busy(_) => Error::Busy(p()),
        other => other,
    }
}

/// Names `path` as the object of what the call by inode under a call by path noted.
fn named(ino: u64, path: &str) {
    dbos_kernel::prov::name_last(ino as i64, path);
}

/// Notes for the workflow step running this call (if any) that it touched file `ino`.
fn touched(kind: &'static str, path: Option<&str>, ino: u64, bytes: u64) {
    dbos_kernel::prov::note(|| dbos_kernel::prov::Event {
        kind,
        object: path.map(str::to_owned),
        inode: Some(ino as i64),
        bytes: Some(bytes as i64),
        detail: None,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send<F: Future + Send>(_: F) {}

    /// The path-level operations built on `Fs::on_names` can run in a spawned task (a closure
    /// in a future can make it `Send` only for some lifetimes; this would not compile then).
    fn path_operations_are_send(fs: Fs, mut c: PgConnection, who: Identity) {
        send(async move {
            let _ = fs.create(&mut c, &who, "/f", 0o644).await;
            let _ = fs.mkdir(&mut c, &who, "/d", 0o755).await;
            let _ = fs.symlink(&mut c, &who, "/f", "/l").await;
            let _ = fs.link(&mut c, &who, "/f", "/g").await;
            let _ = fs.rename(&mut c, &who, "/g", "/h").await;
            let _ = fs.unlink(&mut c, &who, "/h").await;
            let _ = fs.rmdir(&mut c, &who, "/d").await;
            let _ = fs.remove_all(&mut c, &who, "/f").await;
        });
    }

    #[test]
    fn path_operation_futures_are_send() {
        // Type-checking the function above is the test.
        let _ = path_operations_are_send as fn(Fs, PgConnection, Identity);
    }
}
