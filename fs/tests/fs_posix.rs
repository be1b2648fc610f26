//! POSIX behaviour of every operation and its errors, on real Postgres.

mod common;

use common::{errno, pattern, T};
use dbos_fs::{Identity, Kind, Options, TimeSet, BLOCK_BYTES};

#[tokio::test]
async fn root_directory_exists_after_migration() {
    let t = T::new().await;
    let mut c = t.pool.acquire().await.unwrap();
    let root = t.fs.stat(&mut c, &t.root, "/").await.unwrap();
    assert_eq!(root.ino, 1);
    assert_eq!(root.kind, Kind::Dir);
    assert_eq!(root.nlink, 2);
    assert_eq!(root.mode, 0o755);
    assert!(t
        .fs
        .readdir(&mut c, &t.root, "/", None, 10)
        .await
        .unwrap()
        .is_empty());
    t.assert_consistent().await;
}

#[tokio::test]
async fn the_schema_refuses_an_inode_that_breaks_a_rule() {
    let t = T::new().await;
    let mut c = t.pool.acquire().await.unwrap();
    t.fs.create(&mut c, &t.root, "/f", 0o644).await.unwrap();
    // Each write breaks one rule of `fs.inode_valid`; none changes anything.
    let broken = [
        "INSERT INTO fs.inodes (kind, mode, uid, gid, nlink) VALUES ('fifo', 420, 0, 0, 1)",
        "INSERT INTO fs.inodes (kind, mode, uid, gid, nlink) VALUES ('file', 4096, 0, 0, 1)",
        "INSERT INTO fs.inodes (kind, mode, uid, gid, nlink) VALUES ('file', 420, -1, 0, 1)",
        "INSERT INTO fs.inodes (kind, mode, uid, gid, nlink) VALUES ('file', 420, 0, 4294967295, 1)",
        "INSERT INTO fs.inodes (kind, mode, uid, gid, nlink) VALUES ('file', 420, 0, 0, -1)",
        "INSERT INTO fs.inodes (kind, mode, uid, gid, nlink) VALUES ('dir', 493, 0, 0, 2)",
        "INSERT INTO fs.inodes (kind, mode, uid, gid, nlink, parent) VALUES ('file', 420, 0, 0, 1, 1)",
        "INSERT INTO fs.inodes (kind, mode, uid, gid, nlink) VALUES ('symlink', 511, 0, 0, 1)",
        "INSERT INTO fs.inodes (kind, mode, uid, gid, nlink, target, size) VALUES ('symlink', 511, 0, 0, 1, 'ab', 3)",
        "INSERT INTO fs.inodes (kind, mode, uid, gid, nlink, target) VALUES ('file', 420, 0, 0, 1, 'ab')",
        "INSERT INTO fs.inodes (kind, mode, uid, gid, nlink, target, size) VALUES ('symlink', 511, 0, 0, 1, '', 0)",
        "UPDATE fs.inodes SET size = -1 WHERE kind = 'file'",
        "UPDATE fs.inodes SET size = 1 WHERE ino = 1",
    ];
    for sql in broken {
        let err = sqlx::query(sql).execute(&mut *c).await.expect_err(sql);
        assert!(
            dbos_kernel::sqlstate::is(&err, dbos_kernel::sqlstate::CHECK_VIOLATION),
            "{sql}: {err}"
        );
    }
    // A valid row passes the same constraint.
    sqlx::query(
        "INSERT INTO fs.inodes (kind, mode, uid, gid, nlink, target, size)
         VALUES ('symlink', 511, 0, 0, 0, 'ab', 2)",
    )
    .execute(&mut *c)
    .await
    .unwrap();
    assert_eq!(t.count("SELECT count(*) FROM fs.inodes").await, 3);
}

#[tokio::test]
async fn the_schema_refuses_to_delete_an_inode_something_still_names() {
    let t = T::new().await;
    let mut c = t.pool.acquire().await.unwrap();
    let d = t.fs.mkdir(&mut c, &t.root, "/d", 0o755).await.unwrap();
    let f = t.fs.create(&mut c, &t.root, "/d/f", 0o644).await.unwrap();
    t.fs.write(&mut c, &t.root, "/d/f", 0, b"kept")
        .await
        .unwrap();
    // A file an entry names, a directory an entry names and that holds one, the root that
    // holds /d: each delete is refused by a key and changes nothing.
    for (ino, keys) in [
        (f.ino, &["dirents_child_fkey"][..]),
        (d.ino, &["dirents_child_fkey", "dirents_parent_fkey"]),
        (1, &["dirents_parent_fkey", "inodes_parent_fkey"]),
    ] {
        let sql = format!("DELETE FROM fs.inodes WHERE ino = {ino}");
        let err = sqlx::query(&sql).execute(&mut *c).await.expect_err(&sql);
        assert!(
            dbos_kernel::sqlstate::is(&err, dbos_kernel::sqlstate::FOREIGN_KEY_VIOLATION),
            "{sql}: {err}"
        );
        let by = err.as_database_error().and_then(|e| e.constraint());
        assert!(
            by.is_some_and(|k| keys.contains(&k)),
            "{sql}: refused by {by:?}, not one of {keys:?}"
        );
    }
    let blocks = format!("SELECT count(*) FROM fs.blocks WHERE ino = {}", f.ino);
    assert_eq!(t.count("SELECT count(*) FROM fs.inodes").await, 3);
    assert_eq!(t.count(&blocks).await, 1);
    // Removing the entry first lets the file's inode go, with its blocks.
    sqlx::query("DELETE FROM fs.dirents WHERE child = $1")
        .bind(f.ino as i64)
        .execute(&mut *c)
        .await
        .unwrap();
    sqlx::query("DELETE FROM fs.inodes WHERE ino = $1")
        .bind(f.ino as i64)
        .execute(&mut *c)
        .await
        .unwrap();
    assert_eq!(t.count(&blocks).await, 0);
    assert_eq!(
        t.fs.readdir(&mut c, &t.root, "/d", None, 10)
            .await
            .unwrap()
            .len(),
        0
    );
    t.assert_consistent().await;
}

#[tokio::test]
async fn whole_block_writes_replace_blocks_and_fill_holes() {
    let t = T::new().await;
    let (fs, r) = (&t.fs, &t.root);
    let mut c = t.pool.acquire().await.unwrap();
    let st = fs.create(&mut c, r, "/f", 0o644).await.unwrap();
    let b = BLOCK_BYTES as u64;
    // Three blocks, then whole blocks 1 and 2 rewritten in one write, then whole block 4
    // written past the end (block 3 a hole), each one statement.
    fs.write_at(&mut c, r, st.ino, 0, &pattern(3 * BLOCK_BYTES, 1))
        .await
        .unwrap();
    let middle = pattern(2 * BLOCK_BYTES, 2);
    fs.write_at(&mut c, r, st.ino, b, &middle).await.unwrap();
    let last = pattern(BLOCK_BYTES, 3);
    fs.write_at(&mut c, r, st.ino, 4 * b, &last).await.unwrap();

    let all = fs.read_at(&mut c, r, st.ino, 0, 1 << 20).await.unwrap();
    assert_eq!(all.len(), 5 * BLOCK_BYTES);
    assert_eq!(
        &all[..BLOCK_BYTES],
        &pattern(3 * BLOCK_BYTES, 1)[..BLOCK_BYTES]
    );
    assert_eq!(&all[BLOCK_BYTES..3 * BLOCK_BYTES], &middle[..]);
    assert!(all[3 * BLOCK_BYTES..4 * BLOCK_BYTES]
        .iter()
        .all(|x| *x == 0));
    assert_eq!(&all[4 * BLOCK_BYTES..], &last[..]);
    assert_eq!(fs.getattr(&mut c, st.ino).await.unwrap().size, 5 * b);
    // A whole block beside a partial piece in one write keeps the bytes around the piece.
    let mixed = pattern(BLOCK_BYTES + 10, 4);
    fs.write_at(&mut c, r, st.ino, b, &mixed).await.unwrap();
    let back = fs
        .read_at(&mut c, r, st.ino, b, 2 * BLOCK_BYTES)
        .await
        .unwrap();
    assert_eq!(&back[..mixed.len()], &mixed[..]);
    assert_eq!(&back[mixed.len()..], &middle[mixed.len()..]);
    assert_eq!(
        t.count(&format!(
            "SELECT count(*) FROM fs.blocks WHERE ino = {}",
            st.ino
        ))
        .await,
        4,
        "the hole is not stored"
    );
    t.assert_consistent().await;
}

#[tokio::test]
async fn reads_and_writes_at_any_offset_with_holes_as_zeros() {
    let t = T::new().await;
    let fs = &t.fs;
    let r = &t.root;
    let mut tx = t.tx().await;
    fs.create(&mut tx, r, "/f", 0o644).await.unwrap();
    assert_eq!(fs.write(&mut tx, r, "/f", 0, b"hello").await.unwrap(), 5);
    // A write far past the end leaves a hole across a whole block and part of another.
    fs.write(&mut tx, r, "/f", 200_000, b"world").await.unwrap();
    tx.commit().await.unwrap();

    let mut c = t.pool.acquire().await.unwrap();
    let st = fs.stat(&mut c, r, "/f").await.unwrap();
    assert_eq!(st.size, 200_005);
    let all = fs.read(&mut c, r, "/f", 0, 1 << 20).await.unwrap();
    assert_eq!(all.len(), 200_005);
    assert_eq!(&all[..5], b"hello");
    assert!(
        all[5..200_000].iter().all(|b| *b == 0),
        "holes read as zeros"
    );
    assert_eq!(&all[200_000..], b"world");
    // Only the two touched blocks are stored.
    assert_eq!(
        t.count(&format!(
            "SELECT count(*) FROM fs.blocks WHERE ino = {}",
            st.ino
        ))
        .await,
        2
    );

    // Partial overwrite inside a block keeps the bytes around it.
    fs.write(&mut c, r, "/f", 2, b"LL").await.unwrap();
    assert_eq!(fs.read(&mut c, r, "/f", 0, 5).await.unwrap(), b"heLLo");
    // A write across block boundaries, not aligned, round-trips.
    let data = pattern(3 * BLOCK_BYTES + 123, 7);
    let mut tx = t.tx().await;
    fs.write(&mut tx, r, "/f", 1_000, &data).await.unwrap();
    tx.commit().await.unwrap();
    let back = fs.read(&mut c, r, "/f", 1_000, data.len()).await.unwrap();
    assert_eq!(back, data);
    assert_eq!(fs.read(&mut c, r, "/f", 0, 5).await.unwrap(), b"heLLo");
    // Reads past the end are short or empty.
    assert_eq!(fs.read(&mut c, r, "/f", 200_003, 100).await.unwrap(), b"ld");
    assert!(fs
        .read(&mut c, r, "/f", 300_000, 100)
        .await
        .unwrap()
        .is_empty());
    // Writing into a hole in the middle of a stored block zero-fills before it.
    fs.create(&mut c, r, "/g", 0o644).await.unwrap();
    fs.write(&mut c, r, "/g", 10, b"x").await.unwrap();
    fs.write(&mut c, r, "/g", 0, b"ab").await.unwrap();
    assert_eq!(
        fs.read(&mut c, r, "/g", 0, 100).await.unwrap(),
        b"ab\0\0\0\0\0\0\0\0x"
    );
    t.assert_consistent().await;
}

#[tokio::test]
async fn append_and_truncate_grow_and_shrink() {
    let t = T::new().await;
    let (fs, r) = (&t.fs, &t.root);
    let mut c = t.pool.acquire().await.unwrap();
    let st = fs.create(&mut c, r, "/log", 0o644).await.unwrap();
    fs.append(&mut c, r, "/log", b"one\n").await.unwrap();
    fs.append(&mut c, r, "/log", b"two\n").await.unwrap();
    assert_eq!(
        fs.read(&mut c, r, "/log", 0, 100).await.unwrap(),
        b"one\ntwo\n"
    );

    let big = pattern(2 * BLOCK_BYTES + 10, 1);
    fs.write(&mut c, r, "/log", 0, &big).await.unwrap();
    // Shrink into the first block: later blocks are freed, the first is cut.
    assert_eq!(fs.truncate(&mut c, r, "/log", 3).await.unwrap().size, 3);
    assert_eq!(
        t.count(&format!(
            "SELECT count(*) FROM fs.blocks WHERE ino = {}",
            st.ino
        ))
        .await,
        1
    );
    // Growing again exposes zeros, never the old bytes.
    fs.truncate(&mut c, r, "/log", 70_000).await.unwrap();
    let back = fs.read(&mut c, r, "/log", 0, 100_000).await.unwrap();
    assert_eq!(back.len(), 70_000);
    assert_eq!(&back[..3], &big[..3]);
    assert!(back[3..].iter().all(|b| *b == 0));
    fs.truncate(&mut c, r, "/log", 0).await.unwrap();
    assert_eq!(
        t.count(&format!(
            "SELECT count(*) FROM fs.blocks WHERE ino = {}",
            st.ino
        ))
        .await,
        0
    );
    assert_eq!(errno(fs.truncate(&mut c, r, "/", 0).await), libc::EISDIR);
    t.assert_consistent().await;
}

#[tokio::test]
async fn mkdir_p_and_paged_readdir() {
    let t = T::new().await;
    let (fs, r) = (&t.fs, &t.root);
    let mut tx = t.tx().await;
    let c = fs.mkdir_all(&mut tx, r, "/a/b/c", 0o755).await.unwrap();
    assert_eq!(c.kind, Kind::Dir);
    // Again: nothing to do.
    assert_eq!(
        fs.mkdir_all(&mut tx, r, "a/b/c/", 0o755).await.unwrap().ino,
        c.ino
    );
    for i in 0..25 {
        fs.create(&mut tx, r, &format!("/a/b/f{i:02}"), 0o644)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    let mut conn = t.pool.acquire().await.unwrap();
    assert_eq!(
        errno(fs.mkdir(&mut conn, r, "/a/b", 0o755).await),
        libc::EEXIST
    );
    assert_eq!(
        errno(fs.mkdir_all(&mut conn, r, "/a/b/f00/x", 0o755).await),
        libc::ENOTDIR
    );
    assert_eq!(
        errno(fs.mkdir_all(&mut conn, r, "/a/b/f00", 0o755).await),
        libc::EEXIST
    );
    let mut names = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = fs
            .readdir(&mut conn, r, "/a/b", after.as_deref(), 10)
            .await
            .unwrap();
        assert!(page.len() <= 10);
        if page.is_empty() {
            break;
        }
        after = Some(page.last().unwrap().name.clone());
        names.extend(page.into_iter().map(|e| e.name));
    }
    let mut expected: Vec<String> = (0..25).map(|i| format!("f{i:02}")).collect();
    expected.insert(0, "c".into());
    assert_eq!(names, expected);
    // Links: /a/b has ".", its entry in /a, and c's "..".
    assert_eq!(fs.stat(&mut conn, r, "/a/b").await.unwrap().nlink, 3);
    t.assert_consistent().await;
}

#[tokio::test]
async fn rename_is_atomic_replaces_targets_and_refuses_cycles() {
    let t = T::new().await;
    let (fs, r) = (&t.fs, &t.root);
    let mut c = t.pool.acquire().await.unwrap();
    fs.mkdir_all(&mut c, r, "/d/sub", 0o755).await.unwrap();
    fs.mkdir(&mut c, r, "/e", 0o755).await.unwrap();
    fs.mkdir(&mut c, r, "/empty", 0o755).await.unwrap();
    fs.create(&mut c, r, "/x", 0o644).await.unwrap();
    fs.write(&mut c, r, "/x", 0, b"new").await.unwrap();
    let old = fs.create(&mut c, r, "/y", 0o644).await.unwrap();
    fs.write(&mut c, r, "/y", 0, &pattern(100_000, 3))
        .await
        .unwrap();

    // A file replaces a file; the replaced file's blocks are freed.
    let mut tx = t.tx().await;
    fs.rename(&mut tx, r, "/x", "/y").await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(fs.read(&mut c, r, "/y", 0, 10).await.unwrap(), b"new");
    assert_eq!(errno(fs.stat(&mut c, r, "/x").await), libc::ENOENT);
    assert_eq!(
        t.count(&format!(
            "SELECT count(*) FROM fs.blocks WHERE ino = {}",
            old.ino
        ))
        .await,
        0
    );
    assert_eq!(
        errno(fs.rename(&mut c, r, "/d", "/d/sub/inner").await),
        libc::EINVAL
    );
    // A trailing slash names a directory: a file is not moved by it.
    assert_eq!(
        errno(fs.rename(&mut c, r, "/y", "/y2/").await),
        libc::ENOTDIR
    );
    assert_eq!(errno(fs.stat(&mut c, r, "/y2").await), libc::ENOENT);
    assert_eq!(
        errno(fs.rename(&mut c, r, "/d", "/d/x").await),
        libc::EINVAL
    );
    assert_eq!(
        errno(fs.rename(&mut c, r, "/e", "/d").await),
        libc::ENOTEMPTY
    );
    assert_eq!(errno(fs.rename(&mut c, r, "/y", "/e").await), libc::EISDIR);
    assert_eq!(errno(fs.rename(&mut c, r, "/e", "/y").await), libc::ENOTDIR);
    assert_eq!(
        errno(fs.rename(&mut c, r, "/missing", "/z").await),
        libc::ENOENT
    );
    assert_eq!(errno(fs.rename(&mut c, r, "/", "/z").await), libc::EBUSY);
    // A directory replaces an empty directory and moves its subtree with it.
    fs.rename(&mut c, r, "/d", "/empty").await.unwrap();
    assert!(fs.stat(&mut c, r, "/empty/sub").await.unwrap().is_dir());
    // Into another directory; link counts follow.
    fs.rename(&mut c, r, "/empty", "/e/moved").await.unwrap();
    assert_eq!(fs.stat(&mut c, r, "/e").await.unwrap().nlink, 3);
    assert_eq!(fs.stat(&mut c, r, "/").await.unwrap().nlink, 3);
    // Renaming a file onto itself (a hard link of the same inode) changes nothing.
    fs.link(&mut c, r, "/y", "/y2").await.unwrap();
    fs.rename(&mut c, r, "/y", "/y2").await.unwrap();
    assert_eq!(fs.stat(&mut c, r, "/y").await.unwrap().nlink, 2);
    let (a, b) = (
        fs.lstat(&mut c, r, "/e/moved/sub/..").await.unwrap(),
        fs.stat(&mut c, r, "/e/moved").await.unwrap(),
    );
    assert_eq!(a.ino, b.ino, ".. follows the moved directory");
    t.assert_consistent().await;
}

#[tokio::test]
async fn links_share_data_and_the_last_unlink_frees_blocks() {
    let t = T::new().await;
    let (fs, r) = (&t.fs, &t.root);
    let mut c = t.pool.acquire().await.unwrap();
    fs.mkdir(&mut c, r, "/d", 0o755).await.unwrap();
    let st = fs.create(&mut c, r, "/d/a", 0o644).await.unwrap();
    fs.write(&mut c, r, "/d/a", 0, &pattern(150_000, 9))
        .await
        .unwrap();
    let linked = fs.link(&mut c, r, "/d/a", "/b").await.unwrap();
    assert_eq!((linked.ino, linked.nlink), (st.ino, 2));
    assert_eq!(
        errno(fs.link(&mut c, r, "/d", "/dirlink").await),
        libc::EPERM
    );
    assert_eq!(errno(fs.link(&mut c, r, "/d/a", "/b").await), libc::EEXIST);
    fs.unlink(&mut c, r, "/d/a").await.unwrap();
    assert_eq!(
        fs.read(&mut c, r, "/b", 0, 10).await.unwrap(),
        pattern(10, 9)
    );
    assert_eq!(fs.stat(&mut c, r, "/b").await.unwrap().nlink, 1);
    fs.unlink(&mut c, r, "/b").await.unwrap();
    assert_eq!(
        t.count(&format!(
            "SELECT count(*) FROM fs.blocks WHERE ino = {}",
            st.ino
        ))
        .await,
        0
    );
    assert_eq!(
        t.count(&format!(
            "SELECT count(*) FROM fs.inodes WHERE ino = {}",
            st.ino
        ))
        .await,
        0
    );
    assert_eq!(errno(fs.unlink(&mut c, r, "/b").await), libc::ENOENT);
    assert_eq!(errno(fs.unlink(&mut c, r, "/d").await), libc::EISDIR);
    t.assert_consistent().await;
}

#[tokio::test]
async fn rmdir_removes_only_empty_directories() {
    let t = T::new().await;
    let (fs, r) = (&t.fs, &t.root);
    let mut c = t.pool.acquire().await.unwrap();
    fs.mkdir_all(&mut c, r, "/a/b", 0o755).await.unwrap();
    fs.create(&mut c, r, "/f", 0o644).await.unwrap();
    assert_eq!(errno(fs.rmdir(&mut c, r, "/a").await), libc::ENOTEMPTY);
    assert_eq!(errno(fs.rmdir(&mut c, r, "/f").await), libc::ENOTDIR);
    assert_eq!(errno(fs.rmdir(&mut c, r, "/").await), libc::EBUSY);
    assert_eq!(errno(fs.rmdir(&mut c, r, "/missing").await), libc::ENOENT);
    let a = fs.stat(&mut c, r, "/a").await.unwrap();
    assert_eq!(
        errno(fs.rmdir_at(&mut c, r, a.ino, ".").await),
        libc::EINVAL
    );
    assert_eq!(
        errno(fs.rmdir_at(&mut c, r, a.ino, "..").await),
        libc::ENOTEMPTY
    );
    fs.rmdir(&mut c, r, "/a/b").await.unwrap();
    fs.rmdir(&mut c, r, "/a").await.unwrap();
    assert_eq!(fs.stat(&mut c, r, "/").await.unwrap().nlink, 2);
    // remove_all takes a whole tree in one transaction.
    let mut tx = t.tx().await;
    fs.mkdir_all(&mut tx, r, "/t/u/v", 0o755).await.unwrap();
    fs.create(&mut tx, r, "/t/u/v/file", 0o644).await.unwrap();
    fs.symlink(&mut tx, r, "/f", "/t/link").await.unwrap();
    assert_eq!(fs.remove_all(&mut tx, r, "/t").await.unwrap(), 5);
    tx.commit().await.unwrap();
    assert!(
        fs.stat(&mut c, r, "/f").await.is_ok(),
        "a link's target survives rm -r"
    );
    // `..` and the root are refused before anything is removed, even outside a transaction
    // (each statement commits on its own).
    fs.mkdir(&mut c, r, "/keep", 0o755).await.unwrap();
    assert_eq!(
        errno(fs.remove_all(&mut c, r, "/keep/..").await),
        libc::EINVAL
    );
    assert_eq!(errno(fs.remove_all(&mut c, r, "/").await), libc::EBUSY);
    assert_eq!(
        errno(fs.remove_all(&mut c, r, "/keep/../.").await),
        libc::EINVAL
    );
    assert!(
        fs.stat(&mut c, r, "/f").await.is_ok(),
        "the root keeps its files"
    );
    assert!(fs.stat(&mut c, r, "/keep").await.is_ok());
    t.assert_consistent().await;
}

#[tokio::test]
async fn symlinks_resolve_in_the_middle_and_at_the_end() {
    let t = T::new().await;
    let (fs, r) = (&t.fs, &t.root);
    let mut c = t.pool.acquire().await.unwrap();
    fs.mkdir_all(&mut c, r, "/real/dir", 0o755).await.unwrap();
    fs.create(&mut c, r, "/real/dir/file", 0o644).await.unwrap();
    fs.write(&mut c, r, "/real/dir/file", 0, b"content")
        .await
        .unwrap();
    fs.symlink(&mut c, r, "/real/dir", "/abs").await.unwrap();
    fs.symlink(&mut c, r, "dir/file", "/real/rel")
        .await
        .unwrap();
    fs.symlink(&mut c, r, "../../real", "/real/dir/up")
        .await
        .unwrap();
    assert_eq!(
        fs.read(&mut c, r, "/abs/file", 0, 100).await.unwrap(),
        b"content"
    );
    assert_eq!(
        fs.read(&mut c, r, "/real/rel", 0, 100).await.unwrap(),
        b"content"
    );
    assert_eq!(
        fs.read(&mut c, r, "/abs/up/dir/file", 0, 100)
            .await
            .unwrap(),
        b"content"
    );
    let l = fs.lstat(&mut c, r, "/abs").await.unwrap();
    assert_eq!((l.kind, l.size), (Kind::Symlink, 9));
    assert_eq!(fs.stat(&mut c, r, "/abs").await.unwrap().kind, Kind::Dir);
    assert_eq!(
        fs.readlink(&mut c, r, "/real/rel").await.unwrap(),
        "dir/file"
    );
    assert_eq!(errno(fs.readlink(&mut c, r, "/real").await), libc::EINVAL);
    fs.symlink(&mut c, r, "/loop2", "/loop1").await.unwrap();
    fs.symlink(&mut c, r, "/loop1", "/loop2").await.unwrap();
    assert_eq!(errno(fs.stat(&mut c, r, "/loop1").await), libc::ELOOP);
    fs.symlink(&mut c, r, "/nowhere", "/dangling")
        .await
        .unwrap();
    assert_eq!(errno(fs.stat(&mut c, r, "/dangling").await), libc::ENOENT);
    assert!(fs.lstat(&mut c, r, "/dangling").await.is_ok());
    assert_eq!(
        errno(fs.symlink(&mut c, r, "", "/empty").await),
        libc::ENOENT
    );
    // Removing a link leaves its target.
    fs.unlink(&mut c, r, "/abs").await.unwrap();
    assert!(fs.stat(&mut c, r, "/real/dir").await.is_ok());
    t.assert_consistent().await;
}

#[tokio::test]
async fn bad_names_and_paths_get_posix_errors() {
    let t = T::with(Options {
        file_bytes_max: 1_000,
        ..Options::default()
    })
    .await;
    let (fs, r) = (&t.fs, &t.root);
    let mut c = t.pool.acquire().await.unwrap();
    fs.create(&mut c, r, "/file", 0o644).await.unwrap();
    let long = "n".repeat(256);
    assert_eq!(
        errno(fs.create(&mut c, r, &format!("/{long}"), 0o644).await),
        libc::ENAMETOOLONG
    );
    let ok = "n".repeat(255);
    fs.create(&mut c, r, &format!("/{ok}"), 0o644)
        .await
        .unwrap();
    let deep = "/d".repeat(2048);
    assert_eq!(errno(fs.stat(&mut c, r, &deep).await), libc::ENAMETOOLONG);
    assert_eq!(errno(fs.stat(&mut c, r, "").await), libc::ENOENT);
    assert_eq!(errno(fs.stat(&mut c, r, "/missing/x").await), libc::ENOENT);
    assert_eq!(errno(fs.stat(&mut c, r, "/file/x").await), libc::ENOTDIR);
    assert_eq!(errno(fs.stat(&mut c, r, "/file/").await), libc::ENOTDIR);
    assert_eq!(
        errno(fs.create(&mut c, r, "/file", 0o644).await),
        libc::EEXIST
    );
    assert_eq!(
        errno(fs.create(&mut c, r, "/file/y", 0o644).await),
        libc::ENOTDIR
    );
    assert_eq!(
        errno(fs.create(&mut c, r, "/nodir/y", 0o644).await),
        libc::ENOENT
    );
    assert_eq!(errno(fs.mkdir(&mut c, r, "/", 0o755).await), libc::EEXIST);
    assert_eq!(
        errno(fs.create_at(&mut c, r, 1, "a/b", 0o644).await),
        libc::EINVAL
    );
    assert_eq!(
        errno(fs.create_at(&mut c, r, 1, "a\0b", 0o644).await),
        libc::EINVAL
    );
    assert_eq!(
        errno(fs.create_at(&mut c, r, 1, "..", 0o644).await),
        libc::EEXIST
    );
    assert_eq!(
        errno(fs.create_at(&mut c, r, 1, "", 0o644).await),
        libc::ENOENT
    );
    assert_eq!(errno(fs.stat(&mut c, r, "/a\0b").await), libc::EINVAL);
    assert_eq!(errno(fs.write(&mut c, r, "/", 0, b"x").await), libc::EISDIR);
    assert_eq!(errno(fs.read(&mut c, r, "/", 0, 1).await), libc::EISDIR);
    // A write checks the inode in its one statement: a symbolic link has no data, a missing
    // inode is not found, and nothing is written either way.
    fs.symlink(&mut c, r, "/", "/to-root").await.unwrap();
    let link = fs.lstat(&mut c, r, "/to-root").await.unwrap();
    assert_eq!(
        errno(fs.write_at(&mut c, r, link.ino, 0, b"x").await),
        libc::EINVAL
    );
    assert_eq!(fs.lstat(&mut c, r, "/to-root").await.unwrap().size, 1);
    assert_eq!(
        errno(fs.write_at(&mut c, r, 999_999, 0, b"x").await),
        libc::ENOENT
    );
    // A write of nothing past the end does not grow the file.
    fs.create(&mut c, r, "/empty", 0o644).await.unwrap();
    let empty = fs.stat(&mut c, r, "/empty").await.unwrap();
    assert_eq!(
        fs.write_at(&mut c, r, empty.ino, 500, b"").await.unwrap(),
        0
    );
    let after = fs.stat(&mut c, r, "/empty").await.unwrap();
    assert_eq!(after.size, 0);
    assert_eq!(
        (after.mtime, after.ctime),
        (empty.mtime, empty.ctime),
        "a write of nothing changes no time"
    );
    // It is checked all the same, and is no write past the maximum size.
    assert_eq!(
        errno(fs.write_at(&mut c, r, link.ino, 0, b"").await),
        libc::EINVAL
    );
    assert_eq!(
        errno(fs.write_at(&mut c, r, 999_999, 0, b"").await),
        libc::ENOENT
    );
    let root = fs.stat(&mut c, r, "/").await.unwrap();
    assert_eq!(
        errno(fs.write_at(&mut c, r, root.ino, 0, b"").await),
        libc::EISDIR
    );
    assert_eq!(
        fs.write_at(&mut c, r, empty.ino, 5_000, b"").await.unwrap(),
        0
    );
    // The configured maximum file size.
    fs.write(&mut c, r, "/file", 990, &[1; 10]).await.unwrap();
    assert_eq!(
        errno(fs.write(&mut c, r, "/file", 990, &[1; 11]).await),
        libc::EFBIG
    );
    assert_eq!(
        errno(fs.truncate(&mut c, r, "/file", 1_001).await),
        libc::EFBIG
    );
    let e = fs.truncate(&mut c, r, "/file", 5_000).await.unwrap_err();
    assert!(e.to_string().contains("file_bytes_max"), "{e}");
    t.assert_consistent().await;
}

#[tokio::test]
async fn mode_bits_are_checked_for_the_caller_and_root_bypasses_them() {
    let t = T::new().await;
    let (fs, r) = (&t.fs, &t.root);
    let alice = Identity::new(1000, 1000, vec![]);
    let bob = Identity::new(2000, 2000, vec![]);
    let bob_in_alices_group = Identity::new(2000, 2000, vec![1000]);
    let mut c = t.pool.acquire().await.unwrap();
    fs.mkdir(&mut c, r, "/home", 0o755).await.unwrap();
    fs.mkdir(&mut c, r, "/home/alice", 0o750).await.unwrap();
    fs.chown(&mut c, r, "/home/alice", Some(1000), Some(1000))
        .await
        .unwrap();
    // Alice works in her home.
    let f = fs
        .create(&mut c, &alice, "/home/alice/notes", 0o640)
        .await
        .unwrap();
    assert_eq!((f.uid, f.gid), (1000, 1000));
    fs.write(&mut c, &alice, "/home/alice/notes", 0, b"secret")
        .await
        .unwrap();
    // Bob cannot create at the root, nor enter alice's home.
    assert_eq!(
        errno(fs.create(&mut c, &bob, "/bobfile", 0o644).await),
        libc::EACCES
    );
    assert_eq!(
        errno(fs.stat(&mut c, &bob, "/home/alice/notes").await),
        libc::EACCES
    );
    assert_eq!(
        errno(fs.readdir(&mut c, &bob, "/home/alice", None, 10).await),
        libc::EACCES
    );
    // In alice's group, bob may read (r-x, r--) but not write or create.
    assert_eq!(
        fs.read(&mut c, &bob_in_alices_group, "/home/alice/notes", 0, 10)
            .await
            .unwrap(),
        b"secret"
    );
    assert_eq!(
        errno(
            fs.write(&mut c, &bob_in_alices_group, "/home/alice/notes", 0, b"x")
                .await
        ),
        libc::EACCES
    );
    assert_eq!(
        errno(
            fs.create(&mut c, &bob_in_alices_group, "/home/alice/b", 0o644)
                .await
        ),
        libc::EACCES
    );
    assert_eq!(
        errno(
            fs.unlink(&mut c, &bob_in_alices_group, "/home/alice/notes")
                .await
        ),
        libc::EACCES
    );
    // Only the owner changes modes; only root gives files away.
    assert_eq!(
        errno(
            fs.chmod(&mut c, &bob_in_alices_group, "/home/alice/notes", 0o777)
                .await
        ),
        libc::EPERM
    );
    assert_eq!(
        errno(
            fs.chown(&mut c, &alice, "/home/alice/notes", Some(2000), None)
                .await
        ),
        libc::EPERM
    );
    assert_eq!(
        errno(
            fs.chown(&mut c, &alice, "/home/alice/notes", None, Some(2000))
                .await
        ),
        libc::EPERM
    );
    assert_eq!(
        errno(
            fs.utimens(
                &mut c,
                &bob_in_alices_group,
                "/home/alice/notes",
                None,
                Some(TimeSet::Now)
            )
            .await
        ),
        libc::EACCES
    );
    // The owner with mode 000 is locked out; root is not.
    fs.chmod(&mut c, &alice, "/home/alice/notes", 0)
        .await
        .unwrap();
    assert_eq!(
        errno(fs.read(&mut c, &alice, "/home/alice/notes", 0, 10).await),
        libc::EACCES
    );
    assert_eq!(
        fs.read(&mut c, r, "/home/alice/notes", 0, 10)
            .await
            .unwrap(),
        b"secret"
    );
    // A sticky, world-writable directory: bob may not remove alice's file there.
    fs.mkdir(&mut c, r, "/tmp", 0o1777).await.unwrap();
    fs.create(&mut c, &alice, "/tmp/a", 0o666).await.unwrap();
    assert_eq!(errno(fs.unlink(&mut c, &bob, "/tmp/a").await), libc::EPERM);
    assert_eq!(
        errno(fs.rename(&mut c, &bob, "/tmp/a", "/tmp/b").await),
        libc::EPERM
    );
    fs.create(&mut c, &bob, "/tmp/bobs", 0o644).await.unwrap();
    fs.unlink(&mut c, &bob, "/tmp/bobs").await.unwrap();
    fs.unlink(&mut c, &alice, "/tmp/a").await.unwrap();
    // A setgid directory passes its group on.
    fs.mkdir(&mut c, r, "/shared", 0o2777).await.unwrap();
    fs.chown(&mut c, r, "/shared", None, Some(500))
        .await
        .unwrap();
    let s = fs.create(&mut c, &bob, "/shared/x", 0o644).await.unwrap();
    assert_eq!(s.gid, 500);
    t.assert_consistent().await;
}

#[tokio::test]
async fn attributes_change_with_chmod_chown_and_utimens() {
    let t = T::new().await;
    let (fs, r) = (&t.fs, &t.root);
    let mut c = t.pool.acquire().await.unwrap();
    fs.create(&mut c, r, "/f", 0o644).await.unwrap();
    assert_eq!(
        fs.chmod(&mut c, r, "/f", 0o4711).await.unwrap().mode,
        0o4711
    );
    let st = fs.chown(&mut c, r, "/f", Some(42), Some(43)).await.unwrap();
    assert_eq!((st.uid, st.gid), (42, 43));
    let when = chrono::DateTime::parse_from_rfc3339("2001-02-03T04:05:06.789012Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let st = fs
        .utimens(
            &mut c,
            r,
            "/f",
            Some(TimeSet::At(when)),
            Some(TimeSet::At(when)),
        )
        .await
        .unwrap();
    assert_eq!((st.atime, st.mtime), (when, when));
    assert!(st.ctime > when);
    let st = fs
        .utimens(&mut c, r, "/f", None, Some(TimeSet::Now))
        .await
        .unwrap();
    assert_eq!(st.atime, when);
    assert!(st.mtime > when);
}

#[tokio::test]
async fn operations_in_one_transaction_commit_or_vanish_together() {
    let t = T::new().await;
    let (fs, r) = (&t.fs, &t.root);
    let mut tx = t.tx().await;
    fs.mkdir_all(&mut tx, r, "/batch/x", 0o755).await.unwrap();
    fs.create(&mut tx, r, "/batch/x/f", 0o644).await.unwrap();
    fs.write(&mut tx, r, "/batch/x/f", 0, &pattern(300_000, 2))
        .await
        .unwrap();
    fs.rename(&mut tx, r, "/batch/x/f", "/batch/g")
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    let mut c = t.pool.acquire().await.unwrap();
    assert_eq!(errno(fs.stat(&mut c, r, "/batch").await), libc::ENOENT);
    assert_eq!(t.count("SELECT count(*) FROM fs.blocks").await, 0);
    assert_eq!(t.count("SELECT count(*) FROM fs.inodes").await, 1);

    let mut tx = t.tx().await;
    fs.mkdir_all(&mut tx, r, "/batch/x", 0o755).await.unwrap();
    fs.create(&mut tx, r, "/batch/x/f", 0o644).await.unwrap();
    fs.write(&mut tx, r, "/batch/x/f", 0, b"kept")
        .await
        .unwrap();
    // A refused operation inside the transaction does not spoil it.
    assert_eq!(
        errno(fs.mkdir(&mut tx, r, "/batch", 0o755).await),
        libc::EEXIST
    );
    tx.commit().await.unwrap();
    assert_eq!(
        fs.read(&mut c, r, "/batch/x/f", 0, 10).await.unwrap(),
        b"kept"
    );
    t.assert_consistent().await;
}

#[tokio::test]
async fn two_writers_at_once_lose_no_update() {
    let t = T::new().await;
    let fs = t.fs.clone();
    let mut c = t.pool.acquire().await.unwrap();
    let st = fs.create(&mut c, &t.root, "/shared", 0o666).await.unwrap();
    drop(c);
    // Both writers write interleaved 100-byte slots of the same blocks, each in its own
    // transactions: partial-block writes that would lose each other's bytes without the
    // inode lock.
    let slots = 400u64;
    let mut tasks = Vec::new();
    for w in 0..2u64 {
        let (pool, fs) = (t.pool.clone(), fs.clone());
        tasks.push(tokio::spawn(async move {
            let who = Identity::root();
            for s in (w..slots).step_by(2) {
                let mut tx = pool.begin().await.unwrap();
                fs.write_at(&mut tx, &who, st.ino, s * 100, &[(s % 251) as u8 + 1; 100])
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut c = t.pool.acquire().await.unwrap();
    let all =
        t.fs.read(&mut c, &t.root, "/shared", 0, 1 << 20)
            .await
            .unwrap();
    assert_eq!(all.len() as u64, slots * 100);
    for s in 0..slots {
        let slot = &all[(s * 100) as usize..((s + 1) * 100) as usize];
        assert!(
            slot.iter().all(|b| *b == (s % 251) as u8 + 1),
            "slot {s} intact"
        );
    }

    // Two creators of one name: exactly one wins, the other sees EEXIST.
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let (pool, fs) = (t.pool.clone(), fs.clone());
        tasks.push(tokio::spawn(async move {
            let mut tx = pool.begin().await.unwrap();
            let r = fs.create(&mut tx, &Identity::root(), "/race", 0o644).await;
            if r.is_ok() {
                tx.commit().await.unwrap();
            }
            r.map(|_| ()).map_err(|e| e.errno())
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    results.sort();
    assert_eq!(results, vec![Ok(()), Err(libc::EEXIST)]);
    t.assert_consistent().await;
}

#[tokio::test]
async fn os_views_answer_analytics_in_one_statement() {
    let t = T::new().await;
    let (fs, r) = (&t.fs, &t.root);
    let mut tx = t.tx().await;
    fs.mkdir_all(&mut tx, r, "/u/alice/docs", 0o755)
        .await
        .unwrap();
    fs.mkdir_all(&mut tx, r, "/u/bob", 0o755).await.unwrap();
    for (p, n) in [
        ("/u/alice/a", 10usize),
        ("/u/alice/docs/b", 5_000),
        ("/u/bob/c", 70_000),
    ] {
        fs.create(&mut tx, r, p, 0o644).await.unwrap();
        fs.write(&mut tx, r, p, 0, &pattern(n, 1)).await.unwrap();
    }
    fs.chown(&mut tx, r, "/u/bob/c", Some(2000), None)
        .await
        .unwrap();
    sqlx::query("INSERT INTO fs.users (uid, name) VALUES (2000, 'bob')")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let files: Vec<(String, i64, String)> =
        sqlx::query_as("SELECT path, size, owner FROM os.files WHERE kind = 'file' ORDER BY path")
            .fetch_all(&t.pool)
            .await
            .unwrap();
    assert_eq!(
        files,
        vec![
            ("/u/alice/a".into(), 10, "root".into()),
            ("/u/alice/docs/b".into(), 5_000, "root".into()),
            ("/u/bob/c".into(), 70_000, "bob".into()),
        ]
    );
    let du: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT path, bytes, files FROM os.du WHERE path IN ('/', '/u/alice', '/u/bob') ORDER BY path",
    )
    .fetch_all(&t.pool)
    .await
    .unwrap();
    assert_eq!(
        du,
        vec![
            ("/".into(), 75_010, 3),
            ("/u/alice".into(), 5_010, 2),
            ("/u/bob".into(), 70_000, 1)
        ]
    );
    let largest: Vec<(String,)> = sqlx::query_as("SELECT path FROM os.largest_files(2)")
        .fetch_all(&t.pool)
        .await
        .unwrap();
    assert_eq!(
        largest,
        vec![("/u/bob/c".into(),), ("/u/alice/docs/b".into(),)]
    );
    // The paper's queries: files, bytes, and files larger than X per user, one statement each.
    let per_user: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "SELECT owner, count(*), sum(size)::bigint, count(*) FILTER (WHERE size > 1000)
         FROM os.files WHERE kind = 'file' GROUP BY owner ORDER BY owner",
    )
    .fetch_all(&t.pool)
    .await
    .unwrap();
    assert_eq!(
        per_user,
        vec![("bob".into(), 1, 70_000, 1), ("root".into(), 2, 5_010, 1)]
    );
    let usage: (i64, i64) =
        sqlx::query_as("SELECT files, bytes FROM os.fs_usage WHERE owner = 'root'")
            .fetch_one(&t.pool)
            .await
            .unwrap();
    assert_eq!(usage, (2, 5_010));
}

#[tokio::test]
async fn create_with_content_is_one_atomic_statement() {
    let t = T::new().await;
    let (fs, r) = (&t.fs, &t.root);
    let mut c = t.pool.acquire().await.unwrap();
    // Outside a transaction: the one statement commits the inode, its name and its blocks.
    let data = pattern(100_000, 4);
    let st = fs
        .create_with(&mut c, r, 1, "small", 0o640, &data)
        .await
        .unwrap();
    assert_eq!((st.size, st.mode, st.nlink), (100_000, 0o640, 1));
    assert_eq!(
        fs.read(&mut c, r, "/small", 0, 200_000).await.unwrap(),
        data
    );
    assert_eq!(
        t.count(&format!(
            "SELECT count(*) FROM fs.blocks WHERE ino = {}",
            st.ino
        ))
        .await,
        2
    );
    assert_eq!(
        errno(fs.create_with(&mut c, r, 1, "small", 0o640, b"x").await),
        libc::EEXIST
    );
    let too_big = vec![0u8; dbos_fs::WRITE_BATCH_BYTES + 1];
    assert_eq!(
        errno(fs.create_with(&mut c, r, 1, "big", 0o640, &too_big).await),
        libc::EINVAL
    );
    let empty = fs
        .create_with(&mut c, r, 1, "empty", 0o600, b"")
        .await
        .unwrap();
    assert_eq!(empty.size, 0);
    fs.unlink_at(&mut c, r, 1, "small").await.unwrap();
    assert_eq!(t.count("SELECT count(*) FROM fs.blocks").await, 0);
    t.assert_consistent().await;
}

/// The contents of the blocks a connection reads, sorted.
async fn readable(conn: &mut sqlx::PgConnection) -> Vec<String> {
    let sql = "SELECT convert_from(data, 'UTF8') FROM fs.blocks ORDER BY 1";
    sqlx::query_scalar(sql)
        .fetch_all(conn)
        .await
        .expect("blocks are selectable")
}

/// A login role made by the superuser, and a connection as it.
async fn login_role(t: &T, name: &str, grants: &str) -> sqlx::PgConnection {
    use sqlx::{ConnectOptions, Connection};
    let mut admin = sqlx::PgConnection::connect(&t.admin_url)
        .await
        .expect("the superuser connects");
    let _ = sqlx::query(&format!("DROP ROLE IF EXISTS {name}"))
        .execute(&mut admin)
        .await;
    sqlx::raw_sql(&format!("CREATE ROLE {name} LOGIN PASSWORD 'pw'; {grants}"))
        .execute(&mut admin)
        .await
        .expect("a login role");
    let _ = admin.close().await;
    let opts: sqlx::postgres::PgConnectOptions = t.url.parse().expect("the test URL");
    opts.username(name)
        .password("pw")
        .connect()
        .await
        .expect("the role connects")
}

#[tokio::test]
async fn a_read_only_role_reads_the_os_views_but_no_files_blocks() {
    let t = T::new().await;
    let (fs, r) = (&t.fs, &t.root);
    let mut c = t.pool.acquire().await.unwrap();
    fs.create(&mut c, r, "/secret", 0o600).await.unwrap();
    fs.write(&mut c, r, "/secret", 0, b"top secret")
        .await
        .unwrap();
    let role = format!("analyst_{}", std::process::id());
    let mut analyst = login_role(&t, &role, &format!("GRANT dbos_reader TO {role}")).await;
    let files: i64 = sqlx::query_scalar("SELECT count(*) FROM os.files WHERE path = '/secret'")
        .fetch_one(&mut analyst)
        .await
        .expect("the os views are readable");
    assert_eq!(files, 1);
    for denied in [
        "SELECT data FROM fs.blocks",
        "SELECT count(*) FROM fs.inodes",
        "SELECT count(*) FROM kernel.nodes",
    ] {
        let e = sqlx::query(denied)
            .execute(&mut analyst)
            .await
            .expect_err(denied);
        assert!(dbos_kernel::sqlstate::is(&e, "42501"), "{denied}: {e}");
    }
}

#[tokio::test]
async fn a_sql_role_reads_only_the_blocks_its_identity_may_read() {
    let t = T::new().await;
    let (fs, r) = (&t.fs, &t.root);
    let mut c = t.pool.acquire().await.unwrap();
    let (me, them) = (
        Identity::new(1000, 1000, vec![]),
        Identity::new(2000, 2000, vec![]),
    );
    fs.mkdir(&mut c, r, "/home", 0o777).await.unwrap();
    fs.mkdir(&mut c, r, "/locked", 0o700).await.unwrap();
    for (who, path, mode) in [
        (&them, "/home/theirs", 0o600),
        (&them, "/home/shared", 0o644),
        (&me, "/home/mine", 0o600),
        (r, "/locked/open", 0o644),
    ] {
        fs.create(&mut c, who, path, mode).await.unwrap();
        fs.write(&mut c, who, path, 0, path.as_bytes())
            .await
            .unwrap();
    }
    let role = format!("alice_{}", std::process::id());
    let mut alice = login_role(
        &t,
        &role,
        &format!("GRANT USAGE ON SCHEMA fs TO {role}; GRANT SELECT, DELETE ON fs.blocks TO {role}"),
    )
    .await;
    // Without an identity the role is nobody: only files others may read, on paths others may
    // search.
    assert_eq!(readable(&mut alice).await, ["/home/shared"]);
    sqlx::query("INSERT INTO fs.sql_identities (role_name, uid, gid) VALUES ($1, 1000, 1000)")
        .bind(&role)
        .execute(&mut *c)
        .await
        .unwrap();
    assert_eq!(readable(&mut alice).await, ["/home/mine", "/home/shared"]);
    // No policy lets a role change blocks, whatever it was granted.
    let deleted = sqlx::query("DELETE FROM fs.blocks")
        .execute(&mut alice)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(deleted, 0);
    assert_eq!(t.count("SELECT count(*) FROM fs.blocks").await, 4);
    // The node role owns the table and reads everything.
    fs.read(&mut c, r, "/home/theirs", 0, 100).await.unwrap();
}
