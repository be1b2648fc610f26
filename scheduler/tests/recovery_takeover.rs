//! Recovery without a coordinator: two live nodes race to take over the PENDING work of a node
//! whose lease expired; every workflow is re-enqueued and run exactly once, its recorded step
//! replayed, and the silent node is declared dead.

use dbos_kernel::testing;
use dbos_services::testing::{node_on, seed, status, Counter};
use dbos_services::workflow::{self, Options};

fn counted(
    c: Counter,
) -> impl Fn(
    workflow::Context,
    (i64,),
) -> futures_util::future::BoxFuture<'static, Result<i64, workflow::Error>>
       + Send
       + Sync
       + 'static {
    move |ctx: workflow::Context, (x,): (i64,)| {
        let c = c.clone();
        Box::pin(async move {
            let a: i64 = ctx
                .step("one", || {
                    let c = c.clone();
                    async move {
                        c.hit("one");
                        Ok(x)
                    }
                })
                .await?;
            let id = ctx.workflow_id().to_owned();
            ctx.step("two", || {
                let (c, id) = (c.clone(), id.clone());
                async move {
                    c.hit(&id);
                    Ok(a + 1)
                }
            })
            .await
        })
    }
}

#[tokio::test]
async fn two_nodes_racing_to_recover_a_dead_nodes_work_run_each_workflow_once() {
    let db = testing::database().await;
    let c = Counter::default();
    let a = node_on(
        db.clone(),
        |r| {
            r.register("counted", counted(c.clone()));
        },
        Options::default(),
    )
    .await;
    let b = node_on(
        db.clone(),
        |r| {
            r.register("counted", counted(c.clone()));
        },
        Options::default(),
    )
    .await;
    // A node of another host that went silent an hour ago, with 40 workflows half done.
    sqlx::query(
        "INSERT INTO kernel.nodes (node_id, hostname, pid, version, slots, lease_ms, heartbeat_at)
         VALUES ('silent', 'elsewhere', 4242, 'x', 8, 1000, now() - interval '1 hour')",
    )
    .execute(a.pool())
    .await
    .expect("silent node");
    let v = a.wf.app_version().to_owned();
    for i in 0..40 {
        seed(
            a.pool(),
            &format!("orphan-{i}"),
            "counted",
            "PENDING",
            "silent",
            &v,
            1,
            &[(1, "one", "4")],
        )
        .await;
    }
    // Both nodes sweep at once, several times (their own loops sweep too).
    let mut moved = 0;
    for _ in 0..5 {
        let (x, y) = tokio::join!(
            dbos_scheduler::recovery::sweep(a.pool()),
            dbos_scheduler::recovery::sweep(b.pool())
        );
        moved += x.expect("sweep a").workflows + y.expect("sweep b").workflows;
    }
    assert!(moved <= 40, "no workflow was re-enqueued twice ({moved})");
    for i in 0..40 {
        let id = format!("orphan-{i}");
        let out: i64 = a.wf.handle(&id).result().await.expect("finishes");
        assert_eq!(out, 5);
        assert_eq!(c.get(&id), 1, "{id}'s second step ran once");
    }
    assert_eq!(
        c.get("one"),
        0,
        "the recorded first step was replayed, never rerun"
    );
    let attempts: Vec<i64> = sqlx::query_scalar(
        "SELECT recovery_attempts FROM dbos.workflow_status WHERE workflow_uuid LIKE 'orphan-%'",
    )
    .fetch_all(a.pool())
    .await
    .expect("attempts");
    assert!(
        attempts.iter().all(|&n| n == 2),
        "each was claimed once after recovery: {attempts:?}"
    );
    let state: String =
        sqlx::query_scalar("SELECT state FROM kernel.nodes WHERE node_id = 'silent'")
            .fetch_one(a.pool())
            .await
            .expect("state");
    assert_eq!(state, "dead");
    assert_eq!(status(a.pool(), "orphan-0").await, "SUCCESS");
    b.stop().await;
    a.stop().await;
}
