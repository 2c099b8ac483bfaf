//! OpenTelemetry: the host's spans and its guests' stdout/stderr lines, exported over OTLP
//! when the standard variables name a collector, and the last traces kept in memory for
//! the dashboard while someone watches it.
//!
//! | variable | meaning |
//! |---|---|
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` (or `…_TRACES_ENDPOINT`, `…_LOGS_ENDPOINT`) | where to send; nothing is exported when unset |
//! | `OTEL_EXPORTER_OTLP_PROTOCOL` (or `…_TRACES_PROTOCOL`, `…_LOGS_PROTOCOL`) | `http/protobuf` (default) or `grpc` |
//! | `OTEL_EXPORTER_OTLP_HEADERS`, `…_TIMEOUT` | sent with every export; the deadline of one |
//! | `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES` | the resource; the service is `berth` unless set |
//! | `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG` | the standard samplers, e.g. `parentbased_traceidratio` and `0.1` (see [`super::spans`]) |
//! | `OTEL_BSP_MAX_QUEUE_SIZE` (2048), `OTEL_BLRP_MAX_QUEUE_SIZE` (2048) | spans and log records held for export; past it they are dropped and counted |
//! | `OTEL_SDK_DISABLED=true`, `OTEL_TRACES_EXPORTER=none`, `OTEL_LOGS_EXPORTER=none` | turn export off |
//!
//! Export never slows a request: a span or record is handed to a bounded queue that a
//! background thread drains, and when the collector is down, slow or refusing the queue
//! fills and what does not fit is dropped and counted (`berth_otel_dropped_total`), never
//! waited for. With no collector and no dashboard watching, the layers are not installed
//! (traces) or filter every callsite out before any field is formatted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use opentelemetry::trace::{SpanKind, TraceContextExt as _};
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{
    LogBatch, LogExporter, LogProcessor, SdkLogRecord, SdkLoggerProvider,
};
use opentelemetry_sdk::trace::{BatchSpanProcessor, SpanData, SpanExporter, SpanProcessor};
use tracing::Metadata;
use tracing_subscriber::layer::{Context, Filter};

use super::TraceContext;
use super::recent::RecentTraces;
use super::spans::{self, Sampling, SpanLayer};

/// Dashboards watching the live traces: while there is one, spans are recorded even with
/// no collector configured.
static WATCHERS: AtomicUsize = AtomicUsize::new(0);
/// Set once at start when a collector is configured for traces.
static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// How export is going, for `/metrics`.
#[derive(Debug, Default)]
pub struct ExportCounters {
    pub dropped: AtomicU64,
    pub failed_batches: AtomicU64,
    pub exported: AtomicU64,
}

/// Counters per signal, process-wide like the exporters themselves.
pub static SPANS: ExportCounters = ExportCounters {
    dropped: AtomicU64::new(0),
    failed_batches: AtomicU64::new(0),
    exported: AtomicU64::new(0),
};
pub static LOGS: ExportCounters = ExportCounters {
    dropped: AtomicU64::new(0),
    failed_batches: AtomicU64::new(0),
    exported: AtomicU64::new(0),
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct SignalLabels {
    signal: &'static str,
}

/// The export counters, read now, into the `/metrics` page.
pub fn register(registry: &mut prometheus_client::registry::Registry) {
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    let exported = Family::<SignalLabels, Counter>::default();
    let dropped = Family::<SignalLabels, Counter>::default();
    let failed = Family::<SignalLabels, Counter>::default();
    for (signal, counters) in [("spans", &SPANS), ("logs", &LOGS)] {
        let labels = SignalLabels { signal };
        exported
            .get_or_create(&labels)
            .inc_by(counters.exported.load(Ordering::Relaxed));
        dropped
            .get_or_create(&labels)
            .inc_by(counters.dropped.load(Ordering::Relaxed));
        failed
            .get_or_create(&labels)
            .inc_by(counters.failed_batches.load(Ordering::Relaxed));
    }
    registry.register(
        "berth_otel_exported",
        "Spans and log records an OTLP collector accepted",
        exported,
    );
    registry.register(
        "berth_otel_dropped",
        "Spans and log records dropped because the export queue was full (a collector down or slow)",
        dropped,
    );
    registry.register(
        "berth_otel_export_failures",
        "OTLP export batches the collector refused or never answered",
        failed,
    );
}

/// Whether spans are recorded now: a collector is configured or a dashboard is watching.
pub fn recording() -> bool {
    EXPORTING.load(Ordering::Relaxed) || WATCHERS.load(Ordering::Relaxed) > 0
}

/// Whether a collector receives the spans.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Held by a dashboard's live stream: spans are recorded while any is held.
pub struct Watching(());

pub fn watch() -> Watching {
    WATCHERS.fetch_add(1, Ordering::Relaxed);
    Watching(())
}

impl Drop for Watching {
    fn drop(&mut self) {
        WATCHERS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The providers, flushed and shut down when the host exits.
pub struct Providers {
    traces: Arc<Spans>,
    logs: Option<SdkLoggerProvider>,
}

impl Providers {
    /// Sends what is still queued, waiting at most a few seconds for a collector.
    pub fn shutdown(self) {
        if let Err(e) = self.traces.shutdown_with_timeout(Duration::from_secs(5)) {
            tracing::debug!("the trace exporter did not shut down cleanly: {e}");
        }
        if let Some(logs) = self.logs
            && let Err(e) = logs.shutdown_with_timeout(Duration::from_secs(5))
        {
            tracing::debug!("the log exporter did not shut down cleanly: {e}");
        }
    }
}

/// What `init` installs: the providers, the span layer, and the bridge that turns guest
/// lines into log records (`None` when logs are not exported).
pub struct Setup {
    pub providers: Providers,
    pub spans: SpanLayer<Spans>,
    pub logs: Option<
        opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge<
            SdkLoggerProvider,
            opentelemetry_sdk::logs::SdkLogger,
        >,
    >,
}

/// Reads the OTLP variables and builds the providers. Errors say which variable is wrong;
/// the caller reports them and serves without export.
pub fn setup(recent: Arc<RecentTraces>) -> Result<Setup, String> {
    let disabled = env_is("OTEL_SDK_DISABLED", "true");
    Sampling::parse(
        std::env::var("OTEL_TRACES_SAMPLER").ok().as_deref(),
        std::env::var("OTEL_TRACES_SAMPLER_ARG").ok().as_deref(),
    )?
    .install();
    let resource = resource();
    let mut spans = Spans {
        recent,
        export: None,
    };
    if !disabled && !env_is("OTEL_TRACES_EXPORTER", "none") && configured("TRACES") {
        let exporter = span_exporter()?;
        let cap = queue_size("OTEL_BSP_MAX_QUEUE_SIZE");
        let backlog = Arc::new(Backlog::new(cap, &SPANS));
        let batch = BatchSpanProcessor::builder(Counted {
            inner: exporter,
            backlog: backlog.clone(),
        })
        .build();
        spans.export = Some(Gate {
            inner: batch,
            backlog,
        });
        EXPORTING.store(true, Ordering::Relaxed);
    }
    let logs = if !disabled && !env_is("OTEL_LOGS_EXPORTER", "none") && configured("LOGS") {
        let exporter = log_exporter()?;
        let cap = queue_size("OTEL_BLRP_MAX_QUEUE_SIZE");
        let backlog = Arc::new(Backlog::new(cap, &LOGS));
        let batch = opentelemetry_sdk::logs::BatchLogProcessor::builder(Counted {
            inner: exporter,
            backlog: backlog.clone(),
        })
        .build();
        Some(
            SdkLoggerProvider::builder()
                .with_resource(resource.clone())
                .with_log_processor(Gate {
                    inner: batch,
                    backlog,
                })
                .build(),
        )
    } else {
        None
    };
    spans.set_resource(&resource);
    let spans = Arc::new(spans);
    let bridge = logs
        .as_ref()
        .map(opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge::new);
    Ok(Setup {
        providers: Providers {
            traces: spans.clone(),
            logs: logs.clone(),
        },
        spans: SpanLayer::new(spans),
        logs: bridge,
    })
}

/// The trace layer's filter: berth's own spans, only while recording. Events stay out: a
/// warning's text may quote what a guest or a database said, and the log has it anyway.
/// Decided per callsite where it can be, so a callsite it will never want costs nothing;
/// the rest cost one atomic load.
pub struct SpanFilter;

impl SpanFilter {
    fn wanted(meta: &Metadata<'_>) -> bool {
        let target = meta.target();
        meta.is_span() && (target == "berth" || target.starts_with("berth::"))
    }
}

impl<S> Filter<S> for SpanFilter {
    fn enabled(&self, meta: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        Self::wanted(meta) && recording()
    }

    /// Berth's spans are at debug and above: trace-level callsites stay off for good.
    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::DEBUG)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> tracing::subscriber::Interest {
        if Self::wanted(meta) {
            tracing::subscriber::Interest::sometimes()
        } else {
            tracing::subscriber::Interest::never()
        }
    }
}

/// Starts this hop of a trace on `span`: its parent is the caller's `traceparent` when
/// valid, and the returned context carries the span's own ids, so what this hop sends on
/// (headers, messages) names it as the parent. When spans are not recorded, a new span id
/// under the caller's trace, as before any exporter.
pub fn hop(span: &tracing::Span, traceparent: Option<&[u8]>) -> TraceContext {
    if recording() && !span.is_disabled() {
        if let Some(parent) = traceparent.and_then(TraceContext::parse) {
            spans::set_remote_parent(span, &parent);
        }
        if let Some(own) = spans::ids(span) {
            return own;
        }
    }
    TraceContext::continue_or_start(traceparent)
}

/// The context of `span`, a child of the current one, or `outer` when spans are not
/// recorded: what a step inside a hop hands on.
pub fn child(span: &tracing::Span, outer: TraceContext) -> TraceContext {
    if recording() && !span.is_disabled() {
        spans::ids(span).unwrap_or(outer)
    } else {
        outer
    }
}

/// The `traceparent` a call made inside `span` sends: the span's own, or `outer` (the
/// invocation's) when spans are not recorded.
pub fn traceparent(span: &tracing::Span, outer: &http::HeaderValue) -> http::HeaderValue {
    if recording()
        && !span.is_disabled()
        && let Some(own) = spans::ids(span)
    {
        return own.header();
    }
    outer.clone()
}

/// Makes `span`'s OpenTelemetry context current until the guard drops: for a log record
/// emitted inside it to carry its trace and span ids.
pub fn attach(span: &tracing::Span) -> Option<opentelemetry::ContextGuard> {
    if !recording() || span.is_disabled() {
        return None;
    }
    let own = spans::ids(span)?;
    Some(
        opentelemetry::Context::new()
            .with_remote_span_context(remote(&own))
            .attach(),
    )
}

/// Names `span` once what it is became known (a request, once routed).
pub fn rename(span: &tracing::Span, name: String) {
    if recording() && !span.is_disabled() {
        spans::rename(span, name);
    }
}

/// Links `span` to the span a `traceparent` names (a batch to each message it carries).
pub fn link(span: &tracing::Span, traceparent: Option<&str>) {
    if recording()
        && let Some(linked) = traceparent.and_then(|t| TraceContext::parse(t.as_bytes()))
    {
        spans::add_link(span, remote(&linked));
    }
}

fn remote(context: &TraceContext) -> opentelemetry::trace::SpanContext {
    opentelemetry::trace::SpanContext::new(
        opentelemetry::trace::TraceId::from_bytes(context.trace_id),
        opentelemetry::trace::SpanId::from_bytes(context.span_id),
        if context.sampled {
            opentelemetry::trace::TraceFlags::SAMPLED
        } else {
            opentelemetry::trace::TraceFlags::default()
        },
        true,
        Default::default(),
    )
}

/// Whether a span of this kind starts a unit of work worth listing on the dashboard.
pub fn listed(kind: &SpanKind) -> bool {
    matches!(kind, SpanKind::Server | SpanKind::Consumer)
}

fn resource() -> Resource {
    let mut builder = Resource::builder().with_attribute(opentelemetry::KeyValue::new(
        "service.version",
        env!("CARGO_PKG_VERSION"),
    ));
    if std::env::var_os("OTEL_SERVICE_NAME").is_none()
        && !std::env::var("OTEL_RESOURCE_ATTRIBUTES")
            .unwrap_or_default()
            .contains("service.name=")
    {
        builder = builder.with_service_name("berth");
    }
    builder.build()
}

fn env_is(name: &str, value: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v.trim().eq_ignore_ascii_case(value))
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// A collector is configured for `signal` (`TRACES` or `LOGS`).
fn configured(signal: &str) -> bool {
    env("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
        || env(&format!("OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")).is_some()
}

enum Wire {
    Http,
    Grpc,
}

/// The protocol for `signal`, and a check that its endpoint is one berth can reach.
fn wire(signal: &str) -> Result<Wire, String> {
    let specific = format!("OTEL_EXPORTER_OTLP_{signal}_PROTOCOL");
    let (name, protocol) = match env(&specific) {
        Some(p) => (specific, p),
        None => (
            "OTEL_EXPORTER_OTLP_PROTOCOL".to_owned(),
            env("OTEL_EXPORTER_OTLP_PROTOCOL").unwrap_or_else(|| "http/protobuf".into()),
        ),
    };
    let endpoint = env(&format!("OTEL_EXPORTER_OTLP_{signal}_ENDPOINT"))
        .or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"))
        .unwrap_or_default();
    if !endpoint.starts_with("http://") {
        return Err(format!(
            "the OTLP endpoint `{endpoint}` is not a plain http:// URL; berth exports without TLS, \
             to a collector beside it (for example http://127.0.0.1:4318)"
        ));
    }
    match protocol.trim() {
        "http/protobuf" => Ok(Wire::Http),
        "grpc" => Ok(Wire::Grpc),
        other => Err(format!(
            "{name}={other} is not a protocol berth exports with; use http/protobuf or grpc"
        )),
    }
}

fn span_exporter() -> Result<opentelemetry_otlp::SpanExporter, String> {
    let built = match wire("TRACES")? {
        Wire::Http => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_http_client(OnRuntime::new()?)
            .build(),
        Wire::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build(),
    };
    built.map_err(|e| format!("cannot set up the OTLP trace exporter: {e}"))
}

fn log_exporter() -> Result<opentelemetry_otlp::LogExporter, String> {
    let built = match wire("LOGS")? {
        Wire::Http => opentelemetry_otlp::LogExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_http_client(OnRuntime::new()?)
            .build(),
        Wire::Grpc => opentelemetry_otlp::LogExporter::builder()
            .with_tonic()
            .build(),
    };
    built.map_err(|e| format!("cannot set up the OTLP log exporter: {e}"))
}

fn queue_size(variable: &str) -> usize {
    env(variable)
        .and_then(|v| v.trim().parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(2048)
}

/// The HTTP client of the exporters: the batch processors run on their own threads, with
/// no tokio runtime, so each send is run on the host's runtime.
#[derive(Debug, Clone)]
struct OnRuntime {
    runtime: tokio::runtime::Handle,
    client: reqwest::Client,
}

impl OnRuntime {
    fn new() -> Result<OnRuntime, String> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| "OTLP export needs the host's runtime, and none is running".to_owned())?;
        let client = reqwest::Client::builder()
            .build()
            .map_err(|e| format!("cannot make the OTLP HTTP client: {e}"))?;
        Ok(OnRuntime { runtime, client })
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for OnRuntime {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let client = self.client.clone();
        self.runtime
            .spawn(async move { client.send_bytes(request).await })
            .await?
    }
}

/// Spans or records handed to a batch processor and not yet exported. The gate in front of
/// the processor refuses past `cap`, which is never more than the processor's own queue, so
/// every drop is the gate's and is counted.
#[derive(Debug)]
struct Backlog {
    pending: AtomicUsize,
    cap: usize,
    counters: &'static ExportCounters,
}

impl Backlog {
    fn new(cap: usize, counters: &'static ExportCounters) -> Backlog {
        Backlog {
            pending: AtomicUsize::new(0),
            cap,
            counters,
        }
    }

    /// Takes a place in the queue, or counts a drop.
    fn admit(&self) -> bool {
        if self.pending.fetch_add(1, Ordering::AcqRel) >= self.cap {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    fn exported(&self, n: usize, result: &OTelSdkResult) {
        self.pending.fetch_sub(n, Ordering::AcqRel);
        match result {
            Ok(()) => self
                .counters
                .exported
                .fetch_add(n as u64, Ordering::Relaxed),
            Err(_) => self.counters.failed_batches.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// An exporter that gives back the places its batches held.
#[derive(Debug)]
struct Counted<E> {
    inner: E,
    backlog: Arc<Backlog>,
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        let result = self.inner.export(batch).await;
        self.backlog.exported(n, &result);
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

impl<E: LogExporter> LogExporter for Counted<E> {
    async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
        let n = batch.iter().count();
        let result = self.inner.export(batch).await;
        self.backlog.exported(n, &result);
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// A batch processor behind a bounded, counted door.
#[derive(Debug)]
struct Gate<P> {
    inner: P,
    backlog: Arc<Backlog>,
}

impl<P: SpanProcessor> SpanProcessor for Gate<P> {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &opentelemetry::Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if span.span_context.is_sampled() && self.backlog.admit() {
            self.inner.on_end(span);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

impl<P: LogProcessor> LogProcessor for Gate<P> {
    fn emit(&self, record: &mut SdkLogRecord, scope: &opentelemetry::InstrumentationScope) {
        if self.backlog.admit() {
            self.inner.emit(record, scope);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Where finished spans go: the in-memory ring while a dashboard watches, and the export
/// queue when a collector is configured.
#[derive(Debug)]
pub struct Spans {
    recent: Arc<RecentTraces>,
    export: Option<Gate<BatchSpanProcessor>>,
}

impl SpanProcessor for Spans {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &opentelemetry::Context) {
        if let Some(export) = &self.export {
            export.on_start(span, cx);
        }
    }

    fn on_end(&self, span: SpanData) {
        // Copied only for a dashboard: with a collector alone it would cost every span.
        if WATCHERS.load(Ordering::Relaxed) > 0 {
            self.recent.record(&span);
        }
        if let Some(export) = &self.export {
            export.on_end(span);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.export
            .as_ref()
            .map_or(Ok(()), SpanProcessor::force_flush)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.export
            .as_ref()
            .map_or(Ok(()), |export| export.shutdown_with_timeout(timeout))
    }

    fn set_resource(&mut self, resource: &Resource) {
        if let Some(export) = &mut self.export {
            SpanProcessor::set_resource(export, resource);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_refuses_past_its_bound_and_counts_every_drop() {
        static COUNTERS: ExportCounters = ExportCounters {
            dropped: AtomicU64::new(0),
            failed_batches: AtomicU64::new(0),
            exported: AtomicU64::new(0),
        };
        let backlog = Backlog::new(3, &COUNTERS);
        assert!((0..3).all(|_| backlog.admit()));
        assert!(!backlog.admit());
        assert!(!backlog.admit());
        assert_eq!(COUNTERS.dropped.load(Ordering::Relaxed), 2);
        // A batch that failed gives its places back all the same.
        backlog.exported(
            2,
            &Err(opentelemetry_sdk::error::OTelSdkError::Timeout(
                Duration::ZERO,
            )),
        );
        assert_eq!(COUNTERS.failed_batches.load(Ordering::Relaxed), 1);
        assert!(backlog.admit() && backlog.admit());
        assert!(!backlog.admit());
        backlog.exported(3, &Ok(()));
        assert_eq!(COUNTERS.exported.load(Ordering::Relaxed), 3);
        assert_eq!(COUNTERS.dropped.load(Ordering::Relaxed), 3);
    }
}
