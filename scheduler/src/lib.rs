//! The scheduler service: queues, batched dispatch, placement, recovery of dead nodes' work,
//! timers, cron and command tasks, all over `dbos.workflow_status` and schema `sched`.
//!
//! - [`queues`]: queue settings in `dbos.queues` (as DBOS keeps them), pauses in
//!   `sched.paused_queues`.
//! - [`dispatch`]: the dispatcher loop (claims within every queue's limits, one batch per
//!   round, handed to the workflow engine through [`Executor`]), the timer and recovery sweeps,
//!   and the cron loop, as `Options → start → Handle`.
//! - [`recovery`]: any live node re-enqueues the PENDING work of gone nodes, exactly once.
//! - [`cron`]: schedules on `dbos.workflow_schedules`, one run per tick across all nodes.
//! - [`command`] runs the Linux commands of command tasks: in a process group of their own,
//!   with output handed over in bounded chunks as it is produced, a timeout, and cancellation
//!   that reaches every process of the group.
//!
//! - [`tasks`]: command tasks as users submit, list and inspect them, and their typed outcome.
//! - `sched.workflow_retention`: how long ended workflows are kept; the workflow service's
//!   retention sweep applies it through [`dbos_store::workflows::gc`].
//!
//! The statements on schema `dbos` are [`dbos_store`]'s; this crate decides when and which.
#![warn(missing_docs, unreachable_pub)]

pub mod command;
pub mod cron;
pub mod dispatch;
mod error;
pub mod queues;
pub mod recovery;
pub mod tasks;

pub use dbos_store::claim::Claimed;
pub use dbos_store::{ENQUEUE_CHANNEL, INTERNAL_QUEUE};
pub use dispatch::{ExecuteError, Executor, Handle, Options};
pub use error::Error;

use dbos_kernel::{Migration, ServiceMigrations};

/// Schema `sched`, the `default` queue, and the views `os.queues` and `os.tasks`. Applied
/// after the DBOS schema.
pub const MIGRATIONS: ServiceMigrations = ServiceMigrations {
    service: "sched",
    migrations: &[
        Migration {
            version: 1,
            name: "queues and tasks",
            sql: include_str!("../migrations/sched_0001_queues_tasks.sql"),
            earlier: &[],
        },
        Migration {
            version: 2,
            name: "cancel notifications",
            sql: include_str!("../migrations/sched_0002_cancel_notify.sql"),
            earlier: &[],
        },
        Migration {
            version: 3,
            name: "lease after restart",
            sql: include_str!("../migrations/sched_0003_lease_after_restart.sql"),
            earlier: &[],
        },
        Migration {
            version: 4,
            name: "node address",
            sql: include_str!("../migrations/sched_0004_node_addr.sql"),
            earlier: &[],
        },
        Migration {
            version: 5,
            name: "a claim round in one round trip",
            sql: include_str!("../migrations/sched_0005_claim_in_one_round_trip.sql"),
            earlier: &[],
        },
        Migration {
            version: 6,
            name: "the claim's lock step probes each limited queue",
            sql: include_str!("../migrations/sched_0006_claim_lock_probe.sql"),
            earlier: &[],
        },
        Migration {
            version: 7,
            name: "workflow retention",
            sql: include_str!("../migrations/sched_0007_workflow_retention.sql"),
            earlier: &[],
        },
        Migration {
            version: 8,
            name: "the pause lock",
            sql: include_str!("../migrations/sched_0008_pause_lock.sql"),
            earlier: &[],
        },
        Migration {
            version: 9,
            name: "queue settings under the pause lock",
            sql: include_str!("../migrations/sched_0009_settings_lock.sql"),
            earlier: &[],
        },
        Migration {
            version: 10,
            name: "task payloads in the status row",
            sql: include_str!("../migrations/sched_0010_payloads_in_status.sql"),
            earlier: &[],
        },
        Migration {
            version: 11,
            name: "a deleted running workflow stops at once",
            sql: include_str!("../migrations/sched_0011_delete_notify.sql"),
            earlier: &[],
        },
        Migration {
            version: 12,
            name: "a running workflow resumed by any client stops at once",
            sql: include_str!("../migrations/sched_0012_resume_notify.sql"),
            earlier: &[],
        },
        Migration {
            version: 13,
            name: "a claim round says when to claim again soon, and spreads least-loaded queues",
            sql: include_str!("../migrations/sched_0013_claim_again.sql"),
            earlier: &[],
        },
        Migration {
            version: 14,
            name: "os.tasks says a task waits on a paused queue or a pinned version",
            sql: include_str!("../migrations/sched_0014_tasks_waiting_for.sql"),
            earlier: &[],
        },
    ],
};
