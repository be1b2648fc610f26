//! Faults that must neither strand nor double work: a user's SQL error, a bad request in a
//! group commit, a start and an outcome of one ID together, children when every slot is taken,
//! and a database that drops the node's connections.

use std::time::Duration;

use dbos_kernel::{testing, Config, Kernel};
use dbos_services::testing::{node, node_with, status, wait_status, Node};
use dbos_services::workflow::{self, Options, Registry, Service, StartOptions};

fn id(s: &str) -> StartOptions {
    StartOptions {
        workflow_id: Some(s.to_owned()),
        ..StartOptions::default()
    }
}

/// Inserts `key` twice in one transaction step: the second insert breaks the primary key.
async fn duplicate(ctx: workflow::Context, (key,): (String,)) -> Result<(), workflow::Error> {
    ctx.transaction("insert twice", move |c| {
        let key = key.clone();
        Box::pin(async move {
            for _ in 0..2 {
                sqlx::query("INSERT INTO faults_keys VALUES ($1)")
                    .bind(&key)
                    .execute(&mut *c)
                    .await?;
            }
            Ok(())
        })
    })
    .await
}

#[tokio::test]
async fn a_users_sql_error_in_a_transaction_is_recorded_and_ends_the_workflow_in_error() {
    let n = node(|r| {
        r.register("duplicate", duplicate);
    })
    .await;
    sqlx::query("CREATE TABLE faults_keys (k text PRIMARY KEY)")
        .execute(n.pool())
        .await
        .expect("table");
    let err =
        n.wf.run::<_, ()>("duplicate", ("k1".to_owned(),), id("dup"))
            .await
            .expect_err("the unique violation is the workflow's error");
    assert!(err.to_string().contains("duplicate key"), "{err}");
    assert_eq!(status(n.pool(), "dup").await, "ERROR");
    let (name, error): (String, Option<String>) = sqlx::query_as(
        "SELECT function_name, error FROM dbos.operation_outputs WHERE workflow_uuid = 'dup'",
    )
    .fetch_one(n.pool())
    .await
    .expect("the step is recorded");
    assert_eq!(name, "insert twice");
    assert!(error.is_some_and(|e| e.contains("duplicate key")));
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM faults_keys")
        .fetch_one(n.pool())
        .await
        .expect("count");
    assert_eq!(rows, 0, "the step's writes were rolled back");
    n.stop().await;
}

/// A cancel that returns while a transaction step of the workflow is under way: the step's
/// writes never commit, as its checkpoint is written only under the lock of a PENDING status
/// row, and the workflow ends CANCELLED.
#[tokio::test]
async fn a_transaction_under_way_when_its_workflow_is_cancelled_never_commits() {
    use std::sync::Arc;
    use tokio::sync::Semaphore;
    let (inside, gate) = (Arc::new(Semaphore::new(0)), Arc::new(Semaphore::new(0)));
    let (i, g) = (inside.clone(), gate.clone());
    let n = node(move |r| {
        r.register("held_write", move |ctx: workflow::Context, (): ()| {
            let (i, g) = (i.clone(), g.clone());
            async move {
                ctx.transaction("write", move |c| {
                    let (i, g) = (i.clone(), g.clone());
                    Box::pin(async move {
                        sqlx::query("INSERT INTO faults_keys VALUES ('held')")
                            .execute(&mut *c)
                            .await?;
                        // Inside the transaction, its write made: the test cancels now.
                        i.add_permits(1);
                        g.acquire().await.expect("open").forget();
                        Ok(())
                    })
                })
                .await
            }
        });
    })
    .await;
    sqlx::query("CREATE TABLE faults_keys (k text PRIMARY KEY)")
        .execute(n.pool())
        .await
        .expect("table");
    let h =
        n.wf.start::<_, ()>("held_write", (), id("held"))
            .await
            .expect("start");
    inside.acquire().await.expect("inside").forget();
    let cancelled = workflow::manage::cancel(n.pool(), "held", false)
        .await
        .expect("cancel");
    assert_eq!(cancelled, ["held"]);
    opened_ends_cancelled(&n, &gate, h).await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM faults_keys")
        .fetch_one(n.pool())
        .await
        .expect("count");
    assert_eq!(
        rows, 0,
        "the transaction committed after its workflow's cancel had returned"
    );
    assert_eq!(status(n.pool(), "held").await, "CANCELLED");
    n.stop().await;
}

/// Opens `gate` for the workflow of `h`, which must then end cancelled, and waits until no task
/// of it runs on `n`.
async fn opened_ends_cancelled(
    n: &Node,
    gate: &tokio::sync::Semaphore,
    h: workflow::WorkflowHandle<()>,
) {
    gate.add_permits(1);
    let err = h
        .result_within(Duration::from_secs(60))
        .await
        .expect_err("cancelled");
    assert!(matches!(err, workflow::Error::Cancelled(_)), "{err}");
    n.wait_no_tasks_running().await;
}

async fn named_step(ctx: workflow::Context, (name,): (String,)) -> Result<u32, workflow::Error> {
    ctx.step(&name, || async { Ok(1u32) }).await
}

#[tokio::test]
async fn a_bad_step_fails_alone_and_its_neighbours_in_the_group_commit_succeed() {
    let n = node(|r| {
        r.register("named_step", named_step);
    })
    .await;
    let mut handles = Vec::new();
    for i in 0..32 {
        let name = match i {
            7 => "nul\0in the name".to_owned(),
            19 => "x".repeat(dbos_store::limits::NAME_BYTES_MAX + 1),
            _ => format!("step {i}"),
        };
        let h =
            n.wf.start::<_, u32>("named_step", (name,), id(&format!("s{i}")))
                .await
                .expect("start");
        handles.push(h);
    }
    for (i, h) in handles.into_iter().enumerate() {
        let r = h.result().await;
        if i == 7 || i == 19 {
            let e = r.expect_err("a bad step name is refused");
            assert!(e.to_string().contains("step name"), "{e}");
        } else {
            assert_eq!(r.expect("its neighbours succeed"), 1);
        }
    }
    n.stop().await;
}

async fn parent(ctx: workflow::Context, (): ()) -> Result<u32, workflow::Error> {
    let v: u32 = ctx.run_child("leaf", ()).await?;
    Ok(v + 1)
}

async fn leaf(ctx: workflow::Context, (): ()) -> Result<u32, workflow::Error> {
    ctx.step("one", || async { Ok(1u32) }).await
}

#[tokio::test]
async fn children_run_on_their_parents_slot_when_every_slot_is_taken() {
    let db = testing::database().await;
    let config = Config {
        slots: 2,
        ..db.config()
    };
    let kernel = Kernel::boot(config, &dbos_services::migrations())
        .await
        .expect("boot");
    let mut registry = Registry::new();
    registry.register("parent", parent);
    registry.register("leaf", leaf);
    let wf = Service::launch(&kernel, registry, Options::default())
        .await
        .expect("launch");
    // Eight parents on two slots: each holds a slot while it waits for its child.
    let mut handles = Vec::new();
    for i in 0..8 {
        handles.push(
            wf.start::<_, u32>("parent", (), id(&format!("p{i}")))
                .await
                .expect("start"),
        );
    }
    for h in handles {
        let out = h
            .result_within(Duration::from_secs(120))
            .await
            .expect("every parent ends");
        assert_eq!(out, 2);
    }
    kernel.shutdown().await.expect("shutdown");
}

async fn slow_steps(ctx: workflow::Context, (n,): (u32,)) -> Result<u32, workflow::Error> {
    let mut sum = 0;
    for i in 0..n {
        sum += ctx
            .step(&format!("step {i}"), || async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(1u32)
            })
            .await?;
    }
    Ok(sum)
}

#[tokio::test]
async fn workflows_end_when_the_database_drops_every_connection_of_the_node() {
    let n = node(|r| {
        r.register("slow_steps", slow_steps);
    })
    .await;
    let mut handles = Vec::new();
    for i in 0..24 {
        handles.push(
            n.wf.start::<_, u32>("slow_steps", (10u32,), id(&format!("w{i}")))
                .await
                .expect("start"),
        );
    }
    // Terminate the node's backends a few times while the workflows run.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(60)).await;
        terminate_backends(&n).await;
    }
    for (i, h) in handles.into_iter().enumerate() {
        let out = h
            .result_within(Duration::from_secs(120))
            .await
            .unwrap_or_else(|e| panic!("w{i} ends: {e}"));
        assert_eq!(out, 10);
        wait_status(n.pool(), &format!("w{i}"), "SUCCESS").await;
    }
    // Every step is recorded once.
    let steps: i64 = sqlx::query_scalar("SELECT count(*) FROM dbos.operation_outputs")
        .fetch_one(n.pool())
        .await
        .expect("steps");
    assert_eq!(steps, 24 * 10);
    n.stop().await;
}

async fn waits_long(ctx: workflow::Context, (): ()) -> Result<u32, workflow::Error> {
    ctx.sleep(Duration::from_secs(3600)).await?;
    Ok(0)
}

async fn awaits_child(ctx: workflow::Context, (): ()) -> Result<u32, workflow::Error> {
    ctx.run_child("waits_long", ()).await
}

#[tokio::test]
async fn an_awaited_childs_cancellation_is_an_error_that_ends_the_parent() {
    let n = node(|r| {
        r.register("waits_long", waits_long);
        r.register("awaits_child", awaits_child);
    })
    .await;
    let h =
        n.wf.start::<_, u32>("awaits_child", (), id("parent"))
            .await
            .expect("start");
    // The child's ID is the parent's and the position of its start.
    wait_status(n.pool(), "parent-1", "PENDING").await;
    workflow::manage::cancel(n.pool(), "parent-1", false)
        .await
        .expect("cancel the child");
    let err = h
        .result_within(Duration::from_secs(60))
        .await
        .expect_err("the parent fails");
    assert!(
        err.to_string()
            .contains("DBOSAwaitedWorkflowCancelledError"),
        "{err}"
    );
    assert_eq!(status(n.pool(), "parent").await, "ERROR");
    n.stop().await;
}

async fn answer(_ctx: workflow::Context, (): ()) -> Result<u32, workflow::Error> {
    Ok(42)
}

#[tokio::test]
async fn another_applications_newer_version_does_not_stop_unpinned_work() {
    let n = node(|r| {
        r.register("answer", answer);
    })
    .await;
    // A DBOS application named "billing" registers a newer version on the same database.
    sqlx::query(
        "INSERT INTO dbos.application_versions
             (version_id, version_name, version_timestamp, application_name)
         VALUES ('py', 'py-version', (EXTRACT(epoch FROM now()) * 1000)::bigint + 60000, 'billing')",
    )
    .execute(n.pool())
    .await
    .expect("a foreign version");
    // Enqueued without a version (as any SQL client does): the latest of ours runs it.
    sqlx::query("SELECT dbos.enqueue_workflow('answer', 'default', workflow_id => 'unpinned')")
        .execute(n.pool())
        .await
        .expect("enqueue");
    let out: u32 =
        n.wf.handle("unpinned")
            .result_within(Duration::from_secs(60))
            .await
            .expect("runs");
    assert_eq!(out, 42);
    n.stop().await;
}

use dbos_kernel::testing::process_gone as gone;

/// Polls `done` until it holds; a hang fails after a minute rather than never.
/// Terminates every backend of `n`'s database, as a server restart would drop them.
async fn terminate_backends(n: &Node) {
    let admin = sqlx::PgPool::connect(&testing::admin_url())
        .await
        .expect("admin");
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(&n.db.name)
    .execute(&admin)
    .await
    .expect("terminate");
    admin.close().await;
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    tokio::time::timeout(Duration::from_secs(60), async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("waited in vain until {what}"));
}

/// The pids the task `id`'s command printed into its stdout stream, in order.
async fn printed_pids(pool: &sqlx::PgPool, id: &str) -> Vec<i32> {
    let values: Vec<String> = sqlx::query_scalar(
        "SELECT value FROM dbos.streams WHERE workflow_uuid = $1 AND key = 'stdout'
         ORDER BY \"offset\"",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .expect("stream");
    values
        .iter()
        .filter_map(|v| serde_json::from_str::<String>(v).ok())
        .flat_map(|t| {
            t.lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

async fn wait_pids(pool: &sqlx::PgPool, id: &str, n: usize) -> Vec<i32> {
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let pids = printed_pids(pool, id).await;
            if pids.len() >= n {
                return pids;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("waited in vain until the command printed {n} pids"))
}

/// Submits the command task `id`: `sh -c script` on the default queue.
async fn submit_script(n: &Node, id: &str, script: &str) {
    let submit = dbos_scheduler::tasks::Submit {
        spec: dbos_scheduler::command::CommandSpec {
            argv: vec!["sh".into(), "-c".into(), script.into()],
            ..Default::default()
        },
        queue: "default".into(),
        id: Some(id.into()),
        ..Default::default()
    };
    dbos_scheduler::tasks::submit(n.pool(), &submit)
        .await
        .expect("submit");
}

/// Holds the node's row from another session, so that its heartbeats block and cannot renew
/// its lease, until the node gives the lease up; rolling the returned transaction back lets
/// them through again.
async fn block_heartbeats(n: &Node) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let admin = sqlx::PgPool::connect(&n.db.url).await.expect("connect");
    let mut blocker = admin.begin().await.expect("begin");
    sqlx::query("SELECT 1 FROM kernel.nodes WHERE node_id = $1 FOR UPDATE")
        .bind(n.kernel.node_id())
        .execute(&mut *blocker)
        .await
        .expect("lock the node's row");
    let lost = n.kernel.lease().lost();
    tokio::time::timeout(Duration::from_secs(30), lost.cancelled())
        .await
        .expect("the node gives its lease up");
    blocker
}

/// A command's output written while the database drops the node's connections is stored once
/// the database answers again, not dropped.
#[tokio::test]
async fn a_commands_output_survives_the_loss_of_the_nodes_connections() {
    let n = node(dbos_services::builtin::register).await;
    let go = std::env::temp_dir().join(format!("dbos-output-go-{}", std::process::id()));
    let _ = std::fs::remove_file(&go);
    submit_script(
        &n,
        "printer",
        &format!(
            "echo 1; while [ ! -e {} ]; do sleep 0.02; done; echo 2; echo 3",
            go.display()
        ),
    )
    .await;
    assert_eq!(wait_pids(n.pool(), "printer", 1).await, [1]);
    terminate_backends(&n).await;
    std::fs::write(&go, b"").expect("go");
    // A pool of the test's own: the node's lost its connections too.
    let pool = sqlx::PgPool::connect(&n.db.url).await.expect("connect");
    wait_status(&pool, "printer", "SUCCESS").await;
    assert_eq!(printed_pids(&pool, "printer").await, [1, 2, 3]);
    let _ = std::fs::remove_file(&go);
    n.stop().await;
}

#[tokio::test]
async fn a_node_that_cannot_renew_its_lease_stops_its_commands_and_resumes_when_it_can() {
    let n = node(dbos_services::builtin::register).await;
    submit_script(&n, "fenced", "sleep 300 & echo $!; wait").await;
    let first = wait_pids(n.pool(), "fenced", 1).await[0];
    assert!(!gone(first));
    let blocker = block_heartbeats(&n).await;
    assert!(!n.kernel.lease().is_held());
    // Before anyone may take the task over, its process group is gone.
    wait_for(
        "its process group is gone before the lease could end elsewhere",
        || gone(first),
    )
    .await;
    // The database answers again: the node holds its lease again, and the task, released
    // rather than recorded as cancelled, runs again.
    blocker.rollback().await.expect("release the row");
    let again = wait_pids(n.pool(), "fenced", 2).await[1];
    assert!(n.kernel.lease().is_held());
    assert_ne!(again, first);
    workflow::manage::cancel(n.pool(), "fenced", false)
        .await
        .expect("cancel");
    wait_for("a cancel stopped the command", || gone(again)).await;
    n.stop().await;
}

/// A command stopped because its node gave its lease up is released to run again, not recorded
/// as cancelled, even when a heartbeat renews the lease before the command's group is gone (a
/// node stalled past its local deadline and resumed before anyone declared it dead).
#[tokio::test]
async fn a_command_stopped_by_a_lease_given_up_then_renewed_runs_again() {
    // SIGTERM is ignored and SIGKILL would come after an hour: the group outlives the renewal.
    let limits = dbos_scheduler::command::Limits {
        kill_grace_ms: 3_600_000,
        ..Default::default()
    };
    let n = node(|r| dbos_services::builtin::register_with(r, limits)).await;
    submit_script(&n, "renewed", "trap '' TERM; sleep 300 & echo $!; wait").await;
    let first = wait_pids(n.pool(), "renewed", 1).await[0];
    let blocker = block_heartbeats(&n).await;
    blocker.rollback().await.expect("release the row");
    wait_for("a heartbeat renews the lease", || {
        n.kernel.lease().is_held()
    })
    .await;
    // The group ends after the renewal, if its watcher has not ended it already for the
    // node's silence (a third of the lease after the node stopped pinging, so it depends on
    // how soon the heartbeat came back): either way the step sees its run stopped, under a
    // lease held again.
    if let Ok(group) = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(first))) {
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
    }
    let again = wait_pids(n.pool(), "renewed", 2).await[1];
    assert_ne!(again, first);
    assert_eq!(status(n.pool(), "renewed").await, "PENDING");
    workflow::manage::cancel(n.pool(), "renewed", false)
        .await
        .expect("cancel");
    let group = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(again))).expect("pgid");
    nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL).expect("killpg");
    wait_status(n.pool(), "renewed", "CANCELLED").await;
    n.stop().await;
}

/// Returns `Cancelled` though nobody cancelled it.
async fn claims_cancelled(ctx: workflow::Context, (): ()) -> Result<u32, workflow::Error> {
    ctx.step("one", || async { Ok(1u32) }).await?;
    Err(workflow::Error::Cancelled(ctx.workflow_id().to_owned()))
}

/// A workflow that ends with `Cancelled` while no cancel stands behind it (its status still
/// PENDING, its execution the owner) ends in ERROR instead of staying PENDING for good; a real
/// cancel keeps its CANCELLED (the other cancel tests).
#[tokio::test]
async fn a_cancelled_error_without_a_cancel_ends_the_workflow_in_error() {
    let n = node(|r| {
        r.register("claims_cancelled", claims_cancelled);
    })
    .await;
    n.wf.start::<(), u32>("claims_cancelled", (), id("unbacked"))
        .await
        .expect("start");
    wait_status(n.pool(), "unbacked", "ERROR").await;
    let error = dbos_store::workflows::outcome(n.pool(), "unbacked")
        .await
        .expect("outcome")
        .error;
    assert!(
        error.as_deref().is_some_and(|e| e.contains("unbacked")),
        "{error:?}"
    );
    n.stop().await;
}

#[tokio::test]
async fn a_cancel_by_a_plain_sql_update_stops_the_workflow_before_its_next_step() {
    let (n, gate, bodies, h) = gated_started("gated-1").await;
    // This node's router for cancel notifications wakes this waiter when the cancel arrives.
    let waiters = n.wf.messages().waiters().clone();
    let mut arrived = waiters.register(dbos_msg::Channel::Cancel, "gated-1".to_owned());
    // A cancel as DBOS's own tools write it: a plain UPDATE, no NOTIFY of its own.
    sqlx::query(
        "UPDATE dbos.workflow_status SET status = 'CANCELLED', updated_at = 0
         WHERE workflow_uuid = 'gated-1'",
    )
    .execute(n.pool())
    .await
    .expect("cancel by SQL");
    assert!(matches!(arrived.wait(None).await, dbos_msg::Woke::Key(0)));
    opened_ends_cancelled(&n, &gate, h).await;
    assert_eq!(
        bodies.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the second step's body never ran"
    );
    n.stop().await;
}

#[tokio::test]
async fn recovering_work_never_requeues_this_nodes_own_running_workflows() {
    let (n, gate, bodies, h) = gated_started("mine").await;
    let own = n.kernel.node_id().to_owned();
    let released = n.wf.recover(&[own]).await.expect("recover");
    assert_eq!(released, 0, "this node's running workflow stays its own");
    assert_eq!(status(n.pool(), "mine").await, "PENDING");
    gate.add_permits(1);
    h.result_within(Duration::from_secs(60))
        .await
        .expect("it finishes where it ran");
    assert_eq!(bodies.load(std::sync::atomic::Ordering::SeqCst), 2);
    n.stop().await;
}
/// Runs step "first", waits for the test to open the gate (outside any step), then runs step
/// "second"; counts the step bodies that ran.
fn gated(
    gate: std::sync::Arc<tokio::sync::Semaphore>,
    bodies: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> impl Fn(
    workflow::Context,
    (),
) -> std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<(), workflow::Error>> + Send>,
> + Send
       + Sync
       + 'static {
    move |ctx: workflow::Context, (): ()| {
        let (gate, bodies) = (gate.clone(), bodies.clone());
        Box::pin(async move {
            for name in ["first", "second"] {
                let b = bodies.clone();
                ctx.step(name, move || {
                    b.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    async { Ok(()) }
                })
                .await?;
                if name == "first" {
                    let _permit = gate.acquire().await.expect("gate");
                }
            }
            Ok(())
        })
    }
}

#[tokio::test]
async fn starts_of_running_ids_share_group_commits_with_their_checkpoints_and_outcomes() {
    let n = node(|r| {
        r.register("slow_steps", slow_steps);
    })
    .await;
    let ids: Vec<String> = (0..48).map(|i| format!("busy-{i}")).collect();
    for id_ in &ids {
        n.wf.start::<_, u32>("slow_steps", (3u32,), id(id_))
            .await
            .expect("start");
    }
    // 32 callers start the same IDs again while they run: each start joins a batch with the
    // running workflows' checkpoints and outcomes.
    let mut callers = tokio::task::JoinSet::new();
    for c in 0..32 {
        let (wf, ids) = (n.wf.clone(), ids.clone());
        callers.spawn(async move {
            for k in 0..12 {
                let id_ = &ids[(c * 7 + k * 5) % ids.len()];
                let h = wf
                    .start::<_, u32>("slow_steps", (3u32,), id(id_))
                    .await
                    .expect("a start of a running ID returns it");
                assert_eq!(h.workflow_id(), id_);
            }
        });
    }
    while let Some(r) = callers.join_next().await {
        r.expect("caller");
    }
    for id_ in &ids {
        let out: u32 =
            n.wf.handle(id_.clone())
                .result_within(Duration::from_secs(120))
                .await
                .expect("every workflow ends");
        assert_eq!(out, 3);
    }
    let steps: i64 = sqlx::query_scalar("SELECT count(*) FROM dbos.operation_outputs")
        .fetch_one(n.pool())
        .await
        .expect("steps");
    assert_eq!(steps, 48 * 3, "every step recorded once");
    n.stop().await;
}

/// A node running `gated`, with workflow `wf_id` started and its first step's body run.
async fn gated_started(
    wf_id: &str,
) -> (
    dbos_services::testing::Node,
    std::sync::Arc<tokio::sync::Semaphore>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    workflow::WorkflowHandle<()>,
) {
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let bodies = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (g, b) = (gate.clone(), bodies.clone());
    let n = node(move |r| {
        r.register("gated", gated(g.clone(), b.clone()));
    })
    .await;
    let h =
        n.wf.start::<_, ()>("gated", (), id(wf_id))
            .await
            .expect("start");
    while bodies.load(std::sync::atomic::Ordering::SeqCst) < 1 {
        tokio::task::yield_now().await;
    }
    (n, gate, bodies, h)
}

/// What the proxy of [`answer_lost_proxy`] looks for: the marked connection's next `COMMIT`
/// reaches the server, and its answer never comes back.
const CUT_AFTER_COMMIT: &str = "cut after the next commit";

/// A TCP proxy to the test server at `server` that forwards every connection unchanged, except
/// one that sent [`CUT_AFTER_COMMIT`]: once the server answers that connection's next `COMMIT`
/// (so it committed), the proxy closes both sides instead of passing the answer on. Returns
/// the proxy's address.
async fn answer_lost_proxy(server: String) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address").to_string();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let server = server.clone();
            tokio::spawn(async move {
                let Ok(mut upstream) = tokio::net::TcpStream::connect(&server).await else {
                    return;
                };
                let (mut cr, mut cw) = client.split();
                let (mut sr, mut sw) = upstream.split();
                let (mut up, mut down) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
                let (mut marked, mut committing) = (false, false);
                loop {
                    tokio::select! {
                        n = cr.read(&mut up) => {
                            let Ok(n @ 1..) = n else { return };
                            let sent = &up[..n];
                            let has = |s: &[u8]| sent.windows(s.len()).any(|w| w == s);
                            marked |= has(CUT_AFTER_COMMIT.as_bytes());
                            committing |= marked && has(b"COMMIT");
                            if sw.write_all(sent).await.is_err() {
                                return;
                            }
                        }
                        n = sr.read(&mut down) => {
                            let Ok(n @ 1..) = n else { return };
                            // The server committed: the answer is lost with the connection.
                            if committing || cw.write_all(&down[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

/// Runs of the body of [`insert_once`]'s transaction.
static INSERT_RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A transaction step that adds a row and returns how many rows there are; its first attempt
/// marks its connection for [`answer_lost_proxy`].
async fn insert_once(ctx: workflow::Context, (): ()) -> Result<i64, workflow::Error> {
    let rows = ctx
        .transaction("insert", |c| {
            Box::pin(async move {
                if INSERT_RUNS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                    sqlx::query(&format!("SELECT '{CUT_AFTER_COMMIT}'"))
                        .execute(&mut *c)
                        .await?;
                }
                sqlx::query("INSERT INTO faults_once VALUES (1)")
                    .execute(&mut *c)
                    .await?;
                Ok(
                    sqlx::query_scalar::<_, i64>("SELECT count(*) FROM faults_once")
                        .fetch_one(&mut *c)
                        .await?,
                )
            })
        })
        .await?;
    ctx.step("after", || async { Ok(()) }).await?;
    Ok(rows)
}

#[tokio::test]
async fn a_transaction_whose_commit_answer_is_lost_neither_runs_again_nor_strands() {
    let db = testing::database().await;
    let setup = sqlx::PgPool::connect(&db.url).await.expect("connect");
    sqlx::query("CREATE TABLE faults_once (n int NOT NULL)")
        .execute(&setup)
        .await
        .expect("table");
    let mut config = db.config();
    let url = config.database_url.clone().expect("a URL");
    let (head, rest) = url.rsplit_once('@').expect("credentials");
    let (server, path) = rest.split_once('/').expect("a database");
    let proxy = answer_lost_proxy(server.to_owned()).await;
    config.database_url = Some(format!("{head}@{proxy}/{path}"));
    let n = node_with(
        db,
        config,
        |r| {
            r.register("insert_once", insert_once);
        },
        Options::default(),
    )
    .await;
    let h =
        n.wf.start::<_, i64>("insert_once", (), id("once"))
            .await
            .expect("start");
    // The step's first commit held; the retry finds it recorded and returns its answer.
    let out = h
        .result_within(Duration::from_secs(120))
        .await
        .expect("the workflow ends");
    assert_eq!(out, 1);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM faults_once")
        .fetch_one(&setup)
        .await
        .expect("rows");
    assert_eq!(rows, 1, "the transaction committed once");
    // The retry found the step recorded instead of running it (and being refused).
    assert_eq!(INSERT_RUNS.load(std::sync::atomic::Ordering::SeqCst), 1);
    wait_status(&setup, "once", "SUCCESS").await;
    n.stop().await;
}

/// Opened by the test of [`gate_then_insert`].
static INSERT_GATE: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(0);
/// Set once [`gate_then_insert`] waits at its gate.
static AT_INSERT_GATE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Waits at a gate, then adds a row in a transaction step that returns 7.
async fn gate_then_insert(ctx: workflow::Context, (): ()) -> Result<i64, workflow::Error> {
    AT_INSERT_GATE.store(true, std::sync::atomic::Ordering::SeqCst);
    drop(INSERT_GATE.acquire().await.expect("gate"));
    ctx.transaction("insert", |c| {
        Box::pin(async move {
            sqlx::query("INSERT INTO faults_once VALUES (1)")
                .execute(&mut *c)
                .await?;
            Ok(7i64)
        })
    })
    .await
}

#[tokio::test]
async fn a_write_refused_while_the_execution_still_owns_the_workflow_does_not_strand_it() {
    let n = node(|r| {
        r.register("gate_then_insert", gate_then_insert);
    })
    .await;
    sqlx::query("CREATE TABLE faults_once (n int NOT NULL)")
        .execute(n.pool())
        .await
        .expect("table");
    let h =
        n.wf.start::<_, i64>("gate_then_insert", (), id("taken"))
            .await
            .expect("start");
    wait_for("the workflow at its gate", || {
        AT_INSERT_GATE.load(std::sync::atomic::Ordering::SeqCst)
    })
    .await;
    // The step's position is recorded behind the execution's back: its own write is refused
    // although it still owns the workflow.
    sqlx::query(
        "INSERT INTO dbos.operation_outputs (workflow_uuid, function_id, function_name, output)
         VALUES ('taken', 1, 'insert', '5')",
    )
    .execute(n.pool())
    .await
    .expect("record");
    INSERT_GATE.add_permits(2);
    // Released and run again, the workflow replays what is recorded.
    let out = h
        .result_within(Duration::from_secs(120))
        .await
        .expect("the workflow ends");
    assert_eq!(out, 5);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM faults_once")
        .fetch_one(n.pool())
        .await
        .expect("rows");
    assert_eq!(rows, 0, "the refused transaction rolled back");
    n.stop().await;
}
