//! Orders as the API shows them, as the client sends them, and as rows.

use common::db::{int, int_column, text, text_column};
use common::validate::{Validator, WholeNumber};
use common::{ApiError, Object};
use serde::{Deserialize, Serialize};
use spin_sdk::sqlite::{Row, Value};

const MAX_ITEMS: usize = 100;
const MAX_QUANTITY: i64 = 10_000;
const MAX_UNIT_PRICE_CENTS: i64 = 100_000_000;

/// The body of `POST /api/v1/orders`; every field optional so that all missing ones are
/// reported together.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NewOrder {
    items: Option<Vec<Object<NewItem>>>,
    currency: Option<String>,
    payment_method_id: Option<String>,
    shipping_address: Option<Object<NewAddress>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NewItem {
    product_id: Option<String>,
    quantity: Option<WholeNumber>,
    unit_price_cents: Option<WholeNumber>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NewAddress {
    street: Option<String>,
    city: Option<String>,
    state: Option<String>,
    zip_code: Option<String>,
    country: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Item {
    pub product_id: String,
    pub quantity: i64,
    pub unit_price_cents: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Address {
    pub street: String,
    pub city: String,
    pub state: String,
    pub zip_code: String,
    pub country: String,
}

/// An order request that passed validation, with its total.
#[derive(Debug, Serialize)]
pub struct ValidOrder {
    items: Vec<Item>,
    currency: String,
    payment_method_id: String,
    shipping_address: Address,
    total_cents: i64,
}

impl NewOrder {
    pub fn validate(self) -> Result<ValidOrder, ApiError> {
        let mut v = Validator::default();
        let new_items = self.items.unwrap_or_default();
        v.check(
            (1..=MAX_ITEMS).contains(&new_items.len()),
            "items",
            &format!("must hold 1 to {MAX_ITEMS} items"),
        );
        let mut items = Vec::new();
        for (i, Object(item)) in new_items.into_iter().enumerate() {
            let at = |field: &str| format!("items[{i}].{field}");
            let product_id = v.text(&item.product_id, &at("productId"), 1, 100);
            let quantity = whole(item.quantity);
            v.check(
                (1..=MAX_QUANTITY).contains(&quantity),
                &at("quantity"),
                &format!("must be a whole number from 1 to {MAX_QUANTITY}"),
            );
            let unit_price_cents = whole(item.unit_price_cents);
            v.check(
                (0..=MAX_UNIT_PRICE_CENTS).contains(&unit_price_cents),
                &at("unitPriceCents"),
                &format!("must be a whole number of cents from 0 to {MAX_UNIT_PRICE_CENTS}"),
            );
            items.push(Item {
                product_id,
                quantity,
                unit_price_cents,
            });
        }
        let currency = self.currency.as_deref().and_then(common::currency::parse);
        v.check(
            currency.is_some(),
            "currency",
            "must be a current ISO 4217 currency code such as USD or EUR",
        );
        let currency = currency.unwrap_or_default();
        let payment_method_id = v.text(&self.payment_method_id, "paymentMethodId", 1, 255);
        let shipping_address = match self.shipping_address {
            Some(Object(a)) => Address {
                street: v.text(&a.street, "shippingAddress.street", 1, 200),
                city: v.text(&a.city, "shippingAddress.city", 1, 100),
                state: v.text(&a.state, "shippingAddress.state", 1, 100),
                zip_code: v.text(&a.zip_code, "shippingAddress.zipCode", 1, 20),
                country: v.text(&a.country, "shippingAddress.country", 2, 100),
            },
            None => {
                v.check(false, "shippingAddress", "is required");
                Address {
                    street: String::new(),
                    city: String::new(),
                    state: String::new(),
                    zip_code: String::new(),
                    country: String::new(),
                }
            }
        };
        v.finish()?;
        // Within the bounds above the sum cannot overflow, but the bounds may change.
        let total_cents = items
            .iter()
            .try_fold(0i64, |sum, i| {
                sum.checked_add(i.quantity.checked_mul(i.unit_price_cents)?)
            })
            .ok_or_else(|| {
                ApiError::new(400, "VALIDATION_FAILED", "the order total is too large")
            })?;
        Ok(ValidOrder {
            items,
            currency,
            payment_method_id,
            shipping_address,
            total_cents,
        })
    }
}

/// A missing, fractional or out-of-range number as -1, which no range below includes.
fn whole(n: Option<WholeNumber>) -> i64 {
    n.and_then(|n| n.0).unwrap_or(-1)
}

/// `Order` of the public API.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    pub id: String,
    pub user_id: String,
    pub items: Vec<Item>,
    pub total_cents: i64,
    pub currency: String,
    pub status: String,
    pub payment_id: Option<String>,
    pub payment_method_id: String,
    pub shipping_address: Address,
    pub created_at: String,
    pub updated_at: String,
}

impl Order {
    pub const COLUMNS: &str = "id, user_id, status, items, total_cents, currency, payment_method_id, shipping_address, payment_id, created_at, updated_at";

    pub fn new(user_id: &str, valid: ValidOrder) -> Order {
        let now = common::now();
        Order {
            id: common::new_id(),
            user_id: user_id.to_owned(),
            items: valid.items,
            total_cents: valid.total_cents,
            currency: valid.currency,
            status: "pending".to_owned(),
            payment_id: None,
            payment_method_id: valid.payment_method_id,
            shipping_address: valid.shipping_address,
            created_at: now.clone(),
            updated_at: now,
        }
    }

    /// Values in [`Order::COLUMNS`] order.
    pub fn to_row(&self) -> Result<Vec<Value>, ApiError> {
        let items = serde_json::to_string(&self.items).map_err(ApiError::internal)?;
        let address = serde_json::to_string(&self.shipping_address).map_err(ApiError::internal)?;
        Ok(vec![
            text(&self.id),
            text(&self.user_id),
            text(&self.status),
            text(items),
            int(self.total_cents),
            text(&self.currency),
            text(&self.payment_method_id),
            text(address),
            self.payment_id.as_deref().map_or(Value::Null, text),
            text(&self.created_at),
            text(&self.updated_at),
        ])
    }

    pub fn from_row(row: &Row<'_>) -> Result<Order, ApiError> {
        let field = |name: &str| text_column(row, name);
        let items = serde_json::from_str(&field("items")?).map_err(ApiError::internal)?;
        let shipping_address =
            serde_json::from_str(&field("shipping_address")?).map_err(ApiError::internal)?;
        Ok(Order {
            id: field("id")?,
            user_id: field("user_id")?,
            items,
            total_cents: int_column(row, "total_cents")?,
            currency: field("currency")?,
            status: field("status")?,
            payment_id: row.get::<&str>("payment_id").map(str::to_owned),
            payment_method_id: field("payment_method_id")?,
            shipping_address,
            created_at: field("created_at")?,
            updated_at: field("updated_at")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(json: &str) -> Result<ValidOrder, ApiError> {
        serde_json::from_str::<Object<NewOrder>>(json)
            .unwrap()
            .0
            .validate()
    }

    const ADDRESS: &str = r#""shippingAddress":{"street":"1 Main St","city":"Springfield","state":"IL","zipCode":"62701","country":"US"}"#;

    #[test]
    fn the_total_is_computed_in_cents() {
        let valid = order(&format!(
            r#"{{"items":[{{"productId":"a","quantity":3,"unitPriceCents":1999}},{{"productId":"b","quantity":1,"unitPriceCents":1}}],"currency":"usd","paymentMethodId":"pm_card_visa",{ADDRESS}}}"#
        ))
        .unwrap();
        assert_eq!(valid.total_cents, 5998);
        assert_eq!(valid.currency, "USD");
    }

    #[test]
    fn every_bad_field_is_named() {
        let err = order(
            r#"{"items":[{"productId":"","quantity":0,"unitPriceCents":-5}],"currency":"dollars"}"#,
        )
        .unwrap_err();
        let fields: Vec<_> = err.details.iter().map(|d| d.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "items[0].productId",
                "items[0].quantity",
                "items[0].unitPriceCents",
                "currency",
                "paymentMethodId",
                "shippingAddress"
            ]
        );
    }

    #[test]
    fn an_order_needs_items() {
        let err = order(&format!(
            r#"{{"items":[],"currency":"EUR","paymentMethodId":"pm",{ADDRESS}}}"#
        ))
        .unwrap_err();
        assert_eq!(err.details[0].field, "items");
    }

    fn fields(err: &ApiError) -> Vec<&str> {
        err.details.iter().map(|d| d.field.as_str()).collect()
    }

    #[test]
    fn a_quantity_written_as_1_0_is_the_whole_number_1() {
        let valid = order(&format!(
            r#"{{"items":[{{"productId":"a","quantity":1.0,"unitPriceCents":2.5e2}}],"currency":"EUR","paymentMethodId":"pm_card_visa",{ADDRESS}}}"#
        ))
        .unwrap();
        assert_eq!(valid.items[0].quantity, 1);
        assert_eq!(valid.total_cents, 250);
    }

    #[test]
    fn a_fractional_or_huge_quantity_is_refused_with_the_others() {
        let err = order(&format!(
            r#"{{"items":[{{"productId":"a","quantity":1.5,"unitPriceCents":1}},{{"productId":"b","quantity":1e30,"unitPriceCents":1}}],"currency":"EUR","paymentMethodId":"pm",{ADDRESS}}}"#
        ))
        .unwrap_err();
        assert_eq!(fields(&err), ["items[0].quantity", "items[1].quantity"]);
    }

    #[test]
    fn a_currency_outside_iso_4217_is_refused() {
        for currency in ["ABC", "XXX", "HRK", "Usd", " USD", "US"] {
            let err = order(&format!(
                r#"{{"items":[{{"productId":"a","quantity":1,"unitPriceCents":1}}],"currency":"{currency}","paymentMethodId":"pm",{ADDRESS}}}"#
            ))
            .unwrap_err();
            assert_eq!(fields(&err), ["currency"], "{currency}");
        }
    }

    #[test]
    fn invisible_characters_in_ids_and_the_address_are_refused() {
        let err = order(
            r#"{"items":[{"productId":"book\u200b","quantity":1,"unitPriceCents":1}],"currency":"EUR","paymentMethodId":"pm_card_visa\u0000","shippingAddress":{"street":"1 Main\nSt","city":"\u202eSpringfield","state":"IL","zipCode":"62701\ufeff","country":"US"}}"#,
        )
        .unwrap_err();
        assert_eq!(
            fields(&err),
            [
                "items[0].productId",
                "paymentMethodId",
                "shippingAddress.street",
                "shippingAddress.city",
                "shippingAddress.zipCode"
            ]
        );
        assert!(
            err.details[0].message.contains("U+200B"),
            "{:?}",
            err.details
        );
    }

    #[test]
    fn an_item_or_address_sent_as_an_array_is_refused() {
        for json in [
            r#"{"items":[["a",1,1]]}"#,
            r#"{"shippingAddress":["1 Main St","Springfield","IL","62701","US"]}"#,
            r#"[[{"productId":"a","quantity":1,"unitPriceCents":1}],"EUR","pm",null]"#,
        ] {
            assert!(
                serde_json::from_str::<Object<NewOrder>>(json).is_err(),
                "{json}"
            );
        }
    }
}
