//! Logs and traces: `tracing` everywhere, W3C trace context in and out, and guest
//! stdout/stderr turned into log events tagged with the component and the trace id.
//!
//! `BERTH_LOG` (or `RUST_LOG`) sets the filter, `info` by default; `BERTH_LOG_FORMAT=json`
//! writes one JSON object per line for log shippers.

mod guest_log;
pub mod metrics;
mod trace_context;

pub use guest_log::GuestOutput;
pub use metrics::Metrics;
pub use trace_context::TraceContext;

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = std::env::var("BERTH_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".into());
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|e| {
        eprintln!("berth: ignoring the log filter `{filter}` ({e}); using `info`");
        EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let result = if std::env::var("BERTH_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
    // A second init (tests start many hosts in one process) keeps the first subscriber.
    drop(result);
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
