//! `dbos cron ...`: schedules that run a command or a workflow on every tick.

use std::process::ExitCode;

use anyhow::{bail, Result};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use dbos_scheduler::command::CommandSpec;
use dbos_scheduler::cron::{self, Schedule};
use serde_json::json;

use super::render::{self, Format};
use super::{parse_time_from, parse_time_to, ConnArgs};
use crate::builtin::SCHEDULED_COMMAND;

#[derive(Debug, Subcommand)]
pub(super) enum CronCommand {
    /// Add a schedule that runs a command (after `--`) or a workflow (--workflow) on every tick.
    Add(AddArgs),
    /// List schedules.
    List,
    /// Stop firing a schedule.
    Pause {
        /// Schedule name.
        name: String,
    },
    /// Fire a paused schedule again (from its next tick, or every missed tick with --backfill).
    Resume {
        /// Schedule name.
        name: String,
    },
    /// Run a schedule once now; prints the run's workflow ID.
    Trigger {
        /// Schedule name.
        name: String,
    },
    /// Enqueue every tick of a schedule in a past range (ticks already run are skipped).
    Backfill {
        /// Schedule name.
        name: String,
        /// Start of the range, exclusive (RFC 3339, or a date: from its start in UTC).
        #[arg(long, value_parser = parse_time_from)]
        from: DateTime<Utc>,
        /// End of the range, inclusive (RFC 3339, or a date: to its end in UTC); now when unset
        /// or later (the schedule fires the ticks to come at their time).
        #[arg(long, value_parser = parse_time_to)]
        to: Option<DateTime<Utc>>,
    },
    /// Remove a schedule; runs already enqueued stay.
    Rm {
        /// Schedule name.
        name: String,
    },
}

#[derive(Debug, Args)]
pub(super) struct AddArgs {
    /// Schedule name.
    name: String,
    /// Cron expression: sec min hour day month weekday (or the usual five fields), e.g.
    /// "*/10 * * * * *".
    expr: String,
    /// IANA time zone the expression is read in (e.g. Europe/Paris); UTC when unset.
    #[arg(long)]
    tz: Option<String>,
    /// Queue the runs go to; the internal queue when unset.
    #[arg(short = 'q', long)]
    queue: Option<String>,
    /// After downtime, enqueue every missed tick (not only the latest).
    #[arg(long)]
    backfill: bool,
    /// Run this registered workflow (inputs: scheduled_at, context) instead of a command.
    #[arg(long, conflicts_with = "argv")]
    workflow: Option<String>,
    /// JSON context for --workflow.
    #[arg(long, requires = "workflow")]
    context: Option<String>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, value_name = "CMD")]
    argv: Vec<String>,
}

pub(super) async fn run(conn: &ConnArgs, format: Format, command: CronCommand) -> Result<ExitCode> {
    let pool = super::pool(conn).await?;
    let mut c = pool.acquire().await?;
    match command {
        CronCommand::Add(a) => {
            if a.context.is_some() && a.workflow.is_none() {
                bail!("--context goes with --workflow: a command's schedule has no context");
            }
            if let Some(ctx) = &a.context {
                if let Err(e) = serde_json::from_str::<serde_json::Value>(ctx) {
                    bail!("--context must be JSON: {e}");
                }
            }
            let (workflow, context) = match (&a.workflow, a.argv.is_empty()) {
                (Some(_), false) => bail!("give either --workflow NAME or a command, not both"),
                (Some(w), true) => (w.clone(), a.context.clone()),
                (None, false) => {
                    let spec = CommandSpec {
                        argv: a.argv.clone(),
                        ..CommandSpec::default()
                    };
                    spec.validate()?;
                    (
                        SCHEDULED_COMMAND.to_owned(),
                        Some(serde_json::to_string(&spec)?),
                    )
                }
                (None, true) => bail!("give a command after `--`, or --workflow NAME"),
            };
            if let Some(q) = &a.queue {
                dbos_scheduler::queues::get(&mut c, q).await?;
            }
            let s = Schedule {
                schedule_name: a.name.clone(),
                workflow_name: workflow,
                schedule: a.expr.clone(),
                status: "ACTIVE".into(),
                context,
                last_fired_at: None,
                automatic_backfill: a.backfill,
                cron_timezone: a.tz.clone(),
                queue_name: a.queue.clone(),
            };
            cron::add(&mut c, &s).await?;
            render::print_message(&serde_json::to_value(&s)?, format)?;
        }
        CronCommand::List => {
            let rows: Vec<serde_json::Value> = cron::list(&mut c)
                .await?
                .iter()
                .map(serde_json::to_value)
                .collect::<Result<_, _>>()?;
            render::print_json_rows(
                &rows,
                &[
                    "schedule_name",
                    "schedule",
                    "status",
                    "workflow_name",
                    "cron_timezone",
                    "queue_name",
                    "last_fired_at",
                ],
                format,
            )?;
        }
        CronCommand::Pause { name } => {
            cron::set_paused(&mut c, &name, true).await?;
            render::print_message(&json!({"schedule": name, "status": "PAUSED"}), format)?;
        }
        CronCommand::Resume { name } => {
            cron::set_paused(&mut c, &name, false).await?;
            render::print_message(&json!({"schedule": name, "status": "ACTIVE"}), format)?;
        }
        CronCommand::Trigger { name } => {
            let id = cron::trigger(&mut c, &name).await?;
            println!("{id}");
        }
        CronCommand::Backfill { name, from, to } => {
            if to.is_some_and(|to| to <= from) {
                bail!("--to must be after --from");
            }
            let to = to.unwrap_or_else(Utc::now);
            let n = cron::backfill(&mut c, &name, from, to).await?;
            render::print_message(&json!({"schedule": name, "enqueued": n}), format)?;
        }
        CronCommand::Rm { name } => {
            cron::remove(&mut c, &name).await?;
            render::print_message(&json!({"schedule": name, "removed": true}), format)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
