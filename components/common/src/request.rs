//! What the gateway tells a service about a request, and JSON in and out.

use serde::de::{DeserializeOwned, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
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

/// Parses a JSON request body, an object ([`Object`]): 415 when it is not JSON, 400 with the
/// offending field when it does not fit.
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
    let Object(value) = serde_path_to_error::deserialize(&mut de).map_err(|e| {
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
        let mut message = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_owned();
        // "expected struct NewAddress" names a type of this service, not of the API.
        if let Some(at) = message.find("expected struct ") {
            message.replace_range(at.., "expected a JSON object");
        }
        ApiError::validation(vec![FieldError { field, message }])
    })?;
    de.end().map_err(invalid)?;
    Ok(value)
}

/// A struct read from a JSON object only. serde's derive also reads a struct from an array
/// of its fields in order (`["ada@example.com", "pw", "Ada", "L"]` as a registration), which
/// the API does not allow: use `Object<T>` for every struct-typed field of a request body.
#[derive(Debug)]
pub struct Object<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(MapOnly(deserializer)).map(Object)
    }
}

/// Hands a struct's visitor to `deserialize_map`, which takes `{…}` and refuses `[…]`.
struct MapOnly<D>(D);

impl<'de, D: Deserializer<'de>> Deserializer<'de> for MapOnly<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_any(visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_map(visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        a: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        inner: Option<Object<Inner>>,
        list: Option<Vec<Object<Inner>>>,
    }

    fn read(json: &str) -> Result<Outer, String> {
        let mut de = serde_json::Deserializer::from_str(json);
        serde_path_to_error::deserialize::<_, Object<Outer>>(&mut de)
            .map(|o| o.0)
            .map_err(|e| e.path().to_string())
    }

    #[test]
    fn structs_are_read_from_objects() {
        let outer = read(r#"{"inner":{"a":"x"},"list":[{"a":"y"}]}"#).unwrap();
        assert_eq!(outer.inner.unwrap().0.a, "x");
        assert_eq!(outer.list.unwrap()[0].0.a, "y");
    }

    #[test]
    fn a_struct_sent_as_an_array_is_refused_at_its_path() {
        assert_eq!(read(r#"[null, null]"#).unwrap_err(), ".");
        assert_eq!(read(r#"{"inner":["x"]}"#).unwrap_err(), "inner");
        assert_eq!(
            read(r#"{"list":[{"a":"y"},["z"]]}"#).unwrap_err(),
            "list[1]"
        );
    }
}
