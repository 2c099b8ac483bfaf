//! The dashboard on the admin listener: a login page, one live page, and the cookie session
//! that lets the page use the admin API.
//!
//! | route (matched exactly, before any authentication) | |
//! |---|---|
//! | `GET /` | the dashboard with a live session, else the login form |
//! | `POST /login` | form field `token`: the admin token, compared in constant time; sets the session cookie |
//! | `POST /logout` | form field `csrf`: ends the session |
//! | `GET /assets/dashboard.js`, `/assets/dashboard.css`, `/assets/icon.svg` | the page's code, built into the binary |
//!
//! Everything else on the listener still needs `Authorization: Bearer <token>`, or the session
//! cookie; with the cookie, every request but a `GET` must also carry the session's CSRF
//! token in `X-Berth-Csrf` (given to the page in a `<meta>` when it is served), else 403. The
//! token is never in a URL, a page or the browser's storage: the browser holds only the
//! cookie (`HttpOnly; SameSite=Strict`), and the host only the cookie's digest
//! ([`sessions`]). Every answer of the admin listener is `Cache-Control: no-store`, and the
//! pages allow scripts, styles and images from the listener itself only (no inline script).
//!
//! The page is vanilla JavaScript and CSS with SVG charts drawn in the browser, fed by
//! [`stream`] (server-sent events) and the admin API's JSON.

mod sessions;
mod stream;

use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::config::App;
use crate::control::deployments::Deployments;
use crate::triggers::http::body::{self, BodyError};
use crate::triggers::http::{ApiError, Body};
use sessions::{NewSession, Sessions, csrf_matches};
use stream::Streams;

/// The session cookie's name.
const COOKIE: &str = "berth_session";
/// The header that carries the session's CSRF token on every non-GET request.
pub const CSRF_HEADER: &str = "x-berth-csrf";
/// The login and logout forms are a token and a little more.
const MAX_FORM_BYTES: u64 = 4096;

const LOGIN_HTML: &str = include_str!("assets/login.html");
const DASHBOARD_HTML: &str = include_str!("assets/dashboard.html");
const DASHBOARD_JS: &str = include_str!("assets/dashboard.js");
const DASHBOARD_CSS: &str = include_str!("assets/dashboard.css");
const ICON_SVG: &str = include_str!("assets/icon.svg");

/// The pages allow nothing but the listener's own scripts, styles, images and API.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'";

pub struct Dashboard {
    /// sha256 of the admin token, as `Admin` keeps it.
    token_digest: [u8; 32],
    sessions: Sessions,
    streams: Streams,
}

/// How a request without a bearer token stands with the dashboard's session.
#[derive(Debug, PartialEq, Eq)]
pub enum Access {
    /// A live session, and a CSRF token where one is needed.
    Granted,
    /// A live session, but a non-GET without its CSRF token.
    CsrfMissing,
    /// No live session.
    Denied,
}

impl Dashboard {
    pub fn new(
        token_digest: [u8; 32],
        app: std::sync::Arc<arc_swap::ArcSwap<App>>,
        control: std::sync::Arc<Deployments>,
    ) -> Dashboard {
        Dashboard {
            token_digest,
            sessions: Sessions::default(),
            streams: Streams::new(app, control),
        }
    }

    /// Whether `method path` is one of the dashboard's open routes, spelled exactly.
    pub fn is_open(method: &Method, path: &str) -> bool {
        matches!(
            (method, path),
            (&Method::GET, "/")
                | (&Method::POST, "/login")
                | (&Method::POST, "/logout")
                | (&Method::GET, "/assets/dashboard.js")
                | (&Method::GET, "/assets/dashboard.css")
                | (&Method::GET, "/assets/icon.svg")
        )
    }

    /// Answers an open route ([`Dashboard::is_open`]).
    pub async fn open(&self, request: Request<Incoming>) -> Response<Body> {
        match (request.method(), request.uri().path()) {
            (&Method::GET, "/") => match self.session(request.headers()) {
                Some(csrf) => self.page(&csrf),
                None => login_page(StatusCode::OK, ""),
            },
            (&Method::POST, "/login") => self.login(request).await,
            (&Method::POST, "/logout") => self.logout(request).await,
            (_, "/assets/dashboard.js") => asset(DASHBOARD_JS, "text/javascript; charset=utf-8"),
            (_, "/assets/dashboard.css") => asset(DASHBOARD_CSS, "text/css; charset=utf-8"),
            (_, "/assets/icon.svg") => asset(ICON_SVG, "image/svg+xml"),
            _ => login_page(StatusCode::NOT_FOUND, "There is no such page."),
        }
    }

    /// Whether a request without a bearer token may use the admin API through a session.
    pub fn access<B>(&self, request: &Request<B>) -> Access {
        let Some(csrf) = self.session(request.headers()) else {
            return Access::Denied;
        };
        if request.method() == Method::GET {
            return Access::Granted;
        }
        let given = request
            .headers()
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if csrf_matches(&csrf, given) {
            Access::Granted
        } else {
            Access::CsrfMissing
        }
    }

    /// `GET /admin/v1/stream`, for an authorised request.
    pub fn stream(&self) -> Result<Response<Body>, ApiError> {
        self.streams.open()
    }

    /// Ends every open stream: the host is stopping, and an endless body would hold the
    /// listener's drain until it times out.
    pub fn close_streams(&self) {
        self.streams.close();
    }

    /// The CSRF token of the live session the request's cookie names.
    fn session(&self, headers: &HeaderMap) -> Option<String> {
        let cookie = session_cookie(headers)?;
        self.sessions.find(cookie, Instant::now())
    }

    fn page(&self, csrf: &str) -> Response<Body> {
        let html = DASHBOARD_HTML.replace("{{csrf}}", &escape(csrf));
        html_response(StatusCode::OK, html)
    }

    async fn login(&self, request: Request<Incoming>) -> Response<Body> {
        let form = match read_form(request).await {
            Ok(form) => form,
            Err(refused) => return refused,
        };
        let token = form_value(&form, "token").unwrap_or_default();
        let digest: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        // Digests compared in constant time, as the bearer token is.
        if !bool::from(digest.ct_eq(&self.token_digest)) {
            return login_page(
                StatusCode::UNAUTHORIZED,
                "That is not the admin token. berth up prints where it is kept (<data-dir>/admin-token), unless BERTH_ADMIN_TOKEN set it.",
            );
        }
        let NewSession { cookie, .. } = self.sessions.create(Instant::now());
        let mut response = redirect_home();
        if let Ok(value) = HeaderValue::try_from(format!(
            "{COOKIE}={cookie}; HttpOnly; SameSite=Strict; Path=/"
        )) {
            response.headers_mut().insert(header::SET_COOKIE, value);
        }
        response
    }

    async fn logout(&self, request: Request<Incoming>) -> Response<Body> {
        let cookie = session_cookie(request.headers()).map(str::to_owned);
        let form = match read_form(request).await {
            Ok(form) => form,
            Err(refused) => return refused,
        };
        if let Some(cookie) = cookie {
            let given = form_value(&form, "csrf").unwrap_or_default();
            match self.sessions.find(&cookie, Instant::now()) {
                Some(csrf) if csrf_matches(&csrf, &given) => self.sessions.remove(&cookie),
                Some(_) => {
                    return login_page(
                        StatusCode::FORBIDDEN,
                        "The logout form was not the dashboard's own; log out from the dashboard.",
                    );
                }
                None => {}
            }
        }
        let mut response = redirect_home();
        response.headers_mut().insert(
            header::SET_COOKIE,
            HeaderValue::from_static(
                "berth_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0",
            ),
        );
        response
    }
}

/// The error of a session request that lacks its CSRF token.
pub fn csrf_refused() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "CSRF_TOKEN_REQUIRED",
        format!(
            "a request with the dashboard's session cookie must carry the session's CSRF token in `{CSRF_HEADER}`; reload the dashboard, or use `Authorization: Bearer <token>`"
        ),
    )
}

/// Sets what every answer of the admin listener carries: never cached, never framed, types
/// never sniffed, and the pages' content policy.
pub fn secure(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

/// The value of the session cookie among the request's `Cookie` headers.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE && !value.is_empty()).then_some(value)
        })
}

/// A form body, bounded to [`MAX_FORM_BYTES`]; a refusal is the login page saying why.
async fn read_form(request: Request<Incoming>) -> Result<String, Response<Body>> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    match body::read(request.into_body(), declared, MAX_FORM_BYTES).await {
        Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Err(BodyError::TooLarge(limit)) => Err(login_page(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("The form was larger than {limit} bytes; paste only the admin token."),
        )),
        Err(BodyError::Unreadable(e)) => Err(login_page(
            StatusCode::BAD_REQUEST,
            &format!("The form could not be read ({e}); try again."),
        )),
    }
}

/// The first value of `name` in an `application/x-www-form-urlencoded` body.
fn form_value(form: &str, name: &str) -> Option<String> {
    form.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(key) == name).then(|| percent_decode(value))
    })
}

/// Decodes `+` and `%XX` as a form encodes them; a broken escape is kept as written.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Text made safe to put in HTML, as element content or a quoted attribute.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn login_page(status: StatusCode, message: &str) -> Response<Body> {
    let message = if message.is_empty() {
        String::new()
    } else {
        format!("<p class=\"error\" role=\"alert\">{}</p>", escape(message))
    };
    html_response(status, LOGIN_HTML.replace("{{message}}", &message))
}

fn html_response(status: StatusCode, html: String) -> Response<Body> {
    let mut response = asset_response(Bytes::from(html), "text/html; charset=utf-8");
    *response.status_mut() = status;
    response
}

fn asset(text: &'static str, content_type: &'static str) -> Response<Body> {
    asset_response(Bytes::from_static(text.as_bytes()), content_type)
}

fn asset_response(bytes: Bytes, content_type: &'static str) -> Response<Body> {
    let mut response = Response::new(
        Full::new(bytes)
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// After a login or logout: to the dashboard, which shows the login form without a session.
fn redirect_home() -> Response<Body> {
    let mut response = asset_response(Bytes::new(), "text/plain; charset=utf-8");
    *response.status_mut() = StatusCode::SEE_OTHER;
    response
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static("/"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dashboard() -> Dashboard {
        Dashboard {
            token_digest: Sha256::digest(b"secret").into(),
            sessions: Sessions::default(),
            streams: Streams::of(std::sync::Arc::new(|| serde_json::json!({}))),
        }
    }

    fn request(method: Method, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::builder()
            .method(method)
            .uri("/admin/v1/components");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn a_session_reads_freely_and_changes_only_with_its_csrf_token() {
        let dashboard = dashboard();
        let new = dashboard.sessions.create(Instant::now());
        let cookie = format!("theme=dark; {COOKIE}={}", new.cookie);
        let with = |method, extra: &[(&str, &str)]| {
            let mut headers = vec![("cookie", cookie.as_str())];
            headers.extend_from_slice(extra);
            dashboard.access(&request(method, &headers))
        };
        assert_eq!(with(Method::GET, &[]), Access::Granted);
        assert_eq!(with(Method::POST, &[]), Access::CsrfMissing);
        assert_eq!(
            with(Method::POST, &[(CSRF_HEADER, "0".repeat(64).as_str())]),
            Access::CsrfMissing
        );
        assert_eq!(
            with(Method::POST, &[(CSRF_HEADER, new.csrf.as_str())]),
            Access::Granted
        );
        // Another session's token is no good either.
        let other = dashboard.sessions.create(Instant::now());
        assert_eq!(
            with(Method::DELETE, &[(CSRF_HEADER, other.csrf.as_str())]),
            Access::CsrfMissing
        );
        // A token without a session grants nothing.
        assert_eq!(
            dashboard.access(&request(Method::POST, &[(CSRF_HEADER, &new.csrf)])),
            Access::Denied
        );
        assert_eq!(
            dashboard.access(&request(Method::GET, &[("cookie", "berth_session=nope")])),
            Access::Denied
        );
    }

    #[test]
    fn only_the_exact_open_paths_are_open() {
        assert!(Dashboard::is_open(&Method::GET, "/"));
        assert!(Dashboard::is_open(&Method::POST, "/login"));
        assert!(Dashboard::is_open(&Method::GET, "/assets/dashboard.js"));
        for (method, path) in [
            (Method::GET, "//"),
            (Method::GET, "/login"),
            (Method::POST, "/"),
            (Method::GET, "/assets/"),
            (Method::GET, "/assets/dashboard.js/"),
            (Method::GET, "/assets/../admin/v1/components"),
            (Method::GET, "/assets/%64ashboard.js"),
            (Method::GET, "/index.html"),
        ] {
            assert!(!Dashboard::is_open(&method, path), "{method} {path}");
        }
    }

    #[test]
    fn forms_are_decoded_as_browsers_encode_them() {
        assert_eq!(
            form_value("a=1&token=ab%2Bc+d%3D&x", "token").as_deref(),
            Some("ab+c d=")
        );
        assert_eq!(form_value("x&token", "token").as_deref(), Some(""));
        assert_eq!(form_value("tokenx=1", "token"), None);
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn the_session_cookie_is_found_among_others_and_only_by_its_name() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; xberth_session=no"),
        );
        assert_eq!(session_cookie(&headers), None);
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("b=2;berth_session=yes"),
        );
        assert_eq!(session_cookie(&headers), Some("yes"));
    }

    #[test]
    fn the_pages_carry_no_inline_script_and_the_login_form_posts_no_token_in_a_url() {
        for page in [LOGIN_HTML, DASHBOARD_HTML] {
            for tag in page.split("<script").skip(1) {
                let (attributes, rest) = tag.split_once('>').unwrap();
                assert!(attributes.contains("src=\"/assets/"), "{attributes}");
                assert!(
                    rest.trim_start().starts_with("</script>"),
                    "inline script: {rest}"
                );
            }
            let handler = page.split(" on").skip(1).find(|rest| {
                let name: String = rest.chars().take_while(char::is_ascii_alphabetic).collect();
                !name.is_empty() && rest[name.len()..].starts_with('=')
            });
            assert_eq!(handler, None, "no inline event handlers");
            assert!(!page.contains("style=\""), "no inline styles");
        }
        assert!(LOGIN_HTML.contains("method=\"post\" action=\"/login\""));
        assert!(LOGIN_HTML.contains("type=\"password\""));
        assert!(!DASHBOARD_JS.contains("localStorage") && !DASHBOARD_JS.contains("sessionStorage"));
    }
}
