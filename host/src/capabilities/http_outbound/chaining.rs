//! Spin-style local service chaining: a request to `http://<component>.spin.internal/…`
//! is served by that component in this process, through the same invocation path as a
//! client's request (its own sandbox, unit of work and trace), without touching the
//! network. It is allowed only where `allowed_outbound_hosts` names the host, as in Spin.

use std::sync::{OnceLock, Weak};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use wasmtime_wasi_http::{Error as HttpError, WasiBody};

/// The internal host suffix Spin reserves for chaining.
pub const INTERNAL_SUFFIX: &str = ".spin.internal";

/// Serves a chained request; implemented by the gateway, which knows the components.
#[async_trait::async_trait]
pub trait LocalService: Send + Sync {
    async fn call(
        &self,
        component: &str,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, String>;
}

/// The app's link to its own components, set once they are loaded.
#[derive(Default)]
pub struct Chaining {
    /// Weak: the components hold this.
    local: OnceLock<Weak<dyn LocalService>>,
}

impl Chaining {
    pub fn connect(&self, local: Weak<dyn LocalService>) {
        let _ = self.local.set(local);
    }

    pub async fn send(
        &self,
        component: &str,
        request: http::Request<WasiBody>,
    ) -> Result<http::Response<WasiBody>, HttpError> {
        let internal = |m: String| HttpError::InternalError(Some(m));
        let local = self
            .local
            .get()
            .and_then(Weak::upgrade)
            .ok_or_else(|| internal("the host is not serving components yet".into()))?;
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
}
