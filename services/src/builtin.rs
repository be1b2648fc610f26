//! Workflows every node runs.

use std::time::Duration;

use dbos_scheduler::command::{self, CommandResult, CommandSpec, Limits};
use dbos_scheduler::tasks::{COMMAND_ERROR, COMMAND_FAILED, INVALID_COMMAND, TASK_LOST};

use crate::workflow::{self, PortableError, Registry};

pub use crate::demo::DEMO;

/// Name of the echo workflow, for trying messaging from the command line or any client.
pub const ECHO: &str = "dbos.echo";

pub use dbos_scheduler::tasks::{COMMAND, SCHEDULED_COMMAND};

/// Registers the built-in workflows, with command tasks under the default [`Limits`] (on a node
/// running as root they run as [`command::DEFAULT_TASK_USER`]).
pub fn register(r: &mut Registry) {
    register_with(r, Limits::default());
}

/// Registers the built-in workflows, with command tasks under `limits`.
pub fn register_with(r: &mut Registry, limits: Limits) {
    r.register(DEMO, crate::demo::workflow);
    r.register(ECHO, echo);
    let l = limits.clone();
    r.register(
        COMMAND,
        move |ctx: workflow::Context, (task,): (CommandSpec,)| run_command(ctx, task, l.clone()),
    );
    r.register(
        SCHEDULED_COMMAND,
        move |ctx: workflow::Context, (_at, task): (String, CommandSpec)| {
            run_command(ctx, task, limits.clone())
        },
    );
}

/// Runs a command task. At least once: a task whose node dies mid-run runs again on the node
/// that recovers it (its output streams then hold both runs' output), unless `no_retry`.
///
/// Steps: `start` (marks that a run began), `run` (the command; its result recorded), then
/// the `stdout` and `stderr` streams are closed. Exit code 0 succeeds with the
/// [`CommandResult`]; anything else fails with [`COMMAND_FAILED`], the result in `data`.
async fn run_command(
    ctx: workflow::Context,
    task: CommandSpec,
    limits: Limits,
) -> Result<CommandResult, workflow::Error> {
    if let Err(e) = task.validate() {
        return Err(workflow::Error::failed(INVALID_COMMAND, e.to_string()));
    }
    let fresh = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let f = fresh.clone();
    ctx.step("start", move || {
        f.store(true, std::sync::atomic::Ordering::SeqCst);
        async { Ok(()) }
    })
    .await?;
    let lost_before = !fresh.load(std::sync::atomic::Ordering::SeqCst);
    let run = ctx
        .step("run", || {
            let (ctx, spec, limits) = (ctx.clone(), task.clone(), limits.clone());
            async move {
                if lost_before && spec.no_retry {
                    return Err(workflow::Error::failed(
                        TASK_LOST,
                        "the node running this command died before it finished; not run again (no_retry)",
                    ));
                }
                let sink = |which: command::Output, text: String| {
                    let ctx = ctx.clone();
                    async move { store_output(&ctx, which, &text).await }
                };
                let span = tracing::info_span!("command", argv = %spec.argv.join(" "));
                let term = ctx.lease_term();
                let lease = ctx.lease();
                let run = command::run(&spec, &limits, sink, ctx.cancelled(), lease.as_ref());
                let result = tracing::Instrument::instrument(run, span)
                    .await
                    .map_err(|e| workflow::Error::failed(COMMAND_ERROR, e.to_string()))?;
                if result.stalled
                    || result.cancelled && (term.is_cancelled() || !ctx.holds_lease())
                {
                    // Maybe stopped because this node gave its lease up (and perhaps renewed
                    // it since), not by a cancel, or killed by its watcher while this node
                    // stalled: nothing is recorded, and the task is released to run again. A
                    // cancel, if there was one, ends it then.
                    return Err(workflow::Error::ShuttingDown);
                }
                Ok(result)
            }
        })
        .await;
    // Released: the streams stay open for the run that comes next.
    if let Err(workflow::Error::ShuttingDown) = run {
        return Err(workflow::Error::ShuttingDown);
    }
    for key in ["stdout", "stderr"] {
        ctx.close_stream(key).await?;
    }
    let result = run?;
    if result.cancelled {
        return Err(workflow::Error::Cancelled(ctx.workflow_id().to_owned()));
    }
    if result.succeeded() {
        return Ok(result);
    }
    Err(workflow::Error::Failed(Box::new(PortableError {
        name: COMMAND_FAILED.to_owned(),
        message: result.describe(),
        code: result.exit_code.map(serde_json::Value::from),
        data: Some(serde_json::to_value(&result)?),
    })))
}

/// Longest a chunk of a command's output is tried again while the database fails, in ms.
const OUTPUT_RETRY_MS_MAX: u64 = 60_000;

/// Appends a chunk of a command's output to its stream. A write lost with its connection (the
/// server restarting, a backend killed) is tried again while this node holds its lease, up to
/// [`OUTPUT_RETRY_MS_MAX`]; meanwhile the pipe fills and the command waits to write, as it would
/// on a slow terminal. A write whose commit took place though its answer was lost stands
/// twice in the stream: output is kept at least once, never dropped while it may be stored.
async fn store_output(ctx: &workflow::Context, which: command::Output, text: &str) {
    let stored = dbos_kernel::db::retry_transient(
        "storing command output",
        OUTPUT_RETRY_MS_MAX,
        |e: &workflow::Error| e.may_pass() && ctx.holds_lease(),
        || ctx.write_stream_from_step(which.key(), text),
    )
    .await;
    if let Err(e) = stored {
        tracing::warn!(error = %e, stream = which.key(), "command output not stored");
    }
}

/// Echoes messages: announces itself with event `ready`, then takes each message of mailbox
/// topic `in` (waiting up to `idle_s` seconds for each), appends it to stream `out` and sets
/// event `last` to it; a `null` message or the idle timeout ends it, closing the stream.
/// Returns how many messages it echoed.
async fn echo(ctx: workflow::Context, (idle_s,): (u64,)) -> Result<u64, workflow::Error> {
    ctx.set_event("ready", &true).await?;
    let mut n = 0;
    while let Some(m) = ctx
        .recv::<serde_json::Value>(Some("in"), Duration::from_secs(idle_s))
        .await?
    {
        if m.is_null() {
            break;
        }
        ctx.write_stream("out", &m).await?;
        ctx.set_event("last", &m).await?;
        n += 1;
    }
    ctx.close_stream("out").await?;
    Ok(n)
}
