//! The gateway: serves `wasi:http/incoming-handler` components to clients.
//!
//! Per request, in this order: a request id and W3C trace context; the path brought to its
//! one spelling ([`path`]); a CORS preflight answered ([`cors`]); routing from
//! `[[trigger.http]]`; bearer token checks for `auth = "jwt"` components; rate limits by
//! client and user ([`rate_limit`]); the body, bounded in size and time; rate limits by body
//! field; the route's share of the component's concurrency; then one invocation of the
//! component's current version. Every response carries `x-request-id` and `traceparent`;
//! every failure the gateway itself reports is the JSON error of the public API.

pub mod auth;
pub mod body;
pub mod cors;
pub mod path;
pub mod rate_limit;
pub mod router;
pub mod server;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tracing::Instrument as _;

use crate::config::App;
use crate::config::berth::Auth;
use crate::registry::http::{
    REQUEST_ID, RequestIds, TRACEPARENT, USER_ID_HEADER, VERSION_HEADER, failure_response,
    strip_host_headers,
};
use crate::registry::{Registry, Slot};
use crate::telemetry::otel;
use auth::JwtVerifier;
use cors::Cors;
use rate_limit::{Limited, RateLimits, Standing};
use router::{RouteMatch, RoutePattern, Router};

pub use crate::response::{ApiError, Body, BoxError, json};

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

/// The routing table: each manifest route bound to its component's slot.
fn routes(app: &App, registry: &Registry) -> Vec<(RoutePattern, Target)> {
    app.routes
        .iter()
        .filter_map(|route| {
            let slot = registry.get(&route.component)?.clone();
            let config = &app.components[&route.component];
            Some((
                route.pattern.clone(),
                Target::new(
                    slot,
                    &route.pattern,
                    config.auth,
                    config.public_routes.clone().into(),
                ),
            ))
        })
        .collect()
}

pub struct Gateway {
    /// Swapped whole when the manifest's routes are reloaded.
    router: arc_swap::ArcSwap<Router<Target>>,
    /// Where every invocation goes.
    registry: Arc<Registry>,
    jwt: Option<JwtVerifier>,
    max_request_bytes: u64,
    /// To receive a whole request body; then 408.
    body_timeout: Duration,
    cors: Option<Cors>,
    response_headers: crate::config::ResponseHeaders,
    pub rate_limits: Arc<RateLimits>,
    /// Per component, the shares of its concurrency that some routes keep to themselves.
    shares: HashMap<String, Arc<[RouteShare]>>,
    metrics: Arc<crate::telemetry::Metrics>,
}

/// Slots of a component that only some of its routes use (`route_concurrency`), so a
/// CPU-heavy route waits for its own share instead of taking the component's every slot.
struct RouteShare {
    routes: Vec<RoutePattern>,
    permits: Arc<tokio::sync::Semaphore>,
    max: u32,
}

/// Where a request went, for its metrics and its rate-limit headers.
#[derive(Default)]
struct Routed {
    component: Option<Arc<str>>,
    route: Option<Arc<str>>,
    standing: Option<Standing>,
}

impl Gateway {
    pub fn new(
        app: &App,
        registry: Arc<Registry>,
        jwt: Option<JwtVerifier>,
        metrics: Arc<crate::telemetry::Metrics>,
    ) -> Gateway {
        let shares = app
            .components
            .values()
            .filter(|c| !c.route_concurrency.is_empty())
            .map(|c| {
                let shares: Arc<[RouteShare]> = c
                    .route_concurrency
                    .iter()
                    .map(|(routes, max)| RouteShare {
                        routes: routes.clone(),
                        permits: Arc::new(tokio::sync::Semaphore::new(*max as usize)),
                        max: *max,
                    })
                    .collect();
                (c.id.clone(), shares)
            })
            .collect();
        Gateway {
            router: arc_swap::ArcSwap::from_pointee(Router::new(routes(app, &registry))),
            registry,
            jwt,
            max_request_bytes: app.max_request_bytes,
            body_timeout: app.connections.body_timeout,
            cors: app.cors.clone(),
            response_headers: app.response_headers,
            rate_limits: Arc::new(RateLimits::new(&app.rate_limits)),
            shares,
            metrics,
        }
    }

    /// Replaces the routing table with `app`'s routes in one swap; requests already routed
    /// keep their target.
    pub fn set_routes(&self, app: &App) {
        self.router
            .store(Arc::new(Router::new(routes(app, &self.registry))));
    }

    pub async fn handle(&self, request: Request<Incoming>, client: SocketAddr) -> Response<Body> {
        let started = std::time::Instant::now();
        // Debug level: formatting a span's fields for every request is a measurable share
        // of a small request's cost. Failures are logged with their trace id regardless;
        // an OpenTelemetry collector or a watching dashboard records it at any level.
        let span = tracing::debug_span!(
            "request",
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            http.request.method = %request.method(),
            url.path = %request.uri().path(),
            http.route = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
            berth.component = tracing::field::Empty,
            berth.version = tracing::field::Empty,
        );
        let trace = otel::hop(
            &span,
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
        let mut routed = Routed::default();
        let origin = self
            .cors
            .as_ref()
            .and_then(|_| request.headers().get(header::ORIGIN).cloned());
        let mut response = match self
            .route(request, client, &ids, &mut routed)
            .instrument(span.clone())
            .await
        {
            Ok(response) => response,
            Err(error) => error.into_response(&ids.trace_id),
        };
        if let Some(cors) = &self.cors {
            cors.decorate(origin.as_ref(), response.headers_mut());
        }
        if let Some(standing) = routed.standing {
            response.headers_mut().extend(rate_limit_headers(&standing));
        }
        let version = response
            .headers()
            .get(VERSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !version.is_empty() {
            span.record("berth.version", version);
        }
        self.metrics.request(
            routed.component.as_deref().unwrap_or_default(),
            version,
            routed.route.as_deref().unwrap_or_default(),
            response.status().as_u16(),
            started.elapsed(),
        );
        let send = self.response_headers;
        let headers = response.headers_mut();
        if send.request_id {
            headers.insert(REQUEST_ID, ids.request_id);
        }
        if send.traceparent {
            headers.insert(TRACEPARENT, ids.traceparent);
        }
        if !send.version {
            headers.remove(VERSION_HEADER);
        }
        let status = response.status().as_u16();
        span.record("http.response.status_code", status);
        if status >= 500 {
            span.record("otel.status_code", "error");
        }
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
        let raw_path = request.uri().path();
        let path = path::normalize(raw_path)
            .map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "BAD_PATH",
                    format!("the path {raw_path} cannot be served: {e}; send it in its plain form"),
                )
            })?
            .into_owned();
        let path_changed = path != raw_path;
        if let Some(cors) = &self.cors
            && let Some(preflight) = cors.preflight(request.method(), request.headers())
        {
            let mut response = Response::new(
                Full::new(Bytes::new())
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            );
            *response.status_mut() = StatusCode::NO_CONTENT;
            *response.headers_mut() = preflight?;
            return Ok(response);
        }
        let router = self.router.load();
        let no_route = || {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "ROUTE_NOT_FOUND",
                format!("no route matches {path}"),
            )
        };
        let Some((pattern, target, matched)) = router.route(&path) else {
            return Err(no_route());
        };
        // Events reach a component only from the host, whoever asks and however spelled.
        if target.slot.receives_events_at(&path) {
            return Err(no_route());
        }
        let span = tracing::Span::current();
        span.record("http.route", tracing::field::display(pattern));
        span.record("berth.component", &*target.slot.id);
        if otel::recording() {
            otel::rename(&span, format!("{} {pattern}", request.method()));
        }
        routed.component = Some(target.slot.id.clone());
        routed.route = Some(target.raw_route.clone());

        let user = self.authenticate(&request, target, &path)?;
        if !self.rate_limits.is_empty() {
            routed.standing = self
                .rate_limits
                .check_request(&path, client.ip(), user.as_deref())
                .map_err(|limited| self.limited(limited))?;
        }
        let (mut parts, body) = request.into_parts();
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let body = tokio::time::timeout(
            self.body_timeout,
            body::read(body, declared, self.max_request_bytes),
        )
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "BODY_TIMEOUT",
                format!(
                    "the request body did not arrive within {} ms",
                    self.body_timeout.as_millis()
                ),
            )
            .with_header(header::CONNECTION, "close")
        })?
        .map_err(|e| match e {
            body::BodyError::TooLarge(limit) => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "BODY_TOO_LARGE",
                format!("the request body is larger than the limit of {limit} bytes"),
            )
            .with_header(header::CONNECTION, "close"),
            body::BodyError::Unreadable(e) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "BODY_UNREADABLE",
                format!("the request body could not be read: {e}"),
            ),
        })?;
        if self.rate_limits.wants_body(&path) {
            let standing = self
                .rate_limits
                .check_body(&path, &body)
                .map_err(|limited| self.limited(limited))?;
            routed.standing = tighter(routed.standing, standing);
        }
        let _share = self.share(target, &path).await?;

        if path_changed {
            set_path(&mut parts.uri, &path);
        }
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
        let commit = crate::registry::http::Commit::UnlessServerError;
        let point = crate::mesh::Point::Request;
        crate::registry::http::invoke(
            &self.registry,
            &target.slot,
            request,
            ids,
            commit,
            None,
            point,
        )
        .await
        .map(|(response, _)| response)
        .map_err(|failure| failure_response(failure, &target.slot.id))
    }

    /// A 429 with what the client needs to come back at the right time.
    fn limited(&self, limited: Limited) -> ApiError {
        self.metrics.rate_limited(limited.limit_by);
        let retry =
            limited.retry_after.as_secs() + u64::from(limited.retry_after.subsec_nanos() > 0);
        let mut error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "RATE_LIMITED",
            format!(
                "too many requests (limit {}, counted by {}): retry in {} s",
                limited.standing.limit,
                limited.limit_by,
                retry.max(1)
            ),
        );
        error
            .headers
            .push((header::RETRY_AFTER, HeaderValue::from(retry.max(1))));
        error.headers.extend(rate_limit_headers(&limited.standing));
        error
    }

    /// Waits for the route's share of its component's slots, if it has one.
    async fn share(
        &self,
        target: &Target,
        path: &str,
    ) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, ApiError> {
        let Some(share) = self.shares.get(&*target.slot.id).and_then(|shares| {
            shares
                .iter()
                .find(|s| s.routes.iter().any(|r| r.matches(path).is_some()))
        }) else {
            return Ok(None);
        };
        let timeout = target.slot.stable().limits.timeout;
        match tokio::time::timeout(timeout, share.permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Some(permit)),
            _ => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "COMPONENT_BUSY",
                format!(
                    "component `{}` is at its limit of {} concurrent invocations for this route",
                    target.slot.id, share.max
                ),
            )
            .with_header(header::RETRY_AFTER, "1")),
        }
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
        verifier
            .verify(
                request
                    .headers()
                    .get(header::AUTHORIZATION)
                    .map(HeaderValue::as_bytes),
            )
            .map(Some)
            .map_err(|e| {
                ApiError::new(StatusCode::UNAUTHORIZED, e.code(), e.to_string())
                    .with_header(header::WWW_AUTHENTICATE, "Bearer")
            })
    }
}

/// The lower of two standings: the headers report the bucket closest to refusing.
fn tighter(a: Option<Standing>, b: Option<Standing>) -> Option<Standing> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.remaining < a.remaining { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` (whole seconds, rounded up).
fn rate_limit_headers(standing: &Standing) -> [(HeaderName, HeaderValue); 3] {
    let reset = standing.reset.as_secs() + u64::from(standing.reset.subsec_nanos() > 0);
    [
        (
            HeaderName::from_static("ratelimit-limit"),
            HeaderValue::from(standing.limit),
        ),
        (
            HeaderName::from_static("ratelimit-remaining"),
            HeaderValue::from(standing.remaining),
        ),
        (
            HeaderName::from_static("ratelimit-reset"),
            HeaderValue::from(reset),
        ),
    ]
}

/// Puts the normal form of the path into the request the component gets, so it reads the
/// same path the gateway routed, authorised and counted.
fn set_path(uri: &mut http::Uri, path: &str) {
    let path_and_query = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = http::uri::PathAndQuery::try_from(path_and_query).ok();
    if let Ok(normal) = http::Uri::from_parts(parts) {
        *uri = normal;
    }
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
