use serde_json::json;

use crate::helpers::*;

async fn an_order_is_created_pending_with_its_total_computed_by_the_service() {
    let app = spawn_shop().await;
    let user = app.user().await;
    let reply = app.create_order(&user, 3).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let order = &reply.json;
    assert_eq!(order["status"], "pending");
    assert_eq!(order["totalCents"], 3 * 1999 + 250);
    assert_eq!(order["currency"], "USD");
    assert_eq!(order["userId"], user.id);
    assert_eq!(order["paymentId"], serde_json::Value::Null);
    assert_eq!(order["items"].as_array().unwrap().len(), 2);
    assert_eq!(order["createdAt"], order["updatedAt"]);

    let mut body = order_body(1);
    body["totalCents"] = json!(1);
    let priced_by_client = app.post("/api/v1/orders", Some(&user.token), &body).await;
    assert_eq!(
        priced_by_client.status, 400,
        "a client-sent total must not be accepted"
    );
    assert!(priced_by_client.text.contains("totalCents"));
}

async fn order_validation_names_every_bad_field() {
    let app = spawn_shop().await;
    let user = app.user().await;
    let reply = app
        .post(
            "/api/v1/orders",
            Some(&user.token),
            &json!({
                "items": [{"productId": "a", "quantity": 0, "unitPriceCents": 100},
                          {"productId": "b", "quantity": 1, "unitPriceCents": -1}],
                "currency": "dollars",
                "shippingAddress": {"street": "", "city": "c", "state": "s", "zipCode": "z", "country": "US"}
            }),
        )
        .await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.error_code(), "VALIDATION_FAILED");
    let fields = reply.error_fields();
    assert_eq!(
        fields,
        [
            "items[0].quantity",
            "items[1].unitPriceCents",
            "currency",
            "paymentMethodId",
            "shippingAddress.street"
        ]
    );
    let fractional = app
        .post(
            "/api/v1/orders",
            Some(&user.token),
            &json!({"items": [{"productId": "a", "quantity": 1.5, "unitPriceCents": 1}]}),
        )
        .await;
    assert_eq!(fractional.status, 400);
    assert_eq!(
        fractional.json["error"]["details"][0]["field"],
        "items[0].quantity"
    );
}

async fn orders_need_a_token() {
    let app = spawn_shop().await;
    let reply = app.post("/api/v1/orders", None, &order_body(1)).await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.error_code(), "AUTH_REQUIRED");
}

async fn a_retry_with_the_same_idempotency_key_returns_the_same_order() {
    let app = spawn_shop().await;
    let user = app.user().await;
    let first = app.create_order_with_key(&user, "checkout-42", 2).await;
    assert_eq!(first.status, 201, "{}", first.text);
    let retry = app.create_order_with_key(&user, "checkout-42", 2).await;
    assert_eq!(retry.status, 201);
    assert_eq!(retry.json["id"], first.json["id"]);
    assert_eq!(retry.header("idempotent-replayed"), "true");

    let different = app.create_order_with_key(&user, "checkout-42", 5).await;
    assert_eq!(different.status, 409);
    assert_eq!(different.error_code(), "IDEMPOTENCY_KEY_REUSED");

    // Keys belong to their user: another user's identical key is a new order.
    let other = app.user().await;
    let theirs = app.create_order_with_key(&other, "checkout-42", 2).await;
    assert_eq!(theirs.status, 201);
    assert_ne!(theirs.json["id"], first.json["id"]);

    let listed = app.get("/api/v1/orders", Some(&user.token)).await;
    assert_eq!(listed.json["orders"].as_array().unwrap().len(), 1);
}

async fn concurrent_retries_with_one_key_create_one_order() {
    let app = spawn_shop().await;
    let user = app.user().await;
    let attempts = (0..8).map(|_| app.create_order_with_key(&user, "double-click", 1));
    let replies = futures::future::join_all(attempts).await;
    let ids: std::collections::HashSet<_> = replies
        .iter()
        .map(|r| {
            assert_eq!(r.status, 201, "{}", r.text);
            r.json["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1, "every retry must get the same order");
    let listed = app.get("/api/v1/orders", Some(&user.token)).await;
    assert_eq!(listed.json["orders"].as_array().unwrap().len(), 1);
}

async fn an_order_is_visible_to_its_owner_only() {
    let app = spawn_shop().await;
    let (ann, bob) = (app.user().await, app.user().await);
    let order = app.create_order(&ann, 1).await;
    let path = format!("/api/v1/orders/{}", order.json["id"].as_str().unwrap());
    let mine = app.get(&path, Some(&ann.token)).await;
    assert_eq!(mine.status, 200);
    assert_eq!(mine.json, order.json);
    let theirs = app.get(&path, Some(&bob.token)).await;
    assert_eq!(theirs.status, 404);
    assert_eq!(theirs.error_code(), "ORDER_NOT_FOUND");
    let unknown = app
        .get(
            &format!("/api/v1/orders/{}", uuid::Uuid::new_v4()),
            Some(&ann.token),
        )
        .await;
    assert_eq!(unknown.status, 404);
}

async fn orders_list_newest_first_in_cursor_pages() {
    let app = spawn_shop().await;
    let (ann, bob) = (app.user().await, app.user().await);
    let mut created = Vec::new();
    for quantity in 1..=5 {
        created.push(
            app.create_order(&ann, quantity).await.json["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    app.create_order(&bob, 1).await;
    created.reverse();

    let mut seen = Vec::new();
    let mut path = "/api/v1/orders?limit=2".to_owned();
    loop {
        let page = app.get(&path, Some(&ann.token)).await;
        assert_eq!(page.status, 200, "{}", page.text);
        let orders = page.json["orders"].as_array().unwrap();
        assert!(orders.len() <= 2);
        seen.extend(orders.iter().map(|o| o["id"].as_str().unwrap().to_owned()));
        match page.json["nextCursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/orders?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(
        seen, created,
        "all of ann's orders, newest first, none of bob's"
    );

    for bad in [
        "/api/v1/orders?limit=0",
        "/api/v1/orders?limit=101",
        "/api/v1/orders?limit=x",
        "/api/v1/orders?cursor=bogus",
    ] {
        let reply = app.get(bad, Some(&ann.token)).await;
        assert_eq!(reply.status, 400, "{bad}");
        assert_eq!(reply.error_code(), "VALIDATION_FAILED");
    }
}

async fn a_pending_order_can_be_cancelled_once() {
    let app = spawn_shop().await;
    let (ann, bob) = (app.user().await, app.user().await);
    let order = app.create_order(&ann, 1).await;
    let path = format!(
        "/api/v1/orders/{}/cancel",
        order.json["id"].as_str().unwrap()
    );

    let by_bob = app.post(&path, Some(&bob.token), &json!({})).await;
    assert_eq!(by_bob.status, 404);

    let cancelled = app.post(&path, Some(&ann.token), &json!({})).await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.text);
    assert_eq!(cancelled.json["status"], "cancelled");
    assert_ne!(cancelled.json["updatedAt"], order.json["updatedAt"]);

    let again = app.post(&path, Some(&ann.token), &json!({})).await;
    assert_eq!(again.status, 409);
    assert_eq!(again.error_code(), "ORDER_NOT_CANCELLABLE");
}

async fn a_currency_outside_iso_4217_is_refused() {
    let app = spawn_shop().await;
    let user = app.user().await;
    // Made up, withdrawn (the kuna), "no currency", mixed case, padded.
    for currency in ["ABC", "HRK", "XXX", "Usd", " USD", "US$"] {
        let mut body = order_body(1);
        body["currency"] = json!(currency);
        let reply = app.post("/api/v1/orders", Some(&user.token), &body).await;
        assert_eq!(reply.status, 400, "{currency:?}: {}", reply.text);
        assert_eq!(reply.error_code(), "VALIDATION_FAILED");
        assert_eq!(reply.error_fields(), ["currency"], "{currency:?}");
    }
    // Current codes, and lower case as Stripe writes them, stored in capitals.
    for (currency, stored) in [("JPY", "JPY"), ("XCG", "XCG"), ("eur", "EUR")] {
        let mut body = order_body(1);
        body["currency"] = json!(currency);
        let reply = app.post("/api/v1/orders", Some(&user.token), &body).await;
        assert_eq!(reply.status, 201, "{currency:?}: {}", reply.text);
        assert_eq!(reply.json["currency"], stored);
    }
}

async fn a_quantity_of_1_0_is_the_integer_1() {
    let app = spawn_shop().await;
    let user = app.user().await;
    let mut body = order_body(1);
    body["items"][0]["quantity"] = json!(1.0);
    body["items"][1]["unitPriceCents"] = json!(2.5e2);
    let reply = app.post("/api/v1/orders", Some(&user.token), &body).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    assert_eq!(reply.json["items"][0]["quantity"], 1);
    assert!(reply.json["items"][0]["quantity"].is_i64());
    assert_eq!(reply.json["totalCents"], 1999 + 250);
}

async fn invisible_characters_in_an_order_are_refused_naming_each_field() {
    let app = spawn_shop().await;
    let user = app.user().await;
    let reply = app
        .post(
            "/api/v1/orders",
            Some(&user.token),
            &json!({
                "items": [{"productId": "book\u{200b}", "quantity": 1, "unitPriceCents": 100}],
                "currency": "USD",
                "paymentMethodId": "",
                "shippingAddress": {"street": "1 Main\nSt", "city": "\u{202e}dleifgnirpS",
                                    "state": "IL", "zipCode": "62701\u{feff}", "country": "U\u{0}S"}
            }),
        )
        .await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert_eq!(
        reply.error_fields(),
        [
            "items[0].productId",
            "paymentMethodId",
            "shippingAddress.street",
            "shippingAddress.city",
            "shippingAddress.zipCode",
            "shippingAddress.country"
        ]
    );
    let listed = app.get("/api/v1/orders", Some(&user.token)).await;
    assert_eq!(listed.json["orders"], json!([]), "nothing was stored");
}

on_every_database!(
    an_order_is_created_pending_with_its_total_computed_by_the_service,
    order_validation_names_every_bad_field,
    orders_need_a_token,
    a_retry_with_the_same_idempotency_key_returns_the_same_order,
    concurrent_retries_with_one_key_create_one_order,
    an_order_is_visible_to_its_owner_only,
    orders_list_newest_first_in_cursor_pages,
    a_pending_order_can_be_cancelled_once,
    a_currency_outside_iso_4217_is_refused,
    a_quantity_of_1_0_is_the_integer_1,
    invisible_characters_in_an_order_are_refused_naming_each_field,
);
