use crate::helpers::*;

async fn payments_answer_for_the_callers_orders() {
    let app = spawn_shop().await;
    let user = app.user().await;
    let order = app.create_order(&user, 1).await;
    let order_id = order.json["id"].as_str().unwrap();

    // The order's payment may already be there, or not yet: the saga runs on its own.
    let only_this_orders = |reply: &Reply| {
        let payments = reply.json["payments"].as_array().unwrap();
        assert!(payments.len() <= 1, "{}", reply.text);
        for payment in payments {
            assert_eq!(payment["orderId"], order_id, "{}", reply.text);
        }
    };
    let all = app.get("/api/v1/payments", Some(&user.token)).await;
    assert_eq!(all.status, 200, "{}", all.text);
    only_this_orders(&all);
    let for_order = app
        .get(
            &format!("/api/v1/payments?orderId={order_id}"),
            Some(&user.token),
        )
        .await;
    assert_eq!(for_order.status, 200);
    only_this_orders(&for_order);
    // Another user's list holds none of it.
    let other = app.user().await;
    let theirs = app.get("/api/v1/payments", Some(&other.token)).await;
    assert_eq!(theirs.json["payments"], serde_json::json!([]));
}

async fn payment_errors_are_the_documented_ones() {
    let app = spawn_shop().await;
    let user = app.user().await;
    let bad_order = app
        .get("/api/v1/payments?orderId=42", Some(&user.token))
        .await;
    assert_eq!(bad_order.status, 400);
    assert_eq!(bad_order.error_code(), "VALIDATION_FAILED");
    let unknown = app
        .get(
            &format!("/api/v1/payments/{}", uuid::Uuid::new_v4()),
            Some(&user.token),
        )
        .await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.error_code(), "PAYMENT_NOT_FOUND");
    let anonymous = app.get("/api/v1/payments", None).await;
    assert_eq!(anonymous.status, 401);
}

async fn a_payment_is_visible_to_its_owner_only() {
    let app = spawn_shop().await;
    let (ann, bob) = (app.user().await, app.user().await);
    let order = app.create_order(&ann, 2).await;
    let order_id = order.json["id"].as_str().unwrap();
    let payment_id = saga_payment(&app, &ann, order_id).await;

    let mine = app
        .get(&format!("/api/v1/payments/{payment_id}"), Some(&ann.token))
        .await;
    assert_eq!(mine.status, 200, "{}", mine.text);
    assert_eq!(mine.json["orderId"], order_id);
    assert_eq!(mine.json["amountCents"], 4248);
    assert_eq!(mine.json["failureReason"], serde_json::Value::Null);
    let listed = app
        .get(
            &format!("/api/v1/payments?orderId={order_id}"),
            Some(&ann.token),
        )
        .await;
    assert_eq!(listed.json["payments"][0]["id"], payment_id.as_str());

    let theirs = app
        .get(&format!("/api/v1/payments/{payment_id}"), Some(&bob.token))
        .await;
    assert_eq!(theirs.status, 404);
    let their_list = app
        .get(
            &format!("/api/v1/payments?orderId={order_id}"),
            Some(&bob.token),
        )
        .await;
    assert_eq!(their_list.json["payments"], serde_json::json!([]));
}

async fn a_payment_is_charged_in_the_orders_iso_currency() {
    let app = spawn_shop().await;
    let user = app.user().await;
    let mut body = order_body(1);
    body["currency"] = serde_json::json!("eur");
    let order = app.post("/api/v1/orders", Some(&user.token), &body).await;
    assert_eq!(order.status, 201, "{}", order.text);
    let order_id = order.json["id"].as_str().unwrap();
    app.order_reaches(&user, order_id, "confirmed").await;
    let payments = app.payments_of(&user, order_id).await;
    assert_eq!(payments.len(), 1);
    assert_eq!(payments[0]["currency"], "EUR");
    assert_eq!(payments[0]["status"], "succeeded");
}

on_every_database!(
    payments_answer_for_the_callers_orders,
    payment_errors_are_the_documented_ones,
    a_payment_is_visible_to_its_owner_only,
    a_payment_is_charged_in_the_orders_iso_currency,
);
