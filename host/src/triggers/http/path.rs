//! One spelling per path. Routing, rate limits, auth exemptions and the component must all
//! agree on which resource a request names, so a path that could be read two ways is either
//! brought to its one normal form or refused before anything looks at it.
//!
//! | spelling | public listener | admin listener |
//! |---|---|---|
//! | `%61`, `%7E` (an encoded unreserved character, RFC 3986 §6.2.2.2) | decoded | refused |
//! | `//`, `/./`, `/../`, also encoded as `%2e` | refused | refused |
//! | `%2F`, `%5C`, an encoded control character, a broken `%` escape | refused | refused |
//! | any other `%XX` | kept | refused |
//! | a trailing `/` | kept (routes ignore it) | refused |

use std::borrow::Cow;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("it does not start with `/`")]
    NotAbsolute,
    #[error("it has an empty segment (`//`)")]
    EmptySegment,
    #[error("it has a `.` or `..` segment")]
    DotSegment,
    #[error("it encodes a separator or control character (`%2F`, `%5C`, `%00`…)")]
    EncodedSeparator,
    #[error("it has a `%` that is not followed by two hex digits")]
    BrokenEscape,
    #[error("it is not spelled exactly: no percent-encoding and no trailing `/`")]
    NotExact,
}

/// The normal form of a public request path, or why it has none.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let decoded = if path.contains('%') {
        Cow::Owned(decode_unreserved(path)?)
    } else {
        Cow::Borrowed(path)
    };
    // A trailing slash is one empty last segment, which routes ignore; any other empty
    // segment would let `/a//b` and `/a/b` differ for some readers and not others.
    let inner = &decoded[1..];
    if !inner.is_empty() {
        let inner = inner.strip_suffix('/').unwrap_or(inner);
        if inner.is_empty() {
            return Err(PathError::EmptySegment);
        }
        for segment in inner.split('/') {
            match segment {
                "" => return Err(PathError::EmptySegment),
                "." | ".." => return Err(PathError::DotSegment),
                _ => {}
            }
        }
    }
    Ok(decoded)
}

/// The admin API's paths are plain ASCII with nothing to normalise: anything else is refused
/// rather than interpreted.
pub fn exact(path: &str) -> Result<&str, PathError> {
    let normal = normalize(path)?;
    if path.contains('%') || (path.len() > 1 && path.ends_with('/')) || normal != path {
        return Err(PathError::NotExact);
    }
    Ok(path)
}

fn decode_unreserved(path: &str) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            // `path` is a str and `%` is ASCII, so every run between escapes is valid UTF-8.
            let next = path[i..].find('%').map_or(path.len(), |at| i + at);
            out.push_str(&path[i..next]);
            i = next;
            continue;
        }
        let hex = bytes.get(i + 1..i + 3).ok_or(PathError::BrokenEscape)?;
        let value = std::str::from_utf8(hex)
            .ok()
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .ok_or(PathError::BrokenEscape)?;
        match value {
            b'/' | b'\\' | 0x00..=0x1f | 0x7f => return Err(PathError::EncodedSeparator),
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(value as char)
            }
            _ => {
                // Reserved and non-ASCII bytes stay encoded, in the uppercase form.
                out.push('%');
                out.extend(hex.iter().map(|b| b.to_ascii_uppercase() as char));
            }
        }
        i += 3;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_are_borrowed_unchanged() {
        for path in ["/", "/api/v1/users/42", "/api/v1/users/", "/a-b_c~d.e"] {
            assert!(
                matches!(normalize(path), Ok(Cow::Borrowed(p)) if p == path),
                "{path}"
            );
        }
    }

    #[test]
    fn encoded_unreserved_characters_are_decoded() {
        assert_eq!(
            normalize("/api/v1/users/%6Cogin").unwrap(),
            "/api/v1/users/login"
        );
        assert_eq!(normalize("/%7e%41").unwrap(), "/~A");
        assert_eq!(normalize("/a%20b/%c3%a9").unwrap(), "/a%20b/%C3%A9");
    }

    #[test]
    fn ambiguous_spellings_are_refused() {
        for (path, why) in [
            ("//api", PathError::EmptySegment),
            ("/api//v1", PathError::EmptySegment),
            ("//", PathError::EmptySegment),
            ("/./api", PathError::DotSegment),
            ("/api/..", PathError::DotSegment),
            ("/api/%2e%2E/admin", PathError::DotSegment),
            ("/api/%2e/x", PathError::DotSegment),
            ("/api%2Fv1", PathError::EncodedSeparator),
            ("/api%2fv1", PathError::EncodedSeparator),
            ("/api%5Cv1", PathError::EncodedSeparator),
            ("/api%00", PathError::EncodedSeparator),
            ("/api%", PathError::BrokenEscape),
            ("/api%4", PathError::BrokenEscape),
            ("/api%zz", PathError::BrokenEscape),
            ("api", PathError::NotAbsolute),
            ("*", PathError::NotAbsolute),
        ] {
            assert_eq!(normalize(path), Err(why), "{path}");
        }
    }

    #[test]
    fn admin_paths_must_be_exact() {
        assert_eq!(exact("/admin/v1/components"), Ok("/admin/v1/components"));
        assert_eq!(exact("/"), Ok("/"));
        for path in [
            "/admin/v1/components/",
            "/%61dmin/v1/components",
            "/admin/v1/components/user%20",
            "//admin/v1/components",
            "/admin/./v1",
        ] {
            assert!(exact(path).is_err(), "{path}");
        }
    }
}
