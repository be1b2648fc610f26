//! Logs and traces of a process. Logs go to stderr (filtered by `RUST_LOG`); when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, spans of workflows, steps, transactions, claims and
//! commands are exported there over OTLP (HTTP, protobuf).
//!
//! A workflow's trace context travels in its row (`attributes -> 'otel.traceparent'`, W3C trace
//! context), so a workflow enqueued in one process and run by another is one trace.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// The key of a workflow's trace context in its row's `attributes`.
pub const TRACEPARENT: &str = "otel.traceparent";

/// The process's telemetry; dropping it flushes the spans not yet exported.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            if let Err(e) = p.shutdown() {
                eprintln!("warning: flushing traces failed: {e}");
            }
        }
    }
}

/// A tracer provider exporting to `endpoint` (the base URL, e.g. `http://127.0.0.1:4318`), or
/// to what `OTEL_EXPORTER_OTLP_ENDPOINT` says when `None`.
///
/// # Errors
/// The exporter cannot be built.
pub fn otlp_provider(endpoint: Option<&str>) -> Result<SdkTracerProvider, String> {
    use opentelemetry_otlp::WithExportConfig;
    let mut builder = opentelemetry_otlp::SpanExporter::builder().with_http();
    if let Some(e) = endpoint {
        builder = builder.with_endpoint(format!("{}/v1/traces", e.trim_end_matches('/')));
    }
    let exporter = builder.build().map_err(|e| e.to_string())?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("dbos")
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// The layer that turns this project's spans into OpenTelemetry spans of `provider`, and
/// installs the W3C trace-context propagator.
pub fn otel_layer<S>(provider: &SdkTracerProvider) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let spans = Targets::new()
        .with_target("dbos_services", LevelFilter::INFO)
        .with_target("dbos_scheduler", LevelFilter::INFO)
        .with_default(LevelFilter::OFF);
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("dbos"))
        .with_filter(spans)
}

/// Installs logging to stderr (`RUST_LOG`, else `default_level`) and, when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is set, trace export.
pub fn init(default_level: &str) -> Telemetry {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal, and never with NO_COLOR set.
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        .with_filter(filter);
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty());
    let provider = match endpoint.map(|_| otlp_provider(None)) {
        Some(Ok(p)) => Some(p),
        Some(Err(e)) => {
            eprintln!("warning: traces are not exported: {e}");
            None
        }
        None => None,
    };
    let otel = provider.as_ref().map(otel_layer);
    tracing_subscriber::registry().with(fmt).with(otel).init();
    Telemetry { provider }
}

/// The W3C `traceparent` of the current span, when it is traced.
pub fn current_traceparent() -> Option<String> {
    let span = tracing::Span::current();
    // Outside any span (most enqueues without tracing) there is nothing to carry.
    if span.is_none() {
        return None;
    }
    let cx = span.context();
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` a child of the trace context `traceparent` (from a workflow's row).
pub fn set_parent(span: &tracing::Span, traceparent: &str) {
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(cx);
}
