//! Tasks run concurrently, never more than the node's slots, with a transaction as their one
//! capability; shutdown drains them up to a deadline.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dbos_kernel::{testing, Config, Error, Kernel};

/// A kernel of `slots` slots on a fresh test database (kept alive by the first value).
async fn boot_with_slots(slots: u32) -> (testing::TestDb, Kernel) {
    let db = testing::database().await;
    let k = Kernel::boot(
        Config {
            slots,
            ..db.config()
        },
        &[],
    )
    .await
    .expect("boot");
    (db, k)
}

#[tokio::test]
async fn tasks_never_exceed_the_slots_and_their_transactions_commit() {
    let (_db, k) = boot_with_slots(3).await;
    sqlx::query("CREATE TABLE public.done (task_id text PRIMARY KEY, node_id text NOT NULL)")
        .execute(k.pool())
        .await
        .expect("table");
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for i in 0..12 {
        let (running, peak) = (running.clone(), peak.clone());
        let h = k
            .runtime()
            .spawn(format!("task-{i}"), move |ctx| async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(30)).await;
                let mut tx = ctx.tx().await?;
                sqlx::query("INSERT INTO public.done VALUES ($1, $2)")
                    .bind(ctx.task_id())
                    .bind(ctx.node_id())
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                running.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, Error>(i)
            })
            .await
            .expect("spawn");
        handles.push(h);
    }
    let mut outs = Vec::new();
    for h in handles {
        outs.push(h.join().await.expect("no panic").expect("task ok"));
    }
    assert_eq!(outs, (0..12).collect::<Vec<_>>());
    let peak = peak.load(Ordering::SeqCst);
    assert!(peak <= 3, "at most 3 at once, saw {peak}");
    assert!(peak >= 2, "tasks overlap, saw {peak}");
    let (n, nodes): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(*) FILTER (WHERE node_id = $1) FROM public.done")
            .bind(k.node_id())
            .fetch_one(k.pool())
            .await
            .expect("count");
    assert_eq!((n, nodes), (12, 12));
    k.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_dropped_transaction_rolls_back() {
    let db = testing::database().await;
    let k = Kernel::boot(db.config(), &[]).await.expect("boot");
    sqlx::query("CREATE TABLE public.t (x int)")
        .execute(k.pool())
        .await
        .expect("table");
    let h = k
        .runtime()
        .spawn("rollback", |ctx| async move {
            let mut tx = ctx.tx().await?;
            sqlx::query("INSERT INTO public.t VALUES (1)")
                .execute(&mut *tx)
                .await?;
            drop(tx);
            Ok::<_, Error>(())
        })
        .await
        .expect("spawn");
    h.join().await.expect("no panic").expect("ok");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM public.t")
        .fetch_one(k.pool())
        .await
        .expect("count");
    assert_eq!(n, 0);
    k.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn try_spawn_hands_the_task_back_when_no_slot_is_free() {
    let (_db, k) = boot_with_slots(1).await;
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let first = k
        .runtime()
        .spawn("holder", |_ctx| async move {
            let _ = release_rx.await;
        })
        .await
        .expect("spawn");
    assert_eq!(k.runtime().free_slots(), 0);
    let back = k
        .runtime()
        .try_spawn("second", |_ctx| async {})
        .expect("runtime open");
    assert!(back.is_err(), "no slot: the task comes back");
    release_tx.send(()).expect("holder waits");
    first.join().await.expect("done");
    let started = k
        .runtime()
        .try_spawn("third", |_ctx| async { 5 })
        .expect("runtime open");
    let Ok(h) = started else {
        panic!("a slot is free again")
    };
    assert_eq!(h.join().await.expect("done"), 5);
    k.shutdown().await.expect("shutdown");
}

/// Spawns a task that takes a slot until `done` is sent, then logs "other ended".
async fn spawn_other(
    k: &Kernel,
    log: &Arc<parking_lot::Mutex<Vec<&'static str>>>,
) -> (
    dbos_kernel::TaskHandle<()>,
    tokio::sync::oneshot::Sender<()>,
) {
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let log = log.clone();
    let other = k
        .runtime()
        .spawn("other", move |_ctx| async move {
            let _ = done_rx.await;
            log.lock().push("other ended");
        })
        .await
        .expect("a slot is free for it");
    (other, done_tx)
}

/// A slot reserved ahead of its task is not free for others; dropped unused it is free
/// again, and a task spawned on it runs at once.
#[tokio::test]
async fn a_reserved_slot_runs_its_task_or_is_given_back() {
    let (_db, k) = boot_with_slots(1).await;
    let reserved = k.runtime().reserve().expect("a slot is free");
    assert_eq!(k.runtime().free_slots(), 0);
    assert!(k.runtime().reserve().is_none(), "the one slot is reserved");
    drop(reserved);
    assert_eq!(k.runtime().free_slots(), 1, "given back unused");
    let reserved = k.runtime().reserve().expect("free again");
    let h = reserved.spawn("on-reserved", |_ctx| async { 7 });
    assert_eq!(h.join().await.expect("ran"), 7);
    assert_eq!(
        k.runtime().free_slots(),
        1,
        "given back when the task ended"
    );
    k.shutdown().await.expect("shutdown");
}

/// A task that waits gives its slot back: another task runs meanwhile, and the waiting one
/// goes on only once a slot is free again.
#[tokio::test]
async fn an_idle_task_gives_its_slot_back_until_its_wait_ends() {
    let (_db, k) = boot_with_slots(1).await;
    let log = Arc::new(parking_lot::Mutex::new(Vec::<&str>::new()));
    let (wake_tx, wake_rx) = tokio::sync::oneshot::channel::<()>();
    let (idle_tx, idle_rx) = tokio::sync::oneshot::channel::<()>();
    let waiter = {
        let log = log.clone();
        k.runtime()
            .spawn("waiter", move |ctx| async move {
                ctx.slot()
                    .idle(async {
                        idle_tx.send(()).expect("test waits");
                        let _ = wake_rx.await;
                    })
                    .await;
                log.lock().push("waiter went on");
            })
            .await
            .expect("spawn")
    };
    idle_rx.await.expect("the waiter is idle");
    assert_eq!(k.runtime().free_slots(), 1, "the idle task's slot is free");
    // The one slot is taken by another task while the first waits.
    let (other, done_tx) = spawn_other(&k, &log).await;
    assert_eq!(k.runtime().free_slots(), 0);
    // The wait ends first, but the waiter has no slot until the other task ends.
    wake_tx.send(()).expect("waiter waits");
    done_tx.send(()).expect("other waits");
    other.join().await.expect("other done");
    waiter.join().await.expect("waiter done");
    assert_eq!(*log.lock(), vec!["other ended", "waiter went on"]);
    assert_eq!(k.runtime().free_slots(), 1, "both slots given back");
    k.shutdown().await.expect("shutdown");
}

/// Waits raced against each other (a `select!`) leave the task its slot: the loser, dropped
/// midway, takes the slot again when one is free, and otherwise the task's next wait ends only
/// once it has one.
#[tokio::test]
async fn a_wait_dropped_midway_does_not_leave_the_task_without_a_slot() {
    let (_db, k) = boot_with_slots(1).await;
    let log = Arc::new(parking_lot::Mutex::new(Vec::<&str>::new()));
    let (idle_tx, mut idle_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let (wake_tx, mut wake_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let (went_on_tx, mut went_on_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let (next_tx, mut next_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let racer = {
        let log = log.clone();
        k.runtime()
            .spawn("racer", move |ctx| async move {
                for _ in 0..2 {
                    let slot = ctx.slot();
                    tokio::select! {
                        _ = slot.idle(std::future::pending::<()>()) => unreachable!(),
                        _ = slot.idle(async {
                            idle_tx.send(()).expect("test waits");
                            wake_rx.recv().await.expect("test wakes");
                        }) => {}
                    }
                    went_on_tx.send(()).expect("test waits");
                    next_rx.recv().await.expect("test goes on");
                }
                // The next wait ends only with a slot.
                ctx.slot().idle(async {}).await;
                log.lock().push("racer went on");
            })
            .await
            .expect("spawn")
    };
    // First race: nothing else runs, so the loser takes the slot back as it is dropped.
    idle_rx.recv().await.expect("racer idle");
    assert_eq!(
        k.runtime().free_slots(),
        1,
        "the racing waits gave the slot back"
    );
    wake_tx.send(()).expect("racer waits");
    went_on_rx.recv().await.expect("racer went on");
    assert_eq!(
        k.runtime().free_slots(),
        0,
        "the racer holds its slot again"
    );
    next_tx.send(()).expect("racer waits");
    // Second race: another task holds the one slot when the race ends.
    idle_rx.recv().await.expect("racer idle again");
    let (other, done_tx) = spawn_other(&k, &log).await;
    wake_tx.send(()).expect("racer waits");
    went_on_rx.recv().await.expect("racer went on");
    next_tx.send(()).expect("racer waits");
    done_tx.send(()).expect("other waits");
    other.join().await.expect("other done");
    racer.join().await.expect("racer done");
    assert_eq!(*log.lock(), vec!["other ended", "racer went on"]);
    assert_eq!(k.runtime().free_slots(), 1, "every slot given back");
    k.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn shutdown_drains_quick_tasks_abandons_slow_ones_and_refuses_new_ones() {
    let db = testing::database().await;
    let k = Kernel::boot(
        Config {
            drain_timeout_ms: 2_000,
            ..db.config()
        },
        &[],
    )
    .await
    .expect("boot");
    let finished = Arc::new(AtomicUsize::new(0));
    for (i, ms) in [(0, 50u64), (1, 60_000)] {
        let finished = finished.clone();
        k.runtime()
            .spawn(format!("t{i}"), move |_ctx| async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                finished.fetch_add(1, Ordering::SeqCst);
            })
            .await
            .expect("spawn");
    }
    let runtime = k.runtime().clone();
    let report = k.shutdown().await.expect("shutdown");
    assert_eq!(report.tasks_abandoned, 1);
    assert_eq!(
        finished.load(Ordering::SeqCst),
        1,
        "the quick task finished"
    );
    let err = runtime
        .spawn("late", |_ctx| async {})
        .await
        .expect_err("closed");
    assert!(matches!(err, Error::ShuttingDown));
}
