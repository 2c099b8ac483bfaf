//! Moves a component's committed outbox rows to the bus. It wakes when an invocation
//! commits messages, and sweeps every second anyway (a commit by another host sharing the
//! database, or a wake lost to a crash). Rows are deleted only after the bus has durably
//! accepted them; a crash in between publishes them again, which the bus's dedupe by message
//! id absorbs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Bus, backoff, outbox};
use crate::capabilities::sql::Database;

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
            let (messages, last) = outbox::pending(&self.db, BATCH).await?;
            let Some(last) = last else {
                return Ok(moved);
            };
            self.bus.publish(&messages).await?;
            outbox::remove_through(&self.db, last).await?;
            moved += messages.len();
        }
    }
}
