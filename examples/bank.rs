//! A program that embeds the services: boots a node (on an embedded Postgres unless
//! `DATABASE_URL` is set; `DBOS_DATA_DIR` says where), runs a durable transfer, and shuts down.
//! Run it with `cargo run --example bank`.

use std::time::Duration;

use dbos_services::prelude::*;
use dbos_services::sqlx;

/// Debits `cents` plus a fee from `from` in a transaction that commits with its checkpoint,
/// sleeps durably, and notifies `to` through a child workflow.
async fn transfer(
    ctx: workflow::Context,
    (from, to, cents): (String, String, i64),
) -> Result<String, workflow::Error> {
    let fee: i64 = ctx.step("quote", || async { Ok(25) }).await?;
    ctx.transaction("debit", move |c: &mut PgConnection| {
        let from = from.clone();
        Box::pin(async move {
            sqlx::query("UPDATE accounts SET cents = cents - $1 WHERE id = $2")
                .bind(cents + fee)
                .bind(&from)
                .execute(&mut *c)
                .await?;
            Ok(())
        })
    })
    .await?;
    ctx.sleep(Duration::from_millis(100)).await?; // durable: a restart sleeps only what is left
    let receipt: String = ctx.run_child("notify", (to,)).await?; // child ID "<parent>-4"
    Ok(receipt)
}

async fn notify(ctx: workflow::Context, (to,): (String,)) -> Result<String, workflow::Error> {
    ctx.step("send", || async { Ok(format!("notified {to}")) })
        .await
}

/// Boots a node with `config`, runs one transfer and returns its receipt.
pub async fn run(config: Config) -> Result<String, Box<dyn std::error::Error>> {
    let kernel = Kernel::boot(config, &dbos_services::migrations()).await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS accounts (id text PRIMARY KEY, cents bigint NOT NULL)")
        .execute(kernel.pool())
        .await?;
    sqlx::query("INSERT INTO accounts VALUES ('alice', 1000), ('bob', 0) ON CONFLICT DO NOTHING")
        .execute(kernel.pool())
        .await?;
    let mut registry = Registry::new();
    registry.register("transfer", transfer);
    registry.register("notify", notify);
    let wf = Service::launch(&kernel, registry, Options::default()).await?;
    let args = ("alice".to_owned(), "bob".to_owned(), 100);
    let handle: WorkflowHandle<String> =
        wf.start("transfer", args, StartOptions::default()).await?;
    let receipt = handle.result_within(Duration::from_secs(60)).await?;
    kernel.shutdown().await?;
    Ok(receipt)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let receipt = run(Config::from_env()?).await?;
    println!("{receipt}");
    Ok(())
}
