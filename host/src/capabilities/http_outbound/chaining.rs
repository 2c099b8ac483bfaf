//! Spin-style local service chaining: a request to `http://<component>.spin.internal/…`
//! is served by that component in this process, through the same invocation path as a
//! client's request (its own sandbox, unit of work and trace), without touching the
//! network. It is allowed only where `allowed_outbound_hosts` names the host, as in Spin.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use wasmtime_wasi_http::{Error as HttpError, WasiBody};

use crate::mesh::{self, Destination, Stopped};

/// The internal host suffix Spin reserves for chaining.
pub const INTERNAL_SUFFIX: &str = ".spin.internal";

/// Serves a chained request; implemented by the registry, which knows the components, and
/// handed to each invocation's Store.
#[async_trait::async_trait]
pub trait LocalService: Send + Sync {
    async fn call(
        self: Arc<Self>,
        component: &str,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, String>;
}

/// Hands a guest's CloudEvent to the invocation's outbox: a body over the sink's limit is
/// answered 413 without being read to its end.
pub async fn publish(
    events: Arc<dyn super::EventSink>,
    request: http::Request<WasiBody>,
) -> Result<http::Response<WasiBody>, HttpError> {
    let (parts, body) = request.into_parts();
    let limit = events.limit();
    let body = match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            let error = serde_json::json!({"error": {
                "code": "EVENT_TOO_LARGE",
                "message": format!("the event is larger than the limit of {limit} bytes"),
            }});
            let mut response = http::Response::new(Bytes::from(error.to_string()));
            *response.status_mut() = http::StatusCode::PAYLOAD_TOO_LARGE;
            return Ok(response.map(super::whole));
        }
        Err(e) => {
            return Err(HttpError::InternalError(Some(format!(
                "cannot read the event: {e}"
            ))));
        }
    };
    let response = events.accept(http::Request::from_parts(parts, body));
    Ok(response.map(super::whole))
}

/// Sends a guest's request to `component` in this process, under the call policy for it
/// if the manifest gives one.
pub async fn send(
    local: Arc<dyn LocalService>,
    component: &str,
    request: http::Request<WasiBody>,
    policy: Option<Arc<Destination>>,
    chaos: Option<super::Chaos>,
) -> Result<http::Response<WasiBody>, HttpError> {
    let internal = |m: String| HttpError::InternalError(Some(m));
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| internal(format!("cannot read the request body: {e:?}")))?
        .to_bytes();
    // One try: the faults aimed at this call first, then the component.
    let attempt = |request: http::Request<Bytes>| {
        let (local, chaos) = (local.clone(), chaos.clone());
        async move {
            match super::Chaos::strike(chaos.as_ref()).await {
                Some(answer) => Ok(answer),
                None => local.call(component, request).await,
            }
        }
    };
    let response = match policy {
        None => attempt(http::Request::from_parts(parts, body))
            .await
            .map_err(internal)?,
        Some(policy) => {
            let idempotent = mesh::retry::idempotent(&parts.method, &parts.headers);
            let sent = policy
                .call(idempotent, || {
                    attempt(http::Request::from_parts(parts.clone(), body.clone()))
                })
                .await;
            match sent {
                Ok(response) => response,
                Err(Stopped::Failed(error)) => return Err(internal(error)),
                Err(stopped) => mesh::answer(policy.host(), &stopped),
            }
        }
    };
    Ok(response.map(super::whole))
}
