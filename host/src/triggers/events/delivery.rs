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

use crate::capabilities::messaging::backoff::{self, REDELIVERY};
use crate::capabilities::messaging::{
    Bus, BusError, Delivery, SubscribeOptions, Subscription, outbox,
};
use crate::capabilities::sql::Database;
use crate::registry::invocation::{self, Failure};
use crate::registry::{Registry, Slot};
use crate::state::Finished;

/// Time a delivery may stay unsettled beyond the handler's deadline before the bus hands
/// it out again.
const LEASE_MARGIN: Duration = Duration::from_secs(30);

/// One component's consumer group.
pub struct Consumer {
    pub slot: Arc<Slot>,
    pub registry: Arc<Registry>,
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
    pub async fn subscribe(&self) -> Result<Box<dyn Subscription>, BusError> {
        self.bus
            .subscribe(&self.group, &self.patterns, self.options())
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
                        &self.registry,
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
            let settled = match settlement(result, attempt, self.max_attempts, &self.slot.id) {
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
        assert!(matches!(
            settlement(Ok(Finished::RolledBack), 9, 5, "c"),
            Settlement::Retry(_)
        ));
    }
}
