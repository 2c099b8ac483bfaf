//! `GET /v1/payment_intents/search` without any I/O: its URL query percent-decoded and
//! validated, and the one clause of Stripe's search query language the simulator answers,
//! a metadata equality on the order id: `metadata['order_id']:'<value>'` (or with double
//! quotes; a backslash escapes a quote or a backslash inside them). Free of spin-sdk, so
//! it is tested on the host.
//!
//! Metadata is stored as one JSON text column, so the database narrows the rows with a
//! portable `LIKE` on that text ([`Search::like_pattern`]) and [`Search::matches`] decides.

use serde_json::{Map, Value, json};

use crate::stripe::{self, Intent, MAX_METADATA_VALUE_CHARS, StripeError};

/// The longest URL query read: the longest metadata value fits with each character
/// percent-encoded from four UTF-8 bytes.
const MAX_URL_QUERY_BYTES: usize = 8 * 1024;
/// Stripe's default and largest page of search results.
const DEFAULT_LIMIT: usize = 10;
const MAX_LIMIT: usize = 100;
/// The only metadata key searched.
const KEY: &str = "order_id";
const SUPPORTED: &str = "metadata['order_id']:'<value>'";
/// The escape character of [`Search::like_pattern`], spelled in the SQL too: not a
/// backslash, which JSON text is full of and PostgreSQL's `LIKE` treats specially.
pub const LIKE_ESCAPE: char = '!';

/// A validated search: the intents whose `metadata.order_id` equals `order_id`.
#[derive(Debug, PartialEq)]
pub struct Search {
    pub order_id: String,
    pub limit: usize,
}

impl Search {
    /// Reads the URL query: `query` (required) and `limit` (1 to 100, 10 by default).
    /// Paging (`page`) is not simulated, so it is refused like any other parameter.
    pub fn parse(url_query: &str) -> Result<Search, StripeError> {
        if url_query.len() > MAX_URL_QUERY_BYTES {
            return Err(StripeError::invalid(
                None,
                None,
                format!("The URL query is longer than {MAX_URL_QUERY_BYTES} bytes."),
            ));
        }
        let (mut query, mut limit) = (None, None);
        for pair in url_query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let (name, value) = (percent_decode(name)?, percent_decode(value)?);
            let slot = match name.as_str() {
                "query" => &mut query,
                "limit" => &mut limit,
                _ => {
                    return Err(StripeError::invalid(
                        Some("parameter_unknown"),
                        Some(&name),
                        format!("Received unknown parameter: {name}"),
                    ));
                }
            };
            if slot.replace(value).is_some() {
                return Err(StripeError::invalid(
                    None,
                    Some(&name),
                    format!("Invalid {name}: given more than once."),
                ));
            }
        }
        let query = query.ok_or_else(|| stripe::missing("query"))?;
        Ok(Search {
            order_id: order_id_of(&query)?,
            limit: limit.map_or(Ok(DEFAULT_LIMIT), |l| parse_limit(&l))?,
        })
    }

    /// A `LIKE` pattern (escaped with [`LIKE_ESCAPE`]) that every stored metadata text
    /// holding this order id matches: the value as JSON spells it, anywhere. It may match
    /// more (another key with that value; SQLite's `LIKE` ignores ASCII case).
    pub fn like_pattern(&self) -> String {
        let spelled = Value::String(self.order_id.clone()).to_string();
        let mut pattern = String::with_capacity(spelled.len() + 2);
        pattern.push('%');
        for c in spelled.chars() {
            if matches!(c, '%' | '_') || c == LIKE_ESCAPE {
                pattern.push(LIKE_ESCAPE);
            }
            pattern.push(c);
        }
        pattern.push('%');
        pattern
    }

    pub fn matches(&self, metadata: &Map<String, Value>) -> bool {
        metadata.get(KEY).and_then(Value::as_str) == Some(self.order_id.as_str())
    }
}

/// Stripe's search result; `next_page` stays null, as paging is not simulated.
pub fn result(intents: &[Intent], has_more: bool) -> Value {
    json!({
        "object": "search_result",
        "url": "/v1/payment_intents/search",
        "has_more": has_more,
        "next_page": null,
        "data": intents.iter().map(Intent::json).collect::<Vec<_>>(),
    })
}

fn parse_limit(limit: &str) -> Result<usize, StripeError> {
    limit
        .parse::<usize>()
        .ok()
        .filter(|l| (1..=MAX_LIMIT).contains(l))
        .ok_or_else(|| {
            StripeError::invalid(
                Some("parameter_invalid_integer"),
                Some("limit"),
                format!("Invalid limit: must be an integer from 1 to {MAX_LIMIT}."),
            )
        })
}

/// The order id of `metadata['order_id']:'<value>'`; anything else is refused.
fn order_id_of(query: &str) -> Result<String, StripeError> {
    let unsupported = || {
        StripeError::invalid(
            None,
            Some("query"),
            format!(
                "Invalid query: {query:?}. This simulator supports only {SUPPORTED} (single or double quotes; a backslash escapes a quote or a backslash inside them)."
            ),
        )
    };
    let rest = query
        .trim()
        .strip_prefix("metadata[")
        .ok_or_else(unsupported)?;
    let (key, rest) = quoted(rest).ok_or_else(unsupported)?;
    let rest = rest.strip_prefix("]:").ok_or_else(unsupported)?;
    let (value, rest) = quoted(rest).ok_or_else(unsupported)?;
    if key != KEY || !rest.is_empty() {
        return Err(unsupported());
    }
    if value.chars().count() > MAX_METADATA_VALUE_CHARS {
        return Err(StripeError::invalid(
            None,
            Some("query"),
            format!(
                "Invalid query: a metadata value is at most {MAX_METADATA_VALUE_CHARS} characters."
            ),
        ));
    }
    Ok(value)
}

/// A string in `'…'` or `"…"` at the start of `s`, unescaped, and what follows it.
fn quoted(s: &str) -> Option<(String, &str)> {
    let mut chars = s.char_indices();
    let (_, quote) = chars.next().filter(|(_, c)| matches!(c, '\'' | '"'))?;
    let mut value = String::new();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => value.push(chars.next()?.1),
            c if c == quote => return Some((value, &s[i + c.len_utf8()..])),
            c => value.push(c),
        }
    }
    None
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte, and the
/// bytes must be UTF-8.
fn percent_decode(s: &str) -> Result<String, StripeError> {
    let invalid =
        |what: &str| StripeError::invalid(None, None, format!("The URL query has {what}."));
    let mut bytes = Vec::with_capacity(s.len());
    let mut rest = s.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        rest = tail;
        match b {
            b'+' => bytes.push(b' '),
            b'%' => {
                let digit = |b: &u8| char::from(*b).to_digit(16);
                let byte = match rest {
                    [high, low, ..] => digit(high).zip(digit(low)).map(|(h, l)| h * 16 + l),
                    _ => None,
                }
                .ok_or_else(|| invalid("a malformed percent-escape"))?;
                bytes.push(byte as u8);
                rest = &rest[2..];
            }
            b => bytes.push(b),
        }
    }
    String::from_utf8(bytes).map_err(|_| invalid("percent-escapes that are not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order_id(url_query: &str) -> String {
        Search::parse(url_query).unwrap().order_id
    }

    fn refused(url_query: &str) -> StripeError {
        let e = Search::parse(url_query).unwrap_err();
        assert_eq!(
            (e.status, e.kind),
            (400, "invalid_request_error"),
            "{url_query}"
        );
        e
    }

    #[test]
    fn a_metadata_equality_is_read_in_either_quotes_percent_decoded() {
        assert_eq!(order_id("query=metadata['order_id']:'o1'"), "o1");
        assert_eq!(
            order_id("query=metadata%5B%27order_id%27%5D%3A%27o%201%27"),
            "o 1"
        );
        assert_eq!(order_id(r#"query=metadata["order_id"]:"o1""#), "o1");
        assert_eq!(order_id("query=+metadata['order_id']:'a+b'+"), "a b");
        assert_eq!(order_id(r"query=metadata['order_id']:'it\'s\\'"), r"it's\");
        assert_eq!(order_id("query=metadata['order_id']:'%C3%A9'"), "é");
        assert_eq!(order_id("query=metadata['order_id']:''"), "");
        let search = Search::parse("limit=3&query=metadata['order_id']:'o1'").unwrap();
        assert_eq!(search.limit, 3);
        assert_eq!(
            Search::parse("query=metadata['order_id']:'o1'")
                .unwrap()
                .limit,
            10
        );
    }

    #[test]
    fn any_other_query_is_refused_naming_the_supported_form() {
        for query in [
            "status:'succeeded'",
            "metadata['user_id']:'u1'",
            "metadata['order_id']:'o1' AND status:'succeeded'",
            "metadata['order_id']~'o1'",
            "metadata['order_id']:o1",
            "metadata['order_id']:'o1",
            "metadata['order_id\"]:'o1'",
            "-metadata['order_id']:'o1'",
            "",
        ] {
            let e = refused(&format!("query={}", query.replace('&', "%26")));
            assert_eq!(e.param.as_deref(), Some("query"), "{query}");
            assert!(e.message.contains(SUPPORTED), "{}", e.message);
        }
        let long = "x".repeat(MAX_METADATA_VALUE_CHARS + 1);
        let e = refused(&format!("query=metadata['order_id']:'{long}'"));
        assert!(e.message.contains("at most 500"), "{}", e.message);
    }

    #[test]
    fn the_url_query_is_validated() {
        let e = refused("limit=5");
        assert_eq!(
            (e.code, e.param.as_deref()),
            (Some("parameter_missing"), Some("query"))
        );
        let ok = "query=metadata['order_id']:'o1'";
        let e = refused(&format!("{ok}&page=abc"));
        assert_eq!(
            (e.code, e.param.as_deref()),
            (Some("parameter_unknown"), Some("page"))
        );
        assert_eq!(
            refused(&format!("{ok}&{ok}")).param.as_deref(),
            Some("query")
        );
        for limit in ["0", "101", "-1", "ten", ""] {
            let e = refused(&format!("{ok}&limit={limit}"));
            assert_eq!(e.param.as_deref(), Some("limit"), "{limit}");
        }
        for bad in ["%", "%4", "%zz", "%+1", "%C3", "%FF"] {
            refused(&format!("query=metadata['order_id']:'{bad}'"));
        }
        refused(&format!("query={}", "x".repeat(MAX_URL_QUERY_BYTES)));
    }

    #[test]
    fn the_like_pattern_escapes_wildcards_and_the_match_is_exact() {
        let search = |id: &str| Search {
            order_id: id.into(),
            limit: 10,
        };
        assert_eq!(search("o1").like_pattern(), r#"%"o1"%"#);
        assert_eq!(search("50%_a!").like_pattern(), r#"%"50!%!_a!!"%"#);
        assert_eq!(search("a\"b").like_pattern(), r#"%"a\"b"%"#);
        let metadata = |v: Value| v.as_object().cloned().unwrap();
        assert!(search("o1").matches(&metadata(json!({ "order_id": "o1", "x": "y" }))));
        assert!(!search("o1").matches(&metadata(json!({ "order_id": "O1" }))));
        assert!(!search("o1").matches(&metadata(json!({ "other": "o1" }))));
        assert!(!search("o1").matches(&Map::new()));
    }

    #[test]
    fn the_result_is_in_stripes_search_shape() {
        let intent = Intent {
            id: "pi_1".into(),
            amount: 5,
            currency: "usd".into(),
            status: stripe::SUCCEEDED.into(),
            payment_method: "pm_card_visa".into(),
            metadata: Map::new(),
            created: 0,
        };
        let body = result(std::slice::from_ref(&intent), false);
        assert_eq!(body["object"], "search_result");
        assert_eq!(body["url"], "/v1/payment_intents/search");
        assert_eq!(body["has_more"], false);
        assert_eq!(body["data"], json!([intent.json()]));
    }
}
