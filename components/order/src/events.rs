//! The order side of the saga: `order.created` and `order.cancelled` out, payment outcomes in,
//! as CloudEvents POSTed to `/api/v1/orders/events`.
//!
//! | event in | effect |
//! |---|---|
//! | `payment.succeeded` | a pending order becomes `confirmed`, with its payment id |
//! | `payment.failed` | a pending order becomes `cancelled` |
//! | `payment.refunded` | a cancelled order that had been confirmed becomes `refunded` |
//!
//! Each update names the state it starts from, so an event that arrives late changes
//! nothing, and skips an event whose id it has recorded, so one that arrives twice does
//! neither.

use common::db::{Db, text};
use common::{ApiResult, events};
use serde::{Deserialize, Serialize};
use spin_sdk::http::Request;

use crate::DATABASE;

/// The `source` of the events this service publishes.
const SOURCE: &str = "/berth-shop/order";

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderCreated<'a> {
    pub order_id: &'a str,
    pub user_id: &'a str,
    pub total_cents: i64,
    pub currency: &'a str,
    pub payment_method_id: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderCancelled<'a> {
    pub order_id: &'a str,
    pub user_id: &'a str,
}

/// Publishes `data` as an event of `kind`; on berth it leaves only if this invocation commits.
pub fn publish(kind: &str, data: impl Serialize) -> Result<(), common::ApiError> {
    events::publish(SOURCE, kind, data)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PaymentOutcome {
    order_id: String,
    payment_id: String,
}

/// Applies a payment outcome delivered to `POST /api/v1/orders/events`.
pub fn handle(request: &Request) -> ApiResult {
    let event: events::Event<PaymentOutcome> = events::receive(request)?;
    let PaymentOutcome {
        order_id,
        payment_id,
    } = event.data;
    // Each update skips an event already recorded, and is recorded after it: the two need no
    // transaction of their own (on berth they share the invocation's anyway), since an update
    // that was applied but not recorded is a no-op when the event comes again.
    let (sql, params) = match event.kind.as_str() {
        "payment.succeeded" => (
            "UPDATE orders SET status = 'confirmed', payment_id = ?, updated_at = ?
             WHERE id = ? AND status = 'pending' AND NOT EXISTS
               (SELECT 1 FROM handled_events WHERE event_id = ?)",
            vec![
                text(payment_id),
                text(common::now()),
                text(order_id),
                text(&event.id),
            ],
        ),
        "payment.failed" => (
            "UPDATE orders SET status = 'cancelled', updated_at = ?
             WHERE id = ? AND status = 'pending' AND NOT EXISTS
               (SELECT 1 FROM handled_events WHERE event_id = ?)",
            vec![text(common::now()), text(order_id), text(&event.id)],
        ),
        "payment.refunded" => (
            "UPDATE orders SET status = 'refunded', updated_at = ?
             WHERE id = ? AND status = 'cancelled' AND payment_id IS NOT NULL AND NOT EXISTS
               (SELECT 1 FROM handled_events WHERE event_id = ?)",
            vec![text(common::now()), text(order_id), text(&event.id)],
        ),
        _ => return Ok(events::handled_response("ignored")),
    };
    let db = Db::open(DATABASE)?;
    db.query(sql, &params)?;
    let first = events::first_time(&db, &event.id)?;
    Ok(events::handled_response(if first {
        "applied"
    } else {
        "duplicate"
    }))
}
