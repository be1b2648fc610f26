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
//! to `bench/results/<suite>.json` and `.md`, with a plot per suite beside them
//! (`<suite>.svg` and `.png`, see [`plot`]); `dbos bench --report` turns the result files into
//! `papers/EVALUATION.md` (see [`report`]) without running anything, and `dbos bench --compare`
//! sets earlier runs' `--json` rows side by side (see [`compare`]).
//!
//! A suite is a function that returns [`Row`]s. Plots, tables and the report are generic over
//! suites and rows: a row with a concurrency (set with [`Row::at`], or read from a workload
//! named like "…, 8 clients") becomes a point on a throughput-versus-concurrency line of its
//! suite's plot, and any other row a bar.
//!
//! ```
//! use dbos_bench::{Mode, Row};
//!
//! let mut row = Row::new("ceiling", "INSERT commit, 8 clients".into(), &[7.0, 9.0, 8.0], "commits/s", 3)
//!     .at("INSERT commit", 8);
//! row.mode = Mode::R;
//! assert_eq!((row.ours, row.min, row.max), (8.0, 7.0, 9.0));
//! assert_eq!(row.point(), Some(("INSERT commit (R)".to_owned(), 8)));
//! ```
#![warn(missing_docs, unreachable_pub)]

pub mod compare;
pub mod plot;
pub mod report;
mod scratch;
mod suites;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use serde::{Deserialize, Serialize};

/// Command-line arguments of `dbos bench` / `dbos-bench`.
#[derive(Debug, Parser)]
#[command(name = "dbos bench", about = "Benchmarks with same-run baselines")]
pub struct Args {
    /// Suites to run (ceiling, workflow, queue, peer, recovery, msg, fs, prov, replicated,
    /// history), in that order; all when none is given.
    pub suites: Vec<String>,
    /// A smoke run: one short repetition of a few workloads (under a minute).
    #[arg(long)]
    pub quick: bool,
    /// Seconds each run of a workload lasts, instead of the plan's (4, or 0.7 with `--quick`):
    /// a long run of one workload, to profile it.
    #[arg(long, value_parser = parse_secs)]
    pub run_secs: Option<Duration>,
    /// Also sample, through each run, the wait events of the database's active backends
    /// (`waits`, `active_backends` in a row's measured column): where a workload's server
    /// time goes. The sampling costs the server about 1 % of a core.
    #[arg(long)]
    pub waits: bool,
    /// Also write every row to this JSON file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Postgres to measure; an embedded cluster in a scratch directory when unset.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// A setting of the embedded cluster, `NAME=VALUE` (repeatable), given to its server as
    /// `-c NAME=VALUE`: to measure a configuration against the defaults.
    #[arg(long = "pg-setting", value_name = "NAME=VALUE", value_parser = parse_setting,
          conflicts_with = "database_url")]
    pub pg_settings: Vec<(String, String)>,
    /// Directory for result files.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/results"))]
    pub results_dir: PathBuf,
    /// Run nothing: regenerate `EVALUATION.md` in the papers directory from the result files.
    #[arg(long, conflicts_with_all = ["suites", "quick", "json", "waits"])]
    pub report: bool,
    /// Run nothing: set the rows of earlier runs side by side, each variant one `--json` file
    /// or several joined by commas (its rounds, when runs alternate), with each variant's ratio
    /// to the first and whether their runs overlap.
    #[arg(long, value_name = "FILE[,FILE...]", num_args = 2..,
          conflicts_with_all = ["suites", "quick", "json", "report", "run_secs", "pg_settings",
                              "waits"])]
    pub compare: Vec<String>,
    /// Directory of `EVALUATION.md` (with `--report`).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../papers"))]
    pub papers_dir: PathBuf,
}

fn parse_setting(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!("{s:?} is not NAME=VALUE")),
    }
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(Duration::from_secs_f64(v)),
        _ => Err(format!("{s:?} is not a positive number of seconds")),
    }
}

/// Every suite, in the order they run (the ceiling first: later suites read it).
pub const SUITES: &[&str] = &[
    "ceiling",
    "workflow",
    "queue",
    "peer",
    "recovery",
    "msg",
    "fs",
    "prov",
    "replicated",
    "history",
];

/// Durability mode of a figure: D = fsync and synchronous_commit on.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mode {
    #[default]
    /// Durable: fsync and synchronous_commit on (the default).
    D,
    /// synchronous_commit off.
    R,
    /// Unlogged tables.
    M,
}

/// One measured figure.
#[derive(Clone, Debug, Serialize, Deserialize)]
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
    #[serde(default)]
    pub baseline: Option<f64>,
    /// What the baseline is.
    #[serde(default)]
    pub baseline_name: Option<String>,
    /// ours ÷ baseline.
    #[serde(default)]
    pub ratio: Option<f64>,
    /// The paper's (or a published) figure for this cell, with its source, where one exists.
    #[serde(default)]
    pub paper: Option<String>,
    /// Median latency, ms.
    #[serde(default)]
    pub p50_ms: Option<f64>,
    /// 99th percentile latency, ms.
    #[serde(default)]
    pub p99_ms: Option<f64>,
    /// Other measured facts (commits per workflow, WAL bytes, ...).
    #[serde(default)]
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// Durability mode.
    #[serde(default)]
    pub mode: Mode,
    /// Repetitions.
    pub runs: usize,
    /// Concurrent clients (callers, workers) of the workload: the x axis of the suite's plot.
    #[serde(default)]
    pub concurrency: Option<u32>,
    /// The plot line the row belongs to: the workload without its concurrency.
    #[serde(default)]
    pub series: Option<String>,
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
            concurrency: None,
            series: None,
        }
    }

    /// Places the row on the plot line `series` at `concurrency` clients.
    pub fn at(mut self, series: impl Into<String>, concurrency: u32) -> Row {
        self.series = Some(series.into());
        self.concurrency = Some(concurrency);
        self
    }

    /// Whether the figure is a rate (its unit ends in `/s`): only rates are plotted against
    /// concurrency.
    pub fn is_rate(&self) -> bool {
        self.unit.ends_with("/s")
    }

    /// The plot line and concurrency of the row: [`Row::at`]'s, or else read from a workload
    /// that names its concurrency ("3-step workflow, 8 callers, direct" is line "3-step
    /// workflow, direct" at 8). A mode other than D is appended to the line's name.
    pub fn point(&self) -> Option<(String, u32)> {
        let (series, x) = match (&self.series, self.concurrency) {
            (Some(s), Some(c)) => (s.clone(), c),
            _ => split_concurrency(&self.workload)?,
        };
        Some(match self.mode {
            Mode::D => (series, x),
            m => (format!("{series} ({m:?})"), x),
        })
    }
}

/// Words that, after a number, give a workload's concurrency.
const CONCURRENCY_WORDS: &[&str] = &[
    "client",
    "caller",
    "worker",
    "thread",
    "connection",
    "sender",
    "receiver",
    "subscriber",
    "producer",
    "consumer",
];

/// "3-step workflow, 8 callers, direct" → ("3-step workflow, direct", 8).
fn split_concurrency(workload: &str) -> Option<(String, u32)> {
    let parts: Vec<&str> = workload.split(',').map(str::trim).collect();
    for (i, part) in parts.iter().enumerate() {
        let words: Vec<&str> = part.split_whitespace().collect();
        for (j, pair) in words.windows(2).enumerate() {
            let noun = pair[1].trim_end_matches('s');
            let Ok(n) = pair[0].parse::<u32>() else {
                continue;
            };
            if !CONCURRENCY_WORDS.contains(&noun) {
                continue;
            }
            // Drop "N clients" from its part, and the part when nothing else is left.
            let rest: Vec<&str> = words[..j].iter().chain(&words[j + 2..]).copied().collect();
            let mut kept: Vec<String> = Vec::new();
            for (k, p) in parts.iter().enumerate() {
                if k != i {
                    kept.push((*p).to_owned());
                } else if !rest.is_empty() {
                    kept.push(rest.join(" "));
                }
            }
            return Some((kept.join(", "), n));
        }
    }
    None
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
        Err(e) => match e.downcast_ref::<Interrupted>() {
            Some(Interrupted(sig)) => {
                eprintln!("{e}: the run stopped, and its node and embedded Postgres with it");
                ExitCode::from(128 + *sig as u8)
            }
            None => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

async fn run(args: Args) -> Result<()> {
    if !args.compare.is_empty() {
        println!("{}", compare::compare(&args.compare)?);
        return Ok(());
    }
    if args.report {
        let path = report::write(&args.results_dir, &args.papers_dir)?;
        println!("wrote {}", path.display());
        return Ok(());
    }
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
    let plan = Plan {
        run: args.run_secs.unwrap_or(plan.run),
        ..plan
    };
    if cfg!(debug_assertions) {
        eprintln!(
            "NOTICE: this is a debug build; run `cargo run --release -- bench` for real figures"
        );
    }
    // From here a SIGINT or SIGTERM stops the run, then the node and its embedded Postgres.
    let mut signals = dbos_kernel::ShutdownSignals::install()?;
    let env = tokio::select! {
        env = suites::Env::start(args.database_url.clone(), &args.pg_settings, args.waits) => env?,
        sig = signals.next() => return Err(Interrupted(sig).into()),
    };
    let measured = tokio::select! {
        all = measure(&env, &args, plan, &wanted) => all,
        sig = signals.next() => Err(Interrupted(sig).into()),
    };
    // However the run ended; a second signal stops waiting for it (the embedded Postgres then
    // quits with this process).
    let stopped = tokio::select! {
        s = env.stop() => s,
        sig = signals.next() => Err(Interrupted(sig).into()),
    };
    let all = measured?;
    stopped?;
    print_table(&all);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&all)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// A run ended by SIGINT or SIGTERM; the process exits with 128 + the signal's number.
#[derive(Debug)]
struct Interrupted(nix::sys::signal::Signal);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "interrupted by {}", self.0)
    }
}

impl std::error::Error for Interrupted {}

/// Runs the `wanted` suites on `env`, writing each one's results and plot as it ends; returns
/// every row.
async fn measure(env: &suites::Env, args: &Args, plan: Plan, wanted: &[&str]) -> Result<Vec<Row>> {
    std::fs::create_dir_all(&args.results_dir)
        .with_context(|| format!("creating {}", args.results_dir.display()))?;
    let mut environment = env.describe(plan).await?;
    let path = args.results_dir.join(report::ENVIRONMENT_FILE);
    // When each suite's results were measured: suites this run leaves alone keep the time of
    // the run that wrote them, so a report of results from several runs says so.
    let earlier = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get(report::SUITES_MEASURED).cloned())
        .filter(serde_json::Value::is_object)
        .unwrap_or_else(|| serde_json::json!({}));
    environment[report::SUITES_MEASURED] = earlier;
    std::fs::write(&path, serde_json::to_vec_pretty(&environment)?)
        .with_context(|| format!("writing {}", path.display()))?;
    let mut all = Vec::new();
    let mut ceiling = suites::Ceiling::default();
    for &suite in wanted {
        let rows = match suite {
            "ceiling" => suites::ceiling(env, plan, &mut ceiling).await?,
            "workflow" => {
                if ceiling.commits_per_s.is_empty() {
                    // The workflow figures are read against the ceiling of this run.
                    suites::ceiling(env, plan, &mut ceiling).await?;
                }
                suites::workflow(env, plan, &ceiling).await?
            }
            "queue" => {
                if ceiling.commits_per_s.is_empty() {
                    suites::ceiling(env, plan, &mut ceiling).await?;
                }
                suites::queue(env, plan, &ceiling).await?
            }
            "peer" => suites::peer(env, plan).await?,
            "recovery" => suites::recovery(env, plan).await?,
            "msg" => suites::msg(env, plan).await?,
            "fs" => suites::fs(env, plan).await?,
            "prov" => suites::prov(env, plan).await?,
            "replicated" => suites::replicated(env, plan).await?,
            "history" => suites::history(env, plan).await?,
            _ => unreachable!("checked above"),
        };
        write_results(&args.results_dir, suite, &rows)?;
        environment[report::SUITES_MEASURED][suite] = environment["measured_at"].clone();
        std::fs::write(&path, serde_json::to_vec_pretty(&environment)?)
            .with_context(|| format!("writing {}", path.display()))?;
        // Every plot shows the machine's durable commit ceiling as its reference line: this
        // run's, or the last one written.
        let reference = if suite == "ceiling" {
            Vec::new()
        } else {
            let this_run: Vec<Row> = all
                .iter()
                .filter(|r: &&Row| r.suite == "ceiling")
                .cloned()
                .collect();
            if this_run.is_empty() {
                report::read_suite(&args.results_dir, "ceiling").unwrap_or_default()
            } else {
                this_run
            }
        };
        if let Err(e) = plot::suite(&args.results_dir, suite, &rows, &reference) {
            eprintln!("NOTICE: no plot of {suite}: {e:#}");
        }
        all.extend(rows);
    }
    Ok(all)
}

pub(crate) fn fmt_num(v: f64) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workload_that_names_its_concurrency_is_a_point_on_a_line() {
        let point = |w: &str| Row::new("s", w.into(), &[1.0], "ops/s", 1).point();
        assert_eq!(
            point("3-step workflow, 8 callers, direct"),
            Some(("3-step workflow, direct".to_owned(), 8))
        );
        assert_eq!(
            point("single-row INSERT commit, 1 client"),
            Some(("single-row INSERT commit".to_owned(), 1))
        );
        assert_eq!(
            point("ping-pong with 32 workers"),
            Some(("ping-pong with".to_owned(), 32))
        );
        assert_eq!(point("1000 pending workflows, recovered"), None);
        assert_eq!(summarize(&[3.0, 1.0, 2.0, 10.0]), (2.5, 1.0, 10.0));
    }

    #[test]
    fn a_server_setting_is_name_equals_value() {
        // Whatever DATABASE_URL the tests run with.
        let args = |a: &[&str]| {
            let cmd =
                <Args as clap::CommandFactory>::command().mut_arg("database_url", |u| u.env(None));
            cmd.try_get_matches_from([&["dbos bench"], a].concat())
                .and_then(|m| <Args as clap::FromArgMatches>::from_arg_matches(&m))
        };
        let parsed = args(&[
            "--pg-setting",
            "wal_compression=lz4",
            "--pg-setting",
            "log_line_prefix=%m [%p] ",
        ])
        .expect("two settings parse");
        assert_eq!(
            parsed.pg_settings,
            [
                ("wal_compression".to_owned(), "lz4".to_owned()),
                ("log_line_prefix".to_owned(), "%m [%p] ".to_owned())
            ]
        );
        let refused = |a: &[&str]| args(a).expect_err("refused").to_string();
        assert!(refused(&["--pg-setting", "lz4"]).contains("\"lz4\" is not NAME=VALUE"));
        assert!(refused(&["--pg-setting", "=on"]).contains("is not NAME=VALUE"));
        assert!(refused(&[
            "--pg-setting",
            "fsync=on",
            "--database-url",
            "postgres://localhost/x"
        ])
        .contains("cannot be used with"));
    }

    #[test]
    fn a_comparison_takes_two_variants_or_more_and_runs_nothing_else() {
        let args = |a: &[&str]| Args::try_parse_from([&["dbos bench"], a].concat());
        let parsed = args(&["--compare", "a-1.json,a-2.json", "b.json"]).expect("two variants");
        assert_eq!(parsed.compare, ["a-1.json,a-2.json", "b.json"]);
        let refused = |a: &[&str]| args(a).expect_err("refused").to_string();
        assert!(refused(&["--compare", "a.json"]).contains("2 values required"));
        assert!(refused(&["--compare", "a.json", "b.json", "--quick"]).contains("cannot be used"));
        assert!(refused(&["workflow", "--compare", "a.json", "b.json"]).contains("cannot be used"));
    }
}
