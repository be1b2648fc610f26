//! A queue's pause against the claims racing it: once `queues::set_paused` has returned, no
//! workflow of the queue starts. A claim round or an enqueue that would claim either commits
//! before the pause returns, or waits for the pause and claims nothing.

use dbos_kernel::{testing, Kernel};
use dbos_scheduler::queues::{self, Queue};
use dbos_services::testing::{kernel_alone, status};
use dbos_store::workflows::{self, Enqueue, Here};
use sqlx::{PgConnection, PgPool};

const QUEUE: &str = "pausing";

/// A kernel alone (no dispatcher claims meanwhile) with queue [`QUEUE`].
async fn boot() -> (testing::TestDb, Kernel) {
    let (db, k) = kernel_alone().await;
    let mut c = k.pool().acquire().await.expect("conn");
    queues::create(&mut c, &Queue::named(QUEUE))
        .await
        .expect("create queue");
    (db, k)
}

/// Enqueues `id` on [`QUEUE`]; with `here`, claimed for the enqueuer if the queue lets it.
async fn enqueue(pool: &PgPool, id: &str, here: bool) -> workflows::Created {
    let mut e = Enqueue::new(id, "f", QUEUE, "[]");
    e.here = here.then(Here::default);
    workflows::enqueue(pool, &e).await.expect("enqueue")
}

/// One claim round of a node that runs `f`, on `conn`: the IDs it claimed.
async fn claim_on(conn: &mut PgConnection) -> Vec<String> {
    sqlx::query_scalar("SELECT o_workflow_uuid FROM sched.claim($1, NULL, 10, 'n1', '{}', 10)")
        .bind(vec!["f".to_owned()])
        .fetch_all(conn)
        .await
        .expect("claim")
}

#[tokio::test]
async fn a_pause_waits_for_a_claim_under_way() {
    let (_db, k) = boot().await;
    let pool = k.pool().clone();
    enqueue(&pool, "w1", false).await;
    // A claim round that has claimed w1 and not yet committed.
    let mut round = pool.begin().await.expect("begin");
    assert_eq!(claim_on(&mut round).await, ["w1"]);
    let p = pool.clone();
    let pause = tokio::spawn(async move {
        let mut c = p.acquire().await.expect("conn");
        queues::set_paused(&mut c, QUEUE, true).await
    });
    testing::waiting_on_locks_before(
        &pool,
        1,
        &pause,
        "the pause returned while a claim of its queue was under way",
    )
    .await;
    round.commit().await.expect("commit");
    assert!(pause.await.expect("join").expect("pause"));
    // The claim committed before the pause returned; nothing is claimed after it.
    assert_eq!(status(&pool, "w1").await, "PENDING");
    enqueue(&pool, "w2", false).await;
    let mut c = pool.acquire().await.expect("conn");
    assert!(
        claim_on(&mut c).await.is_empty(),
        "claimed from a paused queue"
    );
    drop(c);
    k.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_claim_during_a_pause_waits_for_it_and_claims_nothing() {
    let (_db, k) = boot().await;
    let pool = k.pool().clone();
    enqueue(&pool, "w1", false).await;
    // A pause under way: its statement has run, its commit has not.
    let mut pausing = pool.begin().await.expect("begin");
    assert!(queues::set_paused(&mut pausing, QUEUE, true)
        .await
        .expect("pause"));
    let p = pool.clone();
    let round = tokio::spawn(async move {
        let mut c = p.acquire().await.expect("conn");
        claim_on(&mut c).await
    });
    testing::waiting_on_locks_before(
        &pool,
        1,
        &round,
        "a claim read the queue while its pause was under way without waiting for it",
    )
    .await;
    pausing.commit().await.expect("commit");
    assert!(
        round.await.expect("join").is_empty(),
        "claimed from a paused queue"
    );
    assert_eq!(status(&pool, "w1").await, "ENQUEUED");
    k.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn an_enqueue_during_a_pause_is_not_claimed_as_it_is_enqueued() {
    let (_db, k) = boot().await;
    let pool = k.pool().clone();
    // The queue lets its enqueuer claim: no limit, nothing waiting, not paused.
    assert!(enqueue(&pool, "w0", true).await.claimed);
    let mut pausing = pool.begin().await.expect("begin");
    assert!(queues::set_paused(&mut pausing, QUEUE, true)
        .await
        .expect("pause"));
    let p = pool.clone();
    let enq = tokio::spawn(async move { enqueue(&p, "w1", true).await });
    testing::waiting_on_locks_before(
        &pool,
        1,
        &enq,
        "an enqueue read the queue while its pause was under way without waiting for it",
    )
    .await;
    pausing.commit().await.expect("commit");
    let created = enq.await.expect("join");
    assert!(created.created && !created.claimed, "{created:?}");
    assert_eq!(status(&pool, "w1").await, "ENQUEUED");
    k.shutdown().await.expect("shutdown");
}
