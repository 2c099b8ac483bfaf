//! The payment provider simulator: the slice of Stripe's API the payment service uses, with
//! Stripe's test payment methods. Its routes are private: only service chaining reaches it,
//! at `http://payment-provider.spin.internal`.
//!
//! | route | |
//! |---|---|
//! | `POST /v1/payment_intents` | charge: `pm_card_visa` succeeds, `pm_card_slow` succeeds after 2 s, `pm_card_chargeDeclined` is declined (402, the intent is kept) |
//! | `GET /v1/payment_intents/search?query=metadata['order_id']:'{id}'` | the intents charged for an order, newest first ([`search`]); `limit` 1 to 100, 10 by default |
//! | `GET /v1/payment_intents/{id}` | one intent |
//! | `POST /v1/refunds` | refund a succeeded intent, by default all that is left of it |
//!
//! Both POSTs honour `Idempotency-Key`: a retry gets the remembered status and body without
//! charging again, another request under the same key a 409. Errors are Stripe's
//! `{"error":{…}}` ([`stripe`]), not berth's, because the caller parses them as Stripe's.

mod search;
mod stripe;

use common::ApiError;
use common::db::{Db, int, int_column, text, text_column};
use common::segments;
use search::Search;
use serde_json::{Map, Value};
use spin_sdk::http::{Method, Request, Response};
use spin_sdk::http_component;
use stripe::{Intent, IntentParams, Refund, RefundParams, Reply, StripeError};

const DATABASE: &str = "provider";
const INTENT_COLUMNS: &str = "id, amount, currency, payment_method, status, metadata, created";

#[http_component]
fn handle(request: Request) -> Response {
    let reply = route(&request).unwrap_or_else(Reply::from);
    common::json(reply.status, &reply.body)
}

fn route(request: &Request) -> Result<Reply, StripeError> {
    match (request.method(), segments(request.path()).as_slice()) {
        (Method::Post, ["v1", "payment_intents"]) => create_intent(request),
        (Method::Get, ["v1", "payment_intents", "search"]) => search_intents(request),
        (Method::Get, ["v1", "payment_intents", id]) => get_intent(id),
        (Method::Post, ["v1", "refunds"]) => create_refund(request),
        (method, _) => Err(StripeError::unrecognized_url(
            &method.to_string(),
            request.path(),
        )),
    }
}

/// `ApiError::internal` has logged the detail; the caller gets Stripe's 500.
impl From<ApiError> for StripeError {
    fn from(_: ApiError) -> StripeError {
        StripeError::api_error()
    }
}

/// The card is "charged" before the write transaction, so a slow card does not hold the
/// database's write lock; a retry that finished meanwhile is caught again inside it.
fn create_intent(request: &Request) -> Result<Reply, StripeError> {
    let idempotency = Idempotency::of(request, "POST /v1/payment_intents")?;
    let db = Db::open(DATABASE)?;
    if let Some(reply) = idempotency.replay(&db)? {
        return Ok(reply);
    }
    let params = IntentParams::parse(request.body())?;
    let card = stripe::card(&params.payment_method)?;
    if !card.delay.is_zero() {
        std::thread::sleep(card.delay);
    }
    let intent = Intent {
        id: object_id("pi"),
        amount: params.amount,
        currency: params.currency,
        status: if card.succeeds {
            stripe::SUCCEEDED
        } else {
            stripe::REQUIRES_PAYMENT_METHOD
        }
        .into(),
        payment_method: params.payment_method,
        metadata: params.metadata,
        created: common::unix_now(),
    };
    db.transaction(|db| {
        if let Some(reply) = idempotency.replay(db)? {
            return Ok(reply);
        }
        db.query(
            &format!("INSERT INTO payment_intents ({INTENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"),
            &[
                text(&intent.id),
                int(intent.amount),
                text(&intent.currency),
                text(&intent.payment_method),
                text(&intent.status),
                text(Value::Object(intent.metadata.clone()).to_string()),
                int(intent.created as i64),
            ],
        )?;
        let reply = intent.reply();
        idempotency.remember(db, &reply)?;
        Ok(reply)
    })
}

fn get_intent(id: &str) -> Result<Reply, StripeError> {
    let intent = load_intent(&Db::open(DATABASE)?, id)?
        .ok_or_else(|| StripeError::no_such(404, "intent", "payment_intent", id))?;
    Ok(Reply {
        status: 200,
        body: intent.json(),
    })
}

/// All in one write transaction: the sum of earlier refunds cannot change under it.
fn create_refund(request: &Request) -> Result<Reply, StripeError> {
    let idempotency = Idempotency::of(request, "POST /v1/refunds")?;
    Db::open(DATABASE)?.transaction(|db| {
        if let Some(reply) = idempotency.replay(db)? {
            return Ok(reply);
        }
        let params = RefundParams::parse(request.body())?;
        let intent = load_intent(db, &params.payment_intent)?.ok_or_else(|| {
            StripeError::no_such(404, "payment_intent", "payment_intent", &params.payment_intent)
        })?;
        let rows = db.query(
            "SELECT COALESCE(SUM(amount), 0) AS refunded FROM refunds WHERE payment_intent = ?",
            &[text(&intent.id)],
        )?;
        let refunded = match rows.rows().next() {
            Some(row) => int_column(&row, "refunded")?,
            None => 0,
        };
        let refund = Refund {
            id: object_id("re"),
            amount: stripe::refund_amount(&intent, refunded, params.amount)?,
            payment_intent: intent.id,
            currency: intent.currency,
            created: common::unix_now(),
        };
        db.query(
            "INSERT INTO refunds (id, payment_intent, amount, currency, status, created) VALUES (?, ?, ?, ?, 'succeeded', ?)",
            &[
                text(&refund.id),
                text(&refund.payment_intent),
                int(refund.amount),
                text(&refund.currency),
                int(refund.created as i64),
            ],
        )?;
        let reply = Reply {
            status: 200,
            body: refund.json(),
        };
        idempotency.remember(db, &reply)?;
        Ok(reply)
    })
}

/// The database narrows by the metadata's text, which is all it stores of it; the exact
/// match is made here. Every candidate is read, so `has_more` is exact.
fn search_intents(request: &Request) -> Result<Reply, StripeError> {
    let search = Search::parse(request.query())?;
    let rows = Db::open(DATABASE)?.query(
        &format!(
            "SELECT {INTENT_COLUMNS} FROM payment_intents WHERE metadata LIKE ? ESCAPE '{}'
             ORDER BY created DESC, id",
            search::LIKE_ESCAPE
        ),
        &[text(search.like_pattern())],
    )?;
    let mut found = Vec::new();
    for row in rows.rows() {
        let intent = intent_from(&row)?;
        if search.matches(&intent.metadata) {
            found.push(intent);
        }
    }
    let has_more = found.len() > search.limit;
    found.truncate(search.limit);
    Ok(Reply {
        status: 200,
        body: search::result(&found, has_more),
    })
}

fn load_intent(db: &Db, id: &str) -> Result<Option<Intent>, ApiError> {
    let rows = db.query(
        &format!("SELECT {INTENT_COLUMNS} FROM payment_intents WHERE id = ?"),
        &[text(id)],
    )?;
    rows.rows().next().map(|row| intent_from(&row)).transpose()
}

fn intent_from(row: &spin_sdk::sqlite::Row<'_>) -> Result<Intent, ApiError> {
    let id = text_column(row, "id")?;
    let metadata: Map<String, Value> = serde_json::from_str(&text_column(row, "metadata")?)
        .map_err(|e| ApiError::internal(format!("the metadata of {id} is unreadable: {e}")))?;
    Ok(Intent {
        id,
        amount: int_column(row, "amount")?,
        currency: text_column(row, "currency")?,
        status: text_column(row, "status")?,
        payment_method: text_column(row, "payment_method")?,
        metadata,
        created: int_column(row, "created")?.max(0) as u64,
    })
}

/// `pi_…`/`re_…` followed by 24 random hex digits, like Stripe's ids.
fn object_id(prefix: &str) -> String {
    let hex = common::new_id().replace('-', "");
    format!("{prefix}_{}", &hex[..24])
}

/// A request's `Idempotency-Key`, if it has one, and the fingerprint of what it asks for.
/// Only requests that created something are remembered; one refused by validation may be
/// retried with the key, as with Stripe.
struct Idempotency {
    key: Option<String>,
    request: String,
}

impl Idempotency {
    fn of(request: &Request, route: &str) -> Result<Idempotency, StripeError> {
        let header = request.header("idempotency-key").and_then(|v| v.as_str());
        Ok(Idempotency {
            key: stripe::idempotency_key(header)?,
            request: stripe::fingerprint(route, request.body()),
        })
    }

    /// The reply remembered for this key, or a 409 when the key was used for another request.
    fn replay(&self, db: &Db) -> Result<Option<Reply>, StripeError> {
        let Some(key) = &self.key else {
            return Ok(None);
        };
        let rows = db.query(
            "SELECT request, status, response FROM idempotency_keys WHERE key = ?",
            &[text(key)],
        )?;
        let Some(row) = rows.rows().next() else {
            return Ok(None);
        };
        if text_column(&row, "request")? != self.request {
            return Err(StripeError::idempotency_key_reused(key));
        }
        let body = serde_json::from_str(&text_column(&row, "response")?).map_err(|e| {
            ApiError::internal(format!(
                "the response kept for key {key} is unreadable: {e}"
            ))
        })?;
        let status = u16::try_from(int_column(&row, "status")?)
            .map_err(|e| ApiError::internal(format!("the status kept for key {key}: {e}")))?;
        Ok(Some(Reply { status, body }))
    }

    fn remember(&self, db: &Db, reply: &Reply) -> Result<(), ApiError> {
        if let Some(key) = &self.key {
            db.query(
                "INSERT INTO idempotency_keys (key, request, status, response, created) VALUES (?, ?, ?, ?, ?)",
                &[
                    text(key),
                    text(&self.request),
                    int(reply.status.into()),
                    text(reply.body.to_string()),
                    int(common::unix_now() as i64),
                ],
            )?;
        }
        Ok(())
    }
}
