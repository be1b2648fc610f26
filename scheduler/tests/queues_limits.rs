//! Queue limits as the claim enforces them: worker and global concurrency across several
//! nodes, rate limits, priority (with pause/resume), partitions that cannot starve each other,
//! deduplication, and bad queue settings.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dbos_kernel::testing;
use dbos_scheduler::queues::{self, Queue};
use dbos_services::testing::{node, node_on, seed, status, wait_status, Node};
use dbos_services::workflow::{self, Options, StartOptions};

/// Sleeps `ms` in a step and returns its own ID.
async fn nap(ctx: workflow::Context, (ms,): (u64,)) -> Result<String, workflow::Error> {
    ctx.step("nap", || async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(())
    })
    .await?;
    Ok(ctx.workflow_id().to_owned())
}

/// A node on `db` that runs `nap`.
async fn nap_node(db: &testing::TestDb) -> Node {
    node_on(
        db.clone(),
        |r| {
            r.register("nap", nap);
        },
        Options::default(),
    )
    .await
}

/// How many workflows of one kind run at once in this process, and the most seen. A run
/// begins after its claim committed and ends before its outcome is written, so the count
/// never exceeds the workflows PENDING at that moment: a limit on PENDING bounds it exactly,
/// without comparing timestamps of different transactions.
#[derive(Clone, Default)]
struct Overlap {
    now: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

impl Overlap {
    fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }
}

/// `nap`, counted in `o` while it runs.
fn counted_nap(
    o: Overlap,
) -> impl Fn(
    workflow::Context,
    (u64,),
) -> futures_util::future::BoxFuture<'static, Result<String, workflow::Error>>
       + Send
       + Sync
       + 'static {
    move |ctx: workflow::Context, (ms,): (u64,)| {
        let o = o.clone();
        Box::pin(async move {
            let running = o.now.fetch_add(1, Ordering::SeqCst) + 1;
            o.peak.fetch_max(running, Ordering::SeqCst);
            let out = nap(ctx, (ms,)).await;
            o.now.fetch_sub(1, Ordering::SeqCst);
            out
        })
    }
}

fn opts(id: &str) -> StartOptions {
    StartOptions {
        workflow_id: Some(id.to_owned()),
        ..StartOptions::default()
    }
}

async fn create(n: &Node, q: Queue) {
    let mut c = n.pool().acquire().await.expect("conn");
    queues::create(&mut c, &q).await.expect("create queue");
}

/// Samples the queue's PENDING count until `done`; returns the largest seen.
fn sample_running(
    pool: sqlx::PgPool,
    queue: &str,
    done: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<i64> {
    let queue = queue.to_owned();
    tokio::spawn(async move {
        let mut max = 0;
        while !done.load(Ordering::SeqCst) {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM dbos.workflow_status WHERE queue_name = $1 AND status = 'PENDING'",
            )
            .bind(&queue)
            .fetch_one(&pool)
            .await
            .expect("count");
            max = max.max(n);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        max
    })
}

#[tokio::test]
async fn global_concurrency_holds_across_three_nodes_and_worker_concurrency_per_node() {
    let db = testing::database().await;
    // Each node counts its own runs: worker concurrency is per node.
    let mut per_node = Vec::new();
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let o = Overlap::default();
        let mine = o.clone();
        nodes.push(
            node_on(
                db.clone(),
                move |r| {
                    r.register("nap", counted_nap(mine));
                },
                Options::default(),
            )
            .await,
        );
        per_node.push(o);
    }
    let first = nodes.remove(0);
    let others = nodes;
    create(
        &first,
        Queue {
            concurrency: Some(3),
            worker_concurrency: Some(2),
            ..Queue::named("g3")
        },
    )
    .await;
    let done = Arc::new(AtomicBool::new(false));
    let sampler = sample_running(first.pool().clone(), "g3", done.clone());
    let mut handles = Vec::new();
    for i in 0..18 {
        handles.push(
            first
                .wf
                .enqueue::<_, String>("g3", "nap", (150u64,), opts(&format!("g3-{i}")))
                .await
                .expect("enqueue"),
        );
    }
    for h in handles {
        h.result().await.expect("finishes");
    }
    done.store(true, Ordering::SeqCst);
    let max = sampler.await.expect("sampler");
    assert!(
        max <= 3,
        "at most 3 ran at once across the nodes, saw {max}"
    );
    assert!(max >= 2, "the queue did run in parallel, saw {max}");
    // Worker concurrency: no node ran more than 2 at once.
    let executors: Vec<String> = sqlx::query_scalar(
        "SELECT executor_id FROM dbos.workflow_status WHERE workflow_uuid LIKE 'g3-%'",
    )
    .fetch_all(first.pool())
    .await
    .expect("rows");
    let nodes: std::collections::HashSet<&str> = executors.iter().map(String::as_str).collect();
    assert!(
        nodes.len() >= 2,
        "work was spread over the nodes: {nodes:?}"
    );
    for (i, o) in per_node.iter().enumerate() {
        let peak = o.peak();
        assert!(peak <= 2, "node {i} ran {peak} at once");
    }
    for n in others {
        n.stop().await;
    }
    first.stop().await;
}

#[tokio::test]
async fn rate_limits_space_out_starts() {
    let n = node(|r| {
        r.register("nap", nap);
    })
    .await;
    create(
        &n,
        Queue {
            rate_limit_max: Some(2),
            rate_limit_period_sec: Some(0.5),
            ..Queue::named("r2")
        },
    )
    .await;
    let mut hs = Vec::new();
    for i in 0..6 {
        hs.push(
            n.wf.enqueue::<_, String>("r2", "nap", (0u64,), opts(&format!("r2-{i}")))
                .await
                .expect("enqueue"),
        );
    }
    for h in hs {
        h.result().await.expect("finishes");
    }
    let mut starts: Vec<i64> = sqlx::query_scalar(
        "SELECT started_at_epoch_ms FROM dbos.workflow_status WHERE workflow_uuid LIKE 'r2-%'",
    )
    .fetch_all(n.pool())
    .await
    .expect("starts");
    starts.sort();
    // Not a timing of the test: the limit is defined on these recorded claim times (the claim
    // counts `started_at_epoch_ms` in the last period, on the database clock), so no three
    // of them fall within one period however slow the machine is.
    for w in starts.windows(3) {
        assert!(
            w[2] - w[0] >= 500,
            "no 3 starts within one 500 ms window: {starts:?}"
        );
    }
    n.stop().await;
}

/// Appends its ID to `public.order_log` in a step.
async fn log_order(ctx: workflow::Context, (_,): (u64,)) -> Result<(), workflow::Error> {
    let (pool, me) = (ctx.pool().clone(), ctx.workflow_id().to_owned());
    ctx.step("log", || {
        let (pool, me) = (pool.clone(), me.clone());
        async move {
            sqlx::query("INSERT INTO public.order_log (id) VALUES ($1)")
                .bind(&me)
                .execute(&pool)
                .await?;
            Ok(())
        }
    })
    .await
}

#[tokio::test]
async fn priority_orders_a_paused_queue_once_resumed_and_dedup_is_refused() {
    let n = node(|r| {
        r.register("log_order", log_order);
    })
    .await;
    sqlx::query("CREATE TABLE public.order_log (seq bigserial, id text)")
        .execute(n.pool())
        .await
        .expect("table");
    create(
        &n,
        Queue {
            worker_concurrency: Some(1),
            ..Queue::named("p1")
        },
    )
    .await;
    let mut c = n.pool().acquire().await.expect("conn");
    assert!(queues::set_paused(&mut c, "p1", true).await.expect("pause"));
    let mut hs = Vec::new();
    for (id, prio) in [("low", 9), ("mid", 5), ("top", 1), ("default", 0)] {
        let o = StartOptions {
            priority: prio,
            ..opts(id)
        };
        hs.push(
            n.wf.enqueue::<_, ()>("p1", "log_order", (0u64,), o)
                .await
                .expect("enqueue"),
        );
    }
    // Paused: nothing starts, though the dispatcher looked (two whole rounds after the
    // enqueues committed).
    n.dispatcher_rounds(2).await;
    let started: i64 = sqlx::query_scalar("SELECT count(*) FROM public.order_log")
        .fetch_one(n.pool())
        .await
        .expect("count");
    assert_eq!(started, 0, "a paused queue starts nothing");
    for id in ["low", "mid", "top", "default"] {
        assert_eq!(
            status(n.pool(), id).await,
            "ENQUEUED",
            "{id} was not claimed"
        );
    }
    assert!(queues::set_paused(&mut c, "p1", false)
        .await
        .expect("resume"));
    for h in hs {
        h.result().await.expect("runs");
    }
    let order: Vec<String> = sqlx::query_scalar("SELECT id FROM public.order_log ORDER BY seq")
        .fetch_all(n.pool())
        .await
        .expect("order");
    assert_eq!(order, vec!["default", "top", "mid", "low"]);

    // A second workflow with a deduplication ID in use is refused.
    let o = StartOptions {
        deduplication_id: Some("once".into()),
        delay: Some(Duration::from_secs(60)),
        ..opts("d1")
    };
    n.wf.enqueue::<_, ()>("p1", "log_order", (0u64,), o)
        .await
        .expect("first");
    let o = StartOptions {
        deduplication_id: Some("once".into()),
        ..opts("d2")
    };
    let err =
        n.wf.enqueue::<_, ()>("p1", "log_order", (0u64,), o)
            .await
            .expect_err("deduplicated");
    assert!(err.to_string().contains("deduplicated"), "{err}");
    let o = StartOptions {
        priority: -1,
        ..opts("neg")
    };
    assert!(n
        .wf
        .enqueue::<_, ()>("p1", "log_order", (0u64,), o)
        .await
        .is_err());
    n.stop().await;
}

#[tokio::test]
async fn a_hot_partition_cannot_starve_the_others() {
    let hot = Overlap::default();
    let h = hot.clone();
    let n = node(move |r| {
        r.register("nap", nap);
        r.register("hot_nap", counted_nap(h));
    })
    .await;
    create(
        &n,
        Queue {
            partition_concurrency: Some(1),
            concurrency: Some(2),
            ..Queue::named("parts")
        },
    )
    .await;
    // The whole backlog is in line before the first claim: six hot ones ahead of the cold one.
    let mut c = n.pool().acquire().await.expect("conn");
    assert!(queues::set_paused(&mut c, "parts", true)
        .await
        .expect("pause"));
    let mut hs = Vec::new();
    for i in 0..6 {
        let o = StartOptions {
            partition_key: Some("hot".into()),
            ..opts(&format!("hot-{i}"))
        };
        hs.push(
            n.wf.enqueue::<_, String>("parts", "hot_nap", (100u64,), o)
                .await
                .expect("hot"),
        );
    }
    let o = StartOptions {
        partition_key: Some("cold".into()),
        ..opts("cold-0")
    };
    hs.push(
        n.wf.enqueue::<_, String>("parts", "nap", (100u64,), o)
            .await
            .expect("cold"),
    );
    assert!(queues::set_paused(&mut c, "parts", false)
        .await
        .expect("resume"));
    n.wf.wake();
    for h in hs {
        h.result().await.expect("finishes");
    }
    let starts: Vec<(String, i64)> = sqlx::query_as(
        "SELECT workflow_uuid, started_at_epoch_ms FROM dbos.workflow_status
         WHERE queue_partition_key IS NOT NULL ORDER BY started_at_epoch_ms",
    )
    .fetch_all(n.pool())
    .await
    .expect("starts");
    let cold_at = starts
        .iter()
        .position(|(id, _)| id == "cold-0")
        .expect("cold ran");
    assert!(
        cold_at <= 1,
        "the cold partition started among the first two: {starts:?}"
    );
    // Within the hot partition, one at a time.
    assert_eq!(hot.peak(), 1, "hot partition ran one at a time");
    drop(c);
    n.stop().await;
}

#[tokio::test]
async fn bad_queue_settings_are_refused_and_the_default_queue_exists() {
    let n = node(|_| {}).await;
    let mut c = n.pool().acquire().await.expect("conn");
    let names: Vec<String> = queues::list(&mut c)
        .await
        .expect("list")
        .into_iter()
        .map(|q| q.name)
        .collect();
    assert!(names.contains(&"default".to_owned()));
    for (q, says) in [
        (
            Queue {
                concurrency: Some(0),
                ..Queue::named("z")
            },
            "at least 1",
        ),
        (
            Queue {
                worker_concurrency: Some(-3),
                ..Queue::named("z")
            },
            "at least 1",
        ),
        (
            Queue {
                concurrency: Some(1),
                worker_concurrency: Some(2),
                ..Queue::named("z")
            },
            "must not exceed",
        ),
        (
            Queue {
                rate_limit_max: Some(5),
                ..Queue::named("z")
            },
            "period",
        ),
        (Queue::named("_dbos_mine"), "reserved"),
        (Queue::named(""), "1 to 255"),
    ] {
        let e = queues::create(&mut c, &q).await.expect_err("refused");
        assert!(e.to_string().contains(says), "{q:?}: {e}");
    }
    queues::create(&mut c, &Queue::named("twice"))
        .await
        .expect("first");
    let e = queues::create(&mut c, &Queue::named("twice"))
        .await
        .expect_err("exists");
    assert!(matches!(e, dbos_scheduler::Error::QueueExists(_)), "{e}");
    let e = queues::update(&mut c, &Queue::named("ghost"))
        .await
        .expect_err("missing");
    assert!(matches!(e, dbos_scheduler::Error::NoSuchQueue(_)), "{e}");
    assert!(queues::delete(&mut c, "default").await.is_err());
    queues::delete(&mut c, "twice").await.expect("delete");
    assert!(matches!(
        queues::get(&mut c, "twice").await,
        Err(dbos_scheduler::Error::NoSuchQueue(_))
    ));
    drop(c);
    n.stop().await;
}

#[tokio::test]
async fn a_least_loaded_queue_goes_to_the_less_busy_node() {
    let db = testing::database().await;
    // `hold` runs until the test opens the gate: node a stays busy for as long as it takes.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let g = gate.clone();
    let a = node_on(
        db.clone(),
        move |r| {
            r.register("nap", nap);
            r.register("hold", move |ctx: workflow::Context, (): ()| {
                let g = g.clone();
                async move {
                    g.acquire()
                        .await
                        .expect("the gate is never closed")
                        .forget();
                    Ok::<_, workflow::Error>(ctx.workflow_id().to_owned())
                }
            });
        },
        Options::default(),
    )
    .await;
    let b = nap_node(&db).await;
    create(&a, Queue::named("ll")).await;
    let mut c = a.pool().acquire().await.expect("conn");
    queues::set_placement(
        &mut c,
        "ll",
        &Default::default(),
        &queues::Policy::LeastLoaded,
    )
    .await
    .expect("policy");
    // Node a is busy with four workflows it started itself, held until the end.
    let mut busy = Vec::new();
    for i in 0..4 {
        busy.push(
            a.wf.start::<_, String>("hold", (), opts(&format!("busy-{i}")))
                .await
                .expect("start"),
        );
    }
    let mut hs = Vec::new();
    for i in 0..3 {
        hs.push(
            a.wf.enqueue::<_, String>("ll", "nap", (0u64,), opts(&format!("ll-{i}")))
                .await
                .expect("enqueue"),
        );
    }
    for h in hs {
        h.result().await.expect("runs");
    }
    let on: Vec<String> = sqlx::query_scalar(
        "SELECT executor_id FROM dbos.workflow_status WHERE workflow_uuid LIKE 'll-%'",
    )
    .fetch_all(a.pool())
    .await
    .expect("rows");
    assert!(
        on.iter().all(|n| n == b.kernel.node_id()),
        "the less loaded node ran them: {on:?}"
    );
    gate.add_permits(busy.len());
    for h in busy {
        h.result().await.expect("the held workflows end");
    }
    drop(c);
    b.stop().await;
    a.stop().await;
}

/// Opened by the test: each permit lets one `held` workflow end.
static GATE: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(0);

/// Holds its slot until the test opens [`GATE`].
async fn held(_ctx: workflow::Context, (x,): (u64,)) -> Result<u64, workflow::Error> {
    GATE.acquire().await.expect("gate").forget();
    Ok(x)
}

/// A dispatcher whose slots are all busy claims again as soon as one frees, not at its next
/// poll: here the poll is an hour away and nothing announces the waiting workflow.
#[tokio::test]
async fn a_freed_slot_claims_waiting_work_without_a_poll() {
    let n = unpolled_node(1).await;
    let version = n.wf.app_version().to_owned();
    let enqueue = |id| seed(n.pool(), id, "held", "ENQUEUED", "nobody", &version, 0, &[]);
    enqueue("first").await;
    n.wf.wake();
    wait_status(n.pool(), "first", "PENDING").await;
    // Written without a notification: only the slot "first" frees leads the dispatcher to it.
    enqueue("second").await;
    GATE.add_permits(2);
    wait_status(n.pool(), "second", "SUCCESS").await;
    assert_eq!(status(n.pool(), "first").await, "SUCCESS");
    n.stop().await;
}

/// A node with `slots` slots that runs `held` and `nap`, whose dispatcher polls once an hour:
/// booted here rather than with `node_with`, which sets the poll to 100 ms.
async fn unpolled_node(slots: u32) -> Node {
    unpolled_node_with(slots, &[]).await
}

/// As [`unpolled_node`], with `queues` created before its dispatcher starts (and so seen by
/// its first and, the poll being an hour away, only sweep).
async fn unpolled_node_with(slots: u32, queues: &[Queue]) -> Node {
    unpolled_node_on(testing::database().await, slots, queues, |r| {
        r.register("held", held);
        r.register("nap", nap);
    })
    .await
}

/// As [`unpolled_node_with`], on `db`, running what `register` registers.
async fn unpolled_node_on(
    db: testing::TestDb,
    slots: u32,
    queues: &[Queue],
    register: impl FnOnce(&mut workflow::Registry),
) -> Node {
    let mut config = db.config();
    config.slots = slots;
    let kernel = dbos_kernel::Kernel::boot(config, &dbos_services::migrations())
        .await
        .expect("boot");
    let mut c = kernel.pool().acquire().await.expect("conn");
    for q in queues {
        queues::create(&mut c, q).await.expect("create queue");
    }
    drop(c);
    let mut registry = workflow::Registry::new();
    register(&mut registry);
    let opts = Options {
        scheduler: dbos_scheduler::Options {
            poll_interval_ms: 3_600_000,
            ..Default::default()
        },
        // One version for nodes that register different workflows, so that each claims the
        // workflows it has code for, whichever node enqueued them.
        app_version: Some("unpolled".to_owned()),
        ..Options::default()
    };
    let wf = workflow::Service::launch(&kernel, registry, opts)
        .await
        .expect("launch");
    Node { kernel, wf, db }
}

/// Short workflows on a queue of concurrency 1 follow one another as each ends, though the
/// dispatcher polls once an hour: a workflow's end wakes the claim that starts the next.
#[tokio::test]
async fn an_end_on_a_limited_queue_starts_the_next_without_a_poll() {
    let n = unpolled_node_with(
        8,
        &[Queue {
            concurrency: Some(1),
            ..Queue::named("one")
        }],
    )
    .await;
    let mut handles = Vec::new();
    for i in 0..5 {
        handles.push(
            n.wf.enqueue::<_, String>("one", "nap", (1u64,), opts(&format!("one-{i}")))
                .await
                .expect("enqueue"),
        );
    }
    for (i, h) in handles.into_iter().enumerate() {
        let out = tokio::time::timeout(Duration::from_secs(60), h.result())
            .await
            .unwrap_or_else(|_| panic!("one-{i} ran without waiting for a poll"));
        assert_eq!(out.expect("nap"), format!("one-{i}"));
    }
    n.stop().await;
}

/// The end of a workflow on a queue whose limit all nodes share starts the next on another
/// node, though every dispatcher polls once an hour: node A runs `held` and node B `nap`, and
/// B's `nap` waits for A's `held` to end.
#[tokio::test]
async fn an_end_on_a_shared_limit_starts_the_next_on_another_node_without_a_poll() {
    let db = testing::database().await;
    let shared = [Queue {
        concurrency: Some(1),
        ..Queue::named("shared")
    }];
    // A gate of its own: `GATE`'s permits belong to the test that opens it.
    static OPEN: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(0);
    async fn held(_ctx: workflow::Context, (x,): (u64,)) -> Result<u64, workflow::Error> {
        OPEN.acquire().await.expect("gate").forget();
        Ok(x)
    }
    let a = unpolled_node_on(db.clone(), 8, &shared, |r| {
        r.register("held", held);
    })
    .await;
    let b = unpolled_node_on(db, 8, &[], |r| {
        r.register("nap", nap);
    })
    .await;
    let first =
        a.wf.enqueue::<_, u64>("shared", "held", (7u64,), opts("shared-held"))
            .await
            .expect("enqueue held");
    wait_status(a.pool(), "shared-held", "PENDING").await;
    let second =
        b.wf.enqueue::<_, String>("shared", "nap", (1u64,), opts("shared-nap"))
            .await
            .expect("enqueue nap");
    // B has looked since the enqueue and left `nap` waiting behind the limit.
    b.dispatcher_rounds(2).await;
    assert_eq!(status(b.pool(), "shared-nap").await, "ENQUEUED");
    OPEN.add_permits(1);
    assert_eq!(first.result().await.expect("held"), 7);
    let out = tokio::time::timeout(Duration::from_secs(60), second.result())
        .await
        .expect("the end on node A started node B's workflow without a poll");
    assert_eq!(out.expect("nap"), "shared-nap");
    b.stop().await;
    a.stop().await;
}

/// A round that skipped a queue with work because another round held it looks again soon,
/// though the poll is an hour away: here a transaction of the test holds the queue's claim
/// lock, as a round of a node that cannot take the work would.
#[tokio::test]
async fn a_round_that_found_its_queue_held_claims_again_once_it_is_free() {
    let n = unpolled_node_with(
        8,
        &[Queue {
            concurrency: Some(4),
            ..Queue::named("held-elsewhere")
        }],
    )
    .await;
    let mut other = n.pool().begin().await.expect("begin");
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('dbos.queue.claim:' || $1, 0))")
        .bind("held-elsewhere")
        .execute(&mut *other)
        .await
        .expect("lock");
    let h =
        n.wf.enqueue::<_, String>("held-elsewhere", "nap", (1u64,), opts("behind-a-round"))
            .await
            .expect("enqueue");
    n.dispatcher_rounds(2).await;
    assert_eq!(status(n.pool(), "behind-a-round").await, "ENQUEUED");
    other.rollback().await.expect("rollback");
    let out = tokio::time::timeout(Duration::from_secs(60), h.result())
        .await
        .expect("claimed once the other round ended, without a poll");
    assert_eq!(out.expect("nap"), "behind-a-round");
    n.stop().await;
}

/// A burst on a least-loaded queue spreads over the nodes, though every dispatcher polls once
/// an hour: a round takes no more than keeps its node at the least loaded other node's share
/// of its slots, then claims again. Before, the first node to look took up to all its slots.
#[tokio::test]
async fn a_burst_on_a_least_loaded_queue_spreads_over_the_nodes() {
    static OPEN: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(0);
    async fn held(_ctx: workflow::Context, (x,): (u64,)) -> Result<u64, workflow::Error> {
        OPEN.acquire().await.expect("gate").forget();
        Ok(x)
    }
    let db = testing::database().await;
    let register = |r: &mut workflow::Registry| {
        r.register("held", held);
    };
    let spread = [Queue::named("spread")];
    let a = unpolled_node_on(db.clone(), 4, &spread, register).await;
    let mut c = a.pool().acquire().await.expect("conn");
    queues::set_placement(
        &mut c,
        "spread",
        &Default::default(),
        &queues::Policy::LeastLoaded,
    )
    .await
    .expect("placement");
    drop(c);
    let b = unpolled_node_on(db.clone(), 2, &[], register).await;
    let c = unpolled_node_on(db, 4, &[], register).await;
    // One statement enqueues the burst, so every node first sees all six, and wakes them as
    // a node's enqueue does.
    sqlx::query(
        "WITH e AS (SELECT dbos.enqueue_workflow('held', 'spread', ARRAY[i::text::json],
                                                 workflow_id => 'spread-' || i)
                    FROM generate_series(0, 5) i)
         SELECT count(*), pg_notify($1, 'spread') FROM e",
    )
    .bind(dbos_scheduler::ENQUEUE_CHANNEL)
    .execute(a.pool())
    .await
    .expect("enqueue");
    let handles: Vec<_> = (0..6)
        .map(|i| a.wf.handle::<u64>(format!("spread-{i}")))
        .collect();
    for i in 0..6 {
        wait_status(a.pool(), &format!("spread-{i}"), "PENDING").await;
    }
    let per_node: Vec<(String, i64)> = sqlx::query_as(
        "SELECT executor_id, count(*) FROM dbos.workflow_status
         WHERE workflow_uuid LIKE 'spread-%' GROUP BY executor_id ORDER BY executor_id",
    )
    .fetch_all(a.pool())
    .await
    .expect("per node");
    assert_eq!(per_node.len(), 3, "every node took a share: {per_node:?}");
    OPEN.add_permits(6);
    for h in handles {
        h.result().await.expect("held");
    }
    for n in [c, b, a] {
        n.stop().await;
    }
}

/// A change that lets nodes claim more wakes them: removing a placement rule no node met, and
/// deleting a queue whose limit was reached, each start the work waiting on the queue though
/// the poll is an hour away. The work is written without a notification.
#[tokio::test]
async fn a_loosened_queue_is_claimed_without_a_poll() {
    let n = unpolled_node(8).await;
    let version = n.wf.app_version().to_owned();
    let mut c = n.pool().acquire().await.expect("conn");
    let far = std::collections::BTreeMap::from([("zone".to_owned(), "far".to_owned())]);
    create(&n, Queue::named("placed")).await;
    queues::set_placement(&mut c, "placed", &far, &queues::Policy::Fifo)
        .await
        .expect("placement");
    create(
        &n,
        Queue {
            concurrency: Some(1),
            ..Queue::named("narrow")
        },
    )
    .await;
    for (id, queue, st) in [
        ("placed-1", "placed", "ENQUEUED"),
        ("narrow-running", "narrow", "PENDING"),
        ("narrow-1", "narrow", "ENQUEUED"),
    ] {
        seed(n.pool(), id, "nap", st, "elsewhere", &version, 0, &[]).await;
        sqlx::query("UPDATE dbos.workflow_status SET queue_name = $2 WHERE workflow_uuid = $1")
            .bind(id)
            .bind(queue)
            .execute(&mut *c)
            .await
            .expect("queue");
    }
    queues::set_placement(&mut c, "placed", &Default::default(), &queues::Policy::Fifo)
        .await
        .expect("placement removed");
    wait_status(n.pool(), "placed-1", "SUCCESS").await;
    queues::delete(&mut c, "narrow").await.expect("delete");
    wait_status(n.pool(), "narrow-1", "SUCCESS").await;
    drop(c);
    n.stop().await;
}
