//! One invocation of a component version, whatever triggered it: a fresh `Store` from the
//! version's pre-instantiated component, run under the component's sandbox (memory limit,
//! deadline, concurrency), its unit of work committed only if it succeeded.

use std::sync::Arc;

use http::HeaderValue;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tracing::Instrument as _;
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi_http::WasiHttpCtx;

use super::{Registry, Slot, Version};
use crate::bindings::messaging_types::BrokerMessage;
use crate::capabilities::http_outbound::OutboundHttp;
use crate::capabilities::key_value::KvSession;
use crate::capabilities::messaging::subject::matches_any;
use crate::capabilities::messaging::{Message, MessagingSession, Published, Responder};
use crate::capabilities::sql::SqlError;
use crate::capabilities::sql::SqlSession;
use crate::config::Limits;
use crate::state::{Finished, GuestLimits, InvocationState, Outcome};
use crate::telemetry::{GuestOutput, TraceContext, otel};

/// Why an invocation produced no usable result.
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
    #[error("returned an error: {0}")]
    Handler(String),
    /// An event its handler will never take (a 4xx other than 408 and 429): retrying
    /// cannot help.
    #[error("refused the event: {0}")]
    Rejected(String),
    #[error("could not commit its writes: {0}")]
    Commit(String),
    /// Its database could not be reached or was lost mid-invocation: nothing committed,
    /// and trying again later may succeed.
    #[error("could not reach its database: {0}")]
    DatabaseUnavailable(String),
}

/// The span of one invocation: a child of its trigger's (the request, the chained call, the
/// delivery). Debug level, like the request's, so the log formats nothing per invocation.
pub fn span(slot: &Slot) -> tracing::Span {
    tracing::debug_span!(
        "invoke",
        otel.name = %format_args!("invoke {}", slot.id),
        otel.status_code = tracing::field::Empty,
        berth.component = %slot.id,
        berth.version = tracing::field::Empty,
        http.route = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
    )
}

/// Marks the invocation's span failed, with the kind of failure (never its text, which may
/// quote what the guest was given).
pub fn record_failure(span: &tracing::Span, failure: &Failure) {
    span.record("otel.status_code", "error");
    span.record("error.type", failure.kind());
}

impl Failure {
    /// A stable name for the kind of failure, for spans and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::Busy(_) => "busy",
            Failure::HostFull => "host_full",
            Failure::Timeout(_) => "timeout",
            Failure::OutOfMemory(_) => "out_of_memory",
            Failure::Trapped(_) => "trap",
            Failure::NoResponse => "no_response",
            Failure::Failed(_) => "failed",
            Failure::ResponseTooLarge(..) => "response_too_large",
            Failure::Handler(_) => "handler_error",
            Failure::Rejected(_) => "rejected",
            Failure::Commit(_) => "commit",
            Failure::DatabaseUnavailable(_) => "database_unavailable",
        }
    }
}

/// Raised by the epoch callback when the deadline passes inside wasm.
#[derive(Debug, thiserror::Error)]
#[error("deadline exceeded")]
struct DeadlineExceeded;

/// The trace an invocation belongs to, formatted once by its trigger.
#[derive(Clone, Copy)]
pub struct Trace<'a> {
    /// 32 hex digits.
    pub trace_id: &'a Arc<str>,
    /// This hop's W3C `traceparent`.
    pub traceparent: &'a HeaderValue,
}

/// Waits for a free slot of the component, for at most its timeout: a component that stays
/// saturated that long fails the work rather than letting it pile up.
pub async fn acquire(slot: &Slot, limits: &Limits) -> Result<OwnedSemaphorePermit, Failure> {
    match tokio::time::timeout(limits.timeout, slot.permits.clone().acquire_owned()).await {
        Ok(Ok(permit)) => Ok(permit),
        _ => Err(Failure::Busy(limits.max_concurrency)),
    }
}

/// A Store for one invocation: its limits, and a deadline that traps the guest once passed
/// and otherwise yields the worker thread every epoch tick, so a busy guest cannot starve
/// the others.
pub fn new_store(
    registry: &Arc<Registry>,
    slot: &Slot,
    version: &Version,
    trace: Trace<'_>,
    deadline: Instant,
) -> Store<InvocationState> {
    let state = state(registry, slot, version, trace);
    let mut store = Store::new(registry.engine().wasmtime(), state);
    store.limiter(|s| &mut s.limits);
    set_deadline(&mut store, deadline);
    store
}

/// Readies the Store of a kept instance ([`super::reuse`]) for its next invocation: what the
/// host gives one invocation is made anew, as in [`new_store`]; the guest's resource table,
/// its WASI context and what its memory has grown to stay with the instance.
pub fn renew_store(
    store: &mut Store<InvocationState>,
    registry: &Arc<Registry>,
    slot: &Slot,
    version: &Version,
    trace: Trace<'_>,
    deadline: Instant,
) {
    let state = store.data_mut();
    Work::new(registry, slot, version, trace).install(state);
    state.output.attribute(trace.trace_id.clone());
    set_deadline(store, deadline);
}

fn set_deadline(store: &mut Store<InvocationState>, deadline: Instant) {
    store.set_epoch_deadline(1);
    let deadline = deadline.into_std();
    store.epoch_deadline_callback(move |_| {
        if std::time::Instant::now() >= deadline {
            Err(DeadlineExceeded.into())
        } else {
            Ok(UpdateDeadline::Yield(1))
        }
    });
}

/// The Store's data for one invocation: cheap handles onto the version's load-time state,
/// and the registry, through which the guest reaches the other components.
fn state(
    registry: &Arc<Registry>,
    slot: &Slot,
    version: &Version,
    trace: Trace<'_>,
) -> InvocationState {
    let (stdout, stderr) = GuestOutput::pair(slot.id.clone(), trace.trace_id.clone());
    let mut wasi = WasiCtxBuilder::new();
    wasi.envs(&version.environment)
        .stdout(stdout.clone())
        .stderr(stderr);
    let Work {
        outbound,
        sql,
        kv,
        messaging,
    } = Work::new(registry, slot, version, trace);
    InvocationState {
        table: Default::default(),
        wasi: wasi.build(),
        http: WasiHttpCtx::new(),
        outbound,
        sql,
        kv,
        messaging,
        variables: version.variables.clone(),
        limits: GuestLimits::new(version.limits.memory_bytes),
        output: stdout,
    }
}

/// What the host gives one invocation, whether its instance is fresh or kept: its unit of
/// work (database transaction, outbox), its calls out, all in its trace.
struct Work {
    outbound: OutboundHttp,
    sql: SqlSession,
    kv: KvSession,
    messaging: MessagingSession,
}

impl Work {
    fn new(registry: &Arc<Registry>, slot: &Slot, version: &Version, trace: Trace<'_>) -> Work {
        let published = Arc::new(Published::new(
            slot.id.clone(),
            slot.source.clone(),
            version.publishes.clone(),
            trace.traceparent.clone(),
        ));
        Work {
            outbound: OutboundHttp {
                component: slot.id.clone(),
                allowed: version.allowed_hosts.clone(),
                traceparent: trace.traceparent.clone(),
                local: registry.clone(),
                events: published.clone(),
                calls: slot.calls.clone(),
                faults: registry.faults().clone(),
            },
            sql: SqlSession::new(
                slot.id.clone(),
                version.databases.clone(),
                version.primary_database.clone(),
            ),
            kv: KvSession::new(slot.id.clone(), version.stores.clone()),
            messaging: MessagingSession::new(
                version.messaging.clone(),
                published,
                trace.traceparent.clone(),
                slot.relay.clone(),
                registry.clone(),
            ),
        }
    }

    /// Replaces a kept instance's unit of work with this one, and its wasi-http context
    /// with a new one.
    fn install(self, state: &mut InvocationState) {
        state.http = WasiHttpCtx::new();
        state.outbound = self.outbound;
        state.sql = self.sql;
        state.kv = self.kv;
        state.messaging = self.messaging;
    }
}

/// Why an invocation that returned `error` failed. `out_of_memory` is what the Store's
/// [`GuestLimits`] saw.
pub fn classify(error: wasmtime::Error, limits: &Limits, out_of_memory: bool) -> Failure {
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
    if out_of_memory {
        return Failure::OutOfMemory(limits.memory_bytes >> 20);
    }
    let message = format!("{error:#}");
    match error.downcast_ref::<Trap>() {
        Some(trap) => Failure::Trapped(trap.to_string()),
        None => Failure::Failed(message),
    }
}

/// Ends the unit of work of a finished invocation.
pub async fn finish(
    store: &mut Store<InvocationState>,
    outcome: Outcome<'_>,
) -> Result<Finished, Failure> {
    store.data_mut().finish(outcome).await.map_err(|e| match e {
        SqlError::Unavailable(reason) => Failure::DatabaseUnavailable(reason),
        SqlError::Statement(reason) => Failure::Commit(reason),
    })
}

/// Runs the current version's message handler on `message`, and commits what it wrote and
/// published, with `message.id` recorded in its inbox when `inbox` (an event; a request's
/// message is not redelivered, so it is not recorded). `trace` is the delivery's.
pub async fn handle_message(
    registry: &Arc<Registry>,
    slot: &Slot,
    permit: OwnedSemaphorePermit,
    message: &Message,
    reply_to: Option<String>,
    inbox: bool,
    trace: TraceContext,
) -> Result<Finished, Failure> {
    let span = span(slot);
    let trace = otel::child(&span, trace);
    let result = run_handler(registry, slot, permit, message, reply_to, inbox, trace)
        .instrument(span.clone())
        .await;
    if let Err(failure) = &result {
        record_failure(&span, failure);
    }
    result
}

async fn run_handler(
    registry: &Arc<Registry>,
    slot: &Slot,
    permit: OwnedSemaphorePermit,
    message: &Message,
    reply_to: Option<String>,
    inbox: bool,
    trace: TraceContext,
) -> Result<Finished, Failure> {
    let _permit = permit;
    let version = slot.current();
    tracing::Span::current().record("berth.version", super::http::short(&version.digest));
    let Some(handler) = &version.handler else {
        return Err(Failure::Failed(
            "does not export wasmcloud:messaging/handler@0.2.0".into(),
        ));
    };
    let limits = version.limits;
    let trace_id: Arc<str> = trace.trace_id_hex().into();
    let traceparent = trace.header();
    let deadline = Instant::now() + limits.timeout;
    let mut store = new_store(
        registry,
        slot,
        &version,
        Trace {
            trace_id: &trace_id,
            traceparent: &traceparent,
        },
        deadline,
    );
    let msg = BrokerMessage {
        subject: message.subject.clone(),
        body: message.body.clone(),
        reply_to,
    };
    let run = async {
        let instance = handler.instantiate_async(&mut store).await?;
        instance
            .wasmcloud_messaging_handler()
            .call_handle_message(&mut store, &msg)
            .await
    };
    let result = tokio::time::timeout_at(deadline, run).await;
    let failure = match result {
        Ok(Ok(Ok(()))) => {
            let outcome = Outcome::Commit {
                inbox: inbox.then_some(message.id.as_str()),
            };
            return finish(&mut store, outcome).await;
        }
        Ok(Ok(Err(e))) => Failure::Handler(e),
        Ok(Err(e)) => classify(e, &limits, store.data().limits.exceeded),
        Err(_) => Failure::Timeout(limits.timeout.as_millis()),
    };
    finish(&mut store, Outcome::Rollback).await?;
    Err(failure)
}

/// Request-reply (`consumer.request`): the first local component subscribed to the subject
/// answers, through the same invocation path as a delivered message.
#[async_trait::async_trait]
impl Responder for Registry {
    async fn respond(self: Arc<Self>, message: Message, reply_to: String) -> Result<(), String> {
        let slot = self
            .iter()
            .find(|slot| matches_any(&slot.subscriptions, &message.subject))
            .ok_or_else(|| format!("no component subscribes to `{}`", message.subject))?
            .clone();
        let limits = slot.stable().limits;
        let permit = acquire(&slot, &limits)
            .await
            .map_err(|f| format!("component `{}` {f}", slot.id))?;
        let trace =
            TraceContext::continue_or_start(message.traceparent.as_deref().map(str::as_bytes));
        handle_message(&self, &slot, permit, &message, Some(reply_to), false, trace)
            .await
            .map(drop)
            .map_err(|f| format!("component `{}` {f}", slot.id))
    }
}
