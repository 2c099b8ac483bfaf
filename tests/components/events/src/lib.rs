//! Publishes, receives and fails events on request, so the tests can watch the outbox,
//! delivery, retries, dead letters, request-reply and trace propagation from outside.
//!
//! | route | |
//! |---|---|
//! | `POST …/publish?subject=S&status=N` | publishes the body to `S`, then answers `N` (default 200) |
//! | `POST …/publish-then-trap?subject=S` | publishes, then traps |
//! | `POST …/request?subject=S` | `consumer.request` and answers the reply's body |
//! | `GET …/received` | `[{subject, body}]` of every event handled |
//! | `POST …/record-trace` | records its `traceparent` header (called by the handler) |
//! | `POST …/publish-ce?subject=S&id=I&mode=binary\|structured` | POSTs the body as a CloudEvent to `http://events.berth.internal`, answering what it answered |
//! | `POST …/cloudevent` | the event route: `test.http.fail.*` writes then answers 500, `test.http.refuse.*` answers 400, anything else is recorded as received (`http:<type>`, with its `ce-*` headers) |
//! | `GET …/traces` | the recorded `traceparent`s |
//!
//! Handler: `test.fail.*` always fails; `test.echo` replies `echo: <body>`; `test.trace`
//! calls `…/record-trace` over chaining; anything else is recorded as received.

use spin_sdk::http::{Method, Request, Response, send};
use spin_sdk::http_component;
use spin_sdk::sqlite::{Connection, Value};

wit_bindgen::generate!({
    world: "berth:services/subscriber",
    path: ["../../../wit/deps/messaging@0.2.0", "../../../wit/services"],
    generate_all,
});

use exports::wasmcloud::messaging::handler::Guest;
use wasmcloud::messaging::consumer;
use wasmcloud::messaging::types::BrokerMessage;

const SCHEMA: [&str; 2] = [
    "CREATE TABLE IF NOT EXISTS received (n INTEGER PRIMARY KEY, subject TEXT, body TEXT)",
    "CREATE TABLE IF NOT EXISTS traces (n INTEGER PRIMARY KEY, traceparent TEXT)",
];

fn db() -> Connection {
    let db = Connection::open("events").expect("the events database is granted");
    for statement in SCHEMA {
        db.execute(statement, &[]).expect("schema");
    }
    db
}

fn param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix(&format!("{name}=")))
        .map(str::to_owned)
}

fn text(status: u16, body: impl Into<String>) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(body.into())
        .build()
}

#[http_component]
fn handle(request: Request) -> Response {
    let what = request
        .path()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let query = request.query().to_owned();
    let subject = param(&query, "subject").unwrap_or_else(|| "test.hello".into());
    match (request.method(), what.as_str()) {
        (Method::Post, "publish") => {
            let status = param(&query, "status")
                .and_then(|s| s.parse().ok())
                .unwrap_or(200);
            let message = BrokerMessage {
                subject,
                body: request.body().to_vec(),
                reply_to: None,
            };
            match consumer::publish(&message) {
                Ok(()) => text(status, "published"),
                Err(e) => text(403, e),
            }
        }
        (Method::Post, "publish-then-trap") => {
            let message = BrokerMessage {
                subject,
                body: request.body().to_vec(),
                reply_to: None,
            };
            consumer::publish(&message).expect("publish");
            panic!("asked to trap after publishing");
        }
        (Method::Post, "request") => match consumer::request(&subject, request.body(), 2000) {
            Ok(reply) => text(200, String::from_utf8_lossy(&reply.body)),
            Err(e) => text(502, e),
        },
        (Method::Post, "publish-ce") => publish_cloudevent(&request, &subject, &query),
        (Method::Post, "cloudevent") => receive_cloudevent(&request),
        (Method::Get, "received") => {
            let rows = db()
                .execute("SELECT subject, body FROM received ORDER BY n", &[])
                .expect("select");
            let list: Vec<serde_json::Value> = rows
                .rows()
                .map(|r| {
                    serde_json::json!({
                        "subject": r.get::<&str>("subject"),
                        "body": r.get::<&str>("body"),
                    })
                })
                .collect();
            text(200, serde_json::Value::Array(list).to_string())
        }
        (Method::Post, "record-trace") => {
            let traceparent = request
                .header("traceparent")
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned();
            db().execute(
                "INSERT INTO traces (traceparent) VALUES (?)",
                &[Value::Text(traceparent)],
            )
            .expect("insert");
            text(200, "recorded")
        }
        (Method::Get, "traces") => {
            let rows = db()
                .execute("SELECT traceparent FROM traces ORDER BY n", &[])
                .expect("select");
            let list: Vec<&str> = rows
                .rows()
                .filter_map(|r| r.get::<&str>("traceparent"))
                .collect();
            text(200, serde_json::json!(list).to_string())
        }
        _ => text(404, "no such route"),
    }
}

fn publish_cloudevent(request: &Request, subject: &str, query: &str) -> Response {
    let id = param(query, "id").unwrap_or_else(|| "ce-1".into());
    let mut outgoing = Request::builder()
        .method(Method::Post)
        .uri("http://events.berth.internal/")
        .build();
    let data = String::from_utf8_lossy(request.body()).into_owned();
    if param(query, "mode").as_deref() == Some("structured") {
        let event = serde_json::json!({
            "specversion": "1.0", "id": id, "type": subject, "source": "/claimed/elsewhere",
            "datacontenttype": "application/json",
            "data": serde_json::from_str::<serde_json::Value>(&data).unwrap_or(serde_json::Value::Null),
        });
        outgoing.set_header("content-type", "application/cloudevents+json");
        *outgoing.body_mut() = event.to_string().into_bytes();
    } else {
        for (name, value) in [
            ("ce-specversion", "1.0"),
            ("ce-id", id.as_str()),
            ("ce-type", subject),
            ("ce-source", "/claimed/elsewhere"),
            ("content-type", "application/json"),
        ] {
            outgoing.set_header(name, value);
        }
        *outgoing.body_mut() = data.into_bytes();
    }
    match spin_sdk::http::run(send::<_, Response>(outgoing)) {
        Ok(response) => text(
            *response.status(),
            String::from_utf8_lossy(response.body()).into_owned(),
        ),
        Err(e) => text(502, format!("publishing failed: {e}")),
    }
}

fn receive_cloudevent(request: &Request) -> Response {
    let header = |name: &str| {
        request
            .header(name)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    let kind = header("ce-type");
    let record = || {
        let seen = serde_json::json!({
            "id": header("ce-id"),
            "source": header("ce-source"),
            "specversion": header("ce-specversion"),
            "time": header("ce-time"),
            "contentType": header("content-type"),
            "data": String::from_utf8_lossy(request.body()),
        });
        db().execute(
            "INSERT INTO received (subject, body) VALUES (?, ?)",
            &[
                Value::Text(format!("http:{kind}")),
                Value::Text(seen.to_string()),
            ],
        )
        .expect("insert");
    };
    if kind.starts_with("test.http.fail.") {
        // Writes first, to show that a failed delivery's writes are rolled back.
        record();
        return text(500, format!("{kind} always fails"));
    }
    if kind.starts_with("test.http.refuse.") {
        return text(400, format!("{kind} is not for me"));
    }
    record();
    text(200, "handled")
}

struct Handler;

impl Guest for Handler {
    fn handle_message(msg: BrokerMessage) -> Result<(), String> {
        let body = String::from_utf8_lossy(&msg.body).into_owned();
        if msg.subject.starts_with("test.fail.") {
            // Writes first, to show that a failed handler's writes are rolled back.
            db().execute(
                "INSERT INTO received (subject, body) VALUES (?, ?)",
                &[Value::Text(msg.subject.clone()), Value::Text(body)],
            )
            .map_err(|e| format!("{e:?}"))?;
            return Err(format!("{} always fails", msg.subject));
        }
        match msg.subject.as_str() {
            "test.echo" => {
                let reply_to = msg.reply_to.ok_or("test.echo needs a reply subject")?;
                consumer::publish(&BrokerMessage {
                    subject: reply_to,
                    body: format!("echo: {body}").into_bytes(),
                    reply_to: None,
                })
            }
            "test.trace" => {
                let request = Request::builder()
                    .method(Method::Post)
                    .uri("http://events.spin.internal/events/record-trace")
                    .build();
                let response: Response = spin_sdk::http::run(send(request))
                    .map_err(|e| format!("chained call failed: {e}"))?;
                if *response.status() == 200 {
                    Ok(())
                } else {
                    Err(format!("chained call answered {}", response.status()))
                }
            }
            _ => db()
                .execute(
                    "INSERT INTO received (subject, body) VALUES (?, ?)",
                    &[Value::Text(msg.subject), Value::Text(body)],
                )
                .map(drop)
                .map_err(|e| format!("{e:?}")),
        }
    }
}

export!(Handler);
