//! Events between components, published through a transactional outbox and delivered
//! effect-once: CloudEvents over HTTP for Spin components ([`cloudevents`]), and
//! `wasmcloud:messaging@0.2.0` for components written for wasmCloud (`wit.rs`).
//!
//! | where | key | meaning |
//! |---|---|---|
//! | runtime config | `[messaging] type = "embedded"` (default) | a durable bus in `<data-dir>/bus/bus.db` |
//! | | `[messaging] type = "nats"`, `url = "nats://…"` | NATS JetStream: one stream per app, a durable consumer per subscribing component |
//! | `[component.<id>.tool.berth]` | `publishes = ["order.*"]` | event types (subjects) it may publish, by POST to `http://events.berth.internal` or through `consumer` |
//! | | `subscriptions = [{ events = ["payment.*"], route = "/…" }]` | events POSTed to that route as CloudEvents; a bare `"payment.*"` goes to its `handler` export (NATS wildcards) |
//! | | `consumer_group` | defaults to the component id: each message is handled once per group |
//! | | `max_delivery_attempts` | 5; then the message goes to the dead letters |
//!
//! The path of one message: the guest's publish is buffered in the invocation
//! ([`Published`]), written to the outbox table of the component's own database in the same
//! transaction as its SQL writes ([`outbox`]), moved to the [`Bus`] by the component's relay
//! once committed, and handed to each subscribing group (`triggers::events::delivery`), whose
//! handler runs in a transaction that also records the message id in its inbox. On the bus an
//! event published over HTTP is its structured CloudEvent JSON.

pub mod backoff;
pub mod cloudevents;
pub(crate) mod embedded;
pub(crate) mod nats;
pub mod outbox;
mod published;
pub mod subject;
mod wit;

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

pub use published::Published;
pub use wit::{Messaging, MessagingCapability, MessagingSession, MessagingView, Responder};

/// One message on the bus.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Assigned by the host when the guest publishes: the key of every dedupe (the bus's and
    /// each consumer's inbox).
    pub id: String,
    pub subject: String,
    pub body: Vec<u8>,
    /// The publisher's W3C `traceparent`, so a saga is one trace.
    pub traceparent: Option<String>,
}

/// A message handed to one consumer group, to be settled exactly once.
pub struct Delivery {
    pub message: Message,
    /// 1 on the first delivery.
    pub attempt: u32,
    pub settle: Box<dyn Settle>,
}

/// How a delivery ends. Each consumes the delivery's lease on the message.
#[async_trait::async_trait]
pub trait Settle: Send + Sync {
    /// Handled (or a duplicate): never deliver it to this group again.
    async fn ack(self: Box<Self>) -> Result<(), BusError>;
    /// Deliver it again after `delay`.
    async fn retry(self: Box<Self>, delay: Duration) -> Result<(), BusError>;
    /// Give up: keep it with `error` among the dead letters.
    async fn dead_letter(self: Box<Self>, error: &str) -> Result<(), BusError>;
}

/// Messages for one consumer group, as they become due.
#[async_trait::async_trait]
pub trait Subscription: Send {
    /// The next delivery; waits until one is due. `None` once the bus is closed.
    async fn next(&mut self) -> Option<Delivery>;
}

/// A message that exhausted its attempts.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    pub id: String,
    pub group: String,
    pub subject: String,
    /// The body as text when it is UTF-8, else base64.
    pub body: String,
    pub attempts: u32,
    pub error: String,
    /// RFC 3339.
    pub failed_at: String,
}

/// What became of a request to redrive a dead letter.
#[derive(Debug, Clone, PartialEq)]
pub enum Redrive {
    /// Due again for its group alone, from a first attempt, with its id and traceparent.
    Redriven(Redriven),
    /// The group has no dead letter with that id (never had, or it was redriven already).
    NotFound,
}

/// A dead letter sent back to its group.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Redriven {
    pub group: String,
    pub id: String,
    pub subject: String,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum BusError {
    /// The bus cannot be reached now; the caller keeps the messages and tries again.
    #[error("the message bus is unavailable: {0}")]
    Unavailable(String),
    #[error("the message bus failed: {0}")]
    Failed(String),
}

/// The message bus: durable publish, and durable consumer groups.
#[async_trait::async_trait]
pub trait Bus: Send + Sync {
    /// Returns once the bus has durably stored every message. A message whose id it has
    /// already stored is accepted again without being stored twice.
    async fn publish(&self, messages: &[Message]) -> Result<(), BusError>;
    /// Starts (or resumes) `group`'s durable consumer on `patterns`. Messages published
    /// while nobody consumes the group wait for it.
    async fn subscribe(
        &self,
        group: &str,
        patterns: &[String],
        options: SubscribeOptions,
    ) -> Result<Box<dyn Subscription>, BusError>;
    /// Every dead letter, oldest first.
    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, BusError>;
    /// Sends `group`'s dead letter `id` back to that group only (groups that handled the
    /// message never see it again), due now and counting attempts from 1, and removes it
    /// from the dead letters. The group's inbox never recorded it (it failed), so it runs.
    /// A bus that keeps no dead letters finds none.
    async fn redrive(&self, group: &str, id: &str) -> Result<Redrive, BusError> {
        let _ = (group, id);
        Ok(Redrive::NotFound)
    }
    /// Answers when the bus can take messages (for `/readyz`).
    async fn ping(&self) -> Result<(), BusError>;
}

#[derive(Debug, Clone, Copy)]
pub struct SubscribeOptions {
    /// How long one delivery may stay unsettled before the bus hands it out again
    /// (the handler's deadline plus a margin).
    pub lease: Duration,
    /// Deliveries handed out at once.
    pub batch: usize,
}

/// `[messaging]` in the runtime config.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Config {
    #[default]
    Embedded,
    Nats {
        url: String,
        /// Prefix of the stream and subject names; defaults to the app name.
        #[serde(default)]
        stream: Option<String>,
    },
}

/// Opens the bus: the only place that names concrete backends.
pub async fn build(config: &Config, app: &str, data_dir: &Path) -> anyhow::Result<Arc<dyn Bus>> {
    Ok(match config {
        Config::Embedded => Arc::new(embedded::EmbeddedBus::open(&data_dir.join("bus")).await?),
        Config::Nats { url, stream } => {
            Arc::new(nats::NatsBus::connect(url, stream.as_deref().unwrap_or(app)).await?)
        }
    })
}

/// A dead letter's group or id as one segment of an admin API path, which must be spelled
/// without percent-encoding: as it is when it is made of letters, digits, `-`, `_`, `.`,
/// `:` and `@` (host-made ids and groups are), else `~` and its unpadded base64url (an id
/// another NATS publisher chose may hold anything).
pub fn path_segment(text: &str) -> Cow<'_, str> {
    let plain = !text.is_empty()
        && text != "."
        && text != ".."
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:@".contains(&b));
    if plain {
        Cow::Borrowed(text)
    } else {
        use base64::Engine as _;
        Cow::Owned(format!(
            "~{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
        ))
    }
}

/// The group or id a [`path_segment`] names; `None` for a `~` that is not base64url of UTF-8.
pub fn from_path_segment(segment: &str) -> Option<Cow<'_, str>> {
    let Some(encoded) = segment.strip_prefix('~') else {
        return Some(Cow::Borrowed(segment));
    };
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .ok()?;
    String::from_utf8(bytes).ok().map(Cow::Owned)
}

/// A body for people to read: the text when it is UTF-8, else base64.
pub(crate) fn printable(body: &[u8]) -> String {
    match std::str::from_utf8(body) {
        Ok(text) => text.to_owned(),
        Err(_) => {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(body)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_group_or_id_survives_an_exact_admin_path() {
        for text in [
            "0190b3c1-7f2a-7c3e-9a1b-2c3d4e5f6a7b",
            "BERTH_SHOP_EVENTS:42",
            "order_group-1",
            "a/b%2F..",
            "~tilde",
            "..",
            "héllo wörld?#",
        ] {
            let segment = path_segment(text);
            assert!(
                !segment.contains(['/', '%', '?', '#']) && !matches!(&*segment, "" | "." | ".."),
                "{text} -> {segment}"
            );
            let path = format!("/admin/v1/dead-letters/g/{segment}/redrive");
            assert_eq!(
                crate::triggers::http::path::exact(&path),
                Ok(path.as_str()),
                "{text}"
            );
            assert_eq!(from_path_segment(&segment).as_deref(), Some(text));
        }
        assert_eq!(path_segment("BERTH_SHOP_EVENTS:42"), "BERTH_SHOP_EVENTS:42");
        assert_eq!(from_path_segment("~!!"), None);
    }
}
