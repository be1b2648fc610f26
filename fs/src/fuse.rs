//! The FUSE mount: serves the tree in the tables to the Linux kernel, so ordinary tools work
//! on it.
//!
//! Every request is its own transaction, committed before the reply, so a write that returns
//! is durable (Postgres commits with fsync). Requests that are one statement (create, mkdir,
//! symlink, unlink, rmdir) or change nothing run on a pooled connection without BEGIN and
//! COMMIT, saving two round trips. A serialization failure or deadlock between concurrent
//! requests retries the request up to [`RETRIES_MAX`] times. The kernel checks permissions
//! itself (`default_permissions`) against the attributes we report, and every operation checks
//! them again for the calling process's identity.
//!
//! Mounting needs `/dev/fuse` and either root (the mount system call) or `fusermount3`; no
//! libfuse C library is used.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::future::Future;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, BsdFileFlags, Config, Errno, FileAttr, FileHandle, FileType, FopenFlags,
    Generation, INodeNo, LockOwner, MountOption, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, SessionACL, TimeOrNow, WriteFlags,
};
use parking_lot::Mutex;
use sqlx::PgPool;

use crate::error::{Error, Result};
use crate::perm::{Identity, R, W, X};
use crate::{Fs, Kind, SetAttr, Stat, TimeSet, BLOCK_BYTES};

/// Attempts of one request that meets serialization failures or deadlocks.
pub const RETRIES_MAX: u32 = 10;
/// Directory entries fetched per readdir query.
const READDIR_BATCH_MAX: usize = 256;

/// How the tree is mounted.
#[derive(Clone, Debug)]
pub struct MountOptions {
    /// How long the kernel may cache attributes and names before asking again, in ms. Other
    /// processes can change the tables at any time, so keep it short.
    pub attr_ttl_ms: u64,
    /// Threads serving requests (each holds at most one connection at a time).
    pub threads: usize,
    /// Let users other than the one mounting use the mount (needs root or `user_allow_other`
    /// in `/etc/fuse.conf`).
    pub allow_other: bool,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            attr_ttl_ms: 1_000,
            threads: 2,
            allow_other: nix::unistd::geteuid().is_root(),
        }
    }
}

/// A directory listing in progress: where the next readdir continues.
#[derive(Clone, Debug, Default)]
struct Cursor {
    /// The offset the kernel will pass to continue after `last`.
    next_offset: u64,
    /// The last name handed out.
    last: Option<String>,
}

struct Served {
    pool: PgPool,
    fs: Fs,
    rt: tokio::runtime::Handle,
    ttl: Duration,
    cursors: Mutex<HashMap<u64, Cursor>>,
    next_fh: AtomicU64,
}

/// A mounted tree; unmounts when [`Mount::unmount`] is called or the value is dropped.
pub struct Mount {
    unmounter: Option<fuser::SessionUnmounter>,
    thread: Option<std::thread::JoinHandle<io::Result<()>>>,
    done: tokio::sync::watch::Receiver<bool>,
}

impl std::fmt::Debug for Mount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mount").finish_non_exhaustive()
    }
}

/// Mounts the tree of `pool` at `dir` and serves it on background threads, running database
/// work on the current tokio runtime.
///
/// # Errors
/// [`Error::Io`] when the mount fails (no `/dev/fuse`, not root and no `fusermount3`, `dir`
/// missing or not a directory).
///
/// # Panics
/// When called outside a tokio runtime.
pub fn mount(pool: PgPool, fs: Fs, dir: &Path, opts: &MountOptions) -> Result<Mount> {
    let served = Served {
        pool,
        fs,
        rt: tokio::runtime::Handle::current(),
        ttl: Duration::from_millis(opts.attr_ttl_ms),
        cursors: Mutex::new(HashMap::new()),
        next_fh: AtomicU64::new(1),
    };
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("dbos".into()),
        MountOption::Subtype("dbos".into()),
        MountOption::DefaultPermissions,
    ];
    if opts.allow_other {
        config.acl = SessionACL::All;
    }
    config.n_threads = Some(opts.threads.max(1));
    let what = || format!("mounting the file system at {}", dir.display());
    let mut session = fuser::Session::new(served, dir, &config).map_err(|e| Error::Io {
        what: what(),
        source: e,
    })?;
    let unmounter = session.unmount_callable();
    let (tx, done) = tokio::sync::watch::channel(false);
    let thread = std::thread::Builder::new()
        .name("dbos-fuse".into())
        .spawn(move || {
            let r = session.run();
            let _ = tx.send(true);
            r
        })
        .map_err(|e| Error::Io {
            what: what(),
            source: e,
        })?;
    Ok(Mount {
        unmounter: Some(unmounter),
        thread: Some(thread),
        done,
    })
}

impl Mount {
    /// Waits until the tree is unmounted from outside (`umount`, `fusermount3 -u`).
    pub async fn unmounted(&mut self) {
        let _ = self.done.wait_for(|d| *d).await;
    }

    /// Unmounts and waits for the serving threads to finish.
    ///
    /// # Errors
    /// [`Error::Io`] when the kernel refuses to unmount (the mount is busy).
    pub fn unmount(mut self) -> Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> Result<()> {
        if let Some(mut u) = self.unmounter.take() {
            if !*self.done.borrow() {
                u.unmount().map_err(|e| Error::Io {
                    what: "unmounting the file system".into(),
                    source: e,
                })?;
            }
        }
        if let Some(t) = self.thread.take() {
            match t.join() {
                Ok(r) => r.map_err(|e| Error::Io {
                    what: "serving the file system".into(),
                    source: e,
                })?,
                Err(_) => {
                    return Err(Error::Io {
                        what: "serving the file system".into(),
                        source: io::Error::other("a serving thread panicked"),
                    })
                }
            }
        }
        Ok(())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!(error = %e, "unmounting on drop");
        }
    }
}

fn to_system(t: chrono::DateTime<chrono::Utc>) -> SystemTime {
    SystemTime::from(t)
}

fn attr(st: &Stat) -> FileAttr {
    FileAttr {
        ino: INodeNo(st.ino),
        size: st.size,
        blocks: st.size.div_ceil(512),
        atime: to_system(st.atime),
        mtime: to_system(st.mtime),
        ctime: to_system(st.ctime),
        crtime: to_system(st.ctime),
        kind: file_type(st.kind),
        perm: (st.mode & 0o7777) as u16,
        nlink: st.nlink,
        uid: st.uid,
        gid: st.gid,
        rdev: 0,
        blksize: BLOCK_BYTES as u32,
        flags: 0,
    }
}

fn file_type(k: Kind) -> FileType {
    match k {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
    }
}

fn errno(e: &Error) -> Errno {
    if matches!(e, Error::Db(_) | Error::Io { .. }) {
        tracing::warn!(error = %e, "file system request failed");
    }
    Errno::from_i32(e.errno())
}

/// The calling process's identity; supplementary groups come from `/proc`.
fn identity(req: &Request) -> Identity {
    let (uid, gid) = (req.uid(), req.gid());
    let mut groups = Vec::new();
    if uid != 0 && req.pid() != 0 {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", req.pid())) {
            if let Some(line) = status.lines().find(|l| l.starts_with("Groups:")) {
                groups = line[7..]
                    .split_whitespace()
                    .filter_map(|g| g.parse().ok())
                    .collect();
            }
        }
    }
    Identity::new(uid, gid, groups)
}

fn name_str(name: &OsStr) -> Result<&str> {
    name.to_str().ok_or_else(|| {
        Error::invalid(
            name.to_string_lossy(),
            "names must be UTF-8 in this file system",
        )
    })
}

/// Runs `body` in a transaction committed before returning, retrying serialization failures.
macro_rules! in_tx {
    ($self:ident, |$tx:ident| $body:expr) => {
        $self.block(|| async {
            let mut $tx = $self.pool.begin().await?;
            let out = $body;
            $tx.commit().await?;
            Ok(out)
        })
    };
}

/// Runs `body` on a pooled connection: reads, or one statement (which commits by itself).
macro_rules! on_conn {
    ($self:ident, |$c:ident| $body:expr) => {
        $self.block(|| async {
            let mut $c = $self.pool.acquire().await?;
            Ok($body)
        })
    };
}

impl Served {
    fn block<T, F, Fut>(&self, mut f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.rt.block_on(async {
            let mut attempt = 0;
            loop {
                attempt += 1;
                match f().await {
                    Err(e) if e.retryable() && attempt < RETRIES_MAX => {
                        tokio::time::sleep(Duration::from_millis(2u64 << attempt.min(8))).await;
                    }
                    other => return other,
                }
            }
        })
    }

    fn entry(&self, r: Result<Stat>, reply: ReplyEntry) {
        match r {
            Ok(st) => reply.entry(&self.ttl, &attr(&st), Generation(0)),
            Err(e) => reply.error(errno(&e)),
        }
    }
}

impl fuser::Filesystem for Served {
    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let who = identity(req);
        let r = name_str(name).and_then(|name| {
            on_conn!(self, |c| self
                .fs
                .lookup(&mut c, &who, parent.0, name)
                .await?)
        });
        self.entry(r, reply);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match on_conn!(self, |c| self.fs.getattr(&mut c, ino.0).await?) {
            Ok(st) => reply.attr(&self.ttl, &attr(&st)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let who = identity(req);
        let time = |t: Option<TimeOrNow>| {
            t.map(|t| match t {
                TimeOrNow::Now => TimeSet::Now,
                TimeOrNow::SpecificTime(at) => TimeSet::At(at.into()),
            })
        };
        let set = SetAttr {
            mode: mode.map(|m| m & 0o7777),
            uid,
            gid,
            size,
            atime: time(atime),
            mtime: time(mtime),
        };
        match in_tx!(self, |tx| self
            .fs
            .setattr(&mut tx, &who, ino.0, &set)
            .await?)
        {
            Ok(st) => reply.attr(&self.ttl, &attr(&st)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match on_conn!(self, |c| self.fs.readlink_at(&mut c, ino.0).await?) {
            Ok(t) => reply.data(t.as_bytes()),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG && mode & libc::S_IFMT != 0 {
            // Devices, pipes and sockets are not stored.
            reply.error(Errno::EPERM);
            return;
        }
        let who = identity(req);
        let r = name_str(name).and_then(|name| {
            on_conn!(self, |c| self
                .fs
                .create_at(&mut c, &who, parent.0, name, mode & !umask & 0o7777)
                .await?)
        });
        self.entry(r, reply);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let who = identity(req);
        let r = name_str(name).and_then(|name| {
            on_conn!(self, |c| self
                .fs
                .mkdir_at(&mut c, &who, parent.0, name, mode & !umask & 0o7777)
                .await?)
        });
        self.entry(r, reply);
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let who = identity(req);
        let r = name_str(name).and_then(|name| {
            on_conn!(self, |c| self
                .fs
                .unlink_at(&mut c, &who, parent.0, name)
                .await?)
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let who = identity(req);
        let r = name_str(name).and_then(|name| {
            on_conn!(self, |c| self
                .fs
                .rmdir_at(&mut c, &who, parent.0, name)
                .await?)
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let who = identity(req);
        let r = name_str(link_name).and_then(|name| {
            let target = name_str(target.as_os_str())?;
            on_conn!(self, |c| self
                .fs
                .symlink_at(&mut c, &who, parent.0, name, target)
                .await?)
        });
        self.entry(r, reply);
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if flags.contains(RenameFlags::RENAME_EXCHANGE)
            || flags.contains(RenameFlags::RENAME_WHITEOUT)
        {
            reply.error(Errno::EINVAL);
            return;
        }
        let no_replace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        let who = identity(req);
        let r = name_str(name).and_then(|from| {
            let to = name_str(newname)?;
            in_tx!(self, |tx| self
                .fs
                .rename_at(&mut tx, &who, parent.0, from, newparent.0, to, no_replace)
                .await?)
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let who = identity(req);
        let r = name_str(newname).and_then(|name| {
            in_tx!(self, |tx| self
                .fs
                .link_at(&mut tx, &who, ino.0, newparent.0, name)
                .await?)
        });
        self.entry(r, reply);
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let who = identity(req);
        let want = match flags.acc_mode() {
            OpenAccMode::O_RDONLY => R,
            OpenAccMode::O_WRONLY => W,
            OpenAccMode::O_RDWR => R | W,
        };
        match on_conn!(self, |c| self.fs.getattr(&mut c, ino.0).await?) {
            Ok(st) if !who.may(&st, want) => reply.error(Errno::EACCES),
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let who = identity(req);
        match on_conn!(self, |c| self
            .fs
            .read_at(&mut c, &who, ino.0, offset, size as usize)
            .await?)
        {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let who = identity(req);
        // Opened to append: at the end the file has now, under its lock, not at the offset
        // this host's kernel computed from the size it cached, which another mount (or host)
        // may have grown meanwhile.
        let written = if flags.0 & libc::O_APPEND != 0 {
            in_tx!(self, |tx| self
                .fs
                .append_at(&mut tx, &who, ino.0, data)
                .await?)
        // Up to one batch the write is one statement, its own transaction; a longer one is
        // all or nothing in a transaction. Either, retried, writes the same bytes again.
        } else if data.len() <= crate::WRITE_BATCH_BYTES {
            on_conn!(self, |c| self
                .fs
                .write_at(&mut c, &who, ino.0, offset, data)
                .await?)
        } else {
            in_tx!(self, |tx| self
                .fs
                .write_at(&mut tx, &who, ino.0, offset, data)
                .await?)
        };
        match written {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Every write was committed before it returned.
        reply.ok();
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let who = identity(req);
        match on_conn!(self, |c| self.fs.getattr(&mut c, ino.0).await?) {
            Ok(st) if st.kind != Kind::Dir => reply.error(Errno::ENOTDIR),
            Ok(st) if !who.may(&st, R) => reply.error(Errno::EACCES),
            Ok(_) => {
                let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
                self.cursors.lock().insert(fh, Cursor::default());
                reply.opened(FileHandle(fh), FopenFlags::empty());
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let who = identity(req);
        let mut offset = offset;
        // "." and ".." first, at offsets 1 and 2.
        if offset == 0 {
            if reply.add(ino, 1, FileType::Directory, ".") {
                reply.ok();
                return;
            }
            offset = 1;
        }
        if offset == 1 {
            let parent = match on_conn!(self, |c| self.fs.lookup(&mut c, &who, ino.0, "..").await?)
            {
                Ok(st) => st.ino,
                Err(e) => return reply.error(errno(&e)),
            };
            if reply.add(INodeNo(parent), 2, FileType::Directory, "..") {
                reply.ok();
                return;
            }
            offset = 2;
        }
        let cursor = self.cursors.lock().get(&fh.0).cloned().unwrap_or_default();
        let continues = cursor.next_offset == offset && cursor.last.is_some();
        let page = on_conn!(self, |c| {
            if continues {
                self.fs
                    .readdir_at(
                        &mut c,
                        &who,
                        ino.0,
                        cursor.last.as_deref(),
                        READDIR_BATCH_MAX,
                    )
                    .await?
            } else {
                self.fs
                    .readdir_from(&mut c, &who, ino.0, offset - 2, READDIR_BATCH_MAX)
                    .await?
            }
        });
        let page = match page {
            Ok(p) => p,
            Err(e) => return reply.error(errno(&e)),
        };
        let mut next = offset;
        let mut last = cursor.last.clone();
        for e in page {
            if reply.add(
                INodeNo(e.stat.ino),
                next + 1,
                file_type(e.stat.kind),
                &e.name,
            ) {
                break;
            }
            next += 1;
            last = Some(e.name);
        }
        if let Some(c) = self.cursors.lock().get_mut(&fh.0) {
            c.next_offset = next;
            c.last = last;
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.cursors.lock().remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // The capacity is whatever the database can grow to, which no server reports: a
        // large, constant figure. What is used is what the tables take on the server.
        const TOTAL: u64 = 1 << 32;
        match on_conn!(self, |c| self.fs.space(&mut c).await?) {
            Ok((bytes, inodes)) => {
                let used = bytes.div_ceil(BLOCK_BYTES as u64).min(TOTAL);
                let files = inodes.min(TOTAL);
                reply.statfs(
                    TOTAL,
                    TOTAL - used,
                    TOTAL - used,
                    TOTAL,
                    TOTAL - files,
                    BLOCK_BYTES as u32,
                    crate::path::NAME_BYTES_MAX as u32,
                    BLOCK_BYTES as u32,
                );
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        // Extended attributes are not stored: none exists.
        reply.error(Errno::from_i32(libc::ENODATA));
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: ReplyXattr) {
        if size == 0 {
            reply.size(0);
        } else {
            reply.data(&[]);
        }
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let who = identity(req);
        let mut want = 0;
        if mask.contains(AccessFlags::R_OK) {
            want |= R;
        }
        if mask.contains(AccessFlags::W_OK) {
            want |= W;
        }
        if mask.contains(AccessFlags::X_OK) {
            want |= X;
        }
        match on_conn!(self, |c| self.fs.getattr(&mut c, ino.0).await?) {
            Ok(st) if who.may(&st, want) => reply.ok(),
            Ok(_) => reply.error(Errno::EACCES),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let who = identity(req);
        let r = name_str(name).and_then(|name| {
            on_conn!(self, |c| self
                .fs
                .create_at(&mut c, &who, parent.0, name, mode & !umask & 0o7777)
                .await?)
        });
        match r {
            Ok(st) => reply.created(
                &self.ttl,
                &attr(&st),
                Generation(0),
                FileHandle(0),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }
}
