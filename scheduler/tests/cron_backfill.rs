//! Cron catch-up after downtime: a schedule with automatic backfill gets every missed tick, one
//! without gets only the latest, and firing again at the same instant adds nothing. A pause
//! that has returned stops every tick, even of a sweep under way.

use dbos_kernel::testing;
use dbos_scheduler::cron::{self, Schedule};
use dbos_services::testing::kernel_alone;
use sqlx::PgConnection;

/// Adds schedule `name`, every second, of a workflow no node runs on a queue no node claims
/// from, as if it had last fired at `last`; returns `last` as recorded (RFC 3339).
async fn add_fired_before(
    c: &mut PgConnection,
    name: &str,
    backfill: bool,
    last: chrono::DateTime<chrono::Utc>,
) -> String {
    let s = Schedule {
        automatic_backfill: backfill,
        queue_name: Some("no-worker-here".into()),
        ..Schedule::new(name, "nowhere", "* * * * * *")
    };
    cron::add(&mut *c, &s).await.expect("add");
    let last = last.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    sqlx::query("UPDATE dbos.workflow_schedules SET last_fired_at = $1 WHERE schedule_name = $2")
        .bind(&last)
        .bind(name)
        .execute(&mut *c)
        .await
        .expect("rewind");
    last
}

#[tokio::test]
async fn missed_ticks_are_backfilled_only_when_the_schedule_asks() {
    // The kernel alone: no cron loop of a workflow service fires these schedules meanwhile.
    let (_db, kernel) = kernel_alone().await;
    let pool = kernel.pool().clone();
    let mut c = pool.acquire().await.expect("conn");
    // As if every node had been down for ten seconds since the last tick.
    let now = chrono::Utc::now();
    for (name, backfill) in [("every-sec-bf", true), ("every-sec", false)] {
        add_fired_before(&mut c, name, backfill, now - chrono::Duration::seconds(10)).await;
    }
    cron::fire_due(&pool, now).await.expect("fire");
    let count = |name: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM dbos.workflow_status WHERE schedule_name = $1",
            )
            .bind(name)
            .fetch_one(&pool)
            .await
            .expect("count")
        }
    };
    assert!(
        (9..=10).contains(&count("every-sec-bf").await),
        "every missed tick"
    );
    assert_eq!(count("every-sec").await, 1, "only the latest missed tick");
    // Firing again at the same instant adds nothing.
    cron::fire_due(&pool, now).await.expect("fire again");
    assert_eq!(count("every-sec").await, 1);
    drop(c);
    kernel.shutdown().await.expect("shutdown");
}

/// A sweep that read a schedule as ACTIVE before a pause committed enqueues none of its ticks
/// once the pause has returned: it waits for the pause, and finds the schedule paused.
#[tokio::test]
async fn a_sweep_under_way_enqueues_nothing_after_a_pause() {
    let (_db, kernel) = kernel_alone().await;
    let pool = kernel.pool().clone();
    let name = "paused-mid-sweep";
    let mut c = pool.acquire().await.expect("conn");
    let now = chrono::Utc::now();
    let last = add_fired_before(&mut c, name, true, now - chrono::Duration::seconds(5)).await;
    // The pause, not yet committed, holds the schedule's row.
    let mut pause = pool.begin().await.expect("begin");
    cron::set_paused(&mut pause, name, true)
        .await
        .expect("pause");
    let sweep = {
        let pool = pool.clone();
        tokio::spawn(async move { cron::fire_due(&pool, now).await })
    };
    // The sweep read the schedule as ACTIVE and waits for its row.
    testing::waiting_on_locks(&pool, 1).await;
    pause.commit().await.expect("the pause commits");
    let fired = sweep.await.expect("join").expect("fire");
    assert_eq!(fired.enqueued, 0, "no tick enqueued after the pause");
    let runs: i64 =
        sqlx::query_scalar("SELECT count(*) FROM dbos.workflow_status WHERE schedule_name = $1")
            .bind(name)
            .fetch_one(&mut *c)
            .await
            .expect("count");
    assert_eq!(runs, 0, "no run of the paused schedule");
    let left: Option<String> = sqlx::query_scalar(
        "SELECT last_fired_at FROM dbos.workflow_schedules WHERE schedule_name = $1",
    )
    .bind(name)
    .fetch_one(&mut *c)
    .await
    .expect("schedule");
    assert_eq!(
        left.as_deref(),
        Some(last.as_str()),
        "the ticks the sweep did not enqueue stay due: a resume backfills them"
    );
    drop(c);
    kernel.shutdown().await.expect("shutdown");
}
