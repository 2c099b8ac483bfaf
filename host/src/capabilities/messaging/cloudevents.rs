//! Events as CloudEvents 1.0 over HTTP, the binding Knative Eventing and Dapr use: accepted
//! from a publisher in binary or structured mode, kept on the bus in structured JSON (what a
//! `wasmcloud:messaging` subscriber receives), and delivered to an HTTP subscriber in binary
//! mode.

use bytes::Bytes;
use cloudevents::Event;
use cloudevents::event::{AttributesReader, AttributesWriter, Data};
use http::StatusCode;
use http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

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
    let data = if is_json(content_type) {
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
            bad(format!(
                "the event's data is not the JSON its content type ({content_type}) says: {e}"
            ))
        })?;
        Data::Json(value)
    } else if content_type
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("text/")
    {
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

/// The event a message carries, in binary content mode: its attributes as `ce-*` headers,
/// its content type as `content-type`, its data as the body. A message published through
/// `wasmcloud:messaging` as plain bytes becomes an event of its own (the message id and
/// subject, `default_source`, the time its id was made).
pub fn binary(message: &Message, default_source: &str) -> (HeaderMap, Bytes) {
    match serde_json::from_slice::<serde_json::Map<String, Value>>(&message.body) {
        Ok(event) if event.contains_key("specversion") => structured_to_binary(event),
        _ => plain_to_binary(message, default_source),
    }
}

/// A structured event (as the host stored it) in binary mode, read without building the
/// SDK's typed event: delivery is on every event's path.
fn structured_to_binary(event: serde_json::Map<String, Value>) -> (HeaderMap, Bytes) {
    let mut headers = HeaderMap::with_capacity(event.len());
    let json_data = event
        .get("datacontenttype")
        .and_then(Value::as_str)
        .is_none_or(is_json);
    let mut body = Bytes::new();
    for (name, value) in event {
        match (name.as_str(), value) {
            ("data", Value::String(text)) if !json_data => body = Bytes::from(text),
            ("data", value) => body = Bytes::from(value.to_string()),
            ("data_base64", Value::String(encoded)) => {
                use base64::Engine as _;
                body = base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .map(Bytes::from)
                    .unwrap_or_default();
            }
            (name, value) => {
                let value = match value {
                    Value::String(text) => text,
                    other => other.to_string(),
                };
                let name = match name {
                    "datacontenttype" => Ok(CONTENT_TYPE),
                    name => HeaderName::try_from(format!("ce-{name}")),
                };
                if let (Ok(name), Ok(value)) = (name, HeaderValue::try_from(value)) {
                    headers.insert(name, value);
                }
            }
        }
    }
    (headers, body)
}

fn plain_to_binary(message: &Message, default_source: &str) -> (HeaderMap, Bytes) {
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
    let mut headers = HeaderMap::with_capacity(6);
    for (name, value) in [
        ("ce-specversion", "1.0".to_owned()),
        ("ce-id", message.id.clone()),
        ("ce-type", message.subject.clone()),
        ("ce-source", default_source.to_owned()),
        (
            "ce-time",
            time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        ),
        ("content-type", content_type.to_owned()),
    ] {
        if let Ok(value) = HeaderValue::try_from(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    (headers, Bytes::from(message.body.clone()))
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence.ends_with("+json")
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
        let (headers, body) = binary(&message, "/shop");
        assert_eq!(headers["ce-source"], "/shop/order");
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
        let (headers, body) = binary(&message, "/app");
        assert_eq!(headers["ce-id"], message.id.as_str());
        assert_eq!(headers["ce-type"], "test.plain");
        assert_eq!(headers["ce-source"], "/app");
        assert_eq!(headers["content-type"], "application/octet-stream");
        assert_eq!(&body[..], b"hello");
    }
}
