//! Deny by default on the admin listener: no spelling of an admin path reaches an action
//! without the token, and with the token only the exact spelling does.

use std::time::Duration;

use crate::helpers::*;

/// Every admin action, as (method, path, takes the wasm as its body).
const ROUTES: [(&str, &str, bool); 5] = [
    ("GET", "/admin/v1/components", false),
    ("GET", "/admin/v1/dead-letters", false),
    (
        "POST",
        "/admin/v1/components/misbehave/versions?canary=1",
        true,
    ),
    ("POST", "/admin/v1/components/misbehave/promote", false),
    ("POST", "/admin/v1/components/misbehave/rollback", false),
];

/// The preamble of a component: a deploy that got past the guard would answer 400 or 422 for
/// it, not 401 or 404. (A small body, so the server's early answer is not lost to a reset.)
const COMPONENT_HEADER: &[u8] = b"\0asm\x0d\0\x01\0";

/// The same path spelled in ways a careless or hostile client would.
fn spellings(path: &str) -> Vec<String> {
    let (path, query) = match path.split_once('?') {
        Some((p, q)) => (p, format!("?{q}")),
        None => (path, String::new()),
    };
    let rest = path.trim_start_matches("/admin/");
    let with = |p: String| format!("{p}{query}");
    vec![
        with(format!("/{path}")),
        with(format!("/admin//{rest}")),
        with(format!("/./admin/{rest}")),
        with(format!("/admin/./{rest}")),
        with(format!(
            "/admin/v1/../v1/{}",
            rest.trim_start_matches("v1/")
        )),
        with(format!("/admin%2F{rest}")),
        with(format!("/admin/{}", rest.replace('/', "%2F"))),
        with(format!("/admin/{}", rest.replace('/', "%2f"))),
        with(format!("/%61dmin/{rest}")),
        with(format!("/admin/%2e/{rest}")),
        with(format!(
            "/admin/v1/%2E%2E/v1/{}",
            rest.trim_start_matches("v1/")
        )),
        with(format!("{path}/")),
        with(format!("/ADMIN/{rest}")),
        with(format!("/Admin/{rest}")),
        with(format!("/admin/{}", rest.to_uppercase())),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_spelling_of_an_admin_path_acts_without_the_token() {
    let app = spawn(SANDBOX).await;
    let before = app.admin_get("/admin/v1/components").await;
    assert_eq!(before.status, 200);
    for (method, path, upload) in ROUTES {
        let body: &[u8] = if upload { COMPONENT_HEADER } else { b"" };
        for spelling in std::iter::once(path.to_owned()).chain(spellings(path)) {
            let reply = raw_request(
                &app.admin,
                &http_request(method, &spelling, &[], body),
                Duration::from_secs(10),
            )
            .await;
            assert!(
                matches!(reply.status(), Some(401 | 404)),
                "{method} {spelling} without a token answered {:?}:\n{}",
                reply.status(),
                reply.text
            );
        }
    }
    let after = app.admin_get("/admin/v1/components").await;
    assert_eq!(
        before.json, after.json,
        "an admin action ran without the token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_token_only_the_exact_spelling_acts() {
    let app = spawn(SANDBOX).await;
    let before = app.admin_get("/admin/v1/components").await;
    let wasm = misbehave_variant(7002);
    let token = format!("authorization: Bearer {}", app.admin_token);
    for (method, path, upload) in ROUTES {
        let body: &[u8] = if upload { COMPONENT_HEADER } else { b"" };
        for spelling in spellings(path) {
            let reply = raw_request(
                &app.admin,
                &http_request(method, &spelling, &[&token], body),
                Duration::from_secs(10),
            )
            .await;
            assert_eq!(
                reply.status(),
                Some(404),
                "{method} {spelling} with the token answered:\n{}",
                reply.text
            );
            assert!(reply.text.contains("ROUTE_NOT_FOUND"), "{}", reply.text);
        }
    }
    assert_eq!(
        before.json,
        app.admin_get("/admin/v1/components").await.json,
        "a non-canonical spelling ran an action"
    );
    let exact = raw_request(
        &app.admin,
        &http_request(
            "POST",
            "/admin/v1/components/misbehave/versions?canary=1",
            &[&token],
            &wasm,
        ),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(exact.status(), Some(201), "{}", exact.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_endpoints_are_open_only_as_spelled() {
    let app = spawn(SANDBOX).await;
    for path in ["/healthz", "/readyz", "/metrics"] {
        let open = raw_request(
            &app.admin,
            &http_request("GET", path, &[], b""),
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(open.status(), Some(200), "{path}: {}", open.text);
        for spelling in [
            format!("/{path}"),
            format!("{path}/"),
            path.to_uppercase(),
            format!("/.{path}"),
        ] {
            let other = raw_request(
                &app.admin,
                &http_request("GET", &spelling, &[], b""),
                Duration::from_secs(10),
            )
            .await;
            assert_eq!(other.status(), Some(401), "{spelling}: {}", other.text);
        }
    }
    let post = raw_request(
        &app.admin,
        &http_request("POST", "/healthz", &[], b""),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(post.status(), Some(401), "{}", post.text);
}
