//! The plans a node's connections make for the hot statements, on a database booted a moment
//! ago: each plan is made once per connection and kept, so one made while the tables are empty
//! must still look rows up by key once they hold millions.

use dbos_kernel::{testing, Kernel};
use dbos_store::batch;

#[tokio::test]
async fn the_group_commit_looks_workflows_up_by_key_even_on_empty_tables() {
    let db = testing::database().await;
    let k = Kernel::boot(db.config(), &[dbos_store::MIGRATIONS])
        .await
        .expect("boot");
    let empty: i64 = sqlx::query_scalar("SELECT count(*) FROM dbos.workflow_status")
        .fetch_one(k.pool())
        .await
        .expect("count");
    assert_eq!(empty, 0, "the plan is checked on an empty table");
    let mut c = k.pool().acquire().await.expect("a node connection");
    let shape = batch::Shape::new(true, true, true, true, false, false);
    sqlx::raw_sql(&format!("PREPARE w AS {}", batch::statement(shape)))
        .execute(&mut *c)
        .await
        .expect("prepare");
    // One checkpoint and one outcome: the two lookups of owned PENDING rows.
    let plan: Vec<String> = sqlx::query_scalar(
        "EXPLAIN EXECUTE w('{a}', '{x}', '{1}', '{n}', '{o}', '{NULL}', '{NULL}', '{1}', '{1}',
                           '{b}', '{y}', '{SUCCESS}', '{o}', '{NULL}',
                           '{}', '{}', '{}', '{}', '{}', '{}', '{}',
                           'node', 'v1', 'PENDING', '{NULL}')",
    )
    .fetch_all(&mut *c)
    .await
    .expect("explain");
    let plan = plan.join("\n");
    assert!(
        !plan.contains("Seq Scan on workflow_status"),
        "the group commit reads workflow_status whole:\n{plan}"
    );
    assert_eq!(
        plan.matches("Index Scan using workflow_status_pkey")
            .count(),
        2,
        "each owned row is looked up by its key:\n{plan}"
    );
    drop(c);
    k.shutdown().await.expect("shutdown");
}
