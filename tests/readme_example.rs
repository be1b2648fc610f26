//! The README's embedding example is `examples/bank.rs`, word for word, and it runs as written:
//! boot, a durable transfer with a transaction step, a durable sleep and a child, shutdown.

#[allow(dead_code)]
#[path = "../examples/bank.rs"]
mod bank;

use dbos_kernel::testing;

#[test]
fn the_readme_shows_the_example_as_it_is() {
    let readme = include_str!("../README.md");
    let example = include_str!("../examples/bank.rs");
    assert!(
        readme.contains(example.trim()),
        "README.md must contain examples/bank.rs exactly (copy the file into its rust block)"
    );
}

#[tokio::test]
async fn the_example_runs_and_debits_once() {
    let db = testing::database().await;
    let receipt = bank::run(db.config()).await.expect("the example runs");
    assert_eq!(receipt, "notified bob");
    let pool = sqlx::PgPool::connect(&db.url).await.expect("connect");
    let cents: i64 = sqlx::query_scalar("SELECT cents FROM accounts WHERE id = 'alice'")
        .fetch_one(&pool)
        .await
        .expect("balance");
    assert_eq!(cents, 1000 - 125, "the debit committed once, with its fee");
    let steps: Vec<String> = sqlx::query_scalar(
        "SELECT function_name FROM dbos.operation_outputs o
         JOIN dbos.workflow_status s USING (workflow_uuid)
         WHERE s.name = 'transfer' ORDER BY function_id",
    )
    .fetch_all(&pool)
    .await
    .expect("steps");
    assert_eq!(
        steps,
        ["quote", "debit", "DBOS.sleep", "notify", "DBOS.getResult"]
    );
}
