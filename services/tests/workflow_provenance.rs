//! Provenance: workflows read and write files, send messages, publish and run commands; the
//! `os` views answer lineage and security questions with the expected rows, capture can be
//! turned off, and retention deletes old events.

use std::time::Duration;

use dbos_fs::{Fs, Identity, Options};
use dbos_services::testing::{node_on, Node};
use dbos_services::workflow::{self, Context, StartOptions};
use serde_json::Value;

fn fs() -> Fs {
    Fs::new(Options::default())
}

/// Reads a secret, writes a report (by path, in a transaction step), tells another workflow and
/// publishes to a topic.
async fn ingest(ctx: Context, (tag,): (String,)) -> Result<u64, workflow::Error> {
    let secret: Vec<u8> = ctx
        .transaction("read secret", |c| {
            Box::pin(async move {
                Ok(fs()
                    .read(&mut *c, &Identity::root(), "/secret/key", 0, 1 << 20)
                    .await?)
            })
        })
        .await?;
    let report = format!("{tag}: {} bytes", secret.len());
    let n: u64 = ctx
        .transaction("write report", move |c| {
            let report = report.clone();
            Box::pin(async move {
                let (fs, root) = (fs(), Identity::root());
                fs.mkdir_all(&mut *c, &root, "/out", 0o755).await?;
                fs.create_or_truncate(&mut *c, &root, "/out/report", 0o644)
                    .await?;
                Ok(fs
                    .write(&mut *c, &root, "/out/report", 0, report.as_bytes())
                    .await?)
            })
        })
        .await?;
    ctx.send("sink", &format!("report of {tag}"), Some("reports"))
        .await?;
    ctx.publish("alerts", &[format!("{tag} done")]).await?;
    ctx.set_event("done", &true).await?;
    Ok(n)
}

/// Runs a command that fails in one step, then writes a log with a plain step (its own
/// transaction, committed inside the step).
async fn build(ctx: Context, (): ()) -> Result<Option<i32>, workflow::Error> {
    let pool = ctx.pool().clone();
    let code = ctx
        .step("compile", || async {
            let spec = dbos_services::scheduler::command::CommandSpec {
                argv: vec!["sh".into(), "-c".into(), "exit 3".into()],
                ..Default::default()
            };
            let r = dbos_services::scheduler::command::run(
                &spec,
                &dbos_services::scheduler::command::Limits::default(),
                |_, _| async {},
                std::future::pending::<()>(),
                None,
            )
            .await
            .map_err(|e| workflow::Error::failed("CommandError", e.to_string()))?;
            Ok(r.exit_code)
        })
        .await?;
    ctx.step("log", || {
        let pool = pool.clone();
        async move {
            let mut tx = pool.begin().await?;
            let (fs, root) = (fs(), Identity::root());
            fs.mkdir_all(&mut tx, &root, "/build", 0o755).await?;
            let st = fs.create(&mut tx, &root, "/build/log", 0o644).await?;
            fs.write_at(&mut tx, &root, st.ino, 0, b"exit 3").await?;
            tx.commit().await?;
            Ok(())
        }
    })
    .await?;
    Ok(code)
}

/// Waits for a message, so `ingest` has somewhere to send.
async fn sink(ctx: Context, (): ()) -> Result<Option<String>, workflow::Error> {
    ctx.recv(Some("reports"), Duration::from_secs(60)).await
}

fn id(s: &str) -> StartOptions {
    StartOptions {
        workflow_id: Some(s.to_owned()),
        ..StartOptions::default()
    }
}

async fn rows(n: &Node, sql: &str) -> Value {
    let v: Option<Value> = sqlx::query_scalar(&format!("SELECT json_agg(r) FROM ({sql}) r"))
        .fetch_one(n.pool())
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    v.unwrap_or(Value::Array(vec![]))
}

#[tokio::test]
async fn lineage_and_read_then_send_are_answered_from_the_os_views() {
    // The node's own sweep stays out of the way of the one this test runs and counts.
    let opts = workflow::Options {
        retention_sweep_interval: Duration::from_secs(86_400),
        ..workflow::Options::default()
    };
    let n = node_on(
        dbos_kernel::testing::database().await,
        |r| {
            r.register("ingest", ingest)
                .register("build", build)
                .register("sink", sink);
        },
        opts,
    )
    .await;
    {
        let mut c = n.pool().acquire().await.unwrap();
        let (fs, root) = (fs(), Identity::root());
        fs.mkdir_all(&mut c, &root, "/secret", 0o700).await.unwrap();
        let st = fs
            .create(&mut c, &root, "/secret/key", 0o600)
            .await
            .unwrap();
        fs.write_at(&mut c, &root, st.ino, 0, b"hunter2")
            .await
            .unwrap();
    }
    let sink =
        n.wf.start::<_, Option<String>>("sink", (), id("sink"))
            .await
            .unwrap();
    let written: u64 =
        n.wf.run("ingest", ("t1".to_owned(),), id("ing-1"))
            .await
            .unwrap();
    assert_eq!(written, 11);
    assert_eq!(
        sink.result().await.unwrap().as_deref(),
        Some("report of t1")
    );
    let code: Option<i32> = n.wf.run("build", (), id("build-1")).await.unwrap();
    assert_eq!(code, Some(3));
    // Writes outside any workflow (the setup above) are not captured.
    assert_eq!(
        rows(
            &n,
            "SELECT 1 FROM prov.events WHERE workflow_uuid NOT IN ('ing-1', 'build-1', 'sink')"
        )
        .await,
        Value::Array(vec![])
    );

    // Everything ing-1 touched, step by step.
    let touched = rows(
        &n,
        "SELECT function_id, step, kind, object, bytes FROM os.touched('ing-1')",
    )
    .await;
    assert_eq!(
        touched,
        serde_json::json!([
            {"function_id": 1, "step": "read secret", "kind": "file_read", "object": "/secret/key", "bytes": 7},
            {"function_id": 2, "step": "write report", "kind": "file_create", "object": "/out/report", "bytes": 0},
            {"function_id": 2, "step": "write report", "kind": "file_write", "object": "/out/report", "bytes": 11},
            {"function_id": 3, "step": "DBOS.send", "kind": "send", "object": "sink", "bytes": 14},
            {"function_id": 4, "step": "msg.publish", "kind": "publish", "object": "alerts", "bytes": 9},
            {"function_id": 5, "step": "DBOS.setEvent", "kind": "set_event", "object": "done", "bytes": 4},
        ]),
        "{touched:#}"
    );
    let recv = rows(&n, "SELECT kind, object FROM os.touched('sink')").await;
    assert_eq!(
        recv,
        serde_json::json!([{"kind": "recv", "object": "reports"}])
    );

    // The lineage of the report: which workflow wrote it, from what inputs, on which node.
    let lineage = rows(
        &n,
        "SELECT kind, workflow_id, workflow_name, workflow_inputs::json -> 'positionalArgs' AS args, step, node_id IS NOT NULL AS has_node
         FROM os.lineage('/out/report')",
    )
    .await;
    assert_eq!(
        lineage,
        serde_json::json!([
            {"kind": "file_create", "workflow_id": "ing-1", "workflow_name": "ingest", "args": ["t1"], "step": "write report", "has_node": true},
            {"kind": "file_write", "workflow_id": "ing-1", "workflow_name": "ingest", "args": ["t1"], "step": "write report", "has_node": true},
        ]),
        "{lineage:#}"
    );
    // Read a file under /secret, then sent or published.
    let leaks = rows(
        &n,
        "SELECT workflow_id, file, sent_by, sent_to FROM os.read_then_sent('/secret') ORDER BY sent_in_step",
    )
    .await;
    assert_eq!(
        leaks,
        serde_json::json!([
            {"workflow_id": "ing-1", "file": "/secret/key", "sent_by": "send", "sent_to": "sink"},
            {"workflow_id": "ing-1", "file": "/secret/key", "sent_by": "publish", "sent_to": "alerts"},
        ])
    );
    assert_eq!(
        rows(&n, "SELECT 1 FROM os.read_then_sent('/out')").await,
        Value::Array(vec![])
    );
    // Transitively: the sink got a message from a workflow that had read the secret.
    let tainted = rows(
        &n,
        "SELECT workflow_id, since_step, via FROM os.tainted('/secret') ORDER BY workflow_id",
    )
    .await;
    assert_eq!(
        tainted,
        serde_json::json!([
            {"workflow_id": "ing-1", "since_step": 1, "via": "read /secret/key"},
            {"workflow_id": "sink", "since_step": 1, "via": "a message from ing-1"},
        ]),
        "{tainted:#}"
    );
    let after = rows(
        &n,
        "SELECT workflow_id, kind, object FROM os.after_reading('/secret/')",
    )
    .await;
    assert_eq!(
        after,
        serde_json::json!([
            {"workflow_id": "ing-1", "kind": "file_create", "object": "/out/report"},
            {"workflow_id": "ing-1", "kind": "file_write", "object": "/out/report"},
            {"workflow_id": "ing-1", "kind": "send", "object": "sink"},
            {"workflow_id": "ing-1", "kind": "publish", "object": "alerts"},
            {"workflow_id": "ing-1", "kind": "set_event", "object": "done"},
        ]),
        "{after:#}"
    );
    // Files written by a workflow whose command failed; the command's user is recorded.
    let failed = rows(
        &n,
        "SELECT file, workflow_id, command, exit_code FROM os.files_of_failed_commands",
    )
    .await;
    assert_eq!(
        failed,
        serde_json::json!([
            {"file": "/build/log", "workflow_id": "build-1", "command": "sh -c exit 3", "exit_code": 3},
        ]),
        "{failed:#}"
    );
    let user = rows(
        &n,
        "SELECT detail ->> 'user' AS u FROM prov.events WHERE kind = 'command'",
    )
    .await;
    assert!(user[0]["u"].is_string(), "{user}");

    // Capture off for a workflow name: nothing recorded for its new runs.
    sqlx::query("UPDATE prov.config SET off_names = '{ingest}'")
        .execute(n.pool())
        .await
        .unwrap();
    n.wf.start::<_, Option<String>>("sink", (), id("sink"))
        .await
        .unwrap();
    let _: u64 =
        n.wf.run("ingest", ("t2".to_owned(),), id("ing-2"))
            .await
            .unwrap();
    assert_eq!(
        rows(
            &n,
            "SELECT 1 FROM prov.events WHERE workflow_uuid = 'ing-2'"
        )
        .await,
        Value::Array(vec![])
    );

    // Retention: events older than prov.config.retention are swept.
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM prov.events")
        .fetch_one(n.pool())
        .await
        .unwrap();
    sqlx::query(
        "UPDATE prov.events SET at_ms = at_ms - 31 * 86400000::int8 WHERE workflow_uuid = 'ing-1'",
    )
    .execute(n.pool())
    .await
    .unwrap();
    let swept = dbos_services::store::prov::sweep(n.pool(), 1_000)
        .await
        .unwrap();
    assert_eq!(swept, 6);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM prov.events")
        .fetch_one(n.pool())
        .await
        .unwrap();
    assert_eq!(left, total - 6);
    n.stop().await;
}
