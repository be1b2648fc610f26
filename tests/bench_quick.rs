//! The benchmark harness runs every suite in quick mode and writes well-formed results.

mod support;

#[test]
fn quick_bench_of_every_suite_writes_json_with_nonzero_figures() {
    let out_dir = tempfile::tempdir().expect("tempdir");
    let json = out_dir.path().join("all.json");
    let out = support::dbos()
        .args(["bench", "--quick", "--json"])
        .arg(&json)
        .arg("--results-dir")
        .arg(out_dir.path())
        .output()
        .expect("dbos bench runs");
    assert!(
        out.status.success(),
        "dbos bench failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("json written")).expect("valid JSON");
    let rows = rows.as_array().expect("an array of rows");
    let mut suites = vec!["ceiling", "workflow", "recovery", "fs"];
    // The peer suite needs python3; without it the harness says so and skips it.
    if std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_ok()
    {
        suites.push("peer");
    }
    for suite in suites {
        let of_suite: Vec<&serde_json::Value> =
            rows.iter().filter(|r| r["suite"] == suite).collect();
        assert!(!of_suite.is_empty(), "suite {suite} has rows");
        for r in of_suite {
            assert!(r["ours"].as_f64().expect("a figure") > 0.0, "{r}");
            assert_eq!(r["mode"], "D");
        }
        let per_suite: serde_json::Value = serde_json::from_slice(
            &std::fs::read(out_dir.path().join(format!("{suite}.json"))).expect("suite file"),
        )
        .expect("valid JSON");
        assert!(per_suite.as_array().is_some_and(|a| !a.is_empty()));
        assert!(out_dir.path().join(format!("{suite}.md")).exists());
    }
    let wf = rows
        .iter()
        .find(|r| r["suite"] == "workflow")
        .expect("a workflow row");
    assert!(
        wf["extra"]["commits_per_wf"]
            .as_f64()
            .expect("commits measured")
            > 0.0
    );
    assert!(wf["ratio"].as_f64().expect("ratio to the commit bound") > 0.0);
}
