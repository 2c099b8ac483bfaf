//! The order service. Totals are computed here in integer cents, never taken from the
//! client; a retried create with the same `Idempotency-Key` returns the same order.
//!
//! | route | |
//! |---|---|
//! | `POST /api/v1/orders` | create (status `pending`) |
//! | `GET /api/v1/orders?limit=&cursor=` | the caller's orders, newest first |
//! | `GET /api/v1/orders/{id}` | one of the caller's orders |
//! | `POST /api/v1/orders/{id}/cancel` | cancel a pending or confirmed order |
//!
//! Creating publishes `order.created` and cancelling `order.cancelled`; the payment
//! outcomes come back as CloudEvents POSTed to `/api/v1/orders/events` ([`events`]), a
//! route the host delivers to and never serves to a client.

mod events;
mod model;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::db::{Db, DbError, int, text};
use common::{ApiError, ApiResult, Ctx, json, parse_json, segments};
use sha2::{Digest, Sha256};
use spin_sdk::http::{Method, Request, Response};
use spin_sdk::http_component;

use model::{NewOrder, Order};

pub(crate) const DATABASE: &str = "orders";
const DEFAULT_PAGE: usize = 20;
const MAX_PAGE: usize = 100;

#[http_component]
fn handle(request: Request) -> Response {
    common::serve(&request, route)
}

fn route(request: &Request, ctx: &Ctx) -> ApiResult {
    match (request.method(), segments(request.path()).as_slice()) {
        (Method::Post, ["api", "v1", "orders", "events"]) => events::handle(request),
        (Method::Post, ["api", "v1", "orders"]) => create(request, ctx),
        (Method::Get, ["api", "v1", "orders"]) => list(request, ctx),
        (_, ["api", "v1", "orders"]) => Err(ApiError::method_not_allowed("GET, POST")),
        (Method::Get, ["api", "v1", "orders", id]) => get(ctx, id),
        (_, ["api", "v1", "orders", _]) => Err(ApiError::method_not_allowed("GET")),
        (Method::Post, ["api", "v1", "orders", id, "cancel"]) => cancel(ctx, id),
        (_, ["api", "v1", "orders", _, "cancel"]) => Err(ApiError::method_not_allowed("POST")),
        _ => Err(ApiError::route_not_found(request.path())),
    }
}

fn create(request: &Request, ctx: &Ctx) -> ApiResult {
    let user = ctx.user()?;
    let body: NewOrder = parse_json(request)?;
    let valid = body.validate()?;
    let key = idempotency_key(request)?;
    let db = Db::open(DATABASE)?;
    // The fingerprint is of the validated order, so a retry with the same content matches
    // however its JSON was laid out.
    let fingerprint = hex::encode(Sha256::digest(
        serde_json::to_vec(&valid).map_err(ApiError::internal)?,
    ));
    if let Some(key) = &key
        && let Some(existing) = replay(&db, user, key, &fingerprint)?
    {
        return Ok(created(&existing, true));
    }
    let order = Order::new(user, valid);
    let inserted = db.transaction(|tx| {
        tx.query(
            &format!(
                "INSERT INTO orders ({}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                Order::COLUMNS
            ),
            &order.to_row()?,
        )?;
        let Some(key) = &key else {
            return Ok(());
        };
        match tx.try_query(
            "INSERT INTO idempotency_keys (user_id, key, fingerprint, order_id, created_at)
             VALUES (?, ?, ?, ?, ?)",
            &[
                text(user),
                text(key),
                text(&fingerprint),
                text(&order.id),
                text(&order.created_at),
            ],
        ) {
            Ok(_) => Ok(()),
            Err(DbError::Conflict) => Err(CreateError::KeyTaken),
            Err(DbError::Other(e)) => Err(e.into()),
        }
    });
    match inserted {
        Ok(()) => {
            events::publish(
                "order.created",
                events::OrderCreated {
                    order_id: &order.id,
                    user_id: &order.user_id,
                    total_cents: order.total_cents,
                    currency: &order.currency,
                    payment_method_id: &order.payment_method_id,
                },
            )?;
            Ok(created(&order, false))
        }
        // A concurrent request with the same key committed first; this order was rolled
        // back, and the client gets the one that holds the key.
        Err(CreateError::KeyTaken) => {
            let key = key.as_deref().unwrap_or_default();
            match replay(&db, user, key, &fingerprint)? {
                Some(existing) => Ok(created(&existing, true)),
                None => Err(ApiError::internal(
                    "an idempotency key conflicted but cannot be read",
                )),
            }
        }
        Err(CreateError::Api(e)) => Err(e),
    }
}

enum CreateError {
    Api(ApiError),
    KeyTaken,
}

impl From<ApiError> for CreateError {
    fn from(e: ApiError) -> Self {
        CreateError::Api(e)
    }
}

fn created(order: &Order, replayed: bool) -> Response {
    let mut response = json(201, order);
    if replayed {
        response.set_header("idempotent-replayed", "true");
    }
    response
}

/// The `Idempotency-Key` header, if the client sent one.
fn idempotency_key(request: &Request) -> Result<Option<String>, ApiError> {
    let Some(value) = request.header("idempotency-key") else {
        return Ok(None);
    };
    match value.as_str() {
        Some(key)
            if !key.is_empty() && key.len() <= 255 && key.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Ok(Some(key.to_owned()))
        }
        _ => Err(ApiError::validation(vec![common::FieldError {
            field: "Idempotency-Key".into(),
            message: "must be 1 to 255 visible ASCII characters".into(),
        }])),
    }
}

/// The order an earlier request with this key created, if any; 409 when that request was
/// for a different order.
fn replay(db: &Db, user: &str, key: &str, fingerprint: &str) -> Result<Option<Order>, ApiError> {
    let rows = db.query(
        "SELECT fingerprint, order_id FROM idempotency_keys WHERE user_id = ? AND key = ?",
        &[text(user), text(key)],
    )?;
    let Some(row) = rows.rows().next() else {
        return Ok(None);
    };
    if row.get::<&str>("fingerprint") != Some(fingerprint) {
        return Err(ApiError::new(
            409,
            "IDEMPOTENCY_KEY_REUSED",
            "this Idempotency-Key was used for a different order; use a new key",
        ));
    }
    let order_id = row.get::<&str>("order_id").unwrap_or_default();
    load(db, user, order_id).map(Some)
}

fn load(db: &Db, user: &str, id: &str) -> Result<Order, ApiError> {
    let rows = db.query(
        &format!(
            "SELECT {} FROM orders WHERE id = ? AND user_id = ?",
            Order::COLUMNS
        ),
        &[text(id), text(user)],
    )?;
    let row = rows
        .rows()
        .next()
        .ok_or_else(|| ApiError::not_found("ORDER_NOT_FOUND", "order"))?;
    Order::from_row(&row)
}

/// Someone else's order is "not found" too: existence is not revealed.
fn get(ctx: &Ctx, id: &str) -> ApiResult {
    let order = load(&Db::open(DATABASE)?, ctx.user()?, id)?;
    Ok(json(200, &order))
}

fn list(request: &Request, ctx: &Ctx) -> ApiResult {
    let user = ctx.user()?;
    let mut limit = DEFAULT_PAGE;
    let mut after: Option<(String, String)> = None;
    for (name, value) in form_urlencoded::parse(request.query().as_bytes()) {
        match name.as_ref() {
            "limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|l| (1..=MAX_PAGE).contains(l))
                    .ok_or_else(|| invalid_query("limit", &format!("must be 1 to {MAX_PAGE}")))?;
            }
            "cursor" => {
                after =
                    Some(decode_cursor(&value).ok_or_else(|| {
                        invalid_query("cursor", "is not a cursor this API returned")
                    })?);
            }
            _ => {}
        }
    }
    let db = Db::open(DATABASE)?;
    let fetch = int(limit as i64 + 1);
    let rows = match &after {
        Some((created_at, id)) => db.query(
            &format!(
                "SELECT {} FROM orders WHERE user_id = ? AND (created_at, id) < (?, ?)
                 ORDER BY created_at DESC, id DESC LIMIT ?",
                Order::COLUMNS
            ),
            &[text(user), text(created_at), text(id), fetch],
        )?,
        None => db.query(
            &format!(
                "SELECT {} FROM orders WHERE user_id = ? ORDER BY created_at DESC, id DESC LIMIT ?",
                Order::COLUMNS
            ),
            &[text(user), fetch],
        )?,
    };
    let mut orders = rows
        .rows()
        .map(|r| Order::from_row(&r))
        .collect::<Result<Vec<_>, _>>()?;
    let next_cursor = if orders.len() > limit {
        orders.truncate(limit);
        orders.last().map(|o| encode_cursor(&o.created_at, &o.id))
    } else {
        None
    };
    Ok(json(
        200,
        &serde_json::json!({ "orders": orders, "nextCursor": next_cursor }),
    ))
}

fn cancel(ctx: &Ctx, id: &str) -> ApiResult {
    let user = ctx.user()?;
    let db = Db::open(DATABASE)?;
    let rows = db.query(
        &format!(
            "UPDATE orders SET status = 'cancelled', updated_at = ?
             WHERE id = ? AND user_id = ? AND status IN ('pending', 'confirmed') RETURNING {}",
            Order::COLUMNS
        ),
        &[text(common::now()), text(id), text(user)],
    )?;
    if let Some(row) = rows.rows().next() {
        // Payment refunds a charge if there is one, or makes sure none is made.
        events::publish(
            "order.cancelled",
            events::OrderCancelled {
                order_id: id,
                user_id: user,
            },
        )?;
        return Ok(json(200, &Order::from_row(&row)?));
    }
    let order = load(&db, user, id)?;
    Err(ApiError::new(
        409,
        "ORDER_NOT_CANCELLABLE",
        format!(
            "the order is {}; only pending and confirmed orders can be cancelled",
            order.status
        ),
    ))
}

fn invalid_query(field: &str, message: &str) -> ApiError {
    ApiError::validation(vec![common::FieldError {
        field: field.into(),
        message: message.into(),
    }])
}

/// Opaque to clients: the position of the last order of a page.
fn encode_cursor(created_at: &str, id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{created_at}|{id}"))
}

fn decode_cursor(cursor: &str) -> Option<(String, String)> {
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).ok()?).ok()?;
    let (created_at, id) = raw.split_once('|')?;
    common::is_uuid(id).then(|| (created_at.to_owned(), id.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let id = "7f0c6a9e-0000-4000-8000-000000000001";
        let c = encode_cursor("2026-01-01T00:00:00.000000Z", id);
        assert_eq!(
            decode_cursor(&c),
            Some(("2026-01-01T00:00:00.000000Z".into(), id.into()))
        );
        assert_eq!(decode_cursor("not-a-cursor"), None);
        assert_eq!(decode_cursor(&URL_SAFE_NO_PAD.encode("x|not-a-uuid")), None);
    }
}
