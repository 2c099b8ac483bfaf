//! Messaging as a component sees it: the outbox commits with the invocation, failing
//! handlers are retried then dead-lettered, request-reply, and the trace carried along.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

async fn publish(app: &TestApp, query: &str, body: &str) -> Reply {
    Reply::from(
        app.client
            .post(app.url(&format!("/events/publish{query}")))
            .body(body.to_owned())
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn received(app: &TestApp) -> Vec<Value> {
    app.get("/events/received", None)
        .await
        .json
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_published_by_a_failed_invocation_never_leaves() {
    let app = spawn(EVENTS).await;
    failed_invocations_publish_nothing(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_published_by_a_failed_invocation_never_leaves_nats() {
    let (app, _nats) = spawn_on_nats(EVENTS).await;
    failed_invocations_publish_nothing(&app).await;
}

async fn failed_invocations_publish_nothing(app: &TestApp) {
    assert_eq!(
        publish(app, "?subject=test.lost&status=500", "server error")
            .await
            .status,
        500
    );
    let trapped = Reply::from(
        app.client
            .post(app.url("/events/publish-then-trap?subject=test.lost"))
            .body("trapped")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(trapped.status, 500);
    assert_eq!(
        publish(app, "?subject=test.kept&status=404", "client error")
            .await
            .status,
        404
    );
    assert_eq!(
        publish(app, "?subject=test.kept", "marker").await.status,
        200
    );
    let got = eventually(Duration::from_secs(10), "both kept messages", || async {
        let got = received(app).await;
        (got.len() >= 2).then_some(got)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = if got.len() == 2 {
        received(app).await
    } else {
        got
    };
    let subjects: Vec<&str> = got.iter().filter_map(|m| m["subject"].as_str()).collect();
    assert_eq!(subjects, ["test.kept", "test.kept"], "{got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_outside_the_granted_subjects_is_refused() {
    let app = spawn(EVENTS).await;
    let refused = publish(&app, "?subject=order.created", "{}").await;
    assert_eq!(refused.status, 403);
    assert!(refused.text.contains("publishes"), "{}", refused.text);
    let wildcard = publish(&app, "?subject=test.*", "{}").await;
    assert_eq!(wildcard.status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_keeps_failing_lands_in_the_dead_letters() {
    let app = spawn(EVENTS).await;
    keeps_failing(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_keeps_failing_lands_in_the_dead_letters_on_nats() {
    let (app, _nats) = spawn_on_nats(EVENTS).await;
    keeps_failing(&app).await;
}

async fn keeps_failing(app: &TestApp) {
    assert_eq!(
        publish(app, "?subject=test.fail.always", "poison")
            .await
            .status,
        200
    );
    let letters = eventually(Duration::from_secs(15), "a dead letter", || async {
        let reply = app.admin_get("/admin/v1/dead-letters").await;
        let letters = reply.json["deadLetters"].as_array()?.clone();
        (!letters.is_empty()).then_some(letters)
    })
    .await;
    assert_eq!(letters[0]["subject"], "test.fail.always");
    assert_eq!(letters[0]["body"], "poison");
    assert_eq!(letters[0]["attempts"], 3);
    assert_eq!(letters[0]["group"], "events");
    assert!(
        letters[0]["error"]
            .as_str()
            .unwrap()
            .contains("always fails"),
        "{letters:?}"
    );
    // Each failed attempt's writes were rolled back.
    assert!(received(app).await.is_empty());
    let status = berth_command()
        .args(["status", "--admin", &app.admin, "--token", &app.admin_token])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(printed.contains("test.fail.always"), "{printed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_answered_by_a_subscriber() {
    let app = spawn(EVENTS).await;
    let reply = Reply::from(
        app.client
            .post(app.url("/events/request?subject=test.echo"))
            .body("ping")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.text, "echo: ping");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trace_travels_with_the_message() {
    let app = spawn(EVENTS).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    publish_traced(&app, trace_id).await;
    let mut traces = Vec::new();
    for _ in 0..400 {
        let reply = app.get("/events/traces", None).await;
        traces = reply.json.as_array().cloned().unwrap_or_default();
        if !traces.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !traces.is_empty(),
        "the handler's chained call never arrived; dead letters: {}",
        app.admin_get("/admin/v1/dead-letters").await.text
    );
    assert!(
        traces[0].as_str().unwrap().contains(trace_id),
        "publisher and handler are one trace: {traces:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_without_a_handler_export_is_refused_at_load() {
    ensure_built();
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("spin.toml");
    std::fs::write(
        &manifest,
        format!(
            r#"spin_manifest_version = 2
[application]
name = "refused"
[[trigger.http]]
route = "/..."
component = "plain"
[component.plain]
source = "{}"
sqlite_databases = ["plain"]
key_value_stores = ["plain"]
allowed_outbound_hosts = ["http://127.0.0.1:*"]
[component.plain.tool.berth]
subscriptions = ["order.created"]
"#,
            repo("target/wasm32-wasip2/release/misbehave.wasm").display()
        ),
    )
    .unwrap();
    let options = berth::host::Options {
        manifest,
        runtime_config: None,
        data_dir: Some(dir.path().join("data")),
        cache_dir: Some(cache_dir()),
        fresh_databases: Vec::new(),
    };
    let error = match berth::host::Host::load(&options).await {
        Ok(_) => panic!("a subscriber without a handler loaded"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        error.contains("wasmcloud:messaging/handler@0.2.0") && error.contains("subscriptions"),
        "{error}"
    );
}
