//! Rate limits as Kong counts them, per route and key, with the `RateLimit-*` headers; path
//! spellings that would dodge them; CORS answered by the gateway; and a CPU-heavy route kept
//! to its own share of its component. tests/apps/limits.toml and the shop's spin.toml.

use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_a_limit_get_429_with_retry_after_and_ratelimit_headers() {
    let app = spawn(LIMITS).await;
    for remaining in ["2", "1", "0"] {
        let reply = app.get("/work/limited/ok", None).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(reply.header("ratelimit-limit"), "3");
        assert_eq!(reply.header("ratelimit-remaining"), remaining);
        assert!(!reply.header("ratelimit-reset").is_empty());
    }
    let limited = app.get("/work/limited/ok", None).await;
    assert_eq!(limited.status, 429, "{}", limited.text);
    assert_eq!(limited.error_code(), "RATE_LIMITED");
    let retry: u64 = limited.header("retry-after").parse().unwrap();
    assert!((1..=1).contains(&retry), "retry-after {retry}");
    assert_eq!(limited.header("ratelimit-remaining"), "0");
    assert_eq!(limited.header("ratelimit-limit"), "3");

    let other = app.get("/work/ok", None).await;
    assert_eq!(other.status, 200, "an unlimited route is limited");
    assert!(other.header("ratelimit-limit").is_empty());
    assert_eq!(
        app.metric(r#"berth_rate_limited_total{limit_by="ip"}"#)
            .await,
        1.0
    );

    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        app.get("/work/limited/ok", None).await.status,
        200,
        "the bucket refills"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_spellings_neither_dodge_a_limit_nor_reach_a_component() {
    let app = spawn(LIMITS).await;
    for _ in 0..3 {
        assert_eq!(app.get("/work/limited/ok", None).await.status, 200);
    }
    for (path, status) in [
        ("/work/limited/ok", 429),
        ("/work/limited/ok/", 429),
        ("/work/%6Cimited/ok", 429),
        ("/work/limited/%6Fk", 429),
        ("/work//limited/ok", 400),
        ("/work/limited//ok", 400),
        ("//work/limited/ok", 400),
        ("/work/./limited/ok", 400),
        ("/work/x/../limited/ok", 400),
        ("/work/%2e/limited/ok", 400),
        ("/work%2Flimited/ok", 400),
        ("/work/limited/ok%00", 400),
    ] {
        let reply = raw_request(
            &app.base,
            &http_request("GET", path, &[], b""),
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(reply.status(), Some(status), "{path}:\n{}", reply.text);
    }
    // A normalised path reaches the component as the gateway saw it.
    let headers = raw_request(
        &app.base,
        &http_request("GET", "/work/%68eaders", &[], b""),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(headers.status(), Some(200), "{}", headers.text);
    assert!(
        headers.text.contains("spin-path-info: /headers"),
        "{}",
        headers.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_keyed_by_a_body_field_counts_each_account_apart() {
    let app = spawn(LIMITS).await;
    let app = &app;
    let send = |account: &'static str| async move {
        app.post("/work/account/ok", None, &json!({ "account": account }))
            .await
    };
    assert_eq!(send("Ada@Example.com").await.status, 200);
    assert_eq!(send("ada@example.com").await.status, 200);
    let limited = send(" ADA@example.com ").await;
    assert_eq!(limited.status, 429, "{}", limited.text);
    assert!(
        limited.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("json")
    );
    assert_eq!(
        send("grace@example.com").await.status,
        200,
        "another account is not limited"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflights_are_answered_by_the_gateway_for_allowed_origins_only() {
    let app = spawn(LIMITS).await;
    let preflight = |origin: &'static str, method: &'static str| {
        let request = app
            .client
            .request(reqwest::Method::OPTIONS, app.url("/work/ok"))
            .header("origin", origin)
            .header("access-control-request-method", method)
            .header(
                "access-control-request-headers",
                "content-type, authorization",
            );
        async move { Reply::from(request.send().await.unwrap()).await }
    };
    let allowed = preflight("https://shop.example", "POST").await;
    assert_eq!(allowed.status, 204, "{}", allowed.text);
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        "https://shop.example"
    );
    assert!(
        allowed
            .header("access-control-allow-methods")
            .contains("POST")
    );
    assert!(
        allowed
            .header("access-control-allow-headers")
            .contains("authorization")
    );
    assert!(!allowed.header("x-request-id").is_empty());

    let other = preflight("https://evil.example", "POST").await;
    assert_eq!(other.status, 403, "{}", other.text);
    assert_eq!(other.error_code(), "CORS_NOT_ALLOWED");
    assert!(other.header("access-control-allow-origin").is_empty());

    let actual = Reply::from(
        app.client
            .get(app.url("/work/ok"))
            .header("origin", "https://shop.example")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(actual.status, 200);
    assert_eq!(
        actual.header("access-control-allow-origin"),
        "https://shop.example"
    );
    assert!(
        actual
            .header("access-control-expose-headers")
            .contains("x-request-id")
    );
    let elsewhere = Reply::from(
        app.client
            .get(app.url("/work/ok"))
            .header("origin", "https://evil.example")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(elsewhere.status, 200);
    assert!(elsewhere.header("access-control-allow-origin").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_with_its_own_share_leaves_the_components_other_slots_free() {
    let app = spawn(LIMITS).await;
    // The worker runs two invocations at once; /hog/... may use one of them. Four loops
    // (each spins until the 700 ms deadline) would take both slots without the share.
    let hogs: Vec<_> = (0..4)
        .map(|_| {
            let request = app.client.get(app.url("/hog/loop")).send();
            tokio::spawn(async move {
                let reply = Reply::from(request.await.unwrap()).await;
                (reply.status, std::time::Instant::now())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let reply = app.get("/work/ok", None).await;
    let answered = std::time::Instant::now();
    assert_eq!(reply.status, 200, "{}", reply.text);
    let mut statuses = Vec::new();
    for hog in hogs {
        let (status, done) = hog.await.unwrap();
        assert!(
            answered < done,
            "the other route waited for a hog to finish"
        );
        statuses.push(status);
    }
    statuses.sort();
    assert!(statuses.contains(&504), "no hog ran: {statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 503 || *s == 504),
        "{statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_wrong_password_logins_is_limited_and_profile_reads_go_on() {
    let app = spawn_shop().await;
    let user = app.user().await;
    let flood: Vec<_> = (0..32)
        .map(|i| {
            let client = app.client.clone();
            let url = app.url("/api/v1/users/login");
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                for j in 0..4 {
                    let reply = client
                        .post(&url)
                        .json(&json!({"email": format!("guess-{i}-{j}@example.com"), "password": "wrong password"}))
                        .send()
                        .await
                        .unwrap();
                    if reply.status() == 429 {
                        assert!(reply.headers().contains_key("retry-after"));
                        assert!(reply.headers().contains_key("ratelimit-reset"));
                    }
                    statuses.push(reply.status().as_u16());
                }
                statuses
            })
        })
        .collect();
    let path = format!("/api/v1/users/{}", user.id);
    for _ in 0..20 {
        let reply = app.get(&path, Some(&user.token)).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    let mut statuses = Vec::new();
    for task in flood {
        statuses.extend(task.await.unwrap());
    }
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert!(limited > 64, "only {limited} of 128 logins were limited");
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_to_one_account_are_limited_whoever_sends_them() {
    let app = spawn_shop().await;
    let user = app.user().await;
    // The shop allows ten logins a minute per account; `user()` made one.
    let mut last = None;
    for _ in 0..10 {
        let reply = app.login(&user.email, "wrong password").await;
        last = Some(reply.status);
        if reply.status == 429 {
            assert!(reply.text.contains("json"), "{}", reply.text);
            break;
        }
        assert_eq!(reply.status, 401, "{}", reply.text);
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    assert_eq!(
        last,
        Some(429),
        "the eleventh login of one account went through"
    );
    let right_password = app
        .login(&user.email.to_uppercase(), "correct horse battery")
        .await;
    assert_eq!(right_password.status, 429, "{}", right_password.text);
    let someone_else = app
        .login("someone-else@example.com", "wrong password")
        .await;
    assert_eq!(someone_else.status, 401, "{}", someone_else.text);
}
