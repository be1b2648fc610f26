//! The plan of an enqueue that its node may claim: the checks that decide the claim run once
//! per enqueue. The last of them, whether work waits before it, is the one the plan shows; the
//! pause, the placement rule and the limits are read before it, in the same CASE, by function
//! `sched.enqueue_may_claim`.

use dbos_kernel::testing;
use dbos_services::testing::kernel_alone;
use dbos_store::batch;

#[tokio::test]
async fn the_claim_checks_of_an_enqueue_run_once() {
    let (_db, k) = kernel_alone().await;
    let mut c = k.pool().acquire().await.expect("a node connection");
    // Every part, so every parameter has a type.
    let shape = batch::Shape::new(true, false, true, true, true, true);
    // No checkpoint, outcome or start; one enqueue that its node may claim.
    let plan = testing::prepared_plan(
        &mut c,
        "w",
        batch::statement(shape),
        "ANALYZE",
        "('{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}',
          '{}', '{}', '{}', '{}', '{}',
          '{}', '{}', '{}', '{}', '{}', '{}', '{}',
          'node', 'v1', 'PENDING', '{}',
          '{e1}', '{f}', '{q}', '{x1}', '{NULL}', '{NULL}', '{0}', '{NULL}', '{NULL}',
          '{NULL}', '{NULL}', '{[]}', NULL, '{true}', '{NULL}')",
    )
    .await;
    assert!(
        plan.contains("Tuples Inserted: 1"),
        "the enqueue is inserted:\n{plan}"
    );
    assert_eq!(
        plan.lines()
            .filter(|l| l.contains("Scan") && l.contains("idx_workflow_status_in_flight_v2"))
            .count(),
        1,
        "the work waiting is probed once for the enqueue, not once per use of the claim:\n{plan}"
    );
    drop(c);
    k.shutdown().await.expect("shutdown");
}
