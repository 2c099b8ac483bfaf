//! `{"error":{"code":"ORDER_NOT_FOUND","message":"…","details":[…]},"traceId":"…"}`

use serde::Serialize;
use spin_sdk::http::Response;

pub type ApiResult = Result<Response, ApiError>;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    pub details: Vec<FieldError>,
    /// `Allow` for 405s.
    pub allow: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
            allow: None,
        }
    }

    pub fn validation(details: Vec<FieldError>) -> ApiError {
        let fields: Vec<&str> = details.iter().map(|d| d.field.as_str()).collect();
        ApiError {
            details: details.clone(),
            ..ApiError::new(
                400,
                "VALIDATION_FAILED",
                format!("invalid fields: {}", fields.join(", ")),
            )
        }
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(401, "AUTH_REQUIRED", "this route needs a bearer token")
    }

    pub fn not_found(code: &'static str, what: &str) -> ApiError {
        ApiError::new(404, code, format!("{what} not found"))
    }

    pub fn route_not_found(path: &str) -> ApiError {
        ApiError::new(404, "ROUTE_NOT_FOUND", format!("no route matches {path}"))
    }

    pub fn method_not_allowed(allow: &'static str) -> ApiError {
        ApiError {
            allow: Some(allow),
            ..ApiError::new(405, "METHOD_NOT_ALLOWED", format!("use {allow}"))
        }
    }

    /// A failure of this service itself; the detail goes to the log, not the client.
    pub fn internal(detail: impl std::fmt::Display) -> ApiError {
        eprintln!("internal error: {detail}");
        ApiError::new(
            500,
            "INTERNAL",
            "the service failed; the trace id finds it in the log",
        )
    }

    /// The error as the API answers it, under the request's trace id.
    pub fn into_response(self, trace_id: &str) -> Response {
        let mut error = serde_json::json!({ "code": self.code, "message": self.message });
        if !self.details.is_empty() {
            error["details"] = serde_json::json!(self.details);
        }
        let body = serde_json::json!({ "error": error, "traceId": trace_id });
        let mut response = crate::json(self.status, &body);
        if let Some(allow) = self.allow {
            response.set_header("allow", allow);
        }
        response
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}
