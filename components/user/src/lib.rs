//! The user service: registration with argon2id password hashes, login issuing HS256 JWTs
//! the gateway verifies, and the caller's own profile.
//!
//! | route | |
//! |---|---|
//! | `POST /api/v1/users/register` | public |
//! | `POST /api/v1/users/login` | public |
//! | `GET /api/v1/users/{id}` | the caller's own profile |
//! | `PATCH /api/v1/users/{id}` | change first and last name |
//!
//! Registering publishes `user.created`.
//!
//! An email is stored and looked up trimmed, in Unicode NFC and lower case, the local part
//! too ([`common::text::normalize_email`]): `Ada@Example.com` and `ada@example.com` are one
//! account. Names and emails holding invisible characters are refused. Rows written before
//! these rules are not migrated; registration and login also look for an email in the form
//! those rows have (trimmed and lowercased, without NFC).

mod events;
mod token;

use common::db::{Db, DbError, text, text_column};
use common::password;
use common::validate::{Validator, is_email, not_null};
use common::{ApiError, ApiResult, Ctx, FieldError, json, parse_json, segments};
use serde::{Deserialize, Serialize};
use spin_sdk::http::{Method, Request, Response};
use spin_sdk::http_component;

const DATABASE: &str = "users";

#[http_component]
fn handle(request: Request) -> Response {
    common::serve(&request, route)
}

fn route(request: &Request, ctx: &Ctx) -> ApiResult {
    match (request.method(), segments(request.path()).as_slice()) {
        (Method::Post, ["api", "v1", "users", "register"]) => register(request),
        (Method::Post, ["api", "v1", "users", "login"]) => login(request),
        (_, ["api", "v1", "users", "register" | "login"]) => {
            Err(ApiError::method_not_allowed("POST"))
        }
        (Method::Get, ["api", "v1", "users", id]) => get_profile(ctx, id),
        (Method::Patch, ["api", "v1", "users", id]) => update_profile(request, ctx, id),
        (_, ["api", "v1", "users", _]) => Err(ApiError::method_not_allowed("GET, PATCH")),
        _ => Err(ApiError::route_not_found(request.path())),
    }
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

const USER_COLUMNS: &str = "id, email, first_name, last_name, created_at";

fn user_from(row: &spin_sdk::sqlite::Row<'_>) -> Result<User, ApiError> {
    let field = |name: &str| text_column(row, name);
    Ok(User {
        id: field("id")?,
        email: field("email")?,
        first_name: field("first_name")?,
        last_name: field("last_name")?,
        created_at: field("created_at")?,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Registration {
    email: Option<String>,
    password: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
}

/// Checks a registration's email; returns its stored form ([`common::text::normalize_email`]).
fn registration_email(v: &mut Validator, email: &Option<String>) -> String {
    let Some(raw) = email else {
        v.check(false, "email", "is required");
        return String::new();
    };
    match common::text::normalize_email(raw) {
        Ok(email) => {
            // The address as sent, which is what `format: idn-email` judges too.
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

fn register(request: &Request) -> ApiResult {
    let body: Registration = parse_json(request)?;
    let mut v = Validator::default();
    let email = registration_email(&mut v, &body.email);
    let password = body.password.as_deref().unwrap_or_default();
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
    let hash = password::hash(password)?;
    let db = Db::open(DATABASE)?;
    let exists = || {
        ApiError::new(
            409,
            "USER_EXISTS",
            "a user with this email already exists; log in instead",
        )
    };
    // A row written before emails were NFC-normalised keys the same address differently.
    let legacy = common::text::legacy_email_key(body.email.as_deref().unwrap_or_default());
    if legacy != user.email
        && db
            .query("SELECT 1 FROM users WHERE email = ?", &[text(&legacy)])?
            .rows()
            .next()
            .is_some()
    {
        return Err(exists());
    }
    match db.try_query(
        "INSERT INTO users (id, email, password_hash, first_name, last_name, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?)",
        &[
            text(&user.id),
            text(&user.email),
            text(hash),
            text(&user.first_name),
            text(&user.last_name),
            text(&user.created_at),
            text(&user.created_at),
        ],
    ) {
        Ok(_) => {
            events::user_created(&user)?;
            Ok(json(201, &serde_json::json!({ "user": user })))
        }
        Err(DbError::Conflict) => Err(exists()),
        Err(DbError::Other(e)) => Err(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    email: String,
    password: String,
}

/// Looks the email up in its normalised form, so `Ada@Example.com` logs in to the account
/// registered as `ada@example.com`, and then in the form rows written before NFC have.
fn login(request: &Request) -> ApiResult {
    let body: Login = parse_json(request)?;
    let email = common::text::normalize_email(&body.email).map_err(|problem| {
        ApiError::validation(vec![FieldError {
            field: "email".into(),
            message: problem,
        }])
    })?;
    let legacy = common::text::legacy_email_key(&body.email);
    let db = Db::open(DATABASE)?;
    let rows = db.query(
        &format!(
            "SELECT {USER_COLUMNS}, password_hash FROM users WHERE email IN (?, ?)
             ORDER BY email = ? DESC LIMIT 1"
        ),
        &[text(&email), text(&legacy), text(&email)],
    )?;
    let found = rows.rows().next();
    let stored_hash = found.as_ref().and_then(|r| r.get::<&str>("password_hash"));
    // An unknown email costs one hash check too, so timing does not reveal who is registered.
    let password_ok = password::verify(&body.password, stored_hash);
    let (Some(row), true) = (found, password_ok) else {
        return Err(ApiError::new(
            401,
            "INVALID_CREDENTIALS",
            "the email or password is wrong",
        ));
    };
    let user = user_from(&row)?;
    let token = token::issue(&user.id, &user.email)?;
    Ok(json(
        200,
        &serde_json::json!({ "token": token, "user": user }),
    ))
}

/// Only the caller's own profile: anyone else's is 403, whether or not it exists.
fn own_id<'a>(ctx: &Ctx, id: &'a str) -> Result<&'a str, ApiError> {
    if ctx.user()? != id {
        return Err(ApiError::new(
            403,
            "FORBIDDEN",
            "you can only access your own profile",
        ));
    }
    Ok(id)
}

fn load_user(db: &Db, id: &str) -> Result<User, ApiError> {
    let rows = db.query(
        &format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?"),
        &[text(id)],
    )?;
    let row = rows
        .rows()
        .next()
        .ok_or_else(|| ApiError::not_found("USER_NOT_FOUND", "user"))?;
    user_from(&row)
}

fn get_profile(ctx: &Ctx, id: &str) -> ApiResult {
    let id = own_id(ctx, id)?;
    let user = load_user(&Db::open(DATABASE)?, id)?;
    Ok(json(200, &user))
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

fn update_profile(request: &Request, ctx: &Ctx, id: &str) -> ApiResult {
    let id = own_id(ctx, id)?;
    let body: ProfileUpdate = parse_json(request)?;
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
    let db = Db::open(DATABASE)?;
    let user = load_user(&db, id)?;
    let first_name = first_name.unwrap_or(user.first_name);
    let last_name = last_name.unwrap_or(user.last_name);
    db.query(
        "UPDATE users SET first_name = ?, last_name = ?, updated_at = ? WHERE id = ?",
        &[
            text(&first_name),
            text(&last_name),
            text(common::now()),
            text(id),
        ],
    )?;
    Ok(json(
        200,
        &User {
            first_name,
            last_name,
            ..user
        },
    ))
}
