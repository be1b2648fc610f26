//! The scheduler service: queues, batched dispatch, placement, recovery of dead nodes' work,
//! timers, cron and command tasks, all over `dbos.workflow_status` and schema `sched`.
//!
//! - [`queues`]: queue settings in `dbos.queues` (as DBOS keeps them), pauses in
//!   `sched.paused_queues`.
//! - [`claim`]: one batched claim per round within every queue's limits, correct across any
//!   number of nodes.
//! - [`recovery`]: any live node re-enqueues the PENDING work of gone nodes, exactly once.
//! - [`cron`]: schedules on `dbos.workflow_schedules`, one run per tick across all nodes.
//! - [`command`] runs the Linux commands of command tasks: in a process group of their own,
//!   with output handed over in bounded chunks as it is produced, a timeout, and cancellation
//!   that reaches every process of the group.
//!
//! The workflow service (in `dbos-services`) hosts the dispatch loop and calls [`claim::claim`].
#![warn(missing_docs, unreachable_pub)]

pub mod claim;
pub mod command;
pub mod cron;
mod error;
pub mod queues;
pub mod recovery;

pub use error::Error;

use dbos_kernel::{Migration, ServiceMigrations};

/// Channel an enqueue (or a resumed queue) notifies so idle nodes claim at once.
pub const ENQUEUE_CHANNEL: &str = "dbos_kernel_enqueue";

/// Schema `sched`, the `default` queue, and the views `os.queues` and `os.tasks`. Applied
/// after the DBOS schema.
pub const MIGRATIONS: ServiceMigrations = ServiceMigrations {
    service: "sched",
    migrations: &[Migration {
        version: 1,
        name: "queues and tasks",
        sql: include_str!("../migrations/sched_0001_queues_tasks.sql"),
    }],
};
