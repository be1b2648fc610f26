//! Replay: recorded histories re-executed against the same code (consistent) and against
//! changed code (the first divergence, at the right function ID), writing nothing.

use std::time::Duration;

use dbos_services::testing::{node, wait_status, Node};
use dbos_services::workflow::{self, Context, Registry, Replayer, StartOptions, Verdict};
use futures_util::future::BoxFuture;

/// The code of the workflows, as first deployed and as changed since.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Code {
    First,
    /// The first step renamed.
    Renamed,
    /// A step inserted before the transaction.
    Inserted,
    /// A branch on the first step's recorded value goes the other way.
    Branch,
    /// The last step removed.
    Removed,
    /// The same steps, another output.
    NewOutput,
    /// A write through the pool outside any step.
    WritesOutsideSteps,
}

type Wf<I, O> =
    Box<dyn Fn(Context, I) -> BoxFuture<'static, Result<O, workflow::Error>> + Send + Sync>;

fn order(code: Code) -> Wf<(i64,), i64> {
    Box::new(move |ctx: Context, (qty,): (i64,)| {
        Box::pin(async move {
            let first = if code == Code::Renamed {
                "reserve_stock"
            } else {
                "reserve"
            };
            let reserved: i64 = ctx.step(first, || async move { Ok(qty * 10) }).await?;
            if code == Code::WritesOutsideSteps {
                sqlx::query("INSERT INTO replay_ledger (qty) VALUES (-1)")
                    .execute(ctx.pool())
                    .await?;
            }
            let threshold = if code == Code::Branch { 1_000 } else { 10 };
            let size: String = if reserved > threshold {
                ctx.step("big", || async { Ok("big".to_owned()) }).await?
            } else {
                ctx.step("small", || async { Ok("small".to_owned()) })
                    .await?
            };
            if code == Code::Inserted {
                ctx.step("audit", || async { Ok(()) }).await?;
            }
            ctx.transaction("charge", move |c| {
                Box::pin(async move {
                    sqlx::query("INSERT INTO replay_ledger (qty) VALUES ($1)")
                        .bind(qty)
                        .execute(&mut *c)
                        .await?;
                    Ok(())
                })
            })
            .await?;
            ctx.set_event("state", &size).await?;
            ctx.sleep(Duration::from_millis(1)).await?;
            let _noise: u64 = ctx.random().await?;
            let child: i64 = ctx.run_child("child", (qty,)).await?;
            if code != Code::Removed {
                ctx.step("notify", || async { Ok(()) }).await?;
            }
            let out = reserved + child;
            Ok(if code == Code::NewOutput {
                out + 1
            } else {
                out
            })
        })
    })
}

fn child(_code: Code) -> Wf<(i64,), i64> {
    Box::new(|ctx: Context, (x,): (i64,)| {
        Box::pin(async move { ctx.step("double", || async move { Ok(x * 2) }).await })
    })
}

/// Takes a step, then waits for a message that does not come while the test runs.
fn waiter(code: Code) -> Wf<(), Option<String>> {
    Box::new(move |ctx: Context, ()| {
        Box::pin(async move {
            let first = if code == Code::Renamed {
                "prepare"
            } else {
                "ready"
            };
            ctx.step(first, || async { Ok(1) }).await?;
            ctx.recv::<String>(Some("go"), Duration::from_secs(3_600))
                .await
        })
    })
}

fn registry(code: Code) -> Registry {
    let mut r = Registry::new();
    r.register("order", order(code))
        .register("child", child(code))
        .register("waiter", waiter(code));
    r
}

/// Row counts of every table a replay could write.
async fn counts(n: &Node) -> Vec<i64> {
    let mut out = Vec::new();
    for table in [
        "dbos.workflow_status",
        "dbos.operation_outputs",
        "dbos.workflow_events",
        "dbos.workflow_events_history",
        "dbos.notifications",
        "replay_ledger",
    ] {
        out.push(
            sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
                .fetch_one(n.pool())
                .await
                .unwrap(),
        );
    }
    out
}

fn id(s: &str) -> StartOptions {
    StartOptions {
        workflow_id: Some(s.to_owned()),
        ..StartOptions::default()
    }
}

#[tokio::test]
async fn changed_code_diverges_at_the_right_step_and_a_replay_writes_nothing() {
    let n = node(|r| {
        r.merge(registry(Code::First));
    })
    .await;
    sqlx::query("CREATE TABLE replay_ledger (qty int8 NOT NULL)")
        .execute(n.pool())
        .await
        .unwrap();
    let out: i64 = n.wf.run("order", (2_i64,), id("o-2")).await.unwrap();
    assert_eq!(out, 24);
    n.wf.start::<_, Option<String>>("waiter", (), id("w-1"))
        .await
        .unwrap();
    wait_status(n.pool(), "w-1", "PENDING").await;
    // The waiter has taken its step and waits on its message: its timer is recorded.
    let deadline = tokio::time::Instant::now() + dbos_services::testing::WAIT;
    while dbos_services::testing::step_names(n.pool(), "w-1")
        .await
        .len()
        < 2
    {
        assert!(tokio::time::Instant::now() < deadline, "w-1 waits");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before = counts(&n).await;

    let same = Replayer::new(n.pool(), registry(Code::First));
    let r = same.replay("o-2").await.unwrap();
    assert_eq!(r.verdict, Verdict::Consistent, "{r}");
    assert_eq!(r.recorded, 9, "{r}");
    let r = same.replay("o-2-7").await.unwrap();
    assert_eq!(
        (r.name.as_str(), &r.verdict),
        ("child", &Verdict::Consistent)
    );
    let r = same.replay("w-1").await.unwrap();
    assert_eq!(r.verdict, Verdict::ConsistentPrefix, "{r}");

    // (code, workflow, expected function ID, recorded name, called name)
    let cases = [
        (
            Code::Renamed,
            "o-2",
            Some(1),
            Some("reserve"),
            Some("reserve_stock"),
        ),
        (
            Code::Inserted,
            "o-2",
            Some(3),
            Some("charge"),
            Some("audit"),
        ),
        (Code::Branch, "o-2", Some(2), Some("big"), Some("small")),
        (Code::Removed, "o-2", Some(9), Some("notify"), None),
        (Code::NewOutput, "o-2", None, None, None),
        // Its write is refused (the replay's sessions are read-only), so the code fails there.
        (Code::WritesOutsideSteps, "o-2", Some(2), Some("big"), None),
        (
            Code::Renamed,
            "w-1",
            Some(1),
            Some("ready"),
            Some("prepare"),
        ),
    ];
    for (code, wf, fid, recorded, called) in cases {
        let r = Replayer::new(n.pool(), registry(code))
            .replay(wf)
            .await
            .unwrap();
        let Verdict::Diverged(d) = &r.verdict else {
            panic!("{code:?} on {wf}: {r}");
        };
        assert_eq!(
            (d.function_id, d.recorded.as_deref(), d.called.as_deref()),
            (fid, recorded, called),
            "{code:?} on {wf}: {r}"
        );
        assert!(!r.is_consistent());
        if code == Code::WritesOutsideSteps {
            assert!(d.detail.contains("read-only"), "{r}");
        }
    }

    // Every workflow at once: the selection by name.
    let all = same
        .replay_all(&workflow::manage::ListFilter {
            name: Some("order".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
    assert!(all[0].is_consistent());
    let err = same.replay("no-such").await.unwrap_err();
    assert!(matches!(err, workflow::Error::NotFound(_)), "{err}");

    assert_eq!(counts(&n).await, before, "a replay wrote nothing");
    n.stop().await;
}
