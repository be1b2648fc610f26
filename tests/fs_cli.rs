//! The file system through the real `dbos` binary: the `dbos fs` commands, and crash atomicity
//! when a writer is killed with SIGKILL in the middle of a large write or of renames.

mod support;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use dbos_kernel::testing::scratch_dir_for_cluster;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use support::{eventually, ok, path, run, Node};

fn fs_args<'a>(dir: &'a Path, args: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["fs", "--data-dir", path(dir)];
    v.extend_from_slice(args);
    v
}

fn fs_ok(dir: &Path, args: &[&str]) -> String {
    ok(&fs_args(dir, args))
}

fn count(dir: &Path, query: &str) -> i64 {
    support::sql_json(dir, query)[0]["n"]
        .as_i64()
        .expect("a count")
}

/// The tables are consistent: fsck finds nothing.
fn assert_consistent(dir: &Path) {
    let problems = support::sql_json(dir, "SELECT problem FROM fs.fsck");
    assert_eq!(problems, serde_json::json!([]), "fsck found problems");
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_left(11) as u8 ^ seed)
        .collect()
}

#[test]
fn fs_commands_work_without_fuse() {
    let scratch = scratch_dir_for_cluster();
    let dir = scratch.path().join("data");
    let _node = Node::boot(&dir, &[]);
    let local = scratch.path().join("local.bin");
    let data = pattern(300_000, 5);
    std::fs::write(&local, &data).unwrap();

    fs_ok(&dir, &["mkdir", "-p", "/a/b"]);
    let put: serde_json::Value =
        serde_json::from_str(&fs_ok(&dir, &["--json", "put", path(&local), "/a/b/f"])).unwrap();
    assert_eq!(put["bytes"], 300_000);
    let back = scratch.path().join("back.bin");
    fs_ok(&dir, &["get", "/a/b/f", path(&back)]);
    assert_eq!(std::fs::read(&back).unwrap(), data);

    std::fs::write(&local, b"hello\n").unwrap();
    fs_ok(&dir, &["put", path(&local), "/a/hello"]);
    assert_eq!(fs_ok(&dir, &["cat", "/a/hello"]), "hello\n");
    assert_eq!(fs_ok(&dir, &["ls", "/a"]), "b\nhello\n");
    let long = fs_ok(&dir, &["ls", "-l", "/a/b"]);
    assert!(long.starts_with("-rw-r--r--"), "{long}");
    assert!(
        long.contains("300000") && long.trim_end().ends_with(" f"),
        "{long}"
    );
    let st: serde_json::Value =
        serde_json::from_str(&fs_ok(&dir, &["--json", "stat", "/a/b/f"])).unwrap();
    assert_eq!(
        (st["size"].as_u64(), st["kind"].as_str()),
        (Some(300_000), Some("file"))
    );

    // mv into a directory, then to a new name.
    fs_ok(&dir, &["mv", "/a/hello", "/a/b"]);
    fs_ok(&dir, &["mv", "/a/b/hello", "/a/b/hi"]);
    let du: serde_json::Value =
        serde_json::from_str(&fs_ok(&dir, &["--json", "du", "/a"])).unwrap();
    assert_eq!(
        du,
        serde_json::json!([
            {"path": "/a", "bytes": 300_006, "files": 2},
            {"path": "/a/b", "bytes": 300_006, "files": 2}
        ])
    );
    // Errors are POSIX errors with the path, and a failing exit code.
    let out = run(&fs_args(&dir, &["rm", "/a/b"]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/a/b: directory not empty"), "{err}");
    let out = run(&fs_args(&dir, &["cat", "/nope"]));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nope: no such file or directory"));
    fs_ok(&dir, &["rm", "/a/b/hi"]);
    fs_ok(&dir, &["rm", "-r", "/a"]);
    assert_eq!(fs_ok(&dir, &["ls", "/"]), "");
    assert_eq!(count(&dir, "SELECT count(*) AS n FROM fs.blocks"), 0);
    assert_consistent(&dir);
}

/// Backends of `dbos fs` clients in the middle of a write transaction.
fn writers_in_flight(dir: &Path) -> i64 {
    count(
        dir,
        "SELECT count(*) AS n FROM pg_stat_activity
         WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid() AND query LIKE '%fs.blocks%'",
    )
}

#[test]
fn sigkill_during_a_large_write_leaves_the_old_or_new_file_and_no_orphan_blocks() {
    let scratch = scratch_dir_for_cluster();
    let dir = scratch.path().join("data");
    let _node = Node::boot(&dir, &[]);
    let old = scratch.path().join("old");
    std::fs::write(&old, b"the old content").unwrap();
    fs_ok(&dir, &["put", path(&old), "/big"]);
    // Large enough that the put is still writing when we see its transaction.
    let big = scratch.path().join("big");
    let block: Vec<u8> = pattern(1 << 20, 1);
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&big).unwrap());
        for _ in 0..256 {
            f.write_all(&block).unwrap();
        }
    }
    let mut put = support::dbos()
        .args(fs_args(&dir, &["put", path(&big), "/big"]))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually("the put has written blocks in its open transaction", || {
        matches!(put.try_wait(), Ok(Some(_))) || writers_in_flight(&dir) > 0
    });
    put.kill().unwrap();
    let status = put.wait().unwrap();
    // Postgres rolls back the transaction of the dead client.
    eventually("the killed writer's transaction is gone", || {
        writers_in_flight(&dir) == 0
    });
    let got = scratch.path().join("got");
    fs_ok(&dir, &["get", "/big", path(&got)]);
    let got = std::fs::read(&got).unwrap();
    eprintln!(
        "the put {}",
        if status.success() {
            "finished before the kill"
        } else {
            "was killed"
        }
    );
    let replaced = got.len() == 256 << 20;
    if status.success() {
        assert!(replaced, "the put finished before the kill");
    } else {
        // A kill that lands after the client's commit reached the server leaves the new
        // content; any earlier one leaves the old. Nothing in between.
        assert!(
            replaced || got == b"the old content",
            "a killed put leaves the old content or the whole new one, not {} bytes",
            got.len()
        );
    }
    // Blocks are exactly those of the surviving file.
    let blocks = count(&dir, "SELECT count(*) AS n FROM fs.blocks");
    assert_eq!(blocks as usize, got.len().div_ceil(65_536));
    assert_consistent(&dir);
}

#[test]
fn sigkill_during_renames_leaves_exactly_one_name_and_a_consistent_tree() {
    let scratch = scratch_dir_for_cluster();
    let dir = scratch.path().join("data");
    let _node = Node::boot(&dir, &[]);
    let local = scratch.path().join("payload");
    let data = pattern(200_000, 3);
    std::fs::write(&local, &data).unwrap();
    fs_ok(&dir, &["mkdir", "-p", "/a/inner"]);
    fs_ok(&dir, &["put", path(&local), "/a/inner/payload"]);
    fs_ok(&dir, &["mkdir", "/b"]);
    let bin = env!("CARGO_BIN_EXE_dbos");
    for round in 0..4u64 {
        // Renames back and forth in a loop: /a <-> /b/a.
        let script = format!(
            "while :; do {bin} fs --data-dir {d} mv /a /b/a && {bin} fs --data-dir {d} mv /b/a /a; done",
            d = path(&dir)
        );
        let mut child = std::process::Command::new("sh")
            .args(["-c", &script])
            .env("RUST_LOG", "error")
            .env_remove("DATABASE_URL")
            .env_remove("DBOS_DATA_DIR")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        // Let some renames happen, then kill the whole loop wherever it is.
        std::thread::sleep(Duration::from_millis(300 + 170 * round));
        killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
        child.wait().unwrap();
        eventually("the killed client's backend is gone", || {
            count(
                &dir,
                "SELECT count(*) AS n FROM pg_stat_activity
                 WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'
                   AND state <> 'idle' AND query NOT LIKE '%pg_stat_activity%'",
            ) == 0
        });
        let names = count(
            &dir,
            "SELECT count(*) AS n FROM os.files WHERE path IN ('/a', '/b/a')",
        );
        assert_eq!(names, 1, "exactly one of /a and /b/a exists");
        let at = support::sql_json(
            &dir,
            "SELECT path FROM os.files WHERE path IN ('/a', '/b/a')",
        )[0]["path"]
            .as_str()
            .unwrap()
            .to_owned();
        let got = scratch.path().join("got");
        fs_ok(&dir, &["get", &format!("{at}/inner/payload"), path(&got)]);
        assert_eq!(std::fs::read(&got).unwrap(), data);
        assert_consistent(&dir);
    }
}
