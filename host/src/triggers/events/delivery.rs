//! Delivery: each subscribing component's consumer group takes messages from the bus and
//! runs the component's current version on each, under the same sandbox and concurrency
//! limit as its HTTP requests: as a CloudEvent POSTed to the subscription's route (binary
//! mode), or through its `wasmcloud:messaging/handler` export. A message already in the
//! component's inbox is acknowledged without running anything. A 2xx commits the handler's
//! work with the message id in its inbox; a 5xx, 408, 429, handler error, trap or timeout
//! rolls it back and the message is retried with exponential backoff and jitter, then
//! dead-lettered; any other status dead-letters it at once, with the response as the reason.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt as _, Full};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::capabilities::messaging::backoff::{self, REDELIVERY};
use crate::capabilities::messaging::subject::matches_any;
use crate::capabilities::messaging::{
    Bus, BusError, Delivery, Message, SubscribeOptions, Subscription, cloudevents, outbox,
};
use crate::capabilities::sql::Database;
use crate::config::Messaging;
use crate::mesh::Point;
use crate::mesh::fault::Injected;
use crate::registry::http::{Commit, RequestIds, chained_headers, invoke};
use crate::registry::invocation::{self, Failure};
use crate::registry::{Registry, Slot};
use crate::state::Finished;
use crate::telemetry::{TraceContext, otel};

/// Time a delivery may stay unsettled beyond the handler's deadline before the bus hands
/// it out again.
const LEASE_MARGIN: Duration = Duration::from_secs(30);

/// One component's consumer group.
pub struct Consumer {
    slot: Arc<Slot>,
    registry: Arc<Registry>,
    bus: Arc<dyn Bus>,
    group: String,
    /// Where each subscription's events go, resolved once.
    targets: Vec<Target>,
    /// `/<app>`: the source of events made from plain `wasmcloud:messaging` messages.
    app_source: String,
    max_attempts: u32,
    /// The component's database that holds its inbox.
    inbox: Arc<dyn Database>,
}

/// Events of some types, and where they go: the URI of an HTTP route, or (`None`) the
/// `wasmcloud:messaging/handler` export.
#[derive(Debug)]
struct Target {
    events: Vec<String>,
    uri: Option<Uri>,
}

impl Consumer {
    pub fn new(
        slot: Arc<Slot>,
        registry: Arc<Registry>,
        bus: Arc<dyn Bus>,
        messaging: &Messaging,
        app: &str,
        inbox: Arc<dyn Database>,
    ) -> Consumer {
        let targets = messaging
            .subscriptions
            .iter()
            .map(|s| Target {
                events: s.events.clone(),
                uri: s.route.as_ref().and_then(|route| {
                    Uri::try_from(format!("http://{}{EVENTS_AUTHORITY}{route}", slot.id)).ok()
                }),
            })
            .collect();
        Consumer {
            slot,
            registry,
            bus,
            group: messaging.consumer_group.clone(),
            targets,
            app_source: format!("/{app}"),
            max_attempts: messaging.max_delivery_attempts,
            inbox,
        }
    }

    fn options(&self) -> SubscribeOptions {
        SubscribeOptions {
            lease: self.slot.stable().limits.timeout + LEASE_MARGIN,
            batch: (self.slot.permits.available_permits()).clamp(1, 64),
        }
    }

    /// Registers the group with the bus. The host does this before it serves, so that no
    /// event published by its first requests misses a group that was not registered yet.
    pub async fn subscribe(&self) -> Result<Box<dyn Subscription>, BusError> {
        let patterns: Vec<String> = self
            .targets
            .iter()
            .flat_map(|s| s.events.iter().cloned())
            .collect();
        self.bus
            .subscribe(&self.group, &patterns, self.options())
            .await
    }

    /// Delivers until `stop` is cancelled; deliveries already running finish on their own.
    /// Without a `first` subscription (the bus was unreachable at start) it keeps trying.
    pub async fn run(self, first: Option<Box<dyn Subscription>>, stop: CancellationToken) {
        let this = Arc::new(self);
        let mut waits = backoff::RECONNECT.waits();
        let mut subscription = match first {
            Some(s) => s,
            None => loop {
                match this.subscribe().await {
                    Ok(s) => break s,
                    Err(e) => {
                        tracing::warn!(component = %this.slot.id, group = %this.group, "cannot subscribe yet: {e}");
                        let wait = waits.next().unwrap_or(Duration::from_secs(5));
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            () = stop.cancelled() => return,
                        }
                    }
                }
            },
        };
        tracing::info!(component = %this.slot.id, group = %this.group, targets = ?this.targets, "subscribed");
        loop {
            let delivery = tokio::select! {
                d = subscription.next() => d,
                () = stop.cancelled() => return,
            };
            let Some(delivery) = delivery else {
                return;
            };
            let permit = tokio::select! {
                p = this.slot.permits.clone().acquire_owned() => p,
                () = stop.cancelled() => return,
            };
            let Ok(permit) = permit else {
                return;
            };
            let this = this.clone();
            tokio::spawn(async move { this.deliver(delivery, permit).await });
        }
    }

    async fn deliver(&self, delivery: Delivery, permit: OwnedSemaphorePermit) {
        let Delivery {
            message,
            attempt,
            settle,
        } = delivery;
        // A consumer span under the invocation that published the message, so a saga is
        // one trace from the first request to the last event.
        let span = tracing::info_span!(
            "deliver",
            otel.name = %format_args!("{} process", message.subject),
            otel.kind = "consumer",
            otel.status_code = tracing::field::Empty,
            messaging.operation.type = "process",
            messaging.destination.name = %message.subject,
            messaging.message.id = %message.id,
            messaging.consumer.group.name = %self.group,
            berth.delivery.attempt = attempt,
            berth.component = %self.slot.id,
        );
        let trace = otel::hop(&span, message.traceparent.as_deref().map(str::as_bytes));
        async {
            let result = match outbox::was_handled(&self.inbox, &message.id).await {
                Ok(true) => Ok(Finished::Duplicate),
                Ok(false) => match self.route_of(&message.subject) {
                    Some(uri) => self.post(uri.clone(), &message, permit, trace).await,
                    None => match self.injected().await {
                        Some(injected) => Err(failure(injected.status, injected.message())),
                        None => {
                            invocation::handle_message(
                                &self.registry,
                                &self.slot,
                                permit,
                                &message,
                                None,
                                true,
                                trace,
                            )
                            .await
                        }
                    },
                },
                Err(e) => Err(Failure::Failed(format!("cannot read its inbox: {e}"))),
            };
            let settlement = settlement(result, attempt, self.max_attempts, &self.slot.id);
            if !matches!(settlement, Settlement::Ack) {
                tracing::Span::current().record("otel.status_code", "error");
            }
            let settled = match settlement {
                Settlement::Ack => settle.ack().await,
                Settlement::Retry(delay) => settle.retry(delay).await,
                Settlement::DeadLetter(error) => settle.dead_letter(&error).await,
            };
            if let Err(e) = settled {
                tracing::warn!("cannot settle the delivery ({e}); the bus will deliver it again");
            }
        }
        .instrument(span)
        .await
    }
}

impl Consumer {
    /// A fault injected on deliveries to the `wasmcloud:messaging` handler, which has no
    /// route; those to a route meet theirs in `invoke`.
    async fn injected(&self) -> Option<Injected> {
        let faults = self.registry.faults();
        if faults.is_empty() {
            return None;
        }
        faults.inbound(&self.slot.id, "", Point::Delivery).await
    }

    /// The URI of the HTTP route `subject` is delivered to; `None` for the wasmcloud handler.
    fn route_of(&self, subject: &str) -> Option<&Uri> {
        self.targets
            .iter()
            .find(|t| matches_any(&t.events, subject))
            .and_then(|t| t.uri.as_ref())
    }

    /// POSTs the message to `uri` as a CloudEvent in binary mode, through the same
    /// invocation path as a client's request, committing only on a 2xx.
    async fn post(
        &self,
        uri: Uri,
        message: &Message,
        permit: OwnedSemaphorePermit,
        trace: TraceContext,
    ) -> Result<Finished, Failure> {
        let (headers, body) = cloudevents::binary(message, &self.app_source);
        let ids = RequestIds {
            request_id: crate::telemetry::request_id(),
            trace_id: trace.trace_id_hex().into(),
            traceparent: trace.header(),
        };
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        let (mut parts, body) = request.into_parts();
        chained_headers(&mut parts, &ids);
        let request = Request::from_parts(parts, body);
        let commit = Commit::OnSuccess {
            inbox: message.id.clone(),
        };
        let (response, finished) = invoke(
            &self.registry,
            &self.slot,
            request,
            &ids,
            commit,
            Some(permit),
            Point::Delivery,
        )
        .await?;
        let status = response.status();
        if status.is_success() {
            return Ok(finished);
        }
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let reason = format!(
            "answered {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(MAX_REASON_BYTES)])
        );
        Err(failure(status, reason))
    }
}

/// A handler's error status as a failure: worth retrying when the server failed, timed out
/// or was busy; a refusal otherwise, which no retry changes.
fn failure(status: StatusCode, reason: String) -> Failure {
    if status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
    {
        Failure::Handler(reason)
    } else {
        Failure::Rejected(reason)
    }
}

/// The authority of the URL an event is delivered to, after the component id.
const EVENTS_AUTHORITY: &str = ".events.berth.internal";
/// How much of a refusing response's body is kept as the dead letter's reason.
const MAX_REASON_BYTES: usize = 1024;

/// What becomes of a delivery once its handler ran.
#[derive(Debug, PartialEq)]
enum Settlement {
    Ack,
    /// Delivered again after this wait.
    Retry(Duration),
    /// Out of attempts: kept with this error for someone to look at.
    DeadLetter(String),
}

/// Acknowledged once handled (or found already handled); retried with backoff after a
/// failure or a rollback; a dead letter after `max_attempts` failures.
fn settlement(
    result: Result<Finished, Failure>,
    attempt: u32,
    max_attempts: u32,
    component: &str,
) -> Settlement {
    match result {
        Ok(Finished::Committed) => Settlement::Ack,
        Ok(Finished::Duplicate) => {
            tracing::info!("already handled; acknowledged without running again");
            Settlement::Ack
        }
        Ok(Finished::RolledBack) => Settlement::Retry(REDELIVERY.after(attempt)),
        Err(failure @ Failure::Rejected(_)) => {
            let error = format!("component `{component}` {failure}");
            tracing::error!("{error}; dead-lettered without retrying");
            Settlement::DeadLetter(error)
        }
        Err(failure) if attempt >= max_attempts => {
            let error = format!("component `{component}` {failure}");
            tracing::error!("{error}; dead-lettered after {attempt} attempts");
            Settlement::DeadLetter(error)
        }
        Err(failure) => {
            let delay = REDELIVERY.after(attempt);
            tracing::warn!(
                "component `{component}` {failure}; retrying in {} ms",
                delay.as_millis()
            );
            Settlement::Retry(delay)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handled_messages_are_acknowledged() {
        assert_eq!(
            settlement(Ok(Finished::Committed), 1, 5, "c"),
            Settlement::Ack
        );
        assert_eq!(
            settlement(Ok(Finished::Duplicate), 3, 5, "c"),
            Settlement::Ack
        );
    }

    #[test]
    fn failures_are_retried_with_growing_waits_then_dead_lettered() {
        let wait = |attempt| match settlement(Err(Failure::Trapped("x".into())), attempt, 5, "c") {
            Settlement::Retry(delay) => delay,
            other => panic!("attempt {attempt}: {other:?}"),
        };
        assert!(wait(1) <= Duration::from_millis(200));
        assert!(wait(4) >= Duration::from_millis(800));
        assert_eq!(
            settlement(Err(Failure::Handler("bad input".into())), 5, 5, "order"),
            Settlement::DeadLetter("component `order` returned an error: bad input".into())
        );
        assert_eq!(
            settlement(Err(Failure::Rejected("answered 400".into())), 1, 5, "order"),
            Settlement::DeadLetter("component `order` refused the event: answered 400".into())
        );
        assert!(matches!(
            settlement(Ok(Finished::RolledBack), 9, 5, "c"),
            Settlement::Retry(_)
        ));
    }
}
