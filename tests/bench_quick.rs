//! The benchmark harness runs every suite in quick mode and writes well-formed results, plots
//! and the evaluation report.

mod support;

use std::path::Path;

/// Runs `dbos bench ARGS`, its result files in `dir/results`; every row it wrote to its JSON.
fn bench_rows(args: &[&str], dir: &Path) -> Vec<serde_json::Value> {
    let json = dir.join("rows.json");
    let out = support::dbos()
        .arg("bench")
        .args(args)
        .arg("--json")
        .arg(&json)
        .arg("--results-dir")
        .arg(dir.join("results"))
        .output()
        .expect("dbos bench runs");
    assert!(
        out.status.success(),
        "dbos bench {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("json written")).expect("valid JSON");
    rows.as_array().expect("an array of rows").clone()
}

#[test]
fn quick_bench_of_every_suite_writes_json_plots_and_report_with_nonzero_figures() {
    let out_dir = tempfile::tempdir().expect("tempdir");
    let results = out_dir.path().join("results");
    let rows = &bench_rows(&["--quick"], out_dir.path());
    let mut suites = vec![
        "ceiling", "workflow", "queue", "recovery", "msg", "fs", "prov",
    ];
    // The peer suite needs python3; without it the harness says so and skips it.
    if std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_ok()
    {
        suites.push("peer");
    }
    for suite in &suites {
        let of_suite: Vec<&serde_json::Value> =
            rows.iter().filter(|r| r["suite"] == *suite).collect();
        assert!(!of_suite.is_empty(), "suite {suite} has rows");
        for r in of_suite {
            assert!(r["ours"].as_f64().expect("a figure") > 0.0, "{r}");
            assert!(r["min"].as_f64().expect("a min") > 0.0, "{r}");
            assert!(r["max"].as_f64() >= r["ours"].as_f64(), "{r}");
            assert!(!r["workload"].as_str().expect("a workload").is_empty());
            assert!(["D", "R", "M"].contains(&r["mode"].as_str().expect("a mode")));
        }
        let per_suite: serde_json::Value = serde_json::from_slice(
            &std::fs::read(results.join(format!("{suite}.json"))).expect("suite file"),
        )
        .expect("valid JSON");
        assert!(per_suite.as_array().is_some_and(|a| !a.is_empty()));
        assert!(results.join(format!("{suite}.md")).exists());
        let svg = std::fs::read_to_string(results.join(format!("{suite}.svg"))).expect("svg plot");
        assert!(
            svg.starts_with("<svg") && svg.contains(suite),
            "{suite}.svg"
        );
        let png = std::fs::read(results.join(format!("{suite}.png"))).expect("png plot");
        assert!(png.starts_with(b"\x89PNG"), "{suite}.png is a PNG");
    }
    // The ceiling is measured in all three durability modes, the relaxed ones against D.
    for mode in ["D", "R", "M"] {
        let n = rows
            .iter()
            .filter(|r| r["suite"] == "ceiling" && r["mode"] == mode)
            .count();
        assert_eq!(n, 3, "ceiling rows in mode {mode}");
    }
    assert!(rows
        .iter()
        .filter(|r| r["suite"] == "ceiling" && r["mode"] != "D")
        .all(|r| r["ratio"].as_f64().is_some_and(|x| x > 0.0)));
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
    // The 3-step rows read against the same workflow's rows written bare.
    for clients in [1, 32] {
        let bare = rows
            .iter()
            .find(|r| {
                r["suite"] == "workflow"
                    && r["workload"]
                        .as_str()
                        .is_some_and(|w| w.contains("rows alone, bare SQL"))
                    && r["concurrency"] == clients
            })
            .unwrap_or_else(|| panic!("a bare-rows row at {clients} clients"));
        assert!(bare["ours"].as_f64().expect("a figure") > 0.0, "{bare}");
    }
    let one = rows
        .iter()
        .find(|r| r["workload"] == "3-step workflow, 1 caller, direct")
        .expect("the 1-caller 3-step row");
    assert!(
        one["extra"]["ratio_to_bare_rows"]
            .as_f64()
            .expect("read against the bare rows")
            > 0.0,
        "{one}"
    );
    // The fs rows that commit read with their budget: each file's create and delete commit.
    let files = rows
        .iter()
        .find(|r| r["suite"] == "fs" && r["workload"] == "create (1 KiB) + delete of a small file")
        .expect("the fs create + delete row");
    assert!(
        files["extra"]["commits_per_file"]
            .as_f64()
            .expect("commits measured")
            > 1.5,
        "{files}"
    );
    assert!(
        files["extra"]["cpu_pg_ms_per_file"].as_f64().is_some(),
        "{files}"
    );

    // The report regenerates from the result files alone.
    let papers = out_dir.path().join("papers");
    std::fs::create_dir_all(papers.join("notes")).expect("papers dir");
    // A hand-written section is kept beside the papers, not with the results.
    std::fs::write(papers.join("notes/time.md"), "Budget of the hot paths.\n").expect("a note");
    let report = support::dbos()
        .args(["bench", "--report", "--results-dir"])
        .arg(&results)
        .arg("--papers-dir")
        .arg(&papers)
        .output()
        .expect("dbos bench --report runs");
    assert!(
        report.status.success(),
        "dbos bench --report failed:\n{}",
        String::from_utf8_lossy(&report.stderr)
    );
    let text = std::fs::read_to_string(papers.join("EVALUATION.md")).expect("EVALUATION.md");
    assert!(text.contains("## Beside the published figures"));
    assert!(text.contains("## Where the time goes\n\nBudget of the hot paths.\n"));
    assert!(
        text.contains("7,794 tps"),
        "the pgbench figure is set beside ours"
    );
    for suite in &suites {
        assert!(
            text.contains(&format!("### {suite}\n")),
            "section of {suite}"
        );
        assert!(papers.join(format!("figures/{suite}.svg")).exists());
    }
}

#[test]
fn bench_waits_adds_the_backends_wait_events_to_rows_with_a_time_budget() {
    let out_dir = tempfile::tempdir().expect("tempdir");
    let rows = bench_rows(&["workflow", "--quick", "--waits"], out_dir.path());
    let row = rows
        .iter()
        .find(|r| r["workload"] == "3-step workflow, 32 callers, direct")
        .expect("the 32-caller 3-step row");
    // Each event with its share, largest first: "CPU 53%, IO:WALSync 32%, ...".
    let waits = row["extra"]["waits"].as_str().expect("wait events sampled");
    let shares: Vec<u32> = waits
        .split(", ")
        .map(|w| {
            let (event, share) = w.rsplit_once(' ').expect("an event and its share");
            assert!(!event.is_empty(), "{waits}");
            share
                .strip_suffix('%')
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("a share in {waits}"))
        })
        .collect();
    assert!(shares.windows(2).all(|w| w[0] >= w[1]), "{waits}");
    // Shares of at least 1 %, each rounded: together at most all of them, give or take.
    assert!(
        shares.iter().sum::<u32>() <= 100 + shares.len() as u32,
        "{waits}"
    );
    assert!(
        row["extra"]["active_backends"]
            .as_f64()
            .expect("backends counted")
            > 0.0,
        "{row}"
    );
}
