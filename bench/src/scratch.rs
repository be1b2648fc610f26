//! The scratch directory of a run's embedded cluster, named after the run's process, so that a
//! later run removes what a killed one left behind.
//!
//! The cluster itself quits with the process however it ends (the node's
//! `pg_stop_with_node`); only a directory can outlive a run killed outright.

use std::path::Path;

use anyhow::Result;
use tempfile::TempDir;

/// Every scratch directory of an embedded cluster of `dbos bench` starts so, then the pid of
/// the process it belongs to and `-`.
const PREFIX: &str = "dbos-bench-pg-";

/// A new scratch directory `dbos-bench-pg-<pid>-XXXXXX` in `parent`, open to the unprivileged
/// user that runs the embedded Postgres (mode 0755).
pub(crate) fn cluster_dir(parent: &Path) -> Result<TempDir> {
    let d = tempfile::Builder::new()
        .prefix(&format!("{PREFIX}{}-", std::process::id()))
        .tempdir_in(parent)?;
    std::fs::set_permissions(
        d.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    Ok(d)
}

/// Removes from `parent` the scratch directories of runs whose process has ended and in which
/// no server runs; returns how many it removed. A directory it cannot read or remove is left.
pub(crate) fn sweep(parent: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<i32>().ok())
        else {
            continue;
        };
        if dbos_kernel::node::process_alive(pid) {
            continue;
        }
        if dbos_kernel::embedded::discover(&e.path().join("data")).is_ok() {
            continue;
        }
        if std::fs::remove_dir_all(e.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pid of a process that has ended.
    fn ended_pid() -> i32 {
        let mut c = std::process::Command::new("true")
            .spawn()
            .expect("`true` runs");
        let pid = c.id() as i32;
        c.wait().expect("`true` ends");
        pid
    }

    #[test]
    fn the_sweep_removes_the_directories_of_ended_runs_only() {
        let parent = tempfile::tempdir().expect("a scratch directory");
        let ended = parent
            .path()
            .join(format!("{PREFIX}{}-abc123", ended_pid()));
        std::fs::create_dir_all(ended.join("data/pgdata")).expect("created");
        let ours = cluster_dir(parent.path()).expect("created");
        let other = parent.path().join("dbos-bench-ext4-xyz");
        std::fs::create_dir(&other).expect("created");

        assert_eq!(sweep(parent.path()), 1);
        assert!(!ended.exists(), "the ended run's directory is removed");
        assert!(ours.path().exists(), "the live run's directory stays");
        assert!(other.exists(), "a directory of another kind stays");
    }
}
