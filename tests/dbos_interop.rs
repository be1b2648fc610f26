//! Interop with the official DBOS Transact for Python 3.4.0 on one database: identical schema,
//! its CLI reads our workflows, its client enqueues work our nodes run, its golden rows run.

mod support;

use dbos_kernel::{testing, Kernel};
use dbos_services::workflow::{self, Options, Registry, Service, StartOptions};
use support::python::{dbos_cli, dbos_venv, python};

/// Everything about schema `dbos` that a client could depend on, one line per item, sorted.
async fn catalog(url: &str) -> Vec<String> {
    let pool = dbos_kernel::db::connect(url, &Default::default())
        .await
        .expect("connect");
    let q = r#"
        SELECT 'column ' || table_name || '.' || column_name || ' #' || ordinal_position || ' ' ||
               data_type || COALESCE('(' || character_maximum_length || ')', '') ||
               ' null=' || is_nullable || ' default=' || COALESCE(column_default, '-')
        FROM information_schema.columns WHERE table_schema = 'dbos'
        UNION ALL
        SELECT 'index ' || indexname || ': ' || indexdef FROM pg_indexes WHERE schemaname = 'dbos'
        UNION ALL
        SELECT 'constraint ' || conrelid::regclass || ' ' || conname || ': ' || pg_get_constraintdef(oid)
        FROM pg_constraint WHERE connamespace = 'dbos'::regnamespace
        UNION ALL
        SELECT 'function ' || proname || '(' || pg_get_function_arguments(oid) || ') -> ' ||
               pg_get_function_result(oid) || ' ' || array_to_string(proconfig, ',')
        FROM pg_proc WHERE pronamespace = 'dbos'::regnamespace
        UNION ALL
        SELECT 'trigger ' || tgname || ': ' || pg_get_triggerdef(oid)
        FROM pg_trigger
        WHERE tgrelid IN (SELECT oid FROM pg_class WHERE relnamespace = 'dbos'::regnamespace)
          AND NOT tgisinternal
        UNION ALL
        SELECT 'migration version ' || version FROM dbos.dbos_migrations
    "#;
    let mut lines: Vec<String> = sqlx::query_scalar(q)
        .fetch_all(&pool)
        .await
        .expect("catalog");
    lines.sort();
    lines
}

#[tokio::test]
async fn our_schema_is_the_one_dbos_3_4_creates() {
    let Some(bin) = dbos_venv() else { return };
    let ours = testing::database().await;
    let k = Kernel::boot(ours.config(), &dbos_services::migrations())
        .await
        .expect("boot");
    k.shutdown().await.expect("shutdown");
    let theirs = testing::database().await;
    dbos_cli(&bin, &["migrate", "-s", &theirs.url]);
    let (mut a, b) = (catalog(&ours.url).await, catalog(&theirs.url).await);
    assert_eq!(without_our_triggers(&mut a), 3, "our triggers are seen");
    let only_ours: Vec<&String> = a.iter().filter(|l| !b.contains(l)).collect();
    let only_theirs: Vec<&String> = b.iter().filter(|l| !a.contains(l)).collect();
    assert!(
        only_ours.is_empty() && only_theirs.is_empty(),
        "schema drift\nonly ours:\n{only_ours:#?}\nonly DBOS's:\n{only_theirs:#?}"
    );
    assert!(
        a.len() > 150,
        "the catalog query sees the schema ({} items)",
        a.len()
    );

    // A database DBOS created is adopted as it is.
    let k = Kernel::boot(theirs.config(), &dbos_services::migrations())
        .await
        .expect("boot on DBOS's schema");
    k.shutdown().await.expect("shutdown");
    let mut adopted = catalog(&theirs.url).await;
    assert_eq!(without_our_triggers(&mut adopted), 3);
    assert_eq!(adopted, b);
}

/// Removes our three additions to schema `dbos`, on purpose, from a catalog and counts them: the
/// scheduler's triggers that tell running workflows of a cancel, a delete or a resume made by any
/// client
/// (the README, "Errors and faults").
fn without_our_triggers(catalog: &mut Vec<String>) -> usize {
    let before = catalog.len();
    catalog.retain(|l| {
        !l.starts_with("trigger sched_notify_cancel: ")
            && !l.starts_with("trigger sched_notify_delete: ")
            && !l.starts_with("trigger sched_notify_resume: ")
    });
    before - catalog.len()
}

async fn node(db: &testing::TestDb) -> (Kernel, Service) {
    let k = Kernel::boot(db.config(), &dbos_services::migrations())
        .await
        .expect("boot");
    let mut r = Registry::new();
    r.register(
        "add",
        |ctx: workflow::Context, (a, b): (i64, i64)| async move {
            let s = ctx.step("sum", || async { Ok(a + b) }).await?;
            Ok(s)
        },
    );
    #[derive(serde::Deserialize)]
    struct Kw {
        name: String,
        count: i64,
        tags: Vec<String>,
    }
    r.register(
        "kwargWorkflow",
        |_ctx: workflow::Context, kw: Kw| async move {
            Ok::<_, workflow::Error>(format!("{}-{}-{}", kw.name, kw.count, kw.tags.join(",")))
        },
    );
    dbos_services::builtin::register(&mut r);
    let opts = Options {
        scheduler: dbos_scheduler::Options {
            poll_interval_ms: 100,
            ..dbos_scheduler::Options::default()
        },
        ..Options::default()
    };
    let wf = Service::launch(&k, r, opts).await.expect("launch");
    (k, wf)
}

#[tokio::test]
async fn a_python_client_sends_to_a_rust_recv_and_reads_its_events_and_stream() {
    let Some(bin) = dbos_venv() else { return };
    let db = testing::database().await;
    let (k, wf) = node(&db).await;
    let opts = StartOptions {
        workflow_id: Some("py-echo".into()),
        ..StartOptions::default()
    };
    let h = wf
        .start::<_, u64>(dbos_services::builtin::ECHO, (60,), opts)
        .await
        .expect("start echo");
    let script = r#"
import json, sys
from dbos import DBOSClient, WorkflowSerializationFormat
P = WorkflowSerializationFormat.PORTABLE
c = DBOSClient(system_database_url=sys.argv[1])
print(json.dumps(c.get_event("py-echo", "ready", timeout_seconds=30)))
c.send("py-echo", {"from": "python", "n": [1, 2]}, "in", "key-1", serialization_type=P)
c.send("py-echo", {"from": "python", "n": [1, 2]}, "in", "key-1", serialization_type=P)
c.send("py-echo", "second", "in", serialization_type=P)
c.send("py-echo", None, "in", serialization_type=P)
print(json.dumps(list(c.read_stream("py-echo", "out", timeout_seconds=30))))
print(json.dumps(c.get_event("py-echo", "last", timeout_seconds=30)))
c.destroy()
"#;
    let url = db.url.clone();
    let out = tokio::task::spawn_blocking(move || python(&bin, script, &[&url]))
        .await
        .expect("python task");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        vec![
            "true",
            r#"[{"from": "python", "n": [1, 2]}, "second"]"#,
            "\"second\""
        ],
        "{out}"
    );
    assert_eq!(
        h.result().await.expect("echo ends"),
        2,
        "the repeated key was delivered once"
    );
    k.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn the_python_cli_lists_and_inspects_our_workflows() {
    let Some(bin) = dbos_venv() else { return };
    let db = testing::database().await;
    let (k, wf) = node(&db).await;
    let opts = StartOptions {
        workflow_id: Some("rust-add".into()),
        ..StartOptions::default()
    };
    let out: i64 = wf.run("add", (2, 3), opts).await.expect("run");
    assert_eq!(out, 5);

    let list: serde_json::Value =
        serde_json::from_str(&dbos_cli(&bin, &["workflow", "list", "-s", &db.url])).expect("json");
    let w = list
        .as_array()
        .and_then(|l| l.iter().find(|w| w["workflow_id"] == "rust-add"))
        .expect("listed");
    assert_eq!(w["status"], "SUCCESS");
    assert_eq!(w["name"], "add");
    assert_eq!(w["executor_id"], k.node_id());

    let get: serde_json::Value = serde_json::from_str(&dbos_cli(
        &bin,
        &["workflow", "get", "rust-add", "-s", &db.url],
    ))
    .expect("json");
    assert_eq!(get["status"], "SUCCESS");
    assert_eq!(get["input"]["args"], serde_json::json!([2, 3]));
    assert_eq!(get["output"], 5);

    let steps: serde_json::Value = serde_json::from_str(&dbos_cli(
        &bin,
        &["workflow", "steps", "rust-add", "-s", &db.url],
    ))
    .expect("json");
    assert_eq!(steps[0]["function_id"], 1);
    assert_eq!(steps[0]["function_name"], "sum");
    assert_eq!(steps[0]["output"], 5);
    k.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_python_client_enqueues_work_that_a_rust_node_runs() {
    let Some(bin) = dbos_venv() else { return };
    let db = testing::database().await;
    let (k, _wf) = node(&db).await;
    let script = r#"
import json, sys
from dbos import DBOSClient, WorkflowSerializationFormat
client = DBOSClient(system_database_url=sys.argv[1])
h = client.enqueue({"queue_name": "default", "workflow_name": "add", "workflow_id": "py-enq",
                    "serialization_type": WorkflowSerializationFormat.PORTABLE}, 20, 22)
print(json.dumps(h.get_result()))
client.destroy()
"#;
    // Off the test's runtime thread: the node runs on it while Python waits for the result.
    let url = db.url.clone();
    let out = tokio::task::spawn_blocking(move || python(&bin, script, &[&url]))
        .await
        .expect("python task");
    assert_eq!(out.trim(), "42");
    let (status, executor): (String, String) = sqlx::query_as(
        "SELECT status, executor_id FROM dbos.workflow_status WHERE workflow_uuid = 'py-enq'",
    )
    .fetch_one(k.pool())
    .await
    .expect("row");
    assert_eq!(
        (status.as_str(), executor.as_str()),
        ("SUCCESS", k.node_id())
    );
    k.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn dbos_golden_kwargs_row_inserted_by_sql_runs_and_produces_the_golden_output() {
    let db = testing::database().await;
    let (k, wf) = node(&db).await;
    // As DBOS's own interop test inserts it: legacy inputs column, no workflow_input row.
    sqlx::query(
        "INSERT INTO dbos.workflow_status (workflow_uuid, name, class_name, queue_name, status, inputs, created_at, serialization)
         VALUES ('golden-kw', 'kwargWorkflow', 'interop', 'interopkq', 'ENQUEUED',
                 '{\"positionalArgs\":[],\"namedArgs\":{\"name\":\"test\",\"count\":42,\"tags\":[\"a\",\"b\"]}}',
                 (extract(epoch from now()) * 1000)::bigint, 'portable_json')",
    )
    .execute(k.pool())
    .await
    .expect("golden row");
    wf.wake();
    let out: String = wf.handle("golden-kw").result().await.expect("runs");
    assert_eq!(out, "test-42-a,b");
    let stored: String = sqlx::query_scalar(
        "SELECT COALESCE(o.output, s.output) FROM dbos.workflow_status s
         LEFT JOIN dbos.workflow_output o USING (workflow_uuid) WHERE workflow_uuid = 'golden-kw'",
    )
    .fetch_one(k.pool())
    .await
    .expect("output");
    assert_eq!(stored, r#""test-42-a,b""#);
    k.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_python_client_submits_a_command_task_that_a_rust_node_runs() {
    let Some(bin) = dbos_venv() else { return };
    let db = testing::database().await;
    let (k, wf) = node(&db).await;
    let script = r#"
import json, sys
from dbos import DBOSClient, WorkflowSerializationFormat
client = DBOSClient(system_database_url=sys.argv[1])
h = client.enqueue({"queue_name": "default", "workflow_name": "dbos.command", "workflow_id": "py-task",
                    "serialization_type": WorkflowSerializationFormat.PORTABLE},
                   {"argv": ["sh", "-c", "echo from python"]})
print(json.dumps(h.get_result()["exit_code"]))
print(json.dumps(list(client.read_stream("py-task", "stdout", timeout_seconds=30))))
client.destroy()
"#;
    let url = db.url.clone();
    let out = tokio::task::spawn_blocking(move || python(&bin, script, &[&url]))
        .await
        .expect("python task");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, vec!["0", r#"["from python\n"]"#], "{out}");
    drop(wf);
    k.shutdown().await.expect("shutdown");
}
