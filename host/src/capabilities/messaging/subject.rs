//! Subjects and patterns in NATS syntax: dot-separated tokens, where `*` in a pattern stands
//! for one token and a final `>` for one or more.

/// Why a subject or pattern is refused.
pub fn check(text: &str, pattern: bool) -> Result<(), String> {
    if text.is_empty() {
        return Err("a subject cannot be empty".into());
    }
    let tokens: Vec<&str> = text.split('.').collect();
    for (i, token) in tokens.iter().enumerate() {
        if token.is_empty() {
            return Err(format!(
                "`{text}` has an empty token (two dots, or a dot at an end)"
            ));
        }
        if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("`{text}` contains whitespace"));
        }
        let wildcard = *token == "*" || *token == ">";
        if wildcard && !pattern {
            return Err(format!(
                "`{text}`: wildcards are for subscriptions; publish to a concrete subject"
            ));
        }
        if *token == ">" && i + 1 != tokens.len() {
            return Err(format!("`{text}`: `>` may only be the last token"));
        }
        if !wildcard && (token.contains('*') || token.contains('>')) {
            return Err(format!(
                "`{text}`: `*` and `>` must stand alone as a whole token"
            ));
        }
    }
    Ok(())
}

/// Whether `subject` matches `pattern`.
pub fn matches(pattern: &str, subject: &str) -> bool {
    let mut subject = subject.split('.');
    for token in pattern.split('.') {
        match token {
            ">" => return subject.next().is_some(),
            "*" => {
                if subject.next().is_none() {
                    return false;
                }
            }
            literal => {
                if subject.next() != Some(literal) {
                    return false;
                }
            }
        }
    }
    subject.next().is_none()
}

/// Whether `subject` matches any of `patterns`.
pub fn matches_any(patterns: &[String], subject: &str) -> bool {
    patterns.iter().any(|p| matches(p, subject))
}

/// Reply subjects minted for `consumer.request`; publishing to one answers the request
/// directly instead of going through the outbox.
pub const REPLY_PREFIX: &str = "_INBOX.";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_like_nats() {
        assert!(matches("order.created", "order.created"));
        assert!(!matches("order.created", "order.cancelled"));
        assert!(matches("payment.*", "payment.failed"));
        assert!(!matches("payment.*", "payment.card.failed"));
        assert!(!matches("payment.*", "payment"));
        assert!(matches("payment.>", "payment.card.failed"));
        assert!(!matches("payment.>", "payment"));
        assert!(matches(">", "anything.at.all"));
        assert!(matches("*.created", "user.created"));
        assert!(!matches("order", "order.created"));
    }

    #[test]
    fn bad_subjects_are_refused_with_the_reason() {
        assert!(check("order.created", false).is_ok());
        assert!(check("order.*", true).is_ok());
        assert!(check("order.>", true).is_ok());
        assert!(check("order.*", false).unwrap_err().contains("wildcards"));
        assert!(
            check("order..created", true)
                .unwrap_err()
                .contains("empty token")
        );
        assert!(check("order.>.x", true).unwrap_err().contains("last token"));
        assert!(check("ord*er", true).unwrap_err().contains("whole token"));
        assert!(
            check("order created", true)
                .unwrap_err()
                .contains("whitespace")
        );
        assert!(check("", true).is_err());
    }
}
