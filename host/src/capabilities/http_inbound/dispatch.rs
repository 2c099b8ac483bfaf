//! One HTTP invocation. The response is held until the guest has finished and its unit of
//! work has committed: a client never sees a success whose writes or events could still be
//! lost, and a server error (5xx) commits nothing.

use bytes::{Bytes, BytesMut};
use http::{Request, Response};
use http_body::Body as _;
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;
use tracing::Instrument as _;
use wasmtime_wasi_http::WasiHttpView as _;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use super::{Body, RequestIds};
use crate::components::Slot;
use crate::components::invocation::{self, Failure, Trace};
use crate::engine::Engine;
use crate::state::Outcome;

/// The short digest of the version that produced a response.
pub const VERSION_HEADER: http::HeaderName = http::HeaderName::from_static("x-berth-version");

pub async fn invoke(
    engine: &Engine,
    slot: &Slot,
    request: Request<Full<Bytes>>,
    ids: &RequestIds,
) -> Result<Response<Body>, Failure> {
    let version = slot.current();
    let limits = version.limits;
    tracing::Span::current().record("version", short(&version.digest));
    let Some(pre) = version.http.clone() else {
        return Err(Failure::Failed(
            "does not export wasi:http/incoming-handler".into(),
        ));
    };
    let permit = invocation::acquire(slot, &limits).await?;
    let deadline = Instant::now() + limits.timeout;
    let trace = Trace {
        trace_id: &ids.trace_id,
        traceparent: &ids.traceparent,
    };
    let mut store = invocation::new_store(engine, slot, &version, trace, deadline);
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let (guest_request, outparam) = {
        let mut http = store.data_mut().http();
        let req = http
            .new_incoming_request(Scheme::Http, request)
            .map_err(|e| Failure::Failed(format!("{e:#}")))?;
        let out = http
            .new_response_outparam(sender)
            .map_err(|e| Failure::Failed(format!("{e:#}")))?;
        (req, out)
    };
    // Whether to commit, decided once the whole response is in hand.
    let (decide, decision) = tokio::sync::oneshot::channel::<bool>();
    let component = slot.id.clone();
    let trace_id = ids.trace_id.clone();
    let task = tokio::spawn(
        async move {
            let _permit = permit;
            let run = async {
                let proxy = pre.instantiate_async(&mut store).await?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, guest_request, outparam)
                    .await
            };
            let result = tokio::time::timeout_at(deadline, run).await;
            let failure = match result {
                Ok(Ok(())) => {
                    let outcome = match decision.await {
                        Ok(true) => Outcome::Commit { inbox: None },
                        _ => Outcome::Rollback,
                    };
                    return invocation::finish(&mut store, outcome).await.map(drop);
                }
                Ok(Err(e)) => invocation::classify(e, &limits, store.data().limits.exceeded),
                Err(_) => Failure::Timeout(limits.timeout.as_millis()),
            };
            tracing::warn!(component = %component, trace_id = %trace_id, "invocation {failure}");
            invocation::finish(&mut store, Outcome::Rollback).await?;
            Err(failure)
        }
        .in_current_span(),
    );
    let outcome = |task: tokio::task::JoinHandle<Result<(), Failure>>| async move {
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
    let _ = decide.send(!parts.status.is_server_error());
    outcome(task).await?;
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
    Ok(response)
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
