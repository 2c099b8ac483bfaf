//! Moves a component's committed outbox rows to the bus. It wakes when an invocation
//! commits messages, and sweeps every second anyway (a commit by another host sharing the
//! database, or a wake lost to a crash). Rows are deleted only after the bus has durably
//! accepted them; a crash in between publishes them again, which the bus's dedupe by message
//! id absorbs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::capabilities::messaging::{Bus, backoff, outbox};
use crate::capabilities::sql::Database;
use crate::telemetry::otel;

const SWEEP: Duration = Duration::from_secs(1);
const BATCH: usize = 256;
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

pub struct Relay {
    pub component: Arc<str>,
    pub db: Arc<dyn Database>,
    pub bus: Arc<dyn Bus>,
    pub wake: Arc<Notify>,
}

impl Relay {
    /// Runs until `stop` is cancelled, after a last pass so committed messages leave promptly.
    pub async fn run(self, stop: CancellationToken) {
        let mut waits = backoff::RECONNECT.waits();
        let mut failing = false;
        let mut pruned = Instant::now() - PRUNE_EVERY;
        loop {
            match self.drain().await {
                Ok(moved) => {
                    if failing {
                        tracing::info!(component = %self.component, "relay: the bus accepts messages again");
                        failing = false;
                    }
                    waits = backoff::RECONNECT.waits();
                    if moved > 0 {
                        tracing::debug!(component = %self.component, moved, "relay: published");
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(component = %self.component, "relay: {e}; messages wait in the outbox and are retried");
                        failing = true;
                    }
                    let wait = waits.next().unwrap_or(Duration::from_secs(5));
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        () = stop.cancelled() => return,
                    }
                    continue;
                }
            }
            if pruned.elapsed() >= PRUNE_EVERY {
                pruned = Instant::now();
                if let Err(e) = outbox::prune_inbox(&self.db).await {
                    tracing::warn!(component = %self.component, "cannot prune the inbox: {e}");
                }
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(SWEEP) => {}
                () = stop.cancelled() => {
                    let _ = self.drain().await;
                    return;
                }
            }
        }
    }

    /// Publishes everything committed so far; returns how many messages moved.
    async fn drain(&self) -> anyhow::Result<usize> {
        let mut moved = 0;
        loop {
            let (messages, read) = outbox::pending(&self.db, BATCH).await?;
            if read.is_empty() {
                return Ok(moved);
            }
            // Its own trace, linked to each message's: a batch serves many sagas.
            let span = tracing::debug_span!(
                "relay",
                otel.name = "relay publish",
                otel.kind = "producer",
                messaging.operation.type = "send",
                messaging.batch.message_count = messages.len(),
                berth.component = %self.component,
            );
            for message in &messages {
                otel::link(&span, message.traceparent.as_deref());
            }
            async {
                self.bus.publish(&messages).await?;
                outbox::remove(&self.db, &read).await?;
                anyhow::Ok(())
            }
            .instrument(span)
            .await?;
            moved += messages.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::capabilities::messaging::{
        BusError, DeadLetter, Message, SubscribeOptions, Subscription,
    };
    use crate::capabilities::sql::{self, Value};

    /// A bus that records what it is given, and refuses it while `down`.
    #[derive(Default)]
    struct Recording {
        down: AtomicBool,
        published: Mutex<Vec<String>>,
    }

    #[async_trait::async_trait]
    impl Bus for Recording {
        async fn publish(&self, messages: &[Message]) -> Result<(), BusError> {
            if self.down.load(Ordering::Relaxed) {
                return Err(BusError::Unavailable("down for the test".into()));
            }
            let mut published = self.published.lock().unwrap();
            published.extend(messages.iter().map(|m| m.id.clone()));
            Ok(())
        }
        async fn subscribe(
            &self,
            _group: &str,
            _patterns: &[String],
            _options: SubscribeOptions,
        ) -> Result<Box<dyn Subscription>, BusError> {
            Err(BusError::Failed("the relay never subscribes".into()))
        }
        async fn dead_letters(&self) -> Result<Vec<DeadLetter>, BusError> {
            Ok(Vec::new())
        }
        async fn ping(&self) -> Result<(), BusError> {
            Ok(())
        }
    }

    async fn outbox_with(db: &Arc<dyn Database>, ids: &[&str]) {
        outbox::create(db).await.unwrap();
        let mut c = db.connect().await.unwrap();
        for id in ids {
            c.execute(
                "INSERT INTO _berth_outbox (id, subject, traceparent, body, created_at)
                 VALUES (?, 'order.created', NULL, x'00', 0)",
                vec![Value::Text((*id).into())],
            )
            .await
            .unwrap();
        }
    }

    #[tokio::test]
    async fn committed_messages_leave_in_order_and_only_once_the_bus_has_them() {
        let dir = tempfile::tempdir().unwrap();
        let db = sql::build("relay", None, dir.path(), dir.path(), false)
            .await
            .unwrap();
        outbox_with(&db, &["m1", "m2", "m3"]).await;
        let bus = Arc::new(Recording::default());
        let relay = Relay {
            component: "order".into(),
            db: db.clone(),
            bus: bus.clone(),
            wake: Arc::new(Notify::new()),
        };
        bus.down.store(true, Ordering::Relaxed);
        assert!(relay.drain().await.is_err());
        let (waiting, _) = outbox::pending(&db, 10).await.unwrap();
        assert_eq!(waiting.len(), 3, "a refused publish keeps the outbox whole");

        bus.down.store(false, Ordering::Relaxed);
        assert_eq!(relay.drain().await.unwrap(), 3);
        assert_eq!(*bus.published.lock().unwrap(), ["m1", "m2", "m3"]);
        let (waiting, _) = outbox::pending(&db, 10).await.unwrap();
        assert!(waiting.is_empty());
        assert_eq!(relay.drain().await.unwrap(), 0);
    }
}
