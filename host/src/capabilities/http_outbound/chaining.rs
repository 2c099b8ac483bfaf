//! Spin-style local service chaining: a request to `http://<component>.spin.internal/…`
//! is served by that component in this process, through the same invocation path as a
//! client's request (its own sandbox, unit of work and trace), without touching the
//! network. It is allowed only where `allowed_outbound_hosts` names the host, as in Spin.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use wasmtime_wasi_http::{Error as HttpError, WasiBody};

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

/// Sends a guest's request to `component` in this process.
pub async fn send(
    local: Arc<dyn LocalService>,
    component: &str,
    request: http::Request<WasiBody>,
) -> Result<http::Response<WasiBody>, HttpError> {
    let internal = |m: String| HttpError::InternalError(Some(m));
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| internal(format!("cannot read the request body: {e:?}")))?
        .to_bytes();
    let response = local
        .call(component, http::Request::from_parts(parts, body))
        .await
        .map_err(internal)?;
    Ok(response.map(|b| Full::new(b).map_err(|never| match never {}).boxed_unsync()))
}
