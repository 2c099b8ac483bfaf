//! What the gateway tells a service about a request, and JSON in and out.

use serde::Serialize;
use serde::de::DeserializeOwned;
use spin_sdk::http::{Request, Response};

use crate::error::{ApiError, FieldError};

/// Set by the gateway from a verified bearer token; the gateway strips it from clients.
pub const USER_ID_HEADER: &str = "x-berth-user-id";

pub struct Ctx {
    /// The W3C trace id of this request, for error bodies.
    pub trace_id: String,
    pub user_id: Option<String>,
}

impl Ctx {
    pub fn from_request(request: &Request) -> Ctx {
        let trace_id = request
            .header("traceparent")
            .and_then(|v| v.as_str())
            .and_then(|tp| tp.split('-').nth(1))
            .filter(|id| id.len() == 32)
            .map(str::to_owned)
            .unwrap_or_else(|| "0".repeat(32));
        let user_id = request
            .header(USER_ID_HEADER)
            .and_then(|v| v.as_str())
            .filter(|v| !v.is_empty())
            .map(str::to_owned);
        Ctx { trace_id, user_id }
    }

    /// The verified caller; a service behind `auth = "jwt"` always has one.
    pub fn user(&self) -> Result<&str, ApiError> {
        self.user_id.as_deref().ok_or_else(ApiError::unauthorized)
    }
}

/// The path split into its segments: `/api/v1/users/42` → `["api", "v1", "users", "42"]`.
pub fn segments(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).collect()
}

pub fn json<T: Serialize + ?Sized>(status: u16, body: &T) -> Response {
    let body = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body)
        .build()
}

/// Parses a JSON request body: 415 when it is not JSON, 400 with the offending field when
/// it does not fit.
pub fn parse_json<T: DeserializeOwned>(request: &Request) -> Result<T, ApiError> {
    let content_type = request
        .header("content-type")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::new(
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            "send the body as JSON with `content-type: application/json`",
        ));
    }
    let invalid = |e: serde_json::Error| {
        ApiError::new(
            400,
            "INVALID_JSON",
            format!("the body is not valid JSON: {e}"),
        )
    };
    let mut de = serde_json::Deserializer::from_slice(request.body());
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        if !inner.is_data() {
            return invalid(inner);
        }
        let field = if field == "." {
            "body".to_owned()
        } else {
            field
        };
        let message = inner.to_string();
        let message = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_owned();
        ApiError::validation(vec![FieldError { field, message }])
    })?;
    de.end().map_err(invalid)?;
    Ok(value)
}
