//! Fault injection on a running shop: `berth fault add | list | clear` and the admin API
//! behind them, each fault reaching only the calls it names (client requests, chained
//! calls, outbound calls, event deliveries), marked in its answer, counted in `/metrics`,
//! and gone once cleared.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_injects_lists_and_clears_faults_each_marked_and_counted() {
    let app = spawn(SHOP).await;
    let user = app.user().await;
    let profile = format!("/api/v1/users/{}", user.id);
    assert_eq!(app.get(&profile, Some(&user.token)).await.status, 200);

    let (ok, out) = app.cli(&[
        "fault", "add", "user", "--route", &profile, "--abort", "503",
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("fault f1 in force: abort 503 on 100"), "{out}");
    let aborted = app.get(&profile, Some(&user.token)).await;
    assert_eq!(aborted.status, 503, "{}", aborted.text);
    assert_eq!(aborted.header("x-berth-fault"), "f1");
    assert_eq!(aborted.error_code(), "FAULT_INJECTED");
    assert!(
        aborted.text.contains("not a real failure"),
        "{}",
        aborted.text
    );
    // Another route of the same component, and other components, are untouched.
    let login = app.login(&user.email, "correct horse battery").await;
    assert_eq!(login.status, 200, "{}", login.text);
    assert_eq!(
        app.get("/api/v1/orders", Some(&user.token)).await.status,
        200
    );

    let (ok, out) = app.cli(&["fault", "add", "order", "--delay-ms", "400"]);
    assert!(ok, "{out}");
    let started = Instant::now();
    assert_eq!(
        app.get("/api/v1/orders", Some(&user.token)).await.status,
        200
    );
    assert!(started.elapsed() >= Duration::from_millis(400));

    let (ok, out) = app.cli(&["fault", "list"]);
    assert!(ok, "{out}");
    let f1 = out.lines().find(|l| l.starts_with("f1 ")).expect(&out);
    assert!(
        f1.contains(&format!("into {profile}")) && f1.contains("abort 503"),
        "{f1}"
    );
    let (ok, out) = app.cli(&["fault", "list", "--json"]);
    assert!(ok, "{out}");
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed[0]["aborted"], 1, "{listed}");
    assert_eq!(listed[1]["delayed"], 1, "{listed}");
    let series = |point: &str, kind: &str, component: &str| {
        format!(
            "berth_faults_injected_total{{component=\"{component}\",point=\"{point}\",kind=\"{kind}\"}}"
        )
    };
    assert_eq!(app.metric(&series("request", "abort", "user")).await, 1.0);
    assert_eq!(app.metric(&series("request", "delay", "order")).await, 1.0);
    assert_eq!(app.metric("berth_faults_active").await, 2.0);

    // Bad faults are refused with what to change.
    for (args, says) in [
        (
            &["fault", "add", "nope", "--abort", "503"][..],
            "no component `nope`",
        ),
        (
            &["fault", "add", "user", "--abort", "200"][..],
            "400 to 599",
        ),
        (&["fault", "add", "user"][..], "give a delay"),
        (
            &[
                "fault",
                "add",
                "user",
                "--delay-ms",
                "10",
                "--delay-percent",
                "0",
            ][..],
            "above 0 and at most 100",
        ),
        (
            &[
                "fault", "add", "user", "--abort", "503", "--route", "/a/../b",
            ][..],
            "must be a path",
        ),
        (
            &[
                "fault",
                "add",
                "user",
                "--abort",
                "503",
                "--outbound",
                "https://x.com",
            ][..],
            "host name alone",
        ),
        (&["fault", "clear", "f9"][..], "no fault `f9`"),
    ] {
        let (ok, out) = app.cli(args);
        assert!(!ok && out.contains(says), "{args:?}: {out}");
    }
    let refused = app
        .client
        .post(format!("{}/admin/v1/faults", app.admin))
        .json(&json!({"component": "user", "abortStatus": 503}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let refused = app
        .client
        .post(format!("{}/admin/v1/faults", app.admin))
        .bearer_auth(&app.admin_token)
        .json(&json!({"component": "user", "abortStatus": 503, "typo": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    assert!(
        refused
            .text()
            .await
            .unwrap()
            .contains("unknown field `typo`")
    );

    let (ok, out) = app.cli(&["fault", "clear", "f1"]);
    assert!(ok && out.contains("fault f1 cleared"), "{out}");
    assert_eq!(app.get(&profile, Some(&user.token)).await.status, 200);
    let (ok, out) = app.cli(&["fault", "clear", "--all"]);
    assert!(ok && out.contains("1 fault(s) cleared"), "{out}");
    let (ok, out) = app.cli(&["fault", "list"]);
    assert!(ok && out.contains("no faults"), "{out}");
    assert_eq!(app.metric("berth_faults_active").await, 0.0);
    // Counters never go back.
    assert_eq!(app.metric(&series("request", "abort", "user")).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_reach_chained_calls_outbound_calls_and_deliveries_inside_the_call_policy() {
    let app = spawn(SHOP).await;
    let user = app.user().await;
    let count = |component: &str, point: &str| {
        let series = format!(
            "berth_faults_injected_total{{component=\"{component}\",point=\"{point}\",kind=\"abort\"}}"
        );
        let app = &app;
        async move { app.metric(&series).await }
    };

    // Into the provider: the payment service's chained calls meet it, each try under its
    // call policy (spin.toml: up to three tries of a charge).
    let fault = app
        .add_fault(json!({"component": "payment-provider", "abortStatus": 503}))
        .await;
    let order = app.create_order(&user, 1).await;
    assert_eq!(order.status, 201, "{}", order.text);
    let id = order.json["id"].as_str().unwrap().to_owned();
    eventually(Duration::from_secs(20), "chained tries aborted", || async {
        (count("payment-provider", "chained").await >= 3.0).then_some(())
    })
    .await;
    let retries = app
        .metric(
            "berth_mesh_retries_total{component=\"payment\",destination=\"payment-provider.spin.internal\"}",
        )
        .await;
    assert!(
        retries >= 2.0,
        "the policy retried the injected 503s: {retries}"
    );
    assert_eq!(
        app.get(&format!("/api/v1/orders/{id}"), Some(&user.token))
            .await
            .json["status"],
        "pending"
    );
    app.clear_faults(Some(&fault)).await;
    app.order_reaches(&user, &id, "confirmed").await;

    // Out of the payment service, to the provider: the same, seen from the caller.
    let fault = app
        .add_fault(json!({
            "component": "payment",
            "outbound": "payment-provider.spin.internal",
            "abortStatus": 503,
        }))
        .await;
    let order = app.create_order(&user, 1).await;
    let id = order.json["id"].as_str().unwrap().to_owned();
    eventually(
        Duration::from_secs(20),
        "outbound tries aborted",
        || async { (count("payment", "outbound").await >= 3.0).then_some(()) },
    )
    .await;
    app.clear_faults(Some(&fault)).await;
    app.order_reaches(&user, &id, "confirmed").await;

    // Deliveries to the order service's event route: the saga waits, nothing is lost.
    let fault = app
        .add_fault(json!({
            "component": "order",
            "route": "/api/v1/orders/events",
            "abortStatus": 503,
        }))
        .await;
    let order = app.create_order(&user, 1).await;
    assert_eq!(
        order.status, 201,
        "placing an order is another route: {}",
        order.text
    );
    let id = order.json["id"].as_str().unwrap().to_owned();
    eventually(Duration::from_secs(20), "deliveries aborted", || async {
        (count("order", "delivery").await >= 2.0).then_some(())
    })
    .await;
    assert_eq!(
        app.get(&format!("/api/v1/orders/{id}"), Some(&user.token))
            .await
            .json["status"],
        "pending"
    );
    app.clear_faults(Some(&fault)).await;
    app.order_reaches(&user, &id, "confirmed").await;
    let dead = app.admin_get("/admin/v1/dead-letters").await;
    assert_eq!(dead.json["deadLetters"], json!([]), "{}", dead.text);
}
