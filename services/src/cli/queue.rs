//! `dbos queue ...`: create, change, list, pause, resume and remove queues.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};
use dbos_scheduler::queues::{self, Queue};
use serde_json::json;

use super::render::{self, Format};
use super::{parse_duration, ConnArgs};

#[derive(Debug, Subcommand)]
pub(super) enum QueueCommand {
    /// Create a queue.
    Create(LimitArgs),
    /// Change a queue's limits (flags given replace the current ones).
    Update {
        #[command(flatten)]
        limits: LimitArgs,
        /// Remove a limit (repeatable).
        #[arg(long, value_enum)]
        clear: Vec<Setting>,
    },
    /// List queues with their limits, depth and running work.
    List,
    /// Stop claiming from a queue; running work goes on.
    Pause {
        /// Queue name.
        name: String,
    },
    /// Claim from a paused queue again.
    Resume {
        /// Queue name.
        name: String,
    },
    /// Remove a queue's settings; work still on it runs without limits.
    Rm {
        /// Queue name.
        name: String,
    },
}

/// Columns of `dbos queue list`.
const LIST_COLUMNS: &[&str] = &[
    "queue",
    "paused",
    "concurrency",
    "worker_concurrency",
    "rate_limit_max",
    "rate_limit_period_sec",
    "partition_concurrency",
    "depth",
    "running",
    "delayed",
];

#[derive(Debug, Args)]
pub(super) struct LimitArgs {
    /// Queue name.
    name: String,
    /// Workflows of the queue running at once across all nodes.
    #[arg(long)]
    concurrency: Option<i32>,
    /// Workflows of the queue running at once on one node.
    #[arg(long)]
    worker_concurrency: Option<i32>,
    /// Workflows started per --rate-limit-period at most.
    #[arg(long, requires = "rate_limit_period")]
    rate_limit: Option<i32>,
    /// Period of --rate-limit (e.g. 1s, 1m).
    #[arg(long, value_parser = parse_duration, requires = "rate_limit")]
    rate_limit_period: Option<Duration>,
    /// Workflows of one partition running at once across all nodes (makes the queue
    /// partitioned).
    #[arg(long)]
    partition_concurrency: Option<i32>,
    /// Workflows of one partition running at once on one node.
    #[arg(long)]
    partition_worker_concurrency: Option<i32>,
    /// Workflows of one partition started per --partition-rate-limit-period at most.
    #[arg(long, requires = "partition_rate_limit_period")]
    partition_rate_limit: Option<i32>,
    /// Period of --partition-rate-limit.
    #[arg(long, value_parser = parse_duration, requires = "partition_rate_limit")]
    partition_rate_limit_period: Option<Duration>,
    /// Only nodes with this label KEY=VALUE claim from the queue (repeatable; replaces the
    /// queue's required labels).
    #[arg(long = "require-label", value_name = "KEY=VALUE", value_parser = super::parse_label)]
    require_labels: Vec<(String, String)>,
    /// How nodes are chosen: fifo (any eligible node), least-loaded, or locality (with
    /// --locality-label).
    #[arg(long, value_enum)]
    policy: Option<PolicyArg>,
    /// The label whose value tasks prefer (`task submit --prefer KEY=VALUE`) under the
    /// locality policy.
    #[arg(long)]
    locality_label: Option<String>,
}

/// `--policy` values.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(super) enum PolicyArg {
    Fifo,
    LeastLoaded,
    Locality,
}

/// The placement flags, checked: the labels and the policy to write, or `None` when no
/// placement flag was given.
type Placement = (std::collections::BTreeMap<String, String>, queues::Policy);

impl LimitArgs {
    /// Checks the placement flags before anything is written.
    fn placement(&self) -> Result<Option<Placement>> {
        if self.locality_label.is_some() && !matches!(self.policy, Some(PolicyArg::Locality)) {
            anyhow::bail!("--locality-label goes with --policy locality");
        }
        if self.require_labels.is_empty() && self.policy.is_none() {
            return Ok(None);
        }
        let labels = self.require_labels.iter().cloned().collect();
        let policy = match self.policy {
            Some(PolicyArg::LeastLoaded) => queues::Policy::LeastLoaded,
            Some(PolicyArg::Locality) => match &self.locality_label {
                Some(l) => queues::Policy::Locality(l.clone()),
                None => anyhow::bail!("--policy locality needs --locality-label LABEL"),
            },
            _ => queues::Policy::Fifo,
        };
        Ok(Some((labels, policy)))
    }
}

/// Writes a queue's limits (`write`) and its placement in one transaction: a refusal of either
/// leaves the queue as it was.
async fn write_queue(
    c: &mut sqlx::PgConnection,
    q: &Queue,
    placement: Option<Placement>,
    create: bool,
) -> Result<()> {
    use sqlx::Connection;
    let mut tx = c.begin().await?;
    if create {
        queues::create(&mut tx, q).await?;
    } else {
        queues::update(&mut tx, q).await?;
    }
    if let Some((labels, policy)) = placement {
        queues::set_placement(&mut tx, &q.name, &labels, &policy).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// A limit `queue update --clear` removes.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(super) enum Setting {
    Concurrency,
    WorkerConcurrency,
    RateLimit,
    PartitionConcurrency,
    PartitionWorkerConcurrency,
    PartitionRateLimit,
}

impl LimitArgs {
    /// `base` with the limits given here.
    fn apply(&self, mut q: Queue) -> Queue {
        let secs = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
        q.name = self.name.clone();
        q.concurrency = self.concurrency.or(q.concurrency);
        q.worker_concurrency = self.worker_concurrency.or(q.worker_concurrency);
        if self.rate_limit.is_some() {
            q.rate_limit_max = self.rate_limit;
            q.rate_limit_period_sec = secs(self.rate_limit_period);
        }
        q.partition_concurrency = self.partition_concurrency.or(q.partition_concurrency);
        q.partition_worker_concurrency = self
            .partition_worker_concurrency
            .or(q.partition_worker_concurrency);
        if self.partition_rate_limit.is_some() {
            q.partition_rate_limit_max = self.partition_rate_limit;
            q.partition_rate_limit_period_sec = secs(self.partition_rate_limit_period);
        }
        q
    }
}

pub(super) async fn run(
    conn: &ConnArgs,
    format: Format,
    command: QueueCommand,
) -> Result<ExitCode> {
    let pool = super::pool(conn).await?;
    let mut c = pool.acquire().await?;
    match command {
        QueueCommand::Create(args) => {
            let placement = args.placement()?;
            let q = args.apply(Queue::named(&args.name));
            write_queue(&mut c, &q, placement, true).await?;
            render::print_message(&serde_json::to_value(&q)?, format)?;
        }
        QueueCommand::Update { limits, clear } => {
            let placement = limits.placement()?;
            let mut q = limits.apply(queues::get(&mut c, &limits.name).await?);
            for l in clear {
                match l {
                    Setting::Concurrency => q.concurrency = None,
                    Setting::WorkerConcurrency => q.worker_concurrency = None,
                    Setting::RateLimit => {
                        (q.rate_limit_max, q.rate_limit_period_sec) = (None, None)
                    }
                    Setting::PartitionConcurrency => q.partition_concurrency = None,
                    Setting::PartitionWorkerConcurrency => q.partition_worker_concurrency = None,
                    Setting::PartitionRateLimit => {
                        (
                            q.partition_rate_limit_max,
                            q.partition_rate_limit_period_sec,
                        ) = (None, None)
                    }
                }
            }
            write_queue(&mut c, &q, placement, false).await?;
            render::print_message(&serde_json::to_value(&q)?, format)?;
        }
        QueueCommand::List => {
            let rows = super::json_rows(&queues::overview(&mut c).await?)?;
            render::print_json_rows(&rows, LIST_COLUMNS, format)?;
        }
        QueueCommand::Pause { name } => {
            let changed = queues::set_paused(&mut c, &name, true).await?;
            render::print_message(
                &json!({"queue": name, "paused": true, "changed": changed}),
                format,
            )?;
        }
        QueueCommand::Resume { name } => {
            let changed = queues::set_paused(&mut c, &name, false).await?;
            render::print_message(
                &json!({"queue": name, "paused": false, "changed": changed}),
                format,
            )?;
        }
        QueueCommand::Rm { name } => {
            queues::delete(&mut c, &name).await?;
            render::print_message(&json!({"queue": name, "removed": true}), format)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
