use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unrouted_path_is_a_json_404() {
    let app = spawn_shop().await;
    let reply = app.get("/api/v2/nothing", None).await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.error_code(), "ROUTE_NOT_FOUND");
    assert_eq!(reply.header("content-type"), "application/json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_carries_a_request_id_and_trace_context() {
    let app = spawn_shop().await;
    for reply in [
        app.get("/nowhere", None).await,
        app.login("nobody@example.com", "whatever!").await,
        app.register("someone@example.com", "long enough").await,
    ] {
        assert_eq!(reply.header("x-request-id").len(), 36, "{}", reply.status);
        let tp: Vec<&str> = reply.header("traceparent").split('-').collect();
        assert_eq!(tp.len(), 4);
        assert_eq!((tp[0], tp[1].len(), tp[2].len()), ("00", 32, 16));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_trace_and_request_id_are_continued() {
    let app = spawn_shop().await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let reply = Reply::from(
        app.client
            .post(app.url("/api/v1/users/login"))
            .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
            .header("x-request-id", "req-from-the-client")
            .json(&json!({"email": "nobody@example.com", "password": "whatever!"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.json["traceId"], trace_id,
        "the component saw the caller's trace"
    );
    assert!(
        reply
            .header("traceparent")
            .starts_with(&format!("00-{trace_id}-"))
    );
    assert!(
        !reply.header("traceparent").contains("00f067aa0ba902b7"),
        "a new span per hop"
    );
    assert_eq!(reply.header("x-request-id"), "req-from-the-client");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_are_413_declared_or_streamed() {
    let app = spawn_shop().await;
    let big = vec![b' '; 1024 * 1024 + 1];
    let declared = Reply::from(
        app.client
            .post(app.url("/api/v1/users/register"))
            .header("content-type", "application/json")
            .body(big.clone())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(declared.status, 413);
    assert_eq!(declared.error_code(), "BODY_TOO_LARGE");

    let chunks = futures::stream::iter(
        big.chunks(64 * 1024)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let streamed = Reply::from(
        app.client
            .post(app.url("/api/v1/users/register"))
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(chunks))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(streamed.status, 413);
    assert_eq!(streamed.error_code(), "BODY_TOO_LARGE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_see_spin_headers_and_no_forged_ones() {
    let app = spawn(SANDBOX).await;
    let reply = Reply::from(
        app.client
            .get(app.url("/misbehave/headers?x=1"))
            .header("x-berth-user-id", "forged")
            .header("spin-path-info", "/forged")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 200);
    let headers = reply.text;
    assert!(!headers.contains("forged"), "{headers}");
    for expected in [
        "spin-path-info: /headers",
        "spin-matched-route: /misbehave/...",
        "spin-raw-component-route: /misbehave/...",
        "spin-component-route: /misbehave",
        "spin-base-path: /",
        "spin-full-url: http://127.0.0.1:",
        "spin-client-addr: 127.0.0.1:",
        "traceparent: 00-",
        "x-request-id: ",
    ] {
        assert!(
            headers.contains(expected),
            "missing `{expected}` in\n{headers}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_answers_health_and_readiness_and_guards_the_rest() {
    let app = spawn_shop().await;
    let health = Reply::from(
        app.client
            .get(format!("{}/healthz", app.admin))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (health.status, health.json["status"].as_str()),
        (200, Some("ok"))
    );
    let ready = Reply::from(
        app.client
            .get(format!("{}/readyz", app.admin))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (ready.status, ready.json["status"].as_str()),
        (200, Some("ready"))
    );
    let guarded = Reply::from(
        app.client
            .get(format!("{}/admin/v1/components", app.admin))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(guarded.status, 401);
    assert_eq!(guarded.error_code(), "ADMIN_TOKEN_REQUIRED");
    let wrong = Reply::from(
        app.client
            .get(format!("{}/admin/v1/components", app.admin))
            .bearer_auth("not-the-token")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(wrong.status, 401);
    let token_file = std::fs::read_to_string(app.data_dir.path().join("admin-token")).unwrap();
    assert_eq!(token_file.trim(), app.admin_token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_another_issuer_or_for_another_audience_are_refused() {
    let app = spawn_shop().await;
    let user = app.user().await;
    let path = format!("/api/v1/users/{}", user.id);
    let key = app.jwt_secret();
    let exp = unix_now() + 600;
    for (claims, why) in [
        (
            json!({"sub": user.id, "exp": exp, "iss": "someone-else"}),
            "another issuer",
        ),
        (
            json!({"sub": user.id, "exp": exp, "iss": null}),
            "no issuer",
        ),
        (
            json!({"sub": user.id, "exp": exp, "aud": "billing"}),
            "an audience the app does not check",
        ),
    ] {
        let token = sign_jwt(key.as_bytes(), &claims);
        let reply = app.get(&path, Some(&token)).await;
        assert_eq!(reply.status, 401, "{why}: {}", reply.text);
        assert_eq!(reply.error_code(), "TOKEN_INVALID", "{why}");
    }
    let own = sign_jwt(key.as_bytes(), &json!({"sub": user.id, "exp": exp}));
    assert_eq!(app.get(&path, Some(&own)).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_with_an_ambiguous_spelling_is_refused_before_routing() {
    let app = spawn_shop().await;
    for path in [
        "/api/v1/users//login",
        "/api/v1//users/login",
        "/api/v1/users/./login",
        "/api/v1/users/x/../login",
        "/api/v1/users%2Flogin",
    ] {
        let reply = raw_request(
            &app.base,
            &http_request("POST", path, &["content-type: application/json"], b"{}"),
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(reply.status(), Some(400), "{path}: {}", reply.text);
        assert!(reply.text.contains("BAD_PATH"), "{}", reply.text);
    }
}

/// `response_headers = []`: a response carries exactly the app's headers, as on Spin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn berths_own_response_headers_can_be_left_out() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("spin.toml"),
        format!(
            "spin_manifest_version = 2\n[application]\nname = \"plain\"\n\
             [application.tool.berth]\nresponse_headers = []\n\
             [[trigger.http]]\nroute = \"/misbehave/...\"\ncomponent = \"misbehave\"\n\
             [component.misbehave]\nsource = \"{}\"\nsqlite_databases = [\"m\"]\n\
             key_value_stores = [\"k\"]\nallowed_outbound_hosts = [\"http://127.0.0.1:*\"]\n",
            repo("target/wasm32-wasip2/release/misbehave.wasm").display()
        ),
    )
    .unwrap();
    let app = spawn_with(
        dir.path().join("spin.toml").to_str().unwrap(),
        None,
        tempfile::tempdir().unwrap(),
    )
    .await;
    let reply = app.get("/misbehave/nothing-in-particular", None).await;
    assert_eq!(reply.status, 404, "{}", reply.text);
    assert_eq!(reply.text, "unknown misbehaviour");
    for name in ["x-request-id", "traceparent", "x-berth-version"] {
        assert!(
            reply.headers.get(name).is_none(),
            "{name} was sent: {:?}",
            reply.headers
        );
    }
    assert_eq!(reply.headers["content-type"], "text/plain");

    // By default all three are there.
    let sandbox = spawn(SANDBOX).await;
    let reply = sandbox.get("/misbehave/nothing-in-particular", None).await;
    assert_eq!(reply.status, 404, "{}", reply.text);
    for name in ["x-request-id", "traceparent", "x-berth-version"] {
        assert!(
            reply.headers.get(name).is_some(),
            "{name}: {:?}",
            reply.headers
        );
    }
}
