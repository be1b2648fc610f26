//! A change of a queue against the claims racing it: once a pause, a new limit, a queue's
//! creation with a limit or a placement rule has returned, every later start keeps it. A claim
//! round or an enqueue that would claim either commits before the change returns, or waits
//! for the change and keeps it.

use std::collections::BTreeMap;

use dbos_kernel::testing;
use dbos_scheduler::queues::{self, Policy, Queue};
use dbos_services::testing::{kernel_alone, status};
use dbos_store::workflows::{self, Enqueue, Here};
use sqlx::{PgConnection, PgPool};

/// A change of a queue. After each, the node of [`claim_on`] (no labels) claims nothing more
/// of the queue while one of its workflows runs.
#[derive(Clone, Copy, Debug)]
enum Change {
    /// The queue paused.
    Pause,
    /// A global concurrency of 1 given to a queue without limits.
    Limit,
    /// The queue created with a global concurrency of 1 (before, its name named no queue, and
    /// its work had no limit).
    Create,
    /// A placement rule requiring a label the node does not have.
    Placement,
}

impl Change {
    const ALL: [Change; 4] = [
        Change::Pause,
        Change::Limit,
        Change::Create,
        Change::Placement,
    ];

    /// The queue of this change in test `test`: each change has a queue of its own.
    fn queue(self, test: &str) -> String {
        format!("{test}-{self:?}")
    }

    /// The queue as it is before the change.
    async fn prepare(self, pool: &PgPool, queue: &str) {
        if !matches!(self, Change::Create) {
            let mut c = pool.acquire().await.expect("conn");
            queues::create(&mut c, &Queue::named(queue))
                .await
                .expect("create queue");
        }
    }

    /// Makes the change on `conn`.
    async fn apply(self, conn: &mut PgConnection, queue: &str) {
        let one = Queue {
            concurrency: Some(1),
            ..Queue::named(queue)
        };
        match self {
            Change::Pause => assert!(queues::set_paused(conn, queue, true).await.expect("pause")),
            Change::Limit => queues::update(conn, &one).await.expect("update"),
            Change::Create => queues::create(conn, &one).await.expect("create"),
            Change::Placement => {
                let far = BTreeMap::from([("zone".to_owned(), "far".to_owned())]);
                queues::set_placement(conn, queue, &far, &Policy::Fifo)
                    .await
                    .expect("placement");
            }
        }
    }
}

/// Enqueues `id` on `queue`; with `here`, claimed for the enqueuer if the queue lets it.
async fn enqueue(pool: &PgPool, queue: &str, id: &str, here: bool) -> workflows::Created {
    let mut e = Enqueue::new(id, "f", queue, "[]");
    e.here = here.then(Here::default);
    workflows::enqueue(pool, &e).await.expect("enqueue")
}

/// One claim round of a node that runs `f` and has no labels, on `conn`: the IDs it claimed.
async fn claim_on(conn: &mut PgConnection) -> Vec<String> {
    sqlx::query_scalar("SELECT o_workflow_uuid FROM sched.claim($1, NULL, 10, 'n1', '{}', 10)")
        .bind(vec!["f".to_owned()])
        .fetch_all(conn)
        .await
        .expect("claim")
}

/// One committed claim round on a connection of `pool`.
async fn claim(pool: &PgPool) -> Vec<String> {
    claim_on(&mut pool.acquire().await.expect("conn")).await
}

#[tokio::test]
async fn a_change_waits_for_a_claim_under_way() {
    let (_db, k) = kernel_alone().await;
    let pool = k.pool().clone();
    for change in Change::ALL {
        let q = change.queue("under-way");
        change.prepare(&pool, &q).await;
        let w1 = format!("{q}-1");
        enqueue(&pool, &q, &w1, false).await;
        // A claim round that has claimed w1 and not yet committed.
        let mut round = pool.begin().await.expect("begin");
        assert_eq!(claim_on(&mut round).await, [w1.as_str()], "{change:?}");
        let (p, q2) = (pool.clone(), q.clone());
        let changing = tokio::spawn(async move {
            change
                .apply(&mut p.acquire().await.expect("conn"), &q2)
                .await;
        });
        testing::waiting_on_locks_before(
            &pool,
            1,
            &changing,
            &format!("{change:?} returned while a claim of its queue was under way"),
        )
        .await;
        round.commit().await.expect("commit");
        changing.await.expect("join");
        // The claim committed before the change returned; nothing is claimed after it.
        assert_eq!(status(&pool, &w1).await, "PENDING");
        enqueue(&pool, &q, &format!("{q}-2"), false).await;
        assert!(claim(&pool).await.is_empty(), "{change:?}: claimed past it");
    }
    k.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_claim_during_a_change_waits_for_it_and_keeps_it() {
    let (_db, k) = kernel_alone().await;
    let pool = k.pool().clone();
    for change in Change::ALL {
        let q = change.queue("claim");
        change.prepare(&pool, &q).await;
        // One of the queue's workflows runs (a limit of 1 then leaves no room).
        enqueue(&pool, &q, &format!("{q}-0"), false).await;
        assert_eq!(claim(&pool).await.len(), 1, "{change:?}");
        let w1 = format!("{q}-1");
        enqueue(&pool, &q, &w1, false).await;
        // The change under way: its statements have run, its commit has not.
        let mut changing = pool.begin().await.expect("begin");
        change.apply(&mut changing, &q).await;
        let p = pool.clone();
        let round = tokio::spawn(async move { claim(&p).await });
        testing::waiting_on_locks_before(
            &pool,
            1,
            &round,
            &format!("a claim read the queue while a {change:?} was under way without waiting"),
        )
        .await;
        changing.commit().await.expect("commit");
        assert!(
            round.await.expect("join").is_empty(),
            "{change:?}: claimed past it"
        );
        assert_eq!(status(&pool, &w1).await, "ENQUEUED");
    }
    k.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn an_enqueue_during_a_change_is_not_claimed_as_it_is_enqueued() {
    let (_db, k) = kernel_alone().await;
    let pool = k.pool().clone();
    for change in Change::ALL {
        let q = change.queue("enqueue");
        change.prepare(&pool, &q).await;
        // The queue lets its enqueuer claim: no limit or rule, nothing waiting, not paused.
        assert!(
            enqueue(&pool, &q, &format!("{q}-0"), true).await.claimed,
            "{change:?}"
        );
        let mut changing = pool.begin().await.expect("begin");
        change.apply(&mut changing, &q).await;
        let (p, q2) = (pool.clone(), q.clone());
        let enq = tokio::spawn(async move { enqueue(&p, &q2, &format!("{q2}-1"), true).await });
        testing::waiting_on_locks_before(
            &pool,
            1,
            &enq,
            &format!("an enqueue read the queue while a {change:?} was under way without waiting"),
        )
        .await;
        changing.commit().await.expect("commit");
        let created = enq.await.expect("join");
        assert!(
            created.created && !created.claimed,
            "{change:?}: {created:?}"
        );
        assert_eq!(status(&pool, &format!("{q}-1")).await, "ENQUEUED");
    }
    k.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_placement_without_labels_in_fifo_order_removes_the_rule() {
    let (_db, k) = kernel_alone().await;
    let pool = k.pool().clone();
    let q = "unplaced";
    Change::Placement.prepare(&pool, q).await;
    let mut c = pool.acquire().await.expect("conn");
    Change::Placement.apply(&mut c, q).await;
    queues::set_placement(&mut c, q, &BTreeMap::new(), &Policy::Fifo)
        .await
        .expect("placement");
    let rules: i64 = sqlx::query_scalar("SELECT count(*) FROM sched.queue_rules")
        .fetch_one(&mut *c)
        .await
        .expect("rules");
    assert_eq!(rules, 0);
    // Without a rule, the enqueuer claims the queue's work as it enqueues it again.
    assert!(enqueue(&pool, q, "w", true).await.claimed);
    drop(c);
    k.shutdown().await.expect("shutdown");
}
