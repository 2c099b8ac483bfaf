//! Delivery: each subscribing component's consumer group takes messages from the bus and
//! runs the component's current version on each, under the same sandbox and concurrency
//! limit as its HTTP requests. A message already in the component's inbox is acknowledged
//! without running anything; a handler error, trap or timeout rolls its work back and the
//! message is retried with exponential backoff and jitter, then dead-lettered.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::backoff::REDELIVERY;
use super::subject::matches_any;
use super::{Bus, Delivery, Message, Responder, SubscribeOptions, Subscription, outbox};
use crate::capabilities::sql::Database;
use crate::components::Slot;
use crate::components::invocation::{self, Failure};
use crate::engine::Engine;
use crate::state::Finished;

/// Time a delivery may stay unsettled beyond the handler's deadline before the bus hands
/// it out again.
const LEASE_MARGIN: Duration = Duration::from_secs(30);

/// One component's consumer group.
pub struct Consumer {
    pub slot: Arc<Slot>,
    pub engine: Engine,
    pub bus: Arc<dyn Bus>,
    pub group: String,
    pub patterns: Vec<String>,
    pub max_attempts: u32,
    /// The component's database that holds its inbox.
    pub inbox: Arc<dyn Database>,
}

impl Consumer {
    fn options(&self) -> SubscribeOptions {
        SubscribeOptions {
            lease: self.slot.stable().limits.timeout + LEASE_MARGIN,
            batch: (self.slot.permits.available_permits()).clamp(1, 64),
        }
    }

    /// Registers the group with the bus. The host does this before it serves, so that no
    /// event published by its first requests misses a group that was not registered yet.
    pub async fn subscribe(&self) -> Result<Box<dyn Subscription>, super::BusError> {
        self.bus
            .subscribe(&self.group, &self.patterns, self.options())
            .await
    }

    /// Delivers until `stop` is cancelled; deliveries already running finish on their own.
    /// Without a `first` subscription (the bus was unreachable at start) it keeps trying.
    pub async fn run(self, first: Option<Box<dyn Subscription>>, stop: CancellationToken) {
        let this = Arc::new(self);
        let mut waits = super::backoff::RECONNECT.waits();
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
        tracing::info!(component = %this.slot.id, group = %this.group, subjects = ?this.patterns, "subscribed");
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
        let span = tracing::info_span!(
            "message",
            component = %self.slot.id,
            subject = %message.subject,
            message_id = %message.id,
            attempt,
        );
        async {
            let result = match outbox::was_handled(&self.inbox, &message.id).await {
                Ok(true) => Ok(Finished::Duplicate),
                Ok(false) => {
                    invocation::handle_message(
                        &self.engine,
                        &self.slot,
                        permit,
                        &message,
                        None,
                        true,
                    )
                    .await
                }
                Err(e) => Err(Failure::Failed(format!("cannot read its inbox: {e}"))),
            };
            let settled = match result {
                Ok(Finished::Committed) => settle.ack().await,
                Ok(Finished::Duplicate) => {
                    tracing::info!("already handled; acknowledged without running again");
                    settle.ack().await
                }
                Ok(Finished::RolledBack) => settle.retry(REDELIVERY.after(attempt)).await,
                Err(failure) if attempt >= self.max_attempts => {
                    let error = format!("component `{}` {failure}", self.slot.id);
                    tracing::error!("{error}; dead-lettered after {attempt} attempts");
                    settle.dead_letter(&error).await
                }
                Err(failure) => {
                    let delay = REDELIVERY.after(attempt);
                    tracing::warn!(
                        "component `{}` {failure}; retrying in {} ms",
                        self.slot.id,
                        delay.as_millis()
                    );
                    settle.retry(delay).await
                }
            };
            if let Err(e) = settled {
                tracing::warn!("cannot settle the delivery ({e}); the bus will deliver it again");
            }
        }
        .instrument(span)
        .await
    }
}

/// Answers `consumer.request` with the first local component subscribed to the subject.
pub struct Responders {
    pub engine: Engine,
    pub subscribers: Vec<(Vec<String>, Arc<Slot>)>,
}

#[async_trait::async_trait]
impl Responder for Responders {
    async fn respond(&self, message: Message, reply_to: String) -> Result<(), String> {
        let slot = self
            .subscribers
            .iter()
            .find(|(patterns, _)| matches_any(patterns, &message.subject))
            .map(|(_, slot)| slot)
            .ok_or_else(|| format!("no component subscribes to `{}`", message.subject))?;
        let limits = slot.stable().limits;
        let permit = invocation::acquire(slot, &limits)
            .await
            .map_err(|f| format!("component `{}` {f}", slot.id))?;
        invocation::handle_message(&self.engine, slot, permit, &message, Some(reply_to), false)
            .await
            .map(drop)
            .map_err(|f| format!("component `{}` {f}", slot.id))
    }
}
