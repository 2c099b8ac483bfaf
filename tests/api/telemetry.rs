//! OpenTelemetry export, against a real OTLP receiver ([`crate::otlp`]) that decodes what
//! the `berth` process sends: one saga is one trace across the three services and the bus
//! (embedded over HTTP/protobuf, NATS over gRPC), guest output becomes log records of its
//! span, nothing secret leaves, and a collector that is down or hangs changes no answer.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::helpers::*;
use crate::otlp::{Collector, Span};

const SHOP: &str = "spin.toml";
/// OTLP span kinds.
const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const CONSUMER: i32 = 5;

/// `berth up` on `manifest`, exporting to `endpoint` over `protocol`, quickly.
async fn exporting(
    manifest: &str,
    endpoint: &str,
    protocol: &str,
    runtime_config: Option<&std::path::Path>,
    env: &[(&str, &str)],
) -> (Process, TestApp) {
    let data = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    let mut command = berth_up(manifest, data.path(), port, admin);
    if let Some(config) = runtime_config {
        command.arg("--runtime-config").arg(config);
    }
    command
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("OTEL_BLRP_SCHEDULE_DELAY", "100")
        .env_remove("OTEL_SERVICE_NAME")
        .env_remove("OTEL_RESOURCE_ATTRIBUTES")
        .env_remove("OTEL_TRACES_SAMPLER");
    for (name, value) in env {
        command.env(name, value);
    }
    let process = Process::new(command.spawn().expect("start berth up"));
    wait_until_ready(admin).await;
    (process, TestApp::of_process(port, admin, data))
}

/// Keeps a dashboard's live stream open, as the page does (reopening each one that ends),
/// until the task is aborted.
fn watch(app: &TestApp) -> tokio::task::JoinHandle<()> {
    let (client, url, token) = (
        app.client.clone(),
        format!("{}/admin/v1/stream", app.admin),
        app.admin_token.clone(),
    );
    tokio::spawn(async move {
        loop {
            if let Ok(mut stream) = client.get(&url).bearer_auth(&token).send().await {
                while let Ok(Some(_)) = stream.chunk().await {}
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

fn trace_id_of(reply: &Reply) -> String {
    reply
        .header("traceparent")
        .split('-')
        .nth(1)
        .unwrap()
        .to_owned()
}

/// The one span of `spans` that `matches`, failing with the trace when there is not exactly one.
fn one<'a>(spans: &'a [Span], what: &str, matches: impl Fn(&Span) -> bool) -> &'a Span {
    let found: Vec<&Span> = spans.iter().filter(|s| matches(s)).collect();
    assert_eq!(
        found.len(),
        1,
        "{what}: {found:#?}\nin the trace {spans:#?}"
    );
    found[0]
}

fn attr<'a>(span: &'a Span, key: &str) -> &'a str {
    span.attributes
        .get(key)
        .map(String::as_str)
        .unwrap_or_default()
}

/// Places an order that confirms and checks its trace, from the client's request to the
/// order service's handling of `payment.succeeded`.
async fn a_saga_reads_as_one_trace(app: &TestApp, collector: &Collector) -> String {
    let user = app.user().await;
    let placed = app.create_order(&user, 1).await;
    assert_eq!(placed.status, 201, "{}", placed.text);
    let order_id = placed.json["id"].as_str().unwrap().to_owned();
    let trace_id = trace_id_of(&placed);
    app.order_reaches(&user, &order_id, "confirmed").await;

    // Every hop has ended and been exported once the order service has handled
    // `payment.succeeded`: its invocation's span is the last of the saga to end.
    let spans = eventually(
        Duration::from_secs(30),
        "the saga's spans exported",
        || async {
            let spans = collector.trace(&trace_id);
            let done = spans.iter().any(|s| {
                s.kind == CONSUMER
                    && attr(s, "messaging.destination.name") == "payment.succeeded"
                    && attr(s, "berth.component") == "order"
            }) && spans.iter().filter(|s| s.name == "invoke order").count() == 2;
            done.then_some(spans)
        },
    )
    .await;
    let by_id: HashMap<&str, &Span> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let parent_of = |span: &Span| -> &Span {
        by_id
            .get(span.parent.as_str())
            .unwrap_or_else(|| panic!("the parent of {span:#?} is not in the trace"))
    };

    let request = one(&spans, "the client's request", |s| {
        s.kind == SERVER && attr(s, "url.path") == "/api/v1/orders"
    });
    assert!(request.parent.is_empty(), "the client sent no traceparent");
    assert_eq!(attr(request, "http.request.method"), "POST");
    assert_eq!(attr(request, "http.response.status_code"), "201");
    assert_eq!(attr(request, "http.route"), "/api/v1/orders/...");
    assert_eq!(attr(request, "berth.component"), "order");
    assert!(!attr(request, "berth.version").is_empty());

    let placing = one(&spans, "the order service placing it", |s| {
        s.name == "invoke order" && s.parent == request.span_id
    });
    assert_eq!(attr(placing, "http.response.status_code"), "201");
    assert!(!attr(placing, "berth.version").is_empty());

    let publish = one(&spans, "publishing order.created", |s| {
        s.name == "publish" && attr(s, "messaging.destination.name") == "order.created"
    });
    assert_eq!(publish.parent, placing.span_id);
    assert_eq!(publish.kind, 4, "a producer span");

    // order.created: delivered to payment under the invocation that published it.
    let created = one(&spans, "order.created delivered to payment", |s| {
        s.kind == CONSUMER && attr(s, "messaging.destination.name") == "order.created"
    });
    assert_eq!(created.parent, placing.span_id);
    assert_eq!(attr(created, "berth.component"), "payment");
    assert_eq!(attr(created, "berth.delivery.attempt"), "1");
    assert_eq!(attr(created, "messaging.operation.type"), "process");
    let paying = one(&spans, "the payment service charging", |s| {
        s.name == "invoke payment" && s.parent == created.span_id
    });

    // The provider, reached by service chaining.
    let call = one(&spans, "the call to the provider", |s| {
        s.kind == CLIENT && attr(s, "berth.target") == "payment-provider"
    });
    assert_eq!(call.parent, paying.span_id);
    let provider = one(&spans, "the provider's invocation", |s| {
        s.name == "invoke payment-provider"
    });
    assert_eq!(parent_of(provider).parent, call.span_id);

    // payment.succeeded, back to the order service.
    let succeeded = one(&spans, "payment.succeeded delivered to order", |s| {
        s.kind == CONSUMER && attr(s, "messaging.destination.name") == "payment.succeeded"
    });
    assert_eq!(succeeded.parent, paying.span_id);
    one(&spans, "the order service confirming", |s| {
        s.name == "invoke order" && s.parent == succeeded.span_id
    });

    // Each service's statements, as children of its invocation: the kind, never the text.
    let statements: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name.starts_with("INSERT "))
        .collect();
    assert!(!statements.is_empty(), "{spans:#?}");
    for statement in &statements {
        assert_eq!(attr(statement, "db.system.name"), "sqlite");
        assert_eq!(attr(statement, "db.operation.name"), "INSERT");
        assert!(parent_of(statement).name.starts_with("invoke "));
        assert!(!statement.attributes.contains_key("db.query.text"));
    }

    // The relay's batches are traces of their own, linked to the messages they carried.
    eventually(
        Duration::from_secs(10),
        "a relay batch linked to the saga",
        || async {
            collector
                .spans()
                .iter()
                .any(|s| {
                    s.name == "relay publish"
                        && s.links
                            .contains(&(trace_id.clone(), placing.span_id.clone()))
                })
                .then_some(())
        },
    )
    .await;

    let resource = collector.resources().pop().unwrap();
    assert_eq!(resource["service.name"], "berth");

    // Nothing a client or an operator must keep secret leaves the host.
    for secret in [
        user.token.as_str(),
        "correct horse battery",
        app.admin_token.as_str(),
        app.jwt_secret().trim(),
        "1 Main St",
        "pm_card_visa",
    ] {
        assert!(!collector.carries(secret), "the export carries `{secret}`");
    }
    trace_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saga_is_one_trace_on_the_embedded_bus_over_http_protobuf() {
    let collector = Collector::start().await;
    let (process, app) = exporting(SHOP, &collector.endpoint(), "http/protobuf", None, &[]).await;
    // The host keeps traces for the dashboard only while one watches its live stream.
    let watching = watch(&app);
    let trace_id = a_saga_reads_as_one_trace(&app, &collector).await;
    assert!(collector.protocols().iter().all(|p| *p == "http"));

    // The admin API keeps the last traces for the dashboard's waterfall.
    let listed = app.admin_get("/admin/v1/traces").await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    let summary = listed.json["traces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["traceId"] == trace_id.as_str())
        .unwrap_or_else(|| panic!("the saga is not listed: {}", listed.text))
        .clone();
    assert_eq!(summary["root"], "POST /api/v1/orders/...");
    let services: Vec<&str> = summary["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    for service in ["order", "payment", "payment-provider"] {
        assert!(services.contains(&service), "{services:?}");
    }
    let trace = app.admin_get(&format!("/admin/v1/traces/{trace_id}")).await;
    assert_eq!(trace.status, 200, "{}", trace.text);
    let spans = trace.json["spans"].as_array().unwrap();
    assert_eq!(spans[0]["parentSpanId"], serde_json::Value::Null);
    assert_eq!(spans[0]["startOffsetMs"], 0.0);
    // The provider's statements sit under its invocation, so they are its own.
    assert!(
        spans.iter().any(|s| s["service"] == "payment-provider"
            && s["name"].as_str().unwrap().starts_with("INSERT ")),
        "{}",
        trace.text
    );
    let missing = app
        .admin_get(&format!("/admin/v1/traces/{}", "0".repeat(32)))
        .await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.error_code(), "TRACE_NOT_FOUND");
    watching.abort();
    drop(process);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saga_is_one_trace_on_nats_over_grpc() {
    let collector = Collector::start().await;
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = nats.runtime_config(dir.path());
    let (process, app) = exporting(SHOP, &collector.endpoint(), "grpc", Some(&config), &[]).await;
    a_saga_reads_as_one_trace(&app, &collector).await;
    assert!(collector.protocols().iter().all(|p| *p == "grpc"));
    drop(process);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_output_becomes_log_records_of_the_invocation_that_wrote_it() {
    let collector = Collector::start().await;
    let (process, app) = exporting(
        "tests/apps/sandbox.toml",
        &collector.endpoint(),
        "http/protobuf",
        None,
        &[],
    )
    .await;
    let trapped = app.get("/misbehave/trap", None).await;
    assert_eq!(trapped.status, 500, "{}", trapped.text);
    let trace_id = trace_id_of(&trapped);
    let log = eventually(
        Duration::from_secs(20),
        "the panic message exported",
        || async {
            collector
                .logs()
                .into_iter()
                .find(|l| l.body.contains("asked to trap"))
        },
    )
    .await;
    assert_eq!(log.trace_id, trace_id, "{log:#?}");
    assert_eq!(log.attributes["component"], "misbehave");
    assert_eq!(log.attributes["stream"], "stderr");
    let invocation = eventually(Duration::from_secs(20), "the invocation's span", || async {
        collector
            .trace(&trace_id)
            .into_iter()
            .find(|s| s.name == "invoke misbehave")
    })
    .await;
    assert_eq!(log.span_id, invocation.span_id);
    assert!(invocation.error);
    assert_eq!(attr(&invocation, "error.type"), "trap");
    drop(process);
}

/// Latency, by class: a request that waited on the collector would take at least the
/// exporter's timeout (30 s here); every answer must stay in the class of a few seconds at
/// most, however loaded the machine running the tests.
async fn every_answer_as_without_export(app: &TestApp) -> Vec<(u16, Duration)> {
    let mut answers = Vec::new();
    let user = app.user().await;
    for i in 0..40 {
        let started = Instant::now();
        let reply = if i % 4 == 0 {
            app.create_order(&user, 1).await
        } else {
            app.get(&format!("/api/v1/users/{}", user.id), Some(&user.token))
                .await
        };
        answers.push((reply.status, started.elapsed()));
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_or_hangs_changes_no_answer_and_costs_bounded_memory() {
    let hanging = Collector::stalling(Duration::from_secs(60)).await;
    let dead = format!("http://127.0.0.1:{}", free_port());
    let small_queue = [
        ("OTEL_BSP_MAX_QUEUE_SIZE", "64"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "30000"),
    ];
    let (off_process, off) = {
        let data = tempfile::tempdir().unwrap();
        let (port, admin) = (free_port(), free_port());
        let process = Process::new(
            berth_up(SHOP, data.path(), port, admin)
                .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
                .spawn()
                .unwrap(),
        );
        wait_until_ready(admin).await;
        (process, TestApp::of_process(port, admin, data))
    };
    let (dead_process, to_dead) = exporting(SHOP, &dead, "http/protobuf", None, &small_queue).await;
    let (hung_process, to_hung) = exporting(
        SHOP,
        &hanging.endpoint(),
        "http/protobuf",
        None,
        &small_queue,
    )
    .await;

    let baseline = every_answer_as_without_export(&off).await;
    for (name, app) in [
        ("a dead collector", &to_dead),
        ("a hanging collector", &to_hung),
    ] {
        let answers = every_answer_as_without_export(app).await;
        let statuses: Vec<u16> = answers.iter().map(|a| a.0).collect();
        let expected: Vec<u16> = baseline.iter().map(|a| a.0).collect();
        assert_eq!(statuses, expected, "with {name}");
        let slowest = answers.iter().map(|a| a.1).max().unwrap();
        assert!(
            slowest < Duration::from_secs(5),
            "with {name} an answer took {slowest:?}"
        );
        // Refused exports are counted as failures; what did not fit the queue of 64 while
        // the collector hung was dropped, and counted.
        let counted = if app.base == to_dead.base {
            "berth_otel_export_failures_total{signal=\"spans\"}"
        } else {
            "berth_otel_dropped_total{signal=\"spans\"}"
        };
        eventually(Duration::from_secs(30), counted, || async {
            (app.metric(counted).await > 0.0).then_some(())
        })
        .await;
        assert_eq!(
            app.metric("berth_otel_exported_total{signal=\"spans\"}")
                .await,
            0.0
        );
    }
    drop((off_process, dead_process, hung_process));
}
