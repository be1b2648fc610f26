//! `dbos bench --report`: `papers/EVALUATION.md` from the result files, without running anything.
//!
//! The report has three parts: our figures beside the papers' and DBOS's published ones (a fixed
//! list of comparisons, [`PUBLISHED`], each matched to one measured cell), every measured row
//! of every suite found in the results directory (so a new suite appears without changes here),
//! and the caveats that make the comparison fair. The plots are redrawn from the result files,
//! copied to `papers/figures/` and linked.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::{fmt_num, markdown, Mode, Row, SUITES};

/// The file, beside the suites' results, that describes the machine and the run.
pub const ENVIRONMENT_FILE: &str = "_environment.json";
/// Key of the environment file: when each suite's results were measured, by suite.
pub const SUITES_MEASURED: &str = "suites_measured_at";

/// A published figure and the cell of ours it is set beside.
#[derive(Debug)]
pub struct Published {
    /// Benchmark ID of the plan (B1–B12).
    pub bench: &'static str,
    /// Who measured what, and the figure as published.
    pub claim: &'static str,
    /// The figure as a range in `unit` (low = high for a single figure), when it is a number
    /// comparable with ours.
    pub value: Option<(f64, f64)>,
    /// Unit of `value`; the ratio is only given when our row has the same unit.
    pub unit: &'static str,
    /// Cores behind the published figure, for per-core figures.
    pub cores: Option<f64>,
    /// Where the figure comes from.
    pub source: &'static str,
    /// Our cell: suite, mode, concurrency and words the workload contains.
    pub suite: &'static str,
    /// Durability mode of our cell.
    pub mode: Mode,
    /// Concurrency of our cell, if it has one.
    pub concurrency: Option<u32>,
    /// Words our cell's workload contains.
    pub words: &'static [&'static str],
    /// What differs between their measurement and ours.
    pub caveat: &'static str,
}

/// The comparisons of the report. Figures marked "via [X1]" are third-party extractions from
/// the papers (see papers/README.md).
pub const PUBLISHED: &[Published] = &[
    Published {
        bench: "B1",
        claim: "pgbench, one-INSERT transaction, 1 client: 2,997 tps (0.334 ms)",
        value: Some((2997.0, 2997.0)),
        unit: "commits/s",
        cores: Some(2.0),
        source: "pgbench on a 2-core machine of this class, PG 15.18, fsync on",
        suite: "ceiling",
        mode: Mode::D,
        concurrency: Some(1),
        words: &["INSERT"],
        caveat: "Postgres alone through libpq, shared_buffers 256 MB; ours goes through sqlx \
                 and a pool, with this server's settings (above)",
    },
    Published {
        bench: "B1",
        claim: "pgbench, one-INSERT transaction, 8 clients: 7,794 tps",
        value: Some((7794.0, 7794.0)),
        unit: "commits/s",
        cores: Some(2.0),
        source: "pgbench on a 2-core machine of this class, PG 15.18, fsync on",
        suite: "ceiling",
        mode: Mode::D,
        concurrency: Some(8),
        words: &["INSERT"],
        caveat: "as above",
    },
    Published {
        bench: "B1",
        claim: "pgbench, one-INSERT transaction, 32 clients: 8,486 tps",
        value: Some((8486.0, 8486.0)),
        unit: "commits/s",
        cores: Some(2.0),
        source: "pgbench on a 2-core machine of this class, PG 15.18, fsync on",
        suite: "ceiling",
        mode: Mode::D,
        concurrency: Some(32),
        words: &["INSERT"],
        caveat: "as above",
    },
    Published {
        bench: "B1",
        claim: "DBOS scheduler (VoltDB): 750K tasks/s at sub-ms p99, 80 cores (≈9.4K/core)",
        value: Some((750_000.0, 750_000.0)),
        unit: "/s",
        cores: Some(80.0),
        source: "PVLDB 15(1) §4.2 via [X1]",
        suite: "ceiling",
        mode: Mode::M,
        concurrency: Some(32),
        words: &["INSERT"],
        caveat: "in-memory VoltDB, command log and snapshots off, tasks assigned but never run; \
                 our cell is one unlogged-table commit per operation, the closest analogue",
    },
    Published {
        bench: "B1",
        claim: "DBOS scheduler (VoltDB): 2M tasks/s at sub-ms median, 80 cores (≈25K/core)",
        value: Some((2_000_000.0, 2_000_000.0)),
        unit: "/s",
        cores: Some(80.0),
        source: "CIDR'22 §4.1 via [X1]",
        suite: "ceiling",
        mode: Mode::M,
        concurrency: Some(32),
        words: &["INSERT"],
        caveat: "as above",
    },
    Published {
        bench: "B3",
        claim: "DBOS scheduler (VoltDB): 750K tasks/s, 80 cores (≈9.4K/core)",
        value: Some((750_000.0, 750_000.0)),
        unit: "/s",
        cores: Some(80.0),
        source: "PVLDB 15(1) §4.2 via [X1]",
        suite: "workflow",
        mode: Mode::D,
        concurrency: Some(32),
        words: &["3-step", "queued"],
        caveat: "their tasks were scheduled, never executed, and nothing was durable; ours are \
                 enqueued, claimed, run with 3 checkpointed steps and finished, every commit \
                 flushed",
    },
    Published {
        bench: "B6",
        claim: "DBOS Transact on Postgres: 144K writes/s on 96 vCPU (≈1.5K/vCPU)",
        value: Some((144_000.0, 144_000.0)),
        unit: "/s",
        cores: Some(96.0),
        source: "DBOS blog (AWS RDS db.m7i.24xlarge, io2)",
        suite: "ceiling",
        mode: Mode::D,
        concurrency: Some(32),
        words: &["INSERT"],
        caveat: "a 96-vCPU server with 120K provisioned IOPS across a network; ours is 2 cores \
                 shared with the load generator",
    },
    Published {
        bench: "B6",
        claim: "DBOS Transact on Postgres: 43K workflows/s on 96 vCPU (≈450/vCPU)",
        value: Some((43_000.0, 43_000.0)),
        unit: "workflows/s",
        cores: Some(96.0),
        source: "DBOS blog (AWS RDS db.m7i.24xlarge, io2)",
        suite: "workflow",
        mode: Mode::D,
        concurrency: Some(32),
        words: &["1-step", "direct"],
        caveat: "as above; their workflow shape is not stated precisely",
    },
    Published {
        bench: "B6",
        claim: "DBOS Rust SDK: ≈165 three-step workflows/s from one caller",
        value: Some((165.0, 165.0)),
        unit: "workflows/s",
        cores: Some(2.0),
        source: "earlier measurement on a 2-core machine of this class (not this run)",
        suite: "workflow",
        mode: Mode::D,
        concurrency: Some(1),
        words: &["3-step", "direct"],
        caveat: "same machine class and Postgres, different run",
    },
    Published {
        bench: "B6",
        claim: "DBOS Rust SDK: 330–400 three-step workflows/s with concurrent callers",
        value: Some((330.0, 400.0)),
        unit: "workflows/s",
        cores: Some(2.0),
        source: "earlier measurement on a 2-core machine of this class (not this run)",
        suite: "workflow",
        mode: Mode::D,
        concurrency: Some(32),
        words: &["3-step", "direct"],
        caveat: "same machine class, different run; its concurrency is not recorded",
    },
    Published {
        bench: "B6",
        claim: "DBOS for Python: ≈33 three-step workflows/s from one caller",
        value: Some((33.0, 33.0)),
        unit: "workflows/s",
        cores: Some(2.0),
        source: "earlier measurement on a 2-core machine of this class; the peer suite \
                 measures it again in the same run",
        suite: "workflow",
        mode: Mode::D,
        concurrency: Some(1),
        words: &["3-step", "direct"],
        caveat: "see the peer suite for the same-run figure",
    },
    Published {
        bench: "B7",
        claim: "graphile-worker (Node.js, Postgres): 16K jobs/s with batched job completion",
        value: Some((16_000.0, 16_000.0)),
        unit: "/s",
        cores: None,
        source: "graphile-worker's published benchmark",
        suite: "workflow",
        mode: Mode::D,
        concurrency: Some(32),
        words: &["3-step", "queued"],
        caveat: "a job is one row claimed and completed; our cell is a 3-step workflow \
                 (enqueue, claimed by the enqueue itself on a node with a free slot, 3 \
                 checkpoints, outcome; commits shared under load) on 2 cores; their hardware \
                 differs",
    },
    Published {
        bench: "B7",
        claim: "awa (Rust, Postgres): 5.8K jobs/s",
        value: Some((5_800.0, 5_800.0)),
        unit: "/s",
        cores: None,
        source: "awa's published benchmark",
        suite: "workflow",
        mode: Mode::D,
        concurrency: Some(32),
        words: &["3-step", "queued"],
        caveat: "as above",
    },
    Published {
        bench: "B5",
        claim: "DBOS file system (VoltDB): create 67.48 µs vs ext4 656.78 µs",
        value: Some((67.48, 67.48)),
        unit: "µs",
        cores: None,
        source: "PVLDB 15(1) Table 1 via [X1]",
        suite: "fs",
        mode: Mode::D,
        concurrency: None,
        words: &["create"],
        caveat: "in memory, not durable; 40 client processes",
    },
    Published {
        bench: "B4",
        claim: "DBOS IPC (VoltDB): ping-pong 24–49% below gRPC throughput, 1.3–2.5× its latency",
        value: None,
        unit: "",
        cores: None,
        source: "PVLDB 15(1) §4.3 via [X1]",
        suite: "msg",
        mode: Mode::D,
        concurrency: Some(1),
        words: &["ping-pong 64 B"],
        caveat:
            "a ratio to gRPC on their cluster; set it beside our ratio to our same-run baseline",
    },
    Published {
        bench: "B4",
        claim: "DBOS IPC (VoltDB): fan-out to 40 receivers at 2.3× gRPC's throughput",
        value: None,
        unit: "",
        cores: None,
        source: "PVLDB 15(1) §4.3 via [X1]",
        suite: "msg",
        mode: Mode::D,
        concurrency: Some(40),
        words: &["broadcast 64 B to 40"],
        caveat: "their baseline is gRPC; ours is a tokio TCP loop writing each message to each \
                 receiver, measured in the same run",
    },
    Published {
        bench: "B10",
        claim: "our own bar (the papers publish no recovery time): 10,000 pending workflows \
                resumed in ≤5 s",
        value: Some((5.0, 5.0)),
        unit: "s",
        cores: None,
        source: "benchmark plan B10",
        suite: "recovery",
        mode: Mode::D,
        concurrency: None,
        words: &["10000 pending"],
        caveat: "lower is better",
    },
];

impl Published {
    /// Our row for this comparison, if the results have one.
    pub fn find<'a>(&self, rows: &'a [Row]) -> Option<&'a Row> {
        rows.iter().find(|r| {
            r.suite == self.suite
                && r.mode == self.mode
                && r.point().map(|(_, x)| x) == self.concurrency
                && self.words.iter().all(|w| r.workload.contains(w))
        })
    }
}

/// The rows of `<dir>/<suite>.json`.
///
/// # Errors
/// The file is missing or is not a list of rows.
pub fn read_suite(dir: &Path, suite: &str) -> Result<Vec<Row>> {
    read_rows(&dir.join(format!("{suite}.json")))
}

/// The rows of a result file: a suite's, or a run's `--json` file.
///
/// # Errors
/// The file is missing or is not a list of rows.
pub fn read_rows(path: &Path) -> Result<Vec<Row>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not a list of rows", path.display()))
}

/// Every suite's rows in `dir`: the known suites in their run order, then any other in name
/// order.
///
/// # Errors
/// The directory cannot be read, or a result file is not a list of rows.
pub fn read_all(dir: &Path) -> Result<Vec<(String, Vec<Row>)>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if let Some(suite) = name.strip_suffix(".json") {
            if !suite.starts_with('_') {
                names.push(suite.to_owned());
            }
        }
    }
    names.sort_by_key(|n| {
        (
            SUITES.iter().position(|s| s == n).unwrap_or(SUITES.len()),
            n.clone(),
        )
    });
    names
        .into_iter()
        .map(|n| read_suite(dir, &n).map(|rows| (n, rows)))
        .collect()
}

/// Reads the results in `results_dir`, redraws the suites' plots there, copies the SVGs to
/// `papers_dir/figures/` and writes `papers_dir/EVALUATION.md` with the hand-written
/// [`NOTES`] of `papers_dir/notes/`; returns its path.
///
/// # Errors
/// No result files, or a file cannot be read or written.
pub fn write(results_dir: &Path, papers_dir: &Path) -> Result<PathBuf> {
    let suites = read_all(results_dir)?;
    anyhow::ensure!(
        !suites.is_empty(),
        "no results in {}; run `dbos bench` first",
        results_dir.display()
    );
    let environment: Option<serde_json::Value> = std::fs::read(results_dir.join(ENVIRONMENT_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let figures_dir = papers_dir.join("figures");
    let mut figures = Vec::new();
    let ceiling: Vec<Row> = suites
        .iter()
        .find(|(s, _)| s == "ceiling")
        .map(|(_, r)| r.clone())
        .unwrap_or_default();
    for (suite, rows) in &suites {
        // Redrawn from the rows, so a plot always matches the figures beside it.
        let reference: &[Row] = if suite == "ceiling" { &[] } else { &ceiling };
        if let Err(e) = crate::plot::suite(results_dir, suite, rows, reference) {
            eprintln!("NOTICE: no plot of {suite}: {e:#}");
        }
        let svg = results_dir.join(format!("{suite}.svg"));
        if svg.exists() {
            std::fs::create_dir_all(&figures_dir)
                .with_context(|| format!("creating {}", figures_dir.display()))?;
            let to = figures_dir.join(format!("{suite}.svg"));
            std::fs::copy(&svg, &to).with_context(|| format!("copying to {}", to.display()))?;
            figures.push(suite.clone());
        }
    }
    // A missing note leaves its section out; one that cannot be read stops the report rather
    // than dropping the section unnoticed.
    let mut kept: Vec<(&str, String)> = Vec::new();
    for (file, heading) in NOTES {
        let path = papers_dir.join(NOTES_DIR).join(file);
        match std::fs::read_to_string(&path) {
            Ok(text) => kept.push((heading, text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!(
                    "NOTICE: no {}; the report has no section {heading:?}",
                    path.display()
                );
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
    let notes: Vec<(&str, &str)> = kept.iter().map(|(h, t)| (*h, t.as_str())).collect();
    let text = render(&suites, environment.as_ref(), &figures, &notes);
    let path = papers_dir.join("EVALUATION.md");
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

fn env_str(env: Option<&serde_json::Value>, path: &[&str]) -> Option<String> {
    let mut v = env?;
    for p in path {
        v = v.get(p)?;
    }
    Some(match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

/// A line naming the server settings the run was given with `dbos bench --pg-setting`; empty
/// when it was given none (the cluster ran with the defaults above).
fn settings_given(environment: Option<&serde_json::Value>) -> String {
    let given: Vec<&str> = environment
        .and_then(|e| e.get("pg_settings_given"))
        .and_then(|g| g.as_array())
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    if given.is_empty() {
        return String::new();
    }
    format!(
        "- Server settings given with `dbos bench --pg-setting` to the run of {}: {}.\n\n",
        env_str(environment, &["measured_at"]).unwrap_or_else(|| "an unrecorded time".into()),
        given
            .iter()
            .map(|g| format!("`{g}`"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// A line grouping the reported suites by the run that measured them, when there are several:
/// a suite without a recorded time, beside suites with one, came from a run that did not record
/// it. Empty when every suite comes from one run, or when the file records no times at all.
fn suite_times(environment: Option<&serde_json::Value>, reported: &[&str]) -> String {
    let Some(times) = environment
        .and_then(|e| e.get(SUITES_MEASURED))
        .and_then(serde_json::Value::as_object)
    else {
        return String::new();
    };
    let mut by_time: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for suite in reported {
        let at = times
            .get(*suite)
            .and_then(serde_json::Value::as_str)
            .unwrap_or("an earlier run that did not record its time");
        by_time.entry(at).or_default().push(suite);
    }
    if by_time.len() < 2 {
        return String::new();
    }
    let runs: Vec<String> = by_time
        .iter()
        .map(|(at, suites)| format!("{} at {at}", suites.join(", ")))
        .collect();
    format!(
        "- The results come from several runs: {}.\n\n",
        runs.join("; ")
    )
}

/// Sections written by hand from measured runs, as Markdown files in `papers/notes/` (tracked,
/// unlike the results), shown after the measured rows, each under its heading: the time budget
/// of the hot paths read from a full run's `measured` columns, and the last long run of the
/// torture test (`tests/torture.rs`).
pub const NOTES: &[(&str, &str)] = &[
    ("time.md", "Where the time goes"),
    ("torture.md", "Faults: the torture run"),
];

/// The directory of [`NOTES`], under the papers directory.
pub const NOTES_DIR: &str = "notes";

/// The text of EVALUATION.md for these results, with the hand-written `notes` (heading, text).
pub fn render(
    suites: &[(String, Vec<Row>)],
    environment: Option<&serde_json::Value>,
    figures: &[String],
    notes: &[(&str, &str)],
) -> String {
    let rows: Vec<Row> = suites.iter().flat_map(|(_, r)| r.iter().cloned()).collect();
    let cores: f64 = env_str(environment, &["cores"])
        .and_then(|c| c.parse().ok())
        .unwrap_or(2.0);
    let mut s = String::new();
    s.push_str("# Evaluation: our figures beside the papers'\n\n");
    s.push_str(
        "Generated by `dbos bench --report` from `bench/results/*.json` and the hand-written \
         sections in `papers/notes/`; do not edit by hand. \
         Run `cargo run --release -- bench` to measure again, then `cargo run --release -- \
         bench --report`. See `README.md` (the papers) for what each paper built and claimed, \
         and the project README (Benchmarks) for the harness.\n\n",
    );
    s.push_str("## Machine and run\n\n");
    let e = |p: &[&str]| env_str(environment, p).unwrap_or_else(|| "not recorded".into());
    s.push_str(&format!(
        "- Measured: {}, {} build, {}.\n\
         - Cores: {} (Postgres, the runtime and the load generator share them); {}.\n\
         - Postgres {}: fsync {}, synchronous_commit {}, wal_sync_method {}, shared_buffers {}.\n\
         - Runs: {} per workload of {} s each; figures are medians with min–max.\n\n",
        e(&["measured_at"]),
        e(&["build"]),
        if e(&["quick"]) == "true" {
            "a quick smoke run (one short repetition; not for comparison)"
        } else {
            "a full run"
        },
        e(&["cores"]),
        e(&["os"]),
        e(&["postgres", "server_version"]),
        e(&["postgres", "fsync"]),
        e(&["postgres", "synchronous_commit"]),
        e(&["postgres", "wal_sync_method"]),
        e(&["postgres", "shared_buffers"]),
        e(&["repeats"]),
        e(&["run_s"]),
    ));
    s.push_str(&settings_given(environment));
    let reported: Vec<&str> = suites.iter().map(|(name, _)| name.as_str()).collect();
    s.push_str(&suite_times(environment, &reported));
    s.push_str(
        "Modes: **D** fsync and synchronous_commit on (the default, and what this system \
         promises); **R** `synchronous_commit=off`; **M** unlogged tables (the closest analogue \
         of the papers' VoltDB, which ran with its command log and snapshots off).\n\n",
    );

    s.push_str("## Beside the published figures\n\n");
    s.push_str(
        "Each published figure is set beside the cell of ours that comes closest. \"ours ÷ \
         published\" is a plain ratio of the two numbers; per-core figures divide by the cores \
         behind each (ours: this machine's, shared with Postgres and the load generator). Read \
         the caveat of each row before the ratio.\n\n",
    );
    s.push_str(
        "| bench | published | source | our cell | mode | ours (min–max) | ours ÷ published | \
         per core: ours / theirs | caveat |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for p in PUBLISHED {
        let cell = p.find(&rows);
        let (ours, ratio, per_core, cell_name) = match cell {
            None => (
                format!("not measured (no `{}` results)", p.suite),
                "—".to_owned(),
                "—".to_owned(),
                format!("{}: {}", p.suite, p.words.join(", ")),
            ),
            Some(r) => {
                let same_unit = r.unit == p.unit || (p.unit == "/s" && r.is_rate());
                let ratio = match p.value {
                    Some((lo, hi)) if same_unit && lo > 0.0 => {
                        if lo == hi {
                            format!("{}×", fmt_ratio(r.ours / lo))
                        } else {
                            format!("{}–{}×", fmt_ratio(r.ours / hi), fmt_ratio(r.ours / lo))
                        }
                    }
                    _ => "—".to_owned(),
                };
                let per_core = match (p.value, p.cores) {
                    (Some((lo, hi)), Some(c)) if same_unit && r.is_rate() => {
                        let theirs = if lo == hi {
                            fmt_num(lo / c)
                        } else {
                            format!("{}–{}", fmt_num(lo / c), fmt_num(hi / c))
                        };
                        format!("{} / {}", fmt_num(r.ours / cores), theirs)
                    }
                    _ => "—".to_owned(),
                };
                (
                    format!(
                        "{} {} ({}–{})",
                        fmt_num(r.ours),
                        r.unit,
                        fmt_num(r.min),
                        fmt_num(r.max)
                    ),
                    ratio,
                    per_core,
                    format!("{}: {}", r.suite, r.workload),
                )
            }
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {:?} | {} | {} | {} | {} |\n",
            p.bench, p.claim, p.source, cell_name, p.mode, ours, ratio, per_core, p.caveat
        ));
    }
    s.push('\n');

    if let Some(peer) = rows
        .iter()
        .find(|r| r.suite == "peer" && r.baseline.is_some())
    {
        s.push_str(&format!(
            "The fairest comparison is the same-run one: on this machine, in this run, against \
             the same Postgres, DBOS for Python ran {} three-step workflows/s where we ran {} \
             ({}: ratio {}); every row of the `peer` suite below has it.\n\n",
            fmt_num(peer.baseline.unwrap_or(0.0)),
            fmt_num(peer.ours),
            peer.workload,
            peer.ratio.map_or("—".into(), fmt_ratio),
        ));
    }

    s.push_str("## Every measured row\n\n");
    s.push_str(
        "Columns: our figure (median of the runs) and its unit, the min–max of the runs, the \
         baseline measured in the same run and our ratio to it, latency p50/p99, other measured \
         facts (commits and WAL bytes per workflow are read from the server), the paper's or a \
         published figure for the cell, and the durability mode.\n\n",
    );
    for (suite, rows) in suites {
        s.push_str(&format!("### {suite}\n\n"));
        if figures.contains(suite) {
            s.push_str(&format!("![{suite}](figures/{suite}.svg)\n\n"));
        }
        if rows.is_empty() {
            s.push_str("No rows (the suite was skipped; see the run's notices).\n\n");
        } else {
            s.push_str(&markdown(rows));
            s.push('\n');
        }
    }

    for (heading, text) in notes {
        s.push_str(&format!("## {heading}\n\n"));
        s.push_str(text.trim_end());
        s.push_str("\n\n");
    }
    s.push_str(CAVEATS);
    s
}

fn fmt_ratio(x: f64) -> String {
    if x >= 10.0 {
        format!("{x:.0}")
    } else if x >= 0.1 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

const CAVEATS: &str = "## Caveats

- **Durability.** The papers' VoltDB kept everything in memory, with the command log and
  snapshots off and `kfactor=0`: a crash lost data and nothing was replicated. Our default (D)
  waits for a WAL flush at every commit, and nothing in the design depends on relaxing it. Only
  the M rows (unlogged tables) are close to the papers' setting; only the D rows are what this
  system promises.
- **Cores and placement.** The scheduler headline ran on 2 servers of 40 cores with clients on
  other nodes; DBOS Transact's figures come from a 96-vCPU RDS server reached over a network.
  Here 2 cores are shared by Postgres, the runtime and the load generator. Per-core figures help
  but count only the servers' cores.
- **What was measured.** The papers' scheduler assigned tasks that never ran; our queued
  workflows are claimed, executed with checkpointed steps and finished. graphile-worker and awa
  count single-row jobs, not multi-step workflows, on hardware of their own.
- **Figures not from this run.** The pgbench and DBOS SDK figures were measured earlier on a
  machine of the same class; the peer suite re-measures DBOS for Python in the same run, and
  that same-run ratio is the one to quote.
- **Sources.** Most paper figures reach us through third-party extractions ([X1] and others,
  see README.md); check them against the papers before quoting them as final.
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_names_the_server_settings_its_run_was_given() {
        let given = serde_json::json!({"measured_at": "2026-12-05 17:20 UTC",
            "pg_settings_given": ["wal_compression=lz4", "max_wal_size=4GB"]});
        assert_eq!(
            settings_given(Some(&given)),
            "- Server settings given with `dbos bench --pg-setting` to the run of 2026-12-05 \
             17:20 UTC: `wal_compression=lz4`, `max_wal_size=4GB`.\n\n"
        );
        let none = serde_json::json!({"pg_settings_given": []});
        assert_eq!(settings_given(Some(&none)), "");
        assert_eq!(settings_given(Some(&serde_json::json!({}))), "");
        assert_eq!(settings_given(None), "");
    }

    #[test]
    fn a_report_of_results_from_several_runs_says_when_each_suite_was_measured() {
        let one = serde_json::json!({SUITES_MEASURED: {
            "ceiling": "2026-12-03 07:41 UTC", "fs": "2026-12-03 07:41 UTC"}});
        assert_eq!(suite_times(Some(&one), &["ceiling", "fs"]), "");
        assert_eq!(suite_times(None, &["ceiling", "fs"]), "");
        let two = serde_json::json!({SUITES_MEASURED: {
            "ceiling": "2026-12-03 07:41 UTC", "workflow": "2026-12-03 07:41 UTC",
            "fs": "2026-12-03 10:40 UTC"}});
        assert_eq!(
            suite_times(Some(&two), &["ceiling", "fs", "workflow"]),
            "- The results come from several runs: ceiling, workflow at 2026-12-03 07:41 UTC; \
             fs at 2026-12-03 10:40 UTC.\n\n"
        );
        // Results written before times were recorded, then one suite measured again.
        let later = serde_json::json!({SUITES_MEASURED: {"fs": "2026-12-03 10:40 UTC"}});
        assert_eq!(
            suite_times(Some(&later), &["ceiling", "fs"]),
            "- The results come from several runs: fs at 2026-12-03 10:40 UTC; ceiling at an \
             earlier run that did not record its time.\n\n"
        );
    }

    #[test]
    fn the_report_sets_measured_cells_beside_published_figures_and_lists_every_suite() {
        let ceiling = Row::new(
            "ceiling",
            "single-row INSERT commit, 8 clients".into(),
            &[7000.0, 8000.0],
            "commits/s",
            2,
        );
        let other = Row::new("newsuite", "anything".into(), &[3.0], "ops/s", 1);
        let env = serde_json::json!({"cores": 2, "postgres": {"server_version": "15.9"}});
        let text = render(
            &[
                ("ceiling".into(), vec![ceiling]),
                ("newsuite".into(), vec![other]),
            ],
            Some(&env),
            &["ceiling".into()],
            &[(
                "Faults: the torture run",
                "1000 cycles, every invariant held.",
            )],
        );
        assert!(text.contains(
            "## Faults: the torture run\n\n1000 cycles, every invariant held.\n\n## Caveats"
        ));
        assert!(text.contains("| B1 | pgbench, one-INSERT transaction, 8 clients: 7,794 tps"));
        assert!(
            text.contains("7500 commits/s (7000–8000) | 0.96×"),
            "{text}"
        );
        assert!(text.contains("not measured (no `recovery` results)"));
        assert!(text.contains("### newsuite"));
        assert!(text.contains("![ceiling](figures/ceiling.svg)"));
        assert!(text.contains("Postgres 15.9"));
    }
}
