//! One invocation: a fresh `Store` from the current version's pre-instantiated component,
//! run under the component's sandbox (memory limit, deadline, concurrency), with its
//! response streamed back while the guest writes it.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body as _, Frame};
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;
use tracing::Instrument as _;
use wasmtime::{Store, StoreLimitsBuilder, Trap, UpdateDeadline};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpView as _};

use super::{Body, BoxError, RequestIds};
use crate::capabilities::http_outbound::OutboundHttp;
use crate::capabilities::key_value::KvSession;
use crate::capabilities::sql::SqlSession;
use crate::components::{Slot, Version};
use crate::engine::Engine;
use crate::state::InvocationState;
use crate::telemetry::GuestOutput;

/// Why an invocation produced no usable response.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("is at its limit of {0} concurrent invocations")]
    Busy(u32),
    #[error("cannot start: the host is running as many instances as it can hold")]
    HostFull,
    #[error("did not finish within its {0} ms deadline")]
    Timeout(u128),
    #[error("ran out of memory (limit {0} MiB)")]
    OutOfMemory(usize),
    #[error("trapped: {0}")]
    Trapped(String),
    #[error("returned without sending a response")]
    NoResponse,
    #[error("failed: {0}")]
    Failed(String),
    #[error("answered with a body of {0} bytes, over its max_response_bytes of {1}")]
    ResponseTooLarge(u64, u64),
}

/// Raised by the epoch callback when the deadline passes inside wasm.
#[derive(Debug, thiserror::Error)]
#[error("deadline exceeded")]
struct DeadlineExceeded;

pub async fn invoke(
    engine: &Engine,
    slot: &Slot,
    request: Request<Full<Bytes>>,
    ids: &RequestIds,
) -> Result<Response<Body>, Failure> {
    let version = slot.current();
    let limits = version.limits;
    tracing::Span::current().record("version", short(&version.digest));
    // Waiting for a free slot is bounded by the same budget as running; a component that
    // stays saturated that long answers 503 rather than letting requests pile up.
    let permit =
        match tokio::time::timeout(limits.timeout, slot.permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            _ => return Err(Failure::Busy(limits.max_concurrency)),
        };
    let deadline = Instant::now() + limits.timeout;

    let mut store = new_store(engine, slot, &version, ids, deadline);
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
    let pre = version.pre.clone();
    let component = slot.id.clone();
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
            let result = match tokio::time::timeout_at(deadline, run).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(classify(e, &limits)),
                Err(_) => Err(Failure::Timeout(limits.timeout.as_millis())),
            };
            if let Err(failure) = &result {
                tracing::warn!(component = %component, "invocation {failure}");
            }
            result
        }
        .in_current_span(),
    );

    match receiver.await {
        Ok(Ok(response)) => capped(response, &slot.id, limits.max_response_bytes),
        Ok(Err(code)) => Err(Failure::Failed(format!("it answered with error {code:?}"))),
        Err(_) => match task.await {
            Ok(Ok(())) => Err(Failure::NoResponse),
            Ok(Err(failure)) => Err(failure),
            Err(join) => Err(Failure::Failed(format!(
                "the invocation task ended: {join}"
            ))),
        },
    }
}

/// A Store for one invocation: its limits, and a deadline that traps the guest once passed
/// and otherwise yields the worker thread every epoch tick, so a busy guest cannot starve
/// the others.
fn new_store(
    engine: &Engine,
    slot: &Slot,
    version: &Version,
    ids: &RequestIds,
    deadline: Instant,
) -> Store<InvocationState> {
    let mut store = Store::new(engine.wasmtime(), state(slot, version, ids));
    store.limiter(|s| &mut s.limits);
    store.set_epoch_deadline(1);
    let deadline = deadline.into_std();
    store.epoch_deadline_callback(move |_| {
        if std::time::Instant::now() >= deadline {
            Err(DeadlineExceeded.into())
        } else {
            Ok(UpdateDeadline::Yield(1))
        }
    });
    store
}

/// The Store's data for one invocation: cheap handles onto the version's load-time state.
fn state(slot: &Slot, version: &Version, ids: &RequestIds) -> InvocationState {
    let mut wasi = WasiCtxBuilder::new();
    wasi.envs(&version.environment)
        .stdout(GuestOutput::new(
            slot.id.clone(),
            ids.trace_id.clone(),
            "stdout",
        ))
        .stderr(GuestOutput::new(
            slot.id.clone(),
            ids.trace_id.clone(),
            "stderr",
        ));
    InvocationState {
        table: Default::default(),
        wasi: wasi.build(),
        http: WasiHttpCtx::new(),
        outbound: OutboundHttp {
            component: slot.id.clone(),
            allowed: version.allowed_hosts.clone(),
            traceparent: ids.traceparent.clone(),
        },
        sql: SqlSession::new(slot.id.clone(), version.databases.clone()),
        kv: KvSession::new(slot.id.clone(), version.stores.clone()),
        variables: version.variables.clone(),
        limits: StoreLimitsBuilder::new()
            .memory_size(version.limits.memory_bytes)
            .trap_on_grow_failure(true)
            .build(),
    }
}

fn classify(error: wasmtime::Error, limits: &crate::config::Limits) -> Failure {
    if error.downcast_ref::<DeadlineExceeded>().is_some()
        || error.downcast_ref::<Trap>() == Some(&Trap::Interrupt)
    {
        return Failure::Timeout(limits.timeout.as_millis());
    }
    if error
        .downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
        .is_some()
    {
        return Failure::HostFull;
    }
    let message = format!("{error:#}");
    if message.contains("forcing trap when growing memory") {
        return Failure::OutOfMemory(limits.memory_bytes >> 20);
    }
    match error.downcast_ref::<Trap>() {
        Some(trap) => Failure::Trapped(trap.to_string()),
        None => Failure::Failed(message),
    }
}

/// The first 12 hex digits of a digest, for logs and metrics.
pub fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

/// Applies `max_response_bytes`: refused up front when the length is declared, cut off (and
/// the connection reset) when a streamed body runs over.
fn capped(
    response: Response<HyperOutgoingBody>,
    component: &Arc<str>,
    limit: u64,
) -> Result<Response<Body>, Failure> {
    if let Some(declared) = response.body().size_hint().exact()
        && declared > limit
    {
        return Err(Failure::ResponseTooLarge(declared, limit));
    }
    Ok(response.map(|body| {
        CappedBody {
            inner: body,
            remaining: limit,
            limit,
            component: component.clone(),
            span: tracing::Span::current(),
        }
        .boxed_unsync()
    }))
}

struct CappedBody {
    inner: HyperOutgoingBody,
    remaining: u64,
    limit: u64,
    component: Arc<str>,
    /// The request's span: the body is sent after the handler returned.
    span: tracing::Span,
}

impl http_body::Body for CappedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        Poll::Ready(match frame {
            Some(Ok(frame)) => {
                let len = frame.data_ref().map_or(0, |d| d.len() as u64);
                if len > self.remaining {
                    let message = format!(
                        "component `{}` streamed more than its max_response_bytes of {}; cutting the response off",
                        self.component, self.limit
                    );
                    tracing::warn!(parent: &self.span, "{message}");
                    Some(Err(message.into()))
                } else {
                    self.remaining -= len;
                    Some(Ok(frame))
                }
            }
            Some(Err(e)) => Some(Err(Box::new(e))),
            None => None,
        })
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
