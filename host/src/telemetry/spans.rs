//! berth's tracing spans as OpenTelemetry spans, built directly.
//!
//! A span here is one plain record in the registry's extensions (ids, name, kind, start,
//! attributes), finished into the SDK's `SpanData` when it closes and handed to the span
//! processor. tracing-opentelemetry builds each one through the SDK's tracer instead (a
//! span builder, then a started span behind a mutex and a context per parent): with it,
//! export cost `GET /api/v1/users/{id}` a fifth of its throughput in `bench/`'s `otel`
//! scenario, against 6 % this way. Sampling follows `OTEL_TRACES_SAMPLER` and
//! `OTEL_TRACES_SAMPLER_ARG` as the SDKs read them.

use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use opentelemetry::trace::{
    Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, Key, KeyValue, Value};
use opentelemetry_sdk::trace::{SamplingDecision, SpanData, SpanEvents, SpanLinks, SpanProcessor};
use tracing::Subscriber;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use super::TraceContext;

/// Which traces are kept.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// For a span with no parent (or every span, unless `parent_based`).
    root: Root,
    /// A span with a parent follows the parent's decision.
    parent_based: bool,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Root {
    On,
    Off,
    /// A share of trace ids, decided from the id itself, so every host agrees.
    Ratio(f64),
}

/// The sampling every span follows, set once at start.
static SAMPLING: OnceLock<Sampling> = OnceLock::new();

impl Default for Sampling {
    /// `parentbased_always_on`, the OpenTelemetry default.
    fn default() -> Sampling {
        Sampling {
            root: Root::On,
            parent_based: true,
        }
    }
}

impl Sampling {
    /// From the values of `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`.
    pub fn parse(sampler: Option<&str>, arg: Option<&str>) -> Result<Sampling, String> {
        let ratio = || match arg {
            None => Ok(1.0),
            Some(arg) => match arg.trim().parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
                _ => Err(format!(
                    "OTEL_TRACES_SAMPLER_ARG=`{arg}` is not a ratio between 0 and 1 (say 0.1)"
                )),
            },
        };
        let (root, parent_based) = match sampler.map(str::trim) {
            None | Some("") | Some("parentbased_always_on") => (Root::On, true),
            Some("always_on") => (Root::On, false),
            Some("always_off") => (Root::Off, false),
            Some("parentbased_always_off") => (Root::Off, true),
            Some("traceidratio") => (Root::Ratio(ratio()?), false),
            Some("parentbased_traceidratio") => (Root::Ratio(ratio()?), true),
            Some(other) => {
                return Err(format!(
                    "OTEL_TRACES_SAMPLER=`{other}` is not one of always_on, always_off, \
                     traceidratio, parentbased_always_on, parentbased_always_off, \
                     parentbased_traceidratio"
                ));
            }
        };
        Ok(Sampling { root, parent_based })
    }

    /// Makes this the sampling of every span from now on (the first call wins).
    pub fn install(self) {
        let _ = SAMPLING.set(self);
    }

    fn current() -> Sampling {
        SAMPLING.get().copied().unwrap_or_default()
    }

    /// Whether a span of `trace_id` is kept, given its parent's decision if it has one.
    fn decide(self, parent_sampled: Option<bool>, trace_id: TraceId) -> bool {
        if self.parent_based
            && let Some(sampled) = parent_sampled
        {
            return sampled;
        }
        match self.root {
            Root::On => true,
            Root::Off => false,
            Root::Ratio(ratio) => {
                // The SDK's own rule, so that berth decides as other services do.
                let decision = opentelemetry_sdk::trace::ShouldSample::should_sample(
                    &opentelemetry_sdk::trace::Sampler::TraceIdRatioBased(ratio),
                    None,
                    trace_id,
                    "",
                    &SpanKind::Internal,
                    &[],
                    &[],
                );
                decision.decision == SamplingDecision::RecordAndSample
            }
        }
    }
}

/// One span being recorded, kept in the registry's extensions until it closes.
struct Recording {
    trace_id: TraceId,
    span_id: SpanId,
    sampled: bool,
    /// The parent's span id, and whether it is another process's.
    parent: Option<(SpanId, bool)>,
    name: Cow<'static, str>,
    kind: SpanKind,
    start: SystemTime,
    attributes: Vec<KeyValue>,
    links: Vec<Link>,
    status: Status,
}

impl Recording {
    fn ids(&self) -> TraceContext {
        TraceContext {
            trace_id: self.trace_id.to_bytes(),
            span_id: self.span_id.to_bytes(),
            sampled: self.sampled,
        }
    }

    fn finish(self, scope: InstrumentationScope) -> SpanData {
        let mut links = SpanLinks::default();
        links.links = self.links;
        SpanData {
            span_context: SpanContext::new(
                self.trace_id,
                self.span_id,
                TraceFlags::SAMPLED,
                false,
                TraceState::NONE,
            ),
            parent_span_id: self.parent.map_or(SpanId::INVALID, |(id, _)| id),
            parent_span_is_remote: self.parent.is_some_and(|(_, remote)| remote),
            span_kind: self.kind,
            name: self.name,
            start_time: self.start,
            end_time: SystemTime::now(),
            attributes: self.attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links,
            status: self.status,
            instrumentation_scope: scope,
        }
    }

    /// Sets an attribute, replacing an earlier value of the same key.
    fn set(&mut self, key: &'static str, value: Value) {
        match self.attributes.iter_mut().find(|kv| kv.key.as_str() == key) {
            Some(kv) => kv.value = value,
            None => self
                .attributes
                .push(KeyValue::new(Key::from_static_str(key), value)),
        }
    }

    /// A text field: the `otel.*` ones name the span, its kind and its status.
    fn text(&mut self, key: &'static str, value: Cow<'_, str>) {
        match key {
            "otel.name" => self.name = Cow::Owned(value.into_owned()),
            "otel.kind" => self.kind = kind(&value),
            "otel.status_code" => {
                self.status = match value.as_ref() {
                    "error" | "ERROR" | "Error" => Status::error(""),
                    "ok" | "OK" | "Ok" => Status::Ok,
                    _ => Status::Unset,
                }
            }
            _ => self.set(key, Value::String(value.into_owned().into())),
        }
    }
}

fn kind(text: &str) -> SpanKind {
    match text {
        "server" => SpanKind::Server,
        "client" => SpanKind::Client,
        "producer" => SpanKind::Producer,
        "consumer" => SpanKind::Consumer,
        _ => SpanKind::Internal,
    }
}

fn new_trace_id() -> TraceId {
    loop {
        let id: u128 = rand::random();
        if id != 0 {
            return TraceId::from_bytes(id.to_be_bytes());
        }
    }
}

fn new_span_id() -> SpanId {
    loop {
        let id: u64 = rand::random();
        if id != 0 {
            return SpanId::from_bytes(id.to_be_bytes());
        }
    }
}

/// Records the fields of a span into its [`Recording`].
struct Fields<'a>(&'a mut Recording);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.text(field.name(), Cow::Borrowed(value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.text(field.name(), Cow::Owned(format!("{value:?}")));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.set(field.name(), Value::I64(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        match i64::try_from(value) {
            Ok(value) => self.0.set(field.name(), Value::I64(value)),
            Err(_) => self
                .0
                .set(field.name(), Value::String(value.to_string().into())),
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.set(field.name(), Value::Bool(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.set(field.name(), Value::F64(value));
    }
}

/// The layer: install it behind [`super::otel::SpanFilter`], so it only sees berth's spans
/// and only while they are recorded.
pub struct SpanLayer<P> {
    processor: Arc<P>,
    scope: InstrumentationScope,
}

impl<P> SpanLayer<P> {
    pub fn new(processor: Arc<P>) -> SpanLayer<P> {
        SpanLayer {
            processor,
            scope: InstrumentationScope::builder("berth").build(),
        }
    }
}

impl<S, P> Layer<S> for SpanLayer<P>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    P: SpanProcessor + 'static,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        // The nearest enclosing span this layer records, explicit or contextual.
        let parent = span.parent().and_then(|parent| {
            parent
                .extensions()
                .get::<Recording>()
                .map(|p| (p.trace_id, p.span_id, p.sampled))
        });
        let trace_id = parent.map_or_else(new_trace_id, |(trace, _, _)| trace);
        let sampled = Sampling::current().decide(parent.map(|(_, _, s)| s), trace_id);
        let mut recording = Recording {
            trace_id,
            span_id: new_span_id(),
            sampled,
            parent: parent.map(|(_, span, _)| (span, false)),
            name: Cow::Borrowed(attrs.metadata().name()),
            kind: SpanKind::Internal,
            start: SystemTime::now(),
            attributes: Vec::with_capacity(attrs.fields().len()),
            links: Vec::new(),
            status: Status::Unset,
        };
        // A root may yet be sampled under a remote parent ([`hop`]), so it keeps its fields.
        if sampled || parent.is_none() {
            attrs.record(&mut Fields(&mut recording));
        }
        span.extensions_mut().insert(recording);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(recording) = span.extensions_mut().get_mut::<Recording>()
            && (recording.sampled || recording.parent.is_none())
        {
            values.record(&mut Fields(recording));
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else {
            return;
        };
        let recording = span.extensions_mut().remove::<Recording>();
        drop(span);
        if let Some(recording) = recording
            && recording.sampled
        {
            self.processor.on_end(recording.finish(self.scope.clone()));
        }
    }
}

/// Runs `f` on `span`'s recording, if the layer records it.
fn with_recording<T>(span: &tracing::Span, f: impl FnOnce(&mut Recording) -> T) -> Option<T> {
    span.with_subscriber(|(id, dispatch)| {
        let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
        let data = registry.span(id)?;
        let mut extensions = data.extensions_mut();
        extensions.get_mut::<Recording>().map(f)
    })
    .flatten()
}

/// `span`'s own ids, if it is recorded.
pub fn ids(span: &tracing::Span) -> Option<TraceContext> {
    with_recording(span, |r| r.ids())
}

/// Puts `span` under a caller's span: its trace, its sampling decision (when sampling is
/// parent based), and its span as the remote parent. Call it before `span` has children.
pub fn set_remote_parent(span: &tracing::Span, parent: &TraceContext) {
    with_recording(span, |r| {
        r.trace_id = TraceId::from_bytes(parent.trace_id);
        r.parent = Some((SpanId::from_bytes(parent.span_id), true));
        r.sampled = Sampling::current().decide(Some(parent.sampled), r.trace_id);
    });
}

/// Renames `span`.
pub fn rename(span: &tracing::Span, name: String) {
    with_recording(span, |r| r.name = Cow::Owned(name));
}

/// Links `span` to another span.
pub fn add_link(span: &tracing::Span, to: SpanContext) {
    with_recording(span, |r| r.links.push(Link::with_context(to)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tracing_subscriber::layer::SubscriberExt as _;

    #[derive(Debug, Default)]
    struct Collect(Mutex<Vec<SpanData>>);

    impl SpanProcessor for Collect {
        fn on_start(&self, _: &mut opentelemetry_sdk::trace::Span, _: &opentelemetry::Context) {}
        fn on_end(&self, span: SpanData) {
            self.0.lock().unwrap().push(span);
        }
        fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
            Ok(())
        }
        fn shutdown_with_timeout(
            &self,
            _: std::time::Duration,
        ) -> opentelemetry_sdk::error::OTelSdkResult {
            Ok(())
        }
    }

    fn attribute<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| &kv.value)
    }

    #[test]
    fn spans_carry_their_fields_parents_and_the_remote_callers_trace() {
        let collect = Arc::new(Collect::default());
        let subscriber = tracing_subscriber::registry().with(SpanLayer::new(collect.clone()));
        let caller = TraceContext {
            trace_id: [7; 16],
            span_id: [9; 8],
            sampled: true,
        };
        tracing::subscriber::with_default(subscriber, || {
            let request = tracing::debug_span!(
                "request",
                otel.kind = "server",
                otel.status_code = tracing::field::Empty,
                http.request.method = %"GET",
                http.response.status_code = tracing::field::Empty,
            );
            set_remote_parent(&request, &caller);
            rename(&request, "GET /api/v1/users/...".into());
            let _entered = request.enter();
            let statement = tracing::debug_span!(
                "sql.execute",
                otel.name = %format_args!("SELECT {}", "users"),
                otel.kind = "client",
                db.response.returned_rows = tracing::field::Empty,
            );
            statement.record("db.response.returned_rows", 1u64);
            let own = ids(&statement).unwrap();
            assert_eq!(own.trace_id, caller.trace_id);
            drop(statement);
            request.record("http.response.status_code", 500u64);
            request.record("otel.status_code", "error");
        });
        let spans = collect.0.lock().unwrap();
        let [statement, request] = &spans[..] else {
            panic!("two spans, not {}", spans.len());
        };
        assert_eq!(request.name, "GET /api/v1/users/...");
        assert_eq!(request.span_kind, SpanKind::Server);
        assert_eq!(request.status, Status::error(""));
        assert_eq!(request.span_context.trace_id().to_bytes(), caller.trace_id);
        assert_eq!(request.parent_span_id.to_bytes(), caller.span_id);
        assert!(request.parent_span_is_remote);
        assert_eq!(
            attribute(request, "http.request.method"),
            Some(&Value::from("GET"))
        );
        assert_eq!(
            attribute(request, "http.response.status_code"),
            Some(&Value::I64(500))
        );
        assert_eq!(statement.name, "SELECT users");
        assert_eq!(statement.span_kind, SpanKind::Client);
        assert_eq!(statement.parent_span_id, request.span_context.span_id());
        assert!(!statement.parent_span_is_remote);
        assert_eq!(
            attribute(statement, "db.response.returned_rows"),
            Some(&Value::I64(1))
        );
    }

    #[test]
    fn sampling_reads_the_standard_values_and_refuses_others() {
        assert_eq!(Sampling::parse(None, None), Ok(Sampling::default()));
        let ratio = Sampling::parse(Some("parentbased_traceidratio"), Some("0.25")).unwrap();
        assert_eq!(ratio.root, Root::Ratio(0.25));
        assert!(ratio.parent_based);
        assert!(Sampling::parse(Some("traceidratio"), Some("2")).is_err());
        let error = Sampling::parse(Some("jaeger_remote"), None).unwrap_err();
        assert!(error.contains("jaeger_remote"), "{error}");
        // Parent based: the parent decides; otherwise the root rule does.
        let off = Sampling::parse(Some("parentbased_always_off"), None).unwrap();
        assert!(off.decide(Some(true), new_trace_id()));
        assert!(!off.decide(None, new_trace_id()));
        let always = Sampling::parse(Some("always_on"), None).unwrap();
        assert!(always.decide(Some(false), new_trace_id()));
        // A ratio keeps about its share of trace ids.
        let tenth = Sampling::parse(Some("traceidratio"), Some("0.1")).unwrap();
        let kept = (0..10_000)
            .filter(|_| tenth.decide(None, new_trace_id()))
            .count();
        assert!((700..1300).contains(&kept), "kept {kept} of 10000");
    }
}
