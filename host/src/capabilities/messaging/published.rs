//! What one invocation has published, held until its unit of work ends: written to the
//! outbox with its SQL writes when it commits, dropped when it fails.
//!
//! Two doors lead here: `wasmcloud:messaging/consumer.publish`, and a CloudEvent POSTed to
//! `http://events.berth.internal` ([`EventSink`]), which is how a component written for
//! Spin publishes. Both check the same `publishes` grant and the same bounds.

use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use http::StatusCode;

use super::cloudevents::{self, Rejected};
use super::{Message, subject};
use crate::capabilities::http_outbound::EventSink;

/// Messages one invocation may publish, and the largest body; beyond them publishing fails.
pub const MAX_MESSAGES: usize = 1000;
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

pub struct Published {
    component: Arc<str>,
    /// `/<app>/<component>`: the `source` of every CloudEvent it publishes.
    source: Arc<str>,
    publishes: Arc<[String]>,
    /// The invocation's trace context, carried by each message so a saga is one trace.
    traceparent: http::HeaderValue,
    messages: Mutex<Vec<Message>>,
}

impl Published {
    pub fn new(
        component: Arc<str>,
        source: Arc<str>,
        publishes: Arc<[String]>,
        traceparent: http::HeaderValue,
    ) -> Published {
        Published {
            component,
            source,
            publishes,
            traceparent,
            messages: Mutex::new(Vec::new()),
        }
    }

    /// Whether the component's grant covers `subject`.
    pub fn may_publish(&self, subject: &str) -> Result<(), String> {
        subject::check(subject, false)?;
        if subject::matches_any(&self.publishes, subject) {
            Ok(())
        } else {
            Err(format!(
                "component `{0}` may not publish to `{subject}`: add it to `publishes` in [component.{0}.tool.berth]",
                self.component
            ))
        }
    }

    /// Adds a message to the invocation's outbox.
    pub fn publish(&self, subject: String, body: Vec<u8>) -> Result<(), Rejected> {
        self.may_publish(&subject)
            .map_err(|e| Rejected::new(StatusCode::FORBIDDEN, "PUBLISH_DENIED", e))?;
        if body.len() > MAX_BODY_BYTES {
            return Err(too_large(body.len()));
        }
        let mut messages = self.lock();
        if messages.len() >= MAX_MESSAGES {
            return Err(Rejected::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TOO_MANY_EVENTS",
                format!("one invocation may publish at most {MAX_MESSAGES} events"),
            ));
        }
        // The publish span (HTTP POST or wasmcloud publish) names the event type.
        tracing::Span::current().record("messaging.destination.name", subject.as_str());
        messages.push(Message {
            id: uuid::Uuid::now_v7().to_string(),
            subject,
            body,
            traceparent: self.traceparent.to_str().ok().map(str::to_owned),
        });
        Ok(())
    }

    pub fn take(&self) -> Vec<Message> {
        std::mem::take(&mut *self.lock())
    }

    pub fn discard(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Message>> {
        self.messages.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn too_large(bytes: usize) -> Rejected {
    Rejected::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "EVENT_TOO_LARGE",
        format!("the event is {bytes} bytes; the limit is {MAX_BODY_BYTES}"),
    )
}

impl EventSink for Published {
    fn limit(&self) -> usize {
        MAX_BODY_BYTES
    }

    fn accept(&self, request: http::Request<Bytes>) -> http::Response<Bytes> {
        let result = if request.method() != http::Method::POST {
            Err(Rejected::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                "publish an event with POST".into(),
            ))
        } else if request.body().len() > MAX_BODY_BYTES {
            Err(too_large(request.body().len()))
        } else {
            cloudevents::from_request(request, &self.source)
                .and_then(|(kind, structured)| self.publish(kind, structured))
        };
        match result {
            Ok(()) => {
                let mut response = http::Response::new(Bytes::new());
                *response.status_mut() = StatusCode::ACCEPTED;
                response
            }
            Err(rejected) => {
                tracing::warn!(component = %self.component, "event refused: {}", rejected.message);
                rejected.into_response()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn published(grant: &[&str]) -> Published {
        Published::new(
            "order".into(),
            "/shop/order".into(),
            grant.iter().map(|s| s.to_string()).collect(),
            http::HeaderValue::from_static(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        )
    }

    fn post(headers: &[(&str, &str)], body: &str) -> http::Request<Bytes> {
        let mut request = http::Request::post("http://events.berth.internal/");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(Bytes::from(body.to_owned())).unwrap()
    }

    const BINARY: [(&str, &str); 5] = [
        ("ce-specversion", "1.0"),
        ("ce-id", "e1"),
        ("ce-type", "order.created"),
        ("ce-source", "/anything"),
        ("content-type", "application/json"),
    ];

    #[test]
    fn a_granted_event_joins_the_outbox_with_the_components_source() {
        let sink = published(&["order.*"]);
        let response = sink.accept(post(&BINARY, r#"{"orderId":"o1"}"#));
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let messages = sink.take();
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].subject, "order.created");
        let event: serde_json::Value = serde_json::from_slice(&messages[0].body).unwrap();
        assert_eq!(event["source"], "/shop/order");
        assert_eq!(event["id"], "e1");
        assert_eq!(event["data"]["orderId"], "o1");
        assert!(event["time"].is_string());
        assert!(sink.take().is_empty());
    }

    #[test]
    fn each_bad_publish_gets_its_status() {
        let sink = published(&["order.*"]);
        let status = |request| sink.accept(request).status().as_u16();
        let mut other = BINARY;
        other[2] = ("ce-type", "payment.succeeded");
        assert_eq!(status(post(&other, "{}")), 403);
        assert_eq!(status(post(&BINARY[2..], "{}")), 400);
        assert_eq!(status(post(&BINARY, "{not json")), 400);
        let get = http::Request::get("http://events.berth.internal/")
            .body(Bytes::new())
            .unwrap();
        assert_eq!(status(get), 405);
        let huge = "x".repeat(MAX_BODY_BYTES + 1);
        assert_eq!(status(post(&BINARY, &huge)), 413);
        assert!(sink.take().is_empty());
        for _ in 0..MAX_MESSAGES {
            assert_eq!(status(post(&BINARY, "{}")), 202);
        }
        assert_eq!(status(post(&BINARY, "{}")), 429);
    }
}
