//! The scheduler service: queues, batched dispatch, placement, recovery of dead nodes' work,
//! timers, cron and command tasks, all over `dbos.workflow_status` and schema `sched`.
//!
//! [`command`] runs the Linux commands of command tasks: in a process group of their own, with
//! output handed over in bounded chunks as it is produced, a timeout, and cancellation that
//! reaches every process of the group.
#![warn(missing_docs, unreachable_pub)]

pub mod command;

use dbos_kernel::{Migration, ServiceMigrations};

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
