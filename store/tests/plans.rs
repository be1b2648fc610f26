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
    // Batches of several requests per part, and of one each (the parts' rows built without
    // `unnest`).
    for (one, name) in [(false, "w"), (true, "w1")] {
        let shape = batch::Shape::new(true, true, true, true, false, false).one_each(one);
        // One checkpoint and one outcome: the two lookups of owned PENDING rows.
        let plan = testing::prepared_plan(
            &mut c,
            name,
            batch::statement(shape),
            "",
            "('{a}', '{x}', '{1}', '{n}', '{o}', '{NULL}', '{NULL}', '{1}', '{1}',
              '{b}', '{y}', '{SUCCESS}', '{o}', '{NULL}',
              '{}', '{}', '{}', '{}', '{}', '{}', '{}',
              'node', 'v1', 'PENDING', '{NULL}')",
        )
        .await;
        assert!(
            !plan.contains("Seq Scan on workflow_status"),
            "the group commit (one each: {one}) reads workflow_status whole:\n{plan}"
        );
        assert_eq!(
            plan.matches("Index Scan using workflow_status_pkey")
                .count(),
            2,
            "each owned row is looked up by its key (one each: {one}):\n{plan}"
        );
    }
    drop(c);
    k.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn an_owned_workflow_is_found_by_key_while_few_are_pending() {
    use dbos_store::operations::{own_cte_if, OWNED, OWN_CTE};
    let db = testing::database().await;
    let k = Kernel::boot(db.config(), &[dbos_store::MIGRATIONS])
        .await
        .expect("boot");
    // Many workflows, one of them pending, as the statistics say: the partial index of pending
    // workflows looks like the cheapest way to one of them.
    sqlx::raw_sql(
        "INSERT INTO dbos.workflow_status (workflow_uuid, status, name, serialization)
         SELECT 'w' || i, 'SUCCESS', 'x', 'portable_json' FROM generate_series(1, 5000) i;
         INSERT INTO dbos.workflow_status (workflow_uuid, status, name, owner_xid, serialization)
         VALUES ('p', 'PENDING', 'x', 'me', 'portable_json');
         ANALYZE dbos.workflow_status",
    )
    .execute(k.pool())
    .await
    .expect("seed");
    let mut c = k.pool().acquire().await.expect("a node connection");
    let lookups = [
        format!("WITH {OWN_CTE} SELECT count(*) FROM own"),
        format!("WITH {} SELECT {OWNED}", own_cte_if("$3")),
    ];
    for (i, sql) in lookups.iter().enumerate() {
        let args = if sql.contains("$3") {
            "('p', 'me', true)"
        } else {
            "('p', 'me')"
        };
        let plan = testing::prepared_plan(&mut c, &format!("s{i}"), sql, "", args).await;
        assert!(
            plan.contains("Index Scan using workflow_status_pkey")
                && !plan.contains("idx_workflow_status_pending"),
            "the owned row is looked up by its key:\n{sql}\n{plan}"
        );
    }
    drop(c);
    k.shutdown().await.expect("shutdown");
}
