//! The home of the DBOS system database (schema `dbos`): its migration, the workflow [`Status`]
//! and every statement that writes `workflow_status`, `operation_outputs`, `workflow_input`,
//! `workflow_output`, `queues` and `workflow_schedules`, as typed functions over a connection,
//! a transaction or a pool. Every other crate calls these functions; no other crate holds a
//! statement that writes these tables. (The messaging tables — notifications, events, streams —
//! belong to `dbos-msg`.)
//!
//! Times in SQL come from the database clock through `kernel.now_ms()`.
//!
//! ```no_run
//! use dbos_store::{workflows, Status};
//!
//! # async fn demo(pool: &sqlx::PgPool) -> dbos_store::Result<()> {
//! let inputs = r#"{"positionalArgs":[],"namedArgs":{}}"#;
//! let e = workflows::Enqueue::new("report-2026-12", "report", "default", inputs);
//! let created = workflows::enqueue(pool, &e).await?;
//! assert!(created.created);
//! assert_eq!(workflows::status(pool, "report-2026-12").await?, Status::Enqueued);
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs, unreachable_pub)]

pub mod batch;
pub mod claim;
mod error;
pub mod inspect;
pub mod limits;
pub mod operations;
pub mod prov;
pub mod queues;
pub mod schedules;
mod status;
pub mod workflows;

pub use error::{Error, Result};
pub use status::{Status, UnknownStatus};

use dbos_kernel::{Migration, ServiceMigrations};

/// Channel an enqueue (or a resumed queue, or work given back by recovery) notifies, with the
/// queue's name as payload, so idle nodes claim at once.
pub const ENQUEUE_CHANNEL: &str = "dbos_kernel_enqueue";
/// Channel a cancel notifies, with the workflow's ID as payload, so its waits end at once.
pub const CANCEL_CHANNEL: &str = "dbos_workflow_cancel";
/// Channel the outcome of a workflow that came through a queue notifies, with the workflow's ID
/// as payload, so waiters on other nodes (and this node's, before it claimed the workflow) learn
/// it without polling. Workflows started directly are awaited where they run.
pub const OUTCOME_CHANNEL: &str = "dbos_workflow_outcome";
/// The queue that hosts resumed, forked, recovered and scheduled workflows (DBOS's internal
/// queue).
pub const INTERNAL_QUEUE: &str = "_dbos_internal_queue";

/// The DBOS system database (schema `dbos`, DBOS migration version 125), and provenance
/// (schema `prov`, see [`prov`]).
pub const MIGRATIONS: ServiceMigrations = ServiceMigrations {
    service: "dbos",
    migrations: &[
        Migration {
            version: 1,
            name: "DBOS system database v125",
            sql: include_str!("../migrations/dbos_0001_system_database.sql"),
            earlier: &[],
        },
        Migration {
            version: 2,
            name: "provenance (schema prov)",
            sql: include_str!("../migrations/dbos_0002_provenance.sql"),
            earlier: &[],
        },
        Migration {
            version: 3,
            name: "provenance capture check planned once per session",
            sql: include_str!("../migrations/dbos_0003_capture_plan_cached.sql"),
            earlier: &[],
        },
    ],
};
