//! The payment service: one payment per order, charged and refunded by the order saga, read
//! here by the user who owns the order.
//!
//! | route | |
//! |---|---|
//! | `GET /api/v1/payments?orderId=` | the caller's payments (for one order when given) |
//! | `GET /api/v1/payments/{id}` | one of the caller's payments |
//!
//! Payments are made by the saga's events ([`events`]), POSTed by the host to
//! `/api/v1/payments/events` (never served to a client), through the provider ([`provider`]).

mod events;
mod provider;

use common::db::{Db, int_column, text, text_column};
use common::{ApiError, ApiResult, Ctx, FieldError, json, segments};
use serde::Serialize;
use spin_sdk::http::{Method, Request, Response};
use spin_sdk::http_component;

pub(crate) const DATABASE: &str = "payments";
const COLUMNS: &str =
    "id, order_id, amount_cents, currency, status, provider_ref, failure_reason, created_at";
const MAX_LISTED: i64 = 100;

#[http_component]
fn handle(request: Request) -> Response {
    common::serve(&request, route)
}

fn route(request: &Request, ctx: &Ctx) -> ApiResult {
    match (request.method(), segments(request.path()).as_slice()) {
        (Method::Post, ["api", "v1", "payments", "events"]) => events::handle(request),
        (Method::Get, ["api", "v1", "payments"]) => list(request, ctx),
        (Method::Get, ["api", "v1", "payments", id]) => get(ctx, id),
        (_, ["api", "v1", "payments"] | ["api", "v1", "payments", _]) => {
            Err(ApiError::method_not_allowed("GET"))
        }
        _ => Err(ApiError::route_not_found(request.path())),
    }
}

/// `Payment` of the public API.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Payment {
    id: String,
    order_id: String,
    amount_cents: i64,
    currency: String,
    status: String,
    provider_ref: Option<String>,
    failure_reason: Option<String>,
    created_at: String,
}

fn payment_from(row: &spin_sdk::sqlite::Row<'_>) -> Result<Payment, ApiError> {
    let field = |name: &str| text_column(row, name);
    Ok(Payment {
        id: field("id")?,
        order_id: field("order_id")?,
        amount_cents: int_column(row, "amount_cents")?,
        currency: field("currency")?,
        status: field("status")?,
        provider_ref: row.get::<&str>("provider_ref").map(str::to_owned),
        failure_reason: row.get::<&str>("failure_reason").map(str::to_owned),
        created_at: field("created_at")?,
    })
}

fn list(request: &Request, ctx: &Ctx) -> ApiResult {
    let user = ctx.user()?;
    let order_id = request
        .query()
        .split('&')
        .find_map(|pair| pair.strip_prefix("orderId="));
    let db = Db::open(DATABASE)?;
    let rows = match order_id {
        Some(order_id) if common::is_uuid(order_id) => db.query(
            &format!(
                "SELECT {COLUMNS} FROM payments WHERE user_id = ? AND order_id = ? ORDER BY created_at DESC"
            ),
            &[text(user), text(order_id)],
        )?,
        Some(_) => {
            return Err(ApiError::validation(vec![FieldError {
                field: "orderId".into(),
                message: "must be an order id (a UUID)".into(),
            }]));
        }
        None => db.query(
            &format!(
                "SELECT {COLUMNS} FROM payments WHERE user_id = ? ORDER BY created_at DESC LIMIT {MAX_LISTED}"
            ),
            &[text(user)],
        )?,
    };
    let payments = rows
        .rows()
        .map(|r| payment_from(&r))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(json(200, &serde_json::json!({ "payments": payments })))
}

/// Someone else's payment is "not found" too: existence is not revealed.
fn get(ctx: &Ctx, id: &str) -> ApiResult {
    let rows = Db::open(DATABASE)?.query(
        &format!("SELECT {COLUMNS} FROM payments WHERE id = ? AND user_id = ?"),
        &[text(id), text(ctx.user()?)],
    )?;
    let row = rows
        .rows()
        .next()
        .ok_or_else(|| ApiError::not_found("PAYMENT_NOT_FOUND", "payment"))?;
    Ok(json(200, &payment_from(&row)?))
}
