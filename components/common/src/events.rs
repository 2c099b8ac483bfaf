//! The event envelope of the public API: `{"id","type","occurredAt","data"}`. Each service
//! publishes through its own `wasmcloud:messaging` bindings; this is only the JSON.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event<T> {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub occurred_at: String,
    pub data: T,
}

/// A new event of `kind` (also its subject) carrying `data`, as bytes to publish.
pub fn envelope(kind: &str, data: impl Serialize) -> Result<Vec<u8>, String> {
    serde_json::to_vec(&Event {
        id: crate::new_id(),
        kind: kind.to_owned(),
        occurred_at: crate::now(),
        data,
    })
    .map_err(|e| format!("cannot encode a {kind} event: {e}"))
}

/// Reads an event; an error is final for this message (it becomes a dead letter).
pub fn parse<T: DeserializeOwned>(subject: &str, body: &[u8]) -> Result<Event<T>, String> {
    serde_json::from_slice(body).map_err(|e| format!("a {subject} event that cannot be read: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip() {
        let bytes = envelope("order.created", serde_json::json!({ "orderId": "o1" })).unwrap();
        let event: Event<serde_json::Value> = parse("order.created", &bytes).unwrap();
        assert_eq!(event.kind, "order.created");
        assert_eq!(event.data["orderId"], "o1");
        assert!(crate::is_uuid(&event.id));
        assert!(parse::<serde_json::Value>("x", b"{}").is_err());
    }
}
