//! Field checks that report every invalid field at once.

use crate::error::{ApiError, FieldError};

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

    /// A present string of `min..=max` characters after trimming.
    pub fn text<'a>(
        &mut self,
        value: &'a Option<String>,
        field: &str,
        min: usize,
        max: usize,
    ) -> &'a str {
        let trimmed = value.as_deref().map(str::trim).unwrap_or_default();
        let len = trimmed.chars().count();
        match value {
            None => self.check(false, field, "is required"),
            Some(_) => self.check(
                (min..=max).contains(&len),
                field,
                &format!("must be {min} to {max} characters"),
            ),
        };
        trimmed
    }

    pub fn finish(&mut self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::validation(std::mem::take(&mut self.errors)))
        }
    }
}

/// An address with one `@`, a local part, and a dotted domain, without spaces.
pub fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    s.len() <= 254
        && !local.is_empty()
        && local.len() <= 64
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_shapes() {
        for ok in ["a@b.co", "first.last+tag@example.org"] {
            assert!(is_email(ok), "{ok}");
        }
        for bad in [
            "", "a", "a@b", "@b.co", "a@@b.co", "a b@c.de", "a@.co", "a@co.",
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
}
