//! Enqueue and fork as the store writes them, against rows other clients wrote.

use dbos_kernel::{testing, Kernel};
use dbos_store::queues::{self, Queue};
use dbos_store::{workflows, Error, Status};
use sqlx::Connection;

const INPUTS: &str = r#"{"positionalArgs":[],"namedArgs":{}}"#;

async fn kernel() -> Kernel {
    let db = testing::database().await;
    Kernel::boot(db.config(), &[dbos_store::MIGRATIONS])
        .await
        .expect("boot")
}

fn enqueue(id: &str, queue: &str, key: Option<&str>) -> workflows::Enqueue {
    let mut e = workflows::Enqueue::new(id, "job", queue, INPUTS);
    e.partition_key = key.map(str::to_owned);
    e
}

#[tokio::test]
async fn enqueueing_an_id_made_by_the_sql_function_returns_it_unchanged() {
    let k = kernel().await;
    // dbos.enqueue_workflow (DBOS's own SQL function) leaves creator_xid NULL.
    sqlx::query("SELECT dbos.enqueue_workflow('job', 'default', workflow_id => 'from-sql')")
        .execute(k.pool())
        .await
        .expect("sql enqueue");
    let again = workflows::enqueue(k.pool(), &enqueue("from-sql", "default", None))
        .await
        .expect("an existing ID is not an error");
    assert_eq!(
        again,
        workflows::Created {
            name: Some("job".into()),
            created: false,
            claimed: false,
        }
    );
    assert_eq!(
        workflows::status(k.pool(), "from-sql")
            .await
            .expect("status"),
        Status::Enqueued
    );
    k.shutdown().await.expect("shutdown");
}

/// An enqueue on its own wakes idle nodes: its commit notifies the enqueue channel with the
/// queue's name.
#[tokio::test]
async fn an_enqueue_notifies_idle_nodes_with_its_queue() {
    let k = kernel().await;
    let mut listener = sqlx::postgres::PgListener::connect_with(k.pool())
        .await
        .expect("listener");
    listener
        .listen(dbos_store::ENQUEUE_CHANNEL)
        .await
        .expect("listen");
    let created = workflows::enqueue(k.pool(), &enqueue("noticed", "default", None))
        .await
        .expect("enqueue");
    assert!(created.created);
    let n = listener.recv().await.expect("notification");
    assert_eq!(n.channel(), dbos_store::ENQUEUE_CHANNEL);
    assert_eq!(n.payload(), "default");
    k.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_partitioned_queue_requires_a_key_and_other_queues_refuse_one() {
    let k = kernel().await;
    let partitioned = Queue {
        partition_concurrency: Some(1),
        ..Queue::named("parts")
    };
    assert!(queues::insert(k.pool(), &partitioned).await.expect("queue"));
    let err = workflows::enqueue(k.pool(), &enqueue("no-key", "parts", None))
        .await
        .expect_err("a key is required");
    assert!(
        matches!(err, Error::PartitionKey { given: false, .. }),
        "{err}"
    );
    let err = workflows::enqueue(k.pool(), &enqueue("stray-key", "default", Some("a")))
        .await
        .expect_err("a key is refused");
    assert!(
        matches!(err, Error::PartitionKey { given: true, .. }),
        "{err}"
    );
    for id in ["no-key", "stray-key"] {
        assert!(matches!(
            workflows::status(k.pool(), id).await,
            Err(Error::NotFound(_))
        ));
    }
    let ok = workflows::enqueue(k.pool(), &enqueue("keyed", "parts", Some("a")))
        .await
        .expect("keyed");
    assert!(ok.created);
    k.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn forking_a_missing_workflow_says_it_is_missing() {
    let k = kernel().await;
    let mut conn = k.pool().acquire().await.expect("conn");
    let mut tx = conn.begin().await.expect("begin");
    let err = workflows::fork(&mut tx, "nope", "copy", 1, None)
        .await
        .expect_err("missing");
    assert!(
        matches!(err, Error::NotFound(ref id) if id == "nope"),
        "{err}"
    );
    drop(tx);
    drop(conn);
    k.shutdown().await.expect("shutdown");
}
