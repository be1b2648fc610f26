//! Every query of the file system, with the index that serves it.

use sqlx::postgres::PgRow;
use sqlx::Row;

use crate::error::{Error, Result};
use crate::{Kind, Stat};

/// The inode columns [`stat`] decodes, prefixed by a table alias.
macro_rules! cols {
    ($p:literal) => {
        concat!(
            $p, ".ino, ", $p, ".kind, ", $p, ".mode, ", $p, ".uid, ", $p, ".gid, ", $p, ".size, ",
            $p, ".nlink, ", $p, ".atime, ", $p, ".mtime, ", $p, ".ctime"
        )
    };
}

/// Number of columns in [`cols!`].
pub(crate) const COLS: usize = 10;

/// Decodes the inode columns starting at column `at`; `None` when the inode is absent (the
/// null side of an outer join).
pub(crate) fn stat(row: &PgRow, at: usize) -> Result<Option<Stat>> {
    let ino: Option<i64> = row.try_get(at)?;
    let Some(ino) = ino else { return Ok(None) };
    let kind: String = row.try_get(at + 1)?;
    Ok(Some(Stat {
        ino: ino as u64,
        kind: Kind::parse(&kind),
        mode: row.try_get::<i32, _>(at + 2)? as u32,
        uid: row.try_get::<i64, _>(at + 3)? as u32,
        gid: row.try_get::<i64, _>(at + 4)? as u32,
        size: row.try_get::<i64, _>(at + 5)? as u64,
        nlink: row.try_get::<i32, _>(at + 6)? as u32,
        atime: row.try_get(at + 7)?,
        mtime: row.try_get(at + 8)?,
        ctime: row.try_get(at + 9)?,
    }))
}

/// Decodes the inode columns starting at column `at` of a row that must have them (a primary
/// key lookup, an inner join, a `RETURNING`); [`Error::Inconsistent`] naming `what` when they
/// are null.
pub(crate) fn inode(row: &PgRow, at: usize, what: impl FnOnce() -> String) -> Result<Stat> {
    stat(row, at)?.ok_or_else(|| Error::no_inode(what()))
}

/// An inode by number (primary key).
pub(crate) const GETATTR: &str =
    concat!("SELECT ", cols!("i"), " FROM fs.inodes i WHERE i.ino = $1");

/// An inode by number, locked against concurrent changes of it (primary key).
pub(crate) const GETATTR_LOCK: &str = concat!(
    "SELECT ",
    cols!("i"),
    " FROM fs.inodes i WHERE i.ino = $1 FOR NO KEY UPDATE"
);

/// Several inodes, locked in inode order so that concurrent lockers cannot deadlock on them
/// (primary key).
pub(crate) const LOCK_MANY: &str = concat!(
    "SELECT ",
    cols!("i"),
    " FROM fs.inodes i WHERE i.ino = ANY($1) ORDER BY i.ino FOR NO KEY UPDATE"
);

/// A directory and the inode its entry `$2` names, if any (primary keys of inodes and dirents).
pub(crate) const LOOKUP: &str = concat!(
    "SELECT ",
    cols!("p"),
    ", ",
    cols!("c"),
    " FROM fs.inodes p
      LEFT JOIN fs.dirents d ON d.parent = p.ino AND d.name = $2
      LEFT JOIN fs.inodes c ON c.ino = d.child
      WHERE p.ino = $1"
);

/// As [`LOOKUP`], locking the directory: the caller may then change its entries.
pub(crate) const LOOKUP_LOCK: &str = concat!(
    "SELECT ",
    cols!("p"),
    ", ",
    cols!("c"),
    " FROM fs.inodes p
      LEFT JOIN fs.dirents d ON d.parent = p.ino AND d.name = $2
      LEFT JOIN fs.inodes c ON c.ino = d.child
      WHERE p.ino = $1
      FOR NO KEY UPDATE OF p"
);

/// The inode entry `$2` of directory `$1` names, locked (dirents primary key, inodes primary
/// key).
pub(crate) const CHILD_LOCK: &str = concat!(
    "SELECT ",
    cols!("i"),
    " FROM fs.inodes i
      WHERE i.ino = (SELECT child FROM fs.dirents WHERE parent = $1 AND name = $2)
      FOR NO KEY UPDATE"
);

/// Walks path components `$2` from directory `$1` in one round trip: one row per component
/// reached (depth 0 is `$1`), stopping at a missing name or at a non-directory. `..` goes to
/// the directory's parent. Served by the dirents and inodes primary keys.
pub(crate) const WALK: &str = concat!(
    "WITH RECURSIVE walk (depth, ino) AS (
         SELECT 0, $1::bigint
         UNION ALL
         SELECT w.depth + 1, n.ino
         FROM walk w
         JOIN fs.inodes cur ON cur.ino = w.ino AND cur.kind = 'dir'
         CROSS JOIN LATERAL (
             SELECT CASE WHEN ($2::text[])[w.depth + 1] = '..' THEN cur.parent
                         ELSE (SELECT d.child FROM fs.dirents d
                               WHERE d.parent = w.ino AND d.name = ($2::text[])[w.depth + 1])
                    END AS ino
         ) n
         WHERE w.depth < cardinality($2::text[]) AND n.ino IS NOT NULL
     )
     SELECT ",
    cols!("i"),
    ", i.target FROM walk w JOIN fs.inodes i ON i.ino = w.ino ORDER BY w.depth"
);

/// Creates an entry and its inode with optional content or target, checking the directory and
/// the caller's permissions, in 1 round trip (function `fs.make`): a status, then the inode
/// columns.
pub(crate) const MAKE: &str = "SELECT * FROM fs.make($1, $2, $3, $4, $5, $6, $7, $8, $9)";

/// Removes an entry (unlink, or rmdir when `$6`), checking permissions, the sticky bit and
/// emptiness, in 1 round trip (function `fs.remove`): a status.
pub(crate) const REMOVE: &str = "SELECT fs.remove($1, $2, $3, $4, $5, $6)";

/// Removes entry `$2` of directory `$1` naming inode `$3`: the directory loses `$4` links (1
/// when `$3` is a subdirectory), and `$3` loses one link or, when `$5` is false (it was the
/// last), is deleted with its blocks (cascade). The caller holds both locks. 1 statement.
pub(crate) const REMOVE_ENTRY: &str = "
    WITH d AS (DELETE FROM fs.dirents WHERE parent = $1 AND name = $2),
         p AS (UPDATE fs.inodes SET mtime = now(), ctime = now(), nlink = nlink - $4 WHERE ino = $1),
         c AS (UPDATE fs.inodes SET nlink = nlink - 1, ctime = now() WHERE ino = $3 AND $5),
         x AS (DELETE FROM fs.inodes WHERE ino = $3 AND NOT $5)
    SELECT 1";

/// Whether directory `$1` has any entry (dirents primary key).
pub(crate) const HAS_ENTRIES: &str = "SELECT EXISTS (SELECT 1 FROM fs.dirents WHERE parent = $1)";

/// Moves entry `$2` of `$1` to name `$4` in `$3`; a moved directory (`$5` = 1) changes its
/// parent and the two directories' link counts. 1 statement.
pub(crate) const MOVE_ENTRY: &str = "
    WITH d AS (
             UPDATE fs.dirents SET parent = $3, name = $4
             WHERE parent = $1 AND name = $2 RETURNING child
         ),
         c AS (
             UPDATE fs.inodes SET ctime = now(), parent = CASE WHEN kind = 'dir' THEN $3 END
             WHERE ino = (SELECT child FROM d)
         )
    UPDATE fs.inodes SET mtime = now(), ctime = now(),
           nlink = nlink - CASE WHEN ino = $1 THEN $5 ELSE 0 END
                         + CASE WHEN ino = $3 THEN $5 ELSE 0 END
    WHERE ino IN ($1, $3)";

/// Whether directory `$2` is `$1` or one of its ancestors (walks inodes.parent by primary key).
pub(crate) const IS_ANCESTOR: &str = "
    WITH RECURSIVE up (ino) AS (
        SELECT $1::bigint
        UNION
        SELECT i.parent FROM fs.inodes i JOIN up ON i.ino = up.ino WHERE i.ino <> 1
    )
    SELECT EXISTS (SELECT 1 FROM up WHERE ino = $2)";

/// Adds entry `$2` in `$1` for inode `$3` (a hard link). 1 statement.
pub(crate) const LINK: &str = concat!(
    "WITH c AS (
         UPDATE fs.inodes SET nlink = nlink + 1, ctime = now() WHERE ino = $3 RETURNING *
     ),
     p AS (UPDATE fs.inodes SET mtime = now(), ctime = now() WHERE ino = $1),
     d AS (INSERT INTO fs.dirents (parent, name, child) SELECT $1, $2, ino FROM c)
     SELECT ",
    cols!("c"),
    " FROM c"
);

/// The inode and the pieces of its blocks inside bytes [`$2`, `$3`): one row per stored block
/// (none for holes), each cut to the range so only those bytes leave the server (primary key
/// range scan on blocks).
pub(crate) const READ: &str = concat!(
    "SELECT ", cols!("i"), ", b.idx,
            substring(b.data FROM (greatest($2 - b.idx * 65536, 0) + 1)::int
                             FOR (least($3 - b.idx * 65536, 65536) - greatest($2 - b.idx * 65536, 0))::int)
     FROM fs.inodes i
     LEFT JOIN fs.blocks b ON b.ino = i.ino AND b.idx BETWEEN $2 / 65536 AND ($3 - 1) / 65536
     WHERE i.ino = $1
     ORDER BY b.idx"
);

/// Writes pieces of file `$1` for identity `$2` (uid), `$3` (gid), `$4` (groups): piece k goes
/// to block `$5[k]` at byte `$6[k]` of it (`$7[k]`); the size grows to `$8`. Locks the inode and
/// checks it in the same round trip (function `fs.write`). Returns 'ok' or the error's name.
pub(crate) const WRITE: &str = "SELECT fs.write($1, $2, $3, $4, $5, $6, $7, $8)";

/// Sets the size of file `$1` to `$2`: blocks wholly past it are deleted, the block it ends in
/// is cut. The caller holds the inode's lock. 1 statement (blocks primary key range).
pub(crate) const TRUNCATE: &str = "
    WITH del AS (DELETE FROM fs.blocks WHERE ino = $1 AND idx >= ($2 + 65535) / 65536),
         cut AS (
             UPDATE fs.blocks SET data = substring(data FROM 1 FOR ($2 - idx * 65536)::int)
             WHERE ino = $1 AND idx = $2 / 65536 AND $2 % 65536 <> 0
               AND octet_length(data) > $2 - idx * 65536
         )
    UPDATE fs.inodes SET size = $2, mtime = now(), ctime = now() WHERE ino = $1";

/// Sets attributes; a NULL leaves one unchanged (primary key).
pub(crate) const SETATTR: &str = concat!(
    "UPDATE fs.inodes i SET mode = coalesce($2, mode), uid = coalesce($3, uid),
            gid = coalesce($4, gid), atime = coalesce($5, atime), mtime = coalesce($6, mtime),
            ctime = now()
     WHERE ino = $1 RETURNING ",
    cols!("i")
);

/// One page of a directory after name `$2`, in name order: the page of entries first (dirents
/// primary key range, stopping at the limit), then their inodes, so a page costs the same in a
/// directory of any size.
pub(crate) const READDIR_AFTER: &str = concat!(
    "SELECT d.name, ",
    cols!("c"),
    "
     FROM (SELECT name, child FROM fs.dirents
           WHERE parent = $1 AND name > $2 ORDER BY name LIMIT $3) d
     JOIN fs.inodes c ON c.ino = d.child
     ORDER BY d.name"
);

/// One page of a directory from position `$2`, in name order (dirents primary key).
pub(crate) const READDIR_AT: &str = concat!(
    "SELECT d.name, ",
    cols!("c"),
    "
     FROM (SELECT name, child FROM fs.dirents
           WHERE parent = $1 ORDER BY name OFFSET $2 LIMIT $3) d
     JOIN fs.inodes c ON c.ino = d.child
     ORDER BY d.name"
);

/// A symbolic link's target (primary key).
pub(crate) const READLINK: &str = "SELECT kind, target FROM fs.inodes WHERE ino = $1";

/// Inconsistencies found by the view `fs.fsck`; empty when the tree is consistent.
pub(crate) const FSCK: &str = "SELECT problem FROM fs.fsck";

/// A directory and every directory below it, by path, with the bytes and files of each
/// subtree (the view `os.du`, which walks the whole tree from the root; the subtree is the
/// directory and those with it among their ancestors).
pub(crate) const DU: &str = "SELECT path, bytes, files FROM os.du
     WHERE ino = $1 OR $1 = ANY (ancestors)
     ORDER BY path";

/// Begins a transaction that sees one snapshot for all its queries.
pub(crate) const BEGIN_SNAPSHOT: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ";

/// The on-disk bytes of the file system's tables with their indexes and TOAST, and the count
/// of its inodes as the server's statistics keep it (live rows, reported by each backend within
/// about a second; after a crash reset them, the last analyze's estimate, -1 before any).
pub(crate) const SPACE: &str = "
    SELECT (pg_total_relation_size('fs.inodes') + pg_total_relation_size('fs.dirents')
            + pg_total_relation_size('fs.blocks'))::int8,
           GREATEST(COALESCE(NULLIF(s.n_live_tup, 0), c.reltuples::int8), 1)::int8
    FROM pg_class c LEFT JOIN pg_stat_all_tables s ON s.relid = c.oid
    WHERE c.oid = 'fs.inodes'::regclass";
