//! Dead letters sent back once their cause is fixed: over the admin API and with
//! `berth dead-letters` / `berth redrive`, on the embedded bus and on NATS. A redriven message
//! is handled once, keeps its trace, and leaves the list; a second redrive finds nothing.

use std::process::Output;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

/// The `test.trace` handler records its traceparent through a chained call to its own
/// component; a trigger on that table makes the call fail, and with it the handler, until
/// the test drops it: a cause outside the message that an operator can fix.
const BREAK: &str = "
CREATE TABLE IF NOT EXISTS traces (n INTEGER PRIMARY KEY, traceparent TEXT);
CREATE TRIGGER IF NOT EXISTS traces_broken BEFORE INSERT ON traces
BEGIN SELECT RAISE(ABORT, 'the traces table is broken for the test'); END;
";
const FIX: &str = "DROP TRIGGER IF EXISTS traces_broken";

async fn events_database(app: &TestApp, statements: &'static str) {
    use sqlx::Executor as _;
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(app.data_dir.path().join("sqlite/events.db"))
        .busy_timeout(Duration::from_secs(10));
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    pool.execute(statements).await.unwrap();
    pool.close().await;
}

async fn traces(app: &TestApp) -> Vec<String> {
    app.get("/events/traces", None)
        .await
        .json
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str().map(str::to_owned))
        .collect()
}

async fn dead_letters(app: &TestApp, count: usize) -> Vec<Value> {
    eventually(Duration::from_secs(30), "the dead letters", || async {
        let reply = app.admin_get("/admin/v1/dead-letters").await;
        let letters = reply.json["deadLetters"].as_array()?.clone();
        (letters.len() == count).then_some(letters)
    })
    .await
}

async fn redrive(app: &TestApp, group: &str, id: &str) -> Reply {
    Reply::from(
        app.client
            .post(format!(
                "{}/admin/v1/dead-letters/{group}/{id}/redrive",
                app.admin
            ))
            .bearer_auth(&app.admin_token)
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// `berth <args> --admin … --token …` against `app`.
fn berth(app: &TestApp, args: &[&str]) -> Output {
    berth_command()
        .args(args)
        .args(["--admin", &app.admin, "--token", &app.admin_token])
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn succeeded(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout(output)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_redriven_after_its_cause_is_fixed_is_handled_once() {
    let app = spawn(EVENTS).await;
    redriven_once(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_redriven_after_its_cause_is_fixed_is_handled_once_on_nats() {
    let (app, mut nats) = spawn_on_nats(EVENTS).await;
    redriven_once(&app).await;
    // The letters stay where they are while the bus cannot be reached.
    events_database(&app, BREAK).await;
    publish_traced(&app, "00000000000000000000000000000003").await;
    let letters = dead_letters(&app, 1).await;
    nats.stop();
    let down = redrive(&app, "events", letters[0]["id"].as_str().unwrap()).await;
    assert_eq!(down.status, 503, "{}", down.text);
    assert_eq!(down.error_code(), "BUS_UNAVAILABLE");
}

async fn redriven_once(app: &TestApp) {
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    events_database(app, BREAK).await;
    publish_traced(app, trace_id).await;
    let letters = dead_letters(app, 1).await;
    let (group, id) = (
        letters[0]["group"].as_str().unwrap(),
        letters[0]["id"].as_str().unwrap().to_owned(),
    );
    assert_eq!(
        (group, letters[0]["subject"].as_str()),
        ("events", Some("test.trace"))
    );
    assert!(
        traces(app).await.is_empty(),
        "nothing was recorded while broken"
    );

    let listed = succeeded(&berth(app, &["dead-letters"]));
    assert!(
        listed.contains(&id) && listed.contains("test.trace") && listed.contains("events"),
        "{listed}"
    );
    let json: Value =
        serde_json::from_str(&succeeded(&berth(app, &["dead-letters", "--json"]))).unwrap();
    assert_eq!(json[0]["id"], id.as_str());

    // Fixed: sent back through the admin API, it is handled once, in the original trace.
    events_database(app, FIX).await;
    let redriven = redrive(app, "events", &id).await;
    assert_eq!(redriven.status, 200, "{}", redriven.text);
    assert_eq!(
        redriven.json["redriven"],
        serde_json::json!({ "group": "events", "id": id, "subject": "test.trace" })
    );
    let recorded = eventually(Duration::from_secs(20), "the redriven message", || async {
        let recorded = traces(app).await;
        (!recorded.is_empty()).then_some(recorded)
    })
    .await;
    assert!(recorded[0].contains(trace_id), "{recorded:?}");
    assert!(dead_letters(app, 0).await.is_empty());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(traces(app).await.len(), 1, "handled exactly once");

    let again = redrive(app, "events", &id).await;
    assert_eq!(again.status, 404, "{}", again.text);
    assert_eq!(again.error_code(), "DEAD_LETTER_NOT_FOUND");
    assert!(again.text.contains("berth dead-letters"), "{}", again.text);

    // The same with the CLI: one by id, then the rest with --all.
    events_database(app, BREAK).await;
    publish_traced(app, "00000000000000000000000000000001").await;
    publish_traced(app, "00000000000000000000000000000002").await;
    let letters = dead_letters(app, 2).await;
    let first = letters[0]["id"].as_str().unwrap();
    events_database(app, FIX).await;
    let printed = succeeded(&berth(app, &["redrive", "events", first]));
    assert!(
        printed.contains(first) && printed.contains("test.trace"),
        "{printed}"
    );
    let printed = succeeded(&berth(app, &["redrive", "--all", "--group", "events"]));
    assert!(printed.contains("redrove 1 dead letter"), "{printed}");
    eventually(
        Duration::from_secs(20),
        "both redriven messages",
        || async { (traces(app).await.len() == 3).then_some(()) },
    )
    .await;
    assert_eq!(
        succeeded(&berth(app, &["dead-letters"])).trim(),
        "no dead letters"
    );
    let refused = berth(app, &["redrive", "events", first]);
    assert!(!refused.status.success(), "{}", stdout(&refused));
    let error = String::from_utf8_lossy(&refused.stderr);
    assert!(
        error.contains("no dead letter") && error.contains("berth dead-letters"),
        "{error}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(traces(app).await.len(), 3, "each handled exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_without_a_bus_has_no_dead_letter_to_redrive() {
    let app = spawn(SANDBOX).await;
    let reply = redrive(&app, "events", "0190b3c1-7f2a-7c3e-9a1b-2c3d4e5f6a7b").await;
    assert_eq!(reply.status, 404, "{}", reply.text);
    assert_eq!(reply.error_code(), "DEAD_LETTER_NOT_FOUND");
    // Any spelling the exact-path rule refuses stays refused, before the bus is asked.
    let encoded = redrive(&app, "events", "a%2Fb").await;
    assert_eq!(encoded.error_code(), "ROUTE_NOT_FOUND");
}
