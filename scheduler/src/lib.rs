//! The scheduler service: queues, batched dispatch, placement, recovery of dead nodes' work,
//! timers, cron and command tasks, all over `dbos.workflow_status` and schema `sched`.
//!
//! [`command`] runs the Linux commands of command tasks: in a process group of their own, with
//! output handed over in bounded chunks as it is produced, a timeout, and cancellation that
//! reaches every process of the group.
#![warn(missing_docs, unreachable_pub)]

pub mod command;
