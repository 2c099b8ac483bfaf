//! What berth's gateway does before the user component runs (`host/src/triggers/http`), as
//! axum middleware: a trace id and request id per request, the bearer token checked on
//! every route but registration and login, the verified user handed on as
//! `x-berth-user-id` (never a client's), and the body read within berth's 1 MiB limit.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use common::ApiError;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

pub const USER_ID_HEADER: &str = "x-berth-user-id";
const TRACEPARENT: &str = "traceparent";
const REQUEST_ID: &str = "x-request-id";
/// berth's default `max_request_bytes`.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;
/// Clock skew tolerated between the host that issued a token and the one checking it.
const LEEWAY_SECS: u64 = 30;
/// Routes of the user component that need no token (`public_routes` in spin.toml).
const PUBLIC_ROUTES: [&str; 2] = ["/api/v1/users/register", "/api/v1/users/login"];

/// The gateway's checks, then the service.
pub async fn check(
    State(verifier): State<Arc<JwtVerifier>>,
    request: Request,
    next: Next,
) -> Response {
    let trace = Trace::of(request.headers());
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .filter(|v| {
            v.len() <= 128 && !v.is_empty() && v.as_bytes().iter().all(u8::is_ascii_graphic)
        })
        .cloned()
        .unwrap_or_else(|| header_value(common::new_id()));
    let traceparent = header_value(trace.header());
    let mut response = match admit(&verifier, request, &traceparent).await {
        Ok(request) => next.run(request).await,
        Err(failure) => failure.into_response(&trace.id),
    };
    let headers = response.headers_mut();
    headers.insert(REQUEST_ID, request_id);
    headers.insert(TRACEPARENT, traceparent);
    response
}

async fn admit(
    verifier: &JwtVerifier,
    request: Request,
    traceparent: &HeaderValue,
) -> Result<Request, Failure> {
    let path = request.uri().path();
    // The shop routes `/api/v1/users/...` to the user component; nothing else is served.
    if path != "/api/v1/users" && !path.starts_with("/api/v1/users/") {
        return Err(ApiError::route_not_found(path).into());
    }
    let public = PUBLIC_ROUTES
        .iter()
        .any(|p| path.strip_suffix('/').unwrap_or(path) == *p);
    let user = if public {
        None
    } else {
        let user = verifier
            .verify(
                request
                    .headers()
                    .get(header::AUTHORIZATION)
                    .map(HeaderValue::as_bytes),
            )
            .map_err(|e| {
                Failure::new(ApiError::new(401, e.code(), e.to_string()))
                    .with_header(header::WWW_AUTHENTICATE, "Bearer")
            })?;
        Some(user)
    };
    let (mut parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, MAX_REQUEST_BYTES)
        .await
        .map_err(|e| {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if too_large {
                Failure::new(ApiError::new(
                    413,
                    "BODY_TOO_LARGE",
                    format!(
                        "the request body is larger than the limit of {MAX_REQUEST_BYTES} bytes"
                    ),
                ))
                .with_header(header::CONNECTION, "close")
            } else {
                Failure::new(ApiError::new(
                    400,
                    "BODY_UNREADABLE",
                    format!("the request body could not be read: {e}"),
                ))
            }
        })?;
    let headers = &mut parts.headers;
    headers.remove(USER_ID_HEADER);
    if let Some(user) = user.and_then(|u| HeaderValue::try_from(u).ok()) {
        headers.insert(USER_ID_HEADER, user);
    }
    headers.insert(TRACEPARENT, traceparent.clone());
    Ok(Request::from_parts(parts, Body::from(body)))
}

fn header_value(s: String) -> HeaderValue {
    HeaderValue::try_from(s).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// An error the API answers, with the headers that go with it.
pub struct Failure {
    pub error: ApiError,
    headers: Vec<(HeaderName, &'static str)>,
}

impl Failure {
    pub fn new(error: ApiError) -> Failure {
        Failure {
            error,
            headers: Vec::new(),
        }
    }

    fn with_header(mut self, name: HeaderName, value: &'static str) -> Failure {
        self.headers.push((name, value));
        self
    }

    /// `{"error":{"code","message","details"?},"traceId"}`, as `common::ApiError` writes it.
    pub fn into_response(self, trace_id: &str) -> Response {
        let e = self.error;
        let mut error = serde_json::json!({ "code": e.code, "message": e.message });
        if !e.details.is_empty() {
            error["details"] = serde_json::json!(e.details);
        }
        let body = serde_json::json!({ "error": error, "traceId": trace_id });
        let mut response = json(e.status, &body);
        let headers = response.headers_mut();
        if let Some(allow) = e.allow {
            headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        for (name, value) in self.headers {
            headers.insert(name, HeaderValue::from_static(value));
        }
        response
    }
}

impl From<ApiError> for Failure {
    fn from(error: ApiError) -> Failure {
        Failure::new(error)
    }
}

/// A JSON response, `content-type: application/json` without a charset as berth sends it.
pub fn json<T: serde::Serialize + ?Sized>(status: u16, body: &T) -> Response {
    let body = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let status = axum::http::StatusCode::from_u16(status)
        .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// What the gateway tells the service about a request (`common::Ctx`, read from the same
/// headers).
pub struct Ctx {
    pub trace_id: String,
    pub user_id: Option<String>,
}

impl Ctx {
    /// The verified caller; every route but the public ones has one.
    pub fn user(&self) -> Result<&str, ApiError> {
        self.user_id.as_deref().ok_or_else(ApiError::unauthorized)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Ctx {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Ctx, Self::Rejection> {
        let text = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let trace_id = text(TRACEPARENT)
            .and_then(|tp| tp.split('-').nth(1))
            .filter(|id| id.len() == 32)
            .map_or_else(|| "0".repeat(32), str::to_owned);
        let user_id = text(USER_ID_HEADER)
            .filter(|v| !v.is_empty())
            .map(str::to_owned);
        Ok(Ctx { trace_id, user_id })
    }
}

/// W3C trace context: the caller's trace if its `traceparent` is valid, else a new one, and
/// a new span for this hop.
struct Trace {
    id: String,
    span: String,
    sampled: bool,
}

impl Trace {
    fn of(headers: &HeaderMap) -> Trace {
        let parent = headers
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_traceparent);
        let (id, sampled) = parent.unwrap_or_else(|| (random_hex::<16>(), true));
        Trace {
            id,
            span: random_hex::<8>(),
            sampled,
        }
    }

    fn header(&self) -> String {
        let flags = if self.sampled { "01" } else { "00" };
        format!("00-{}-{}-{flags}", self.id, self.span)
    }
}

/// The trace id and sampled flag of a valid version-00 `traceparent`.
fn parse_traceparent(value: &str) -> Option<(String, bool)> {
    let mut parts = value.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let zero = |s: &str| s.bytes().all(|b| b == b'0');
    let valid = version == "00"
        && parts.next().is_none()
        && hex(trace, 32)
        && trace.bytes().all(|b| !b.is_ascii_uppercase())
        && !zero(trace)
        && hex(span, 16)
        && !zero(span)
        && hex(flags, 2);
    let sampled = u8::from_str_radix(flags, 16).ok()? & 1 == 1;
    valid.then(|| (trace.to_owned(), sampled))
}

/// `N` random bytes in lower-case hex, never all zero.
fn random_hex<const N: usize>() -> String {
    let mut bytes = [0u8; N];
    while bytes.iter().all(|&b| b == 0) {
        if getrandom::fill(&mut bytes).is_err() {
            bytes[0] = 1;
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a request has no verified user: `host/src/triggers/http/auth.rs`, word for word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    Missing,
    Invalid(&'static str),
    Expired,
}

impl AuthError {
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "AUTH_REQUIRED",
            AuthError::Invalid(_) => "TOKEN_INVALID",
            AuthError::Expired => "TOKEN_EXPIRED",
        }
    }
}

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthError::Missing => f.write_str(
                "this route needs `Authorization: Bearer <token>` (log in to get a token)",
            ),
            AuthError::Invalid(why) => write!(f, "the bearer token is not valid: {why}"),
            AuthError::Expired => f.write_str("the bearer token has expired: log in again"),
        }
    }
}

/// HS256 only, `exp`, `iss` and `sub` required, `nbf` checked, 30 s leeway, and a token
/// naming an audience refused (the shop names none).
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

#[derive(serde::Deserialize)]
struct Claims {
    sub: String,
}

impl JwtVerifier {
    pub fn new(secret: &[u8], issuer: &str) -> Result<JwtVerifier, jsonwebtoken::errors::Error> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_issuer(&[issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        Ok(JwtVerifier {
            key: DecodingKey::from_secret(secret)?,
            validation,
        })
    }

    /// The user id (`sub`) of a valid token in an `Authorization` header value.
    pub fn verify(&self, authorization: Option<&[u8]>) -> Result<String, AuthError> {
        let value = authorization.ok_or(AuthError::Missing)?;
        let value = std::str::from_utf8(value).map_err(|_| AuthError::Invalid("not text"))?;
        let (scheme, token) = value.trim().split_once(' ').ok_or(AuthError::Missing)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::Missing);
        }
        let claims = jsonwebtoken::decode::<Claims>(token.trim(), &self.key, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::InvalidSignature => AuthError::Invalid("bad signature"),
                ErrorKind::InvalidAlgorithm => AuthError::Invalid("only HS256 tokens are accepted"),
                ErrorKind::InvalidIssuer => AuthError::Invalid("issued by someone else"),
                ErrorKind::InvalidAudience => AuthError::Invalid("meant for someone else"),
                ErrorKind::ImmatureSignature => AuthError::Invalid("not valid yet"),
                ErrorKind::MissingRequiredClaim(_) => {
                    AuthError::Invalid("a required claim is missing")
                }
                _ => AuthError::Invalid("not a well-formed JWT"),
            })?
            .claims;
        let header_safe = |s: &str| s.bytes().all(|b| b.is_ascii_graphic());
        if claims.sub.is_empty() || claims.sub.len() > 128 || !header_safe(&claims.sub) {
            return Err(AuthError::Invalid("bad subject"));
        }
        Ok(claims.sub)
    }
}
