//! Durable workflows with the semantics of DBOS Transact, on the DBOS system database.
//!
//! A workflow is a deterministic async function; each step's result is checkpointed in
//! `dbos.operation_outputs` under `(workflow_uuid, function_id)`, `function_id` counting from 1
//! in call order. A recovered workflow runs again from the top and every completed step returns
//! its recorded output instead of running again.
//!
//! ```no_run
//! use dbos_services::workflow::{Registry, Service, Options, StartOptions, Context, Error};
//!
//! async fn greet(ctx: Context, (name,): (String,)) -> Result<String, Error> {
//!     let greeting = ctx.step("compose", || async { Ok(format!("hello, {name}")) }).await?;
//!     ctx.sleep(std::time::Duration::from_millis(10)).await?;
//!     Ok(greeting)
//! }
//!
//! # async fn demo(kernel: &dbos_kernel::Kernel) -> Result<(), Error> {
//! let mut registry = Registry::new();
//! registry.register("greet", greet);
//! let wf = Service::launch(kernel, registry, Options::default()).await?;
//! let out: String = wf.run("greet", ("world".to_owned(),), StartOptions::default()).await?;
//! assert_eq!(out, "hello, world");
//! # Ok(())
//! # }
//! ```
//!
//! Cost of a fresh workflow: 1 round trip to start, 1 per step checkpoint, 1 to finish; the
//! checkpoint and finish writes of concurrent workflows share statements and commits.

mod announce;
pub mod codec;
mod committer;
mod ctx;
mod error;
pub mod manage;
mod messaging;
mod replay;
mod service;

#[doc(hidden)]
pub use committer::bench as committer_bench;
pub use ctx::{Context, RetryPolicy, ShouldRetry};
pub use dbos_store::Status;
pub use error::{Error, PortableError};
pub use messaging::{TopicMessage, WfStream};
pub use replay::{Divergence, Replay, Replayer, Verdict, REPLAY_TIMEOUT_DEFAULT};
pub use service::{
    Options, Registry, Service, StartOptions, WorkflowHandle, ENQUEUE_CHANNEL, INTERNAL_QUEUE,
    OUTCOME_CHANNEL,
};
