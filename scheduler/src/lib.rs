//! The scheduler service: queues, batched dispatch, placement, recovery of dead nodes' work,
//! timers, cron and command tasks, all over `dbos.workflow_status` and schema `sched`.
//!
//! The crate is empty so far; the kernel's node liveness (`dbos_kernel::node::dead_nodes`) is
//! the seam it will build on.
