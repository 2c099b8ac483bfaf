use reqwest::Method;
use serde_json::json;

use crate::helpers::*;

async fn registration_returns_the_user_without_its_password() {
    let app = spawn_shop().await;
    let reply = app
        .register("Grace.Hopper@Example.COM", "a long passphrase")
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let user = &reply.json["user"];
    assert_eq!(user["email"], "grace.hopper@example.com");
    assert_eq!(user["firstName"], "Ada");
    assert!(user["id"].as_str().is_some_and(|id| id.len() == 36));
    assert!(user["createdAt"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert!(
        !reply.text.to_lowercase().contains("hash"),
        "{}",
        reply.text
    );
    assert!(!reply.text.contains("a long passphrase"));
}

async fn registering_an_email_twice_is_a_conflict_whatever_its_case() {
    let app = spawn_shop().await;
    assert_eq!(
        app.register("dup@example.com", "password one").await.status,
        201
    );
    let again = app.register("DUP@example.com", "password two").await;
    assert_eq!(again.status, 409);
    assert_eq!(again.error_code(), "USER_EXISTS");
}

async fn registration_validation_names_every_bad_field() {
    let app = spawn_shop().await;
    let reply = app
        .post(
            "/api/v1/users/register",
            None,
            &json!({"email": "not-an-email", "password": "short", "firstName": "", "lastName": "x".repeat(101)}),
        )
        .await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.error_code(), "VALIDATION_FAILED");
    let fields = reply.error_fields();
    assert_eq!(fields, ["email", "password", "firstName", "lastName"]);

    let missing = app.post("/api/v1/users/register", None, &json!({})).await;
    assert_eq!(missing.status, 400);
    assert_eq!(
        missing.json["error"]["details"].as_array().unwrap().len(),
        4,
        "{}",
        missing.text
    );

    let wrong_type = app
        .post("/api/v1/users/register", None, &json!({"email": 5}))
        .await;
    assert_eq!(wrong_type.status, 400);
    assert_eq!(
        wrong_type.json["error"]["details"][0]["field"], "email",
        "{}",
        wrong_type.text
    );

    let unknown = app
        .post(
            "/api/v1/users/register",
            None,
            &json!({"email": "a@b.co", "password": "password", "firstName": "A", "lastName": "B", "isAdmin": true}),
        )
        .await;
    assert_eq!(unknown.status, 400);
    assert!(unknown.text.contains("isAdmin"), "{}", unknown.text);
}

async fn malformed_json_and_other_media_types_are_refused() {
    let app = spawn_shop().await;
    let malformed = Reply::from(
        app.client
            .post(app.url("/api/v1/users/register"))
            .header("content-type", "application/json")
            .body("{\"email\": ")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(malformed.status, 400);
    assert_eq!(malformed.error_code(), "INVALID_JSON");

    let form = Reply::from(
        app.client
            .post(app.url("/api/v1/users/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("email=a&password=b")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(form.status, 415);
    assert_eq!(form.error_code(), "UNSUPPORTED_MEDIA_TYPE");
}

async fn login_issues_a_token_the_gateway_accepts() {
    let app = spawn_shop().await;
    let user = app.user().await;
    assert_eq!(user.token.split('.').count(), 3);
    let me = app
        .get(&format!("/api/v1/users/{}", user.id), Some(&user.token))
        .await;
    assert_eq!(me.status, 200, "{}", me.text);
    assert_eq!(me.json["email"], user.email);
    assert_eq!(me.json["id"], user.id);
}

async fn wrong_password_and_unknown_email_look_the_same() {
    let app = spawn_shop().await;
    let user = app.user().await;
    let wrong = app.login(&user.email, "not the password").await;
    let unknown = app
        .login("nobody@example.com", "correct horse battery")
        .await;
    for reply in [&wrong, &unknown] {
        assert_eq!(reply.status, 401);
        assert_eq!(reply.error_code(), "INVALID_CREDENTIALS");
    }
    assert_eq!(
        wrong.json["error"]["message"],
        unknown.json["error"]["message"]
    );
}

async fn a_profile_is_visible_to_its_owner_only() {
    let app = spawn_shop().await;
    let (ann, bob) = (app.user().await, app.user().await);
    let path = format!("/api/v1/users/{}", ann.id);
    let as_bob = app.get(&path, Some(&bob.token)).await;
    assert_eq!(as_bob.status, 403);
    assert_eq!(as_bob.error_code(), "FORBIDDEN");
    let anonymous = app.get(&path, None).await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.error_code(), "AUTH_REQUIRED");
    assert_eq!(anonymous.header("www-authenticate"), "Bearer");
}

async fn a_deleted_or_unknown_own_id_is_not_found() {
    let app = spawn_shop().await;
    let ghost = uuid::Uuid::new_v4().to_string();
    let token = sign_jwt(
        app.jwt_secret().as_bytes(),
        &json!({"sub": ghost, "exp": unix_now() + 600}),
    );
    let reply = app
        .get(&format!("/api/v1/users/{ghost}"), Some(&token))
        .await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.error_code(), "USER_NOT_FOUND");
}

async fn forged_expired_and_malformed_tokens_are_refused_by_the_gateway() {
    let app = spawn_shop().await;
    let user = app.user().await;
    let path = format!("/api/v1/users/{}", user.id);
    let forged = sign_jwt(
        b"not the host's key at all",
        &json!({"sub": user.id, "exp": unix_now() + 600}),
    );
    let expired = sign_jwt(
        app.jwt_secret().as_bytes(),
        &json!({"sub": user.id, "exp": unix_now() - 3600}),
    );
    for (token, code) in [
        (forged.as_str(), "TOKEN_INVALID"),
        (expired.as_str(), "TOKEN_EXPIRED"),
        ("garbage", "TOKEN_INVALID"),
    ] {
        let reply = app.get(&path, Some(token)).await;
        assert_eq!(reply.status, 401, "{token}: {}", reply.text);
        assert_eq!(reply.error_code(), code);
    }
}

async fn a_client_cannot_claim_a_user_id_through_the_header() {
    let app = spawn_shop().await;
    let (ann, bob) = (app.user().await, app.user().await);
    let path = format!("/api/v1/users/{}", ann.id);
    let sneaky = Reply::from(
        app.client
            .get(app.url(&path))
            .header("x-berth-user-id", &ann.id)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(sneaky.status, 401);
    let as_bob_claiming_ann = Reply::from(
        app.client
            .get(app.url(&path))
            .bearer_auth(&bob.token)
            .header("x-berth-user-id", &ann.id)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(as_bob_claiming_ann.status, 403);
}

async fn profile_updates_change_names_and_nothing_else() {
    let app = spawn_shop().await;
    let user = app.user().await;
    let path = format!("/api/v1/users/{}", user.id);
    let updated = app
        .send_json(
            Method::PATCH,
            &path,
            Some(&user.token),
            &json!({"firstName": "  Augusta "}),
        )
        .await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    assert_eq!(updated.json["firstName"], "Augusta");
    assert_eq!(updated.json["lastName"], "Lovelace");
    let read = app.get(&path, Some(&user.token)).await;
    assert_eq!(read.json["firstName"], "Augusta");

    let email = app
        .send_json(
            Method::PATCH,
            &path,
            Some(&user.token),
            &json!({"email": "x@y.zz"}),
        )
        .await;
    assert_eq!(email.status, 400);
    assert_eq!(email.error_code(), "VALIDATION_FAILED");
    let empty = app
        .send_json(
            Method::PATCH,
            &path,
            Some(&user.token),
            &json!({"lastName": ""}),
        )
        .await;
    assert_eq!(empty.status, 400);
    assert_eq!(empty.json["error"]["details"][0]["field"], "lastName");
}

async fn wrong_methods_get_405_with_allow() {
    let app = spawn_shop().await;
    let reply = app.get("/api/v1/users/register", None).await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.error_code(), "METHOD_NOT_ALLOWED");
    assert_eq!(reply.header("allow"), "POST");
}

async fn an_email_with_a_zero_width_space_is_refused() {
    let app = spawn_shop().await;
    for email in [
        "ada\u{200b}@example.com",
        "\u{feff}ada@example.com",
        "ada@exam\u{200e}ple.com",
        "ada@example.com\n",
    ] {
        let reply = app.register(email, "a long passphrase").await;
        assert_eq!(reply.status, 400, "{email:?}: {}", reply.text);
        assert_eq!(reply.error_code(), "VALIDATION_FAILED");
        assert_eq!(reply.error_fields(), ["email"], "{email:?}");
        assert!(
            reply.json["error"]["details"][0]["message"]
                .as_str()
                .is_some_and(|m| m.contains("U+")),
            "the message names the character: {}",
            reply.text
        );
        // Login says the same instead of a puzzling "wrong email or password".
        let login = app.login(email, "a long passphrase").await;
        assert_eq!(login.status, 400, "{email:?}: {}", login.text);
        assert_eq!(login.error_fields(), ["email"]);
    }
}

async fn names_with_control_or_invisible_characters_are_refused() {
    let app = spawn_shop().await;
    let reply = app
        .post(
            "/api/v1/users/register",
            None,
            &json!({"email": "eve@example.com", "password": "a long passphrase",
                    "firstName": "Eve\u{202e}", "lastName": "Ada\u{0}"}),
        )
        .await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert_eq!(reply.error_fields(), ["firstName", "lastName"]);

    let user = app.user().await;
    let path = format!("/api/v1/users/{}", user.id);
    for name in [
        "Ada\u{200b}",
        "\u{2066}Ada\u{2069}",
        "Ada\tLovelace",
        "Ada\u{2028}",
    ] {
        let reply = app
            .send_json(
                Method::PATCH,
                &path,
                Some(&user.token),
                &json!({"lastName": name}),
            )
            .await;
        assert_eq!(reply.status, 400, "{name:?}: {}", reply.text);
        assert_eq!(reply.error_fields(), ["lastName"]);
    }
    let read = app.get(&path, Some(&user.token)).await;
    assert_eq!(read.json["lastName"], "Lovelace");
}

async fn login_finds_the_account_whatever_the_case_or_composition_of_the_email() {
    let app = spawn_shop().await;
    // "José" with a precomposed é, registered in mixed case.
    let registered = app
        .register("Jos\u{e9}.Ada@Example.COM", "a long passphrase")
        .await;
    assert_eq!(registered.status, 201, "{}", registered.text);
    assert_eq!(
        registered.json["user"]["email"],
        "jos\u{e9}.ada@example.com"
    );
    // Typed again as e + combining acute accent, in other cases, with spaces around.
    for typed in [
        "jose\u{301}.ada@example.com",
        "  JOS\u{c9}.ADA@EXAMPLE.COM ",
        "jos\u{e9}.ada@example.com",
    ] {
        let login = app.login(typed, "a long passphrase").await;
        assert_eq!(login.status, 200, "{typed:?}: {}", login.text);
        assert_eq!(login.json["user"]["id"], registered.json["user"]["id"]);
    }
    let again = app
        .register("JOSE\u{301}.ada@example.com", "another passphrase")
        .await;
    assert_eq!(again.status, 409, "{}", again.text);
}

async fn a_null_name_in_a_profile_update_is_refused_not_ignored() {
    let app = spawn_shop().await;
    let user = app.user().await;
    let path = format!("/api/v1/users/{}", user.id);
    let reply = app
        .send_json(
            Method::PATCH,
            &path,
            Some(&user.token),
            &json!({"firstName": "Augusta", "lastName": null}),
        )
        .await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert_eq!(reply.error_code(), "VALIDATION_FAILED");
    assert_eq!(reply.error_fields(), ["lastName"]);
    let read = app.get(&path, Some(&user.token)).await;
    assert_eq!(read.json["firstName"], "Ada", "nothing was changed");

    let nothing = app
        .send_json(Method::PATCH, &path, Some(&user.token), &json!({}))
        .await;
    assert_eq!(nothing.status, 200, "{}", nothing.text);
    assert_eq!(nothing.json["lastName"], "Lovelace");
}

async fn a_body_sent_as_an_array_is_refused() {
    let app = spawn_shop().await;
    for (path, body) in [
        (
            "/api/v1/users/register",
            json!(["ann@example.com", "a long passphrase", "Ann", "Lee"]),
        ),
        (
            "/api/v1/users/login",
            json!(["ann@example.com", "a long passphrase"]),
        ),
    ] {
        let reply = app.post(path, None, &body).await;
        assert_eq!(reply.status, 400, "{path}: {}", reply.text);
        assert_eq!(reply.error_fields(), ["body"]);
        assert!(reply.text.contains("JSON object"), "{}", reply.text);
    }
}

/// The component hashes with its own SIMD argon2id (components/common/src/password): what it
/// stores must verify with the argon2 crate, and what the crate made must log in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_hashes_are_argon2id_as_the_argon2_crate_reads_and_writes_them() {
    use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
    use sqlx::Connection as _;

    let app = spawn(SHOP).await;
    let made_here = "made in the component";
    assert_eq!(
        app.register("wasm@example.com", made_here).await.status,
        201
    );
    let users = app.data_dir.path().join("sqlite/users.db");
    let mut db = sqlx::SqliteConnection::connect(&format!("sqlite://{}", users.display()))
        .await
        .unwrap();
    let stored: String =
        sqlx::query_scalar("SELECT password_hash FROM users WHERE email = 'wasm@example.com'")
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert!(
        stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{stored}"
    );
    let argon2 = argon2::Argon2::default();
    let parsed = PasswordHash::new(&stored).unwrap();
    assert!(
        argon2
            .verify_password(made_here.as_bytes(), &parsed)
            .is_ok()
    );
    assert!(
        argon2
            .verify_password(b"another password", &parsed)
            .is_err()
    );

    let made_natively = "made by the argon2 crate";
    let salt = SaltString::encode_b64(b"a native salt!!!").unwrap();
    let native = argon2
        .hash_password(made_natively.as_bytes(), &salt)
        .unwrap()
        .to_string();
    sqlx::query("UPDATE users SET password_hash = ? WHERE email = 'wasm@example.com'")
        .bind(&native)
        .execute(&mut db)
        .await
        .unwrap();
    assert_eq!(
        app.login("wasm@example.com", made_natively).await.status,
        200
    );
    assert_eq!(app.login("wasm@example.com", made_here).await.status, 401);
}

on_every_database!(
    registration_returns_the_user_without_its_password,
    registering_an_email_twice_is_a_conflict_whatever_its_case,
    registration_validation_names_every_bad_field,
    malformed_json_and_other_media_types_are_refused,
    login_issues_a_token_the_gateway_accepts,
    wrong_password_and_unknown_email_look_the_same,
    a_profile_is_visible_to_its_owner_only,
    a_deleted_or_unknown_own_id_is_not_found,
    forged_expired_and_malformed_tokens_are_refused_by_the_gateway,
    a_client_cannot_claim_a_user_id_through_the_header,
    profile_updates_change_names_and_nothing_else,
    wrong_methods_get_405_with_allow,
    an_email_with_a_zero_width_space_is_refused,
    names_with_control_or_invisible_characters_are_refused,
    login_finds_the_account_whatever_the_case_or_composition_of_the_email,
    a_null_name_in_a_profile_update_is_refused_not_ignored,
    a_body_sent_as_an_array_is_refused,
);
