//! One HTTP invocation, for the gateway and for service chaining alike. The response is held
//! until the guest has finished and its unit of work has committed: a client never sees a
//! success whose writes or events could still be lost, and a server error (5xx) commits
//! nothing.
//!
//! A chained request (`http://<component>.spin.internal`, [`LocalService`]) skips the
//! gateway's auth (the caller is inside the app), continues the caller's trace, and gets the
//! callee's failures as the JSON errors a client would.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::{BodyExt, Full};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tracing::Instrument as _;
use wasmtime_wasi_http::WasiHttpView as _;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use super::invocation::{self, Failure, Trace};
use super::reuse::Lease;
use super::{Registry, Slot};
use crate::capabilities::http_outbound::LocalService;
use crate::mesh::Point;
use crate::mesh::fault::FAULT_HEADER;
use crate::response::{ApiError, Body};
use crate::state::{Finished, Outcome};
use crate::telemetry::otel;

/// The short digest of the version that produced a response.
pub const VERSION_HEADER: HeaderName = HeaderName::from_static("x-berth-version");
/// Carries the verified user id to the component; never taken from a client.
pub const USER_ID_HEADER: HeaderName = HeaderName::from_static("x-berth-user-id");
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// Who a request is, formatted once: for logs, error bodies, the guest's headers, the
/// response, and every outbound call the guest makes.
pub struct RequestIds {
    pub request_id: HeaderValue,
    /// 32 hex digits.
    pub trace_id: Arc<str>,
    /// This hop's W3C `traceparent`.
    pub traceparent: HeaderValue,
}

/// When an HTTP invocation's unit of work commits.
pub enum Commit {
    /// A request's: unless the response is a server error (5xx).
    UnlessServerError,
    /// An event's: only on a success (2xx), with the event's message id recorded in the
    /// component's inbox in the same transaction.
    OnSuccess { inbox: String },
}

/// Runs `request` on the component's current version (the canary for its share), and
/// says how its unit of work ended. Without a `permit` it waits for one of the component's
/// slots. A fault injected on the component for this `point` acts first.
pub async fn invoke(
    registry: &Arc<Registry>,
    slot: &Slot,
    request: Request<Full<Bytes>>,
    ids: &RequestIds,
    commit: Commit,
    permit: Option<OwnedSemaphorePermit>,
    point: Point,
) -> Result<(Response<Body>, Finished), Failure> {
    let span = invocation::span(slot);
    if otel::recording()
        && let Some(route) = request.headers().get("spin-matched-route")
        && let Ok(route) = route.to_str()
    {
        span.record("http.route", route);
    }
    // What the guest calls and publishes names the invocation as its parent.
    let own;
    let ids = if otel::recording() {
        own = RequestIds {
            request_id: ids.request_id.clone(),
            trace_id: ids.trace_id.clone(),
            traceparent: otel::traceparent(&span, &ids.traceparent),
        };
        &own
    } else {
        ids
    };
    let faults = registry.faults();
    let injected = if faults.is_empty() {
        None
    } else {
        faults
            .inbound(&slot.id, request.uri().path(), point)
            .instrument(span.clone())
            .await
    };
    let result = match injected {
        Some(injected) => {
            let mut response = ApiError::new(injected.status, "FAULT_INJECTED", injected.message())
                .into_response(&ids.trace_id);
            if let Ok(id) = HeaderValue::from_str(&injected.fault) {
                response.headers_mut().insert(FAULT_HEADER, id);
            }
            Ok((response, Finished::RolledBack))
        }
        None => {
            run(registry, slot, request, ids, commit, permit)
                .instrument(span.clone())
                .await
        }
    };
    match &result {
        Ok((response, _)) => {
            let status = response.status();
            span.record("http.response.status_code", status.as_u16());
            if status.is_server_error() {
                span.record("otel.status_code", "error");
            }
        }
        Err(failure) => invocation::record_failure(&span, failure),
    }
    result
}

async fn run(
    registry: &Arc<Registry>,
    slot: &Slot,
    request: Request<Full<Bytes>>,
    ids: &RequestIds,
    commit: Commit,
    permit: Option<OwnedSemaphorePermit>,
) -> Result<(Response<Body>, Finished), Failure> {
    let version = slot.current();
    let limits = version.limits;
    tracing::Span::current().record("berth.version", short(&version.digest));
    let Some(pre) = version.http.clone() else {
        return Err(Failure::Failed(
            "does not export wasi:http/incoming-handler".into(),
        ));
    };
    let permit = match permit {
        Some(permit) => permit,
        None => invocation::acquire(slot, &limits).await?,
    };
    let deadline = Instant::now() + limits.timeout;
    let trace = Trace {
        trace_id: &ids.trace_id,
        traceparent: &ids.traceparent,
    };
    let fresh = || invocation::new_store(registry, slot, &version, trace, deadline);
    let mut lease = match &version.instances {
        Some(pool) => pool.lease(fresh, |store| {
            invocation::renew_store(store, registry, slot, &version, trace, deadline);
        }),
        None => Lease::fresh(fresh()),
    };
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let (guest_request, outparam) = {
        let mut http = lease.store.data_mut().http();
        let req = http
            .new_incoming_request(Scheme::Http, request)
            .map_err(|e| Failure::Failed(format!("{e:#}")))?;
        let out = http
            .new_response_outparam(sender)
            .map_err(|e| Failure::Failed(format!("{e:#}")))?;
        (req, out)
    };
    let only_on_success = matches!(commit, Commit::OnSuccess { .. });
    // Whether to commit, decided once the whole response is in hand.
    let (decide, decision) = tokio::sync::oneshot::channel::<bool>();
    let component = slot.id.clone();
    let trace_id = ids.trace_id.clone();
    let kept_by = version.clone();
    let task = tokio::spawn(
        async move {
            let _permit = permit;
            let run = async {
                let proxy = match lease.bindings.take() {
                    Some(proxy) => proxy,
                    None => pre.instantiate_async(&mut lease.store).await?,
                };
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut lease.store, guest_request, outparam)
                    .await?;
                wasmtime::Result::Ok(proxy)
            };
            let result = tokio::time::timeout_at(deadline, run).await;
            let failure = match result {
                Ok(Ok(proxy)) => {
                    let outcome = match (decision.await, &commit) {
                        (Ok(true), Commit::UnlessServerError) => Outcome::Commit { inbox: None },
                        (Ok(true), Commit::OnSuccess { inbox }) => Outcome::Commit {
                            inbox: Some(inbox.as_str()),
                        },
                        _ => Outcome::Rollback,
                    };
                    let clean = matches!(outcome, Outcome::Commit { .. });
                    let finished = invocation::finish(&mut lease.store, outcome).await;
                    // Only an instance whose request ended cleanly may serve another.
                    if clean
                        && finished.is_ok()
                        && let Some(pool) = &kept_by.instances
                    {
                        lease.bindings = Some(proxy);
                        pool.keep(lease);
                    }
                    return finished;
                }
                Ok(Err(e)) => invocation::classify(e, &limits, lease.store.data().limits.exceeded),
                Err(_) => Failure::Timeout(limits.timeout.as_millis()),
            };
            tracing::warn!(component = %component, trace_id = %trace_id, "invocation {failure}");
            invocation::finish(&mut lease.store, Outcome::Rollback).await?;
            Err(failure)
        }
        .in_current_span(),
    );
    let outcome = |task: tokio::task::JoinHandle<Result<Finished, Failure>>| async move {
        match task.await {
            Ok(result) => result,
            Err(join) => Err(Failure::Failed(format!(
                "the invocation task ended: {join}"
            ))),
        }
    };

    let response = match receiver.await {
        Ok(Ok(response)) => response,
        Ok(Err(code)) => {
            drop(decide);
            outcome(task).await?;
            return Err(Failure::Failed(format!("it answered with error {code:?}")));
        }
        Err(_) => {
            drop(decide);
            outcome(task).await?;
            return Err(Failure::NoResponse);
        }
    };
    let (parts, body) = response.into_parts();
    let body = match collect(body, limits.max_response_bytes).await {
        Ok(body) => body,
        Err(failure) => {
            drop(decide);
            // A guest that trapped or timed out mid-body says more than the broken body.
            outcome(task).await?;
            return Err(failure);
        }
    };
    let _ = decide.send(if only_on_success {
        parts.status.is_success()
    } else {
        !parts.status.is_server_error()
    });
    let finished = outcome(task).await?;
    let mut response = Response::from_parts(
        parts,
        Full::new(body)
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    // Which version answered: a canary's traffic can be told apart from the outside.
    if let Ok(value) = http::HeaderValue::from_str(short(&version.digest)) {
        response.headers_mut().insert(VERSION_HEADER, value);
    }
    Ok((response, finished))
}

/// The whole response body, up to `max_response_bytes`.
async fn collect(mut body: HyperOutgoingBody, limit: u64) -> Result<Bytes, Failure> {
    if let Some(declared) = body.size_hint().exact()
        && declared > limit
    {
        return Err(Failure::ResponseTooLarge(declared, limit));
    }
    let mut buffer = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Failure::Failed(format!("its response body broke: {e}")))?;
        if let Ok(data) = frame.into_data() {
            let total = (buffer.len() + data.len()) as u64;
            if total > limit {
                return Err(Failure::ResponseTooLarge(total, limit));
            }
            buffer.extend_from_slice(&data);
        }
    }
    Ok(buffer.freeze())
}

/// The first 12 hex digits of a digest, for logs and metrics.
pub fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

#[async_trait::async_trait]
impl LocalService for Registry {
    async fn call(
        self: Arc<Self>,
        component: &str,
        request: Request<Bytes>,
    ) -> Result<Response<Bytes>, String> {
        let slot = self
            .get(component)
            .filter(|s| s.stable().http.is_some())
            .ok_or_else(|| {
                format!("no component `{component}` serves HTTP in this app (called as http://{component}.spin.internal)")
            })?
            .clone();
        // Events come from the host alone: a component cannot forge one for another.
        if slot.receives_events_at(request.uri().path()) {
            return Err(format!(
                "{} is where `{component}` receives events, which only the host sends",
                request.uri().path()
            ));
        }
        if request.body().len() as u64 > self.max_request_bytes {
            return Err(format!(
                "the request body is larger than the limit of {} bytes",
                self.max_request_bytes
            ));
        }
        let span = tracing::debug_span!(
            "chained",
            otel.name = %format_args!("{} {}", request.method(), request.uri().path()),
            otel.kind = "server",
            http.request.method = %request.method(),
            url.path = %request.uri().path(),
            berth.component = component,
        );
        let trace = otel::hop(
            &span,
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
        let (mut parts, body) = request.into_parts();
        chained_headers(&mut parts, &ids);
        let request = Request::from_parts(parts, Full::new(body));
        let invoked = invoke(
            &self,
            &slot,
            request,
            &ids,
            Commit::UnlessServerError,
            None,
            Point::Chained,
        );
        let response = match invoked.instrument(span).await {
            Ok((response, _)) => response,
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
pub fn strip_host_headers(headers: &mut http::HeaderMap) {
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
pub(crate) fn chained_headers(parts: &mut http::request::Parts, ids: &RequestIds) {
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

/// A failed invocation as the JSON error its caller gets.
pub fn failure_response(failure: Failure, component: &str) -> ApiError {
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
        Failure::DatabaseUnavailable(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "DATABASE_UNAVAILABLE",
            message,
        )
        .with_header(header::RETRY_AFTER, "1"),
        Failure::Trapped(_)
        | Failure::NoResponse
        | Failure::Failed(_)
        | Failure::Handler(_)
        | Failure::Rejected(_) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "COMPONENT_FAILED",
            message,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_answers_with_its_status_and_code() {
        for (failure, status, code) in [
            (Failure::Busy(4), 503, "COMPONENT_BUSY"),
            (Failure::HostFull, 503, "COMPONENT_BUSY"),
            (Failure::Timeout(100), 504, "COMPONENT_TIMEOUT"),
            (Failure::OutOfMemory(64), 500, "COMPONENT_OUT_OF_MEMORY"),
            (Failure::ResponseTooLarge(10, 5), 500, "RESPONSE_TOO_LARGE"),
            (Failure::Commit("locked".into()), 503, "COMMIT_FAILED"),
            (
                Failure::DatabaseUnavailable("connection reset".into()),
                503,
                "DATABASE_UNAVAILABLE",
            ),
            (
                Failure::Trapped("unreachable".into()),
                500,
                "COMPONENT_FAILED",
            ),
            (Failure::NoResponse, 500, "COMPONENT_FAILED"),
        ] {
            let error = failure_response(failure, "order");
            assert_eq!((error.status.as_u16(), error.code), (status, code));
            assert!(
                error.message.starts_with("component `order` "),
                "{}",
                error.message
            );
            let retry = error.headers.iter().any(|(n, _)| n == header::RETRY_AFTER);
            assert_eq!(retry, status == 503, "{code}: Retry-After only when busy");
        }
    }

    #[test]
    fn host_headers_never_come_from_the_caller() {
        let mut headers = http::HeaderMap::new();
        headers.insert(USER_ID_HEADER, HeaderValue::from_static("forged"));
        headers.insert("spin-path-info", HeaderValue::from_static("/forged"));
        headers.insert("authorization", HeaderValue::from_static("Bearer t"));
        strip_host_headers(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("authorization"));
        assert_eq!(short("sha256:0123456789abcdef"), "0123456789ab");
    }
}
