//! Events as CloudEvents 1.0 over HTTP, the binding Knative Eventing and Dapr use: accepted
//! from a publisher in binary or structured mode, kept on the bus in structured JSON (what a
//! `wasmcloud:messaging` subscriber receives), and delivered to an HTTP subscriber in binary
//! mode.

use bytes::Bytes;
use cloudevents::event::{AttributesReader, AttributesWriter, Data};
use cloudevents::{Event, EventBuilder, EventBuilderV10};
use http::StatusCode;
use http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};

use super::Message;

/// A publish the host refuses, answered to the guest as an HTTP error.
#[derive(Debug)]
pub struct Rejected {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl Rejected {
    pub fn new(status: StatusCode, code: &'static str, message: String) -> Rejected {
        Rejected {
            status,
            code,
            message,
        }
    }

    /// `{"error":{"code","message"}}`, as the public API words its errors.
    pub fn into_response(self) -> http::Response<Bytes> {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        let mut response = http::Response::new(Bytes::from(body.to_string()));
        *response.status_mut() = self.status;
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    }
}

fn bad(message: String) -> Rejected {
    Rejected::new(StatusCode::BAD_REQUEST, "BAD_EVENT", message)
}

/// A published request as the event's type and its structured JSON. The `source` is the
/// publishing component's, whatever the request says, so no component can speak for another;
/// a missing `time` is now.
pub fn from_request(
    request: http::Request<Bytes>,
    source: &str,
) -> Result<(String, Vec<u8>), Rejected> {
    let (parts, body) = request.into_parts();
    let mut event = cloudevents::binding::http::to_event(&parts.headers, body.to_vec()).map_err(
        |e| bad(format!(
            "not a CloudEvent ({e}): send ce-specversion, ce-id, ce-type and ce-source headers with the data as the body, or the whole event as application/cloudevents+json"
        )),
    )?;
    if event.id().is_empty() || event.ty().is_empty() {
        return Err(bad("a CloudEvent needs a non-empty id and type".into()));
    }
    event.set_source(source.to_owned());
    if event.time().is_none() {
        event.set_time(Some(chrono::Utc::now()));
    }
    readable_data(&mut event)?;
    let kind = event.ty().to_owned();
    let json =
        serde_json::to_vec(&event).map_err(|e| bad(format!("the event cannot be encoded: {e}")))?;
    Ok((kind, json))
}

/// Data that arrived as bytes, kept as JSON or text where its content type says it is, so
/// the structured event reads as `"data": {…}` rather than base64.
fn readable_data(event: &mut Event) -> Result<(), Rejected> {
    let Some(Data::Binary(bytes)) = event.data() else {
        return Ok(());
    };
    let content_type = event.datacontenttype().unwrap_or("application/json");
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let data = if essence == "application/json" || essence.ends_with("+json") {
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
            bad(format!(
                "the event's data is not the JSON its content type ({content_type}) says: {e}"
            ))
        })?;
        Data::Json(value)
    } else if essence.starts_with("text/") {
        match std::str::from_utf8(bytes) {
            Ok(text) => Data::String(text.to_owned()),
            Err(_) => return Ok(()),
        }
    } else {
        return Ok(());
    };
    let content_type = content_type.to_owned();
    event.set_data(content_type, data);
    Ok(())
}

/// The event a message carries: its structured JSON, or, for a message published through
/// `wasmcloud:messaging` as plain bytes, an event made from it (the message id and subject,
/// `default_source`).
pub fn event_of(message: &Message, default_source: &str) -> Event {
    if let Ok(event) = serde_json::from_slice::<Event>(&message.body) {
        return event;
    }
    let content_type = if serde_json::from_slice::<serde::de::IgnoredAny>(&message.body).is_ok() {
        "application/json"
    } else {
        "application/octet-stream"
    };
    let time = uuid::Uuid::parse_str(&message.id)
        .ok()
        .and_then(|id| id.get_timestamp())
        .and_then(|ts| {
            let (secs, nanos) = ts.to_unix();
            chrono::DateTime::from_timestamp(secs as i64, nanos)
        })
        .unwrap_or_else(chrono::Utc::now);
    let built = EventBuilderV10::new()
        .id(message.id.clone())
        .ty(message.subject.clone())
        .source(default_source.to_owned())
        .time(time)
        .data(content_type, Data::Binary(message.body.clone()))
        .build();
    built.unwrap_or_default()
}

/// An event in binary content mode: its attributes as `ce-*` headers, its content type as
/// `content-type`, its data as the body.
pub fn binary(event: &Event) -> (HeaderMap, Bytes) {
    let mut headers = HeaderMap::new();
    let mut put = |name: &str, value: String| {
        let name = match name {
            "datacontenttype" => Ok(CONTENT_TYPE),
            name => HeaderName::try_from(format!("ce-{name}")),
        };
        if let (Ok(name), Ok(value)) = (name, HeaderValue::try_from(value)) {
            headers.insert(name, value);
        }
    };
    for (name, value) in event.iter_attributes() {
        put(name, value.to_string());
    }
    for (name, value) in event.iter_extensions() {
        put(name, value.to_string());
    }
    let body = match event.data() {
        Some(Data::Binary(bytes)) => Bytes::from(bytes.clone()),
        Some(Data::String(text)) => Bytes::from(text.clone()),
        Some(Data::Json(value)) => Bytes::from(value.to_string()),
        None => Bytes::new(),
    };
    (headers, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structured_publishes_keep_their_data_and_get_the_components_source() {
        let body = r#"{"specversion":"1.0","id":"a1","type":"order.created","source":"/elsewhere","datacontenttype":"application/json","data":{"n":1}}"#;
        let request = http::Request::post("http://events.berth.internal/")
            .header("content-type", "application/cloudevents+json")
            .body(Bytes::from(body))
            .unwrap();
        let (kind, json) = from_request(request, "/shop/order").unwrap();
        assert_eq!(kind, "order.created");
        let message = Message {
            id: "m1".into(),
            subject: kind,
            body: json,
            traceparent: None,
        };
        let event = event_of(&message, "/shop");
        assert_eq!(event.source().to_string(), "/shop/order");
        let (headers, body) = binary(&event);
        assert_eq!(headers["ce-id"], "a1");
        assert_eq!(headers["ce-type"], "order.created");
        assert_eq!(headers["ce-specversion"], "1.0");
        assert_eq!(headers["content-type"], "application/json");
        assert!(headers.contains_key("ce-time"));
        assert_eq!(&body[..], br#"{"n":1}"#);
    }

    #[test]
    fn plain_messages_become_events_named_by_the_message() {
        let message = Message {
            id: uuid::Uuid::now_v7().to_string(),
            subject: "test.plain".into(),
            body: b"hello".to_vec(),
            traceparent: None,
        };
        let (headers, body) = binary(&event_of(&message, "/app"));
        assert_eq!(headers["ce-id"], message.id.as_str());
        assert_eq!(headers["ce-type"], "test.plain");
        assert_eq!(headers["ce-source"], "/app");
        assert_eq!(headers["content-type"], "application/octet-stream");
        assert_eq!(&body[..], b"hello");
    }
}
