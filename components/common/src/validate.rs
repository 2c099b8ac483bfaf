//! Field checks that report every invalid field at once.

use serde::{Deserialize, Deserializer};

use crate::error::{ApiError, FieldError};
use crate::text;

#[derive(Default)]
pub struct Validator {
    errors: Vec<FieldError>,
}

impl Validator {
    /// Records `message` for `field` unless `ok`.
    pub fn check(&mut self, ok: bool, field: &str, message: &str) -> &mut Self {
        if !ok {
            self.errors.push(FieldError {
                field: field.to_owned(),
                message: message.to_owned(),
            });
        }
        self
    }

    /// A present string with no invisible characters ([`text`]), at most `max` characters as
    /// sent and at least `min` once the spaces around it are trimmed; returns it trimmed.
    /// `openapi.yaml` states the same rule as `maxLength` and a `pattern`.
    pub fn text(&mut self, value: &Option<String>, field: &str, min: usize, max: usize) -> String {
        let Some(value) = value else {
            self.check(false, field, "is required");
            return String::new();
        };
        let trimmed = text::trim(value);
        if let Some(problem) = text::invisible_problem(value) {
            self.check(false, field, &problem);
        } else if value.chars().count() > max {
            self.check(false, field, &format!("must be at most {max} characters"));
        } else if trimmed.chars().count() < min {
            let message = match min {
                1 => "must not be empty or only spaces".to_owned(),
                _ => format!("must be at least {min} characters, not counting spaces around it"),
            };
            self.check(false, field, &message);
        }
        trimmed.to_owned()
    }

    pub fn finish(&mut self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::validation(std::mem::take(&mut self.errors)))
        }
    }
}

/// An address as RFC 5321 and RFC 6531 write one, within what mail systems deliver: a
/// dot-atom local part of at most 64 octets (ASCII `atext`, or any visible character beyond
/// ASCII), `@`, and a domain of two or more labels of letters, digits and hyphens (an
/// internationalised domain in its `xn--` form), each at most 63 octets and without a hyphen
/// at either end; 254 octets in all. Quoted local parts, address literals (`[127.0.0.1]`) and
/// dotless domains are refused. `openapi.yaml` says the same as `format: idn-email` and a
/// `pattern`.
pub fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.rsplit_once('@') else {
        return false;
    };
    let atext = |c: char| {
        c.is_ascii_alphanumeric()
            || "!#$%&'*+-/=?^_`{|}~".contains(c)
            || (!c.is_ascii() && !c.is_whitespace() && !text::is_invisible(c))
    };
    let label = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
            // `ab--` is reserved for IDNA's `xn--` (RFC 5891).
            && (l.get(2..4) != Some("--") || l[..2].eq_ignore_ascii_case("xn"))
    };
    s.len() <= 254
        && local.len() <= 64
        && local
            .split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(atext))
        && domain.len() <= 253
        && domain.split('.').count() >= 2
        && domain.split('.').all(label)
}

/// A JSON number as JSON Schema's `integer` sees it: `2`, `2.0` and `2e0` are one value, so
/// all three are the whole number 2. `None` holds a number that is not whole, or is whole but
/// beyond 64 bits; the field's check then says which whole numbers it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WholeNumber(pub Option<i64>);

impl<'de> Deserialize<'de> for WholeNumber {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let n = serde_json::Number::deserialize(deserializer)?;
        let whole = n.as_i64().or_else(|| {
            let f = n.as_f64()?;
            // 2^63 is the first f64 past i64::MAX; every f64 this side of it with no
            // fraction is exactly an i64.
            (f.fract() == 0.0 && f.abs() < 9_223_372_036_854_775_808.0).then_some(f as i64)
        });
        Ok(WholeNumber(whole))
    }
}

/// For `#[serde(default, deserialize_with = "common::validate::not_null")]` on an optional
/// field: absent is `None`, `null` is refused like any other wrong type. In a PATCH, `null`
/// would otherwise read as "leave unchanged", which the schema does not say.
pub fn not_null<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_shapes() {
        for ok in [
            "a@b.co",
            "first.last+tag@example.org",
            "ad\u{e9}@b.co",
            "a@xn--bcher-kva.ch",
            "a!#$%&'*+-/=?^_`{|}~@b.co",
            "0@0.0",
        ] {
            assert!(is_email(ok), "{ok}");
        }
        for bad in [
            "",
            "a",
            "a@b",
            "@b.co",
            "a@@b.co",
            "a b@c.de",
            " a@b.co",
            "a@.co",
            "a@co.",
            "a\u{200b}@b.co",
            "0@0.com*",
            "a@-b.co",
            "a@b-.co",
            "a@b_c.co",
            "a@ab--c.co",
            ".a@b.co",
            "a..b@c.co",
            "\"a b\"@c.co",
            "a@[127.0.0.1]",
            "a@b\u{fc}.de",
            &format!("{}@b.co", "x".repeat(65)),
            &format!("a@{}.co", "b".repeat(64)),
        ] {
            assert!(!is_email(bad), "{bad}");
        }
    }

    #[test]
    fn every_invalid_field_is_reported() {
        let mut v = Validator::default();
        v.text(&None, "firstName", 1, 100);
        v.text(&Some("  ".into()), "lastName", 1, 100);
        v.check(false, "email", "must be a valid email address");
        let err = v.finish().unwrap_err();
        let fields: Vec<_> = err.details.iter().map(|d| d.field.as_str()).collect();
        assert_eq!(fields, ["firstName", "lastName", "email"]);
    }

    fn one_text(value: &str, min: usize, max: usize) -> Result<String, String> {
        let mut v = Validator::default();
        let text = v.text(&Some(value.to_owned()), "f", min, max);
        v.finish()
            .map(|()| text)
            .map_err(|e| e.details[0].message.clone())
    }

    #[test]
    fn text_is_trimmed_and_counted_as_sent() {
        assert_eq!(one_text("  Ada ", 1, 100).unwrap(), "Ada");
        assert_eq!(one_text("a b", 2, 100).unwrap(), "a b");
        assert!(one_text(" a ", 2, 100).is_err());
        assert!(one_text(&"x".repeat(101), 1, 100).is_err());
        // The limit is on what was sent, as the schema's maxLength is.
        assert!(one_text(&format!(" {}", "x".repeat(100)), 1, 100).is_err());
        assert_eq!(one_text("\u{e9}\u{e9}", 1, 2).unwrap(), "\u{e9}\u{e9}");
    }

    #[test]
    fn a_name_with_a_zero_width_space_or_a_control_character_is_refused() {
        for bad in [
            "Ada\u{200b}",
            "\u{200e}Ada",
            "Ada\u{2066}x\u{2069}",
            "\u{feff}Ada",
            "Ada\n",
            "Ada\tLovelace",
            "Ada\u{0}",
        ] {
            let message = one_text(bad, 1, 100).unwrap_err();
            assert!(message.contains("U+"), "{bad:?}: {message}");
        }
    }

    #[test]
    fn whole_numbers_are_whole_however_they_are_written() {
        let read = |json: &str| serde_json::from_str::<WholeNumber>(json).unwrap().0;
        assert_eq!(read("2"), Some(2));
        assert_eq!(read("2.0"), Some(2));
        assert_eq!(read("2e0"), Some(2));
        assert_eq!(read("-0.0"), Some(0));
        assert_eq!(read("1.5"), None);
        assert_eq!(read("1e300"), None);
        assert_eq!(read("18446744073709551615"), None);
        assert!(serde_json::from_str::<WholeNumber>("\"2\"").is_err());
        assert!(serde_json::from_str::<WholeNumber>("null").is_err());
    }

    #[test]
    fn null_is_not_absent() {
        #[derive(Deserialize)]
        struct Patch {
            #[serde(default, deserialize_with = "not_null")]
            name: Option<String>,
        }
        let absent: Patch = serde_json::from_str("{}").unwrap();
        assert_eq!(absent.name, None);
        let present: Patch = serde_json::from_str(r#"{"name":"x"}"#).unwrap();
        assert_eq!(present.name.as_deref(), Some("x"));
        assert!(serde_json::from_str::<Patch>(r#"{"name":null}"#).is_err());
    }
}
