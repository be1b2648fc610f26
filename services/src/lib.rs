//! The services of the DBOS operating system and the `dbos` command-line interface.
//!
//! This crate hosts the services on a booted [`dbos_kernel::Kernel`] and implements the `dbos`
//! binary. [`migrations`] lists the SQL migrations of every service the host runs, in the order
//! the kernel applies them.
#![warn(missing_docs, unreachable_pub)]

pub mod builtin;
pub mod cli;
pub mod demo;
pub mod http;
pub mod metrics;
pub mod observe;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod workflow;

pub use dbos_fs as fs;
pub use dbos_kernel as kernel;
pub use dbos_msg as msg;
pub use dbos_scheduler as scheduler;
pub use dbos_store as store;
pub use sqlx;

/// What a program that embeds the services names most: the kernel to boot, the workflow
/// service with its context and options, and the database types its transactions use.
pub mod prelude {
    pub use crate::workflow::{
        self, Context, Options, Registry, RetryPolicy, Service, StartOptions, WorkflowHandle,
    };
    pub use dbos_kernel::{Config, Kernel};
    pub use sqlx::{PgConnection, PgPool};
}

use dbos_kernel::ServiceMigrations;

/// Migrations of every service hosted here (the kernel's own are applied first by the kernel),
/// then [`VIEWS`].
pub fn migrations() -> Vec<ServiceMigrations> {
    vec![
        dbos_store::MIGRATIONS,
        dbos_msg::MIGRATIONS,
        dbos_scheduler::MIGRATIONS,
        dbos_fs::MIGRATIONS,
        VIEWS,
    ]
}

/// Views in schema `os` over the tables of several services (applied after all of them).
pub const VIEWS: ServiceMigrations = ServiceMigrations {
    service: "views",
    migrations: &[
        dbos_kernel::Migration {
            version: 1,
            name: "file lineage",
            sql: include_str!("../migrations/views_0001_lineage.sql"),
            earlier: &[],
        },
        dbos_kernel::Migration {
            version: 2,
            name: "workflows and steps",
            sql: include_str!("../migrations/views_0002_workflows.sql"),
            earlier: &[],
        },
        dbos_kernel::Migration {
            version: 3,
            name: "lineage inputs in the status row",
            sql: include_str!("../migrations/views_0003_payloads_in_status.sql"),
            earlier: &[],
        },
    ],
};
