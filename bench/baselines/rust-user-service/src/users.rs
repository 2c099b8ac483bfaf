//! The routes of `components/user/src/lib.rs`, with the same checks in the same order and
//! `components/common`'s validation, body parsing and errors.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Uri, header};
use axum::response::Response;
use axum::routing::{MethodRouter, any, get, post};
use common::validate::{Validator, is_email, not_null};
use common::{ApiError, FieldError};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sqlx::Row as _;
use sqlx::sqlite::SqliteRow;

use crate::Service;
use crate::gateway::{Ctx, Failure, json};

type Reply = Result<Response, Failure>;

/// Every route twice, without and with a trailing `/`: berth's routes ignore it.
pub fn routes(service: Arc<Service>) -> Router {
    let only_post = || any(|ctx: Ctx| answer(ctx, async { method_not_allowed("POST") }));
    let register = || post(register).fallback(only_post());
    let login = || post(login).fallback(only_post());
    let profile = || -> MethodRouter<Arc<Service>> {
        let other = || any(|ctx: Ctx| answer(ctx, async { method_not_allowed("GET, PATCH") }));
        // axum would answer HEAD with the GET handler; the component does not.
        get(get_profile)
            .head(|ctx: Ctx| answer(ctx, async { method_not_allowed("GET, PATCH") }))
            .patch(update_profile)
            .fallback(other())
    };
    Router::new()
        .route("/api/v1/users/register", register())
        .route("/api/v1/users/register/", register())
        .route("/api/v1/users/login", login())
        .route("/api/v1/users/login/", login())
        .route("/api/v1/users/{id}", profile())
        .route("/api/v1/users/{id}/", profile())
        .fallback(|ctx: Ctx, uri: Uri| {
            answer(ctx, async move {
                Err(ApiError::route_not_found(uri.path()).into())
            })
        })
        .with_state(service)
}

/// The reply, or its error under the request's trace id.
async fn answer(ctx: Ctx, reply: impl Future<Output = Reply>) -> Response {
    reply
        .await
        .unwrap_or_else(|failure| failure.into_response(&ctx.trace_id))
}

fn method_not_allowed(allow: &'static str) -> Reply {
    Err(ApiError::method_not_allowed(allow).into())
}

/// `common::parse_json` on this request: 415, 400 `INVALID_JSON` and 400 naming the field
/// exactly as the component answers.
fn parse_json<T: DeserializeOwned>(headers: &HeaderMap, body: &[u8]) -> Result<T, ApiError> {
    let mut request = spin_sdk::http::Request::builder();
    request.method(spin_sdk::http::Method::Post);
    if let Some(content_type) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        request.header("content-type", content_type);
    }
    common::parse_json(&request.body(body.to_vec()).build())
}

/// `User` of the public API: never the password hash.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct User {
    id: String,
    email: String,
    first_name: String,
    last_name: String,
    created_at: String,
}

fn user_from(row: &SqliteRow) -> Result<User, ApiError> {
    let field = |name: &str| {
        row.try_get::<String, _>(name)
            .map_err(|e| ApiError::internal(format!("column `{name}`: {e}")))
    };
    Ok(User {
        id: field("id")?,
        email: field("email")?,
        first_name: field("first_name")?,
        last_name: field("last_name")?,
        created_at: field("created_at")?,
    })
}

fn db_error(e: sqlx::Error) -> ApiError {
    ApiError::internal(format!("the database failed: {e}"))
}

/// Runs an argon2 hash off the async threads, one per core at a time.
async fn hashing<T: Send + 'static>(
    service: &Service,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    let _permit = service
        .hashing
        .acquire()
        .await
        .map_err(ApiError::internal)?;
    tokio::task::spawn_blocking(work)
        .await
        .map_err(ApiError::internal)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Registration {
    email: Option<String>,
    password: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
}

/// The component's `registration_email`.
fn registration_email(v: &mut Validator, email: &Option<String>) -> String {
    let Some(raw) = email else {
        v.check(false, "email", "is required");
        return String::new();
    };
    match common::text::normalize_email(raw) {
        Ok(email) => {
            v.check(
                is_email(raw),
                "email",
                "must be an email address such as ada@example.com, without spaces around it",
            );
            email
        }
        Err(problem) => {
            v.check(false, "email", &problem);
            String::new()
        }
    }
}

async fn register(
    State(service): State<Arc<Service>>,
    ctx: Ctx,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer(ctx, async move {
        let body: Registration = parse_json(&headers, &body)?;
        let mut v = Validator::default();
        let email = registration_email(&mut v, &body.email);
        let password = body.password.clone().unwrap_or_default();
        v.check(body.password.is_some(), "password", "is required");
        v.check(
            body.password.is_none() || (8..=256).contains(&password.chars().count()),
            "password",
            "must be 8 to 256 characters",
        );
        let first_name = v.text(&body.first_name, "firstName", 1, 100);
        let last_name = v.text(&body.last_name, "lastName", 1, 100);
        v.finish()?;

        let user = User {
            id: common::new_id(),
            email,
            first_name,
            last_name,
            created_at: common::now(),
        };
        let hash = hashing(&service, move || common::password::hash(&password)).await??;
        let exists = || {
            ApiError::new(
                409,
                "USER_EXISTS",
                "a user with this email already exists; log in instead",
            )
        };
        let legacy = common::text::legacy_email_key(body.email.as_deref().unwrap_or_default());
        if legacy != user.email
            && sqlx::query("SELECT 1 FROM users WHERE email = ?")
                .bind(&legacy)
                .fetch_optional(&service.db)
                .await
                .map_err(db_error)?
                .is_some()
        {
            return Err(exists().into());
        }
        let inserted = sqlx::query(
            "INSERT INTO users (id, email, password_hash, first_name, last_name, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&user.id)
        .bind(&user.email)
        .bind(&hash)
        .bind(&user.first_name)
        .bind(&user.last_name)
        .bind(&user.created_at)
        .bind(&user.created_at)
        .execute(&service.db)
        .await;
        match inserted {
            Ok(_) => Ok(json(201, &serde_json::json!({ "user": user }))),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(exists().into()),
            Err(e) => Err(db_error(e).into()),
        }
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    email: String,
    password: String,
}

async fn login(
    State(service): State<Arc<Service>>,
    ctx: Ctx,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer(ctx, async move {
        let body: Login = parse_json(&headers, &body)?;
        let email = common::text::normalize_email(&body.email).map_err(|problem| {
            ApiError::validation(vec![FieldError {
                field: "email".into(),
                message: problem,
            }])
        })?;
        let legacy = common::text::legacy_email_key(&body.email);
        let found = sqlx::query(
            "SELECT id, email, first_name, last_name, created_at, password_hash FROM users
             WHERE email IN (?, ?) ORDER BY email = ? DESC LIMIT 1",
        )
        .bind(&email)
        .bind(&legacy)
        .bind(&email)
        .fetch_optional(&service.db)
        .await
        .map_err(db_error)?;
        let stored: Option<String> = found.as_ref().and_then(|r| r.try_get("password_hash").ok());
        // An unknown email costs one hash check too, so timing does not reveal who is
        // registered.
        let password = body.password;
        let password_ok = hashing(&service, move || {
            common::password::verify(&password, stored.as_deref())
        })
        .await?;
        let (Some(row), true) = (found, password_ok) else {
            return Err(ApiError::new(
                401,
                "INVALID_CREDENTIALS",
                "the email or password is wrong",
            )
            .into());
        };
        let user = user_from(&row)?;
        let token = service.tokens.issue(&user.id, &user.email)?;
        Ok(json(
            200,
            &serde_json::json!({ "token": token, "user": user }),
        ))
    })
    .await
}

/// Only the caller's own profile: anyone else's is 403, whether or not it exists.
fn own_id(ctx: &Ctx, id: &str) -> Result<(), ApiError> {
    if ctx.user()? != id {
        return Err(ApiError::new(
            403,
            "FORBIDDEN",
            "you can only access your own profile",
        ));
    }
    Ok(())
}

async fn load_user(service: &Service, id: &str) -> Result<User, ApiError> {
    let row =
        sqlx::query("SELECT id, email, first_name, last_name, created_at FROM users WHERE id = ?")
            .bind(id)
            .fetch_optional(&service.db)
            .await
            .map_err(db_error)?
            .ok_or_else(|| ApiError::not_found("USER_NOT_FOUND", "user"))?;
    user_from(&row)
}

async fn get_profile(
    State(service): State<Arc<Service>>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Response {
    let reply = async {
        own_id(&ctx, &id)?;
        Ok(json(200, &load_user(&service, &id).await?))
    };
    let reply = reply.await;
    answer(ctx, async { reply }).await
}

/// Both names optional; `null` is refused, not read as "unchanged".
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ProfileUpdate {
    #[serde(default, deserialize_with = "not_null")]
    first_name: Option<String>,
    #[serde(default, deserialize_with = "not_null")]
    last_name: Option<String>,
}

async fn update_profile(
    State(service): State<Arc<Service>>,
    ctx: Ctx,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let reply = async {
        own_id(&ctx, &id)?;
        let body: ProfileUpdate = parse_json(&headers, &body)?;
        let mut v = Validator::default();
        let first_name = body
            .first_name
            .is_some()
            .then(|| v.text(&body.first_name, "firstName", 1, 100));
        let last_name = body
            .last_name
            .is_some()
            .then(|| v.text(&body.last_name, "lastName", 1, 100));
        v.finish()?;
        let user = load_user(&service, &id).await?;
        let first_name = first_name.unwrap_or(user.first_name);
        let last_name = last_name.unwrap_or(user.last_name);
        sqlx::query("UPDATE users SET first_name = ?, last_name = ?, updated_at = ? WHERE id = ?")
            .bind(&first_name)
            .bind(&last_name)
            .bind(common::now())
            .bind(&id)
            .execute(&service.db)
            .await
            .map_err(db_error)?;
        Ok(json(
            200,
            &User {
                first_name,
                last_name,
                ..user
            },
        ))
    };
    let reply: Reply = reply.await;
    answer(ctx, async { reply }).await
}
