//! The order side of the saga: `order.created` and `order.cancelled` out, payment outcomes in.
//!
//! | subject in | effect |
//! |---|---|
//! | `payment.succeeded` | a pending order becomes `confirmed`, with its payment id |
//! | `payment.failed` | a pending order becomes `cancelled` |
//! | `payment.refunded` | a cancelled order that had been confirmed becomes `refunded` |
//!
//! Each update names the state it starts from, so a message that arrives late or twice
//! changes nothing.

use common::db::{Db, text};
use common::events;
use serde::{Deserialize, Serialize};

use crate::DATABASE;

wit_bindgen::generate!({
    world: "berth:services/subscriber",
    path: ["../../wit/deps/messaging@0.2.0", "../../wit/services"],
    generate_all,
});

use exports::wasmcloud::messaging::handler::Guest;
use wasmcloud::messaging::consumer;
use wasmcloud::messaging::types::BrokerMessage;

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

/// Publishes `data` as an event of `kind`; it leaves only if this invocation commits.
pub fn publish(kind: &str, data: impl Serialize) -> Result<(), common::ApiError> {
    let body = events::envelope(kind, data).map_err(common::ApiError::internal)?;
    consumer::publish(&BrokerMessage {
        subject: kind.to_owned(),
        body,
        reply_to: None,
    })
    .map_err(|e| common::ApiError::internal(format!("cannot publish {kind}: {e}")))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PaymentOutcome {
    order_id: String,
    payment_id: String,
}

struct Handler;

impl Guest for Handler {
    fn handle_message(msg: BrokerMessage) -> Result<(), String> {
        let event: events::Event<PaymentOutcome> = events::parse(&msg.subject, &msg.body)?;
        let PaymentOutcome {
            order_id,
            payment_id,
        } = event.data;
        let (sql, params) = match msg.subject.as_str() {
            "payment.succeeded" => (
                "UPDATE orders SET status = 'confirmed', payment_id = ?, updated_at = ?
                 WHERE id = ? AND status = 'pending'",
                vec![text(payment_id), text(common::now()), text(order_id)],
            ),
            "payment.failed" => (
                "UPDATE orders SET status = 'cancelled', updated_at = ?
                 WHERE id = ? AND status = 'pending'",
                vec![text(common::now()), text(order_id)],
            ),
            "payment.refunded" => (
                "UPDATE orders SET status = 'refunded', updated_at = ?
                 WHERE id = ? AND status = 'cancelled' AND payment_id IS NOT NULL",
                vec![text(common::now()), text(order_id)],
            ),
            _ => return Ok(()),
        };
        let db = Db::open(DATABASE).map_err(|e| e.to_string())?;
        db.query(sql, &params).map_err(|e| e.to_string())?;
        Ok(())
    }
}

export!(Handler);
