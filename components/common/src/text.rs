//! What stored text may hold, and how emails are keyed.
//!
//! Names, addresses, product and payment method ids and emails are shown to people and
//! compared by machines, so characters that cannot be seen have no place in them: control
//! characters (general category Cc: NUL, tab, newline, ESC), format characters (Cf: U+200B
//! zero-width space, U+200E left-to-right mark, U+2066..U+2069 bidi isolates, U+FEFF byte order
//! mark, the tag characters) and the line and paragraph separators (Zl, Zp). They are refused
//! wherever they stand rather than dropped, so the client learns which character of which
//! field was the problem. The price: U+200C and U+200D (zero-width non-joiner and joiner),
//! which Persian and Indic spellings and emoji sequences use, are refused too.

use unicode_normalization::UnicodeNormalization as _;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory as _};

/// Whether stored text may not hold `c`.
pub fn is_invisible(c: char) -> bool {
    matches!(
        c.general_category(),
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
    )
}

/// Spaces that may surround text and are trimmed from it: every `White_Space` character but
/// the invisible ones (tab, newline, U+2028, …), which are refused instead.
pub fn is_edge_space(c: char) -> bool {
    c.is_whitespace() && !is_invisible(c)
}

/// Why `s` cannot be stored, naming its first invisible character; `None` when it can.
pub fn invisible_problem(s: &str) -> Option<String> {
    let c = s.chars().find(|&c| is_invisible(c))?;
    let kind = match c.general_category() {
        GeneralCategory::Control => "a control character",
        GeneralCategory::Format => "an invisible formatting character",
        _ => "a line or paragraph separator",
    };
    Some(format!(
        "contains U+{:04X}, {kind}; send the text without it",
        c as u32
    ))
}

/// `s` without the spaces around it.
pub fn trim(s: &str) -> &str {
    s.trim_matches(is_edge_space)
}

/// The form an email is stored and looked up in: trimmed, Unicode NFC, and lower case.
///
/// The whole address is lowercased, the local part too, although RFC 5321 lets a mail server
/// tell `Ada@` from `ada@`: an account is one person, who types their address in whatever
/// case, and no mail provider in use hands the two to different people. NFC makes `é` typed
/// as one code point and as `e` + U+0301 the same address; lowercasing can leave a
/// decomposed sequence behind, hence the second NFC.
///
/// Refuses (with the reason) an address holding invisible characters instead of dropping them.
pub fn normalize_email(raw: &str) -> Result<String, String> {
    if let Some(problem) = invisible_problem(raw) {
        return Err(problem);
    }
    let composed: String = trim(raw).nfc().collect();
    Ok(composed.to_lowercase().nfc().collect())
}

/// How emails were keyed before NFC: trimmed and lowercased. Rows written then are not
/// migrated, so lookups try this form too.
pub fn legacy_email_key(raw: &str) -> String {
    raw.trim().to_lowercase()
}

/// The regular expressions `openapi.yaml` states the text rules in, derived from the
/// functions above so that a test can hold the schema to them.
///
/// They name characters of the Basic Multilingual Plane only, as `\uXXXX`: that is the one
/// spelling ECMA-262 (with and without the `u` flag), Python and Rust all read the same way.
/// The 116 invisible characters beyond it (U+110BD, U+110CD, U+13430..U+1343F,
/// U+1BCA0..U+1BCA3, U+1D173..U+1D17A, U+E0001, U+E0020..U+E007F) are refused all the same,
/// and the schema says so in words.
#[cfg(test)]
pub(crate) mod patterns {
    use super::*;

    /// A character class body listing every character of the BMP that `keep` holds, in ranges.
    fn class(keep: impl Fn(char) -> bool) -> String {
        let mut ranges: Vec<(u32, u32)> = Vec::new();
        for c in (0..=0xFFFF).filter_map(char::from_u32) {
            if !keep(c) {
                continue;
            }
            let c = c as u32;
            match ranges.last_mut() {
                Some((_, hi)) if *hi + 1 == c => *hi = c,
                // Surrogates are not chars: a range may run across them.
                Some((_, hi)) if *hi == 0xD7FF && c == 0xE000 => *hi = c,
                _ => ranges.push((c, c)),
            }
        }
        let escape = |c: u32| format!("\\u{c:04X}");
        ranges
            .iter()
            .map(|&(lo, hi)| match hi - lo {
                0 => escape(lo),
                1 => format!("{}{}", escape(lo), escape(hi)),
                _ => format!("{}-{}", escape(lo), escape(hi)),
            })
            .collect()
    }

    /// No invisible characters at all.
    pub fn visible() -> String {
        format!("^[^{}]*$", class(is_invisible))
    }

    /// The shape of an email beyond what `format: idn-email` says: no invisible characters or
    /// spaces, no quoted local part, and a dotted domain of ASCII labels (see
    /// `validate::is_email`).
    pub fn email() -> String {
        let local = format!(
            "[^{}{}\"(),:;<>@\\[\\\\\\]]",
            class(is_invisible),
            class(is_edge_space)
        );
        format!("^{local}+@[A-Za-z0-9-]+(\\.[A-Za-z0-9-]+)+$")
    }

    /// No invisible characters, and at least one character once trimmed.
    pub fn text() -> String {
        let (invisible, space) = (class(is_invisible), class(is_edge_space));
        format!("^[{space}]*[^{invisible}{space}][^{invisible}]*$")
    }

    /// No invisible characters, and at least two characters once trimmed.
    pub fn text_of_two() -> String {
        let (invisible, space) = (class(is_invisible), class(is_edge_space));
        let seen = format!("[^{invisible}{space}]");
        format!("^[{space}]*{seen}[^{invisible}]*{seen}[{space}]*$")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_format_and_separator_characters_are_invisible() {
        for c in [
            '\0',
            '\t',
            '\n',
            '\u{1b}',
            '\u{7f}',
            '\u{85}',
            '\u{ad}',
            '\u{200b}',
            '\u{200e}',
            '\u{202e}',
            '\u{2066}',
            '\u{2069}',
            '\u{feff}',
            '\u{2028}',
            '\u{2029}',
            '\u{e0041}',
        ] {
            assert!(is_invisible(c), "U+{:04X}", c as u32);
        }
        for c in ['a', 'é', ' ', '\u{a0}', '\u{3000}', '-', '😀', '\u{301}'] {
            assert!(!is_invisible(c), "U+{:04X}", c as u32);
        }
    }

    #[test]
    fn the_problem_names_the_code_point() {
        assert_eq!(invisible_problem("Ada Lovelace"), None);
        let problem = invisible_problem("Ada\u{200b}").unwrap();
        assert!(problem.contains("U+200B"), "{problem}");
        assert!(problem.contains("invisible"), "{problem}");
        assert!(
            invisible_problem("a\tb")
                .unwrap()
                .contains("U+0009, a control")
        );
    }

    #[test]
    fn spaces_around_text_are_trimmed_but_not_inside() {
        assert_eq!(trim("\u{a0} Ada  Lovelace \u{3000}"), "Ada  Lovelace");
        assert_eq!(trim("   "), "");
    }

    #[test]
    fn emails_are_nfc_and_lower_case_whatever_was_typed() {
        let composed = normalize_email("  Ada.L\u{c9}@Example.COM ").unwrap();
        let decomposed = normalize_email("ada.le\u{301}@example.com").unwrap();
        assert_eq!(composed, "ada.l\u{e9}@example.com");
        assert_eq!(composed, decomposed);
    }

    #[test]
    fn an_email_with_a_zero_width_space_is_refused() {
        let problem = normalize_email("ada\u{200b}@example.com").unwrap_err();
        assert!(problem.contains("U+200B"), "{problem}");
        assert!(normalize_email("ada@example.com\u{feff}").is_err());
        assert!(normalize_email("ada@example.com\n").is_err());
    }

    /// openapi.yaml states the same rules, so that generated clients and schemathesis agree
    /// with the services about which strings are valid.
    #[test]
    fn openapi_yaml_states_the_same_text_rules() {
        let yaml = include_str!("../../../openapi.yaml");
        let missing: Vec<String> = [
            ("visible", patterns::visible()),
            ("email", patterns::email()),
            ("text", patterns::text()),
            ("text2", patterns::text_of_two()),
        ]
        .into_iter()
        .map(|(name, pattern)| format!("&{name} '{pattern}'"))
        .filter(|line| !yaml.contains(line))
        .collect();
        assert!(
            missing.is_empty(),
            "openapi.yaml must define these patterns, each on one line:\n{}",
            missing.join("\n")
        );
    }
}
