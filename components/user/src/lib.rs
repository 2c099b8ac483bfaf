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

mod events;
mod password;
mod token;

use common::db::{Db, DbError, text, text_column};
use common::validate::{Validator, is_email};
use common::{ApiError, ApiResult, Ctx, json, parse_json, segments};
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

fn register(request: &Request) -> ApiResult {
    let body: Registration = parse_json(request)?;
    let mut v = Validator::default();
    let email = body
        .email
        .as_deref()
        .unwrap_or_default()
        .trim()
        .to_lowercase();
    v.check(body.email.is_some(), "email", "is required");
    v.check(
        body.email.is_none() || is_email(&email),
        "email",
        "must be an email address",
    );
    let password = body.password.as_deref().unwrap_or_default();
    v.check(body.password.is_some(), "password", "is required");
    v.check(
        body.password.is_none() || (8..=256).contains(&password.chars().count()),
        "password",
        "must be 8 to 256 characters",
    );
    let first_name = v.text(&body.first_name, "firstName", 1, 100).to_owned();
    let last_name = v.text(&body.last_name, "lastName", 1, 100).to_owned();
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
        Err(DbError::Conflict) => Err(ApiError::new(
            409,
            "USER_EXISTS",
            "a user with this email already exists",
        )),
        Err(DbError::Other(e)) => Err(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    email: String,
    password: String,
}

fn login(request: &Request) -> ApiResult {
    let body: Login = parse_json(request)?;
    let db = Db::open(DATABASE)?;
    let rows = db.query(
        &format!("SELECT {USER_COLUMNS}, password_hash FROM users WHERE email = ?"),
        &[text(body.email.trim().to_lowercase())],
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ProfileUpdate {
    first_name: Option<String>,
    last_name: Option<String>,
}

fn update_profile(request: &Request, ctx: &Ctx, id: &str) -> ApiResult {
    let id = own_id(ctx, id)?;
    let body: ProfileUpdate = parse_json(request)?;
    let mut v = Validator::default();
    let first_name = body
        .first_name
        .is_some()
        .then(|| v.text(&body.first_name, "firstName", 1, 100).to_owned());
    let last_name = body
        .last_name
        .is_some()
        .then(|| v.text(&body.last_name, "lastName", 1, 100).to_owned());
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
