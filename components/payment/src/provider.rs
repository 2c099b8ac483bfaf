//! The payment provider, spoken to over outbound HTTP in Stripe's shape. By default it is
//! the simulator shipped with the app (`http://payment-provider.spin.internal`); the
//! `payment_provider_url` variable points elsewhere. Every call carries an idempotency key
//! derived from the order, so a retried message never charges or refunds twice, and
//! [`find_charge`] asks the provider what it charged for an order (Stripe's search on the
//! `order_id` metadata every charge carries).

use serde::Deserialize;
use spin_sdk::http::{Method, Request, Response, send};

/// How a charge ended. `Err(String)` from the calls below means "try again later".
pub enum Charge {
    Succeeded { provider_ref: String },
    Declined { reason: String },
}

/// An intent the provider holds for an order.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub provider_ref: String,
    /// Stripe's: `succeeded` is a charge; anything else (`requires_payment_method` after a
    /// decline) charged nothing.
    pub status: String,
}

impl Found {
    pub fn succeeded(&self) -> bool {
        self.status == "succeeded"
    }
}

#[derive(Deserialize)]
struct Intent {
    id: String,
    status: String,
}

#[derive(Deserialize)]
struct SearchResult {
    data: Vec<Intent>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ProviderError,
}

#[derive(Deserialize)]
struct ProviderError {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    decline_code: Option<String>,
}

fn base_url() -> Result<String, String> {
    spin_sdk::variables::get("payment_provider_url")
        .map(|u| u.trim_end_matches('/').to_owned())
        .map_err(|e| format!("the payment_provider_url variable is unavailable: {e:?}"))
}

fn post(path: &str, key: &str, body: serde_json::Value) -> Result<Response, String> {
    let url = format!("{}{path}", base_url()?);
    let request = Request::builder()
        .method(Method::Post)
        .uri(&url)
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(body.to_string())
        .build();
    spin_sdk::http::run(send::<_, Response>(request))
        .map_err(|e| format!("the payment provider at {url} cannot be reached: {e}"))
}

fn get(path: &str) -> Result<Response, String> {
    let url = format!("{}{path}", base_url()?);
    let request = Request::builder().method(Method::Get).uri(&url).build();
    spin_sdk::http::run(send::<_, Response>(request))
        .map_err(|e| format!("the payment provider at {url} cannot be reached: {e}"))
}

fn provider_error(response: &Response) -> ProviderError {
    serde_json::from_slice::<ErrorBody>(response.body())
        .map(|b| b.error)
        .unwrap_or(ProviderError {
            message: None,
            code: None,
            decline_code: None,
        })
}

/// Charges `amount_cents` for an order with the customer's payment method.
pub fn charge(
    order_id: &str,
    amount_cents: i64,
    currency: &str,
    payment_method: &str,
) -> Result<Charge, String> {
    let response = post(
        "/v1/payment_intents",
        &format!("charge-{order_id}"),
        serde_json::json!({
            "amount": amount_cents,
            "currency": currency.to_ascii_lowercase(),
            "payment_method": payment_method,
            "metadata": { "order_id": order_id },
        }),
    )?;
    match *response.status() {
        200..=299 => {
            let intent: Intent = serde_json::from_slice(response.body())
                .map_err(|e| format!("the provider answered a charge unreadably: {e}"))?;
            if intent.status == "succeeded" {
                Ok(Charge::Succeeded {
                    provider_ref: intent.id,
                })
            } else {
                Err(format!("the charge is still {}", intent.status))
            }
        }
        // Declined, or a request the provider will never accept (an unknown card).
        400 | 402 => {
            let e = provider_error(&response);
            Ok(Charge::Declined {
                reason: e
                    .decline_code
                    .or(e.code)
                    .map(|c| format!("{c}: {}", e.message.clone().unwrap_or_default()))
                    .or(e.message)
                    .unwrap_or_else(|| "declined by the provider".into()),
            })
        }
        status => Err(format!("the provider answered a charge with {status}")),
    }
}

/// Refunds a charge in full; returns the refund's id.
pub fn refund(order_id: &str, provider_ref: &str) -> Result<String, String> {
    let response = post(
        "/v1/refunds",
        &format!("refund-{order_id}"),
        serde_json::json!({ "payment_intent": provider_ref }),
    )?;
    match *response.status() {
        200..=299 => serde_json::from_slice::<Intent>(response.body())
            .map(|r| r.id)
            .map_err(|e| format!("the provider answered a refund unreadably: {e}")),
        400 if provider_error(&response).code.as_deref() == Some("charge_already_refunded") => {
            Ok(String::new())
        }
        status => Err(format!(
            "the provider answered a refund with {status}: {}",
            provider_error(&response).message.unwrap_or_default()
        )),
    }
}

/// The intent charged for an order, if the provider holds one: a succeeded one before any
/// other. With every charge keyed by its order there is at most one.
///
/// The simulator's search sees a charge at once. Stripe's own is not read-after-write
/// consistent (new objects become searchable within about a minute, it says), so against
/// Stripe a redelivery sooner than that could miss the charge it looks for.
pub fn find_charge(order_id: &str) -> Result<Option<Found>, String> {
    let response = get(&search_path(order_id))?;
    match *response.status() {
        200..=299 => serde_json::from_slice::<SearchResult>(response.body())
            .map(|r| pick(r.data))
            .map_err(|e| format!("the provider answered a search unreadably: {e}")),
        status => Err(format!(
            "the provider answered a search with {status}: {}",
            provider_error(&response).message.unwrap_or_default()
        )),
    }
}

/// `metadata['order_id']:'…'`, with a quote or backslash in the id escaped, URL-encoded.
fn search_path(order_id: &str) -> String {
    let id = order_id.replace('\\', "\\\\").replace('\'', "\\'");
    let query = format!("metadata['order_id']:'{id}'");
    format!("/v1/payment_intents/search?query={}", url_encode(&query))
}

/// Percent-encodes all but RFC 3986's unreserved characters.
fn url_encode(s: &str) -> String {
    let mut encoded = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    encoded
}

fn pick(intents: Vec<Intent>) -> Option<Found> {
    let found = |i: Intent| Found {
        provider_ref: i.id,
        status: i.status,
    };
    let (succeeded, others): (Vec<_>, Vec<_>) =
        intents.into_iter().partition(|i| i.status == "succeeded");
    succeeded.into_iter().chain(others).next().map(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent(id: &str, status: &str) -> Intent {
        Intent {
            id: id.into(),
            status: status.into(),
        }
    }

    #[test]
    fn the_search_names_the_order_url_encoded() {
        assert_eq!(
            search_path("0b7e-41"),
            "/v1/payment_intents/search?query=metadata%5B%27order_id%27%5D%3A%270b7e-41%27"
        );
        assert_eq!(
            search_path("a'b\\ é&"),
            "/v1/payment_intents/search?query=metadata%5B%27order_id%27%5D%3A%27a%5C%27b%5C%5C%20%C3%A9%26%27"
        );
    }

    #[test]
    fn a_succeeded_intent_is_found_before_a_declined_one() {
        assert_eq!(pick(vec![]), None);
        let declined = pick(vec![intent("pi_1", "requires_payment_method")]).unwrap();
        assert!(!declined.succeeded());
        let found = pick(vec![
            intent("pi_1", "requires_payment_method"),
            intent("pi_2", "succeeded"),
        ])
        .unwrap();
        assert!(found.succeeded());
        assert_eq!(found.provider_ref, "pi_2");
    }
}
