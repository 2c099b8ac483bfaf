//! `wasi:http/outgoing-handler`, limited to a component's `allowed_outbound_hosts`.
//!
//! | entry | allows |
//! |---|---|
//! | `https://api.example.com` | that host over https, port 443 |
//! | `http://localhost:8080` | that host and port |
//! | `https://*.example.com` | every subdomain of example.com |
//! | `*://example.com:*` | any scheme, any port |
//! | `http://127.0.0.1:8000..8100` | a port range (end excluded, as in Spin) |
//!
//! Everything else fails in the guest with an error naming the host and the entry to add,
//! and is logged the same way. The caller's `traceparent` goes along so a call chain stays
//! one trace. `http://<component>.spin.internal` is served in-process ([`chaining`]), and so
//! is `http://events.berth.internal`, where a component publishes CloudEvents ([`EventSink`]).

mod chaining;

pub use chaining::{INTERNAL_SUFFIX, LocalService};

/// The host a component POSTs its CloudEvents to; berth serves it itself.
pub const EVENTS_HOST: &str = "events.berth.internal";

/// Takes the events an invocation publishes over HTTP; implemented by the messaging
/// capability, which keeps them in the invocation's unit of work.
pub trait EventSink: Send + Sync {
    /// The largest request body it takes.
    fn limit(&self) -> usize;
    /// Answers a request to [`EVENTS_HOST`]: 202 once the event is in the outbox.
    fn accept(&self, request: http::Request<bytes::Bytes>) -> http::Response<bytes::Bytes>;
}

use std::fmt;
use std::sync::Arc;

use http::HeaderValue;

use crate::mesh::{self, Calls, Destination, Faults, Stopped};
use crate::telemetry::otel;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

#[derive(Debug, Clone, Default)]
pub struct AllowedHosts {
    entries: Vec<AllowedHost>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct AllowedHost {
    /// `None` for `*`.
    scheme: Option<String>,
    host: HostPattern,
    ports: PortPattern,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Any,
    Exact(String),
    /// `*.example.com`, stored as `.example.com`.
    Subdomains(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PortPattern {
    Any,
    Range(u16, u16),
}

impl AllowedHosts {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds one entry, refusing a malformed one with the reason.
    pub fn add(&mut self, entry: &str) -> Result<(), String> {
        self.entries.push(AllowedHost::parse(entry)?);
        Ok(())
    }

    pub fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        let host = host.to_ascii_lowercase();
        self.entries.iter().any(|e| e.allows(scheme, &host, port))
    }
}

impl AllowedHost {
    fn parse(entry: &str) -> Result<AllowedHost, String> {
        let Some((scheme, rest)) = entry.split_once("://") else {
            return Err(format!(
                "`{entry}` needs a scheme, for example `https://{entry}`"
            ));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') {
            return Err(format!(
                "`{entry}`: give a scheme, host and port, without a path"
            ));
        }
        let scheme = match scheme {
            "*" => None,
            s if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphabetic()) => {
                Some(s.to_ascii_lowercase())
            }
            _ => return Err(format!("`{entry}`: `{scheme}` is not a scheme")),
        };
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || rest.starts_with('[') => (h, Some(p)),
            _ => (rest, None),
        };
        let host = match host {
            "" => return Err(format!("`{entry}` has no host")),
            "*" => HostPattern::Any,
            "self" | "self.alt" => {
                return Err(format!(
                    "`{entry}`: berth has no `self` requests; call another component as `http://<component>.spin.internal`"
                ));
            }
            h if h.starts_with("*.") && h.len() > 2 => {
                HostPattern::Subdomains(h[1..].to_ascii_lowercase())
            }
            h if h.contains('*') => {
                return Err(format!(
                    "`{entry}`: `*` may only stand for the whole host or a leading `*.`"
                ));
            }
            h => HostPattern::Exact(h.to_ascii_lowercase()),
        };
        let ports = match port {
            None => match scheme.as_deref().and_then(default_port) {
                Some(p) => PortPattern::Range(p, p),
                None => {
                    return Err(format!(
                        "`{entry}`: give a port, since the scheme has no default one"
                    ));
                }
            },
            Some("*") => PortPattern::Any,
            Some(p) => {
                let parse = |s: &str| {
                    s.parse::<u16>()
                        .map_err(|_| format!("`{entry}`: `{p}` is not a port or port range"))
                };
                match p.split_once("..") {
                    Some((lo, end)) => {
                        let (lo, end) = (parse(lo)?, parse(end)?);
                        if lo >= end {
                            return Err(format!("`{entry}`: port range `{p}` is empty"));
                        }
                        PortPattern::Range(lo, end - 1)
                    }
                    None => {
                        let p = parse(p)?;
                        PortPattern::Range(p, p)
                    }
                }
            }
        };
        Ok(AllowedHost {
            scheme,
            host,
            ports,
        })
    }

    fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        self.scheme.as_deref().is_none_or(|s| s == scheme)
            && match &self.host {
                HostPattern::Any => true,
                HostPattern::Exact(h) => h == host,
                HostPattern::Subdomains(suffix) => host.ends_with(suffix.as_str()),
            }
            && match self.ports {
                PortPattern::Any => true,
                PortPattern::Range(lo, hi) => (lo..=hi).contains(&port),
            }
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        "postgres" => Some(5432),
        "mysql" => Some(3306),
        "redis" => Some(6379),
        "mqtt" => Some(1883),
        _ => None,
    }
}

/// A denied request, worded for the developer who has to fix the manifest.
#[derive(Debug)]
pub struct Denied {
    component: Arc<str>,
    scheme: String,
    host: String,
    port: u16,
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Denied {
            component,
            scheme,
            host,
            port,
        } = self;
        let entry = if default_port(scheme) == Some(*port) {
            format!("{scheme}://{host}")
        } else {
            format!("{scheme}://{host}:{port}")
        };
        write!(
            f,
            "outbound request to {scheme}://{host}:{port} denied: add \"{entry}\" to allowed_outbound_hosts of [component.{component}] in the manifest"
        )
    }
}

/// The per-invocation `wasi:http` hooks: the allow-list check and trace propagation.
pub struct OutboundHttp {
    pub component: Arc<str>,
    pub allowed: Arc<AllowedHosts>,
    /// The invocation's trace context, sent with every request it makes.
    pub traceparent: HeaderValue,
    /// Serves `http://<component>.spin.internal`, where the allow-list names it.
    pub local: Arc<dyn LocalService>,
    /// Serves `http://events.berth.internal`, where the allow-list names it.
    pub events: Arc<dyn EventSink>,
    /// The component's call policies, by destination.
    pub calls: Arc<Calls>,
    /// Faults injected on this host, some of which may aim at these calls.
    pub faults: Arc<Faults>,
}

/// The faults a call to one destination may meet, checked before each try: an injected
/// failure is then one the call policy retries, times out or counts, as a real one.
#[derive(Clone)]
pub(crate) struct Chaos {
    faults: Arc<Faults>,
    component: Arc<str>,
    host: String,
    path: String,
}

impl Chaos {
    /// `None` while no fault is in force, which is all a call pays then.
    fn of(hooks: &OutboundHttp, host: &str, uri: &http::Uri) -> Option<Chaos> {
        (!hooks.faults.is_empty()).then(|| Chaos {
            faults: hooks.faults.clone(),
            component: hooks.component.clone(),
            host: host.to_owned(),
            path: uri.path().to_owned(),
        })
    }

    /// Sleeps through an injected delay; returns an injected abort's answer.
    pub(crate) async fn strike(chaos: Option<&Chaos>) -> Option<http::Response<bytes::Bytes>> {
        let chaos = chaos?;
        chaos
            .faults
            .outbound(&chaos.component, &chaos.host, &chaos.path)
            .await
            .map(|injected| injected.response())
    }
}

impl OutboundHttp {
    fn check(&self, uri: &http::Uri) -> Result<(), Denied> {
        let scheme = uri.scheme_str().unwrap_or("https").to_ascii_lowercase();
        let host = uri.host().unwrap_or_default().to_ascii_lowercase();
        let port = uri
            .port_u16()
            .or_else(|| default_port(&scheme))
            .unwrap_or(0);
        if self.allowed.allows(&scheme, &host, port) {
            Ok(())
        } else {
            Err(Denied {
                component: self.component.clone(),
                scheme,
                host,
                port,
            })
        }
    }
}

type SendFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                ),
                HttpError,
            >,
        > + Send,
>;

impl WasiHttpHooks for OutboundHttp {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> SendFuture {
        if let Err(denied) = self.check(request.uri()) {
            // The guest sees what Spin answers; the log says how to allow it.
            tracing::warn!(component = %self.component, "{denied}");
            return Box::new(std::future::ready(Err(HttpError::HttpRequestDenied)));
        }
        let host = request
            .uri()
            .host()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let method = request.method().clone();
        let chaos = Chaos::of(self, &host, request.uri());
        if host == EVENTS_HOST {
            let events = self.events.clone();
            // Each message carries the invocation's traceparent (see `Published`): its
            // delivery is a child of the invocation that published it.
            let span = tracing::debug_span!(
                "publish",
                otel.kind = "producer",
                messaging.system = "berth",
                messaging.operation.type = "send",
                messaging.destination.name = tracing::field::Empty,
            );
            request
                .headers_mut()
                .insert("traceparent", self.traceparent.clone());
            return Box::new(tracing::Instrument::instrument(
                async move {
                    if let Some(answer) = Chaos::strike(chaos.as_ref()).await {
                        return Ok((answer.map(whole), no_io()));
                    }
                    let response = chaining::publish(events, request).await?;
                    Ok((response, no_io()))
                },
                span,
            ));
        }
        if let Some(component) = host.strip_suffix(INTERNAL_SUFFIX) {
            let component = component.to_owned();
            let local = self.local.clone();
            let span = tracing::debug_span!(
                "chain",
                otel.name = %format_args!("{method} {component}"),
                otel.kind = "client",
                http.request.method = %method,
                server.address = %host,
                http.response.status_code = tracing::field::Empty,
                berth.target = %component,
            );
            let traceparent = otel::traceparent(&span, &self.traceparent);
            request.headers_mut().insert("traceparent", traceparent);
            let policy = self.calls.to(&host);
            return Box::new(tracing::Instrument::instrument(
                async move {
                    let response =
                        chaining::send(local, &component, request, policy, chaos).await?;
                    tracing::Span::current()
                        .record("http.response.status_code", response.status().as_u16());
                    Ok((response, no_io()))
                },
                span,
            ));
        }
        // The host and status only: a URL's path and query may carry what the caller
        // would not want in a trace.
        let span = tracing::info_span!(
            "http.outbound",
            otel.name = %method,
            otel.kind = "client",
            http.request.method = %method,
            server.address = %host,
            server.port = request.uri().port_u16(),
            http.response.status_code = tracing::field::Empty,
        );
        let traceparent = otel::traceparent(&span, &self.traceparent);
        request.headers_mut().insert("traceparent", traceparent);
        let policy = self.calls.to(&host);
        Box::new(tracing::Instrument::instrument(
            async move {
                let (response, io) = match policy {
                    None => send_once(request, options, chaos.as_ref()).await?,
                    Some(policy) => send_under(&policy, request, options, chaos).await?,
                };
                tracing::Span::current()
                    .record("http.response.status_code", response.status().as_u16());
                Ok((response, io))
            },
            span,
        ))
    }
}

/// The task that drives an outgoing response's connection.
type Io = Box<dyn Future<Output = Result<(), HttpError>> + Send>;

/// The body of an answer berth makes itself, whole.
fn whole(bytes: bytes::Bytes) -> WasiBody {
    use http_body_util::BodyExt;
    http_body_util::Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// The connection task of an answer that has none.
fn no_io() -> Io {
    Box::new(std::future::ready(Ok(())))
}

/// The largest body a request under a retrying policy may have: it is kept whole to be
/// sent again.
pub const MAX_RETRIED_BODY_BYTES: usize = 1024 * 1024;

async fn send_once(
    request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
    chaos: Option<&Chaos>,
) -> Result<(http::Response<WasiBody>, Io), HttpError> {
    use http_body_util::BodyExt;
    if let Some(answer) = Chaos::strike(chaos).await {
        return Ok((answer.map(whole), no_io()));
    }
    let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
    Ok((response.map(BodyExt::boxed_unsync), Box::new(io) as Io))
}

/// Sends a request under its destination's policy. One that may be retried is read whole
/// first (at most [`MAX_RETRIED_BODY_BYTES`]); any other is streamed, once.
async fn send_under(
    policy: &Destination,
    request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
    chaos: Option<Chaos>,
) -> Result<(http::Response<WasiBody>, Io), HttpError> {
    use http_body_util::BodyExt;
    let chaos = chaos.as_ref();
    let idempotent = mesh::retry::idempotent(request.method(), request.headers());
    let (parts, body) = request.into_parts();
    let sent = if policy.may_retry(idempotent) {
        let body = match http_body_util::Limited::new(body, MAX_RETRIED_BODY_BYTES)
            .collect()
            .await
        {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(HttpError::InternalError(Some(format!(
                    "a request to {} that may be retried is kept whole, so its body must be at most {MAX_RETRIED_BODY_BYTES} bytes; send a larger one as a POST without an Idempotency-Key",
                    policy.host()
                ))));
            }
            Err(e) => {
                return Err(HttpError::InternalError(Some(format!(
                    "cannot read the request body: {e}"
                ))));
            }
        };
        policy
            .call(true, || {
                send_once(
                    http::Request::from_parts(parts.clone(), whole(body.clone())),
                    options,
                    chaos,
                )
            })
            .await
    } else {
        let mut body = Some(body);
        policy
            .call(false, || {
                let request = body
                    .take()
                    .map(|body| http::Request::from_parts(parts.clone(), body));
                async move {
                    match request {
                        Some(request) => send_once(request, options, chaos).await,
                        None => Err(HttpError::InternalError(Some(
                            "a request that may not be retried was about to be sent twice".into(),
                        ))),
                    }
                }
            })
            .await
    };
    match sent {
        Ok(answer) => Ok(answer),
        Err(Stopped::Failed(error)) => Err(error),
        Err(stopped) => Ok((mesh::answer(policy.host(), &stopped).map(whole), no_io())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(entries: &[&str]) -> AllowedHosts {
        let mut hosts = AllowedHosts::default();
        for entry in entries {
            hosts.add(entry).unwrap();
        }
        hosts
    }

    #[test]
    fn exact_host_uses_the_scheme_default_port() {
        let h = hosts(&["https://api.example.com"]);
        assert!(h.allows("https", "api.example.com", 443));
        assert!(h.allows("https", "API.example.com", 443));
        assert!(!h.allows("https", "api.example.com", 8443));
        assert!(!h.allows("http", "api.example.com", 80));
        assert!(!h.allows("https", "example.com", 443));
    }

    #[test]
    fn wildcards_cover_subdomains_schemes_and_ports() {
        let h = hosts(&["*://*.example.com:*", "http://127.0.0.1:8000..8101"]);
        assert!(h.allows("http", "a.example.com", 1));
        assert!(h.allows("https", "a.b.example.com", 443));
        assert!(!h.allows("https", "example.com", 443));
        assert!(h.allows("http", "127.0.0.1", 8050));
        assert!(!h.allows("http", "127.0.0.1", 8101));
    }

    #[test]
    fn malformed_entries_are_refused_with_the_reason() {
        for (entry, why) in [
            ("example.com", "needs a scheme"),
            ("https://example.com/path", "without a path"),
            ("tcp://cache", "give a port"),
            ("http://self", "spin.internal"),
            ("http://h:9..9", "empty"),
            ("https://ex*ample.com", "may only stand"),
            ("https://example.com:99999", "not a port"),
        ] {
            let err = AllowedHosts::default().add(entry).unwrap_err();
            assert!(err.contains(why), "{entry}: {err}");
        }
    }

    /// An app with no components to chain to.
    struct Nowhere;

    #[async_trait::async_trait]
    impl LocalService for Nowhere {
        async fn call(
            self: Arc<Self>,
            component: &str,
            _request: http::Request<bytes::Bytes>,
        ) -> Result<http::Response<bytes::Bytes>, String> {
            Err(format!("no component `{component}` here"))
        }
    }

    #[test]
    fn denial_names_the_host_and_the_entry_to_add() {
        let hooks = OutboundHttp {
            component: "payment".into(),
            allowed: Arc::new(AllowedHosts::default()),
            traceparent: HeaderValue::from_static(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            local: Arc::new(Nowhere),
            calls: Default::default(),
            faults: Default::default(),
            events: Arc::new(crate::capabilities::messaging::Published::new(
                "payment".into(),
                "/app/payment".into(),
                Arc::new([]),
                HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            )),
        };
        let denied = hooks
            .check(&"https://api.stripe.com/v1/charges".parse().unwrap())
            .unwrap_err()
            .to_string();
        assert!(denied.contains("https://api.stripe.com:443"), "{denied}");
        assert!(
            denied.contains(
                "add \"https://api.stripe.com\" to allowed_outbound_hosts of [component.payment]"
            ),
            "{denied}"
        );
    }
}
