//! The payment provider, spoken to over outbound HTTP in Stripe's shape. By default it is
//! the simulator shipped with the app (`http://payment-provider.spin.internal`); the
//! `payment_provider_url` variable points elsewhere. Every call carries an idempotency key
//! derived from the order, so a retried message never charges or refunds twice.

use serde::Deserialize;
use spin_sdk::http::{Method, Request, Response, send};

/// How a charge ended. `Err(String)` from the calls below means "try again later".
pub enum Charge {
    Succeeded { provider_ref: String },
    Declined { reason: String },
}

#[derive(Deserialize)]
struct Intent {
    id: String,
    status: String,
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
