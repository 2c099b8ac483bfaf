//! The service in-process, through its gateway: what a client of berth's shop sees.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use tower::ServiceExt as _;

const SECRET: &str = "a-test-secret-of-at-least-32-bytes!";

async fn spawn_app(dir: &tempfile::TempDir) -> axum::Router {
    rust_user_service::app(&rust_user_service::Config {
        jwt_secret: SECRET.into(),
        jwt_issuer: "berth-user".into(),
        token_ttl_seconds: 3600,
        db_path: dir.path().join("users.db"),
    })
    .await
    .expect("the app starts on a fresh database")
}

async fn call(
    app: &axum::Router,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let body = match body {
        Some(body) => {
            request = request.header("content-type", "application/json");
            Body::from(body.to_string())
        }
        None => Body::empty(),
    };
    let response = app
        .clone()
        .oneshot(request.body(body).expect("a valid request"))
        .await
        .unwrap();
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("a whole body")
        .to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn a_registered_user_logs_in_and_reads_only_their_own_profile() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(&dir).await;
    let ada = json!({"email": "Ada@Example.com", "password": "correct horse battery", "firstName": " Ada ", "lastName": "L"});
    let (status, body) = call(
        &app,
        "POST",
        "/api/v1/users/register",
        None,
        Some(ada.clone()),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["user"]["email"], "ada@example.com");
    assert_eq!(body["user"]["firstName"], "Ada");
    let (status, body) = call(&app, "POST", "/api/v1/users/register", None, Some(ada)).await;
    assert_eq!(
        (status.as_u16(), &body["error"]["code"]),
        (409, &json!("USER_EXISTS"))
    );

    let login = json!({"email": " ADA@example.com", "password": "correct horse battery"});
    let (status, body) = call(&app, "POST", "/api/v1/users/login", None, Some(login)).await;
    assert_eq!(status, 200, "{body}");
    let (token, id) = (
        body["token"].as_str().unwrap(),
        body["user"]["id"].as_str().unwrap(),
    );

    let (status, body) = call(
        &app,
        "GET",
        &format!("/api/v1/users/{id}"),
        Some(token),
        None,
    )
    .await;
    assert_eq!((status.as_u16(), &body["id"]), (200, &json!(id)));
    let (status, _) = call(&app, "GET", "/api/v1/users/someone-else", Some(token), None).await;
    assert_eq!(status, 403);
    let (status, body) = call(&app, "GET", &format!("/api/v1/users/{id}"), None, None).await;
    assert_eq!(
        (status.as_u16(), &body["error"]["code"]),
        (401, &json!("AUTH_REQUIRED"))
    );
    let (status, body) = call(
        &app,
        "PATCH",
        &format!("/api/v1/users/{id}"),
        Some(token),
        Some(json!({"lastName": null})),
    )
    .await;
    assert_eq!(
        (status.as_u16(), &body["error"]["details"][0]["field"]),
        (400, &json!("lastName"))
    );
    let (status, body) = call(
        &app,
        "HEAD",
        &format!("/api/v1/users/{id}"),
        Some(token),
        None,
    )
    .await;
    assert_eq!(status, 405, "{body}");
    let (status, body) = call(&app, "GET", "/api/v1/nothing", None, None).await;
    assert_eq!(
        (status.as_u16(), &body["error"]["code"]),
        (404, &json!("ROUTE_NOT_FOUND"))
    );
}
