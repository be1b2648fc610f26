//! Messaging semantics: send/recv mailboxes, idempotency, exactly-once inside workflows,
//! events with history, streams read live, pub/sub topics with cursors, limits and bad input.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dbos_msg::{Outgoing, Start};
use dbos_services::testing::{node, node_on, seed, status, step_names, wait_status};
use dbos_services::workflow::{self, Options, StartOptions, TopicMessage};

fn id(s: &str) -> StartOptions {
    StartOptions {
        workflow_id: Some(s.to_owned()),
        ..StartOptions::default()
    }
}

const WAIT: Duration = Duration::from_secs(20);

/// Messaging whose waiters never re-check on their own within a test: only notifications
/// (the server's, or the node's own wake-ups) wake them.
fn no_recheck() -> dbos_msg::Options {
    dbos_msg::Options {
        recheck_interval_ms: 3_600_000,
        ..dbos_msg::Options::default()
    }
}

/// A node on a fresh database whose messaging runs with `msg`.
async fn node_with_msg(
    register: impl FnOnce(&mut workflow::Registry),
    msg: dbos_msg::Options,
) -> dbos_services::testing::Node {
    let db = dbos_kernel::testing::database().await;
    let opts = Options {
        msg,
        ..Options::default()
    };
    node_on(db, register, opts).await
}

/// Receives `n` messages of topic "a", then one of "b", then times out once on "a".
async fn receiver(
    ctx: workflow::Context,
    (n,): (i64,),
) -> Result<Vec<Option<String>>, workflow::Error> {
    let mut got = Vec::new();
    for _ in 0..n {
        got.push(ctx.recv::<String>(Some("a"), WAIT).await?);
    }
    got.push(ctx.recv(Some("b"), WAIT).await?);
    got.push(ctx.recv(Some("a"), Duration::from_millis(200)).await?);
    Ok(got)
}

async fn unconsumed(pool: &sqlx::PgPool, dest: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM dbos.notifications WHERE destination_uuid = $1 AND NOT consumed",
    )
    .bind(dest)
    .fetch_one(pool)
    .await
    .expect("count")
}

#[tokio::test]
async fn mailboxes_are_fifo_per_topic_independent_and_recv_times_out() {
    let n = node(|r| {
        r.register("receiver", receiver);
    })
    .await;
    let h =
        n.wf.start::<_, Vec<Option<String>>>("receiver", (3,), id("rx"))
            .await
            .expect("start");
    let msg = n.wf.messages();
    // Sent before the receiver waits on "b": topics are separate mailboxes.
    msg.send("rx", "b1", Some("b"), None)
        .await
        .expect("send b1");
    for m in ["a1", "a2", "a3"] {
        msg.send("rx", m, Some("a"), None).await.expect("send a");
    }
    let out = h.result().await.expect("receiver finishes");
    let want: Vec<Option<String>> = vec![
        Some("a1".into()),
        Some("a2".into()),
        Some("a3".into()),
        Some("b1".into()),
        None,
    ];
    assert_eq!(out, want);
    // Each recv takes two function IDs (the receive and its timer), as in DBOS; the timer is
    // only recorded by a receive that waited a while (here: the one that timed out).
    let steps = step_names(n.pool(), "rx").await;
    let recvs: Vec<i32> = steps
        .iter()
        .filter(|(_, name)| name == "DBOS.recv")
        .map(|(fid, _)| *fid)
        .collect();
    assert_eq!(recvs, vec![1, 3, 5, 7, 9]);
    assert!(steps
        .iter()
        .all(|(fid, name)| name == "DBOS.recv" || (name == "DBOS.sleep" && fid % 2 == 0)));
    assert!(
        steps
            .iter()
            .any(|(fid, name)| *fid == 10 && name == "DBOS.sleep"),
        "the receive that timed out waited on its timer"
    );
    let consumed: Vec<(String, i32)> = sqlx::query_as(
        "SELECT message, consumed_by_function_id FROM dbos.notifications
         WHERE destination_uuid = 'rx' ORDER BY consumed_by_function_id",
    )
    .fetch_all(n.pool())
    .await
    .expect("rows");
    assert_eq!(
        consumed,
        vec![
            ("\"a1\"".into(), 1),
            ("\"a2\"".into(), 3),
            ("\"a3\"".into(), 5),
            ("\"b1\"".into(), 7)
        ]
    );
    n.stop().await;
}

async fn parked(ctx: workflow::Context, (_,): (i64,)) -> Result<Option<i64>, workflow::Error> {
    ctx.recv(None, WAIT).await
}

#[tokio::test]
async fn idempotency_keys_deliver_once_and_missing_destinations_store_nothing() {
    let n = node(|r| {
        r.register("parked", parked);
    })
    .await;
    let h =
        n.wf.start::<_, Option<i64>>("parked", (0,), id("p1"))
            .await
            .expect("start");
    let msg = n.wf.messages();
    assert!(msg.send("p1", &7, None, Some("k")).await.expect("first"));
    assert!(!msg.send("p1", &8, None, Some("k")).await.expect("repeat"));
    assert_eq!(h.result().await.expect("done"), Some(7));
    let rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM dbos.notifications WHERE destination_uuid = 'p1'")
            .fetch_one(n.pool())
            .await
            .expect("count");
    assert_eq!(rows, 1, "the repeated send was not stored");

    let err = msg
        .send("nobody", &1, None, None)
        .await
        .expect_err("no such workflow");
    assert!(
        matches!(err, dbos_msg::Error::NoSuchWorkflow(ref w) if w == "nobody"),
        "{err}"
    );
    // A bulk send with one missing destination stores none and names the missing one.
    let bulk = vec![
        Outgoing {
            destination: "p1".into(),
            message: "1".into(),
            topic: None,
            idempotency_key: None,
        },
        Outgoing {
            destination: "ghost".into(),
            message: "2".into(),
            topic: None,
            idempotency_key: None,
        },
    ];
    let err = msg.send_bulk(&bulk).await.expect_err("missing destination");
    assert!(err.to_string().contains("ghost"), "{err}");
    assert_eq!(unconsumed(n.pool(), "p1").await, 0);
    // Over the size limit: a clear error and nothing stored.
    let big = "x".repeat(msg.options().message_bytes_max + 1);
    let err = msg
        .send("p1", &big, None, None)
        .await
        .expect_err("too large");
    assert!(matches!(err, dbos_msg::Error::TooLarge { .. }), "{err}");
    assert_eq!(unconsumed(n.pool(), "p1").await, 0);
    n.stop().await;
}

#[tokio::test]
async fn sql_send_message_wakes_recv_and_invalid_json_is_refused() {
    let n = node(|r| {
        r.register("parked", parked);
    })
    .await;
    let h =
        n.wf.start::<_, Option<i64>>("parked", (0,), id("s1"))
            .await
            .expect("start");
    let err = sqlx::query("SELECT dbos.send_message('s1', '{not json'::json)")
        .execute(n.pool())
        .await
        .expect_err("invalid JSON");
    assert!(dbos_kernel::sqlstate::is(
        &err,
        dbos_kernel::sqlstate::INVALID_TEXT_REPRESENTATION
    ));
    let err = sqlx::query("SELECT dbos.send_message('nobody', '1'::json)")
        .execute(n.pool())
        .await
        .expect_err("missing destination");
    assert!(
        err.to_string().contains("DBOS non-existent workflow"),
        "{err}"
    );
    sqlx::query("SELECT dbos.send_message('s1', '42'::json)")
        .execute(n.pool())
        .await
        .expect("send from SQL");
    assert_eq!(h.result().await.expect("done"), Some(42));
    n.stop().await;
}

/// Sends one message, receives two: the send and the first receive are recorded.
async fn relay(
    ctx: workflow::Context,
    (_,): (i64,),
) -> Result<Vec<Option<String>>, workflow::Error> {
    ctx.send("sink", "hello", None).await?;
    let a = ctx.recv(None, WAIT).await?;
    let b = ctx.recv(None, WAIT).await?;
    Ok(vec![a, b])
}

#[tokio::test]
async fn a_recovered_workflow_neither_resends_nor_takes_a_second_message() {
    let n = node(|r| {
        r.register("relay", relay);
        r.register("parked", parked);
    })
    .await;
    n.wf.start::<_, Option<i64>>("parked", (0,), id("sink"))
        .await
        .expect("sink");
    let v = n.wf.app_version().to_owned();
    // As a crashed execution left it: sent (op 1), received "m1" (ops 2-3).
    seed(
        n.pool(),
        "relay-1",
        "relay",
        "PENDING",
        "crashed-node",
        &v,
        1,
        &[
            (1, "DBOS.send", "null"),
            (2, "DBOS.recv", "\"m1\""),
            (3, "DBOS.sleep", "1e12"),
        ],
    )
    .await;
    n.wf.messages()
        .send("relay-1", "m2", None, None)
        .await
        .expect("m2");
    n.wf.recover(&["crashed-node".to_owned()])
        .await
        .expect("recover");
    let out: Vec<Option<String>> = n.wf.handle("relay-1").result().await.expect("done");
    assert_eq!(out, vec![Some("m1".into()), Some("m2".into())]);
    let sent: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM dbos.notifications WHERE destination_uuid = 'sink'",
    )
    .fetch_one(n.pool())
    .await
    .expect("count");
    assert_eq!(sent, 0, "the recorded send was not repeated");
    let by: Option<i32> = sqlx::query_scalar(
        "SELECT consumed_by_function_id FROM dbos.notifications WHERE destination_uuid = 'relay-1'",
    )
    .fetch_one(n.pool())
    .await
    .expect("m2 row");
    assert_eq!(by, Some(4), "m2 was taken by the second receive only");
    n.stop().await;
}

/// Publishes its progress as events, and waits for a go-ahead in between.
async fn progress(ctx: workflow::Context, (_,): (i64,)) -> Result<String, workflow::Error> {
    ctx.set_event("stage", "started").await?;
    ctx.set_event("owner", &serde_json::json!({"team": "ops"}))
        .await?;
    let go: Option<String> = ctx.recv(Some("go"), WAIT).await?;
    ctx.set_event("stage", "done").await?;
    Ok(go.unwrap_or_default())
}

/// Reads another workflow's event from inside a workflow.
async fn watcher(
    ctx: workflow::Context,
    (_,): (i64,),
) -> Result<(Option<String>, Option<String>), workflow::Error> {
    let seen = ctx.get_event("ev", "stage", WAIT).await?;
    let missing = ctx
        .get_event("ev", "never-set", Duration::from_millis(100))
        .await?;
    Ok((seen, missing))
}

#[tokio::test]
async fn events_wait_latest_wins_history_is_kept_and_reads_are_recorded() {
    let n = node(|r| {
        r.register("progress", progress);
        r.register("watcher", watcher);
    })
    .await;
    let h =
        n.wf.start::<_, String>("progress", (0,), id("ev"))
            .await
            .expect("start");
    let msg = n.wf.messages();
    let stage: Option<String> = msg.get_event("ev", "stage", WAIT).await.expect("wait");
    assert_eq!(stage.as_deref(), Some("started"));
    let w: (Option<String>, Option<String>) =
        n.wf.run("watcher", (0,), id("w")).await.expect("watcher");
    assert_eq!(w, (Some("started".into()), None));
    msg.send("ev", "go!", Some("go"), None).await.expect("go");
    assert_eq!(h.result().await.expect("done"), "go!");
    let stage: Option<String> = msg
        .get_event("ev", "stage", Duration::ZERO)
        .await
        .expect("read");
    assert_eq!(stage.as_deref(), Some("done"), "the latest value wins");
    let all = msg.get_all_events("ev").await.expect("all");
    assert_eq!(
        all,
        vec![
            ("owner".into(), r#"{"team":"ops"}"#.into()),
            ("stage".into(), "\"done\"".into())
        ]
    );
    let history: Vec<(i32, String)> = sqlx::query_as(
        "SELECT function_id, value FROM dbos.workflow_events_history
         WHERE workflow_uuid = 'ev' AND key = 'stage' ORDER BY function_id",
    )
    .fetch_all(n.pool())
    .await
    .expect("history");
    assert_eq!(
        history,
        vec![(1, "\"started\"".into()), (5, "\"done\"".into())]
    );
    let missing: Option<String> = msg
        .get_event("ev", "nope", Duration::from_millis(50))
        .await
        .expect("timeout");
    assert_eq!(missing, None);
    // The watcher's reads are recorded: a rewind replays them instead of reading again.
    dbos_services::workflow::manage::rewind(n.pool(), "w", 5)
        .await
        .expect("rewind");
    n.wf.wake();
    let again: (Option<String>, Option<String>) = n.wf.handle("w").result().await.expect("again");
    assert_eq!(again, (Some("started".into()), None));
    n.stop().await;
}

/// Writes `n` values to stream "out", waiting for a tick message before each, then closes it
/// (or fails without closing when `n` is negative).
async fn writer(ctx: workflow::Context, (n,): (i64,)) -> Result<i64, workflow::Error> {
    for i in 0..n.abs() {
        ctx.recv::<i64>(Some("tick"), WAIT).await?;
        ctx.write_stream("out", &i).await?;
    }
    if n < 0 {
        return Err(workflow::Error::failed("Crash", "stopped without closing"));
    }
    ctx.close_stream("out").await?;
    Ok(n)
}

/// Reads workflow "w1"'s stream "out" from inside a workflow.
async fn stream_reader(ctx: workflow::Context, (_,): (i64,)) -> Result<Vec<i64>, workflow::Error> {
    let mut s = ctx.read_stream("w1", "out");
    let mut got = Vec::new();
    while let Some(v) = s.next::<i64>(WAIT).await? {
        got.push(v);
    }
    assert!(s.is_done());
    Ok(got)
}

#[tokio::test]
async fn streams_are_read_live_until_closed_or_the_writer_ends() {
    let n = node(|r| {
        r.register("writer", writer);
        r.register("stream_reader", stream_reader);
    })
    .await;
    let msg = n.wf.messages().clone();
    n.wf.start::<_, i64>("writer", (4,), id("w1"))
        .await
        .expect("writer");
    let live = tokio::spawn({
        let msg = msg.clone();
        async move {
            let mut r = msg.read_stream("w1", "out", 0);
            let mut got = Vec::new();
            while let Some(v) = r.next::<i64>(WAIT).await.expect("read") {
                got.push(v);
                // Each value read releases the next.
                msg.send("w1", &0, Some("tick"), None).await.expect("tick");
            }
            (got, r.is_done())
        }
    });
    msg.send("w1", &0, Some("tick"), None)
        .await
        .expect("first tick");
    let (got, done) = live.await.expect("reader");
    assert_eq!(got, vec![0, 1, 2, 3]);
    assert!(done, "the reader stopped at the close");
    // From an offset.
    let mut r = msg.read_stream("w1", "out", 2);
    assert_eq!(r.next::<i64>(WAIT).await.expect("2"), Some(2));
    assert_eq!(r.next::<i64>(WAIT).await.expect("3"), Some(3));
    assert_eq!(r.next::<i64>(WAIT).await.expect("end"), None);
    // Inside a workflow every read is recorded, the end too.
    let inside: Vec<i64> =
        n.wf.run("stream_reader", (0,), id("sr"))
            .await
            .expect("inside");
    assert_eq!(inside, vec![0, 1, 2, 3]);
    let reads = step_names(n.pool(), "sr").await;
    assert_eq!(reads.len(), 5);
    assert!(reads.iter().all(|(_, name)| name == "DBOS.readStream"));
    // A writer that fails without closing still ends the stream for its readers.
    n.wf.start::<_, i64>("writer", (-2,), id("w2"))
        .await
        .expect("failing writer");
    for _ in 0..2 {
        msg.send("w2", &0, Some("tick"), None).await.expect("tick");
    }
    let mut r = msg.read_stream("w2", "out", 0);
    let mut got = Vec::new();
    while let Some(v) = r.next::<i64>(WAIT).await.expect("read") {
        got.push(v);
    }
    assert_eq!(got, vec![0, 1]);
    assert!(r.is_done());
    wait_status(n.pool(), "w2", "ERROR").await;
    // A writer still running (or died and not yet recovered): a read times out, the stream
    // is not over, and the reader picks up where it was once values come.
    n.wf.start::<_, i64>("writer", (1,), id("w3"))
        .await
        .expect("slow writer");
    let mut r = msg.read_stream("w3", "out", 0);
    assert_eq!(
        r.next::<i64>(Duration::from_millis(100))
            .await
            .expect("timeout"),
        None
    );
    assert!(!r.is_done());
    msg.send("w3", &0, Some("tick"), None).await.expect("tick");
    assert_eq!(r.next::<i64>(WAIT).await.expect("value"), Some(0));
    assert_eq!(r.next::<i64>(WAIT).await.expect("end"), None);
    assert!(r.is_done());
    // A stream of a workflow that does not exist is an error, not an endless wait.
    let err = msg
        .read_stream("nobody", "out", 0)
        .next::<i64>(WAIT)
        .await
        .expect_err("no writer");
    assert!(matches!(err, dbos_msg::Error::NoSuchWorkflow(_)), "{err}");
    n.stop().await;
}

/// Subscribes to "news" and consumes until it has `n` messages; returns them.
async fn subscriber(
    ctx: workflow::Context,
    (n,): (i64,),
) -> Result<Vec<TopicMessage<String>>, workflow::Error> {
    ctx.subscribe("news", Start::Next).await?;
    ctx.set_event("ready", &true).await?;
    let mut got = Vec::new();
    while (got.len() as i64) < n {
        got.extend(ctx.next_messages::<String>("news", WAIT).await?);
    }
    Ok(got)
}

/// Publishes `n` messages to "news" in one batch.
async fn publisher(ctx: workflow::Context, (n,): (i64,)) -> Result<(i64, i64), workflow::Error> {
    let batch: Vec<String> = (0..n).map(|i| format!("n{i}")).collect();
    ctx.publish("news", &batch).await
}

#[tokio::test]
async fn a_publish_reaches_every_subscriber_once_in_order() {
    let n = node(|r| {
        r.register("subscriber", subscriber);
        r.register("publisher", publisher);
    })
    .await;
    let msg = n.wf.messages();
    let mut handles = Vec::new();
    for i in 0..3 {
        let wid = format!("sub-{i}");
        handles.push(
            n.wf.start::<_, Vec<TopicMessage<String>>>("subscriber", (5,), id(&wid))
                .await
                .expect("start"),
        );
        let ready: Option<bool> = msg.get_event(&wid, "ready", WAIT).await.expect("ready");
        assert_eq!(ready, Some(true));
    }
    let range: (i64, i64) = n.wf.run("publisher", (3,), id("pub-1")).await.expect("pub");
    assert_eq!(range, (1, 3));
    assert_eq!(
        msg.publish("news", &["n3", "n4"])
            .await
            .expect("client publish"),
        (4, 5)
    );
    for h in handles {
        let got = h.result().await.expect("subscriber");
        let payloads: Vec<(i64, String)> = got.into_iter().map(|m| (m.seq, m.payload)).collect();
        assert_eq!(
            payloads,
            (0..5).map(|i| (i + 1, format!("n{i}"))).collect::<Vec<_>>()
        );
    }
    // One stored copy per message, whatever the number of subscribers.
    let (stored, cursors): (i64, Vec<i64>) = (
        sqlx::query_scalar("SELECT count(*) FROM msg.messages WHERE topic = 'news'")
            .fetch_one(n.pool())
            .await
            .expect("stored"),
        sqlx::query_scalar("SELECT cursor FROM msg.subscriptions WHERE topic = 'news' ORDER BY 1")
            .fetch_all(n.pool())
            .await
            .expect("cursors"),
    );
    assert_eq!(stored, 5);
    assert_eq!(cursors, vec![5, 5, 5]);
    let view: (i64, i64, i64) = sqlx::query_as(
        "SELECT head_seq, subscribers, retained FROM os.topics WHERE topic = 'news'",
    )
    .fetch_one(n.pool())
    .await
    .expect("os.topics");
    assert_eq!(view, (5, 3, 5));
    n.stop().await;
}

#[tokio::test]
async fn plain_consumers_commit_the_cursor_with_their_transaction_and_retention_sweeps() {
    // The node's own sweep stays out of the way of the one this test runs and counts.
    let n = node_with_msg(
        |_| {},
        dbos_msg::Options {
            sweep_interval_ms: 86_400_000,
            ..dbos_msg::Options::default()
        },
    )
    .await;
    let msg = n.wf.messages();
    assert_eq!(
        msg.subscribe("jobs", "worker", Start::Next)
            .await
            .expect("sub"),
        0
    );
    msg.publish("jobs", &[1, 2, 3]).await.expect("publish");
    // A consumer whose transaction rolls back has consumed nothing.
    let mut tx = n.pool().begin().await.expect("begin");
    let got = dbos_msg::sql::consume(&mut tx, "jobs", "worker", 2)
        .await
        .expect("consume");
    assert_eq!(got.len(), 2);
    tx.rollback().await.expect("rollback");
    let got = msg
        .consume("jobs", "worker", Duration::ZERO)
        .await
        .expect("consume again");
    assert_eq!(
        got.iter().map(|d| d.payload.as_str()).collect::<Vec<_>>(),
        vec!["1", "2", "3"]
    );
    // Re-subscribing keeps the place; nothing new means an empty batch after the timeout.
    assert_eq!(
        msg.subscribe("jobs", "worker", Start::Next)
            .await
            .expect("again"),
        3
    );
    assert!(msg
        .consume("jobs", "worker", Duration::from_millis(50))
        .await
        .expect("empty")
        .is_empty());
    // A new subscriber from the oldest retained message; an unknown one is refused.
    msg.subscribe("jobs", "late", Start::Oldest)
        .await
        .expect("late");
    assert_eq!(
        msg.consume("jobs", "late", Duration::ZERO)
            .await
            .expect("late")
            .len(),
        3
    );
    let err = msg
        .consume("jobs", "stranger", Duration::ZERO)
        .await
        .expect_err("not subscribed");
    assert!(
        matches!(err, dbos_msg::Error::NotSubscribed { .. }),
        "{err}"
    );
    // Retention by count keeps the newest two.
    msg.set_retention("jobs", None, Some(2))
        .await
        .expect("retention");
    msg.publish("jobs", &[4]).await.expect("publish");
    let mut conn = n.pool().acquire().await.expect("conn");
    let swept = dbos_msg::sql::sweep(&mut conn).await.expect("sweep");
    assert_eq!(swept, 2);
    let left: Vec<i64> =
        sqlx::query_scalar("SELECT seq FROM msg.messages WHERE topic = 'jobs' ORDER BY seq")
            .fetch_all(n.pool())
            .await
            .expect("left");
    assert_eq!(left, vec![3, 4]);
    // Bad names and limits are clear errors.
    let err = msg.publish("", &[1]).await.expect_err("empty topic");
    assert!(matches!(err, dbos_msg::Error::InvalidName { .. }), "{err}");
    // A long name is quoted by its first 40 characters and its length.
    let err = msg
        .publish(&"t".repeat(300), &[1])
        .await
        .expect_err("long topic");
    assert_eq!(
        err.to_string(),
        format!(
            "invalid topic \"{}\"… (300 bytes): it is longer than 255 bytes",
            "t".repeat(40)
        )
    );
    let err = msg
        .set_retention("jobs", Some(0), None)
        .await
        .expect_err("zero retention");
    assert!(err.to_string().contains("check"), "{err}");
    n.stop().await;
}

#[tokio::test]
async fn consumes_of_many_subscriptions_in_one_statement_each_take_their_own_messages() {
    let n = node_with_msg(|_| {}, no_recheck()).await;
    let msg = n.wf.messages();
    for (topic, sub) in [("jobs", "a"), ("jobs", "b"), ("news", "a")] {
        msg.subscribe(topic, sub, Start::Next).await.expect("sub");
    }
    msg.publish("jobs", &[1, 2, 3, 4, 5])
        .await
        .expect("publish");
    msg.publish("news", &[10]).await.expect("publish");
    let subs: Vec<(String, String)> = [
        ("jobs", "a"),
        ("jobs", "stranger"),
        ("news", "a"),
        ("jobs", "b"),
    ]
    .iter()
    .map(|(t, s)| ((*t).to_owned(), (*s).to_owned()))
    .collect();
    let payloads = |r: &dbos_msg::Result<Vec<dbos_msg::Delivered>>| -> Vec<String> {
        r.as_ref()
            .expect("consumed")
            .iter()
            .map(|d| d.payload.clone())
            .collect()
    };
    // Rolled back, the statement consumed nothing.
    let mut tx = n.pool().begin().await.expect("begin");
    let twice = [subs[0].clone(), subs[2].clone(), subs[0].clone()];
    let err = dbos_msg::sql::consume_many(&mut tx, &twice, 3)
        .await
        .expect_err("a subscription named twice");
    assert!(
        matches!(&err, dbos_msg::Error::NamedTwice { topic, subscriber } if topic == "jobs" && subscriber == "a"),
        "{err}"
    );
    let got = dbos_msg::sql::consume_many(&mut tx, &subs, 3)
        .await
        .expect("consume many");
    assert_eq!(payloads(&got[0]), ["1", "2", "3"]);
    tx.rollback().await.expect("rollback");
    let mut conn = n.pool().acquire().await.expect("conn");
    let got = dbos_msg::sql::consume_many(&mut conn, &subs, 3)
        .await
        .expect("consume many");
    assert_eq!(got.len(), 4);
    assert_eq!(payloads(&got[0]), ["1", "2", "3"]);
    assert!(
        matches!(&got[1], Err(dbos_msg::Error::NotSubscribed { subscriber, .. }) if subscriber == "stranger"),
        "{:?}",
        got[1]
    );
    assert_eq!(payloads(&got[2]), ["10"]);
    assert_eq!(payloads(&got[3]), ["1", "2", "3"]);
    // Each cursor moved by what its own subscription took, and each takes from its own place;
    // one with nothing new gets nothing.
    let one = dbos_msg::sql::consume(&mut conn, "jobs", "a", 1)
        .await
        .expect("consume");
    assert_eq!(one.iter().map(|d| d.seq).collect::<Vec<_>>(), [4]);
    let got = dbos_msg::sql::consume_many(&mut conn, &subs, 10)
        .await
        .expect("consume many");
    assert_eq!(payloads(&got[0]), ["5"]);
    assert!(payloads(&got[2]).is_empty());
    assert_eq!(payloads(&got[3]), ["4", "5"]);
    let cursors: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT topic, subscriber, cursor FROM msg.subscriptions ORDER BY topic, subscriber",
    )
    .fetch_all(&mut *conn)
    .await
    .expect("cursors");
    let want = [("jobs", "a", 5), ("jobs", "b", 5), ("news", "a", 1)];
    assert_eq!(
        cursors,
        want.map(|(t, s, c)| (t.to_owned(), s.to_owned(), c))
    );
    drop(conn);

    // Through the client, consumers of 40 subscriptions at once (their consumes combined) and
    // two that share one subscription: every subscriber gets every message once, in order, and
    // the two sharing one get disjoint parts that make up the whole.
    msg.subscribe("fan", "shared", Start::Next)
        .await
        .expect("sub");
    let subscribers: Vec<String> = (0..40).map(|i| format!("s{i}")).collect();
    for s in &subscribers {
        msg.subscribe("fan", s, Start::Next).await.expect("sub");
    }
    const MESSAGES: usize = 600;
    let taken = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut consumers = Vec::new();
    for name in subscribers
        .iter()
        .cloned()
        .chain(["shared".into(), "shared".into()])
    {
        let (msg, taken) = (msg.clone(), taken.clone());
        consumers.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            let shared = name == "shared";
            loop {
                if shared && taken.load(std::sync::atomic::Ordering::SeqCst) >= MESSAGES {
                    break;
                }
                if !shared && seqs.len() >= MESSAGES {
                    break;
                }
                let got = msg
                    .consume("fan", &name, Duration::from_millis(200))
                    .await
                    .expect("consume");
                if shared {
                    taken.fetch_add(got.len(), std::sync::atomic::Ordering::SeqCst);
                }
                seqs.extend(got.iter().map(|d| d.seq));
            }
            (name, seqs)
        }));
    }
    let batch: Vec<i64> = (0..50).collect();
    for _ in 0..MESSAGES / batch.len() {
        msg.publish("fan", &batch).await.expect("publish");
    }
    let every: Vec<i64> = (1..=MESSAGES as i64).collect();
    let mut shared = Vec::new();
    for c in consumers {
        let (name, seqs) = tokio::time::timeout(WAIT, c)
            .await
            .expect("consumers end")
            .expect("consumer");
        if name == "shared" {
            assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
            shared.extend(seqs);
        } else {
            assert_eq!(seqs, every, "{name}");
        }
    }
    shared.sort_unstable();
    assert_eq!(shared, every);
    n.stop().await;
}

#[tokio::test]
async fn a_consume_that_fails_fails_alone_though_its_statement_was_shared() {
    let n = node_with_msg(|_| {}, no_recheck()).await;
    let msg = n.wf.messages();
    let names: Vec<String> = (0..10)
        .map(|i| format!("good{i}"))
        .chain(["poison".to_owned()])
        .collect();
    for s in &names {
        msg.subscribe("jobs", s, Start::Next).await.expect("sub");
    }
    // A trigger of the application's that refuses to move one subscriber's cursor.
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'poisoned subscriber'; END $$;
         CREATE TRIGGER refuse_poison BEFORE UPDATE ON msg.subscriptions FOR EACH ROW
             WHEN (NEW.subscriber = 'poison') EXECUTE FUNCTION refuse_poison();",
    )
    .execute(n.pool())
    .await
    .expect("trigger");
    msg.publish("jobs", &[1, 2, 3]).await.expect("publish");
    // Together, the poisoned subscription fails the whole statement, which moves nothing.
    let subs: Vec<(String, String)> = names
        .iter()
        .map(|s| ("jobs".to_owned(), s.clone()))
        .collect();
    let mut conn = n.pool().acquire().await.expect("conn");
    let err = dbos_msg::sql::consume_many(&mut conn, &subs, 10)
        .await
        .expect_err("poisoned statement");
    assert!(err.to_string().contains("poisoned subscriber"), "{err}");
    let moved: i64 = sqlx::query_scalar("SELECT count(*) FROM msg.subscriptions WHERE cursor > 0")
        .fetch_one(&mut *conn)
        .await
        .expect("cursors");
    assert_eq!(moved, 0);
    drop(conn);
    // Through the client, every consume but the poisoned one gets its messages. Two consumes
    // that wait on a lock hold both of the client's statements in flight, so the other nine
    // go together in the next one, which the poisoned subscription fails.
    let mut blocker = n.pool().begin().await.expect("begin");
    sqlx::query(
        "SELECT 1 FROM msg.subscriptions WHERE subscriber IN ('good0', 'good1') FOR UPDATE",
    )
    .execute(&mut *blocker)
    .await
    .expect("lock");
    let consume = |s: &String| {
        let (msg, s) = (msg.clone(), s.clone());
        tokio::spawn(async move { (s.clone(), msg.consume("jobs", &s, Duration::ZERO).await) })
    };
    let mut consumes = Vec::new();
    for (i, s) in names.iter().enumerate() {
        consumes.push(consume(s));
        if i < 2 {
            dbos_kernel::testing::waiting_on_locks(n.pool(), i as i64 + 1).await;
        }
    }
    // The others' requests are sent before this task runs again.
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    blocker.commit().await.expect("release");
    for c in consumes {
        let (name, got) = c.await.expect("consumer");
        if name == "poison" {
            let err = got.expect_err("poisoned");
            assert!(err.to_string().contains("poisoned subscriber"), "{err}");
        } else {
            let got = got.expect("consumed");
            assert_eq!(
                got.iter().map(|d| d.seq).collect::<Vec<_>>(),
                [1, 2, 3],
                "{name}"
            );
        }
    }
    n.stop().await;
}

/// A subscribe that waits for another's insert of the same new topic, or of the same
/// subscription, gets its cursor once the other commits: the row it waited for was inserted
/// after its statement's snapshot.
#[tokio::test]
async fn subscribes_that_race_for_a_new_topic_or_subscription_get_their_cursor() {
    let n = node(|_| {}).await;
    let msg = n.wf.messages();
    for (topic, first, second) in [("fresh", "a", "b"), ("fresh", "c", "c")] {
        let mut tx = n.pool().begin().await.expect("begin");
        let cursor = dbos_msg::sql::subscribe(&mut tx, topic, first, Start::Oldest)
            .await
            .expect("first subscribe");
        assert_eq!(cursor, 0);
        let racing = {
            let (msg, topic, second) = (msg.clone(), topic.to_owned(), second.to_owned());
            tokio::spawn(async move { msg.subscribe(&topic, &second, Start::Next).await })
        };
        dbos_kernel::testing::waiting_on_locks(n.pool(), 1).await;
        tx.commit().await.expect("commit");
        let cursor = racing
            .await
            .expect("subscriber")
            .unwrap_or_else(|e| panic!("{second} subscribes to {topic} beside {first}: {e}"));
        assert_eq!(cursor, 0, "{second} on {topic}");
    }
    // An existing subscription keeps its cursor, and the topic its sequence.
    msg.publish("fresh", &[1, 2]).await.expect("publish");
    let got = msg
        .consume("fresh", "a", Duration::ZERO)
        .await
        .expect("consume");
    assert_eq!(got.len(), 2);
    assert_eq!(
        msg.subscribe("fresh", "a", Start::Oldest)
            .await
            .expect("again"),
        2
    );
    assert_eq!(
        msg.subscribe("fresh", "d", Start::Next).await.expect("new"),
        2
    );
    n.stop().await;
}

/// Messages keep their topic as a foreign key would, though the check runs once per statement:
/// a message of a missing topic, or moved to one, is refused; a topic with messages cannot be
/// renamed; deleting a topic deletes its messages.
#[tokio::test]
async fn a_topics_messages_need_their_topic() {
    let n = node(|_| {}).await;
    let msg = n.wf.messages();
    msg.publish("kept", &[1, 2]).await.expect("publish");
    msg.publish("other", &[3]).await.expect("publish");
    let refused = [
        "INSERT INTO msg.messages (topic, seq, payload) VALUES ('kept', 9, '9'), ('gone', 1, '1')",
        "UPDATE msg.messages SET topic = 'gone' WHERE topic = 'kept' AND seq = 1",
        "UPDATE msg.topics SET name = 'renamed' WHERE name = 'kept'",
    ];
    for sql in refused {
        let err = sqlx::query(sql).execute(n.pool()).await.expect_err(sql);
        let code = err
            .as_database_error()
            .and_then(|e| e.code())
            .map(|c| c.into_owned());
        assert_eq!(code.as_deref(), Some("23503"), "{sql}: {err}");
    }
    // Once its messages are gone, a topic may be renamed; its next sequence number moves with it.
    // Deleting a topic deletes its messages.
    for sql in [
        "DELETE FROM msg.messages WHERE topic = 'other'",
        "UPDATE msg.topics SET name = 'quiet' WHERE name = 'other'",
        "DELETE FROM msg.topics WHERE name = 'kept'",
    ] {
        sqlx::query(sql).execute(n.pool()).await.expect(sql);
    }
    let left: Vec<(String, i64)> =
        sqlx::query_as("SELECT topic, seq FROM msg.messages ORDER BY topic, seq")
            .fetch_all(n.pool())
            .await
            .expect("left");
    assert_eq!(left, vec![]);
    let (first, last) = msg.publish("quiet", &[4]).await.expect("publish");
    assert_eq!((first, last), (2, 2));
    n.stop().await;
}

/// Waiting workflows hold neither a pooled connection nor a node slot: 60 in `recv` and 20 in
/// `sleep` on a node of 4 slots and 4 connections, while other work still runs there.
#[tokio::test]
async fn many_waiting_workflows_hold_no_pooled_connection_and_no_slot() {
    let db = dbos_kernel::testing::database().await;
    let mut config = db.config();
    config.pool_size_max = 4;
    config.slots = 4;
    let kernel = dbos_kernel::Kernel::boot(config, &dbos_services::migrations())
        .await
        .expect("boot");
    let mut registry = dbos_services::workflow::Registry::new();
    registry.register("parked", parked);
    registry.register("long_wait", long_wait);
    let wf = dbos_services::workflow::Service::launch(&kernel, registry, Options::default())
        .await
        .expect("launch");
    let (waiting, sleeping) = (60, 20);
    let mut handles = Vec::new();
    let mut sleepers = Vec::new();
    // A start waits for a free slot: each returns only because the ones before gave theirs
    // back when they began to wait.
    let started = tokio::time::timeout(Duration::from_secs(120), async {
        for i in 0..waiting {
            handles.push(
                wf.start::<_, Option<i64>>("parked", (0,), id(&format!("park-{i}")))
                    .await
                    .expect("start"),
            );
        }
        for i in 0..sleeping {
            sleepers.push(
                wf.start::<_, Option<i64>>("long_wait", (1,), id(&format!("sleep-{i}")))
                    .await
                    .expect("start"),
            );
        }
    })
    .await;
    assert!(
        started.is_ok(),
        "{} of {waiting} receivers and {} of {sleeping} sleepers started on 4 slots",
        handles.len(),
        sleepers.len()
    );
    // Parked once each has recorded its timer (a receiver after waiting 100 ms).
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let timers: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM dbos.operation_outputs WHERE function_name = 'DBOS.sleep'",
        )
        .fetch_one(kernel.pool())
        .await
        .expect("count");
        if timers == waiting + sleeping {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{timers} parked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    all_slots_free(&kernel, 4, "no waiting workflow holds a slot").await;
    assert_eq!(
        wf.run::<_, Option<i64>>("long_wait", (2,), id("runs-meanwhile"))
            .await
            .expect("a workflow runs while the others wait"),
        None,
        "a receive with nothing to take times out"
    );
    for i in 0..waiting {
        wf.messages()
            .send(&format!("park-{i}"), &i, None, None)
            .await
            .expect("send while they wait");
    }
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(h.result().await.expect("done"), Some(i as i64));
    }
    for i in 0..sleeping {
        dbos_services::workflow::manage::cancel(kernel.pool(), &format!("sleep-{i}"), false)
            .await
            .expect("cancel");
    }
    for h in sleepers {
        let out = h.result().await;
        assert!(matches!(out, Err(workflow::Error::Cancelled(_))), "{out:?}");
    }
    assert_eq!(status(kernel.pool(), "park-0").await, "SUCCESS");
    all_slots_free(&kernel, 4, "every slot given back").await;
    kernel.shutdown().await.expect("shutdown");
    drop(db);
}

/// Waits until all `slots` of the node are free, failing with `what` after [`WAIT`]. A task
/// gives its slot back as it ends, after what it committed or announced (a parked workflow's
/// timer, a finished one's outcome) is already visible.
async fn all_slots_free(kernel: &dbos_kernel::Kernel, slots: usize, what: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let free = kernel.runtime().free_slots();
        if free == slots {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {free} of {slots} slots free"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn messaging_limits_come_from_options() {
    let n = node_with_msg(
        |r| {
            r.register("big_event", big_event);
        },
        dbos_msg::Options {
            message_bytes_max: 64,
            ..dbos_msg::Options::default()
        },
    )
    .await;
    let err =
        n.wf.run::<_, ()>("big_event", (100,), id("big"))
            .await
            .expect_err("too large");
    assert!(err.to_string().contains("message_bytes_max"), "{err}");
    let events: i64 =
        sqlx::query_scalar("SELECT count(*) FROM dbos.workflow_events WHERE workflow_uuid = 'big'")
            .fetch_one(n.pool())
            .await
            .expect("count");
    assert_eq!(events, 0, "nothing stored");
    n.stop().await;
}

async fn big_event(ctx: workflow::Context, (n,): (i64,)) -> Result<(), workflow::Error> {
    ctx.set_event("blob", &"x".repeat(n as usize)).await
}

/// Sleeps an hour (1), receives with nothing to take for 50 ms (2), or waits an hour in `recv`.
async fn long_wait(
    ctx: workflow::Context,
    (sleep,): (i64,),
) -> Result<Option<i64>, workflow::Error> {
    match sleep {
        1 => {
            ctx.sleep(Duration::from_secs(3600)).await?;
            Ok(None)
        }
        2 => ctx.recv(Some("none"), Duration::from_millis(50)).await,
        _ => ctx.recv(None, Duration::from_secs(3600)).await,
    }
}

/// A node running [`long_wait`] whose waiters never re-check on their own.
async fn long_wait_node() -> dbos_services::testing::Node {
    node_with_msg(
        |r| {
            r.register("long_wait", long_wait);
        },
        no_recheck(),
    )
    .await
}

/// Starts [`long_wait`] as `wid` and returns once it waits (its timer is recorded).
async fn waiting(
    n: &dbos_services::testing::Node,
    wid: &str,
    sleep: i64,
) -> workflow::WorkflowHandle<Option<i64>> {
    let h =
        n.wf.start::<_, Option<i64>>("long_wait", (sleep,), id(wid))
            .await
            .expect("start");
    timer_recorded(n.pool(), wid).await;
    h
}

/// Returns once workflow `wid` has recorded its timer.
async fn timer_recorded(pool: &sqlx::PgPool, wid: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !step_names(pool, wid)
        .await
        .iter()
        .any(|(_, s)| s == "DBOS.sleep")
    {
        assert!(tokio::time::Instant::now() < deadline, "{wid} waits");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_cancel_wakes_workflows_waiting_in_recv_and_sleep() {
    // No periodic re-check: only the cancellation notice can end these waits.
    let n = long_wait_node().await;
    for (wid, sleep) in [("in-recv", 0), ("in-sleep", 1)] {
        let h = waiting(&n, wid, sleep).await;
        dbos_services::workflow::manage::cancel(n.pool(), wid, false)
            .await
            .expect("cancel");
        let out = tokio::time::timeout(Duration::from_secs(60), h.result())
            .await
            .expect("the cancel ended the wait");
        assert!(matches!(out, Err(workflow::Error::Cancelled(_))), "{out:?}");
        assert_eq!(status(n.pool(), wid).await, "CANCELLED");
    }
    n.stop().await;
}

#[tokio::test]
async fn a_running_workflow_is_not_resumed_beside_itself() {
    let n = long_wait_node().await;
    let h = waiting(&n, "busy", 1).await;
    // Enqueued again, it would start a second execution beside this one.
    let e = dbos_services::workflow::manage::resume(n.pool(), "busy")
        .await
        .expect_err("a running workflow is not resumed");
    assert!(
        matches!(&e, workflow::Error::Invalid(m) if m.contains("running on node")),
        "{e}"
    );
    assert_eq!(status(n.pool(), "busy").await, "PENDING");
    // Cancelled, it resumes.
    dbos_services::workflow::manage::cancel(n.pool(), "busy", false)
        .await
        .expect("cancel");
    let out = tokio::time::timeout(Duration::from_secs(60), h.result())
        .await
        .expect("the cancel ended the wait");
    assert!(matches!(out, Err(workflow::Error::Cancelled(_))), "{out:?}");
    assert!(dbos_services::workflow::manage::resume(n.pool(), "busy")
        .await
        .expect("resume"));
    n.stop().await;
}

/// Executions of [`counted_sleep`] started, and those not yet returned.
static SLEEPS_STARTED: AtomicUsize = AtomicUsize::new(0);
static SLEEPS_LIVE: AtomicUsize = AtomicUsize::new(0);

/// Counts a live execution of [`counted_sleep`] until dropped.
struct LiveSleep;

impl Drop for LiveSleep {
    fn drop(&mut self) {
        SLEEPS_LIVE.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Sleeps an hour, counted in [`SLEEPS_STARTED`] and [`SLEEPS_LIVE`].
async fn counted_sleep(ctx: workflow::Context, (): ()) -> Result<(), workflow::Error> {
    SLEEPS_STARTED.fetch_add(1, Ordering::SeqCst);
    SLEEPS_LIVE.fetch_add(1, Ordering::SeqCst);
    let _live = LiveSleep;
    ctx.sleep(Duration::from_secs(3600)).await
}

/// Waits until `count` holds `want`.
async fn count_reaches(count: &AtomicUsize, want: usize, what: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while count.load(Ordering::SeqCst) != want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {} instead of {want}",
            count.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_resume_by_dbos_tools_stops_the_running_execution() {
    // No periodic re-check: only the resume's notice can end the first execution's wait.
    let n = node_with_msg(
        |r| {
            r.register("counted_sleep", counted_sleep);
        },
        no_recheck(),
    )
    .await;
    let _h =
        n.wf.start::<_, ()>("counted_sleep", (), id("resumed"))
            .await
            .expect("start");
    timer_recorded(n.pool(), "resumed").await;
    // DBOS's resume, as its tools write it: back on the internal queue, whoever runs it.
    let r = sqlx::query(
        "UPDATE dbos.workflow_status
         SET status = 'ENQUEUED', owner_xid = NULL, queue_name = '_dbos_internal_queue',
             recovery_attempts = 0, workflow_deadline_epoch_ms = NULL, deduplication_id = NULL,
             started_at_epoch_ms = NULL, completed_at = NULL
         WHERE workflow_uuid = 'resumed' AND status NOT IN ('SUCCESS', 'ERROR')",
    )
    .execute(n.pool())
    .await
    .expect("DBOS's resume");
    assert_eq!(r.rows_affected(), 1);
    // The node claims it again and starts a second execution; the first stops: one sleeps.
    count_reaches(&SLEEPS_STARTED, 2, "executions started").await;
    count_reaches(&SLEEPS_LIVE, 1, "executions still sleeping").await;
    wait_status(n.pool(), "resumed", "PENDING").await;
    // The second replays the first's timer rather than recording another.
    let timers = step_names(n.pool(), "resumed").await;
    assert_eq!(timers.len(), 1, "{timers:?}");
    dbos_services::workflow::manage::cancel(n.pool(), "resumed", false)
        .await
        .expect("cancel");
    count_reaches(&SLEEPS_LIVE, 0, "executions still sleeping").await;
    n.stop().await;
}

/// Waits for a message, then sets event `ev`.
async fn announcer(ctx: workflow::Context, (): ()) -> Result<(), workflow::Error> {
    let _: Option<String> = ctx.recv(None, WAIT).await?;
    ctx.set_event("ev", &"set").await
}

#[tokio::test]
async fn a_standalone_client_is_woken_by_notifications() {
    let n = node_with_msg(
        |r| {
            r.register("announcer", announcer);
        },
        no_recheck(),
    )
    .await;
    let h =
        n.wf.start::<_, ()>("announcer", (), id("ann"))
            .await
            .expect("start");
    // As a command line makes one: its own LISTEN connection, no node around it, and no
    // periodic re-check: only the event's notification can end its wait.
    let c = dbos_msg::Client::standalone(n.pool().clone(), no_recheck())
        .await
        .expect("a standalone client");
    let reader = c.clone();
    let waited = tokio::spawn(async move {
        reader
            .get_event::<String>("ann", "ev", Duration::from_secs(3600))
            .await
    });
    let deadline = tokio::time::Instant::now() + WAIT;
    while !c.waiters().is_waiting(dbos_msg::Channel::Events, "ann::ev") {
        assert!(tokio::time::Instant::now() < deadline, "the client waits");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    n.wf.messages()
        .send("ann", "go", None, None)
        .await
        .expect("send");
    let got = tokio::time::timeout(Duration::from_secs(60), waited)
        .await
        .expect("the event's notification woke the client")
        .expect("the reader ran")
        .expect("get_event");
    assert_eq!(got.as_deref(), Some("set"));
    h.result().await.expect("the announcer ends");
    n.stop().await;
}

#[tokio::test]
async fn a_delete_ends_the_waits_of_a_running_workflow() {
    // No periodic re-check: only the delete's notice can end these waits.
    let n = long_wait_node().await;
    for (wid, sleep) in [("del-recv", 0), ("del-sleep", 1)] {
        let h = waiting(&n, wid, sleep).await;
        dbos_services::workflow::manage::delete(n.pool(), wid, false)
            .await
            .expect("delete");
        let out = tokio::time::timeout(Duration::from_secs(60), h.result())
            .await
            .expect("the delete ended the wait");
        assert!(out.is_err(), "{out:?}");
    }
    // Its slot is free again: nothing of the deleted workflows still runs.
    n.wait_no_tasks_running().await;
    n.stop().await;
}

/// Runs `$probe` (given the connection `$c`) in a transaction of `$pool`: its result, and
/// whether it wrote anything (a transaction ID was assigned, so its commit would wait for a WAL
/// flush).
macro_rules! probe_in_tx {
    ($pool:expr, |$c:ident| $probe:expr) => {{
        let mut tx = $pool.begin().await.expect("begin");
        let out = {
            let $c: &mut sqlx::PgConnection = &mut tx;
            $probe.await.expect("probe")
        };
        let wrote: bool = sqlx::query_scalar("SELECT pg_current_xact_id_if_assigned() IS NOT NULL")
            .fetch_one(&mut *tx)
            .await
            .expect("xid");
        tx.commit().await.expect("commit");
        (out, wrote)
    }};
}

/// Inserts workflow `mb`, PENDING on `n` and owned by the execution `me`.
async fn owned_by_me(n: &dbos_services::testing::Node) {
    sqlx::query(
        "INSERT INTO dbos.workflow_status
             (workflow_uuid, status, name, executor_id, owner_xid, serialization)
         VALUES ('mb', 'PENDING', 'parked', $1, 'me', 'portable_json')",
    )
    .bind(n.kernel.node_id())
    .execute(n.pool())
    .await
    .expect("a workflow owned by 'me'");
}

#[tokio::test]
async fn a_probe_of_an_empty_mailbox_or_topic_writes_nothing() {
    use dbos_msg::sql::{self, Received};
    let n = node(|_| {}).await;
    let pool = n.pool();
    owned_by_me(&n).await;
    let op = |owner: &'static str, fid: i32| sql::Op {
        workflow_id: "mb",
        owner_xid: owner,
        function_id: fid,
        name: "DBOS.recv",
        started_at_ms: 0,
    };

    // Empty: nothing taken, nothing written, and the owner is still told apart.
    let (got, wrote) = probe_in_tx!(pool, |c| sql::recv_recorded(
        c,
        &op("me", 1),
        Some("t"),
        false
    ));
    assert!(matches!(got, Received::Empty));
    assert!(!wrote, "an empty probe writes nothing");
    let (got, wrote) = probe_in_tx!(pool, |c| sql::recv_recorded(
        c,
        &op("someone-else", 1),
        Some("t"),
        false
    ));
    assert!(matches!(got, Received::NotOwner));
    assert!(!wrote);

    // A message there: taken and recorded; a non-owner takes nothing.
    n.wf.messages()
        .send("mb", "m1", Some("t"), None)
        .await
        .expect("send");
    let (got, wrote) = probe_in_tx!(pool, |c| sql::recv_recorded(
        c,
        &op("someone-else", 1),
        Some("t"),
        false
    ));
    assert!(matches!(got, Received::NotOwner));
    assert!(!wrote, "a non-owner takes nothing");
    let (got, wrote) = probe_in_tx!(pool, |c| sql::recv_recorded(
        c,
        &op("me", 1),
        Some("t"),
        false
    ));
    assert!(matches!(got, Received::Message(ref m) if m.contains("m1")));
    assert!(wrote);
    // The last probe of an empty mailbox records the timeout.
    let (got, wrote) = probe_in_tx!(pool, |c| sql::recv_recorded(
        c,
        &op("me", 3),
        Some("t"),
        true
    ));
    assert!(matches!(got, Received::Empty));
    assert!(wrote, "a timeout is recorded");
    assert_eq!(
        step_names(pool, "mb").await,
        vec![(1, "DBOS.recv".to_owned()), (3, "DBOS.recv".to_owned())]
    );

    // A topic subscription: the same.
    let mut c = pool.acquire().await.expect("conn");
    sql::subscribe(&mut c, "news", "mb-sub", dbos_msg::Start::Oldest)
        .await
        .expect("subscribe");
    drop(c);
    let (got, wrote) = probe_in_tx!(pool, |c| sql::consume_recorded(
        c,
        &op("me", 5),
        "news",
        "mb-sub",
        10,
        false
    ));
    assert_eq!(got.expect("owned").len(), 0);
    assert!(!wrote, "an empty topic probe writes nothing");
    let mut c = pool.acquire().await.expect("conn");
    let missing = sql::consume_recorded(&mut c, &op("me", 5), "news", "nobody", 10, false).await;
    assert!(
        matches!(missing, Err(dbos_msg::Error::NotSubscribed { .. })),
        "{missing:?}"
    );
    sql::publish(&mut c, "news", &["1".to_owned(), "2".to_owned()], None)
        .await
        .expect("publish");
    drop(c);
    let (got, wrote) = probe_in_tx!(pool, |c| sql::consume_recorded(
        c,
        &op("me", 5),
        "news",
        "mb-sub",
        10,
        false
    ));
    let seqs: Vec<i64> = got.expect("owned").iter().map(|d| d.seq).collect();
    assert_eq!(seqs, vec![1, 2]);
    assert!(wrote);
    let (got, _) = probe_in_tx!(pool, |c| sql::consume_recorded(
        c,
        &op("me", 7),
        "news",
        "mb-sub",
        10,
        false
    ));
    assert_eq!(got.expect("owned").len(), 0, "each message is taken once");
}

/// A consume tried again at the same position, after an attempt that committed though its
/// caller saw an error (the combined statement's fallback runs each request alone): it takes
/// nothing more and answers what the first attempt recorded, alone or combined, so no message
/// is consumed without a record.
#[tokio::test]
async fn a_consume_tried_again_at_its_position_answers_its_record_and_takes_nothing() {
    use dbos_msg::sql::{self, Op, RecordedConsume};
    let n = node(|_| {}).await;
    let pool = n.pool();
    for wf in ["wa", "wb"] {
        sqlx::query(
            "INSERT INTO dbos.workflow_status
                 (workflow_uuid, status, name, executor_id, owner_xid, serialization)
             VALUES ($1, 'PENDING', 'parked', $2, 'me', 'portable_json')",
        )
        .bind(wf)
        .bind(n.kernel.node_id())
        .execute(pool)
        .await
        .expect("a parked workflow");
    }
    let mut c = pool.acquire().await.expect("conn");
    for sub in ["wa", "wb"] {
        sql::subscribe(&mut c, "news", sub, dbos_msg::Start::Oldest)
            .await
            .expect("subscribe");
    }
    let publish = |from: i32| (from..from + 3).map(|i| i.to_string()).collect::<Vec<_>>();
    sql::publish(&mut c, "news", &publish(1), None)
        .await
        .expect("publish");
    let op = |wf: &'static str, fid: i32| Op {
        workflow_id: wf,
        owner_xid: "me",
        function_id: fid,
        name: "msg.consume",
        started_at_ms: 0,
    };
    let reqs = |fid: i32| {
        ["wa", "wb"].map(|wf| RecordedConsume {
            op: op(wf, fid),
            topic: "news",
            subscriber: wf,
        })
    };
    let answers = |got: Vec<dbos_msg::Result<Option<Vec<dbos_msg::Delivered>>>>| {
        got.into_iter()
            .map(|a| a.expect("answered").expect("owned"))
            .collect::<Vec<_>>()
    };
    let first = answers(
        sql::consume_recorded_many(&mut c, &reqs(1), 10)
            .await
            .expect("consume"),
    );
    let seqs = |d: &[dbos_msg::Delivered]| d.iter().map(|d| d.seq).collect::<Vec<_>>();
    assert_eq!(seqs(&first[0]), [1, 2, 3]);
    assert_eq!(first[0], first[1]);
    const RECORDS: &str = "SELECT workflow_uuid, function_id, output FROM dbos.operation_outputs
                           WHERE workflow_uuid IN ('wa', 'wb') ORDER BY 1, 2";
    let recorded: Vec<(String, i32, String)> = sqlx::query_as(RECORDS)
        .fetch_all(&mut *c)
        .await
        .expect("records");
    sql::publish(&mut c, "news", &publish(4), None)
        .await
        .expect("publish");

    // The same operations again, combined and alone, with messages waiting.
    let again = answers(
        sql::consume_recorded_many(&mut c, &reqs(1), 10)
            .await
            .expect("consume"),
    );
    assert_eq!(again, first, "combined: the first attempt's record");
    for last in [false, true] {
        let alone = sql::consume_recorded(&mut c, &op("wa", 1), "news", "wa", 10, last)
            .await
            .expect("consume")
            .expect("owned");
        assert_eq!(
            alone, first[0],
            "alone (last: {last}): the first attempt's record"
        );
    }
    let cursors: Vec<i64> =
        sqlx::query_scalar("SELECT cursor FROM msg.subscriptions ORDER BY subscriber")
            .fetch_all(&mut *c)
            .await
            .expect("cursors");
    assert_eq!(cursors, [3, 3], "no cursor moved without its record");
    let now: Vec<(String, i32, String)> = sqlx::query_as(RECORDS)
        .fetch_all(&mut *c)
        .await
        .expect("records");
    assert_eq!(now, recorded);
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM prov.events WHERE kind = 'consume'")
        .fetch_one(&mut *c)
        .await
        .expect("events");
    assert_eq!(events, 2, "one provenance event per operation");

    // The next operations take the rest.
    let next = answers(
        sql::consume_recorded_many(&mut c, &reqs(2), 10)
            .await
            .expect("consume"),
    );
    assert_eq!(seqs(&next[0]), [4, 5, 6]);
    assert_eq!(seqs(&next[1]), [4, 5, 6]);
    drop(c);
    n.stop().await;
}

#[tokio::test]
async fn consumes_of_many_workflows_in_one_statement_each_take_and_record_their_own() {
    use dbos_msg::sql::{self, RecordedConsume};
    let n = node(|_| {}).await;
    let pool = n.pool();
    for (wf, owner) in [("wa", "me"), ("wb", "someone-else"), ("wc", "me")] {
        sqlx::query(
            "INSERT INTO dbos.workflow_status
                 (workflow_uuid, status, name, executor_id, owner_xid, serialization)
             VALUES ($1, 'PENDING', 'parked', $2, $3, 'portable_json')",
        )
        .bind(wf)
        .bind(n.kernel.node_id())
        .bind(owner)
        .execute(pool)
        .await
        .expect("a parked workflow");
    }
    let mut c = pool.acquire().await.expect("conn");
    for (topic, sub) in [("news", "wa"), ("news", "wb"), ("jobs", "wc")] {
        sql::subscribe(&mut c, topic, sub, dbos_msg::Start::Oldest)
            .await
            .expect("subscribe");
    }
    let news: Vec<String> = (1..=3).map(|i| i.to_string()).collect();
    sql::publish(&mut c, "news", &news, None)
        .await
        .expect("publish");
    drop(c);
    // The owner of `wb` is another execution; `wc` has nothing waiting.
    let req =
        |wf: &'static str, fid: i32, topic: &'static str, sub: &'static str| RecordedConsume {
            op: sql::Op {
                workflow_id: wf,
                owner_xid: "me",
                function_id: fid,
                name: "msg.consume",
                started_at_ms: 0,
            },
            topic,
            subscriber: sub,
        };
    let seqs = |r: &dbos_msg::Result<Option<Vec<dbos_msg::Delivered>>>| -> Option<Vec<i64>> {
        r.as_ref()
            .expect("answered")
            .as_ref()
            .map(|v| v.iter().map(|d| d.seq).collect())
    };

    // A workflow named twice is refused, and nothing is taken.
    let twice = [req("wa", 1, "news", "wa"), req("wa", 2, "jobs", "wc")];
    let mut c = pool.acquire().await.expect("conn");
    let err = sql::consume_recorded_many(&mut c, &twice, 10)
        .await
        .expect_err("a workflow named twice");
    assert!(
        matches!(&err, dbos_msg::Error::WorkflowTwice(wf) if wf == "wa"),
        "{err}"
    );
    drop(c);

    // Probes that find nothing to take, or are not the owner's, write nothing.
    let idle = [req("wb", 1, "news", "wb"), req("wc", 1, "jobs", "wc")];
    let (got, wrote) = probe_in_tx!(pool, |c| sql::consume_recorded_many(c, &idle, 10));
    assert_eq!(seqs(&got[0]), None, "not the owner");
    assert_eq!(seqs(&got[1]), Some(vec![]));
    assert!(!wrote, "probes that take nothing write nothing");

    let all = [
        req("wa", 1, "news", "wa"),
        req("wb", 1, "news", "wb"),
        req("wc", 1, "jobs", "wc"),
        req("wc", 1, "jobs", "stranger"),
    ];
    let mut c = pool.acquire().await.expect("conn");
    let err = sql::consume_recorded_many(&mut c, &all, 2)
        .await
        .expect_err("wc named twice");
    assert!(matches!(err, dbos_msg::Error::WorkflowTwice(_)), "{err}");
    let got = sql::consume_recorded_many(&mut c, &all[..3], 2)
        .await
        .expect("consume");
    assert_eq!(seqs(&got[0]), Some(vec![1, 2]));
    assert_eq!(seqs(&got[1]), None);
    assert_eq!(seqs(&got[2]), Some(vec![]));
    let stranger = [req("wa", 3, "jobs", "stranger")];
    let got = sql::consume_recorded_many(&mut c, &stranger, 2)
        .await
        .expect("consume");
    assert!(
        matches!(&got[0], Err(dbos_msg::Error::NotSubscribed { subscriber, .. }) if subscriber == "stranger"),
        "{:?}",
        got[0]
    );
    // Each takes from its own place: `wa` the rest, recorded at its own position.
    let got = sql::consume_recorded_many(&mut c, &[req("wa", 3, "news", "wa")], 10)
        .await
        .expect("consume");
    assert_eq!(seqs(&got[0]), Some(vec![3]));

    let cursors: Vec<(String, i64)> = sqlx::query_as(
        "SELECT subscriber, cursor FROM msg.subscriptions ORDER BY topic, subscriber",
    )
    .fetch_all(&mut *c)
    .await
    .expect("cursors");
    assert_eq!(
        cursors,
        [
            ("wc".to_owned(), 0),
            ("wa".to_owned(), 3),
            ("wb".to_owned(), 0)
        ]
    );
    let recorded: Vec<(String, i32, String)> = sqlx::query_as(
        "SELECT workflow_uuid, function_id, output FROM dbos.operation_outputs
         ORDER BY workflow_uuid, function_id",
    )
    .fetch_all(&mut *c)
    .await
    .expect("records");
    let recorded: Vec<(String, i32, serde_json::Value)> = recorded
        .into_iter()
        .map(|(w, f, o)| (w, f, serde_json::from_str(&o).expect("JSON")))
        .collect();
    assert_eq!(
        recorded,
        [
            (
                "wa".to_owned(),
                1,
                serde_json::json!([{"seq": 1, "payload": 1}, {"seq": 2, "payload": 2}])
            ),
            (
                "wa".to_owned(),
                3,
                serde_json::json!([{"seq": 3, "payload": 3}])
            ),
        ]
    );
    let events: Vec<(String, i32, String, Option<String>, serde_json::Value)> = sqlx::query_as(
        "SELECT workflow_uuid, function_id, kind, object, detail FROM prov.events ORDER BY id",
    )
    .fetch_all(&mut *c)
    .await
    .expect("provenance");
    assert_eq!(
        events,
        [
            (
                "wa".to_owned(),
                1,
                "consume".to_owned(),
                Some("news".to_owned()),
                serde_json::json!({"messages": 2})
            ),
            (
                "wa".to_owned(),
                3,
                "consume".to_owned(),
                Some("news".to_owned()),
                serde_json::json!({"messages": 1})
            ),
        ]
    );
    // A payload published as text that is not JSON fails the statement: nothing recorded,
    // no cursor moved.
    sql::publish(&mut c, "jobs", &["not json".to_owned()], None)
        .await
        .expect("publish");
    let err = sql::consume_recorded_many(&mut c, &[req("wc", 1, "jobs", "wc")], 10)
        .await
        .expect_err("not JSON");
    assert!(err.to_string().contains("json"), "{err}");
    let (cursor, records): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT cursor FROM msg.subscriptions WHERE subscriber = 'wc'),
                (SELECT count(*) FROM dbos.operation_outputs WHERE workflow_uuid = 'wc')",
    )
    .fetch_one(&mut *c)
    .await
    .expect("wc");
    assert_eq!((cursor, records), (0, 0));
    n.stop().await;
}

/// Subscribed by the test before it starts (its ID is the subscriber), takes `n` messages of
/// "feed" with `next_messages`; returns their sequence numbers.
async fn feed_reader(ctx: workflow::Context, (n,): (usize,)) -> Result<Vec<i64>, workflow::Error> {
    let mut got = Vec::new();
    while got.len() < n {
        let batch = ctx.next_messages::<i64>("feed", WAIT).await?;
        got.extend(batch.into_iter().map(|m| m.seq));
    }
    Ok(got)
}

#[tokio::test]
async fn many_workflows_reading_one_topic_each_take_every_message_once() {
    let n = node(|r| {
        r.register("feed_reader", feed_reader);
    })
    .await;
    let msg = n.wf.messages();
    let (readers, batches, per_batch) = (24, 10, 20);
    let ids: Vec<String> = (0..readers).map(|i| format!("reader-{i}")).collect();
    for wid in &ids {
        msg.subscribe("feed", wid, Start::Next).await.expect("sub");
    }
    let mut handles = Vec::new();
    for wid in &ids {
        handles.push(
            n.wf.start::<_, Vec<i64>>("feed_reader", (batches * per_batch,), id(wid))
                .await
                .expect("start"),
        );
    }
    let batch: Vec<i64> = (0..per_batch as i64).collect();
    for _ in 0..batches {
        msg.publish("feed", &batch).await.expect("publish");
    }
    let all: Vec<i64> = (1..=(batches * per_batch) as i64).collect();
    for h in handles {
        assert_eq!(h.result().await.expect("reader"), all);
    }
    // Each message recorded once for each reader, in the operations that took it.
    let per_reader: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT o.workflow_uuid, count(*), count(DISTINCT (m->>'seq')::int8)
         FROM dbos.operation_outputs o, json_array_elements(o.output::json) m
         WHERE o.function_name = 'msg.consume' AND o.workflow_uuid LIKE 'reader-%'
         GROUP BY o.workflow_uuid ORDER BY o.workflow_uuid",
    )
    .fetch_all(n.pool())
    .await
    .expect("records");
    assert_eq!(per_reader.len(), readers);
    let want = (batches * per_batch) as i64;
    for (wid, taken, distinct) in per_reader {
        assert_eq!((taken, distinct), (want, want), "{wid}");
    }
    n.stop().await;
}

/// Receives one message of topic "a", however long it takes to come.
async fn patient(ctx: workflow::Context, (_,): (i64,)) -> Result<Option<String>, workflow::Error> {
    ctx.recv(Some("a"), Duration::from_secs(3_600)).await
}

/// Sends one message to `patient-2`'s mailbox "a".
async fn courier(ctx: workflow::Context, (_,): (i64,)) -> Result<(), workflow::Error> {
    ctx.send("patient-2", "from a workflow", Some("a")).await
}

/// Waits until workflow `id` has waited long enough in `recv` to record its timer: it has
/// probed its empty mailbox and sleeps.
async fn waiting_in_recv(pool: &sqlx::PgPool, id: &str) {
    loop {
        let timers: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM dbos.operation_outputs
             WHERE workflow_uuid = $1 AND function_name = 'DBOS.sleep'",
        )
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("timers");
        if timers > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_send_wakes_a_receiver_of_its_own_node_without_the_servers_notification() {
    let n = node_with_msg(
        |r| {
            r.register("patient", patient);
            r.register("courier", courier);
        },
        no_recheck(),
    )
    .await;
    // The server announces no message: only the sending node's own wake-up is left.
    sqlx::query("ALTER TABLE dbos.notifications DISABLE TRIGGER dbos_notifications_trigger")
        .execute(n.pool())
        .await
        .expect("no notification");
    // Neither the receive's timeout nor its re-check comes within the watchdog.
    let watchdog = Duration::from_secs(300);

    let h =
        n.wf.start::<_, Option<String>>("patient", (0,), id("patient-1"))
            .await
            .expect("start");
    waiting_in_recv(n.pool(), "patient-1").await;
    n.wf.messages()
        .send("patient-1", "from a client", Some("a"), None)
        .await
        .expect("send");
    let got = tokio::time::timeout(watchdog, h.result())
        .await
        .expect("the client's send woke the receiver")
        .expect("done");
    assert_eq!(got.as_deref(), Some("from a client"));

    let h =
        n.wf.start::<_, Option<String>>("patient", (0,), id("patient-2"))
            .await
            .expect("start");
    waiting_in_recv(n.pool(), "patient-2").await;
    n.wf.run::<_, ()>("courier", (0,), id("courier"))
        .await
        .expect("courier");
    let got = tokio::time::timeout(watchdog, h.result())
        .await
        .expect("the workflow's send woke the receiver")
        .expect("done");
    assert_eq!(got.as_deref(), Some("from a workflow"));
    n.stop().await;
}

/// Sends message `m{n}` to mailbox `mb::t`.
async fn mb_courier(ctx: workflow::Context, (n,): (i64,)) -> Result<(), workflow::Error> {
    ctx.send("mb", &format!("m{n}"), Some("t")).await
}

/// The messages of mailbox `mb::t` in send order: body, whether consumed, and by which
/// position.
async fn mailbox(pool: &sqlx::PgPool) -> Vec<(String, bool, Option<i32>)> {
    sqlx::query_as(
        "SELECT message, consumed, consumed_by_function_id FROM dbos.notifications
         WHERE destination_uuid = 'mb' AND topic = 't'
         ORDER BY created_at_epoch_ms, age(xmin) DESC, ctid",
    )
    .fetch_all(pool)
    .await
    .expect("mailbox")
}

#[tokio::test]
async fn a_send_hands_its_message_to_a_receive_waiting_on_its_node() {
    use dbos_msg::{Outgoing, Recipient, Taken};
    let n = node(|r| {
        r.register("mb_courier", mb_courier);
    })
    .await;
    let pool = n.pool();
    owned_by_me(&n).await;
    let msg = n.wf.messages();
    let waiters = msg.waiters();
    let key = "mb::t";
    let recipient = |owner: &str, fid: i32| Recipient {
        workflow_id: "mb".to_owned(),
        owner_xid: owner.to_owned(),
        function_id: fid,
        name: "DBOS.recv".to_owned(),
        started_at_ms: 0,
    };
    let json = |s: &str| format!("\"{s}\"");
    let recorded = || async {
        sqlx::query_as::<_, (i32, String, Option<String>)>(
            "SELECT function_id, function_name, output FROM dbos.operation_outputs
             WHERE workflow_uuid = 'mb' ORDER BY function_id",
        )
        .fetch_all(pool)
        .await
        .expect("recorded")
    };

    // A waiting receive's open offer: the send records the receipt and consumes the message
    // in its own statement.
    let offer = waiters
        .offer(key.to_owned(), recipient("me", 1))
        .expect("the first offer");
    assert!(
        waiters.offer(key.to_owned(), recipient("me", 9)).is_none(),
        "one offer per mailbox"
    );
    offer.reopen();
    msg.send("mb", "m1", Some("t"), None).await.expect("send");
    assert_eq!(offer.take().await, Taken::Delivered(json("m1")));
    drop(offer);
    assert_eq!(
        recorded().await,
        vec![(1, "DBOS.recv".to_owned(), Some(json("m1")))]
    );
    assert_eq!(mailbox(pool).await, vec![(json("m1"), true, Some(1))]);
    let received: Vec<(i32, String, Option<String>, Option<i64>)> = sqlx::query_as(
        "SELECT function_id, kind, object, bytes FROM prov.events WHERE workflow_uuid = 'mb'",
    )
    .fetch_all(pool)
    .await
    .expect("provenance");
    assert_eq!(
        received,
        vec![(1, "recv".to_owned(), Some("t".to_owned()), Some(4))],
        "the receipt's provenance, as the receiver's own statement writes it"
    );

    // An older message in the mailbox (sent by another node, which has no offer) is handed
    // over first; the new one waits.
    let offer = waiters
        .offer(key.to_owned(), recipient("me", 3))
        .expect("offer");
    offer.reopen();
    let mut c = pool.acquire().await.expect("conn");
    let older = Outgoing {
        destination: "mb".to_owned(),
        message: json("m2"),
        topic: Some("t".to_owned()),
        idempotency_key: None,
    };
    dbos_msg::sql::send(&mut c, &[older])
        .await
        .expect("send m2");
    drop(c);
    msg.send("mb", "m3", Some("t"), None).await.expect("send");
    assert_eq!(offer.take().await, Taken::Delivered(json("m2")));
    drop(offer);
    assert_eq!(
        mailbox(pool).await[1..],
        [(json("m2"), true, Some(3)), (json("m3"), false, None)]
    );

    // A workflow's send: its own record and the receipt commit together.
    let offer = waiters
        .offer(key.to_owned(), recipient("me", 4))
        .expect("offer");
    offer.reopen();
    n.wf.run::<_, ()>("mb_courier", (6,), id("mb-courier"))
        .await
        .expect("courier");
    assert_eq!(offer.take().await, Taken::Delivered(json("m3")));
    drop(offer);
    assert_eq!(
        step_names(pool, "mb-courier").await,
        vec![(1, "DBOS.send".to_owned())]
    );
    assert_eq!(
        mailbox(pool).await[2..],
        [(json("m3"), true, Some(4)), (json("m6"), false, None)]
    );

    // A receiver that no longer owns its workflow is handed nothing, and a keyed send (whose
    // repeat must not be delivered twice) is never handed over: both wait in the mailbox.
    let offer = waiters
        .offer(key.to_owned(), recipient("someone-else", 5))
        .expect("offer");
    offer.reopen();
    msg.send("mb", "m4", Some("t"), None).await.expect("send");
    assert_eq!(offer.take().await, Taken::Probe);
    drop(offer);
    let offer = waiters
        .offer(key.to_owned(), recipient("me", 5))
        .expect("offer");
    offer.reopen();
    msg.send("mb", "m5", Some("t"), Some("k5"))
        .await
        .expect("send");
    assert_eq!(offer.take().await, Taken::Probe);
    assert_eq!(recorded().await.len(), 3, "no receipt at position 5");
    assert_eq!(unconsumed(pool, "mb").await, 3, "m6, m4 and m5");

    // A claim that ends without an answer (its statement failed or was dropped) leaves the
    // receiver to read what was recorded; one claim at a time.
    offer.reopen();
    let claim = waiters.claim(key).await.expect("the open offer");
    assert!(waiters.claim(key).await.is_none(), "claimed already");
    drop(claim);
    assert_eq!(offer.take().await, Taken::Unknown);

    // A send waits for a probe under way, and claims the offer it opens again; not one that
    // is withdrawn.
    let claiming = tokio::spawn({
        let w = waiters.clone();
        async move { w.claim(key).await.is_some() }
    });
    tokio::task::yield_now().await;
    offer.reopen();
    assert!(
        claiming.await.expect("claim"),
        "claimed once the probe ended"
    );
    assert_eq!(offer.take().await, Taken::Unknown);
    let claiming = tokio::spawn({
        let w = waiters.clone();
        async move { w.claim(key).await.is_some() }
    });
    tokio::task::yield_now().await;
    drop(offer);
    assert!(!claiming.await.expect("claim"), "the receive has ended");
    n.stop().await;
}

/// Receives three messages of topic "k", however long each takes to come.
async fn collector(
    ctx: workflow::Context,
    (_,): (i64,),
) -> Result<Vec<Option<String>>, workflow::Error> {
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(ctx.recv(Some("k"), Duration::from_secs(3_600)).await?);
    }
    Ok(got)
}

/// Waits until this node knows mailbox `key` to be empty: its receive has looked and waits.
async fn known_empty(waiters: &dbos_msg::Waiters, key: &str) {
    while !waiters.known_empty(key) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_mailbox_known_empty_is_looked_at_again_for_a_message_from_elsewhere() {
    let n = node_with_msg(
        |r| {
            r.register("collector", collector);
        },
        no_recheck(),
    )
    .await;
    let pool = n.pool();
    let waiters = n.wf.messages().waiters();
    let key = "collector::k";
    // Neither the receive's timeout nor its re-check comes within the watchdog.
    let watchdog = Duration::from_secs(300);
    let insert = |body: &'static str| {
        sqlx::query(
            "INSERT INTO dbos.notifications (destination_uuid, topic, message, serialization)
             VALUES ('collector', 'k', $1, 'portable_json')",
        )
        .bind(body)
        .execute(pool)
    };

    let h =
        n.wf.start::<_, Vec<Option<String>>>("collector", (0,), id("collector"))
            .await
            .expect("start");
    waiting_in_recv(pool, "collector").await;
    // Handed to the waiting receive with nothing older in the mailbox: the node knows the
    // mailbox empty, so the next receive waits without looking.
    n.wf.messages()
        .send("collector", "m1", Some("k"), None)
        .await
        .expect("send");
    assert!(
        waiters.known_empty(key),
        "a handoff that found no older message leaves the mailbox known empty"
    );

    // Another client's message (as DBOS's own send writes it) is announced only by the
    // server's notification: the receive looks again and takes it.
    insert("\"m2\"").await.expect("insert m2");
    tokio::time::timeout(watchdog, async {
        while unconsumed(pool, "collector").await > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The third receive has looked, found nothing and waits.
        known_empty(waiters, key).await;
    })
    .await
    .expect("the receive took the message and waits for the next");

    // A message the server does not announce, then the node's LISTEN connection lost: the
    // notifications missed meanwhile make every mailbox unknown, and the receive looks.
    sqlx::query("ALTER TABLE dbos.notifications DISABLE TRIGGER dbos_notifications_trigger")
        .execute(pool)
        .await
        .expect("no notification");
    insert("\"m3\"").await.expect("insert m3");
    assert!(
        waiters.known_empty(key),
        "no notification came, so the node still holds the mailbox empty"
    );
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND query ILIKE 'LISTEN%'
           AND pid <> pg_backend_pid()) t",
    )
    .fetch_one(pool)
    .await
    .expect("terminate the listener");
    assert_eq!(killed, 1, "one LISTEN connection per node");
    let got = tokio::time::timeout(watchdog, h.result())
        .await
        .expect("every message reached the receiver")
        .expect("done");
    assert_eq!(
        got,
        vec![
            Some("m1".to_owned()),
            Some("m2".to_owned()),
            Some("m3".to_owned())
        ]
    );
    assert_eq!(unconsumed(pool, "collector").await, 0);
    n.stop().await;
}

/// The sizes, in bytes, of the futures of the waits a workflow parks in and of a step, built
/// and dropped without being run.
async fn wait_sizes(
    ctx: workflow::Context,
    (_,): (i64,),
) -> Result<(usize, usize, usize, usize), workflow::Error> {
    let recv = std::mem::size_of_val(&ctx.recv::<u32>(Some("t"), WAIT));
    let event = std::mem::size_of_val(&ctx.get_event::<u32>("rx", "k", WAIT));
    let sleep = std::mem::size_of_val(&ctx.sleep(WAIT));
    let step = std::mem::size_of_val(&ctx.step("s", || async { Ok(1) }));
    Ok((recv, event, sleep, step))
}

/// A workflow's future keeps its size for as long as it waits, and a node holds thousands of
/// waiting ones: the waits keep their database calls boxed, out of that size.
#[tokio::test]
async fn the_futures_of_waits_stay_small() {
    let n = node(|r| {
        r.register("wait_sizes", wait_sizes);
    })
    .await;
    let (recv, event, sleep, step) =
        n.wf.run::<_, (usize, usize, usize, usize)>("wait_sizes", (0,), id("sizes"))
            .await
            .expect("sizes");
    // With their queries inline they were 3,904, 3,632, 2,080 and 1,632 bytes.
    for (what, size, bound) in [
        ("recv", recv, 2048),
        ("get_event", event, 2048),
        ("sleep", sleep, 1024),
        ("step", step, 1280),
    ] {
        assert!(
            size <= bound,
            "the future of {what} is {size} bytes, over {bound}"
        );
    }
    n.stop().await;
}

/// Writes one value to stream "s", then waits an hour without closing it.
async fn writes_then_waits(ctx: workflow::Context, (): ()) -> Result<(), workflow::Error> {
    ctx.write_stream("s", &"first").await?;
    ctx.sleep(Duration::from_secs(3600)).await?;
    Ok(())
}

/// A reader of a stream whose writer is cancelled before closing it ends at the cancel, though
/// nothing re-checks on its own: the cancel's notification wakes it, not only the stream's.
#[tokio::test]
async fn a_stream_reader_ends_when_its_writer_is_cancelled() {
    let n = node_with_msg(
        |r| {
            r.register("writes_then_waits", writes_then_waits);
        },
        no_recheck(),
    )
    .await;
    let opts = StartOptions {
        workflow_id: Some("writer".to_owned()),
        ..StartOptions::default()
    };
    n.wf.enqueue::<_, ()>("default", "writes_then_waits", (), opts)
        .await
        .expect("enqueue");
    let mut r = n.wf.messages().read_stream("writer", "s", 0);
    let first: Option<String> = r.next(Duration::from_secs(60)).await.expect("read");
    assert_eq!(first.as_deref(), Some("first"));
    let rest = tokio::spawn(async move {
        let next: Option<String> = r.next(Duration::from_secs(3600)).await.expect("read");
        (next, r.is_done())
    });
    workflow::manage::cancel(n.pool(), "writer", false)
        .await
        .expect("cancel");
    let (next, done) = tokio::time::timeout(Duration::from_secs(60), rest)
        .await
        .expect("the reader woke at the cancel")
        .expect("join");
    assert_eq!(next, None);
    assert!(done, "the stream ended with its writer");
    n.stop().await;
}
