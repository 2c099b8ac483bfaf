//! Events as CloudEvents over HTTP, the binding that Knative Eventing and Dapr speak, so a
//! service runs unchanged on berth, on Spin and on SpinKube.
//!
//! - Publishing POSTs the event in binary mode to the URL of the `events_url` variable. On
//!   berth that URL is `http://events.berth.internal`, which puts the event in the outbox of
//!   the invocation's own transaction; elsewhere it is the platform's broker.
//! - Receiving: the platform POSTs each event to the service's event route in binary mode;
//!   [`receive`] reads it and [`first_time`] records its id in the service's own
//!   `handled_events` table, in the handler's transaction, so a redelivery changes nothing
//!   on any platform.

use serde::Serialize;
use serde::de::DeserializeOwned;
use spin_sdk::http::{Method, Request, Response, send};

use crate::ApiError;
use crate::db::{Db, text};

/// A delivered event: its id (`ce-id`), type (`ce-type`) and data.
pub struct Event<T> {
    pub id: String,
    pub kind: String,
    pub data: T,
}

impl Event<serde_json::Value> {
    /// The event with its data read as `T`; data of another shape is refused with 400.
    pub fn typed<T: DeserializeOwned>(self) -> Result<Event<T>, ApiError> {
        let data = serde_json::from_value(self.data).map_err(|e| {
            ApiError::new(
                400,
                "BAD_EVENT",
                format!("a {} event whose data cannot be read: {e}", self.kind),
            )
        })?;
        Ok(Event {
            id: self.id,
            kind: self.kind,
            data,
        })
    }
}

/// Publishes `data` as a CloudEvent of type `kind`, from `source` (`/<app>/<service>`).
pub fn publish(source: &str, kind: &str, data: impl Serialize) -> Result<(), ApiError> {
    let url = spin_sdk::variables::get("events_url").map_err(|e| {
        ApiError::internal(format!(
            "the events_url variable is unavailable ({e:?}): set it to the broker's URL"
        ))
    })?;
    let body = serde_json::to_vec(&data)
        .map_err(|e| ApiError::internal(format!("cannot encode a {kind} event: {e}")))?;
    let request = Request::builder()
        .method(Method::Post)
        .uri(&url)
        .header("ce-specversion", "1.0")
        .header("ce-id", crate::new_id())
        .header("ce-type", kind)
        .header("ce-source", source)
        .header("ce-time", crate::now())
        .header("content-type", "application/json")
        .body(body)
        .build();
    let response: Response = spin_sdk::http::run(send(request))
        .map_err(|e| ApiError::internal(format!("cannot publish {kind} to {url}: {e}")))?;
    let status = *response.status();
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(ApiError::internal(format!(
            "{url} refused the {kind} event with {status}: {}",
            String::from_utf8_lossy(response.body())
        )))
    }
}

/// Reads a delivered event. One that cannot be read is refused with 400, which the
/// platform does not retry.
pub fn receive<T: DeserializeOwned>(request: &Request) -> Result<Event<T>, ApiError> {
    let header = |name: &str| {
        request
            .header(name)
            .and_then(|v| v.as_str())
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| {
                ApiError::new(
                    400,
                    "BAD_EVENT",
                    format!("not a CloudEvent in binary mode: the {name} header is missing"),
                )
            })
    };
    let (id, kind) = (header("ce-id")?, header("ce-type")?);
    let data = serde_json::from_slice(request.body()).map_err(|e| {
        ApiError::new(
            400,
            "BAD_EVENT",
            format!("a {kind} event whose data cannot be read: {e}"),
        )
    })?;
    Ok(Event { id, kind, data })
}

/// How long handled ids are remembered; redeliveries come far sooner.
const REMEMBERED_SECONDS: i64 = 7 * 24 * 3600;

/// Records the event `id` as handled, inside the handler's transaction; false when it
/// already was, and then the handler must change nothing. About one event in sixteen also
/// forgets the ids older than a week, so the table stays small without a sweeper.
pub fn first_time(tx: &Db, id: &str) -> Result<bool, ApiError> {
    let rows = tx.query(
        "INSERT INTO handled_events (event_id, handled_at) VALUES (?, ?)
         ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
        &[text(id), text(crate::now())],
    )?;
    let first = rows.rows().next().is_some();
    if first && id.ends_with('0') {
        let before = time::OffsetDateTime::now_utc() - time::Duration::seconds(REMEMBERED_SECONDS);
        tx.query(
            "DELETE FROM handled_events WHERE handled_at < ?",
            &[text(crate::timestamp(before))],
        )?;
    }
    Ok(first)
}

/// The answer to a delivered event: 200 whether it changed something or was a duplicate.
pub fn handled_response(outcome: &str) -> Response {
    crate::json(200, &serde_json::json!({ "outcome": outcome }))
}
