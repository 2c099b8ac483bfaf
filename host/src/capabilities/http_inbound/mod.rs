//! The gateway: serves `wasi:http/incoming-handler` components to clients.
//!
//! Per request: a request id and W3C trace context, routing from `[[trigger.http]]`, bearer
//! token checks for `auth = "jwt"` components, the body limit, then one invocation of the
//! component's current version. Every response carries `x-request-id` and `traceparent`;
//! every failure the gateway itself reports is the JSON error of the public API.

pub mod auth;
mod dispatch;
mod errors;
pub mod router;
pub mod server;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tracing::Instrument as _;

use crate::capabilities::http_outbound::LocalService;
use crate::components::invocation::Failure;
use crate::components::{Registry, Slot};
use crate::config::berth::Auth;
use crate::engine::Engine;
use crate::telemetry::TraceContext;
use auth::JwtVerifier;
use router::{RouteMatch, RoutePattern, Router};

pub use dispatch::short as short_digest;
pub use errors::{ApiError, json};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body of every response the gateway sends.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// Carries the verified user id to the component; never taken from a client.
pub const USER_ID_HEADER: HeaderName = HeaderName::from_static("x-berth-user-id");
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// Who a request is, formatted once: for logs, error bodies, the guest's headers, the
/// response, and every outbound call the guest makes.
pub struct RequestIds {
    pub request_id: HeaderValue,
    /// 32 hex digits.
    pub trace_id: Arc<str>,
    /// This hop's W3C `traceparent`.
    pub traceparent: HeaderValue,
}

/// Where a route leads, resolved at load.
pub struct Target {
    pub slot: Arc<Slot>,
    /// The route as written in the manifest (Spin's `spin-raw-component-route`).
    pub raw_route: Arc<str>,
    pub auth: Auth,
    pub public_routes: Arc<[RoutePattern]>,
    /// The `spin-*` headers that depend only on the route, formatted once at load.
    route_headers: Vec<(HeaderName, HeaderValue)>,
}

impl Target {
    pub fn new(
        slot: Arc<Slot>,
        pattern: &RoutePattern,
        auth: Auth,
        public_routes: Arc<[RoutePattern]>,
    ) -> Target {
        let raw_route: Arc<str> = pattern.to_string().into();
        let route_headers = [
            ("spin-matched-route", raw_route.to_string()),
            ("spin-base-path", "/".to_owned()),
            ("spin-raw-component-route", raw_route.to_string()),
            ("spin-component-route", pattern.base()),
        ]
        .into_iter()
        .filter_map(|(name, value)| {
            Some((
                HeaderName::from_static(name),
                HeaderValue::try_from(value).ok()?,
            ))
        })
        .collect();
        Target {
            slot,
            raw_route,
            auth,
            public_routes,
            route_headers,
        }
    }
}

pub struct Gateway {
    /// Swapped whole when the manifest's routes are reloaded.
    router: arc_swap::ArcSwap<Router<Target>>,
    /// Every component, for chained requests (`http://<id>.spin.internal`).
    components: Arc<Registry>,
    engine: Engine,
    jwt: Option<JwtVerifier>,
    max_request_bytes: u64,
    metrics: Arc<crate::telemetry::Metrics>,
}

/// Where a request went, for its metrics.
#[derive(Default)]
struct Routed {
    component: Option<Arc<str>>,
    route: Option<Arc<str>>,
}

impl Gateway {
    pub fn new(
        routes: Vec<(RoutePattern, Target)>,
        components: Arc<Registry>,
        engine: Engine,
        jwt: Option<JwtVerifier>,
        max_request_bytes: u64,
        metrics: Arc<crate::telemetry::Metrics>,
    ) -> Gateway {
        Gateway {
            router: arc_swap::ArcSwap::from_pointee(Router::new(routes)),
            components,
            engine,
            jwt,
            max_request_bytes,
            metrics,
        }
    }

    /// Replaces the routing table in one swap; requests already routed keep their target.
    pub fn set_routes(&self, routes: Vec<(RoutePattern, Target)>) {
        self.router.store(Arc::new(Router::new(routes)));
    }

    pub async fn handle(&self, request: Request<Incoming>, client: SocketAddr) -> Response<Body> {
        let started = std::time::Instant::now();
        let trace = TraceContext::continue_or_start(
            request
                .headers()
                .get(TRACEPARENT)
                .map(HeaderValue::as_bytes),
        );
        let request_id = request
            .headers()
            .get(REQUEST_ID)
            .filter(|v| {
                v.len() <= 128 && !v.is_empty() && v.as_bytes().iter().all(u8::is_ascii_graphic)
            })
            .cloned()
            .unwrap_or_else(crate::telemetry::request_id);
        let ids = RequestIds {
            request_id,
            trace_id: trace.trace_id_hex().into(),
            traceparent: trace.header(),
        };
        // Debug level: formatting a span's fields for every request is a measurable share
        // of a small request's cost. Failures are logged with their trace id regardless.
        let span = tracing::debug_span!(
            "request",
            method = %request.method(),
            path = %request.uri().path(),
            route = tracing::field::Empty,
            component = tracing::field::Empty,
            version = tracing::field::Empty,
            status = tracing::field::Empty,
            trace_id = %ids.trace_id,
            request_id = ?ids.request_id,
        );
        let mut routed = Routed::default();
        let mut response = match self
            .route(request, client, &ids, &mut routed)
            .instrument(span.clone())
            .await
        {
            Ok(response) => response,
            Err(error) => error.into_response(&ids.trace_id),
        };
        let version = response
            .headers()
            .get(dispatch::VERSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        self.metrics.request(
            routed.component.as_deref().unwrap_or_default(),
            version,
            routed.route.as_deref().unwrap_or_default(),
            response.status().as_u16(),
            started.elapsed(),
        );
        let headers = response.headers_mut();
        headers.insert(REQUEST_ID, ids.request_id);
        headers.insert(TRACEPARENT, ids.traceparent);
        let status = response.status().as_u16();
        span.record("status", status);
        // An access log line per request costs a formatted write to stderr on the hot path;
        // `BERTH_LOG=berth=debug` turns it on, /metrics counts every request regardless.
        tracing::debug!(parent: &span, status, elapsed_us = started.elapsed().as_micros() as u64, "served");
        response
    }

    async fn route(
        &self,
        request: Request<Incoming>,
        client: SocketAddr,
        ids: &RequestIds,
        routed: &mut Routed,
    ) -> Result<Response<Body>, ApiError> {
        let path = request.uri().path().to_owned();
        let router = self.router.load();
        let Some((pattern, target, matched)) = router.route(&path) else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "ROUTE_NOT_FOUND",
                format!("no route matches {path}"),
            ));
        };
        let span = tracing::Span::current();
        span.record("route", tracing::field::display(pattern));
        span.record("component", &*target.slot.id);
        routed.component = Some(target.slot.id.clone());
        routed.route = Some(target.raw_route.clone());

        let user = self.authenticate(&request, target, &path)?;
        let (mut parts, body) = request.into_parts();
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let body = read_body(body, declared, self.max_request_bytes).await?;

        guest_headers(
            &mut parts,
            GuestContext {
                target,
                matched: &matched,
                client,
                ids,
                user,
            },
        );
        let request = Request::from_parts(parts, Full::new(body));
        dispatch::invoke(&self.engine, &target.slot, request, ids)
            .await
            .map_err(|failure| failure_response(failure, &target.slot.id))
    }

    fn authenticate(
        &self,
        request: &Request<Incoming>,
        target: &Target,
        path: &str,
    ) -> Result<Option<String>, ApiError> {
        if target.auth != Auth::Jwt
            || target
                .public_routes
                .iter()
                .any(|p| p.matches(path).is_some())
        {
            return Ok(None);
        }
        let verifier = self.jwt.as_ref().ok_or_else(|| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "AUTH_NOT_CONFIGURED",
                "the gateway has no key to verify tokens with",
            )
        })?;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        verifier
            .verify(
                request
                    .headers()
                    .get(header::AUTHORIZATION)
                    .map(HeaderValue::as_bytes),
                now,
            )
            .map(Some)
            .map_err(|e| {
                ApiError::new(StatusCode::UNAUTHORIZED, e.code(), e.to_string())
                    .with_header(header::WWW_AUTHENTICATE, "Bearer")
            })
    }
}

#[async_trait::async_trait]
impl LocalService for Gateway {
    /// A chained request: no gateway auth (the caller is inside the app), the caller's
    /// trace continued, the callee's failures answered as the JSON errors a client gets.
    async fn call(
        &self,
        component: &str,
        request: Request<Bytes>,
    ) -> Result<Response<Bytes>, String> {
        let slot = self
            .components
            .get(component)
            .filter(|s| s.stable().http.is_some())
            .ok_or_else(|| {
                format!("no component `{component}` serves HTTP in this app (called as http://{component}.spin.internal)")
            })?;
        if request.body().len() as u64 > self.max_request_bytes {
            return Err(format!(
                "the request body is larger than the limit of {} bytes",
                self.max_request_bytes
            ));
        }
        let trace = TraceContext::continue_or_start(
            request
                .headers()
                .get(TRACEPARENT)
                .map(HeaderValue::as_bytes),
        );
        let ids = RequestIds {
            request_id: crate::telemetry::request_id(),
            trace_id: trace.trace_id_hex().into(),
            traceparent: trace.header(),
        };
        let span = tracing::info_span!(
            "chained",
            component,
            path = %request.uri().path(),
            version = tracing::field::Empty,
            trace_id = %ids.trace_id,
        );
        let (mut parts, body) = request.into_parts();
        chained_headers(&mut parts, &ids);
        let request = Request::from_parts(parts, Full::new(body));
        let response = match dispatch::invoke(&self.engine, slot, request, &ids)
            .instrument(span)
            .await
        {
            Ok(response) => response,
            Err(failure) => failure_response(failure, component).into_response(&ids.trace_id),
        };
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("component `{component}` answered a broken body: {e}"))?
            .to_bytes();
        Ok(Response::from_parts(parts, body))
    }
}

/// Removes what only the host may set: the verified user and the `spin-*` headers.
fn strip_host_headers(headers: &mut http::HeaderMap) {
    let forged: Vec<HeaderName> = headers
        .keys()
        .filter(|name| *name == USER_ID_HEADER || name.as_str().starts_with("spin-"))
        .cloned()
        .collect();
    for name in forged {
        headers.remove(name);
    }
}

/// The headers a chained component sees: the caller's, minus what only the host sets,
/// plus the trace and the `spin-*` headers of a private route.
fn chained_headers(parts: &mut http::request::Parts, ids: &RequestIds) {
    let headers = &mut parts.headers;
    strip_host_headers(headers);
    headers.insert(TRACEPARENT, ids.traceparent.clone());
    headers.insert(REQUEST_ID, ids.request_id.clone());
    let path = parts.uri.path().to_owned();
    let full = parts.uri.to_string();
    for (name, value) in [
        ("spin-full-url", full),
        ("spin-path-info", path),
        ("spin-matched-route", "/...".to_owned()),
        ("spin-base-path", "/".to_owned()),
        ("spin-component-route", String::new()),
    ] {
        if let Ok(value) = HeaderValue::try_from(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
}

/// How much of an over-long body is read and thrown away before answering 413, so that a
/// client still sending sees the answer instead of a reset connection.
const DRAIN_BYTES: u64 = 16 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// The whole request body, up to `limit` bytes; 413 beyond it, declared or streamed.
async fn read_body(
    mut body: Incoming,
    declared: Option<u64>,
    limit: u64,
) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "BODY_TOO_LARGE",
            format!("the request body is larger than the limit of {limit} bytes"),
        )
        .with_header(header::CONNECTION, "close")
    };
    if declared.is_some_and(|len| len > limit) {
        drain(body).await;
        return Err(too_large());
    }
    let mut buffer = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "BODY_UNREADABLE",
                format!("the request body could not be read: {e}"),
            )
        })?;
        if let Ok(data) = frame.into_data() {
            if (buffer.len() + data.len()) as u64 > limit {
                drain(body).await;
                return Err(too_large());
            }
            buffer.extend_from_slice(&data);
        }
    }
    Ok(buffer.freeze())
}

async fn drain(mut body: Incoming) {
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        let mut drained = 0u64;
        while let Some(Ok(frame)) = body.frame().await {
            drained += frame.data_ref().map_or(0, |d| d.len() as u64);
            if drained > DRAIN_BYTES {
                break;
            }
        }
    })
    .await;
}

struct GuestContext<'a> {
    target: &'a Target,
    matched: &'a RouteMatch<'a>,
    client: SocketAddr,
    ids: &'a RequestIds,
    user: Option<String>,
}

/// The headers a component sees: the client's, minus anything only the host may set, plus
/// the verified user, the trace context, and the `spin-*` headers Spin components expect.
fn guest_headers(parts: &mut http::request::Parts, cx: GuestContext) {
    let headers = &mut parts.headers;
    strip_host_headers(headers);
    // The trace, request id and `spin-*` headers below, in one allocation.
    headers.reserve(10 + cx.matched.params.len());
    if let Some(user) = cx.user.and_then(|u| HeaderValue::try_from(u).ok()) {
        headers.insert(USER_ID_HEADER, user);
    }
    headers.insert(TRACEPARENT, cx.ids.traceparent.clone());
    headers.insert(REQUEST_ID, cx.ids.request_id.clone());

    let host = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| headers.get(header::HOST)?.to_str().ok().map(str::to_owned))
        .unwrap_or_else(|| "localhost".to_owned());
    if !headers.contains_key(header::HOST)
        && let Ok(h) = HeaderValue::try_from(host.as_str())
    {
        headers.insert(header::HOST, h);
    }
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    for (name, value) in &cx.target.route_headers {
        headers.insert(name.clone(), value.clone());
    }
    let spin: [(&str, String); 3] = [
        ("spin-full-url", format!("http://{host}{path_and_query}")),
        ("spin-path-info", cx.matched.path_info.to_owned()),
        ("spin-client-addr", cx.client.to_string()),
    ];
    for (name, value) in spin {
        if let Ok(value) = HeaderValue::try_from(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    for (name, value) in &cx.matched.params {
        let name = format!(
            "spin-path-match-{}",
            name.replace('_', "-").to_ascii_lowercase()
        );
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(*value)) {
            headers.insert(name, value);
        }
    }
}

fn failure_response(failure: Failure, component: &str) -> ApiError {
    let message = format!("component `{component}` {failure}");
    match failure {
        Failure::Busy(_) | Failure::HostFull => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "COMPONENT_BUSY", message)
                .with_header(header::RETRY_AFTER, "1")
        }
        Failure::Timeout(_) => {
            ApiError::new(StatusCode::GATEWAY_TIMEOUT, "COMPONENT_TIMEOUT", message)
        }
        Failure::OutOfMemory(_) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "COMPONENT_OUT_OF_MEMORY",
            message,
        ),
        Failure::ResponseTooLarge(..) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "RESPONSE_TOO_LARGE",
            message,
        ),
        Failure::Commit(_) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "COMMIT_FAILED", message)
                .with_header(header::RETRY_AFTER, "1")
        }
        Failure::Trapped(_) | Failure::NoResponse | Failure::Failed(_) | Failure::Handler(_) => {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "COMPONENT_FAILED",
                message,
            )
        }
    }
}
