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
