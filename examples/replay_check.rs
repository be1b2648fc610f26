//! A program that embeds the `dbos` command line with a workflow of its own, so the same binary
//! runs the workflow (`replay_check boot`) and checks a build's code against the recorded
//! histories before a deploy (`replay_check wf replay --all`).
//!
//! `ORDER_CODE` picks a changed version of the code — `renamed` (the first step renamed),
//! `inserted` (a step added before shipping), `branch` (a branch on a recorded value flipped) —
//! to show how a replay reports each change.

use dbos_services::prelude::*;

async fn order(ctx: workflow::Context, (qty,): (i64,)) -> Result<i64, workflow::Error> {
    let code = std::env::var("ORDER_CODE").unwrap_or_default();
    let first = if code == "renamed" {
        "reserve_stock"
    } else {
        "reserve"
    };
    let reserved: i64 = ctx.step(first, || async move { Ok(qty * 10) }).await?;
    let threshold = if code == "branch" { 1_000 } else { 10 };
    let _size: String = if reserved > threshold {
        ctx.step("big", || async { Ok("big".to_owned()) }).await?
    } else {
        ctx.step("small", || async { Ok("small".to_owned()) })
            .await?
    };
    if code == "inserted" {
        ctx.step("audit", || async { Ok(()) }).await?;
    }
    ctx.step("ship", || async { Ok(()) }).await?;
    Ok(reserved)
}

fn main() -> std::process::ExitCode {
    dbos_services::cli::main_with(|r| {
        r.register("order", order);
    })
}
