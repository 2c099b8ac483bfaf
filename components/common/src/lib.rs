//! What every berth service shares: the request context the gateway hands over, the JSON
//! error shape of the public API, body parsing, validation (ISO 4217 currencies, text without
//! invisible characters, emails), SQL helpers, time and ids.

pub mod currency;
pub mod db;
mod error;
pub mod events;
#[cfg(feature = "password")]
pub mod password;
mod request;
pub mod text;
pub mod validate;

pub use error::{ApiError, ApiResult, FieldError};
pub use request::{Ctx, Object, json, parse_json, segments};

use spin_sdk::http::{Request, Response};

/// Runs a service's router and turns its errors into the API's JSON errors.
pub fn serve(request: &Request, route: impl FnOnce(&Request, &Ctx) -> ApiResult) -> Response {
    let ctx = Ctx::from_request(request);
    match route(request, &ctx) {
        Ok(response) => response,
        Err(error) => error.into_response(&ctx.trace_id),
    }
}

/// Now, as RFC 3339 UTC with microseconds and a fixed width, so strings sort like times.
pub fn now() -> String {
    timestamp(time::OffsetDateTime::now_utc())
}

/// `at` as [`now`] writes it.
pub fn timestamp(at: time::OffsetDateTime) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    at.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000000Z".into())
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64
}

/// A new random id (UUID v4).
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Whether `s` is a UUID in its usual hyphenated form.
pub fn is_uuid(s: &str) -> bool {
    s.len() == 36 && uuid::Uuid::parse_str(s).is_ok()
}
