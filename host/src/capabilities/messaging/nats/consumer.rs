//! A consumer group's side of JetStream: durable pull consumers feeding the group's
//! deliveries, and each delivery's acknowledgement, retry or dead letter.

use super::*;

pub(super) struct NatsSubscription {
    pub(super) deliveries: mpsc::Receiver<Delivery>,
    /// Keeps the channel open while no consumer task runs (no patterns), so `next` waits
    /// instead of reporting a closed bus.
    pub(super) _open: mpsc::Sender<Delivery>,
}

#[async_trait::async_trait]
impl Subscription for NatsSubscription {
    async fn next(&mut self) -> Option<Delivery> {
        self.deliveries.recv().await
    }
}

enum Round {
    /// The pull request ended (expired, filled, or the connection changed): pull again.
    Done,
    /// The subscription was dropped.
    Closed,
}

/// Pulls one consumer into the group's channel until the subscription is dropped, riding
/// out NATS outages: a failure is logged once, then retried with backoff.
pub(super) async fn pull_loop(
    shared: Arc<Shared>,
    config: Consumer,
    consumer: PullConsumer,
    group: Arc<str>,
    sender: mpsc::Sender<Delivery>,
    batch: usize,
) {
    let name = config.config.durable_name.clone().unwrap_or_default();
    let mut connections = shared.connections.subscribe();
    let mut consumer = Some(consumer);
    let mut waits = crate::capabilities::messaging::backoff::RECONNECT.waits();
    let mut failing = false;
    loop {
        if sender.is_closed() {
            return;
        }
        let round = async {
            shared.require_connected().map_err(|e| e.to_string())?;
            let current = match &consumer {
                Some(c) => c,
                // Recreated after a failure, in case the server lost it (or the stream).
                None => consumer.insert(
                    shared
                        .upsert_consumer(&config)
                        .await
                        .map_err(|e| e.to_string())?,
                ),
            };
            pull_round(&shared, current, &group, &sender, batch).await
        };
        match round.await {
            Ok(Round::Closed) => return,
            Ok(Round::Done) => {
                if failing {
                    tracing::info!(consumer = %name, "NATS: pulling messages again");
                    failing = false;
                }
                waits = crate::capabilities::messaging::backoff::RECONNECT.waits();
            }
            Err(e) => {
                consumer = None;
                if failing {
                    tracing::debug!(consumer = %name, "NATS: still cannot pull: {e}");
                } else {
                    tracing::warn!(consumer = %name, "NATS: cannot pull: {e}; retrying");
                    failing = true;
                }
                let wait = waits.next().unwrap_or(Duration::from_secs(5));
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    // Back as soon as NATS is.
                    Ok(()) = connections.changed() => {}
                    _ = sender.closed() => return,
                }
            }
        }
    }
}

/// One pull request, forwarding what it yields.
async fn pull_round(
    shared: &Arc<Shared>,
    consumer: &PullConsumer,
    group: &Arc<str>,
    sender: &mpsc::Sender<Delivery>,
    batch: usize,
) -> Result<Round, String> {
    let mut connections = shared.connections.subscribe();
    // Ask only for what the channel has room for, so messages do not sit in a client buffer
    // while their lease runs.
    let Ok(room) = sender.reserve().await else {
        return Ok(Round::Closed);
    };
    let want = (sender.capacity() + 1).clamp(1, batch);
    drop(room);
    shared.require_connected().map_err(|e| e.to_string())?;

    let mut messages = consumer
        .batch()
        .max_messages(want)
        .expires(PULL_EXPIRES)
        .messages()
        .await
        .map_err(|e| format!("cannot request messages: {e}"))?;
    loop {
        let next = tokio::select! {
            next = messages.next() => next,
            _ = sender.closed() => return Ok(Round::Closed),
            // The pull request died with the old connection; waiting for its expiry would
            // delay delivery after every reconnect.
            Ok(()) = connections.changed() => return Ok(Round::Done),
        };
        match next {
            None => return Ok(Round::Done),
            Some(Err(e)) => return Err(e.to_string()),
            Some(Ok(message)) => {
                if sender.send(shared.delivery(message, group)).await.is_err() {
                    return Ok(Round::Closed);
                }
            }
        }
    }
}

pub(super) struct NatsSettle {
    pub(super) shared: Arc<Shared>,
    pub(super) acker: Acker,
    pub(super) group: Arc<str>,
    /// Kept for the dead letter.
    pub(super) message: Message,
    pub(super) attempt: u32,
    /// `<stream>:<sequence>` of the delivered message: the same for every redelivery of it,
    /// different once it is redriven.
    pub(super) stored_as: Option<String>,
}

impl NatsSettle {
    /// Double acks: the server confirms it applied the ack, so `Ok` means settled.
    async fn settle(&self, kind: AckKind, what: &str) -> Result<(), BusError> {
        self.shared.require_connected()?;
        self.acker.double_ack_with(kind).await.map_err(|e| {
            BusError::Unavailable(format!(
                "NATS at {} did not confirm the {what} of {}: {e}",
                self.shared.url, self.message.id
            ))
        })
    }
}

#[async_trait::async_trait]
impl Settle for NatsSettle {
    async fn ack(self: Box<Self>) -> Result<(), BusError> {
        self.settle(AckKind::Ack, "ack").await
    }

    async fn retry(self: Box<Self>, delay: Duration) -> Result<(), BusError> {
        self.settle(AckKind::Nak(Some(delay)), "retry").await
    }

    async fn dead_letter(self: Box<Self>, error: &str) -> Result<(), BusError> {
        let shared = &self.shared;
        shared.ensure_streams().await?;
        let message = &self.message;
        let mut headers = HeaderMap::new();
        // Dead-lettering the same stored message again (the term below was lost) stores it
        // once; the same message redriven and failing again within the duplicate window is
        // another stored message, so it is not dropped as a duplicate.
        let stored_as = self
            .stored_as
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        headers.insert(
            MSG_ID,
            one_line(&format!("{}:{}:{stored_as}", self.group, message.id)),
        );
        headers.insert(DEAD_ID, one_line(&message.id));
        headers.insert(DEAD_GROUP, one_line(&self.group));
        headers.insert(DEAD_SUBJECT, one_line(&message.subject));
        headers.insert(DEAD_ATTEMPTS, self.attempt.to_string());
        headers.insert(DEAD_ERROR, one_line(truncate(error, MAX_ERROR_LEN)));
        headers.insert(DEAD_FAILED_AT, crate::telemetry::rfc3339_now());
        if let Some(traceparent) = &message.traceparent {
            headers.insert(TRACEPARENT, one_line(traceparent));
        }
        let subject = shared.names.dead_subject(&self.group);
        shared
            .publish_acked(subject, headers, message.body.clone())
            .await?;
        // Stored among the dead letters: now stop the redeliveries to this group.
        self.settle(AckKind::Term, "termination").await
    }
}
