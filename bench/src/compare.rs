//! `dbos bench --compare`: rows of several runs side by side, to read a change or a setting
//! against what it replaces.
//!
//! Each variant is one `--json` file of a run, or several joined by commas: the rounds of that
//! variant when runs alternate (A, B, A, B, ...), as this host's noise asks. A row is matched
//! by suite, workload and mode. For each variant it shows the median of every round, and for
//! each variant after the first the ratio of its median of medians to the first's, and whether
//! the two sets of runs overlap: a difference inside the spread of the runs is not a finding.
//! Where the rows carry a time budget, each variant's CPU (ours and Postgres's) and commits
//! per operation follow its figures.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::Result;

use crate::{fmt_num, summarize, Mode, Row};

/// One variant: its label and the rows of each of its rounds.
struct Variant {
    label: String,
    rounds: Vec<Vec<Row>>,
}

/// Reads each variant (`a.json` or `a1.json,a2.json`) and returns the comparison as a
/// Markdown table.
///
/// # Errors
/// Fewer than two variants, a file that cannot be read or is not a `--json` file of
/// `dbos bench`, or no row that every variant measured.
pub fn compare(variants: &[String]) -> Result<String> {
    anyhow::ensure!(
        variants.len() >= 2,
        "--compare needs at least two variants (each a --json file, or files joined by commas)"
    );
    let mut read = variants
        .iter()
        .map(|v| read_variant(v))
        .collect::<Result<Vec<_>>>()?;
    // Files of one name in different directories: the header names each as it was given.
    let labels: BTreeSet<&str> = read.iter().map(|v| v.label.as_str()).collect();
    if labels.len() < read.len() {
        for (v, spec) in read.iter_mut().zip(variants) {
            v.label = spec.clone();
        }
    }
    let variants = read;
    let table = table(&variants);
    anyhow::ensure!(
        !table.is_empty(),
        "no workload was measured in every variant: nothing to compare"
    );
    Ok(table)
}

fn read_variant(spec: &str) -> Result<Variant> {
    let files: Vec<PathBuf> = spec
        .split(',')
        .filter(|f| !f.is_empty())
        .map(PathBuf::from)
        .collect();
    anyhow::ensure!(!files.is_empty(), "{spec:?} names no file");
    let rounds = files
        .iter()
        .map(|f| crate::report::read_rows(f))
        .collect::<Result<Vec<_>>>()?;
    Ok(Variant {
        label: label(&files),
        rounds,
    })
}

/// A variant's name in the table: its file's stem, or the stems of its rounds' files when they
/// differ only by a round number (`wf-old-1`, `wf-old-2` → `wf-old-*`).
fn label(files: &[PathBuf]) -> String {
    let stems: Vec<String> = files
        .iter()
        .map(|f| {
            f.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| f.display().to_string())
        })
        .collect();
    if stems.len() == 1 {
        return stems[0].clone();
    }
    let trim = |s: &str| s.trim_end_matches(|c: char| c.is_ascii_digit()).to_owned();
    let first = trim(&stems[0]);
    if !first.is_empty() && stems.iter().all(|s| trim(s) == first) {
        format!("{first}*")
    } else {
        stems.join(",")
    }
}

/// The key a row is matched by.
type Key = (String, String, Mode);

fn key(r: &Row) -> Key {
    (r.suite.clone(), r.workload.clone(), r.mode)
}

/// What the variant's rounds measured for one row: each round's median (rounds that lack the
/// row are left out), and the lowest and highest run of all of them.
struct Cell {
    medians: Vec<f64>,
    low: f64,
    high: f64,
    /// The time budget's CPU (ours and Postgres's) and commits per operation, median of the
    /// rounds that recorded them.
    cpu_ms: Option<f64>,
    commits: Option<f64>,
}

fn cell(v: &Variant, k: &Key) -> Option<Cell> {
    let rows: Vec<&Row> = v
        .rounds
        .iter()
        .filter_map(|round| round.iter().find(|r| key(r) == *k))
        .collect();
    if rows.is_empty() {
        return None;
    }
    let budget = |read: fn(&Row) -> Option<f64>| {
        let v: Vec<f64> = rows.iter().filter_map(|r| read(r)).collect();
        (!v.is_empty()).then(|| summarize(&v).0)
    };
    Some(Cell {
        medians: rows.iter().map(|r| r.ours).collect(),
        low: rows.iter().map(|r| r.min).fold(f64::INFINITY, f64::min),
        high: rows.iter().map(|r| r.max).fold(f64::NEG_INFINITY, f64::max),
        cpu_ms: budget(|r| {
            let ours = extra(r, "cpu_ours_ms_per_")?;
            Some(ours + extra(r, "cpu_pg_ms_per_")?)
        }),
        commits: budget(|r| extra(r, "commits_per_")),
    })
}

/// The figure of the time budget whose name starts with `prefix` (the rest names the
/// operation: `commits_per_wf`, `cpu_pg_ms_per_task`).
fn extra(r: &Row, prefix: &str) -> Option<f64> {
    r.extra
        .iter()
        .find(|(k, _)| k.starts_with(prefix))
        .and_then(|(_, v)| v.as_f64())
}

fn table(variants: &[Variant]) -> String {
    // Rows in the order the first variant's first round has them, then any others it lacks.
    let mut order: Vec<(Key, &Row)> = Vec::new();
    let mut seen = BTreeSet::new();
    for v in variants {
        for round in &v.rounds {
            for r in round {
                if seen.insert(key(r)) {
                    order.push((key(r), r));
                }
            }
        }
    }
    let mut out = String::new();
    let mut head = String::from("| suite | workload | unit |");
    let mut rule = String::from("|---|---|---|");
    for (i, v) in variants.iter().enumerate() {
        head.push_str(&format!(" {} |", v.label));
        rule.push_str("---|");
        if i > 0 {
            head.push_str(&format!(" {} ÷ {} |", v.label, variants[0].label));
            rule.push_str("---|");
        }
    }
    let mut lines = 0;
    for (k, first) in &order {
        let cells: Vec<Option<Cell>> = variants.iter().map(|v| cell(v, k)).collect();
        if cells.iter().any(Option::is_none) {
            continue;
        }
        let cells: Vec<Cell> = cells.into_iter().flatten().collect();
        let (suite, workload, mode) = k;
        let workload = match mode {
            Mode::D => workload.clone(),
            m => format!("{workload} ({m:?})"),
        };
        let mut line = format!("| {suite} | {workload} | {} |", first.unit);
        let base = summarize(&cells[0].medians).0;
        for (i, c) in cells.iter().enumerate() {
            let values: Vec<String> = c.medians.iter().map(|m| fmt_num(*m)).collect();
            let mut text = values.join(", ");
            if let Some(cpu) = c.cpu_ms {
                text.push_str(&format!("; CPU {cpu:.3} ms"));
            }
            if let Some(commits) = c.commits {
                text.push_str(&format!("; {commits:.2} commits"));
            }
            line.push_str(&format!(" {text} |"));
            if i > 0 {
                let ratio = summarize(&c.medians).0 / base;
                let higher_is_better = first.is_rate();
                line.push_str(&format!(
                    " {} |",
                    verdict(ratio, &cells[0], c, higher_is_better)
                ));
            }
        }
        out.push_str(&line);
        out.push('\n');
        lines += 1;
    }
    if lines == 0 {
        return String::new();
    }
    format!("{head}\n{rule}\n{out}")
}

/// The ratio, and what it says: better or worse when the runs do not overlap, else within
/// the spread. Rates ([`Row::is_rate`]) are better higher, everything else lower.
fn verdict(ratio: f64, base: &Cell, other: &Cell, higher_is_better: bool) -> String {
    if !ratio.is_finite() {
        return "—".to_owned();
    }
    let apart_higher = other.low > base.high;
    let apart_lower = other.high < base.low;
    let word = match (apart_higher, apart_lower) {
        (true, _) if higher_is_better => "better",
        (true, _) => "worse",
        (_, true) if higher_is_better => "worse",
        (_, true) => "better",
        _ => "within the spread",
    };
    format!("{ratio:.2} ({word})")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(workload: &str, unit: &str, runs: &[f64]) -> Row {
        Row::new("workflow", workload.to_owned(), runs, unit, runs.len())
    }

    fn write(dir: &std::path::Path, name: &str, rows: &[Row]) -> String {
        let path = dir.join(name);
        std::fs::write(&path, serde_json::to_vec(rows).unwrap()).unwrap();
        path.display().to_string()
    }

    #[test]
    fn rounds_of_two_variants_are_set_side_by_side_with_their_ratio() {
        let dir = tempfile::tempdir().unwrap();
        let a1 = write(
            dir.path(),
            "wf-old-1.json",
            &[
                row("3-step, 32 callers", "workflows/s", &[100.0, 110.0, 120.0]),
                row("send to a waiting recv", "ms p50", &[1.0]),
                row("only in old", "workflows/s", &[5.0]),
            ],
        );
        let a2 = write(
            dir.path(),
            "wf-old-2.json",
            &[row(
                "3-step, 32 callers",
                "workflows/s",
                &[90.0, 100.0, 105.0],
            )],
        );
        let b1 = write(
            dir.path(),
            "wf-new-1.json",
            &[
                row("3-step, 32 callers", "workflows/s", &[200.0, 210.0, 220.0]),
                row("send to a waiting recv", "ms p50", &[0.9]),
            ],
        );
        let mut budget = row("3-step, 32 callers", "workflows/s", &[190.0, 200.0, 230.0]);
        for (k, v) in [
            ("cpu_ours_ms_per_wf", 0.04),
            ("cpu_pg_ms_per_wf", 0.14),
            ("commits_per_wf", 0.29),
        ] {
            budget.extra.insert(k.into(), v.into());
        }
        let b2 = write(dir.path(), "wf-new-2.json", &[budget]);
        let t = compare(&[format!("{a1},{a2}"), format!("{b1},{b2}")]).unwrap();
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "| suite | workload | unit | wf-old-* | wf-new-* | wf-new-* ÷ wf-old-* |"
        );
        // Medians of the rounds 110, 100 | 210, 200: 205 ÷ 105, and no run of one reaches the other.
        assert_eq!(
            lines[2],
            "| workflow | 3-step, 32 callers | workflows/s | 110, 100 | 210, 200; CPU 0.180 ms; \
             0.29 commits | 1.95 (better) |"
        );
        // One round each, a single run: 1.0 against 0.9 ms, lower is better.
        assert_eq!(
            lines[3],
            "| workflow | send to a waiting recv | ms p50 | 1.00 | 0.90 | 0.90 (better) |"
        );
        // A row only one variant measured is left out.
        assert_eq!(lines.len(), 4, "{t}");
    }

    #[test]
    fn overlapping_runs_are_within_the_spread() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(
            dir.path(),
            "a.json",
            &[row("w", "tasks/s", &[90.0, 100.0, 130.0])],
        );
        let b = write(
            dir.path(),
            "b.json",
            &[row("w", "tasks/s", &[80.0, 120.0, 125.0])],
        );
        let t = compare(&[a, b]).unwrap();
        assert!(
            t.contains("| 100 | 120 | 1.20 (within the spread) |"),
            "{t}"
        );
    }

    #[test]
    fn files_of_one_name_are_told_apart_by_their_paths() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("old")).unwrap();
        std::fs::create_dir(dir.path().join("new")).unwrap();
        let a = write(
            &dir.path().join("old"),
            "full.json",
            &[row("w", "ms p50", &[2.0])],
        );
        let b = write(
            &dir.path().join("new"),
            "full.json",
            &[row("w", "ms p50", &[3.0])],
        );
        let t = compare(&[a.clone(), b.clone()]).unwrap();
        let head = t.lines().next().unwrap();
        assert_eq!(
            head,
            format!("| suite | workload | unit | {a} | {b} | {b} ÷ {a} |")
        );
        // A single run each, apart: 3 ms against 2 is worse.
        assert!(t.contains("| 2.00 | 3.00 | 1.50 (worse) |"), "{t}");
    }

    #[test]
    fn bad_input_is_refused_with_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(dir.path(), "a.json", &[row("w", "tasks/s", &[1.0])]);
        let b = write(dir.path(), "b.json", &[row("v", "tasks/s", &[1.0])]);
        let not_json = dir.path().join("n.json");
        std::fs::write(&not_json, "{}").unwrap();
        let err = |v: &[String]| compare(v).unwrap_err().to_string();
        assert!(err(std::slice::from_ref(&a)).contains("at least two variants"));
        assert!(err(&[a.clone(), b.clone()]).contains("no workload was measured in every"));
        let e = format!(
            "{:#}",
            compare(&[a.clone(), not_json.display().to_string()]).unwrap_err()
        );
        assert!(e.contains("is not a list of rows"), "{e}");
        let e = format!(
            "{:#}",
            compare(&[a, dir.path().join("none.json").display().to_string()]).unwrap_err()
        );
        assert!(e.contains("reading"), "{e}");
    }
}
