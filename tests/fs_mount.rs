//! Ordinary Linux tools on a real FUSE mount served by `dbos fs mount`: mkdir -p, cp -r of this
//! repository's source and diff -r, df's figures, mv, rm -r, ln -s, ls -l, cat, and git
//! init/add/commit.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use dbos_kernel::testing::scratch_dir_for_cluster;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::{eventually, ok, path, Node};

fn mounted(mnt: &Path) -> bool {
    std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(path(mnt)))
}

/// Unmounts (lazily) whatever is still mounted at its paths when dropped, so a test that fails
/// midway ends its mount servers instead of hanging on their mounts.
struct Unmount(Vec<std::path::PathBuf>);

impl Drop for Unmount {
    fn drop(&mut self) {
        for mnt in &self.0 {
            if mounted(mnt) {
                let _ = Command::new("umount").args(["-l", path(mnt)]).status();
            }
        }
    }
}

/// `dbos fs mount` in the background, once it reports the mount.
fn mount(dir: &Path, mnt: &Path) -> Child {
    let mut child = support::dbos()
        .args(["fs", "--data-dir", path(dir), "mount", path(mnt)])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("dbos fs mount starts");
    let stdout = child.stdout.take().expect("piped");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("dbos fs mount prints a line");
    assert!(line.starts_with("mounted"), "dbos fs mount said {line:?}");
    assert!(mounted(mnt));
    child
}

/// What `stat -f` reports used on a mount.
#[derive(Debug)]
struct Space {
    used_blocks: u64,
    used_inodes: u64,
}

fn space(mnt: &Path) -> Space {
    let out = sh(mnt, "stat -f -c '%b %f %c %d' .");
    let n: Vec<u64> = out
        .split_whitespace()
        .map(|w| w.parse().expect("a number"))
        .collect();
    Space {
        used_blocks: n[0] - n[1],
        used_inodes: n[2] - n[3],
    }
}

/// Runs a shell command in `cwd`; it must succeed. Returns stdout.
fn sh(cwd: &Path, script: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", script])
        .current_dir(cwd)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", cwd)
        .output()
        .expect("sh runs");
    assert!(
        out.status.success(),
        "`{script}` failed with {}:\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn ordinary_tools_work_on_a_fuse_mount() {
    if !Path::new("/dev/fuse").exists() {
        support::prerequisite_missing("/dev/fuse is missing, so nothing can be mounted here");
        return;
    }
    let scratch = scratch_dir_for_cluster();
    let dir = scratch.path().join("data");
    let _node = Node::boot(&dir, &[]);
    // This repository's source tree, as committed.
    let src = scratch.path().join("src");
    std::fs::create_dir(&src).unwrap();
    sh(
        scratch.path(),
        &format!(
            "git -c safe.directory='*' -C {} archive HEAD | tar -x -C {}",
            env!("CARGO_MANIFEST_DIR"),
            path(&src)
        ),
    );
    let mnt = scratch.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mnt2 = scratch.path().join("mnt2");
    std::fs::create_dir(&mnt2).unwrap();
    let _unmount = Unmount(vec![mnt.clone(), mnt2.clone()]);
    let mut server = mount(&dir, &mnt);

    let before = space(&mnt);
    sh(&mnt, "mkdir -p deep/a/b/c && test -d deep/a/b/c");
    sh(&mnt, &format!("cp -r {} ./src", path(&src)));
    // df sees what the copy added: blocks at once, inodes once the server's statistics have
    // counted them.
    let after = space(&mnt);
    assert!(
        after.used_blocks > before.used_blocks,
        "{before:?} {after:?}"
    );
    let files = sh(&mnt, "find . | wc -l").trim().parse::<u64>().unwrap();
    eventually("df counts the copied inodes", || {
        space(&mnt).used_inodes >= files
    });
    sh(&mnt, &format!("diff -r {} ./src", path(&src)));
    sh(
        &mnt,
        "mv src/README.md src/README.moved && test -f src/README.moved && test ! -e src/README.md",
    );
    sh(&mnt, "mv src/README.moved src/README.md");
    sh(&mnt, "ln -s src/Cargo.toml link && cmp link src/Cargo.toml");
    let ls = sh(&mnt, "ls -l");
    assert!(ls.contains("link -> src/Cargo.toml"), "{ls}");
    assert!(
        ls.lines()
            .any(|l| l.starts_with('d') && l.ends_with(" deep")),
        "{ls}"
    );
    assert_eq!(
        sh(&mnt, "echo 'some text' > note && cat note"),
        "some text\n"
    );
    sh(&mnt, "rm -r deep && test ! -e deep");
    sh(
        &mnt.join("src"),
        "git init -q && git add -A \
         && git -c user.name=dbos -c user.email=dbos@localhost commit -q -m 'in the mount' \
         && test -z \"$(git status --porcelain)\" && git log --oneline | grep -q 'in the mount' \
         && git fsck --no-progress",
    );
    // Appends through two mounts of the same tables (as from two hosts) each land at the end
    // the file has, not at the size the other mount's kernel cached.
    let mut second = mount(&dir, &mnt2);
    sh(&mnt, "touch seq.log && cat seq.log");
    sh(&mnt2, "cat seq.log");
    for (m, line) in [
        (&mnt, "one"),
        (&mnt2, "two"),
        (&mnt, "three"),
        (&mnt2, "four"),
    ] {
        sh(m, &format!("echo {line} >> seq.log"));
    }
    assert_eq!(
        ok(&["fs", "--data-dir", path(&dir), "cat", "/seq.log"]),
        "one\ntwo\nthree\nfour\n"
    );
    kill(Pid::from_raw(second.id() as i32), Signal::SIGINT).unwrap();
    assert!(second.wait().unwrap().success());

    // What the tools wrote is in the tables, consistent.
    assert_eq!(
        ok(&["fs", "--data-dir", path(&dir), "cat", "/note"]),
        "some text\n"
    );
    let problems = support::sql_json(&dir, "SELECT problem FROM fs.fsck");
    assert_eq!(problems, serde_json::json!([]));

    // Every write that returned is durable: kill the server without unmounting.
    sh(&mnt, "printf durable > durable");
    server.kill().unwrap();
    server.wait().unwrap();
    let _ = Command::new("umount").args(["-l", path(&mnt)]).status();
    eventually("the dead mount is gone", || !mounted(&mnt));
    assert_eq!(
        ok(&["fs", "--data-dir", path(&dir), "cat", "/durable"]),
        "durable"
    );

    // Ctrl-C unmounts cleanly.
    let server = mount(&dir, &mnt);
    assert_eq!(std::fs::read(mnt.join("durable")).unwrap(), b"durable");
    kill(Pid::from_raw(server.id() as i32), Signal::SIGINT).unwrap();
    let out = server.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "dbos fs mount exits cleanly on SIGINT"
    );
    assert!(!mounted(&mnt));
}
