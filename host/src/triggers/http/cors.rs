//! CORS for the public API, per app (`[application.tool.berth.cors]`). The gateway answers
//! preflights itself, before routing and auth (a browser sends no credentials with them), and
//! adds the `Access-Control-*` headers to every answer to an allowed origin, components'
//! answers included. Without the table, the gateway does no CORS at all and an `OPTIONS`
//! request is routed like any other.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};

use crate::config::berth::{CorsSettings, DEFAULT_CORS_MAX_AGE_SECONDS};
use crate::response::ApiError;

#[derive(Debug, Clone)]
enum Origins {
    Any,
    /// Lowercase `scheme://host[:port]`.
    List(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct Cors {
    origins: Origins,
    methods: Vec<Method>,
    /// Lowercase names.
    headers: Vec<String>,
    allow_methods: HeaderValue,
    allow_headers: HeaderValue,
    expose_headers: HeaderValue,
    credentials: bool,
    max_age: HeaderValue,
}

const DEFAULT_METHODS: [&str; 6] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];
const DEFAULT_HEADERS: [&str; 5] = [
    "authorization",
    "content-type",
    "idempotency-key",
    "traceparent",
    "x-request-id",
];
const DEFAULT_EXPOSE: [&str; 7] = [
    "x-request-id",
    "traceparent",
    "retry-after",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
    "x-berth-version",
];

impl Cors {
    pub fn from_settings(s: &CorsSettings) -> Result<Cors, Vec<String>> {
        let mut problems = Vec::new();
        let origins = if s.allow_origins.iter().any(|o| o == "*") {
            if s.allow_origins.len() > 1 {
                problems.push("allow_origins: `*` stands alone".to_owned());
            }
            if s.allow_credentials {
                problems.push(
                    "allow_origins = [\"*\"] with allow_credentials = true: browsers refuse it; name the origins".to_owned(),
                );
            }
            Origins::Any
        } else {
            for origin in &s.allow_origins {
                if !is_origin(origin) {
                    problems.push(format!(
                        "allow_origins: `{origin}` is not an origin (`https://host` or `http://host:port`, no path)"
                    ));
                }
            }
            if s.allow_origins.is_empty() {
                problems.push("allow_origins is empty: name at least one origin".to_owned());
            }
            Origins::List(
                s.allow_origins
                    .iter()
                    .map(|o| o.to_ascii_lowercase())
                    .collect(),
            )
        };
        let methods: Vec<Method> = match &s.allow_methods {
            Some(list) => list
                .iter()
                .filter_map(|m| {
                    Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                        .map_err(|_| problems.push(format!("allow_methods: `{m}` is not a method")))
                        .ok()
                })
                .collect(),
            None => DEFAULT_METHODS
                .iter()
                .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
                .collect(),
        };
        let names = |key: &str,
                     list: &Option<Vec<String>>,
                     default: &[&str],
                     problems: &mut Vec<String>| {
            let list: Vec<String> = match list {
                Some(list) => list.iter().map(|h| h.to_ascii_lowercase()).collect(),
                None => default.iter().map(|h| (*h).to_owned()).collect(),
            };
            for name in &list {
                if HeaderName::from_bytes(name.as_bytes()).is_err() {
                    problems.push(format!("{key}: `{name}` is not a header name"));
                }
            }
            list
        };
        let headers = names(
            "allow_headers",
            &s.allow_headers,
            &DEFAULT_HEADERS,
            &mut problems,
        );
        let expose = names(
            "expose_headers",
            &s.expose_headers,
            &DEFAULT_EXPOSE,
            &mut problems,
        );
        let joined = |items: Vec<String>| HeaderValue::try_from(items.join(", ")).ok();
        let (Some(allow_methods), Some(allow_headers), Some(expose_headers)) = (
            joined(methods.iter().map(ToString::to_string).collect()),
            joined(headers.clone()),
            joined(expose),
        ) else {
            problems.push("the lists do not fit in a header".to_owned());
            return Err(problems);
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Cors {
            origins,
            methods,
            headers,
            allow_methods,
            allow_headers,
            expose_headers,
            credentials: s.allow_credentials,
            max_age: HeaderValue::from(s.max_age_seconds.unwrap_or(DEFAULT_CORS_MAX_AGE_SECONDS)),
        })
    }

    fn allows(&self, origin: &HeaderValue) -> bool {
        match &self.origins {
            Origins::Any => true,
            Origins::List(list) => origin
                .to_str()
                .is_ok_and(|o| list.iter().any(|allowed| allowed.eq_ignore_ascii_case(o))),
        }
    }

    /// The answer to a preflight (`OPTIONS` with `Origin` and
    /// `Access-Control-Request-Method`), or `None` for any other request.
    pub fn preflight(
        &self,
        method: &Method,
        headers: &HeaderMap,
    ) -> Option<Result<HeaderMap, ApiError>> {
        if method != Method::OPTIONS {
            return None;
        }
        let origin = headers.get(header::ORIGIN)?;
        let requested = headers.get(header::ACCESS_CONTROL_REQUEST_METHOD)?;
        let forbidden =
            |message: String| ApiError::new(StatusCode::FORBIDDEN, "CORS_NOT_ALLOWED", message);
        if !self.allows(origin) {
            return Some(Err(forbidden(format!(
                "origin {} may not call this API",
                String::from_utf8_lossy(origin.as_bytes())
            ))));
        }
        let method_ok =
            Method::from_bytes(requested.as_bytes()).is_ok_and(|m| self.methods.contains(&m));
        if !method_ok {
            return Some(Err(forbidden(format!(
                "method {} is not allowed from a browser",
                String::from_utf8_lossy(requested.as_bytes())
            ))));
        }
        let asked = headers
            .get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty());
        for name in asked {
            if !self.headers.contains(&name) {
                return Some(Err(forbidden(format!(
                    "request header `{name}` is not allowed from a browser"
                ))));
            }
        }
        let mut answer = HeaderMap::new();
        self.allow_origin(origin, &mut answer);
        answer.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            self.allow_methods.clone(),
        );
        answer.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            self.allow_headers.clone(),
        );
        answer.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        answer.append(
            header::VARY,
            HeaderValue::from_static(
                "access-control-request-method, access-control-request-headers",
            ),
        );
        Some(Ok(answer))
    }

    /// Adds the CORS headers of an actual request's answer.
    pub fn decorate(&self, origin: Option<&HeaderValue>, response: &mut HeaderMap) {
        if let Some(origin) = origin
            && self.allows(origin)
        {
            self.allow_origin(origin, response);
            response.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                self.expose_headers.clone(),
            );
        } else if !matches!(self.origins, Origins::Any) {
            response.append(header::VARY, HeaderValue::from_static("origin"));
        }
    }

    fn allow_origin(&self, origin: &HeaderValue, headers: &mut HeaderMap) {
        match (&self.origins, self.credentials) {
            (Origins::Any, false) => {
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_ORIGIN,
                    HeaderValue::from_static("*"),
                );
            }
            _ => {
                headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
                headers.append(header::VARY, HeaderValue::from_static("origin"));
            }
        }
        if self.credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }
}

/// `scheme://host[:port]` with nothing after it.
fn is_origin(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once("://") else {
        return false;
    };
    matches!(scheme, "http" | "https")
        && !rest.is_empty()
        && !rest.contains(['/', '?', '#', '@', ' '])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(toml: &str) -> Cors {
        Cors::from_settings(&toml::from_str(toml).unwrap()).unwrap()
    }

    fn preflight(
        cors: &Cors,
        origin: &str,
        method: &str,
        headers: &str,
    ) -> Result<HeaderMap, ApiError> {
        let mut request = HeaderMap::new();
        request.insert(header::ORIGIN, HeaderValue::try_from(origin).unwrap());
        request.insert(
            header::ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::try_from(method).unwrap(),
        );
        if !headers.is_empty() {
            request.insert(
                header::ACCESS_CONTROL_REQUEST_HEADERS,
                HeaderValue::try_from(headers).unwrap(),
            );
        }
        cors.preflight(&Method::OPTIONS, &request).unwrap()
    }

    #[test]
    fn an_allowed_preflight_is_answered_with_what_may_follow() {
        let c = cors("allow_origins = [\"https://shop.example\"]\nallow_credentials = true");
        let answer = preflight(
            &c,
            "https://shop.example",
            "POST",
            "Content-Type, authorization",
        )
        .unwrap();
        assert_eq!(
            answer[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://shop.example"
        );
        assert_eq!(answer[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert!(
            answer[header::ACCESS_CONTROL_ALLOW_METHODS]
                .to_str()
                .unwrap()
                .contains("PATCH")
        );
        assert_eq!(answer[header::ACCESS_CONTROL_MAX_AGE], "600");
    }

    #[test]
    fn other_origins_methods_and_headers_are_refused() {
        let c = cors("allow_origins = [\"https://shop.example\"]\nallow_methods = [\"GET\"]");
        for (origin, method, headers, why) in [
            ("https://evil.example", "GET", "", "origin"),
            ("https://shop.example", "DELETE", "", "method"),
            ("https://shop.example", "GET", "x-admin", "x-admin"),
        ] {
            let err = preflight(&c, origin, method, headers).unwrap_err();
            assert_eq!(err.status, StatusCode::FORBIDDEN);
            assert!(err.message.contains(why), "{}", err.message);
        }
    }

    #[test]
    fn any_origin_without_credentials_is_a_star() {
        let c = cors("allow_origins = [\"*\"]");
        let mut response = HeaderMap::new();
        c.decorate(
            Some(&HeaderValue::from_static("https://a.example")),
            &mut response,
        );
        assert_eq!(response[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert!(
            response[header::ACCESS_CONTROL_EXPOSE_HEADERS]
                .to_str()
                .unwrap()
                .contains("ratelimit-remaining")
        );
        assert!(c.preflight(&Method::GET, &HeaderMap::new()).is_none());
    }

    #[test]
    fn bad_settings_are_named() {
        for (toml, expected) in [
            (
                "allow_origins = [\"*\"]\nallow_credentials = true",
                "browsers refuse",
            ),
            (
                "allow_origins = [\"https://a.example/path\"]",
                "not an origin",
            ),
            ("allow_origins = []", "is empty"),
            (
                "allow_origins = [\"https://a.example\"]\nallow_methods = [\"GE T\"]",
                "not a method",
            ),
        ] {
            let err = Cors::from_settings(&toml::from_str(toml).unwrap())
                .unwrap_err()
                .join("; ");
            assert!(err.contains(expected), "{toml}: {err}");
        }
    }
}
