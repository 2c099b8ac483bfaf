//! The payment side of the saga, its events in as CloudEvents POSTed to
//! `/api/v1/payments/events`.
//!
//! | event in | effect | event out |
//! |---|---|---|
//! | `order.created` | charge through the provider (never in a currency outside ISO 4217), record the payment | `payment.succeeded` or `payment.failed` |
//! | `order.created`, the order cancelled first | ask the provider whether an earlier delivery charged; refund such a charge and record it as `refunded` | `payment.refunded` when a charge is refunded |
//! | `order.cancelled` | refund a succeeded charge, or mark the order so no later charge survives | `payment.refunded` when a charge is refunded |
//!
//! Idempotent by order id: one payment row per order (`UNIQUE`), provider calls keyed by
//! order; and each event's id is recorded with the writes it caused, so a redelivery
//! changes nothing. Provider calls happen before the writes, so the database is not locked while
//! the provider thinks; where the other handler may have raced in between, the check is
//! repeated inside the write transaction.
//!
//! A charge is made before the transaction that records it, so it can outlive a delivery
//! that did not commit (a host crash, a failed publish). That `order.created` was not
//! acknowledged and comes again; if the order was cancelled meanwhile, there is no payment
//! row to refund, so the redelivery looks the charge up at the provider
//! ([`provider::find_charge`]) and refunds it: no charge for a cancelled order survives
//! unrecorded.

use common::db::{Db, DbError, int, text};
use common::events::{self, Event};
use common::{ApiError, ApiResult};
use serde::{Deserialize, Serialize};
use spin_sdk::http::Request;

use crate::DATABASE;
use crate::provider::{self, Charge, Found};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OrderCreated {
    order_id: String,
    user_id: String,
    total_cents: i64,
    currency: String,
    payment_method_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OrderCancelled {
    order_id: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PaymentEvent<'a> {
    order_id: &'a str,
    payment_id: &'a str,
    amount_cents: i64,
    currency: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

/// The `source` of the events this service publishes.
const SOURCE: &str = "/berth-shop/payment";

/// Handles an order event delivered to `POST /api/v1/payments/events`. A provider that
/// cannot be reached answers 502, which the platform retries.
pub fn handle(request: &Request) -> ApiResult {
    let event: Event<serde_json::Value> = events::receive(request)?;
    let db = Db::open(DATABASE)?;
    // A redelivery finds the order's payment (or its cancellation) and changes nothing; one
    // that races in finds its event id already recorded inside the write transaction.
    match event.kind.as_str() {
        "order.created" => order_created(&db, event.typed()?)?,
        "order.cancelled" => order_cancelled(&db, event.typed()?)?,
        _ => return Ok(events::handled_response("ignored")),
    }
    Ok(events::handled_response("applied"))
}

fn provider_unavailable(message: String) -> ApiError {
    ApiError::new(502, "PROVIDER_UNAVAILABLE", message)
}

/// The order's payment: its id, status, amount, currency and provider reference.
struct Existing {
    id: String,
    status: String,
    amount_cents: i64,
    currency: String,
    provider_ref: Option<String>,
}

fn payment_for(db: &Db, order_id: &str) -> Result<Option<Existing>, ApiError> {
    let rows = db.query(
        "SELECT id, status, amount_cents, currency, provider_ref FROM payments WHERE order_id = ?",
        &[text(order_id)],
    )?;
    Ok(rows.rows().next().map(|row| Existing {
        id: row.get::<&str>("id").unwrap_or_default().to_owned(),
        status: row.get::<&str>("status").unwrap_or_default().to_owned(),
        amount_cents: row.get::<i64>("amount_cents").unwrap_or_default(),
        currency: row.get::<&str>("currency").unwrap_or_default().to_owned(),
        provider_ref: row.get::<&str>("provider_ref").map(str::to_owned),
    }))
}

fn is_cancelled(db: &Db, order_id: &str) -> Result<bool, ApiError> {
    let rows = db.query(
        "SELECT 1 FROM cancelled_orders WHERE order_id = ?",
        &[text(order_id)],
    )?;
    Ok(rows.rows().next().is_some())
}

fn publish(
    kind: &str,
    payment: &Existing,
    order_id: &str,
    reason: Option<&str>,
) -> Result<(), ApiError> {
    events::publish(
        SOURCE,
        kind,
        PaymentEvent {
            order_id,
            payment_id: &payment.id,
            amount_cents: payment.amount_cents,
            currency: &payment.currency,
            reason,
        },
    )
}

/// Refunds `payment` at the provider and records it, announcing `payment.refunded`.
fn refund(db: &Db, payment: &Existing, order_id: &str) -> Result<(), ApiError> {
    refund_at_provider(payment, order_id)?;
    record_refund(db, payment, order_id)
}

/// The provider's side of a refund; keyed by order, so asking twice refunds once.
fn refund_at_provider(payment: &Existing, order_id: &str) -> Result<(), ApiError> {
    let provider_ref = payment.provider_ref.as_deref().unwrap_or_default();
    provider::refund(order_id, provider_ref)
        .map(drop)
        .map_err(provider_unavailable)
}

/// Records a refund made at the provider, announcing `payment.refunded` the first time.
fn record_refund(db: &Db, payment: &Existing, order_id: &str) -> Result<(), ApiError> {
    let rows = db.query(
        "UPDATE payments SET status = 'refunded', updated_at = ?
         WHERE id = ? AND status = 'succeeded' RETURNING id",
        &[text(common::now()), text(&payment.id)],
    )?;
    if rows.rows().next().is_some() {
        publish("payment.refunded", payment, order_id, None)?;
    }
    Ok(())
}

fn order_created(db: &Db, event: Event<OrderCreated>) -> Result<(), ApiError> {
    let order = event.data;
    if payment_for(db, &order.order_id)?.is_some() {
        return Ok(());
    }
    if is_cancelled(db, &order.order_id)? {
        return refund_unrecorded_charge(db, &event.id, &order);
    }
    let charge = match declined_before_charging(&order.currency) {
        Some(declined) => declined,
        None => provider::charge(
            &order.order_id,
            order.total_cents,
            &order.currency,
            &order.payment_method_id,
        )
        .map_err(provider_unavailable)?,
    };
    let (status, provider_ref, reason) = match &charge {
        Charge::Succeeded { provider_ref } => ("succeeded", Some(provider_ref.as_str()), None),
        Charge::Declined { reason } => ("failed", None, Some(reason.as_str())),
    };
    let payment = Existing {
        id: common::new_id(),
        status: status.to_owned(),
        amount_cents: order.total_cents,
        currency: order.currency.clone(),
        provider_ref: provider_ref.map(str::to_owned),
    };
    db.transaction(|tx| {
        if !events::first_time(tx, &event.id)? {
            return Ok(());
        }
        match insert_payment(tx, &payment, &order, reason) {
            Ok(()) => {}
            // Another delivery of this order recorded its payment first.
            Err(DbError::Conflict) => return Ok(()),
            Err(DbError::Other(e)) => return Err(e),
        }
        if status == "succeeded" && is_cancelled(tx, &order.order_id)? {
            // Cancelled while being charged: the charge must not survive.
            return refund(tx, &payment, &order.order_id);
        }
        let subject = if status == "succeeded" {
            "payment.succeeded"
        } else {
            "payment.failed"
        };
        publish(subject, &payment, &order.order_id, reason)
    })
}

/// An `order.created` for an order cancelled before any payment was recorded. An earlier
/// delivery may have charged and then not committed; the provider is asked, and a charge
/// it made is refunded (keyed by order, so once) and recorded as a `refunded` payment,
/// announcing `payment.refunded`, all in one transaction. Nothing charged: nothing changes,
/// as before.
fn refund_unrecorded_charge(db: &Db, event_id: &str, order: &OrderCreated) -> Result<(), ApiError> {
    let found = provider::find_charge(&order.order_id).map_err(provider_unavailable)?;
    let Some(provider_ref) = charge_to_refund(found) else {
        return Ok(());
    };
    let payment = Existing {
        id: common::new_id(),
        status: "refunded".into(),
        amount_cents: order.total_cents,
        currency: order.currency.clone(),
        provider_ref: Some(provider_ref),
    };
    refund_at_provider(&payment, &order.order_id)?;
    db.transaction(|tx| {
        if !events::first_time(tx, event_id)? {
            return Ok(());
        }
        match insert_payment(tx, &payment, order, None) {
            Ok(()) => publish("payment.refunded", &payment, &order.order_id, None),
            // Another delivery of this order recorded its payment (and refund) first.
            Err(DbError::Conflict) => Ok(()),
            Err(DbError::Other(e)) => Err(e),
        }
    })
}

/// What the provider's intent for a cancelled order calls for: the charge to refund, if it
/// succeeded. A declined intent, or none, charged nothing.
fn charge_to_refund(found: Option<Found>) -> Option<String> {
    found.filter(Found::succeeded).map(|f| f.provider_ref)
}

/// Inserts the order's one payment row; a conflict means another delivery inserted it.
fn insert_payment(
    tx: &Db,
    payment: &Existing,
    order: &OrderCreated,
    reason: Option<&str>,
) -> Result<(), DbError> {
    let now = common::now();
    tx.try_query(
        "INSERT INTO payments (id, order_id, user_id, amount_cents, currency, status,
                               provider_ref, failure_reason, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        &[
            text(&payment.id),
            text(&order.order_id),
            text(&order.user_id),
            int(payment.amount_cents),
            text(&payment.currency),
            text(&payment.status),
            payment
                .provider_ref
                .as_deref()
                .map_or(spin_sdk::sqlite::Value::Null, text),
            reason.map_or(spin_sdk::sqlite::Value::Null, text),
            text(&now),
            text(&now),
        ],
    )
    .map(drop)
}

/// The decline of an order the provider must not see. The order service takes only ISO 4217
/// codes, but an `order.created` published before it did may still be on its way.
fn declined_before_charging(currency: &str) -> Option<Charge> {
    (!common::currency::is_chargeable(currency)).then(|| Charge::Declined {
        reason: format!(
            "currency_not_supported: {currency:?} is not a current ISO 4217 currency code"
        ),
    })
}

/// With no payment row yet, the order is only marked cancelled; the provider is not asked.
/// The `order.created` that has not recorded a payment is either in flight, and finds the
/// mark inside its transaction, or was not acknowledged and comes again, and then asks the
/// provider itself ([`refund_unrecorded_charge`]). Asking here as well would put a provider
/// call on every cancellation before payment and still prove nothing, since a charge in
/// flight can land just after the answer. (An `order.created` that exhausts its delivery
/// attempts is a dead letter; redriving it refunds the same way.)
fn order_cancelled(db: &Db, event: Event<OrderCancelled>) -> Result<(), ApiError> {
    let order_id = event.data.order_id.as_str();
    match payment_for(db, order_id)? {
        Some(payment) if payment.status == "succeeded" => {
            refund_at_provider(&payment, order_id)?;
            db.transaction(|tx| {
                if events::first_time(tx, &event.id)? {
                    record_refund(tx, &payment, order_id)?;
                }
                Ok(())
            })
        }
        Some(_) => Ok(()),
        None => db.transaction(|tx| {
            if !events::first_time(tx, &event.id)? {
                return Ok(());
            }
            tx.query(
                "INSERT INTO cancelled_orders (order_id, cancelled_at) VALUES (?, ?)
                 ON CONFLICT (order_id) DO NOTHING",
                &[text(order_id), text(common::now())],
            )?;
            // A charge may have been recorded since the first look.
            match payment_for(tx, order_id)? {
                Some(payment) if payment.status == "succeeded" => refund(tx, &payment, order_id),
                _ => Ok(()),
            }
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_succeeded_charge_of_a_cancelled_order_is_refunded() {
        let found = |status: &str| {
            Some(Found {
                provider_ref: "pi_1".into(),
                status: status.into(),
            })
        };
        assert_eq!(charge_to_refund(None), None);
        assert_eq!(charge_to_refund(found("requires_payment_method")), None);
        assert_eq!(
            charge_to_refund(found("succeeded")).as_deref(),
            Some("pi_1")
        );
    }

    #[test]
    fn an_order_in_a_currency_outside_iso_4217_is_declined_without_a_charge() {
        for currency in ["ABC", "XXX", "HRK", "usd", ""] {
            match declined_before_charging(currency) {
                Some(Charge::Declined { reason }) => {
                    assert!(reason.starts_with("currency_not_supported"), "{reason}")
                }
                _ => panic!("{currency:?} would be charged"),
            }
        }
        for currency in ["USD", "EUR", "JPY"] {
            assert!(declined_before_charging(currency).is_none(), "{currency}");
        }
    }
}
