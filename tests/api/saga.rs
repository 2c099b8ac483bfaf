//! The order saga, choreographed by events between the order and payment services, with
//! the provider simulator reached by service chaining: every path and its compensation,
//! on the embedded bus and on a real NATS JetStream.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;

fn order_with(method: &str, quantity: i64) -> Value {
    let mut body = order_body(quantity);
    body["paymentMethodId"] = json!(method);
    body
}

async fn place(app: &TestApp, user: &User, method: &str) -> String {
    let reply = app
        .post("/api/v1/orders", Some(&user.token), &order_with(method, 1))
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    assert_eq!(reply.json["status"], "pending");
    reply.json["id"].as_str().unwrap().to_owned()
}

async fn cancel(app: &TestApp, user: &User, id: &str) -> Reply {
    app.post(
        &format!("/api/v1/orders/{id}/cancel"),
        Some(&user.token),
        &json!({}),
    )
    .await
}

async fn a_paid_order_is_confirmed(app: &TestApp) {
    let user = app.user().await;
    let id = place(app, &user, "pm_card_visa").await;
    let order = app.order_reaches(&user, &id, "confirmed").await;
    let payments = app.payments_of(&user, &id).await;
    assert_eq!(payments.len(), 1, "{payments:?}");
    assert_eq!(payments[0]["status"], "succeeded");
    assert_eq!(payments[0]["amountCents"], 2249);
    assert!(
        payments[0]["providerRef"]
            .as_str()
            .unwrap()
            .starts_with("pi_")
    );
    assert_eq!(order["paymentId"], payments[0]["id"]);
}

async fn a_declined_card_cancels_the_order(app: &TestApp) {
    let user = app.user().await;
    let id = place(app, &user, "pm_card_chargeDeclined").await;
    app.order_reaches(&user, &id, "cancelled").await;
    let payments = app.payments_of(&user, &id).await;
    assert_eq!(payments.len(), 1, "{payments:?}");
    assert_eq!(payments[0]["status"], "failed");
    assert!(
        payments[0]["failureReason"]
            .as_str()
            .unwrap()
            .contains("decline"),
        "{payments:?}"
    );
}

async fn cancelling_a_confirmed_order_refunds_it(app: &TestApp) {
    let user = app.user().await;
    let id = place(app, &user, "pm_card_visa").await;
    app.order_reaches(&user, &id, "confirmed").await;
    let cancelled = cancel(app, &user, &id).await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.text);
    app.order_reaches(&user, &id, "refunded").await;
    let payments = app.payments_of(&user, &id).await;
    assert_eq!(payments[0]["status"], "refunded");
    assert_eq!(cancel(app, &user, &id).await.status, 409);
}

/// `pm_card_slow` keeps the charge in flight for 2 s while the order is cancelled.
async fn cancelling_a_pending_order_leaves_no_charge(app: &TestApp) {
    let user = app.user().await;
    let id = place(app, &user, "pm_card_slow").await;
    let cancelled = cancel(app, &user, &id).await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.text);
    assert_eq!(cancelled.json["status"], "cancelled");
    // Whatever the race, no charge survives. Either the payment service took the charge
    // before it saw the cancellation, and the charge is refunded; or it saw the cancellation
    // first (`order.created` and `order.cancelled` can arrive in either order, each subject
    // being its own consumer on NATS), and it never charges at all.
    let started = std::time::Instant::now();
    let payment = eventually(
        Duration::from_secs(30),
        "the order's charge refunded, or never taken",
        || async {
            let payments = app.payments_of(&user, &id).await;
            match payments.first() {
                Some(p) if p["status"] == "refunded" => Some(Some(p.clone())),
                Some(_) => None,
                None if started.elapsed() > Duration::from_secs(8)
                    && cancellation_seen_by_payment(app, &id).await =>
                {
                    Some(None)
                }
                None => None,
            }
        },
    )
    .await;
    if let Some(payment) = payment {
        assert_eq!(payment["status"], "refunded");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let order = app
        .get(&format!("/api/v1/orders/{id}"), Some(&user.token))
        .await;
    assert_eq!(order.json["status"], "cancelled", "{}", order.text);
    let payments = app.payments_of(&user, &id).await;
    assert!(
        payments.iter().all(|p| p["status"] == "refunded"),
        "a charge survived the cancellation: {payments:?}"
    );
}

/// Whether the payment service recorded the order's cancellation (read from its database,
/// which the saga's API does not show): its SQLite file, or its schema in PostgreSQL when
/// the app's runtime config puts it there.
async fn cancellation_seen_by_payment(app: &TestApp, order_id: &str) -> bool {
    let config = std::fs::read_to_string(app.data_dir.path().join("runtime-config.toml"))
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok());
    let postgres_url = config.as_ref().and_then(|config| {
        let payments = config.get("sqlite_database")?.get("payments")?;
        (payments.get("type")?.as_str()? == "postgres")
            .then(|| payments.get("url")?.as_str().map(str::to_owned))
            .flatten()
    });
    if let Some(url) = postgres_url {
        use sqlx::ConnectOptions as _;
        let Ok(options) = url.parse::<sqlx::postgres::PgConnectOptions>() else {
            return false;
        };
        let Ok(mut conn) = options.connect().await else {
            return false;
        };
        return sqlx::query("SELECT 1 FROM payments.cancelled_orders WHERE order_id = $1")
            .bind(order_id)
            .fetch_optional(&mut conn)
            .await
            .is_ok_and(|row| row.is_some());
    }
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(app.data_dir.path().join("sqlite/payments.db"))
        .read_only(true);
    let Ok(pool) = sqlx::SqlitePool::connect_with(options).await else {
        return false;
    };
    let seen = sqlx::query("SELECT 1 FROM cancelled_orders WHERE order_id = ?")
        .bind(order_id)
        .fetch_optional(&pool)
        .await
        .is_ok_and(|row| row.is_some());
    pool.close().await;
    seen
}

async fn every_path(app: &TestApp) {
    tokio::join!(
        a_paid_order_is_confirmed(app),
        a_declined_card_cancels_the_order(app),
        cancelling_a_confirmed_order_refunds_it(app),
        cancelling_a_pending_order_leaves_no_charge(app),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_saga_path_completes_on_the_embedded_bus() {
    let app = spawn_shop().await;
    every_path(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_saga_path_completes_on_nats_jetstream() {
    let (app, _nats) = spawn_on_nats(SHOP).await;
    every_path(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_saga_path_completes_on_postgres() {
    let app = spawn_on_postgres(SHOP, &SHOP_DATABASES, None).await;
    every_path(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_saga_path_completes_on_postgres_and_nats_jetstream() {
    let nats = NatsServer::start().await;
    let app = spawn_on_postgres(SHOP, &SHOP_DATABASES, Some(&nats)).await;
    every_path(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_event_applies_once() {
    let app = spawn_shop().await;
    let user = app.user().await;
    let id = place(&app, &user, "pm_card_visa").await;
    app.order_reaches(&user, &id, "confirmed").await;
    // Hand every delivered order.created to the payment group again, as a bus does when an
    // acknowledgement is lost.
    let bus = sqlx::SqlitePool::connect_with(
        sqlx::sqlite::SqliteConnectOptions::new().filename(app.data_dir.path().join("bus/bus.db")),
    )
    .await
    .unwrap();
    let redelivered = sqlx::query(
        "INSERT INTO deliveries (grp, seq, due_at) SELECT 'payment', seq, 0 FROM messages
         WHERE subject = 'order.created'",
    )
    .execute(&bus)
    .await
    .unwrap()
    .rows_affected();
    assert!(redelivered >= 1);
    settled(&bus, "the redelivery").await;
    let payments = app.payments_of(&user, &id).await;
    assert_eq!(payments.len(), 1, "{payments:?}");
    assert_eq!(payments[0]["status"], "succeeded");

    // The same CloudEvent under a new bus id, as a broker that lost track would send it:
    // berth's inbox does not know it, the payment service's own record of `ce-id` does.
    let copied = sqlx::query(
        "INSERT INTO messages (id, subject, traceparent, body, published_at)
         SELECT id || '-again', subject, traceparent, body, published_at FROM messages
         WHERE subject = 'order.created'",
    )
    .execute(&bus)
    .await
    .unwrap();
    assert!(copied.rows_affected() >= 1);
    sqlx::query(
        "INSERT INTO deliveries (grp, seq, due_at) SELECT 'payment', seq, 0 FROM messages
         WHERE id LIKE '%-again'",
    )
    .execute(&bus)
    .await
    .unwrap();
    settled(&bus, "the copy").await;
    let payments = app.payments_of(&user, &id).await;
    assert_eq!(payments.len(), 1, "{payments:?}");
    let outcomes: i64 =
        sqlx::query_scalar("SELECT count(*) FROM messages WHERE subject LIKE 'payment.%'")
            .fetch_one(&bus)
            .await
            .unwrap();
    assert_eq!(outcomes, 1, "the copy published a second outcome");
    let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters")
        .fetch_one(&bus)
        .await
        .unwrap();
    assert_eq!(dead, 0);
}

/// Waits until the embedded bus has no delivery left to settle.
async fn settled(bus: &sqlx::SqlitePool, what: &str) {
    eventually(
        Duration::from_secs(10),
        &format!("{what} settled"),
        || async {
            let left: i64 = sqlx::query_scalar("SELECT count(*) FROM deliveries")
                .fetch_one(bus)
                .await
                .unwrap();
            (left == 0).then_some(())
        },
    )
    .await;
}

/// Orders placed while NATS is down for a while all complete once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_outage_under_load_loses_nothing() {
    let mut nats = NatsServer::start().await;
    let data = tempfile::tempdir().unwrap();
    let config = nats.runtime_config(data.path());
    let app = spawn_with(SHOP, Some(config), data).await;
    let user = app.user().await;
    let mut orders = Vec::new();
    for i in 0..30 {
        if i == 10 {
            nats.stop();
        }
        if i == 20 {
            nats.restart().await;
        }
        orders.push(place(&app, &user, "pm_card_visa").await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for id in &orders {
        app.order_reaches(&user, id, "confirmed").await;
        assert_eq!(app.payments_of(&user, id).await.len(), 1);
    }
}
