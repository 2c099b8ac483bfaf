//! Stripe's shapes and rules without any I/O: request parameters, what each test card does,
//! how much may be refunded, error bodies, and the fingerprint that tells a retry from a
//! different request under the same idempotency key. Free of spin-sdk, so it is tested on
//! the host.

use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value, json};

/// Stripe's cap on one charge, in the currency's smallest unit.
const MAX_AMOUNT: i64 = 99_999_999;
/// Stripe's limits on metadata.
const MAX_METADATA_KEYS: usize = 50;
const MAX_METADATA_KEY_CHARS: usize = 40;
pub const MAX_METADATA_VALUE_CHARS: usize = 500;
/// Stripe's limit on an `Idempotency-Key`.
const MAX_KEY_CHARS: usize = 255;

pub const SUCCEEDED: &str = "succeeded";
pub const REQUIRES_PAYMENT_METHOD: &str = "requires_payment_method";

/// A status and JSON body: what is sent, and what an idempotency key remembers.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

/// Stripe's error, `{"error":{"type","code","param","message",…}}`. The payment service
/// reads it as a provider's answer, so berth's own `ApiError` shape would not do.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StripeError {
    #[serde(skip)]
    pub status: u16,
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decline_code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// Boxed: it is rare, and keeps the error small enough to return by value.
    pub payment_intent: Option<Box<Value>>,
}

impl StripeError {
    /// A 400 `invalid_request_error`, naming the parameter at fault when there is one.
    pub fn invalid(code: Option<&'static str>, param: Option<&str>, message: String) -> Self {
        StripeError {
            status: 400,
            kind: "invalid_request_error",
            code,
            decline_code: None,
            param: param.map(str::to_owned),
            message,
            payment_intent: None,
        }
    }

    /// `No such {what}: '{id}'`.
    pub fn no_such(status: u16, param: &str, what: &str, id: &str) -> Self {
        StripeError {
            status,
            ..Self::invalid(
                Some("resource_missing"),
                Some(param),
                format!("No such {what}: '{id}'"),
            )
        }
    }

    pub fn unrecognized_url(method: &str, path: &str) -> Self {
        StripeError {
            status: 404,
            ..Self::invalid(
                None,
                None,
                format!("Unrecognized request URL ({method}: {path})."),
            )
        }
    }

    pub fn idempotency_key_reused(key: &str) -> Self {
        StripeError {
            status: 409,
            kind: "idempotency_error",
            ..Self::invalid(
                Some("idempotency_key_reused"),
                None,
                format!(
                    "Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '{key}' if you meant to execute a different request."
                ),
            )
        }
    }

    /// The 402 of a declined card; it carries the (stored) intent, as Stripe's does.
    fn declined(intent: &Intent) -> Self {
        StripeError {
            status: 402,
            kind: "card_error",
            code: Some("card_declined"),
            decline_code: Some("generic_decline"),
            param: None,
            message: "Your card was declined.".into(),
            payment_intent: Some(Box::new(intent.json())),
        }
    }

    /// A failure of the simulator itself; the detail has been logged already.
    pub fn api_error() -> Self {
        StripeError {
            status: 500,
            kind: "api_error",
            ..Self::invalid(None, None, "An error occurred with our API.".into())
        }
    }
}

impl From<StripeError> for Reply {
    fn from(error: StripeError) -> Reply {
        Reply {
            status: error.status,
            body: json!({ "error": error }),
        }
    }
}

/// A PaymentIntent as stored and returned.
#[derive(Debug, Clone, PartialEq)]
pub struct Intent {
    pub id: String,
    pub amount: i64,
    pub currency: String,
    pub status: String,
    pub payment_method: String,
    pub metadata: Map<String, Value>,
    pub created: u64,
}

impl Intent {
    pub fn json(&self) -> Value {
        json!({
            "id": self.id,
            "object": "payment_intent",
            "amount": self.amount,
            "currency": self.currency,
            "status": self.status,
            "payment_method": self.payment_method,
            "metadata": self.metadata,
            "created": self.created,
        })
    }

    /// The answer to creating it: 200, or 402 when the card was declined.
    pub fn reply(&self) -> Reply {
        if self.status == SUCCEEDED {
            Reply {
                status: 200,
                body: self.json(),
            }
        } else {
            StripeError::declined(self).into()
        }
    }
}

pub struct Refund {
    pub id: String,
    pub payment_intent: String,
    pub amount: i64,
    pub currency: String,
    pub created: u64,
}

impl Refund {
    pub fn json(&self) -> Value {
        json!({
            "id": self.id,
            "object": "refund",
            "payment_intent": self.payment_intent,
            "amount": self.amount,
            "currency": self.currency,
            "status": SUCCEEDED,
            "created": self.created,
        })
    }
}

/// What a test payment method does.
#[derive(Debug, PartialEq, Eq)]
pub struct Card {
    pub succeeds: bool,
    /// How long the "network" takes: lets callers exercise their timeouts and retries.
    pub delay: Duration,
}

/// Stripe's test payment methods that this simulator knows.
const CARDS: [(&str, Card); 3] = [
    (
        "pm_card_visa",
        Card {
            succeeds: true,
            delay: Duration::ZERO,
        },
    ),
    (
        "pm_card_chargeDeclined",
        Card {
            succeeds: false,
            delay: Duration::ZERO,
        },
    ),
    (
        "pm_card_slow",
        Card {
            succeeds: true,
            delay: Duration::from_secs(2),
        },
    ),
];

/// The test card named `payment_method`, or Stripe's 400 for an unknown one.
pub fn card(payment_method: &str) -> Result<&'static Card, StripeError> {
    CARDS
        .iter()
        .find(|(name, _)| *name == payment_method)
        .map(|(_, card)| card)
        .ok_or_else(|| StripeError::no_such(400, "payment_method", "PaymentMethod", payment_method))
}

/// The body of `POST /v1/payment_intents`, validated.
#[derive(Debug, PartialEq)]
pub struct IntentParams {
    pub amount: i64,
    /// Lowercased.
    pub currency: String,
    pub payment_method: String,
    pub metadata: Map<String, Value>,
}

impl IntentParams {
    pub fn parse(body: &[u8]) -> Result<IntentParams, StripeError> {
        let p = Params::parse(body, &["amount", "currency", "payment_method", "metadata"])?;
        let amount = p.amount("amount")?.ok_or_else(|| missing("amount"))?;
        let currency = p.string("currency")?.ok_or_else(|| missing("currency"))?;
        if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_alphabetic()) {
            return Err(StripeError::invalid(
                None,
                Some("currency"),
                format!("Invalid currency: {currency}."),
            ));
        }
        let payment_method = p
            .string("payment_method")?
            .ok_or_else(|| missing("payment_method"))?;
        Ok(IntentParams {
            amount,
            currency: currency.to_ascii_lowercase(),
            payment_method: payment_method.to_owned(),
            metadata: p.metadata("metadata")?,
        })
    }
}

/// The body of `POST /v1/refunds`, validated.
#[derive(Debug, PartialEq)]
pub struct RefundParams {
    pub payment_intent: String,
    /// `None`: all that is left to refund.
    pub amount: Option<i64>,
}

impl RefundParams {
    pub fn parse(body: &[u8]) -> Result<RefundParams, StripeError> {
        let p = Params::parse(body, &["payment_intent", "amount"])?;
        let payment_intent = p
            .string("payment_intent")?
            .ok_or_else(|| missing("payment_intent"))?;
        Ok(RefundParams {
            payment_intent: payment_intent.to_owned(),
            amount: p.amount("amount")?,
        })
    }
}

/// How much a refund takes back, given what earlier refunds of `intent` took.
pub fn refund_amount(
    intent: &Intent,
    refunded: i64,
    requested: Option<i64>,
) -> Result<i64, StripeError> {
    if intent.status != SUCCEEDED {
        return Err(StripeError::invalid(
            Some("payment_intent_unexpected_state"),
            Some("payment_intent"),
            format!(
                "This PaymentIntent ({}) does not have a successful charge to refund.",
                intent.id
            ),
        ));
    }
    let left = intent.amount - refunded;
    if left <= 0 {
        return Err(StripeError::invalid(
            Some("charge_already_refunded"),
            None,
            format!("PaymentIntent {} has already been refunded.", intent.id),
        ));
    }
    match requested {
        Some(amount) if amount > left => Err(StripeError::invalid(
            Some("amount_too_large"),
            Some("amount"),
            format!(
                "Refund amount ({amount}) is greater than unrefunded amount on charge ({left})."
            ),
        )),
        Some(amount) => Ok(amount),
        None => Ok(left),
    }
}

/// An `Idempotency-Key` header's value: `None` when absent or blank.
pub fn idempotency_key(header: Option<&str>) -> Result<Option<String>, StripeError> {
    match header.map(str::trim).filter(|k| !k.is_empty()) {
        Some(key) if key.chars().count() > MAX_KEY_CHARS => Err(StripeError::invalid(
            None,
            None,
            format!("Idempotency-Key must be at most {MAX_KEY_CHARS} characters long."),
        )),
        key => Ok(key.map(str::to_owned)),
    }
}

/// What a request asks for, as remembered with its idempotency key: its route and its
/// body, canonicalised so key order and whitespace do not make a retry look different.
pub fn fingerprint(route: &str, body: &[u8]) -> String {
    let body = match serde_json::from_slice::<Value>(body) {
        Ok(mut value) => {
            value.sort_all_objects();
            value.to_string()
        }
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    };
    format!("{route}\n{body}")
}

pub fn missing(param: &str) -> StripeError {
    StripeError::invalid(
        Some("parameter_missing"),
        Some(param),
        format!("Missing required param: {param}."),
    )
}

/// A JSON object body; a `null` parameter counts as absent.
struct Params(Map<String, Value>);

impl Params {
    /// An empty body is no parameters; a parameter outside `known` is refused, as Stripe does.
    fn parse(body: &[u8], known: &[&str]) -> Result<Params, StripeError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Params(Map::new()));
        }
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| StripeError::invalid(None, None, format!("Invalid JSON body: {e}.")))?;
        let Value::Object(map) = value else {
            return Err(StripeError::invalid(
                None,
                None,
                "The body must be a JSON object.".into(),
            ));
        };
        if let Some(unknown) = map.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(StripeError::invalid(
                Some("parameter_unknown"),
                Some(unknown),
                format!("Received unknown parameter: {unknown}"),
            ));
        }
        Ok(Params(map))
    }

    fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    fn string(&self, name: &str) -> Result<Option<&str>, StripeError> {
        self.get(name)
            .map(|v| {
                v.as_str().filter(|s| !s.is_empty()).ok_or_else(|| {
                    StripeError::invalid(
                        Some("parameter_invalid_string"),
                        Some(name),
                        format!("Invalid {name}: must be a non-empty string."),
                    )
                })
            })
            .transpose()
    }

    /// A positive integer amount of the currency's smallest unit, within Stripe's cap.
    fn amount(&self, name: &str) -> Result<Option<i64>, StripeError> {
        let Some(value) = self.get(name) else {
            return Ok(None);
        };
        let invalid = |code, message: &str| {
            Err(StripeError::invalid(
                Some(code),
                Some(name),
                message.to_owned(),
            ))
        };
        match value.as_i64() {
            None => invalid("parameter_invalid_integer", "Invalid integer."),
            Some(amount) if amount < 1 => {
                invalid("amount_too_small", "Amount must be at least 1 cent.")
            }
            Some(amount) if amount > MAX_AMOUNT => invalid(
                "amount_too_large",
                "Amount must be no more than 99,999,999 cents.",
            ),
            Some(amount) => Ok(Some(amount)),
        }
    }

    /// An object of strings, within Stripe's limits on metadata.
    fn metadata(&self, name: &str) -> Result<Map<String, Value>, StripeError> {
        let Some(value) = self.get(name) else {
            return Ok(Map::new());
        };
        let fits = |map: &Map<String, Value>| {
            map.len() <= MAX_METADATA_KEYS
                && map.iter().all(|(k, v)| {
                    !k.is_empty()
                        && k.chars().count() <= MAX_METADATA_KEY_CHARS
                        && v.as_str()
                            .is_some_and(|s| s.chars().count() <= MAX_METADATA_VALUE_CHARS)
                })
        };
        match value {
            Value::Object(map) if fits(map) => Ok(map.clone()),
            _ => Err(StripeError::invalid(
                None,
                Some(name),
                format!(
                    "Invalid {name}: an object of at most {MAX_METADATA_KEYS} string values ({MAX_METADATA_VALUE_CHARS} characters at most), with keys of 1 to {MAX_METADATA_KEY_CHARS} characters."
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent(status: &str, amount: i64) -> Intent {
        Intent {
            id: "pi_1".into(),
            amount,
            currency: "usd".into(),
            status: status.into(),
            payment_method: "pm_card_visa".into(),
            metadata: Map::new(),
            created: 0,
        }
    }

    fn param_error(body: &str) -> (Option<&'static str>, Option<String>) {
        let e = IntentParams::parse(body.as_bytes()).unwrap_err();
        assert_eq!((e.status, e.kind), (400, "invalid_request_error"), "{body}");
        (e.code, e.param)
    }

    #[test]
    fn a_valid_intent_is_read_with_its_currency_lowercased() {
        let p = IntentParams::parse(
            br#"{"amount":1999,"currency":"USD","payment_method":"pm_card_visa","metadata":{"order_id":"o1"}}"#,
        )
        .unwrap();
        assert_eq!((p.amount, p.currency.as_str()), (1999, "usd"));
        assert_eq!(p.metadata["order_id"], "o1");
        let p = IntentParams::parse(
            br#"{"amount":1,"currency":"eur","payment_method":"x","metadata":null}"#,
        )
        .unwrap();
        assert!(p.metadata.is_empty());
    }

    #[test]
    fn invalid_intents_name_the_param() {
        let ok = r#""currency":"usd","payment_method":"pm_card_visa""#;
        #[rustfmt::skip]
        let cases = [
            (format!("{{{ok}}}"), Some("parameter_missing"), "amount"),
            (format!(r#"{{"amount":0,{ok}}}"#), Some("amount_too_small"), "amount"),
            (format!(r#"{{"amount":1.5,{ok}}}"#), Some("parameter_invalid_integer"), "amount"),
            (format!(r#"{{"amount":"100",{ok}}}"#), Some("parameter_invalid_integer"), "amount"),
            (format!(r#"{{"amount":100000000,{ok}}}"#), Some("amount_too_large"), "amount"),
            (r#"{"amount":1,"payment_method":"pm_card_visa"}"#.into(), Some("parameter_missing"), "currency"),
            (r#"{"amount":1,"currency":"usdx","payment_method":"pm_card_visa"}"#.into(), None, "currency"),
            (r#"{"amount":1,"currency":"u$d","payment_method":"pm_card_visa"}"#.into(), None, "currency"),
            (r#"{"amount":1,"currency":"usd"}"#.into(), Some("parameter_missing"), "payment_method"),
            (r#"{"amount":1,"currency":"usd","payment_method":7}"#.into(), Some("parameter_invalid_string"), "payment_method"),
            (format!(r#"{{"amount":1,{ok},"metadata":{{"n":1}}}}"#), None, "metadata"),
            (format!(r#"{{"amount":1,{ok},"metadata":[]}}"#), None, "metadata"),
            (format!(r#"{{"amount":1,{ok},"capture":true}}"#), Some("parameter_unknown"), "capture"),
        ];
        for (body, code, param) in cases {
            assert_eq!(param_error(&body), (code, Some(param.to_owned())), "{body}");
        }
        assert_eq!(param_error("{"), (None, None));
        assert_eq!(param_error("[]"), (None, None));
        assert_eq!(
            param_error(""),
            (Some("parameter_missing"), Some("amount".into()))
        );
    }

    #[test]
    fn each_test_card_has_its_outcome() {
        assert!(card("pm_card_visa").unwrap().succeeds);
        assert!(!card("pm_card_chargeDeclined").unwrap().succeeds);
        let slow = card("pm_card_slow").unwrap();
        assert!(slow.succeeds && slow.delay == Duration::from_secs(2));
        let e = card("pm_card_amex").unwrap_err();
        assert_eq!(
            (e.status, e.code, e.param.as_deref()),
            (400, Some("resource_missing"), Some("payment_method"))
        );
        assert_eq!(e.message, "No such PaymentMethod: 'pm_card_amex'");
    }

    #[test]
    fn a_declined_intent_answers_402_carrying_the_intent() {
        assert_eq!(intent(SUCCEEDED, 5).reply().status, 200);
        let reply = intent(REQUIRES_PAYMENT_METHOD, 5).reply();
        assert_eq!(reply.status, 402);
        let error = &reply.body["error"];
        assert_eq!(error["type"], "card_error");
        assert_eq!(error["code"], "card_declined");
        assert_eq!(error["decline_code"], "generic_decline");
        assert_eq!(error["payment_intent"]["status"], REQUIRES_PAYMENT_METHOD);
        assert!(error.get("param").is_none());
    }

    #[test]
    fn refunds_take_what_is_left_and_no_more() {
        let paid = intent(SUCCEEDED, 1000);
        assert_eq!(refund_amount(&paid, 0, None).unwrap(), 1000);
        assert_eq!(refund_amount(&paid, 400, None).unwrap(), 600);
        assert_eq!(refund_amount(&paid, 400, Some(600)).unwrap(), 600);
        let code = |r: Result<i64, StripeError>| r.unwrap_err().code;
        assert_eq!(
            code(refund_amount(&paid, 400, Some(601))),
            Some("amount_too_large")
        );
        assert_eq!(
            code(refund_amount(&paid, 1000, None)),
            Some("charge_already_refunded")
        );
        let declined = intent(REQUIRES_PAYMENT_METHOD, 1000);
        assert_eq!(
            code(refund_amount(&declined, 0, None)),
            Some("payment_intent_unexpected_state")
        );
        let p = RefundParams::parse(br#"{"payment_intent":"pi_1"}"#).unwrap();
        assert_eq!((p.payment_intent.as_str(), p.amount), ("pi_1", None));
        let e = RefundParams::parse(br#"{"amount":5}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("payment_intent"));
    }

    #[test]
    fn a_retry_has_the_same_fingerprint_and_another_request_does_not() {
        let route = "POST /v1/refunds";
        let first = fingerprint(route, br#"{"payment_intent":"pi_1","amount":5}"#);
        let retry = fingerprint(route, b"{ \"amount\": 5,\n \"payment_intent\": \"pi_1\" }");
        assert_eq!(first, retry);
        assert_ne!(
            first,
            fingerprint(route, br#"{"payment_intent":"pi_1","amount":6}"#)
        );
        assert_ne!(
            first,
            fingerprint(
                "POST /v1/payment_intents",
                br#"{"payment_intent":"pi_1","amount":5}"#
            )
        );
        assert_eq!(
            fingerprint(route, b"not json"),
            fingerprint(route, b"not json")
        );
        assert_ne!(
            fingerprint(route, b"not json"),
            fingerprint(route, b"not json!")
        );
    }

    #[test]
    fn idempotency_keys_are_trimmed_and_bounded() {
        assert_eq!(idempotency_key(None).unwrap(), None);
        assert_eq!(idempotency_key(Some("  ")).unwrap(), None);
        assert_eq!(
            idempotency_key(Some(" k1 ")).unwrap().as_deref(),
            Some("k1")
        );
        assert!(idempotency_key(Some(&"k".repeat(256))).is_err());
    }

    #[test]
    fn errors_are_in_stripes_shape() {
        let reply = Reply::from(StripeError::idempotency_key_reused("k"));
        assert_eq!(reply.status, 409);
        assert_eq!(reply.body["error"]["code"], "idempotency_key_reused");
        let reply = Reply::from(StripeError::unrecognized_url("GET", "/v1/charges"));
        assert_eq!(reply.status, 404);
        assert_eq!(reply.body["error"]["type"], "invalid_request_error");
        assert!(reply.body["error"].get("status").is_none());
    }
}
