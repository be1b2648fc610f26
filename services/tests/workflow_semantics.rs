//! DBOS workflow semantics: exactly-once steps, replayed errors, idempotent IDs, children,
//! transactions, determinism, recovery, dead-lettering, timeouts, cancel/resume, fork, patching.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dbos_services::testing::{
    fork_and_wait, node, node_on, seed, status, step_names, wait_status, Counter, WAIT,
};
use dbos_services::workflow::{self, manage, RetryPolicy, StartOptions};

fn id(s: &str) -> StartOptions {
    StartOptions {
        workflow_id: Some(s.to_owned()),
        ..StartOptions::default()
    }
}

fn three_steps(
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
            let a = ctx
                .step("one", || {
                    let c = c.clone();
                    async move {
                        c.hit("one");
                        Ok(x + 1)
                    }
                })
                .await?;
            let b = ctx
                .step("two", || {
                    let c = c.clone();
                    async move {
                        c.hit("two");
                        Ok(a * 2)
                    }
                })
                .await?;
            ctx.step("three", || {
                let c = c.clone();
                async move {
                    c.hit("three");
                    Ok(b + 100)
                }
            })
            .await
        })
    }
}

#[tokio::test]
async fn completed_steps_run_once_across_repeated_calls_with_one_id() {
    let c = Counter::default();
    let n = node(|r| {
        r.register("three", three_steps(c.clone()));
    })
    .await;
    let out: i64 = n.wf.run("three", (4,), id("w1")).await.expect("run");
    assert_eq!(out, 110);
    let again: i64 = n.wf.run("three", (4,), id("w1")).await.expect("run again");
    assert_eq!(again, 110);
    for s in ["one", "two", "three"] {
        assert_eq!(c.get(s), 1, "{s} ran once");
    }
    assert_eq!(
        step_names(n.pool(), "w1").await,
        vec![(1, "one".into()), (2, "two".into()), (3, "three".into())]
    );
    let (inputs, output, ser): (String, String, String) = sqlx::query_as(
        "SELECT COALESCE(i.inputs, s.inputs), COALESCE(o.output, s.output), s.serialization
         FROM dbos.workflow_status s
         LEFT JOIN dbos.workflow_input i USING (workflow_uuid)
         LEFT JOIN dbos.workflow_output o USING (workflow_uuid)
         WHERE workflow_uuid = 'w1'",
    )
    .fetch_one(n.pool())
    .await
    .expect("row");
    assert_eq!(inputs, r#"{"namedArgs":{},"positionalArgs":[4]}"#);
    assert_eq!(output, "110");
    assert_eq!(ser, "portable_json");
    n.stop().await;
}

#[tokio::test]
async fn an_id_used_by_another_function_is_a_conflict() {
    let c = Counter::default();
    let n = node(|r| {
        r.register("three", three_steps(c.clone()));
        r.register("other", |_ctx: workflow::Context, (): ()| async { Ok(1) });
    })
    .await;
    let _: i64 = n.wf.run("three", (1,), id("same")).await.expect("run");
    let err =
        n.wf.start::<_, i64>("other", (), id("same"))
            .await
            .expect_err("conflict");
    assert!(matches!(err, workflow::Error::Conflict { .. }), "{err}");
    let err =
        n.wf.start::<_, i64>("missing", (), id("x"))
            .await
            .expect_err("unknown");
    assert!(matches!(err, workflow::Error::NotRegistered(_)), "{err}");
    let err =
        n.wf.start::<_, i64>("three", (1,), id("  "))
            .await
            .expect_err("empty id");
    assert!(matches!(err, workflow::Error::Invalid(_)), "{err}");
    n.stop().await;
}

#[tokio::test]
async fn recorded_errors_replay_without_running_the_step_again() {
    let c = Counter::default();
    let c2 = c.clone();
    let n = node(move |r| {
        r.register("fails", move |ctx: workflow::Context, (): ()| {
            let c = c2.clone();
            async move {
                ctx.step("bad", || {
                    let c = c.clone();
                    async move {
                        c.hit("bad");
                        Err::<i64, _>(workflow::Error::failed("ValueError", "no good"))
                    }
                })
                .await
            }
        });
    })
    .await;
    let err =
        n.wf.run::<_, i64>("fails", (), id("e1"))
            .await
            .expect_err("fails");
    assert_eq!(err.to_string(), "ValueError: no good");
    let err2 =
        n.wf.run::<_, i64>("fails", (), id("e1"))
            .await
            .expect_err("fails again");
    assert_eq!(err2.to_string(), "ValueError: no good");
    assert_eq!(c.get("bad"), 1);
    assert_eq!(status(n.pool(), "e1").await, "ERROR");
    let err_row = dbos_store::workflows::outcome(n.pool(), "e1")
        .await
        .expect("outcome")
        .error
        .expect("an error");
    assert_eq!(
        err_row,
        r#"{"name":"ValueError","message":"no good","code":null}"#
    );
    n.stop().await;
}

#[tokio::test]
async fn retries_follow_the_policy_and_only_the_final_outcome_is_recorded() {
    let c = Counter::default();
    let c2 = c.clone();
    let n = node(move |r| {
        r.register("flaky", move |ctx: workflow::Context, (): ()| {
            let c = c2.clone();
            async move {
                let policy = RetryPolicy {
                    max_attempts: 5,
                    interval_ms: 1,
                    ..RetryPolicy::default()
                };
                ctx.step_with("flaky", &policy, || {
                    let c = c.clone();
                    async move {
                        c.hit("try");
                        if c.get("try") < 3 {
                            Err(workflow::Error::failed("Flaky", "not yet"))
                        } else {
                            Ok(c.get("try"))
                        }
                    }
                })
                .await
            }
        });
    })
    .await;
    let out: usize =
        n.wf.run("flaky", (), id("r1"))
            .await
            .expect("succeeds on the 3rd try");
    assert_eq!(out, 3);
    assert_eq!(step_names(n.pool(), "r1").await.len(), 1);
    n.stop().await;
}

#[tokio::test]
async fn children_get_parent_derived_ids_and_are_reattached_on_replay() {
    let c = Counter::default();
    let c2 = c.clone();
    let n = node(move |r| {
        let c3 = c2.clone();
        r.register("child", move |ctx: workflow::Context, (x,): (i64,)| {
            let c = c3.clone();
            async move {
                ctx.step("double", || {
                    let c = c.clone();
                    async move {
                        c.hit("child");
                        Ok(x * 2)
                    }
                })
                .await
            }
        });
        r.register("parent", |ctx: workflow::Context, (): ()| async move {
            let a: i64 = ctx.run_child("child", (5,)).await?;
            let b: i64 = ctx.run_child("child", (a,)).await?;
            Ok(b)
        });
    })
    .await;
    let out: i64 = n.wf.run("parent", (), id("p")).await.expect("run");
    assert_eq!(out, 20);
    let children: Vec<(String, String)> = sqlx::query_as(
        "SELECT workflow_uuid, parent_workflow_id FROM dbos.workflow_status WHERE parent_workflow_id IS NOT NULL ORDER BY 1",
    )
    .fetch_all(n.pool())
    .await
    .expect("children");
    assert_eq!(
        children,
        vec![("p-1".into(), "p".into()), ("p-3".into(), "p".into())]
    );
    assert_eq!(
        step_names(n.pool(), "p").await,
        vec![
            (1, "child".into()),
            (2, "DBOS.getResult".into()),
            (3, "child".into()),
            (4, "DBOS.getResult".into())
        ]
    );
    // A fork that replays the first child re-attaches to it instead of starting another.
    let out: i64 = fork_and_wait(&n, "p", 3, "p2").await;
    assert_eq!(out, 20);
    assert_eq!(
        c.get("child"),
        3,
        "the forked run started only the second child anew"
    );
    n.stop().await;
}

#[tokio::test]
async fn a_transaction_commits_user_writes_and_its_checkpoint_together_once() {
    let n = node(|r| {
        r.register("tx", |ctx: workflow::Context, (v,): (i32,)| async move {
            let inserted: i64 = ctx
                .transaction("insert", move |c| {
                    Box::pin(async move {
                        sqlx::query("INSERT INTO public.ledger (v) VALUES ($1)")
                            .bind(v)
                            .execute(&mut *c)
                            .await?;
                        Ok(sqlx::query_scalar("SELECT count(*) FROM public.ledger")
                            .fetch_one(&mut *c)
                            .await?)
                    })
                })
                .await?;
            // A failing transaction leaves nothing behind but its recorded error.
            let failed: Result<i64, workflow::Error> = ctx
                .transaction("fails", |c| {
                    Box::pin(async move {
                        sqlx::query("INSERT INTO public.ledger (v) VALUES (-1)")
                            .execute(&mut *c)
                            .await?;
                        Err(workflow::Error::failed("Rollback", "undo"))
                    })
                })
                .await;
            assert!(failed.is_err());
            Ok(inserted)
        });
    })
    .await;
    sqlx::query("CREATE TABLE public.ledger (v int)")
        .execute(n.pool())
        .await
        .expect("table");
    let out: i64 = n.wf.run("tx", (7,), id("t1")).await.expect("run");
    assert_eq!(out, 1);
    let again: i64 = n.wf.run("tx", (7,), id("t1")).await.expect("again");
    assert_eq!(again, 1);
    let rows: Vec<(i32,)> = sqlx::query_as("SELECT v FROM public.ledger")
        .fetch_all(n.pool())
        .await
        .expect("rows");
    assert_eq!(
        rows,
        vec![(7,)],
        "the effect is there exactly once, the failed one not at all"
    );
    let names = step_names(n.pool(), "t1").await;
    assert_eq!(names, vec![(1, "insert".into()), (2, "fails".into())]);
    n.stop().await;
}

#[tokio::test]
async fn recovery_replays_recorded_steps_and_is_scoped_to_this_version() {
    let c = Counter::default();
    let n = node(|r| {
        r.register("three", three_steps(c.clone()));
    })
    .await;
    let v = n.wf.app_version().to_owned();
    seed(
        n.pool(),
        "rec",
        "three",
        "PENDING",
        "crashed-node",
        &v,
        1,
        &[(1, "one", "5")],
    )
    .await;
    seed(
        n.pool(),
        "other-version",
        "three",
        "PENDING",
        "crashed-node",
        "some-old-version",
        1,
        &[],
    )
    .await;
    let recovered =
        n.wf.recover(&["crashed-node".to_owned()])
            .await
            .expect("recover");
    assert_eq!(recovered, 1, "only this version's pending work");
    let out: i64 = n.wf.handle("rec").result().await.expect("finishes");
    assert_eq!(out, 110);
    assert_eq!(
        (c.get("one"), c.get("two"), c.get("three")),
        (0, 1, 1),
        "step one was replayed"
    );
    assert_eq!(status(n.pool(), "other-version").await, "PENDING");
    let attempts: i64 = sqlx::query_scalar(
        "SELECT recovery_attempts FROM dbos.workflow_status WHERE workflow_uuid = 'rec'",
    )
    .fetch_one(n.pool())
    .await
    .expect("attempts");
    assert_eq!(attempts, 2);
    n.stop().await;
}

#[tokio::test]
async fn a_renamed_step_is_a_determinism_error() {
    let c = Counter::default();
    let n = node(|r| {
        r.register("three", three_steps(c.clone()));
    })
    .await;
    let v = n.wf.app_version().to_owned();
    seed(
        n.pool(),
        "det",
        "three",
        "ENQUEUED",
        "x",
        &v,
        0,
        &[(1, "renamed", "5")],
    )
    .await;
    n.wf.wake();
    let err = n.wf.handle::<i64>("det").result().await.expect_err("fails");
    assert!(err.to_string().contains("DBOSUnexpectedStepError"), "{err}");
    assert_eq!(c.get("one"), 0);
    n.stop().await;
}

#[tokio::test]
async fn too_many_recoveries_dead_letter_and_resume_revives() {
    let c = Counter::default();
    let n = node(|r| {
        r.register("three", three_steps(c.clone()));
    })
    .await;
    let v = n.wf.app_version().to_owned();
    seed(n.pool(), "dlq", "three", "ENQUEUED", "x", &v, 101, &[]).await;
    n.wf.wake();
    let err =
        n.wf.handle::<i64>("dlq")
            .result()
            .await
            .expect_err("dead-lettered");
    assert!(
        matches!(err, workflow::Error::MaxRecoveryAttemptsExceeded(_)),
        "{err}"
    );
    assert_eq!(c.get("one"), 0);
    assert!(manage::resume(n.pool(), "dlq").await.expect("resume"));
    n.wf.wake();
    let out: i64 = n.wf.handle("dlq").result().await.expect("resumed");
    assert_eq!(out, 110);
    n.stop().await;
}

fn slow(
    gate: Arc<AtomicBool>,
) -> impl Fn(
    workflow::Context,
    (),
) -> futures_util::future::BoxFuture<'static, Result<i64, workflow::Error>>
       + Send
       + Sync
       + 'static {
    move |ctx: workflow::Context, (): ()| {
        let gate = gate.clone();
        Box::pin(async move {
            let a = ctx.step("first", || async { Ok(1) }).await?;
            // Waits until released, in small steps so a cancel is seen at a boundary.
            loop {
                let open = ctx
                    .step("poll", || {
                        let g = gate.clone();
                        async move { Ok(g.load(Ordering::SeqCst)) }
                    })
                    .await?;
                if open {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(a + 1)
        })
    }
}

#[tokio::test]
async fn timeouts_cancel_direct_queued_and_inherited_deadlines() {
    let gate = Arc::new(AtomicBool::new(false));
    let g = gate.clone();
    let n = node(move |r| {
        r.register("slow", slow(g.clone()));
        r.register("parent", |ctx: workflow::Context, (): ()| async move {
            let v: i64 = ctx.run_child("slow", ()).await?;
            Ok(v)
        });
    })
    .await;
    let timeout = |i: &str| StartOptions {
        workflow_id: Some(i.into()),
        timeout: Some(Duration::from_millis(300)),
        ..StartOptions::default()
    };
    let err =
        n.wf.run::<_, i64>("slow", (), timeout("direct"))
            .await
            .expect_err("times out");
    assert!(matches!(err, workflow::Error::Cancelled(_)), "{err}");
    let h =
        n.wf.enqueue::<_, i64>("default", "slow", (), timeout("queued"))
            .await
            .expect("enqueue");
    let err = h.result().await.expect_err("times out");
    assert!(matches!(err, workflow::Error::Cancelled(_)), "{err}");
    let err =
        n.wf.run::<_, i64>("parent", (), timeout("par"))
            .await
            .expect_err("times out");
    assert!(matches!(err, workflow::Error::Cancelled(_)), "{err}");
    let (pd, cd): (Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT (SELECT workflow_deadline_epoch_ms FROM dbos.workflow_status WHERE workflow_uuid = 'par'),
                (SELECT workflow_deadline_epoch_ms FROM dbos.workflow_status WHERE workflow_uuid = 'par-1')",
    )
    .fetch_one(n.pool()).await.expect("deadlines");
    assert!(pd.is_some());
    assert_eq!(pd, cd, "the child inherits the parent's deadline");
    wait_status(n.pool(), "par-1", "CANCELLED").await;
    n.stop().await;
}

#[tokio::test]
async fn cancel_stops_at_a_step_boundary_and_resume_finishes_without_redoing_steps() {
    let gate = Arc::new(AtomicBool::new(false));
    let g = gate.clone();
    let n = node(move |r| {
        r.register("slow", slow(g.clone()));
    })
    .await;
    let h =
        n.wf.start::<_, i64>("slow", (), id("c1"))
            .await
            .expect("start");
    // Cancel while it runs: once it has recorded a poll.
    let deadline = tokio::time::Instant::now() + WAIT;
    while !step_names(n.pool(), "c1")
        .await
        .iter()
        .any(|(_, name)| name == "poll")
    {
        assert!(tokio::time::Instant::now() < deadline, "c1 polls");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        manage::cancel(n.pool(), "c1", false).await.expect("cancel"),
        vec!["c1".to_owned()]
    );
    let err = h.result().await.expect_err("cancelled");
    assert!(matches!(err, workflow::Error::Cancelled(_)), "{err}");
    // The execution returned at a step boundary (its slot is free) instead of polling on ...
    n.wait_no_tasks_running().await;
    let polls_before = step_names(n.pool(), "c1").await.len();
    // ... and the dispatcher, having looked twice since, did not start the cancelled
    // workflow again.
    n.dispatcher_rounds(2).await;
    assert_eq!(n.kernel.runtime().running(), 0, "nothing restarted c1");
    assert_eq!(
        step_names(n.pool(), "c1").await.len(),
        polls_before,
        "no steps run after the cancel"
    );
    gate.store(true, Ordering::SeqCst);
    assert!(manage::resume(n.pool(), "c1").await.expect("resume"));
    n.wf.wake();
    let out: i64 = n.wf.handle("c1").result().await.expect("resumed");
    assert_eq!(out, 2);
    let names = step_names(n.pool(), "c1").await;
    assert_eq!(names.iter().filter(|(_, n)| n == "first").count(), 1);
    n.stop().await;
}

#[tokio::test]
async fn fork_from_steps_1_3_5_runs_exactly_the_later_steps() {
    let c = Counter::default();
    let c2 = c.clone();
    let n = node(move |r| {
        r.register("five", move |ctx: workflow::Context, (): ()| {
            let c = c2.clone();
            async move {
                let mut sum = 0;
                for i in 1..=5 {
                    let c = c.clone();
                    sum += ctx
                        .step(&format!("s{i}"), move || {
                            let c = c.clone();
                            async move {
                                c.hit(&format!("s{i}"));
                                Ok(i)
                            }
                        })
                        .await?;
                }
                Ok(sum)
            }
        });
    })
    .await;
    let out: i64 = n.wf.run("five", (), id("f")).await.expect("run");
    assert_eq!(out, 15);
    for start in [1, 3, 5] {
        let before: Vec<usize> = (1..=5).map(|i| c.get(&format!("s{i}"))).collect();
        let fid = manage::fork(n.pool(), "f", start, Some(format!("f-from-{start}")), None)
            .await
            .expect("fork");
        n.wf.wake();
        let out: i64 = n.wf.handle(fid.clone()).result().await.expect("forked");
        assert_eq!(out, 15);
        let after: Vec<usize> = (1..=5).map(|i| c.get(&format!("s{i}"))).collect();
        let ran: Vec<usize> = (0..5)
            .filter(|&i| after[i] > before[i])
            .map(|i| i + 1)
            .collect();
        assert_eq!(
            ran,
            (start as usize..=5).collect::<Vec<_>>(),
            "fork from {start}"
        );
        let forked_from: Option<String> = sqlx::query_scalar(
            "SELECT forked_from FROM dbos.workflow_status WHERE workflow_uuid = $1",
        )
        .bind(&fid)
        .fetch_one(n.pool())
        .await
        .expect("row");
        assert_eq!(forked_from.as_deref(), Some("f"));
    }
    n.stop().await;
}

#[tokio::test]
async fn patching_keeps_old_histories_on_the_old_path() {
    let patched = Arc::new(AtomicBool::new(false));
    let p = patched.clone();
    let n = node(move |r| {
        r.register("evolving", move |ctx: workflow::Context, (): ()| {
            let p = p.clone();
            async move {
                let a: i64 = ctx.step("a", || async { Ok(1) }).await?;
                let b: i64 = if p.load(Ordering::SeqCst) && ctx.patch("v2").await? {
                    ctx.step("new", || async { Ok(100) }).await?
                } else {
                    ctx.step("old", || async { Ok(10) }).await?
                };
                let c: i64 = ctx.step("c", || async { Ok(1000) }).await?;
                Ok(a + b + c)
            }
        });
    })
    .await;
    let old: i64 = n.wf.run("evolving", (), id("v1-run")).await.expect("v1");
    assert_eq!(old, 1011);
    patched.store(true, Ordering::SeqCst);
    let new: i64 = n.wf.run("evolving", (), id("v2-run")).await.expect("v2");
    assert_eq!(new, 1101);
    assert_eq!(
        step_names(n.pool(), "v2-run").await,
        vec![
            (1, "a".into()),
            (2, "DBOS.patch-v2".into()),
            (3, "new".into()),
            (4, "c".into())
        ]
    );
    // Replaying the old history with the patched code keeps the old path.
    let replayed: i64 = fork_and_wait(&n, "v1-run", 3, "v1-replay").await;
    assert_eq!(replayed, 1011);
    n.stop().await;
}

#[tokio::test]
async fn sleep_now_and_random_are_recorded() {
    let n = node(|r| {
        r.register("sleeper", |ctx: workflow::Context, (): ()| async move {
            let t0 = ctx.now_ms().await?;
            ctx.sleep(Duration::from_millis(50)).await?;
            let r = ctx.random().await?;
            Ok((t0, r))
        });
    })
    .await;
    let first: (i64, u64) = n.wf.run("sleeper", (), id("s")).await.expect("run");
    let names = step_names(n.pool(), "s").await;
    assert_eq!(
        names,
        vec![
            (1, "DBOS.now".into()),
            (2, "DBOS.sleep".into()),
            (3, "DBOS.random".into())
        ]
    );
    let replay: (i64, u64) = fork_and_wait(&n, "s", 4, "s2").await;
    assert_eq!(
        replay, first,
        "a replay sees the recorded time and random value"
    );
    n.stop().await;
}

#[tokio::test]
async fn enqueued_workflows_run_on_a_node_with_their_code_and_sql_enqueue_works() {
    let c = Counter::default();
    let n = node(|r| {
        r.register("three", three_steps(c.clone()));
    })
    .await;
    let h =
        n.wf.enqueue::<_, i64>("default", "three", (1,), id("q1"))
            .await
            .expect("enqueue");
    assert_eq!(h.result().await.expect("ran"), 104);
    let sql_id: String =
        sqlx::query_scalar("SELECT dbos.enqueue_workflow('three', 'default', ARRAY['2'::json])")
            .fetch_one(n.pool())
            .await
            .expect("sql enqueue");
    let out: i64 = n.wf.handle(sql_id).result().await.expect("ran");
    assert_eq!(out, 106);
    // Nobody here has code for it: it stays enqueued.
    let other: String = sqlx::query_scalar("SELECT dbos.enqueue_workflow('unknown_fn', 'default')")
        .fetch_one(n.pool())
        .await
        .expect("sql enqueue");
    // The dispatcher looked (two whole rounds after the enqueue committed) and left it.
    n.dispatcher_rounds(2).await;
    assert_eq!(status(n.pool(), &other).await, "ENQUEUED");
    let dedup = StartOptions {
        deduplication_id: Some("k".into()),
        ..StartOptions::default()
    };
    n.wf.enqueue::<_, i64>("default", "unknown_fn", (1,), dedup.clone())
        .await
        .expect("first");
    let err =
        n.wf.enqueue::<_, i64>("default", "unknown_fn", (1,), dedup)
            .await
            .expect_err("dup");
    assert!(err.to_string().contains("deduplicated"), "{err}");
    n.stop().await;
}

#[tokio::test]
async fn concurrent_enqueues_each_get_their_own_answer() {
    let n = node(|_| {}).await;
    let parts = dbos_store::queues::Queue {
        partition_concurrency: Some(1),
        ..dbos_store::queues::Queue::named("parts")
    };
    assert!(dbos_store::queues::insert(n.pool(), &parts)
        .await
        .expect("queue"));
    let opts = |id: &str, dedup: Option<&str>, key: Option<&str>| StartOptions {
        workflow_id: Some(id.to_owned()),
        deduplication_id: dedup.map(str::to_owned),
        partition_key: key.map(str::to_owned),
        ..StartOptions::default()
    };
    // Nobody here has code for `unknown_fn`: everything stays enqueued, and its deduplication
    // ID in use. Sent at once, the enqueues share group commits.
    let mut requests = Vec::new();
    for i in 0..8 {
        requests.push(("default", opts(&format!("dedup-{i}"), Some("same"), None)));
    }
    for _ in 0..4 {
        requests.push(("default", opts("twice", None, None)));
    }
    requests.push(("parts", opts("no-key", None, None)));
    requests.push(("default", opts("stray-key", None, Some("a"))));
    requests.push(("parts", opts("keyed", None, Some("a"))));
    let results = futures_util::future::join_all(requests.into_iter().map(|(queue, o)| {
        let wf = n.wf.clone();
        async move { wf.enqueue::<_, i64>(queue, "unknown_fn", (1,), o).await }
    }))
    .await;
    let errors: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(ToString::to_string))
        .collect();
    let deduplicated = errors.iter().filter(|e| e.contains("deduplicated")).count();
    assert_eq!(
        deduplicated, 7,
        "one of eight enqueues keeps the ID: {errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("\"parts\" is partitioned")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("\"default\" is not partitioned")),
        "{errors:?}"
    );
    assert_eq!(errors.len(), 9, "{errors:?}");
    let rows: Vec<(String, String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT w.workflow_uuid, w.status, w.queue_partition_key, COALESCE(i.inputs, w.inputs)
         FROM dbos.workflow_status w LEFT JOIN dbos.workflow_input i USING (workflow_uuid)
         WHERE w.workflow_uuid IN ('twice', 'keyed', 'no-key', 'stray-key')
            OR w.deduplication_id = 'same'
         ORDER BY 1",
    )
    .fetch_all(n.pool())
    .await
    .expect("rows");
    let ids: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(ids.len(), 3, "{rows:?}");
    assert!(ids[0].starts_with("dedup-"), "{rows:?}");
    assert_eq!(&ids[1..], ["keyed", "twice"]);
    assert!(
        rows.iter().all(|r| r.1 == "ENQUEUED" && r.3.is_some()),
        "{rows:?}"
    );
    assert_eq!(rows[1].2.as_deref(), Some("a"));
    n.stop().await;
}

#[tokio::test]
async fn list_steps_and_delete() {
    let c = Counter::default();
    let n = node(|r| {
        r.register("three", three_steps(c.clone()));
    })
    .await;
    for i in 0..3 {
        let _: i64 =
            n.wf.run("three", (i,), id(&format!("l{i}")))
                .await
                .expect("run");
    }
    let all = manage::list(
        n.pool(),
        &manage::ListFilter {
            name: Some("three".into()),
            sort_desc: true,
            ..Default::default()
        },
    )
    .await
    .expect("list");
    assert_eq!(
        all.iter()
            .map(|w| w.workflow_id.as_str())
            .collect::<Vec<_>>(),
        vec!["l2", "l1", "l0"]
    );
    assert_eq!(all[0].output.as_deref(), Some("106"));
    let page = manage::list(
        n.pool(),
        &manage::ListFilter {
            workflow_id_prefix: Some("l".into()),
            limit: Some(1),
            offset: Some(1),
            ..Default::default()
        },
    )
    .await
    .expect("list");
    assert_eq!(page[0].workflow_id, "l1");
    let steps = manage::steps(n.pool(), "l0").await.expect("steps");
    assert_eq!(
        steps
            .iter()
            .map(|s| s.output.clone().unwrap_or_default())
            .collect::<Vec<_>>(),
        vec!["1", "2", "102"]
    );
    assert_eq!(
        manage::delete(n.pool(), "l0", false).await.expect("delete"),
        vec!["l0".to_owned()]
    );
    assert!(matches!(
        manage::get(n.pool(), "l0").await,
        Err(workflow::Error::NotFound(_))
    ));
    assert!(matches!(
        manage::steps(n.pool(), "l0").await,
        Err(workflow::Error::NotFound(_))
    ));
    n.stop().await;
}

/// Moves workflow `id`'s creation `days` into the past.
async fn age(pool: &sqlx::PgPool, id: &str, days: i64) {
    sqlx::query(
        "UPDATE dbos.workflow_status SET created_at = created_at - $2 * 86400000
         WHERE workflow_uuid = $1",
    )
    .bind(id)
    .bind(days)
    .execute(pool)
    .await
    .expect("age");
}

/// Rows recorded for workflow `id` in each workflow table, status row first.
async fn records(pool: &sqlx::PgPool, id: &str) -> Vec<i64> {
    let mut n = Vec::new();
    for table in [
        "workflow_status",
        "workflow_input",
        "workflow_output",
        "operation_outputs",
        "workflow_events",
    ] {
        let c: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM dbos.{table} WHERE workflow_uuid = $1"
        ))
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("count");
        n.push(c);
    }
    let c: i64 =
        sqlx::query_scalar("SELECT count(*) FROM dbos.notifications WHERE destination_uuid = $1")
            .bind(id)
            .fetch_one(pool)
            .await
            .expect("count");
    n.push(c);
    n
}

#[tokio::test]
async fn gc_deletes_ended_workflows_past_the_policy_with_all_they_recorded() {
    let c = Counter::default();
    let n = node(|r| {
        r.register("three", three_steps(c.clone()));
    })
    .await;
    let pool = n.pool();
    for i in 0..3 {
        let _: i64 =
            n.wf.run("three", (i,), id(&format!("g{i}")))
                .await
                .expect("run");
    }
    // g0 ran ten days ago and left a message and an event behind, and the input and output
    // rows DBOS 3.x writes (a node keeps both in the status row).
    sqlx::query(
        "WITH m AS (INSERT INTO dbos.notifications (destination_uuid, topic, message)
                    VALUES ('g0', 't', '1')),
              i AS (INSERT INTO dbos.workflow_input (workflow_uuid, inputs)
                    VALUES ('g0', '{\"positionalArgs\":[0],\"namedArgs\":{}}')),
              o AS (INSERT INTO dbos.workflow_output (workflow_uuid, output) VALUES ('g0', '3'))
         INSERT INTO dbos.workflow_events (workflow_uuid, key, value) VALUES ('g0', 'k', '1')",
    )
    .execute(pool)
    .await
    .expect("message and event");
    let before = records(pool, "g0").await;
    assert!(
        before[0] == 1
            && before[1] == 1
            && before[2] == 1
            && before[3] == 3
            && before[4] == 1
            && before[5] == 1,
        "{before:?}"
    );
    age(pool, "g0", 10).await;
    // As old, but ended otherwise, or never ended: no node runs `nobody`.
    seed(pool, "old-error", "three", "ERROR", "gone", "v", 1, &[]).await;
    seed(
        pool,
        "old-queued",
        "nobody",
        "ENQUEUED",
        "gone",
        "v",
        0,
        &[],
    )
    .await;
    seed(
        pool,
        "old-running",
        "nobody",
        "PENDING",
        "gone",
        "v",
        1,
        &[],
    )
    .await;
    // Two ended children: one of the running workflow, which may yet read its outcome, and one
    // of the ended g0.
    seed(pool, "old-child", "three", "SUCCESS", "gone", "v", 1, &[]).await;
    seed(pool, "g0-child", "three", "SUCCESS", "gone", "v", 1, &[]).await;
    sqlx::query(
        "UPDATE dbos.workflow_status SET parent_workflow_id = CASE workflow_uuid
             WHEN 'old-child' THEN 'old-running' ELSE 'g0' END
         WHERE workflow_uuid IN ('old-child', 'g0-child')",
    )
    .execute(pool)
    .await
    .expect("parents");
    for w in [
        "old-error",
        "old-queued",
        "old-running",
        "old-child",
        "g0-child",
    ] {
        age(pool, w, 10).await;
    }

    // A policy that keeps everything, or keeps nothing at all, is refused.
    for bad in [
        manage::Retention::default(),
        manage::Retention {
            max_age_ms: None,
            max_rows: Some(0),
        },
        manage::Retention {
            max_age_ms: Some(-1),
            max_rows: None,
        },
    ] {
        assert!(
            matches!(
                manage::gc(pool, &bad).await,
                Err(workflow::Error::Invalid(_))
            ),
            "{bad:?}"
        );
        assert!(
            matches!(
                manage::gc_count(pool, &bad).await,
                Err(workflow::Error::Invalid(_))
            ),
            "{bad:?}"
        );
    }

    let week = manage::Retention {
        max_age_ms: Some(7 * 86_400_000),
        max_rows: None,
    };
    assert_eq!(manage::gc_count(pool, &week).await.expect("count"), 3);
    assert_eq!(manage::gc_count(pool, &week).await.expect("count again"), 3);
    assert_eq!(manage::gc(pool, &week).await.expect("gc"), 3);
    assert_eq!(manage::gc_count(pool, &week).await.expect("count after"), 0);
    assert_eq!(records(pool, "g0").await, vec![0; 6]);
    for w in ["old-error", "g0-child"] {
        assert_eq!(status(pool, w).await, "", "{w} went");
    }
    for w in ["old-queued", "old-running", "old-child"] {
        assert!(!status(pool, w).await.is_empty(), "{w} stays");
    }
    for w in ["g1", "g2"] {
        assert_eq!(status(pool, w).await, "SUCCESS");
    }
    assert_eq!(manage::gc(pool, &week).await.expect("gc again"), 0);

    // Keep the 3 newest: g1 and g2 (a day older) go; the old, unended ones and the running
    // one's child stay.
    for w in ["g1", "g2"] {
        age(pool, w, 1).await;
    }
    for i in 3..6 {
        let _: i64 =
            n.wf.run("three", (i,), id(&format!("g{i}")))
                .await
                .expect("run");
    }
    let three = manage::Retention {
        max_age_ms: None,
        max_rows: Some(3),
    };
    assert_eq!(manage::gc(pool, &three).await.expect("gc"), 2);
    let left: Vec<String> =
        sqlx::query_scalar("SELECT workflow_uuid FROM dbos.workflow_status ORDER BY workflow_uuid")
            .fetch_all(pool)
            .await
            .expect("left");
    assert_eq!(
        left,
        ["g3", "g4", "g5", "old-child", "old-queued", "old-running"]
    );
    n.stop().await;
}

#[tokio::test]
async fn the_nodes_sweep_applies_the_retention_policy_of_the_table() {
    let c = Counter::default();
    let n = node_on(
        dbos_kernel::testing::database().await,
        |r| {
            r.register("three", three_steps(c.clone()));
        },
        workflow::Options {
            retention_sweep_interval: Duration::from_millis(50),
            ..workflow::Options::default()
        },
    )
    .await;
    let pool = n.pool();
    for w in ["old", "young"] {
        let _: i64 = n.wf.run("three", (1,), id(w)).await.expect("run");
    }
    age(pool, "old", 2).await;
    sqlx::query("UPDATE sched.workflow_retention SET max_age = '1 day'")
        .execute(pool)
        .await
        .expect("policy");
    let deadline = tokio::time::Instant::now() + WAIT;
    while !status(pool, "old").await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sweep deleted the old workflow"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The round that took `old` looked at `young` too.
    assert_eq!(status(pool, "young").await, "SUCCESS");
    // The table refuses a policy that would delete everything at once.
    let e = sqlx::query("UPDATE sched.workflow_retention SET max_rows = 0")
        .execute(pool)
        .await
        .expect_err("max_rows 0");
    assert!(e.to_string().contains("check constraint"), "{e}");
    n.stop().await;
}

#[tokio::test]
async fn debounce_coalesces_calls_and_the_last_arguments_win() {
    let c = Counter::default();
    let n = node(|r| {
        r.register("three", three_steps(c.clone()));
    })
    .await;
    let mut ids = Vec::new();
    for i in 1..=5 {
        let h =
            n.wf.debounce::<_, i64>(
                "default",
                "three",
                "k",
                // Far longer than the calls take: each call lands before the start it pushes
                // back, however slow the machine.
                Duration::from_secs(2),
                None,
                (i,),
            )
            .await
            .expect("debounce");
        ids.push(h.workflow_id().to_owned());
    }
    assert!(ids.iter().all(|i| *i == ids[0]), "one workflow: {ids:?}");
    assert_eq!(status(n.pool(), &ids[0]).await, "DELAYED");
    let out: i64 = n.wf.handle(ids[0].clone()).result().await.expect("runs");
    assert_eq!(out, 112, "ran once, with the last call's argument 5");
    assert_eq!(c.get("one"), 1);
    // The key is free again: the next call debounces a new workflow.
    let next =
        n.wf.debounce::<_, i64>(
            "default",
            "three",
            "k",
            Duration::from_millis(10),
            None,
            (0,),
        )
        .await
        .expect("debounce");
    assert_ne!(next.workflow_id(), ids[0]);
    assert_eq!(next.result().await.expect("runs"), 102);
    // A timeout caps how long calls can push the start back.
    let capped =
        n.wf.debounce::<_, i64>(
            "default",
            "three",
            "cap",
            Duration::from_secs(3600),
            Some(Duration::from_millis(200)),
            (1,),
        )
        .await
        .expect("debounce");
    assert_eq!(capped.result().await.expect("runs within the cap"), 104);
    let err =
        n.wf.debounce::<_, i64>("default", "three", "", Duration::from_millis(1), None, (1,))
            .await
            .expect_err("empty key");
    assert!(matches!(err, workflow::Error::Invalid(_)));
    n.stop().await;
}

#[tokio::test]
async fn delayed_enqueue_and_wait_first() {
    let gate = Arc::new(AtomicBool::new(false));
    let g = gate.clone();
    let c = Counter::default();
    let n = node(move |r| {
        r.register("slow", slow(g.clone()));
        r.register("three", three_steps(c.clone()));
    })
    .await;
    let delayed = StartOptions {
        // Long enough that the status is read before the delay runs out.
        delay: Some(Duration::from_secs(2)),
        ..id("later")
    };
    let h =
        n.wf.enqueue::<_, i64>("default", "three", (1,), delayed)
            .await
            .expect("enqueue");
    assert_eq!(status(n.pool(), "later").await, "DELAYED");
    assert_eq!(h.result().await.expect("runs after its delay"), 104);
    let slow_h =
        n.wf.start::<_, i64>("slow", (), id("blocked"))
            .await
            .expect("start");
    let quick =
        n.wf.start::<_, i64>("three", (2,), id("quick"))
            .await
            .expect("start");
    let (i, r) = n.wf.wait_first(&[slow_h, quick]).await.expect("wait");
    assert_eq!((i, r.expect("quick result")), (1, 106));
    gate.store(true, Ordering::SeqCst);
    n.stop().await;
}

#[tokio::test]
async fn rewind_reruns_an_ended_workflow_in_place_from_a_step() {
    let c = Counter::default();
    let n = node(|r| {
        r.register("three", three_steps(c.clone()));
    })
    .await;
    let _: i64 = n.wf.run("three", (4,), id("rw")).await.expect("run");
    manage::rewind(n.pool(), "rw", 2).await.expect("rewind");
    n.wf.wake();
    wait_status(n.pool(), "rw", "SUCCESS").await;
    let out: i64 = n.wf.handle("rw").result().await.expect("result");
    assert_eq!(out, 110);
    assert_eq!(
        (c.get("one"), c.get("two"), c.get("three")),
        (1, 2, 2),
        "steps 2 and 3 ran again"
    );
    let err = manage::rewind(n.pool(), "rw", 0).await.expect_err("step 0");
    assert!(matches!(err, workflow::Error::Invalid(_)));
    assert!(matches!(
        manage::rewind(n.pool(), "nope", 1).await,
        Err(workflow::Error::NotFound(_))
    ));
    n.stop().await;
}

#[tokio::test]
async fn cancel_with_cascade_reaches_the_children() {
    let gate = Arc::new(AtomicBool::new(false));
    let g = gate.clone();
    let n = node(move |r| {
        r.register("slow", slow(g.clone()));
        r.register("parent", |ctx: workflow::Context, (): ()| async move {
            let v: i64 = ctx.run_child("slow", ()).await?;
            Ok(v)
        });
    })
    .await;
    let h =
        n.wf.start::<_, i64>("parent", (), id("cp"))
            .await
            .expect("start");
    wait_status(n.pool(), "cp-1", "PENDING").await;
    let cancelled = manage::cancel(n.pool(), "cp", true).await.expect("cancel");
    assert_eq!(cancelled.len(), 2, "{cancelled:?}");
    assert!(matches!(
        h.result().await,
        Err(workflow::Error::Cancelled(_))
    ));
    assert_eq!(status(n.pool(), "cp-1").await, "CANCELLED");
    assert!(matches!(
        manage::cancel(n.pool(), "nope", false).await,
        Err(workflow::Error::NotFound(_))
    ));
    gate.store(true, Ordering::SeqCst);
    n.stop().await;
}

/// Whether operation `fid` of workflow `id` is recorded, read on a connection of its own.
async fn recorded(pool: &sqlx::PgPool, id: &str, fid: i32) -> bool {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT FROM dbos.operation_outputs
                        WHERE workflow_uuid = $1 AND function_id = $2)",
    )
    .bind(id)
    .bind(fid)
    .fetch_one(pool)
    .await
    .expect("read the checkpoints")
}

#[tokio::test]
async fn a_steps_checkpoint_is_durable_before_the_next_step_runs_and_the_last_goes_with_the_outcome(
) {
    let n = node(|r| {
        r.register("seen", |ctx: workflow::Context, (): ()| async move {
            ctx.step("first", || async { Ok(1) }).await?;
            // The second step's body sees the first step recorded, from outside.
            let pool = ctx.pool().clone();
            let id = ctx.workflow_id().to_owned();
            let saw_first = ctx
                .step("second", || {
                    let (pool, id) = (pool.clone(), id.clone());
                    async move { Ok(recorded(&pool, &id, 1).await) }
                })
                .await?;
            // The last step's checkpoint goes with the outcome: an error after it as well.
            ctx.step("last", || async { Ok(3) }).await?;
            if saw_first {
                Err(workflow::Error::failed("Late", "after the last step"))
            } else {
                Ok(())
            }
        });
    })
    .await;
    let err =
        n.wf.run::<_, ()>("seen", (), id("pending-1"))
            .await
            .expect_err("the workflow fails after its last step");
    assert!(err.to_string().contains("after the last step"), "{err}");
    assert_eq!(status(n.pool(), "pending-1").await, "ERROR");
    assert_eq!(
        step_names(n.pool(), "pending-1").await,
        vec![
            (1, "first".into()),
            (2, "second".into()),
            (3, "last".into())
        ]
    );
}

#[tokio::test]
async fn the_outcome_of_a_queued_workflow_is_notified_and_a_direct_ones_is_not() {
    let n = node(|r| {
        r.register(
            "double",
            |_ctx: workflow::Context, (x,): (i64,)| async move { Ok(2 * x) },
        );
    })
    .await;
    let limited = dbos_store::queues::Queue {
        concurrency: Some(5),
        ..dbos_store::queues::Queue::named("limited")
    };
    assert!(dbos_store::queues::insert(n.pool(), &limited)
        .await
        .expect("queue"));
    let mut listener = sqlx::postgres::PgListener::connect(&n.db.url)
        .await
        .expect("a listener");
    listener
        .listen(dbos_services::workflow::OUTCOME_CHANNEL)
        .await
        .expect("listen");
    let direct: i64 =
        n.wf.run("double", (1,), id("direct-1"))
            .await
            .expect("direct");
    assert_eq!(direct, 2);
    // Claimed by its own enqueue, it runs where it was enqueued, as a direct start does.
    let here: i64 =
        n.wf.enqueue::<_, i64>("default", "double", (3,), id("here-1"))
            .await
            .expect("enqueue")
            .result()
            .await
            .expect("here");
    assert_eq!(here, 6);
    // Claimed by a claim round (its queue has a limit shared by all nodes).
    let queued: i64 =
        n.wf.enqueue::<_, i64>("limited", "double", (2,), id("queued-1"))
            .await
            .expect("enqueue")
            .result()
            .await
            .expect("queued");
    assert_eq!(queued, 4);
    // Notifications arrive in commit order: the others', had there been any, first.
    let first = tokio::time::timeout(WAIT, listener.recv())
        .await
        .expect("a notification")
        .expect("received");
    assert_eq!(first.payload(), "queued-1");
}

/// An enqueue claims its workflow for the enqueuing node, which runs it at once, only when the
/// queue would let any node take it now; otherwise the workflow waits ENQUEUED for a claim
/// round. A claim round gives the workflow a new owner token, the enqueue's own claim keeps the
/// creator's, so the tokens tell which one started it.
#[tokio::test]
async fn an_enqueue_claims_its_workflow_here_only_when_its_queue_lets_any_node_take_it() {
    let gate = Arc::new(AtomicBool::new(false));
    let g = gate.clone();
    let n = node(move |r| {
        r.register("slow", slow(g.clone()));
    })
    .await;
    let claimed_by_enqueue = |id: &'static str| {
        let pool = n.pool().clone();
        async move {
            let (status, same, executor, attempts): (String, bool, Option<String>, Option<i64>) =
                sqlx::query_as(
                    "SELECT status, owner_xid IS NOT DISTINCT FROM creator_xid, executor_id,
                            recovery_attempts
                     FROM dbos.workflow_status WHERE workflow_uuid = $1",
                )
                .bind(id)
                .fetch_one(&pool)
                .await
                .expect("row");
            assert_eq!(status, "PENDING", "{id} runs");
            if same {
                assert_eq!(attempts, Some(1), "{id}: one attempt");
                assert!(
                    executor.is_some_and(|e| !e.is_empty()),
                    "{id} runs on a node"
                );
            }
            same
        }
    };
    // An open queue: the enqueue has claimed it when it returns.
    let open =
        n.wf.enqueue::<_, i64>("default", "slow", (), id("open"))
            .await
            .expect("enqueue");
    assert!(claimed_by_enqueue("open").await, "claimed by its enqueue");
    // Queues with a limit, shared by all nodes or per node: a claim round decides.
    let mut limited = Vec::new();
    for (queue, wid) in [
        (
            dbos_store::queues::Queue {
                concurrency: Some(5),
                ..dbos_store::queues::Queue::named("limited")
            },
            "lim",
        ),
        (
            dbos_store::queues::Queue {
                worker_concurrency: Some(3),
                ..dbos_store::queues::Queue::named("per-node")
            },
            "pn",
        ),
    ] {
        assert!(dbos_store::queues::insert(n.pool(), &queue)
            .await
            .expect("queue"));
        let h =
            n.wf.enqueue::<_, i64>(&queue.name, "slow", (), id(wid))
                .await
                .expect("enqueue");
        wait_status(n.pool(), wid, "PENDING").await;
        assert!(!claimed_by_enqueue(wid).await, "{wid}: claimed by a round");
        limited.push(h);
    }
    // A paused queue: nothing starts until it is resumed.
    assert!(
        dbos_store::queues::insert(n.pool(), &dbos_store::queues::Queue::named("paused"))
            .await
            .expect("queue")
    );
    let mut c = n.pool().acquire().await.expect("conn");
    dbos_scheduler::queues::set_paused(&mut c, "paused", true)
        .await
        .expect("pause");
    let held =
        n.wf.enqueue::<_, i64>("paused", "slow", (), id("held"))
            .await
            .expect("enqueue");
    assert_eq!(status(n.pool(), "held").await, "ENQUEUED");
    // A workflow waiting on an open queue (no node here has its code): a later enqueue does
    // not jump the line.
    n.wf.enqueue::<_, i64>("line", "unknown_fn", (), id("first"))
        .await
        .expect("enqueue");
    let behind =
        n.wf.enqueue::<_, i64>("line", "slow", (), id("behind"))
            .await
            .expect("enqueue");
    wait_status(n.pool(), "behind", "PENDING").await;
    assert!(!claimed_by_enqueue("behind").await, "claimed by a round");
    assert_eq!(status(n.pool(), "first").await, "ENQUEUED");
    dbos_scheduler::queues::set_paused(&mut c, "paused", false)
        .await
        .expect("resume");
    n.wf.wake();
    wait_status(n.pool(), "held", "PENDING").await;
    assert!(!claimed_by_enqueue("held").await, "claimed by a round");
    drop(c);
    gate.store(true, Ordering::SeqCst);
    for h in limited.into_iter().chain([open, held, behind]) {
        assert_eq!(h.result().await.expect("ends"), 2);
    }
    n.stop().await;
}

/// A node with no slot free does not claim an enqueue for itself: the workflow waits ENQUEUED
/// and a claim round starts it once a slot is free.
#[tokio::test]
async fn an_enqueue_on_a_node_without_a_free_slot_waits_for_a_claim_round() {
    let gate = Arc::new(AtomicBool::new(false));
    let g = gate.clone();
    let db = dbos_kernel::testing::database().await;
    let kernel = dbos_kernel::Kernel::boot(
        dbos_kernel::Config {
            slots: 1,
            ..db.config()
        },
        &dbos_services::migrations(),
    )
    .await
    .expect("boot");
    let mut registry = workflow::Registry::new();
    registry.register("slow", slow(g.clone()));
    let wf = workflow::Service::launch(&kernel, registry, workflow::Options::default())
        .await
        .expect("launch");
    let pool = kernel.pool().clone();
    let owner_is_creator = |id: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, bool>(
                "SELECT owner_xid IS NOT DISTINCT FROM creator_xid FROM dbos.workflow_status
                 WHERE workflow_uuid = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .expect("row")
        }
    };
    // The one slot: taken by the first, claimed by its own enqueue.
    let first = wf
        .enqueue::<_, i64>("default", "slow", (), id("first"))
        .await
        .expect("enqueue");
    assert_eq!(status(&pool, "first").await, "PENDING");
    assert!(owner_is_creator("first").await, "claimed by its enqueue");
    let second = wf
        .enqueue::<_, i64>("default", "slow", (), id("second"))
        .await
        .expect("enqueue");
    assert_eq!(
        status(&pool, "second").await,
        "ENQUEUED",
        "no slot: it waits"
    );
    gate.store(true, Ordering::SeqCst);
    assert_eq!(first.result().await.expect("ends"), 2);
    assert_eq!(second.result().await.expect("ends"), 2);
    let ran_once: bool = sqlx::query_scalar(
        "SELECT recovery_attempts = 1 AND status = 'SUCCESS' FROM dbos.workflow_status
         WHERE workflow_uuid = 'second'",
    )
    .fetch_one(&pool)
    .await
    .expect("row");
    assert!(ran_once, "claimed once, by a round");
    kernel.shutdown().await.expect("shutdown");
    drop(db);
}

/// A workflow whose payloads DBOS's tools wrote in their own rows (`workflow_input`, and a
/// `workflow_output` of an earlier end) and that runs again on a node: it runs on those inputs,
/// shows the node's outcome (kept in the status row, the older row that readers take first
/// deleted), and a fork of it takes the same inputs.
#[tokio::test]
async fn payload_rows_dbos_wrote_are_read_and_a_new_outcome_replaces_its_row() {
    let c = Counter::default();
    let n = node(|r| {
        r.register("three", three_steps(c.clone()));
    })
    .await;
    sqlx::query(
        "WITH s AS (
             INSERT INTO dbos.workflow_status
                 (workflow_uuid, name, queue_name, status, recovery_attempts, serialization)
             VALUES ('again', 'three', 'default', 'ENQUEUED', 0, 'portable_json')
         ), i AS (
             INSERT INTO dbos.workflow_input (workflow_uuid, inputs)
             VALUES ('again', '{\"positionalArgs\":[4],\"namedArgs\":{}}')
         )
         INSERT INTO dbos.workflow_output (workflow_uuid, output) VALUES ('again', '1')",
    )
    .execute(n.pool())
    .await
    .expect("a workflow with an earlier outcome's row");
    n.wf.wake();
    let out: i64 = n.wf.handle("again").result().await.expect("runs");
    assert_eq!(out, 110);
    let stored = dbos_store::workflows::outcome(n.pool(), "again")
        .await
        .expect("outcome")
        .output;
    assert_eq!(stored.as_deref(), Some("110"));
    let rows: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM dbos.workflow_output WHERE workflow_uuid = 'again'",
    )
    .fetch_one(n.pool())
    .await
    .expect("count");
    assert_eq!(rows, 0, "the earlier outcome's row is gone");
    // Its inputs are in the `workflow_input` row DBOS wrote: a fork from the first step
    // takes them from there into the fork's status row.
    let fid = manage::fork(n.pool(), "again", 1, Some("again-fork".into()), None)
        .await
        .expect("fork");
    n.wf.wake();
    let forked: i64 = n.wf.handle(fid).result().await.expect("forked");
    assert_eq!(forked, 110);
    assert_eq!(
        c.get("one"),
        2,
        "the fork ran its first step on the same input"
    );
}
