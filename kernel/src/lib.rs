//! The kernel of a database-oriented operating system.
//!
//! Every piece of operating-system state lives in Postgres tables, and the only capability the
//! kernel hands a task is a transactional database client. The kernel boots a node: it starts
//! an embedded Postgres when no database is given, applies every service's migrations, registers
//! the node and keeps it heartbeating, runs tasks bounded by the node's slots, fans database
//! notifications out to waiters, and shuts down cleanly.
//!
//! ```no_run
//! use dbos_kernel::{Config, Kernel};
//!
//! # async fn demo() -> dbos_kernel::Result<()> {
//! let kernel = Kernel::boot(Config::from_env()?, &[]).await?;
//! let task = kernel
//!     .runtime()
//!     .spawn("hello", |ctx| async move {
//!         let mut tx = ctx.tx().await?;
//!         let n: i64 = sqlx::query_scalar("SELECT count(*) FROM os.nodes")
//!             .fetch_one(&mut *tx)
//!             .await?;
//!         tx.commit().await?;
//!         Ok::<_, dbos_kernel::Error>(n)
//!     })
//!     .await?;
//! println!("{} nodes", task.join().await.expect("the task does not panic")?);
//! kernel.shutdown().await?;
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs, unreachable_pub)]

pub mod clock;
pub mod config;
pub mod db;
pub mod embedded;
mod error;
pub mod id;
mod kernel;
pub mod lease;
pub mod loops;
pub mod migrate;
pub mod node;
pub mod notify;
pub mod prov;
pub mod roles;
pub mod sqlstate;
pub mod task;
#[cfg(feature = "testing")]
pub mod testing;

pub use clock::{Clock, SharedClock};
pub use config::Config;
pub use error::{redact_url, shown, Error, Result, QUOTED_CHARS_MAX};
pub use kernel::{Kernel, ShutdownReport, ShutdownSignals, STOP_STEP_MS_MAX, VERSION};
pub use lease::Lease;
pub use loops::{Loops, Phase};
pub use migrate::{Migration, ServiceMigrations};
pub use notify::{Notifier, Subscription, Wake};
pub use task::{Reserved, Runtime, Slot, TaskCtx, TaskHandle};
pub use tokio_util::sync::CancellationToken;
