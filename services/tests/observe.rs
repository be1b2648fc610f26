//! The observation queries of `dbos top`, the dashboard, `/metrics` and the CLI's lists read
//! DBOS's indexes instead of the whole history, and answer what the plain queries over the
//! whole table answer.

use dbos_services::http;
use dbos_services::observe::{Snapshot, SucceededCount};
use dbos_services::testing::node;

/// Rows of each status, `created_at` one second apart and interleaved across statuses, so
/// every ordering by time is strict.
const ROWS: &[(&str, usize)] = &[
    ("SUCCESS", 30),
    ("ERROR", 12),
    ("MAX_RECOVERY_ATTEMPTS_EXCEEDED", 5),
    ("CANCELLED", 2),
    ("ENQUEUED", 3),
    ("DELAYED", 1),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observation_queries_answer_as_the_whole_table_does() {
    // No workflow registered: the node claims none of the rows written below.
    let n = node(|_| {}).await;
    let pool = n.pool();
    let base: i64 = 1_700_000_000_000;
    let mut k = 0i64;
    let mut round = 0;
    // Round-robin over the statuses, so failures and successes alternate in time.
    while ROWS.iter().any(|(_, count)| round < *count) {
        for (status, count) in ROWS {
            if round >= *count {
                continue;
            }
            let id = format!("obs-{}-{round}", status.to_lowercase());
            let queue = matches!(*status, "ENQUEUED" | "DELAYED").then_some("observe-q");
            // A delay far ahead: the sweeper leaves the DELAYED row as it is.
            let delay = (*status == "DELAYED").then_some(base * 2);
            sqlx::query(
                "INSERT INTO dbos.workflow_status (workflow_uuid, status, name, queue_name,
                     executor_id, recovery_attempts, serialization, created_at, updated_at,
                     started_at_epoch_ms, completed_at, delay_until_epoch_ms)
                 VALUES ($1, $2, 'observe.absent', $3, 'observe-node', 1, 'portable_json', $4,
                         $4, $4, CASE WHEN $2 IN ('SUCCESS', 'ERROR') THEN $4 + 5 END, $5)",
            )
            .bind(&id)
            .bind(status)
            .bind(queue)
            .bind(base + k * 1000)
            .bind(delay)
            .execute(pool)
            .await
            .expect("insert");
            k += 1;
        }
        round += 1;
    }

    let mut c = pool.acquire().await.expect("connection");
    // A count kept longer than the test can take: its reuse below does not depend on time.
    let succeeded = SucceededCount::new(std::time::Duration::from_secs(24 * 3600));
    let snap = Snapshot::read(&mut c, &succeeded).await.expect("snapshot");

    let all: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, count(*) FROM dbos.workflow_status GROUP BY status ORDER BY status",
    )
    .fetch_all(pool)
    .await
    .expect("counts");
    assert_eq!(snap.by_status, all);
    assert!(all.contains(&("SUCCESS".to_owned(), 30)), "{all:?}");

    let newest_failed: Vec<String> = sqlx::query_scalar(
        "SELECT workflow_uuid FROM dbos.workflow_status
         WHERE status IN ('ERROR', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED')
         ORDER BY created_at DESC LIMIT 10",
    )
    .fetch_all(pool)
    .await
    .expect("failures");
    let failures: Vec<String> = snap
        .failures
        .iter()
        .map(|f| f.workflow_id.clone())
        .collect();
    assert_eq!(failures, newest_failed);
    assert!(
        failures.iter().any(|f| f.starts_with("obs-max_recovery"))
            && failures.iter().any(|f| f.starts_with("obs-error")),
        "both failed statuses among the newest: {failures:?}"
    );

    // The dashboard's list: newest first, filtered by status, queue and creation time.
    let list = |status: &'static str, queue: &'static str, since: String| {
        let pool = pool.clone();
        async move {
            let rows: Vec<(String,)> = sqlx::query_as(http::sql::WORKFLOWS)
                .bind(status)
                .bind("")
                .bind(queue)
                .bind("")
                .bind(since)
                .fetch_all(&pool)
                .await
                .expect("list");
            rows.into_iter().map(|(id,)| id).collect::<Vec<String>>()
        }
    };
    let expected = |filter: &'static str, since_ms: i64| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, String>(&format!(
                "SELECT workflow_uuid FROM dbos.workflow_status
                 WHERE {filter} AND created_at >= $1 ORDER BY created_at DESC LIMIT 200"
            ))
            .bind(since_ms)
            .fetch_all(&pool)
            .await
            .expect("expected list")
        }
    };
    assert_eq!(list("", "", String::new()).await, expected("true", 0).await);
    assert_eq!(
        list("ERROR", "", String::new()).await,
        expected("status = 'ERROR'", 0).await
    );
    assert_eq!(
        list("", "observe-q", String::new()).await,
        expected("queue_name = 'observe-q'", 0).await
    );
    let since_ms = base + 20 * 1000;
    let since: String = sqlx::query_scalar("SELECT to_timestamp($1 / 1000.0)::text")
        .bind(since_ms)
        .fetch_one(pool)
        .await
        .expect("since");
    let recent = list("", "", since).await;
    assert_eq!(recent, expected("true", since_ms).await);
    assert!(!recent.is_empty() && recent.len() < 53, "{}", recent.len());

    // The dashboard's minutes: starts of the last ten minutes, per queue and minute. The starts
    // lie 10 s off every multiple of 20 s, so none sits on the ten-minute edge, where the two
    // queries, run a moment apart, could disagree.
    sqlx::query(
        "INSERT INTO dbos.workflow_status (workflow_uuid, status, name, queue_name, executor_id,
             recovery_attempts, serialization, created_at, updated_at, started_at_epoch_ms,
             completed_at)
         SELECT 'obs-recent-' || i, 'SUCCESS', 'observe.absent', 'observe-q', 'observe-node', 1,
                'portable_json', t - 40, t, t, t + 5
         FROM (SELECT i, kernel.now_ms() - 10000 - i * 20000 AS t FROM generate_series(0, 40) i) r",
    )
    .execute(pool)
    .await
    .expect("recent starts");
    let minutes: Vec<(String, String, String, String)> = sqlx::query_as(http::sql::QUEUE_MINUTES)
        .fetch_all(pool)
        .await
        .expect("minutes");
    let whole: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT queue, to_char(date_trunc('minute', started_at), 'HH24:MI'), count(*)::text,
                (percentile_cont(0.5) WITHIN GROUP (ORDER BY wait_ms))::int8::text
         FROM os.workflows
         WHERE queue IS NOT NULL AND started_at > now() - interval '10 minutes'
         GROUP BY 1, 2 ORDER BY 1, min(started_at)",
    )
    .fetch_all(pool)
    .await
    .expect("minutes over the whole table");
    assert_eq!(minutes, whole);
    assert!(minutes.len() >= 10, "{minutes:?}");

    // The count of succeeded workflows is its watcher's: the same one is reused while young
    // enough, a new watcher counts again.
    sqlx::query(
        "INSERT INTO dbos.workflow_status (workflow_uuid, status, name, executor_id,
             serialization, created_at, updated_at, completed_at)
         VALUES ('obs-success-late', 'SUCCESS', 'observe.absent', 'observe-node',
                 'portable_json', $1, $1, $1)",
    )
    .bind(base + k * 1000)
    .execute(pool)
    .await
    .expect("insert");
    let succeeded_of = |snap: &Snapshot| {
        snap.by_status
            .iter()
            .find(|(s, _)| s == "SUCCESS")
            .map(|(_, n)| *n)
    };
    let kept = Snapshot::read(&mut c, &succeeded).await.expect("snapshot");
    assert_eq!(succeeded_of(&kept), Some(30));
    let fresh = Snapshot::read(&mut c, &SucceededCount::default())
        .await
        .expect("snapshot");
    let now: i64 =
        sqlx::query_scalar("SELECT count(*) FROM dbos.workflow_status WHERE status = 'SUCCESS'")
            .fetch_one(pool)
            .await
            .expect("count");
    assert!(now > 30, "{now}");
    assert_eq!(succeeded_of(&fresh), Some(now));
    drop(c);
    n.stop().await;
}

/// Pages of `dbos wf list` cut along the creation-time index keep the order by creation time
/// and ID, also where workflows share a creation time at a page's edge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_lists_read_newest_first_and_page_over_ties() {
    use dbos_services::store::inspect::{list, ListFilter};
    let n = node(|_| {}).await;
    let pool = n.pool();
    // Seven workflows at one time, three at others.
    for (i, at) in [5, 5, 5, 5, 5, 5, 5, 3, 9, 1].into_iter().enumerate() {
        sqlx::query(
            "INSERT INTO dbos.workflow_status (workflow_uuid, status, name, executor_id,
                 recovery_attempts, serialization, created_at, updated_at)
             VALUES ($1, 'SUCCESS', 'tie.test', 'observe-node', 1, 'portable_json', $2, $2)",
        )
        .bind(format!("tie-{}", (b'a' + (i * 7 % 10) as u8) as char))
        .bind(1_700_000_000_000i64 + at)
        .execute(pool)
        .await
        .expect("insert");
    }
    for desc in [true, false] {
        let order = if desc { "DESC" } else { "ASC" };
        let expected: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT workflow_uuid FROM dbos.workflow_status WHERE name = 'tie.test'
             ORDER BY created_at {order}, workflow_uuid {order}"
        ))
        .fetch_all(pool)
        .await
        .expect("expected order");
        assert_eq!(expected.len(), 10);
        let mut paged = Vec::new();
        for offset in (0..12).step_by(3) {
            let page = list(
                pool,
                &ListFilter {
                    name: Some("tie.test".into()),
                    limit: Some(3),
                    offset: Some(offset),
                    sort_desc: desc,
                    ..ListFilter::default()
                },
            )
            .await
            .expect("page");
            assert!(page.len() <= 3);
            paged.extend(page.into_iter().map(|w| w.workflow_id));
        }
        assert_eq!(paged, expected, "sort_desc {desc}");
    }

    // `dbos task list`: the newest command tasks, of one status when asked.
    for (id, status, at) in [
        ("task-old", "SUCCESS", 1),
        ("task-failed", "ERROR", 2),
        ("task-mid", "SUCCESS", 3),
        ("task-new", "SUCCESS", 4),
    ] {
        sqlx::query(
            "INSERT INTO dbos.workflow_status (workflow_uuid, status, name, executor_id,
                 recovery_attempts, serialization, created_at, updated_at)
             VALUES ($1, $2, 'dbos.command', 'observe-node', 1, 'portable_json', $3, $3)",
        )
        .bind(id)
        .bind(status)
        .bind(1_700_000_000_000i64 + at)
        .execute(pool)
        .await
        .expect("insert");
    }
    let ids = |tasks: Vec<dbos_services::scheduler::tasks::Task>| {
        tasks.into_iter().map(|t| t.task_id).collect::<Vec<_>>()
    };
    let tasks = dbos_services::scheduler::tasks::list;
    assert_eq!(
        ids(tasks(pool, None, 2).await.expect("tasks")),
        ["task-new", "task-mid"]
    );
    assert_eq!(
        ids(tasks(pool, Some("ERROR"), 10).await.expect("tasks")),
        ["task-failed"]
    );
    n.stop().await;
}
