//! The official Python DBOS package (dbos==3.4.0) in a virtualenv, for interop tests.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The DBOS version the interop tests hold us to.
pub const DBOS_VERSION: &str = "3.4.0";

/// The virtualenv's `bin` directory, creating the virtualenv on first use; `None` (with a
/// notice, or a failure under CI) when this machine has no python3.
pub fn dbos_venv() -> Option<PathBuf> {
    static VENV: OnceLock<Option<PathBuf>> = OnceLock::new();
    VENV.get_or_init(|| {
        if Command::new("python3").arg("--version").output().is_err() {
            super::prerequisite_missing(
                "python3 is not installed, so DBOS for Python cannot be (scripts/setup installs it)",
            );
            return None;
        }
        let venv =
            PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("dbos-py-{DBOS_VERSION}"));
        let bin = venv.join("bin");
        let ready = venv.join(".installed");
        if !ready.exists() {
            let st = Command::new("python3")
                .arg("-m")
                .arg("venv")
                .arg(&venv)
                .status()
                .expect("python3 runs");
            assert!(
                st.success(),
                "python3 -m venv failed; install python3-venv (scripts/setup does)"
            );
            let st = Command::new(bin.join("pip"))
                .args(["install", "--quiet", "--disable-pip-version-check"])
                .arg(format!("dbos=={DBOS_VERSION}"))
                .status()
                .expect("pip runs");
            assert!(st.success(), "pip install dbos=={DBOS_VERSION} failed");
            std::fs::write(&ready, b"").expect("mark the virtualenv ready");
        }
        Some(bin)
    })
    .clone()
}

/// Runs a Python script in the virtualenv; returns its stdout, panicking with its stderr on
/// failure.
pub fn python(bin: &std::path::Path, script: &str, args: &[&str]) -> String {
    let out = Command::new(bin.join("python"))
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "python failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Runs the Python `dbos` CLI; returns its stdout.
pub fn dbos_cli(bin: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(bin.join("dbos"))
        .args(args)
        .output()
        .expect("dbos CLI runs");
    assert!(
        out.status.success(),
        "dbos {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}
