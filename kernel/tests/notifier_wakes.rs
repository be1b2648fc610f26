//! The notifier wakes subscribers on NOTIFY and tells them to re-check after a reconnect.

use std::time::Duration;

use dbos_kernel::{testing, Kernel, Wake};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_notify_wakes_every_subscriber_of_its_channel_only() {
    let db = testing::database().await;
    let k = Kernel::boot(db.config(), &[]).await.expect("boot");
    let mut a1 = k.notifier().subscribe("chan_a").await.expect("subscribe");
    let mut a2 = k.notifier().subscribe("chan_a").await.expect("subscribe");
    let mut b = k.notifier().subscribe("chan_b").await.expect("subscribe");
    sqlx::query("SELECT pg_notify('chan_a', 'hello')")
        .execute(k.pool())
        .await
        .expect("notify");
    for s in [&mut a1, &mut a2] {
        let w = tokio::time::timeout(WAIT, s.recv()).await.expect("woken");
        assert_eq!(w, Some(Wake::Notified("hello".into())));
    }
    // A notification in a rolled-back transaction is never delivered.
    let mut tx = k.pool().begin().await.expect("begin");
    sqlx::query("SELECT pg_notify('chan_b', 'rolled back')")
        .execute(&mut *tx)
        .await
        .expect("notify");
    tx.rollback().await.expect("rollback");
    sqlx::query("SELECT pg_notify('chan_b', 'committed')")
        .execute(k.pool())
        .await
        .expect("notify");
    let w = tokio::time::timeout(WAIT, b.recv()).await.expect("woken");
    assert_eq!(w, Some(Wake::Notified("committed".into())));
    k.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn after_the_listen_connection_dies_waiters_recheck_and_notifications_resume() {
    let db = testing::database().await;
    let k = Kernel::boot(db.config(), &[]).await.expect("boot");
    let mut s = k.notifier().subscribe("jobs").await.expect("subscribe");
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND query ILIKE 'LISTEN%' AND pid <> pg_backend_pid()) t",
    )
    .fetch_one(k.pool())
    .await
    .expect("terminate the listener");
    assert_eq!(killed, 1, "one LISTEN connection per node");
    let w = tokio::time::timeout(WAIT, s.recv())
        .await
        .expect("told to re-check");
    assert_eq!(w, Some(Wake::Recheck));
    // The reconnected listener is listening on the channel again.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        sqlx::query("SELECT pg_notify('jobs', 'after')")
            .execute(k.pool())
            .await
            .expect("notify");
        match tokio::time::timeout(Duration::from_millis(500), s.recv()).await {
            Ok(Some(Wake::Notified(p))) => {
                assert_eq!(p, "after");
                break;
            }
            Ok(Some(Wake::Recheck)) | Err(_) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "notifications resume"
                );
            }
            Ok(None) => panic!("the notifier stopped"),
        }
    }
    k.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn subscriptions_end_when_the_node_stops_and_bad_channels_are_refused() {
    let db = testing::database().await;
    let k = Kernel::boot(db.config(), &[]).await.expect("boot");
    let err = k
        .notifier()
        .subscribe(&"x".repeat(64))
        .await
        .expect_err("too long");
    assert!(err.to_string().contains("63 bytes"), "{err}");
    let mut s = k.notifier().subscribe("x").await.expect("subscribe");
    let notifier = k.notifier().clone();
    k.shutdown().await.expect("shutdown");
    assert_eq!(
        tokio::time::timeout(WAIT, s.recv()).await.expect("ends"),
        None
    );
    assert!(notifier.subscribe("y").await.is_err());
}
