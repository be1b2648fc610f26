//! The benchmark harness: every figure beside a baseline measured in the same run.
//!
//! Suites:
//! - `ceiling`: durable single-row INSERT commits per second with 1, 8 and 32 clients through
//!   the same driver and pool settings: what this Postgres on this disk can do.
//! - `workflow`: workflows of 1, 3 and 10 no-op steps with 1, 8 and 32 concurrent callers,
//!   started directly or through a queue; workflows/s, latency, commits and WAL bytes per
//!   workflow (read from the server, not guessed), and the ratio to the commit bound
//!   (ceiling commits/s ÷ commits per workflow).
//! - `peer`: the same 3-step workflow run by the official DBOS for Python (installed into a
//!   virtualenv on first use) against the same Postgres, beside ours; skipped with a notice
//!   when python3 is missing.
//! - `fs`: the file system in tables against ext4 on the same disk, with and without
//!   fdatasync: create+delete of small files, 1 KiB random reads, 64 KiB writes, 1 MiB
//!   sequential writes and reads, readdir of 10k entries, and the paper's analytics queries
//!   (at 1M file rows), with the paper's figures beside ours.
//! - `recovery`: 1,000 and 10,000 PENDING workflows of a dead node; seconds until this node has
//!   re-enqueued, claimed and finished them all.
//!
//! Figures are medians of repeated runs, with min and max. Results go to stdout as a table and
//! to `bench/results/<suite>.json` and `.md`.
#![warn(missing_docs, unreachable_pub)]

mod suites;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use serde::Serialize;

/// Command-line arguments of `dbos bench` / `dbos-bench`.
#[derive(Debug, Parser)]
#[command(name = "dbos bench", about = "Benchmarks with same-run baselines")]
pub struct Args {
    /// Suites to run (ceiling, workflow, peer, recovery, fs); all when none is given.
    pub suites: Vec<String>,
    /// A smoke run: one short repetition of a few workloads (under a minute).
    #[arg(long)]
    pub quick: bool,
    /// Also write every row to this JSON file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Postgres to measure; an embedded cluster in a scratch directory when unset.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Directory for result files.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/results"))]
    pub results_dir: PathBuf,
}

/// Every suite, in the order they run (the ceiling first: later suites read it).
pub const SUITES: &[&str] = &["ceiling", "workflow", "peer", "recovery", "fs"];

/// Durability mode of a figure: D = fsync and synchronous_commit on.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub enum Mode {
    /// Durable: fsync and synchronous_commit on (the default).
    D,
    /// synchronous_commit off.
    R,
    /// Unlogged tables.
    M,
}

/// One measured figure.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// Suite name.
    pub suite: String,
    /// What was measured.
    pub workload: String,
    /// Our figure (median of the runs).
    pub ours: f64,
    /// Smallest run.
    pub min: f64,
    /// Largest run.
    pub max: f64,
    /// Unit of `ours`.
    pub unit: String,
    /// The same-run baseline, when one applies.
    pub baseline: Option<f64>,
    /// What the baseline is.
    pub baseline_name: Option<String>,
    /// ours ÷ baseline.
    pub ratio: Option<f64>,
    /// The paper's figure, where one exists.
    pub paper: Option<String>,
    /// Median latency, ms.
    pub p50_ms: Option<f64>,
    /// 99th percentile latency, ms.
    pub p99_ms: Option<f64>,
    /// Other measured facts (commits per workflow, WAL bytes, ...).
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// Durability mode.
    pub mode: Mode,
    /// Repetitions.
    pub runs: usize,
}

impl Row {
    /// A durable-mode row of `runs` measurements summarised as median, min and max; the
    /// optional fields start empty.
    pub fn new(suite: &str, workload: String, values: &[f64], unit: &str, runs: usize) -> Row {
        let (ours, min, max) = summarize(values);
        Row {
            suite: suite.to_owned(),
            workload,
            ours,
            min,
            max,
            unit: unit.to_owned(),
            baseline: None,
            baseline_name: None,
            ratio: None,
            paper: None,
            p50_ms: None,
            p99_ms: None,
            extra: serde_json::Map::new(),
            mode: Mode::D,
            runs,
        }
    }
}

/// Median, min and max of repeated measurements.
pub fn summarize(values: &[f64]) -> (f64, f64, f64) {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let median = if v.is_empty() {
        0.0
    } else if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    (
        median,
        *v.first().unwrap_or(&0.0),
        *v.last().unwrap_or(&0.0),
    )
}

/// The `q`-quantile (0..=1) of latencies in ms.
pub fn quantile(latencies: &mut [f64], q: f64) -> f64 {
    if latencies.is_empty() {
        return 0.0;
    }
    latencies.sort_by(f64::total_cmp);
    let i = ((latencies.len() - 1) as f64 * q).round() as usize;
    latencies[i]
}

/// How long and how often each workload runs.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Length of one run.
    pub run: Duration,
    /// Repetitions of each workload.
    pub repeats: usize,
    /// Smoke run.
    pub quick: bool,
}

/// Runs the harness with `dbos bench` arguments (without the program name).
pub fn main_from(args: impl IntoIterator<Item = String>) -> ExitCode {
    let args = Args::parse_from(std::iter::once("dbos bench".to_owned()).chain(args));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime can be built");
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<()> {
    for s in &args.suites {
        anyhow::ensure!(
            SUITES.contains(&s.as_str()),
            "unknown suite {s:?}; suites: {}",
            SUITES.join(", ")
        );
    }
    let wanted: Vec<&str> = SUITES
        .iter()
        .copied()
        .filter(|s| args.suites.is_empty() || args.suites.iter().any(|a| a == s))
        .collect();
    let plan = if args.quick {
        Plan {
            run: Duration::from_millis(700),
            repeats: 1,
            quick: true,
        }
    } else {
        Plan {
            run: Duration::from_secs(4),
            repeats: 3,
            quick: false,
        }
    };
    if cfg!(debug_assertions) {
        eprintln!(
            "NOTICE: this is a debug build; run `cargo run --release -- bench` for real figures"
        );
    }
    let env = suites::Env::start(args.database_url.clone()).await?;
    let mut all = Vec::new();
    let mut ceiling = suites::Ceiling::default();
    for suite in wanted {
        let rows = match suite {
            "ceiling" => suites::ceiling(&env, plan, &mut ceiling).await?,
            "workflow" => {
                if ceiling.commits_per_s.is_empty() {
                    // The workflow figures are read against the ceiling of this run.
                    suites::ceiling(&env, plan, &mut ceiling).await?;
                }
                suites::workflow(&env, plan, &ceiling).await?
            }
            "peer" => suites::peer(&env, plan).await?,
            "recovery" => suites::recovery(&env, plan).await?,
            "fs" => suites::fs(&env, plan).await?,
            _ => unreachable!("checked above"),
        };
        write_results(&args.results_dir, suite, &rows)?;
        all.extend(rows);
    }
    env.stop().await?;
    print_table(&all);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&all)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn fmt_num(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The rows as a Markdown table.
pub fn markdown(rows: &[Row]) -> String {
    let mut s = String::from(
        "| suite | workload | ours | unit | min–max | baseline | ratio | p50 ms | p99 ms | measured | paper | mode |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let extra: Vec<String> = r
            .extra
            .iter()
            .map(|(k, v)| match v.as_f64() {
                Some(f) => format!("{k}={}", fmt_num(f)),
                None => format!("{k}={v}"),
            })
            .collect();
        s.push_str(&format!(
            "| {} | {} | {} | {} | {}–{} | {} | {} | {} | {} | {} | {} | {:?} |\n",
            r.suite,
            r.workload,
            fmt_num(r.ours),
            r.unit,
            fmt_num(r.min),
            fmt_num(r.max),
            match (&r.baseline, &r.baseline_name) {
                (Some(b), Some(n)) => format!("{} ({n})", fmt_num(*b)),
                _ => "—".into(),
            },
            r.ratio.map_or("—".into(), |x| format!("{x:.2}")),
            r.p50_ms.map_or("—".into(), fmt_num),
            r.p99_ms.map_or("—".into(), fmt_num),
            extra.join(", "),
            r.paper.clone().unwrap_or_else(|| "—".into()),
            r.mode,
        ));
    }
    s
}

fn write_results(dir: &std::path::Path, suite: &str, rows: &[Row]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let json = dir.join(format!("{suite}.json"));
    std::fs::write(&json, serde_json::to_vec_pretty(rows)?)
        .with_context(|| format!("writing {}", json.display()))?;
    let md = dir.join(format!("{suite}.md"));
    let text = format!(
        "# {suite}\n\nMeasured {} on {} cores; D = fsync and synchronous_commit on.\n\n{}",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        markdown(rows)
    );
    std::fs::write(&md, text).with_context(|| format!("writing {}", md.display()))?;
    Ok(())
}

fn print_table(rows: &[Row]) {
    println!("{}", markdown(rows));
}
