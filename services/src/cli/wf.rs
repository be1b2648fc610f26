//! `dbos wf ...`: inspect and manage workflows with SQL alone.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::Value;

use super::render::{self, Format};
use super::ConnArgs;
use crate::workflow::manage::{self, ListFilter};
use crate::workflow::{Registry, Replayer};

#[derive(Debug, Subcommand)]
pub(super) enum WfCommand {
    /// List workflows, oldest first (newest first with --sort-desc).
    List(ListArgs),
    /// Show one workflow's status, inputs and outcome.
    Get {
        /// Workflow ID.
        id: String,
    },
    /// Show a workflow's recorded steps in order.
    Steps {
        /// Workflow ID.
        id: String,
    },
    /// Cancel a workflow; it stops at its next step boundary.
    Cancel {
        /// Workflow ID.
        id: String,
        /// Also cancel its child workflows, recursively.
        #[arg(long)]
        cascade: bool,
    },
    /// Resume a cancelled or dead-lettered workflow from its last completed step.
    Resume {
        /// Workflow ID.
        id: String,
    },
    /// Start a copy of a workflow that reuses its steps before --step and runs the rest.
    Fork {
        /// Workflow ID.
        id: String,
        /// First step to run again (1 runs everything again).
        #[arg(short = 'S', long, default_value_t = 1)]
        step: i32,
        /// ID of the new workflow; a fresh UUID when unset.
        #[arg(short = 'f', long)]
        forked_id: Option<String>,
        /// Application version that must run the fork; the latest when unset.
        #[arg(short = 'v', long)]
        app_version: Option<String>,
    },
    /// Re-run an ended workflow in place from --step on, as DBOS's rewind does: what it
    /// recorded from that step on is deleted, and so are the messages it consumed from that
    /// step on and those sent to it that it never consumed (its new run receives afresh).
    Rewind {
        /// Workflow ID.
        id: String,
        /// First step to run again.
        #[arg(short = 'S', long)]
        step: i32,
    },
    /// Re-run this program's workflow code against recorded histories, writing nothing: prints
    /// per workflow "consistent" or the first divergence; exits 1 when any diverges.
    Replay(ReplayArgs),
    /// Delete ended workflows (SUCCESS, ERROR, CANCELLED, dead-lettered) older than
    /// --older-than, or beyond the --keep newest, with everything recorded for them. Queued,
    /// delayed and running workflows stay, and so do their children. `sched.workflow_retention`
    /// makes the nodes do this every minute.
    Gc {
        #[command(flatten)]
        policy: GcArgs,
        /// Only count the workflows that would be deleted.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete a workflow and everything recorded for it.
    Delete {
        /// Workflow ID.
        id: String,
        /// Also delete its child workflows, recursively.
        #[arg(long)]
        children: bool,
    },
}

#[derive(Debug, Args)]
pub(super) struct ListArgs {
    /// Most workflows shown.
    #[arg(short = 'l', long, default_value_t = 10, value_parser = clap::value_parser!(i64).range(0..))]
    limit: i64,
    /// Workflows skipped first.
    #[arg(short = 'o', long, value_parser = clap::value_parser!(i64).range(0..))]
    offset: Option<i64>,
    /// Created at or after this time (RFC 3339, e.g. 2026-01-31T12:00:00Z, or a date, from its
    /// start in UTC).
    #[arg(short = 't', long)]
    start_time: Option<String>,
    /// Created at or before this time (RFC 3339, or a date, to its end in UTC).
    #[arg(short = 'e', long)]
    end_time: Option<String>,
    /// Only this status (repeatable): PENDING, ENQUEUED, SUCCESS, ERROR, CANCELLED, ...
    #[arg(short = 'S', long)]
    status: Vec<String>,
    /// Only this workflow function.
    #[arg(short = 'n', long)]
    name: Option<String>,
    /// Only this application version.
    #[arg(short = 'v', long)]
    app_version: Option<String>,
    /// Only this queue.
    #[arg(short = 'q', long)]
    queue: Option<String>,
    /// Only IDs starting with this prefix.
    #[arg(long)]
    prefix: Option<String>,
    /// Only children of this workflow.
    #[arg(long)]
    parent: Option<String>,
    /// Only workflows of this executor (node).
    #[arg(long)]
    executor: Option<String>,
    /// Newest first.
    #[arg(short = 'd', long)]
    sort_desc: bool,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = true)]
pub(super) struct GcArgs {
    /// Delete ended workflows created longer ago than this (e.g. 7d, 12h; 0s: every one).
    #[arg(long, value_parser = super::parse_duration)]
    older_than: Option<std::time::Duration>,
    /// Keep at most this many of the newest workflows: delete the ended ones older than them.
    #[arg(long, value_parser = clap::value_parser!(i64).range(1..))]
    keep: Option<i64>,
}

#[derive(Debug, Args)]
pub(super) struct ReplayArgs {
    /// Workflow IDs.
    ids: Vec<String>,
    /// Every workflow (narrowed by --name and --since).
    #[arg(long)]
    all: bool,
    /// Only workflows of this function.
    #[arg(short = 'n', long)]
    name: Option<String>,
    /// Only workflows created at or after this time (RFC 3339, or a date, from its start in
    /// UTC).
    #[arg(long)]
    since: Option<String>,
    /// Longest a workflow's code may take to replay (e.g. 30s).
    #[arg(long, default_value = "30s", value_parser = super::parse_duration)]
    timeout: std::time::Duration,
}

const STATUSES: &[&str] = &[
    "PENDING",
    "ENQUEUED",
    "DELAYED",
    "SUCCESS",
    "ERROR",
    "CANCELLED",
    "MAX_RECOVERY_ATTEMPTS_EXCEEDED",
];

/// `--flag`'s time ([`super::parse_time`]) as epoch milliseconds.
fn epoch_ms(flag: &str, v: &Option<String>, day_end: bool) -> Result<Option<i64>> {
    v.as_deref()
        .map(|t| {
            super::parse_time(t, day_end)
                .map(|d| d.timestamp_millis())
                .map_err(|e| anyhow::anyhow!("{flag} {e}"))
        })
        .transpose()
}

pub(super) async fn run(
    conn: &ConnArgs,
    format: Format,
    cmd: WfCommand,
    registry: &Registry,
) -> Result<ExitCode> {
    if let WfCommand::Replay(a) = &cmd {
        let selected = a.all || a.name.is_some() || a.since.is_some();
        anyhow::ensure!(
            selected == a.ids.is_empty(),
            "name workflow IDs, or select them with --all, --name or --since (not both)"
        );
    }
    let pool = super::pool(conn).await?;
    match cmd {
        WfCommand::Replay(a) => return replay(&pool, registry, a, format).await,
        WfCommand::List(a) => {
            for s in &a.status {
                anyhow::ensure!(
                    STATUSES.contains(&s.as_str()),
                    "unknown status {s:?}; one of {}",
                    STATUSES.join(", ")
                );
            }
            let f = ListFilter {
                status: a.status,
                name: a.name,
                app_version: a.app_version,
                queue_name: a.queue,
                workflow_id_prefix: a.prefix,
                parent_workflow_id: a.parent,
                executor_id: a.executor,
                start_time_ms: epoch_ms("--start-time", &a.start_time, false)?,
                end_time_ms: epoch_ms("--end-time", &a.end_time, true)?,
                limit: Some(a.limit),
                offset: a.offset,
                sort_desc: a.sort_desc,
                ..ListFilter::default()
            };
            let rows: Vec<Value> = manage::list(&pool, &f).await?.iter().map(json).collect();
            render::print_json_rows(
                &rows,
                &[
                    "workflow_id",
                    "status",
                    "name",
                    "queue_name",
                    "executor_id",
                    "created_at",
                    "output",
                    "error",
                ],
                format,
            )?;
        }
        WfCommand::Get { id } => {
            let w = manage::get(&pool, &id).await?;
            render::print_json_rows(&[json(&w)], &[], format)?;
        }
        WfCommand::Steps { id } => {
            let rows: Vec<Value> = manage::steps(&pool, &id).await?.iter().map(json).collect();
            render::print_json_rows(
                &rows,
                &[
                    "function_id",
                    "function_name",
                    "output",
                    "error",
                    "child_workflow_id",
                    "started_at_epoch_ms",
                    "completed_at_epoch_ms",
                ],
                format,
            )?;
        }
        WfCommand::Cancel { id, cascade } => {
            let ids = manage::cancel(&pool, &id, cascade).await?;
            render::print_message(&serde_json::json!({ "cancelled": ids }), format)?;
        }
        WfCommand::Resume { id } => {
            let resumed = manage::resume(&pool, &id).await?;
            anyhow::ensure!(
                resumed,
                "workflow {id} already ended with SUCCESS or ERROR; fork it to run it again"
            );
            render::print_message(&serde_json::json!({ "resumed": id }), format)?;
        }
        WfCommand::Fork {
            id,
            step,
            forked_id,
            app_version,
        } => {
            let new_id = manage::fork(&pool, &id, step, forked_id, app_version).await?;
            render::print_message(
                &serde_json::json!({ "workflow_id": new_id, "forked_from": id }),
                format,
            )?;
        }
        WfCommand::Rewind { id, step } => {
            manage::rewind(&pool, &id, step).await?;
            render::print_message(
                &serde_json::json!({ "rewound": id, "from_step": step }),
                format,
            )?;
        }
        WfCommand::Gc { policy: a, dry_run } => {
            let policy = manage::Retention {
                max_age_ms: a
                    .older_than
                    .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
                max_rows: a.keep,
            };
            let msg = if dry_run {
                serde_json::json!({ "would_delete": manage::gc_count(&pool, &policy).await? })
            } else {
                serde_json::json!({ "deleted": manage::gc(&pool, &policy).await? })
            };
            render::print_message(&msg, format)?;
        }
        WfCommand::Delete { id, children } => {
            let ids = manage::delete(&pool, &id, children).await?;
            render::print_message(&serde_json::json!({ "deleted": ids }), format)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `dbos wf replay`: one line per workflow; exit 1 when any does not replay consistently.
async fn replay(
    pool: &sqlx::PgPool,
    registry: &Registry,
    a: ReplayArgs,
    format: Format,
) -> Result<ExitCode> {
    let replayer = Replayer::new(pool, registry.clone()).with_timeout(a.timeout);
    let reports = if a.ids.is_empty() {
        let f = ListFilter {
            name: a.name,
            start_time_ms: epoch_ms("--since", &a.since, false)?,
            ..ListFilter::default()
        };
        replayer.replay_all(&f).await?
    } else {
        let mut out = Vec::with_capacity(a.ids.len());
        for id in &a.ids {
            out.push(replayer.replay(id).await?);
        }
        out
    };
    if format == Format::Json {
        let rows: Vec<Value> = reports.iter().map(json).collect();
        render::print_json_rows(&rows, &[], format)?;
    } else {
        for r in &reports {
            println!("{r}");
        }
    }
    let diverged = reports.iter().filter(|r| !r.is_consistent()).count();
    if diverged > 0 {
        eprintln!(
            "{diverged} of {} workflows did not replay consistently",
            reports.len()
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("status rows serialise")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_is_rfc_3339_or_a_whole_day() {
        let ms = |v: &str, end| epoch_ms("-t", &Some(v.to_owned()), end).map(Option::unwrap);
        let midnight = 1_769_817_600_000; // 2026-01-31T00:00:00Z
        assert_eq!(ms("2026-01-31T00:00:00Z", false).unwrap(), midnight);
        assert_eq!(ms("2026-01-31T01:00:00+01:00", true).unwrap(), midnight);
        assert_eq!(ms("2026-01-31", false).unwrap(), midnight);
        assert_eq!(ms("2026-01-31", true).unwrap(), midnight + 86_400_000 - 1);
        for bad in ["notadate", "2026-13-01", "31/01/2026", ""] {
            let e = ms(bad, false).expect_err(bad).to_string();
            assert!(e.contains("neither an RFC 3339 time"), "{bad}: {e}");
        }
        assert_eq!(epoch_ms("-t", &None, false).unwrap(), None);
    }
}
