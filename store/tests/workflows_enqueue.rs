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

fn enqueue<'a>(id: &'a str, queue: &'a str, key: Option<&'a str>) -> workflows::Enqueue<'a> {
    workflows::Enqueue {
        workflow_id: id,
        name: "job",
        queue,
        inputs: INPUTS,
        partition_key: key,
        ..workflows::Enqueue::default()
    }
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
            created: false
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
