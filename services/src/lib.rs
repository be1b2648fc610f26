//! The services of the DBOS operating system and the `dbos` command-line interface.
//!
//! This crate hosts the services on a booted [`dbos_kernel::Kernel`] and implements the `dbos`
//! binary. [`migrations`] lists the SQL migrations of every service the host runs, in the order
//! the kernel applies them.
#![warn(missing_docs, unreachable_pub)]

pub mod builtin;
pub mod cli;
pub mod workflow;

use dbos_kernel::ServiceMigrations;

/// Migrations of every service hosted here (the kernel's own are applied first by the kernel).
pub fn migrations() -> Vec<ServiceMigrations> {
    vec![
        workflow::MIGRATIONS,
        dbos_msg::MIGRATIONS,
        dbos_scheduler::MIGRATIONS,
        dbos_fs::MIGRATIONS,
    ]
}
