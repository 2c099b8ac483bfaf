//! Before the load: do the baselines answer what berth answers? The same script of requests
//! (registration, login, profile reads and updates, bearer tokens good, bad, expired and
//! issued by the other side) goes to berth and to a baseline, and their answers are compared
//! by status, content type, `Allow`, `WWW-Authenticate` and JSON body, with what differs by
//! nature (ids, times, tokens, trace ids, a JSON parser's wording) normalised. A baseline
//! that answers differently is measured doing something else.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;

/// What the comparison looks at in one answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub content_type: Option<String>,
    pub allow: Option<String>,
    pub www_authenticate: Option<String>,
    /// Normalised ([`normalize`]); a body that is not JSON is kept as a string.
    pub body: Value,
}

/// One request of the script and the answer it got.
#[derive(Clone)]
pub struct Asked {
    pub name: String,
    pub answer: Answer,
}

/// Who the script logged in as on a service: its tokens go to the other service.
pub struct Session {
    pub token: String,
}

/// A difference between berth's answer and a baseline's.
#[derive(Debug)]
pub struct Difference {
    pub name: String,
    pub berth: Answer,
    pub other: Answer,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "  {}:", self.name)?;
        let (a, b) = (&self.berth, &self.other);
        let mut line = |what: &str, x: String, y: String| {
            if x != y {
                writeln!(f, "    {what:<16} berth {x}\n    {:<16} other {y}", "")
            } else {
                Ok(())
            }
        };
        line("status", a.status.to_string(), b.status.to_string())?;
        line(
            "content-type",
            format!("{:?}", a.content_type),
            format!("{:?}", b.content_type),
        )?;
        line("allow", format!("{:?}", a.allow), format!("{:?}", b.allow))?;
        line(
            "www-authenticate",
            format!("{:?}", a.www_authenticate),
            format!("{:?}", b.www_authenticate),
        )?;
        line("body", a.body.to_string(), b.body.to_string())
    }
}

/// The answers that differ, pairing the two scripts' requests by position.
pub fn compare(berth: &[Asked], other: &[Asked]) -> Vec<Difference> {
    let mut differences: Vec<Difference> = berth
        .iter()
        .zip(other)
        .filter(|(a, b)| a.answer != b.answer)
        .map(|(a, b)| Difference {
            name: a.name.clone(),
            berth: a.answer.clone(),
            other: b.answer.clone(),
        })
        .collect();
    // Both run the same script, so this only fires if a script stopped early.
    for missing in berth.iter().skip(other.len()) {
        differences.push(Difference {
            name: format!("{} (not asked of the other)", missing.name),
            berth: missing.answer.clone(),
            other: missing.answer.clone(),
        });
    }
    differences
}

/// `body` with what legitimately differs between two services replaced by placeholders:
/// UUIDs, RFC 3339 times, JWTs, the trace id, and what a JSON parser says about bad JSON
/// (serde_json's words and V8's are not the API).
pub fn normalize(body: Value) -> Value {
    match body {
        Value::String(s) => Value::String(placeholder(&s).unwrap_or(s)),
        Value::Array(items) => Value::Array(items.into_iter().map(normalize).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let v = match (k.as_str(), v) {
                        ("traceId", Value::String(t)) if is_hex(&t, 32) => json!("<trace id>"),
                        ("message", Value::String(m))
                            if m.starts_with("the body is not valid JSON: ") =>
                        {
                            json!("the body is not valid JSON: …")
                        }
                        (_, v) => normalize(v),
                    };
                    (k, v)
                })
                .collect(),
        ),
        other => other,
    }
}

fn placeholder(s: &str) -> Option<String> {
    if s.len() >= 36 {
        let replaced = without_uuids(s);
        if replaced != s {
            return Some(replaced);
        }
    }
    if is_timestamp(s) {
        Some("<time>".into())
    } else if is_jwt(s) {
        Some("<jwt>".into())
    } else {
        None
    }
}

/// `s` with every UUID in it (a whole id, or one in a path) replaced by `<uuid>`.
fn without_uuids(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while !rest.is_empty() {
        if let Some(candidate) = rest.get(..36)
            && is_uuid(candidate)
        {
            out.push_str("<uuid>");
            rest = &rest[36..];
            continue;
        }
        let mut chars = rest.chars();
        if let Some(c) = chars.next() {
            out.push(c);
        }
        rest = chars.as_str();
    }
    out
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| is_hex(p, n))
}

/// `2025-01-31T12:00:00.123456Z`, the fixed width `common::now` writes.
fn is_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    b.len() == 27
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'.'
        && digits(20..26)
        && b[26] == b'Z'
}

fn is_jwt(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 3
        && s.starts_with("eyJ")
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// An HS256 JWT over `claims`, as the user component signs one.
pub fn sign(secret: &[u8], claims: &Value) -> String {
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(signed.as_bytes());
    format!(
        "{signed}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A request of the script.
struct Ask<'a> {
    method: Method,
    path: String,
    token: Option<&'a str>,
    /// Content type and body.
    body: Option<(Option<&'static str>, String)>,
}

impl<'a> Ask<'a> {
    fn new(method: Method, path: impl Into<String>) -> Ask<'a> {
        Ask {
            method,
            path: path.into(),
            token: None,
            body: None,
        }
    }

    fn token(mut self, token: &'a str) -> Ask<'a> {
        self.token = Some(token);
        self
    }

    fn json(mut self, body: Value) -> Ask<'a> {
        self.body = Some((Some("application/json"), body.to_string()));
        self
    }

    fn raw(mut self, content_type: Option<&'static str>, body: &str) -> Ask<'a> {
        self.body = Some((content_type, body.to_owned()));
        self
    }
}

async fn send(client: &reqwest::Client, base: &str, ask: Ask<'_>) -> anyhow::Result<Answer> {
    let mut request = client.request(ask.method, format!("{base}{}", ask.path));
    if let Some(token) = ask.token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    if let Some((content_type, body)) = ask.body {
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        request = request.body(body);
    }
    let response = request.send().await?;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (content_type, allow, www_authenticate) = (
        header("content-type"),
        header("allow"),
        header("www-authenticate"),
    );
    let status = response.status().as_u16();
    let text = response.text().await?;
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok(Answer {
        status,
        content_type,
        allow,
        www_authenticate,
        body: normalize(body),
    })
}

const PASSWORD: &str = "correct horse battery";

/// The script: about thirty requests, the same for every service. `secret` and `issuer` are
/// the ones the services share, for the tokens the script forges.
pub async fn script(
    client: &reqwest::Client,
    base: &str,
    secret: &[u8],
    issuer: &str,
) -> anyhow::Result<(Vec<Asked>, Session)> {
    let mut asked = Vec::new();
    let mut ask = async |name: &str, ask: Ask<'_>| -> anyhow::Result<Answer> {
        let answer = send(client, base, ask).await?;
        asked.push(Asked {
            name: name.to_owned(),
            answer: answer.clone(),
        });
        Ok(answer)
    };
    let register = "/api/v1/users/register";
    let login = "/api/v1/users/login";
    let ada = json!({"email": "Ada@Example.com", "password": PASSWORD, "firstName": " Ada ", "lastName": "Lovelace"});
    ask(
        "register",
        Ask::new(Method::POST, register).json(ada.clone()),
    )
    .await?;
    let bob = json!({"email": "bob@example.com", "password": PASSWORD, "firstName": "Bob", "lastName": "Babbage"});
    let bob = ask(
        "register a second user",
        Ask::new(Method::POST, register).json(bob),
    )
    .await?;
    ask(
        "register: the same email again",
        Ask::new(Method::POST, register).json(ada),
    )
    .await?;
    let shouted = json!({"email": "ADA@EXAMPLE.COM", "password": PASSWORD, "firstName": "A", "lastName": "L"});
    ask(
        "register: the same email in capitals",
        Ask::new(Method::POST, register).json(shouted),
    )
    .await?;
    let invalid = json!({"email": "not an email", "password": "short", "firstName": "  ", "lastName": "x".repeat(101)});
    ask(
        "register: every field invalid",
        Ask::new(Method::POST, register).json(invalid),
    )
    .await?;
    ask(
        "register: no fields",
        Ask::new(Method::POST, register).json(json!({})),
    )
    .await?;
    let hidden = json!({"email": "eve\u{200b}@example.com", "password": PASSWORD, "firstName": "Eve", "lastName": "E"});
    ask(
        "register: a zero-width space in the email",
        Ask::new(Method::POST, register).json(hidden),
    )
    .await?;
    let typed = json!({"email": 5, "password": PASSWORD, "firstName": "N", "lastName": "N"});
    ask(
        "register: a number as the email",
        Ask::new(Method::POST, register).json(typed),
    )
    .await?;
    let unknown = json!({"email": "u@example.com", "password": PASSWORD, "firstName": "U", "lastName": "U", "admin": true});
    ask(
        "register: an unknown field",
        Ask::new(Method::POST, register).json(unknown),
    )
    .await?;
    ask(
        "register: an array",
        Ask::new(Method::POST, register).json(json!(["a@b.co", PASSWORD, "A", "B"])),
    )
    .await?;
    ask(
        "register: not JSON",
        Ask::new(Method::POST, register).raw(Some("application/json"), "{\"email\":"),
    )
    .await?;
    ask(
        "register: no content type",
        Ask::new(Method::POST, register).raw(None, "{}"),
    )
    .await?;
    ask("register: GET", Ask::new(Method::GET, register)).await?;

    let logged_in = ask(
        "login",
        Ask::new(Method::POST, login)
            .json(json!({"email": "ada@example.com", "password": PASSWORD})),
    )
    .await?;
    ask(
        "login: the email in other case and spaced",
        Ask::new(Method::POST, login)
            .json(json!({"email": " ADA@example.COM ", "password": PASSWORD})),
    )
    .await?;
    ask(
        "login: wrong password",
        Ask::new(Method::POST, login)
            .json(json!({"email": "ada@example.com", "password": "wrong horse battery"})),
    )
    .await?;
    ask(
        "login: unknown user",
        Ask::new(Method::POST, login)
            .json(json!({"email": "nobody@example.com", "password": PASSWORD})),
    )
    .await?;
    ask(
        "login: no password",
        Ask::new(Method::POST, login).json(json!({"email": "ada@example.com"})),
    )
    .await?;
    ask("login: DELETE", Ask::new(Method::DELETE, login)).await?;

    // The script needs the raw id and token: asked again without normalising.
    let raw: Value = client
        .post(format!("{base}{login}"))
        .json(&json!({"email": "ada@example.com", "password": PASSWORD}))
        .send()
        .await?
        .json()
        .await?;
    let (Some(id), Some(token)) = (raw["user"]["id"].as_str(), raw["token"].as_str()) else {
        anyhow::bail!("logging in at {base} answered {} ({raw})", logged_in.status);
    };
    let bob_id = if bob.status == 201 {
        let raw: Value = client
            .post(format!("{base}{login}"))
            .json(&json!({"email": "bob@example.com", "password": PASSWORD}))
            .send()
            .await?
            .json()
            .await?;
        raw["user"]["id"].as_str().unwrap_or_default().to_owned()
    } else {
        String::new()
    };
    let me = format!("/api/v1/users/{id}");
    let now = unix_now();
    let claims = |sub: &str, iss: &str, exp: u64| json!({"sub": sub, "email": "ada@example.com", "iss": iss, "iat": now, "exp": exp});
    let expired = sign(secret, &claims(id, issuer, now - 3600));
    let forged = sign(
        b"another-secret-of-at-least-32-bytes!",
        &claims(id, issuer, now + 600),
    );
    let elsewhere = sign(secret, &claims(id, "someone-else", now + 600));
    ask("GET own profile", Ask::new(Method::GET, &me).token(token)).await?;
    ask(
        "GET another user's profile",
        Ask::new(Method::GET, format!("/api/v1/users/{bob_id}")).token(token),
    )
    .await?;
    ask(
        "GET a profile that does not exist",
        Ask::new(
            Method::GET,
            "/api/v1/users/00000000-0000-4000-8000-000000000000",
        )
        .token(token),
    )
    .await?;
    ask(
        "GET a malformed id",
        Ask::new(Method::GET, "/api/v1/users/not-a-uuid").token(token),
    )
    .await?;
    ask("GET without a token", Ask::new(Method::GET, &me)).await?;
    ask(
        "GET with a token that is not a JWT",
        Ask::new(Method::GET, &me).token("not.a.jwt"),
    )
    .await?;
    ask(
        "GET with a token signed by another key",
        Ask::new(Method::GET, &me).token(&forged),
    )
    .await?;
    ask(
        "GET with an expired token",
        Ask::new(Method::GET, &me).token(&expired),
    )
    .await?;
    ask(
        "GET with a token of another issuer",
        Ask::new(Method::GET, &me).token(&elsewhere),
    )
    .await?;
    ask(
        "DELETE own profile",
        Ask::new(Method::DELETE, &me).token(token),
    )
    .await?;
    ask(
        "GET a path below a profile",
        Ask::new(Method::GET, format!("{me}/orders")).token(token),
    )
    .await?;
    ask(
        "GET a path no service serves",
        Ask::new(Method::GET, "/api/v1/nothing"),
    )
    .await?;

    ask(
        "PATCH own names",
        Ask::new(Method::PATCH, &me)
            .token(token)
            .json(json!({"firstName": " Augusta Ada "})),
    )
    .await?;
    ask(
        "PATCH an empty name",
        Ask::new(Method::PATCH, &me)
            .token(token)
            .json(json!({"firstName": "", "lastName": "x".repeat(101)})),
    )
    .await?;
    ask(
        "PATCH a null name",
        Ask::new(Method::PATCH, &me)
            .token(token)
            .json(json!({"lastName": null})),
    )
    .await?;
    ask(
        "PATCH an unknown field",
        Ask::new(Method::PATCH, &me)
            .token(token)
            .json(json!({"email": "x@example.com"})),
    )
    .await?;
    ask(
        "PATCH another user's names",
        Ask::new(Method::PATCH, format!("/api/v1/users/{bob_id}"))
            .token(token)
            .json(json!({"firstName": "Mallory"})),
    )
    .await?;
    ask(
        "GET own profile after PATCH",
        Ask::new(Method::GET, &me).token(token),
    )
    .await?;
    Ok((
        asked,
        Session {
            token: token.to_owned(),
        },
    ))
}

/// A token issued by the other service, for its own user: accepted by the gateway (not 401)
/// and then, since that user lives in the other database, 404.
pub async fn foreign_token(
    client: &reqwest::Client,
    base: &str,
    issued_by: &str,
    foreign: &Session,
) -> anyhow::Result<Asked> {
    let sub = foreign
        .token
        .split('.')
        .nth(1)
        .and_then(|claims| URL_SAFE_NO_PAD.decode(claims).ok())
        .and_then(|claims| serde_json::from_slice::<Value>(&claims).ok())
        .and_then(|claims| claims["sub"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let ask = Ask::new(Method::GET, format!("/api/v1/users/{sub}")).token(&foreign.token);
    Ok(Asked {
        name: format!("GET with a token {issued_by} issued"),
        answer: send(client, base, ask).await?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: Value) -> Answer {
        Answer {
            status,
            content_type: Some("application/json".into()),
            allow: None,
            www_authenticate: None,
            body: normalize(body),
        }
    }

    #[test]
    fn ids_times_tokens_and_trace_ids_do_not_count_as_differences() {
        let token = sign(b"k", &json!({"sub": "u"}));
        let a = json!({"token": token, "user": {"id": "0b0e5e8a-1f0b-4c4e-9d7e-6f1d2a3b4c5d", "createdAt": "2025-01-31T12:00:00.123456Z", "email": "ada@example.com"}});
        let b = json!({"token": sign(b"other", &json!({"sub": "v"})), "user": {"id": "f47ac10b-58cc-4372-a567-0e02b2c3d479", "createdAt": "2026-02-01T00:00:00.000001Z", "email": "ada@example.com"}});
        assert_eq!(normalize(a), normalize(b));
        let e = |trace: &str| json!({"error": {"code": "X", "message": "m"}, "traceId": trace});
        assert_eq!(
            normalize(e("4bf92f3577b34da6a3ce929d0e0e4736")),
            normalize(e("00000000000000000000000000000000"))
        );
    }

    #[test]
    fn what_the_api_says_still_counts() {
        let e = |message: &str| json!({"error": {"code": "USER_EXISTS", "message": message}});
        assert_ne!(
            normalize(e("a user with this email already exists")),
            normalize(e("a user with this email already exists; log in instead"))
        );
        assert_ne!(
            normalize(json!({"email": "a@b.co"})),
            normalize(json!({"email": "A@b.co"}))
        );
        // Not every dotted or dashed string is a token or an id.
        assert_eq!(normalize(json!("not.a.jwt")), json!("not.a.jwt"));
        assert_eq!(normalize(json!("2025-01-31")), json!("2025-01-31"));
        assert_eq!(
            normalize(json!(
                "no route matches /api/v1/users/f47ac10b-58cc-4372-a567-0e02b2c3d479/x"
            )),
            json!("no route matches /api/v1/users/<uuid>/x")
        );
    }

    #[test]
    fn a_json_parsers_wording_is_not_the_api() {
        let e = |m: &str| json!({"error": {"code": "INVALID_JSON", "message": m}});
        assert_eq!(
            normalize(e(
                "the body is not valid JSON: EOF while parsing a value at line 1 column 9"
            )),
            normalize(e(
                "the body is not valid JSON: Unexpected end of JSON input"
            ))
        );
    }

    #[test]
    fn differences_name_the_request_and_what_differs() {
        let asked = |status| Asked {
            name: "register".into(),
            answer: answer(status, json!({})),
        };
        assert!(compare(&[asked(201)], &[asked(201)]).is_empty());
        let differences = compare(&[asked(201), asked(409)], &[asked(201), asked(400)]);
        assert_eq!(differences.len(), 1);
        let text = differences[0].to_string();
        assert!(
            text.contains("register") && text.contains("409") && text.contains("400"),
            "{text}"
        );
        assert!(!text.contains("body"), "{text}");
        // A script that stopped early leaves answers unmatched.
        assert_eq!(compare(&[asked(201), asked(409)], &[asked(201)]).len(), 1);
    }
}
