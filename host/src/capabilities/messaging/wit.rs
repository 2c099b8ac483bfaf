//! The guest side of the capability: `wasmcloud:messaging/consumer@0.2.0`.
//!
//! `publish` does not reach the bus: it adds the message to the invocation's outbox buffer,
//! written with the invocation's SQL writes when it commits and dropped when it fails.
//! The exception is a reply to `request` (a subject under `_INBOX.`), which goes straight
//! to the waiting caller, as in NATS, and so is not transactional.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};
use wasmtime::component::HasData;

use super::published::Published;
use super::subject::REPLY_PREFIX;
use super::{Bus, Message};
use crate::bindings::{consumer, messaging_types};

/// The longest a `request` may wait, whatever the guest asks for.
const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Answers a request by running a subscriber's handler; implemented by the registry, which
/// knows the components, and handed to each invocation's Store.
#[async_trait::async_trait]
pub trait Responder: Send + Sync {
    /// Runs the handler of a component subscribed to `message.subject`, with `reply_to`.
    async fn respond(self: Arc<Self>, message: Message, reply_to: String) -> Result<(), String>;
}

/// The app's messaging: its bus and the requests waiting for a reply.
pub struct Messaging {
    pub bus: Arc<dyn Bus>,
    replies: Replies,
}

impl Messaging {
    pub fn new(bus: Arc<dyn Bus>) -> Arc<Messaging> {
        Arc::new(Messaging {
            bus,
            replies: Replies::default(),
        })
    }
}

/// Reply subjects of the requests in flight.
#[derive(Default)]
pub struct Replies {
    waiting: Mutex<HashMap<String, oneshot::Sender<Vec<u8>>>>,
}

impl Replies {
    fn expect(&self, subject: &str) -> Option<oneshot::Receiver<Vec<u8>>> {
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().ok()?.insert(subject.to_owned(), tx);
        Some(rx)
    }

    fn forget(&self, subject: &str) {
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting.remove(subject);
        }
    }

    fn answer(&self, subject: &str, body: Vec<u8>) -> bool {
        let sender = self.waiting.lock().ok().and_then(|mut w| w.remove(subject));
        sender.is_some_and(|s| s.send(body).is_ok())
    }
}

/// One invocation's messaging: what it has published, and the way to a responder.
pub struct MessagingSession {
    messaging: Option<Arc<Messaging>>,
    published: Arc<Published>,
    traceparent: http::HeaderValue,
    relay: Option<Arc<Notify>>,
    /// Runs the local subscriber of a `request`'s subject.
    responder: Arc<dyn Responder>,
}

impl MessagingSession {
    pub fn new(
        messaging: Option<Arc<Messaging>>,
        published: Arc<Published>,
        traceparent: http::HeaderValue,
        relay: Option<Arc<Notify>>,
        responder: Arc<dyn Responder>,
    ) -> MessagingSession {
        MessagingSession {
            messaging,
            published,
            traceparent,
            relay,
            responder,
        }
    }

    pub fn take_outbox(&mut self) -> Vec<Message> {
        self.published.take()
    }

    pub fn discard(&mut self) {
        self.published.discard();
    }

    pub fn wake_relay(&self) {
        if let Some(relay) = &self.relay {
            relay.notify_one();
        }
    }

    fn messaging(&self) -> Result<&Arc<Messaging>, String> {
        self.messaging
            .as_ref()
            .ok_or_else(|| "messaging is not available to this component".to_owned())
    }

    fn publish(&mut self, msg: messaging_types::BrokerMessage) -> Result<(), String> {
        if msg.subject.starts_with(REPLY_PREFIX) {
            return if self.messaging()?.replies.answer(&msg.subject, msg.body) {
                Ok(())
            } else {
                Err(format!(
                    "nobody waits for a reply on `{}` any more",
                    msg.subject
                ))
            };
        }
        self.published
            .publish(msg.subject, msg.body)
            .map_err(|rejected| rejected.message)
    }

    async fn request(
        &mut self,
        subject: String,
        body: Vec<u8>,
        timeout_ms: u32,
    ) -> Result<messaging_types::BrokerMessage, String> {
        self.published.may_publish(&subject)?;
        let messaging = self.messaging()?.clone();
        let responder = self.responder.clone();
        let reply_to = format!("{REPLY_PREFIX}{}", uuid::Uuid::new_v4().simple());
        let reply = messaging
            .replies
            .expect(&reply_to)
            .ok_or_else(|| "the reply table is unavailable".to_owned())?;
        let timeout = Duration::from_millis(timeout_ms.into()).min(MAX_REQUEST_TIMEOUT);
        let message = Message {
            id: uuid::Uuid::now_v7().to_string(),
            subject: subject.clone(),
            body,
            traceparent: self.traceparent.to_str().ok().map(str::to_owned),
        };
        // Spawned: the responder's invocation must run to its commit even once the reply
        // is in hand or the request has given up waiting.
        let responding = {
            let reply_to = reply_to.clone();
            tokio::spawn(async move { responder.respond(message, reply_to).await })
        };
        let result = tokio::time::timeout(timeout, async {
            tokio::pin!(reply);
            tokio::select! {
                biased;
                body = &mut reply => body.map_err(|_| "the responder went away".to_owned()),
                responded = responding => match responded {
                    // The handler returned; its reply, if it sent one, is already here.
                    Ok(Ok(())) => reply.await.map_err(|_| format!("the handler of `{subject}` returned without replying")),
                    Ok(Err(e)) => Err(e),
                    Err(e) => Err(format!("the responder ended: {e}")),
                },
            }
        })
        .await;
        messaging.replies.forget(&reply_to);
        let body = result
            .map_err(|_| format!("no reply on `{subject}` within {} ms", timeout.as_millis()))??;
        Ok(messaging_types::BrokerMessage {
            subject: reply_to,
            body,
            reply_to: None,
        })
    }
}

/// [`HasData`] marker for the linker.
pub struct MessagingCapability;

impl HasData for MessagingCapability {
    type Data<'a> = MessagingView<'a>;
}

pub struct MessagingView<'a> {
    pub session: &'a mut MessagingSession,
}

impl messaging_types::Host for MessagingView<'_> {}

impl consumer::Host for MessagingView<'_> {
    async fn request(
        &mut self,
        subject: String,
        body: Vec<u8>,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<messaging_types::BrokerMessage, String>> {
        let span = tracing::info_span!("messaging.request", subject = %subject);
        let result =
            tracing::Instrument::instrument(self.session.request(subject, body, timeout_ms), span)
                .await;
        Ok(result)
    }

    async fn publish(
        &mut self,
        msg: messaging_types::BrokerMessage,
    ) -> wasmtime::Result<Result<(), String>> {
        let _span = tracing::debug_span!(
            "publish",
            otel.kind = "producer",
            messaging.system = "berth",
            messaging.operation.type = "send",
            messaging.destination.name = tracing::field::Empty,
        )
        .entered();
        let result = self.session.publish(msg);
        if let Err(e) = &result {
            tracing::warn!("publish refused: {e}");
        }
        Ok(result)
    }
}
