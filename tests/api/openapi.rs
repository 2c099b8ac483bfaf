//! Keeps `openapi.yaml` true: every documented operation and status is produced by the
//! running host, and every body it sends matches the documented schema.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::*;

struct Spec {
    doc: Value,
    seen: BTreeSet<(String, String, String)>,
}

impl Spec {
    fn load() -> Spec {
        let text = std::fs::read_to_string(repo("openapi.yaml")).expect("openapi.yaml");
        let doc: Value = serde_norway::from_str(&text).expect("openapi.yaml parses");
        assert_eq!(doc["openapi"], "3.1.0");
        Spec {
            doc,
            seen: BTreeSet::new(),
        }
    }

    fn resolve<'a>(&'a self, value: &'a Value) -> &'a Value {
        match value["$ref"].as_str() {
            Some(pointer) => self
                .doc
                .pointer(pointer.trim_start_matches('#'))
                .unwrap_or_else(|| panic!("dangling $ref {pointer}")),
            None => value,
        }
    }

    /// Checks `reply` against the documented response of `method path` and records that
    /// this operation and status were seen.
    fn check(&mut self, method: &str, path: &str, reply: &Reply) {
        let operation = &self.doc["paths"][path][method];
        assert!(
            operation.is_object(),
            "{method} {path} is not in openapi.yaml"
        );
        let status = reply.status.to_string();
        let (key, response) = match operation["responses"].get(&status) {
            Some(response) => (status.clone(), response),
            None => ("default".to_owned(), &operation["responses"]["default"]),
        };
        let response = self.resolve(response).clone();
        let schema = &response["content"]["application/json"]["schema"];
        assert!(
            schema.is_object(),
            "{method} {path} {key} documents no JSON body"
        );
        let mut root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "components": self.doc["components"],
        });
        for (k, v) in schema.as_object().unwrap() {
            root[k] = v.clone();
        }
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(&root)
            .expect("the documented schema compiles");
        let errors: Vec<String> = validator
            .iter_errors(&reply.json)
            .map(|e| e.to_string())
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {path} answered {status} with a body that does not match openapi.yaml:\n{}\n{}",
            errors.join("\n"),
            reply.text
        );
        self.check_headers(method, path, &key, &response, reply);
        assert!(
            !reply.header("x-request-id").is_empty(),
            "{method} {path}: no x-request-id"
        );
        assert!(
            reply.header("traceparent").starts_with("00-"),
            "{method} {path}: no traceparent"
        );
        self.seen.insert((path.to_owned(), method.to_owned(), key));
    }

    /// The headers the response documents: the required ones sent, each sent one of its
    /// schema (`integer` is all the schema uses for headers).
    fn check_headers(&self, method: &str, path: &str, key: &str, response: &Value, reply: &Reply) {
        let Some(headers) = response["headers"].as_object() else {
            return;
        };
        for (name, header) in headers {
            let header = self.resolve(header);
            let value = reply.header(name);
            if value.is_empty() {
                assert!(
                    header["required"] != true,
                    "{method} {path} {key}: the documented header {name} is missing"
                );
                continue;
            }
            if header["schema"]["type"] == "integer" {
                assert!(
                    value.parse::<u64>().is_ok(),
                    "{method} {path} {key}: {name}: {value} is not an integer"
                );
            }
        }
    }

    /// Every operation and explicitly documented status must have been produced.
    fn assert_all_seen(&self) {
        let mut missing = Vec::new();
        for (path, item) in self.doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                if method == "parameters" {
                    continue;
                }
                for status in operation["responses"].as_object().unwrap().keys() {
                    let seen = (path.clone(), method.clone(), status.clone());
                    if status != "default" && !self.seen.contains(&seen) {
                        missing.push(format!("{method} {path} {status}"));
                    }
                }
            }
        }
        assert!(
            missing.is_empty(),
            "documented but never produced:\n{}",
            missing.join("\n")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_host_matches_openapi_yaml() {
    let app = spawn_shop().await;
    let mut spec = Spec::load();
    let register = "/api/v1/users/register";
    let login = "/api/v1/users/login";

    let email = "spec@example.com";
    let registered = app.register(email, "a good password").await;
    spec.check("post", register, &registered);
    spec.check(
        "post",
        register,
        &app.register(email, "a good password").await,
    );
    spec.check(
        "post",
        register,
        &app.post(register, None, &json!({"email": "x"})).await,
    );
    // An address beyond ASCII (RFC 6531) comes back as the `idn-email` it is.
    let unicode = app
        .register("Jos\u{e9}@example.com", "a good password")
        .await;
    assert_eq!(unicode.status, 201, "{}", unicode.text);
    spec.check("post", register, &unicode);
    spec.check("post", register, &not_json_to(&app, register).await);

    let logged_in = app.login(email, "a good password").await;
    spec.check("post", login, &logged_in);
    spec.check("post", login, &app.login(email, "wrong password").await);
    spec.check(
        "post",
        login,
        &app.login("spec\u{200b}@example.com", "a good password")
            .await,
    );
    spec.check("post", login, &not_json_to(&app, login).await);
    let token = logged_in.json["token"].as_str().unwrap().to_owned();
    let me = logged_in.json["user"]["id"].as_str().unwrap().to_owned();
    let other = app.user().await;

    let user_path = "/api/v1/users/{id}";
    let mine = format!("/api/v1/users/{me}");
    spec.check("get", user_path, &app.get(&mine, Some(&token)).await);
    spec.check("get", user_path, &app.get(&mine, None).await);
    spec.check("get", user_path, &app.get(&mine, Some(&other.token)).await);
    let ghost = uuid::Uuid::new_v4().to_string();
    let ghost_token = sign_jwt(
        app.jwt_secret().as_bytes(),
        &json!({"sub": ghost, "exp": unix_now() + 60}),
    );
    spec.check(
        "get",
        user_path,
        &app.get(&format!("/api/v1/users/{ghost}"), Some(&ghost_token))
            .await,
    );
    let patch = |token: Option<String>, body: Value| {
        let app = &app;
        let mine = mine.clone();
        async move {
            app.send_json(Method::PATCH, &mine, token.as_deref(), &body)
                .await
        }
    };
    spec.check(
        "patch",
        user_path,
        &patch(Some(token.clone()), json!({"lastName": "Byron"})).await,
    );
    spec.check(
        "patch",
        user_path,
        &patch(Some(token.clone()), json!({"lastName": ""})).await,
    );
    spec.check(
        "patch",
        user_path,
        &patch(Some(token.clone()), json!({"lastName": null})).await,
    );
    spec.check("patch", user_path, &patch(None, json!({})).await);
    spec.check(
        "patch",
        user_path,
        &app.send_json(
            Method::PATCH,
            &format!("/api/v1/users/{ghost}"),
            Some(&ghost_token),
            &json!({}),
        )
        .await,
    );
    let not_json_patch = Reply::from(
        app.client
            .patch(app.url(&mine))
            .bearer_auth(&token)
            .header("content-type", "text/plain")
            .body("hi")
            .send()
            .await
            .unwrap(),
    )
    .await;
    spec.check("patch", user_path, &not_json_patch);
    spec.check(
        "patch",
        user_path,
        &patch(Some(other.token.clone()), json!({})).await,
    );

    let orders = "/api/v1/orders";
    let user = User {
        id: me.clone(),
        email: email.into(),
        token: token.clone(),
    };
    let order = app.create_order_with_key(&user, "spec-1", 1).await;
    spec.check("post", orders, &order);
    spec.check(
        "post",
        orders,
        &app.create_order_with_key(&user, "spec-1", 2).await,
    );
    spec.check(
        "post",
        orders,
        &app.post(orders, Some(&token), &json!({"items": []})).await,
    );
    spec.check(
        "post",
        orders,
        &app.post(orders, None, &order_body(1)).await,
    );
    let not_json_order = Reply::from(
        app.client
            .post(app.url(orders))
            .bearer_auth(&token)
            .header("content-type", "text/plain")
            .body("hi")
            .send()
            .await
            .unwrap(),
    )
    .await;
    spec.check("post", orders, &not_json_order);
    app.create_order(&user, 2).await;
    let page = app.get("/api/v1/orders?limit=1", Some(&token)).await;
    assert!(page.json["nextCursor"].is_string());
    spec.check("get", orders, &page);
    spec.check(
        "get",
        orders,
        &app.get("/api/v1/orders?limit=500", Some(&token)).await,
    );
    spec.check("get", orders, &app.get(orders, None).await);

    let order_id = order.json["id"].as_str().unwrap();
    let one = "/api/v1/orders/{id}";
    spec.check(
        "get",
        one,
        &app.get(&format!("/api/v1/orders/{order_id}"), Some(&token))
            .await,
    );
    spec.check(
        "get",
        one,
        &app.get(&format!("/api/v1/orders/{order_id}"), None).await,
    );
    spec.check(
        "get",
        one,
        &app.get(&format!("/api/v1/orders/{order_id}"), Some(&other.token))
            .await,
    );
    let cancel = "/api/v1/orders/{id}/cancel";
    let cancel_path = format!("/api/v1/orders/{order_id}/cancel");
    spec.check(
        "post",
        cancel,
        &app.post(&cancel_path, Some(&other.token), &json!({})).await,
    );
    spec.check(
        "post",
        cancel,
        &app.post(&cancel_path, None, &json!({})).await,
    );
    spec.check(
        "post",
        cancel,
        &app.post(&cancel_path, Some(&token), &json!({})).await,
    );
    spec.check(
        "post",
        cancel,
        &app.post(&cancel_path, Some(&token), &json!({})).await,
    );

    let paid = app.create_order(&user, 1).await;
    let paid_id = paid.json["id"].as_str().unwrap().to_owned();
    let order_id = paid_id.as_str();
    let payment_id = saga_payment(&app, &user, order_id).await;
    let payments = "/api/v1/payments";
    spec.check(
        "get",
        payments,
        &app.get(
            &format!("/api/v1/payments?orderId={order_id}"),
            Some(&token),
        )
        .await,
    );
    spec.check(
        "get",
        payments,
        &app.get("/api/v1/payments?orderId=nope", Some(&token)).await,
    );
    spec.check("get", payments, &app.get(payments, None).await);
    let payment = "/api/v1/payments/{id}";
    spec.check(
        "get",
        payment,
        &app.get(&format!("/api/v1/payments/{payment_id}"), Some(&token))
            .await,
    );
    spec.check(
        "get",
        payment,
        &app.get(&format!("/api/v1/payments/{payment_id}"), None)
            .await,
    );
    spec.check(
        "get",
        payment,
        &app.get(
            &format!("/api/v1/payments/{payment_id}"),
            Some(&other.token),
        )
        .await,
    );

    // Gateway errors are the `default` response of every operation.
    spec.check(
        "get",
        payment,
        &app.get("/api/v1/payments/x/y/z", Some(&token)).await,
    );

    // Last, as they lock this client out of logging in and registering for a while: the
    // gateway's limits (spin.toml) answer 429 with Retry-After and RateLimit-*.
    for (operation, body) in [
        (login, json!({"email": email, "password": "still wrong"})),
        (register, json!({})),
    ] {
        let limited = rate_limited(&app, operation, &body).await;
        spec.check("post", operation, &limited);
    }

    spec.assert_all_seen();
}

/// A POST of plain text where JSON is expected.
async fn not_json_to(app: &TestApp, path: &str) -> Reply {
    Reply::from(
        app.client
            .post(app.url(path))
            .header("content-type", "text/plain")
            .body("hi")
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// The first 429 that posting `body` to `path` again and again gets, within 200 tries.
async fn rate_limited(app: &TestApp, path: &str, body: &Value) -> Reply {
    for _ in 0..200 {
        let reply = app.post(path, None, body).await;
        if reply.status == 429 {
            return reply;
        }
    }
    panic!("200 quick POSTs to {path} were never answered 429");
}
