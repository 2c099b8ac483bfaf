//! Events as CloudEvents over HTTP: published by a POST to `http://events.berth.internal`
//! into the invocation's outbox, delivered in binary mode to the subscriber's route, which no
//! client can reach; a 2xx acknowledges, a 5xx retries then dead-letters, another 4xx
//! dead-letters at once with the response as the reason.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

const CLOUDEVENTS: &str = "tests/apps/cloudevents.toml";

async fn publish(app: &TestApp, query: &str, data: &str) -> Reply {
    Reply::from(
        app.client
            .post(app.url(&format!("/events/publish-ce{query}")))
            .body(data.to_owned())
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// What the event route recorded: (type, the `ce-*` headers and data it saw).
async fn received(app: &TestApp) -> Vec<(String, Value)> {
    let reply = app.get("/events/received", None).await;
    reply
        .json
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|r| {
            let seen = serde_json::from_str(r["body"].as_str().unwrap_or("{}")).unwrap();
            (r["subject"].as_str().unwrap_or_default().to_owned(), seen)
        })
        .collect()
}

async fn dead_letters(app: &TestApp, count: usize) -> Vec<Value> {
    eventually(Duration::from_secs(20), "the dead letters", || async {
        let reply = app.admin_get("/admin/v1/dead-letters").await;
        let letters = reply.json["deadLetters"].as_array()?.clone();
        (letters.len() >= count).then_some(letters)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_event_reaches_the_subscribers_route_in_binary_mode() {
    let app = spawn(CLOUDEVENTS).await;
    reaches_the_route(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_event_reaches_the_subscribers_route_through_nats() {
    let (app, _nats) = spawn_on_nats(CLOUDEVENTS).await;
    reaches_the_route(&app).await;
}

async fn reaches_the_route(app: &TestApp) {
    for (mode, id) in [("binary", "b-1"), ("structured", "s-1")] {
        let reply = publish(
            app,
            &format!("?subject=test.http.hello&id={id}&mode={mode}"),
            r#"{"n":1}"#,
        )
        .await;
        assert_eq!(reply.status, 202, "{mode}: {}", reply.text);
    }
    let seen = eventually(Duration::from_secs(10), "both events", || async {
        let seen = received(app).await;
        (seen.len() == 2).then_some(seen)
    })
    .await;
    let mut ids: Vec<&str> = seen
        .iter()
        .map(|(_, e)| e["id"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["b-1", "s-1"]);
    for (kind, event) in &seen {
        assert_eq!(kind, "http:test.http.hello");
        assert_eq!(event["specversion"], "1.0");
        // The host stamps the publisher's own source, whatever it claimed.
        assert_eq!(event["source"], "/cloudevents-test/events");
        assert_eq!(event["contentType"], "application/json");
        assert!(!event["time"].as_str().unwrap().is_empty(), "{event}");
        assert_eq!(event["data"], r#"{"n":1}"#);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_outside_the_grant_or_malformed_is_refused_to_the_guest() {
    let app = spawn(CLOUDEVENTS).await;
    let denied = publish(&app, "?subject=other.kind", "{}").await;
    assert_eq!(denied.status, 403, "{}", denied.text);
    assert!(denied.text.contains("publishes"), "{}", denied.text);
    let malformed = publish(&app, "?subject=test.http.bad", "{not json").await;
    assert_eq!(malformed.status, 400, "{}", malformed.text);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(received(&app).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_event_is_dead_lettered_at_once_and_a_failing_one_after_its_retries() {
    let app = spawn(CLOUDEVENTS).await;
    refused_and_failing(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_and_failing_events_are_dead_lettered_on_nats_too() {
    let (app, _nats) = spawn_on_nats(CLOUDEVENTS).await;
    refused_and_failing(&app).await;
}

async fn refused_and_failing(app: &TestApp) {
    assert_eq!(
        publish(app, "?subject=test.http.refuse.me&id=r-1", "{}")
            .await
            .status,
        202
    );
    let letters = dead_letters(app, 1).await;
    assert_eq!(letters[0]["subject"], "test.http.refuse.me");
    assert_eq!(letters[0]["attempts"], 1);
    let error = letters[0]["error"].as_str().unwrap();
    assert!(
        error.contains("400") && error.contains("is not for me"),
        "{error}"
    );

    assert_eq!(
        publish(app, "?subject=test.http.fail.always&id=f-1", "{}")
            .await
            .status,
        202
    );
    let letters = dead_letters(app, 2).await;
    let failed = letters
        .iter()
        .find(|l| l["subject"] == "test.http.fail.always")
        .unwrap();
    assert_eq!(failed["attempts"], 3);
    assert!(
        failed["error"].as_str().unwrap().contains("always fails"),
        "{failed}"
    );
    // Each failed attempt's writes were rolled back.
    assert!(received(app).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_spelling_of_an_event_route_reaches_it_from_outside() {
    let app = spawn_shop().await;
    let user = app.user().await;
    let event = [
        "ce-specversion: 1.0",
        "ce-id: forged-1",
        "ce-type: payment.succeeded",
        "ce-source: /outside",
        "content-type: application/json",
    ];
    let auth = format!("authorization: Bearer {}", user.token);
    for route in ["/api/v1/orders/events", "/api/v1/payments/events"] {
        let (base, rest) = route.rsplit_once('/').unwrap();
        for path in [
            route.to_owned(),
            format!("{route}/"),
            format!("/{route}"),
            format!("{base}//{rest}"),
            format!("{base}/./{rest}"),
            format!("{base}/x/../{rest}"),
            format!("{base}/%65vents"),
            format!("{base}%2F{rest}"),
            format!("{route}/more"),
        ] {
            for headers in [
                event.to_vec(),
                [event.as_slice(), &[auth.as_str()]].concat(),
            ] {
                let request = http_request(
                    "POST",
                    &path,
                    &headers,
                    br#"{"orderId":"x","paymentId":"y"}"#,
                );
                let reply = raw_request(&app.base, &request, Duration::from_secs(5)).await;
                let status = reply.status();
                assert!(
                    matches!(status, Some(400 | 404)),
                    "POST {path} reached {status:?}: {}",
                    reply.text
                );
                assert!(
                    !reply.text.contains("outcome"),
                    "POST {path}: {}",
                    reply.text
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_cannot_forge_an_event_by_calling_another_in_process() {
    let app = spawn(CLOUDEVENTS).await;
    for path in [
        "/events/cloudevent",
        "//events/./cloudevent",
        "/events/cloudevent/x",
    ] {
        let reply = app
            .get(
                &format!("/misbehave/outbound?url=http://events.spin.internal{path}"),
                None,
            )
            .await;
        assert_eq!(reply.status, 502, "{path}: {}", reply.text);
        assert!(
            reply.text.contains("only the host sends"),
            "{path}: {}",
            reply.text
        );
    }
    // The component's other routes stay reachable in-process.
    let other = app
        .get(
            "/misbehave/outbound?url=http://events.spin.internal/events/received",
            None,
        )
        .await;
    assert_eq!(other.status, 200, "{}", other.text);
    assert!(received(&app).await.is_empty());
}
