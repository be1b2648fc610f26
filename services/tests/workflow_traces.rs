//! Traces: a workflow enqueued by one node inside a span and run by another is one trace —
//! the enqueuer's span, the claim, the workflow, its steps and its transaction — received over
//! OTLP by a collector in this process.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::routing::post;
use dbos_services::testing::{node_on, WAIT};
use dbos_services::workflow::{self, Options, StartOptions};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use parking_lot::Mutex;
use prost::Message;
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Clone, Debug)]
struct Span {
    trace: Vec<u8>,
    id: Vec<u8>,
    parent: Vec<u8>,
    name: String,
    attrs: Vec<(String, String)>,
}

impl Span {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A collector: spans posted to `/v1/traces`, decoded.
async fn collector() -> (String, Arc<Mutex<Vec<Span>>>) {
    let got: Arc<Mutex<Vec<Span>>> = Arc::default();
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let sink = sink.clone();
            async move {
                let req = ExportTraceServiceRequest::decode(body).expect("an OTLP request");
                for rs in req.resource_spans {
                    for ss in rs.scope_spans {
                        for s in ss.spans {
                            let attrs = s
                                .attributes
                                .iter()
                                .map(|kv| {
                                    let v = kv
                                        .value
                                        .as_ref()
                                        .and_then(|v| v.value.as_ref())
                                        .map(|v| format!("{v:?}"))
                                        .unwrap_or_default();
                                    (kv.key.clone(), v)
                                })
                                .collect();
                            sink.lock().push(Span {
                                trace: s.trace_id,
                                id: s.span_id,
                                parent: s.parent_span_id,
                                name: s.name,
                                attrs,
                            });
                        }
                    }
                }
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), got)
}

async fn traced(ctx: workflow::Context, (x,): (i64,)) -> Result<i64, workflow::Error> {
    let a: i64 = ctx.step("double", || async move { Ok(x * 2) }).await?;
    ctx.transaction("store", move |c| {
        Box::pin(async move {
            sqlx::query("SELECT $1::int8")
                .bind(a)
                .execute(&mut *c)
                .await?;
            Ok(a + 1)
        })
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_enqueued_on_one_node_and_run_on_another_is_one_trace() {
    let (endpoint, spans) = collector().await;
    let provider = dbos_services::telemetry::otlp_provider(Some(&endpoint)).expect("an exporter");
    tracing_subscriber::registry()
        .with(dbos_services::telemetry::otel_layer(&provider))
        .init();

    let db = dbos_kernel::testing::database().await;
    let db2 = db.clone();
    // The enqueuer has no code for the workflow; the runner does.
    let enqueuer = node_on(db, |_| {}, Options::default()).await;
    let runner = node_on(
        db2,
        |r| {
            r.register("traced", traced);
        },
        Options::default(),
    )
    .await;
    let request = tracing::info_span!(target: "dbos_services", "request");
    let handle = enqueuer
        .wf
        .enqueue::<_, i64>("default", "traced", (20_i64,), StartOptions::default())
        .instrument(request.clone())
        .await
        .expect("enqueued");
    let id = handle.workflow_id().to_owned();
    assert_eq!(handle.result().await.expect("the runner ran it"), 41);
    drop(request);
    // Exported in batches: flush, then wait for the workflow's spans.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let p = provider.clone();
        tokio::task::spawn_blocking(move || p.force_flush())
            .await
            .unwrap()
            .ok();
        let names: Vec<String> = spans.lock().iter().map(|s| s.name.clone()).collect();
        if ["request", "claim", "workflow", "step", "transaction"]
            .iter()
            .all(|n| names.iter().any(|m| m == n))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "spans arrived: {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let spans = spans.lock().clone();
    let one = |name: &str| -> Span {
        spans
            .iter()
            .find(|s| {
                s.name == name
                    && (name == "request"
                        || s.attrs.iter().any(|(_, v)| v.contains(&id))
                        || name == "step"
                        || name == "transaction")
            })
            .unwrap_or_else(|| panic!("a {name} span: {spans:#?}"))
            .clone()
    };
    let (request, claim, wf) = (one("request"), one("claim"), one("workflow"));
    let (step, tx) = (one("step"), one("transaction"));
    for s in [&claim, &wf, &step, &tx] {
        assert_eq!(
            s.trace, request.trace,
            "{} is in the enqueuer's trace",
            s.name
        );
    }
    assert_eq!(
        claim.parent, request.id,
        "the claim continues the enqueuer's span"
    );
    assert_eq!(wf.parent, claim.id);
    assert_eq!(step.parent, wf.id);
    assert_eq!(tx.parent, wf.id);
    assert!(
        claim
            .attr("node")
            .is_some_and(|n| n.contains(runner.wf.executor_id())),
        "{claim:?}"
    );
    assert!(
        wf.attr("name").is_some_and(|n| n.contains("traced")),
        "{wf:?}"
    );
    assert!(
        step.attr("name").is_some_and(|n| n.contains("double")),
        "{step:?}"
    );
    runner.stop().await;
    enqueuer.stop().await;
    let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
}
