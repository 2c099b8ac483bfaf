//! Logs and traces: `tracing` everywhere, W3C trace context in and out, and guest
//! stdout/stderr turned into log events tagged with the component and the trace id.
//!
//! `BERTH_LOG` (or `RUST_LOG`) sets the filter, `info` by default; `BERTH_LOG_FORMAT=json`
//! writes one JSON object per line for log shippers. Spans and guest output go to an
//! OpenTelemetry collector when the standard `OTEL_*` variables name one ([`otel`]).

mod guest_log;
pub mod metrics;
pub mod otel;
mod recent;
mod spans;
mod trace_context;

pub use guest_log::GuestOutput;
pub use metrics::Metrics;
pub use recent::RecentTraces;
pub use trace_context::TraceContext;

use std::io::IsTerminal as _;
use std::sync::{Arc, LazyLock};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The target of guest stdout/stderr lines: the log records exported over OTLP.
pub const GUEST_TARGET: &str = "berth::guest";

static RECENT: LazyLock<Arc<RecentTraces>> = LazyLock::new(Default::default);

/// The last traces this process recorded (see [`otel`] for when it records).
pub fn recent_traces() -> &'static RecentTraces {
    &RECENT
}

/// Installs logging and, when the `OTEL_*` variables ask for it, OTLP export. Call it
/// inside the runtime; shut the returned providers down after serving, so the last spans
/// reach the collector.
pub fn init() -> Option<otel::Providers> {
    let filter = std::env::var("BERTH_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".into());
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|e| {
        eprintln!("berth: ignoring the log filter `{filter}` ({e}); using `info`");
        EnvFilter::new("info")
    });
    let logged = filter.max_level_hint();
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let fmt = if std::env::var("BERTH_LOG_FORMAT").as_deref() == Ok("json") {
        fmt.json().flatten_event(true).with_filter(filter).boxed()
    } else {
        fmt.with_filter(filter).boxed()
    };
    let (providers, traces, logs) = match otel::setup(RECENT.clone()) {
        Ok(setup) => (Some(setup.providers), Some(setup.spans), setup.logs),
        Err(e) => {
            eprintln!("berth: not exporting telemetry: {e}");
            (None, None, None)
        }
    };
    let guest_lines =
        tracing_subscriber::filter::Targets::new().with_target(GUEST_TARGET, tracing::Level::TRACE);
    let result = tracing_subscriber::registry()
        .with(fmt)
        .with(traces.map(|layer| layer.with_filter(otel::SpanFilter)))
        .with(logs.map(|layer| layer.with_filter(guest_lines)))
        .try_init();
    // A second init (tests start many hosts in one process) keeps the first subscriber.
    if result.is_ok() {
        // Records of the `log` crate (wasmtime, sqlite) reach tracing one call at a time,
        // uncached: only the levels the log shows are worth the trip. The span layer wants
        // tracing spans alone, which would otherwise raise this to its own level.
        log::set_max_level(match logged {
            Some(LevelFilter::OFF) => log::LevelFilter::Off,
            Some(LevelFilter::ERROR) => log::LevelFilter::Error,
            Some(LevelFilter::WARN) => log::LevelFilter::Warn,
            Some(LevelFilter::INFO) => log::LevelFilter::Info,
            Some(LevelFilter::DEBUG) => log::LevelFilter::Debug,
            _ => log::LevelFilter::Trace,
        });
    }
    providers
}

/// A new request id: a v4 UUID from the thread-local generator (`Uuid::new_v4` would make a
/// getrandom syscall per request).
pub fn request_id() -> http::HeaderValue {
    let uuid = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    http::HeaderValue::from_bytes(uuid.hyphenated().encode_lower(&mut text).as_bytes())
        .expect("a uuid is a valid header value")
}

/// The current time as RFC 3339 UTC, the format of every time berth shows.
pub fn rfc3339_now() -> String {
    rfc3339(std::time::SystemTime::now())
}

pub fn rfc3339(at: std::time::SystemTime) -> String {
    time::OffsetDateTime::from(at)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
