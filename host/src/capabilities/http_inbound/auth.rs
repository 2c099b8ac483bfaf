//! Bearer tokens: HS256 JWTs checked by the gateway before a protected route reaches its
//! component, which then gets the verified user id and nothing a client could forge.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Clock skew tolerated between the host that issued a token and the one checking it.
const LEEWAY_SECS: u64 = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("this route needs `Authorization: Bearer <token>` (log in to get a token)")]
    Missing,
    #[error("the bearer token is not valid: {0}")]
    Invalid(&'static str),
    #[error("the bearer token has expired: log in again")]
    Expired,
}

impl AuthError {
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "AUTH_REQUIRED",
            AuthError::Invalid(_) => "TOKEN_INVALID",
            AuthError::Expired => "TOKEN_EXPIRED",
        }
    }
}

pub struct JwtVerifier {
    mac: Hmac<Sha256>,
}

#[derive(serde::Deserialize)]
struct Header {
    alg: String,
}

#[derive(serde::Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default)]
    nbf: Option<u64>,
}

impl JwtVerifier {
    pub fn new(secret: &[u8]) -> JwtVerifier {
        JwtVerifier {
            mac: Hmac::new_from_slice(secret).expect("HMAC takes keys of any length"),
        }
    }

    /// The user id (`sub`) of a valid token in an `Authorization` header value.
    pub fn verify(&self, authorization: Option<&[u8]>, now_secs: u64) -> Result<String, AuthError> {
        let value = authorization.ok_or(AuthError::Missing)?;
        let value = std::str::from_utf8(value).map_err(|_| AuthError::Invalid("not text"))?;
        let (scheme, token) = value.trim().split_once(' ').ok_or(AuthError::Missing)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::Missing);
        }
        let token = token.trim();
        let mut parts = token.splitn(3, '.');
        let (Some(header), Some(payload), Some(signature)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Invalid("not a JWT"));
        };
        let header: Header = decode_json(header)?;
        if header.alg != "HS256" {
            return Err(AuthError::Invalid("only HS256 tokens are accepted"));
        }
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| AuthError::Invalid("malformed signature"))?;
        let mut mac = self.mac.clone();
        mac.update(&token.as_bytes()[..header_len(token)]);
        mac.verify_slice(&signature)
            .map_err(|_| AuthError::Invalid("bad signature"))?;
        let claims: Claims = decode_json(payload)?;
        if claims.exp + LEEWAY_SECS < now_secs {
            return Err(AuthError::Expired);
        }
        if claims.nbf.is_some_and(|nbf| nbf > now_secs + LEEWAY_SECS) {
            return Err(AuthError::Invalid("not valid yet"));
        }
        let header_safe = |s: &str| s.bytes().all(|b| b.is_ascii_graphic());
        if claims.sub.is_empty() || claims.sub.len() > 128 || !header_safe(&claims.sub) {
            return Err(AuthError::Invalid("bad subject"));
        }
        Ok(claims.sub)
    }
}

/// Length of `header.payload`, the signed part.
fn header_len(token: &str) -> usize {
    token.rfind('.').unwrap_or(token.len())
}

fn decode_json<T: serde::de::DeserializeOwned>(part: &str) -> Result<T, AuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| AuthError::Invalid("malformed base64"))?;
    serde_json::from_slice(&bytes).map_err(|_| AuthError::Invalid("malformed claims"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn sign(secret: &[u8], header: &str, claims: &str) -> String {
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(signed.as_bytes());
        format!(
            "{signed}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    }

    const HS256: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

    fn bearer(token: &str) -> Vec<u8> {
        format!("Bearer {token}").into_bytes()
    }

    #[test]
    fn a_valid_token_yields_its_subject() {
        let v = JwtVerifier::new(b"k");
        let t = sign(b"k", HS256, r#"{"sub":"u-1","exp":2000}"#);
        assert_eq!(v.verify(Some(&bearer(&t)), 1000), Ok("u-1".into()));
    }

    #[test]
    fn forged_expired_and_malformed_tokens_are_refused() {
        let v = JwtVerifier::new(b"k");
        let other_key = sign(b"other", HS256, r#"{"sub":"u","exp":2000}"#);
        let expired = sign(b"k", HS256, r#"{"sub":"u","exp":100}"#);
        let none_alg = sign(b"k", r#"{"alg":"none"}"#, r#"{"sub":"u","exp":2000}"#);
        let no_exp = sign(b"k", HS256, r#"{"sub":"u"}"#);
        let bad_sub = sign(b"k", HS256, r#"{"sub":"a\nb","exp":2000}"#);
        assert_eq!(v.verify(None, 1000), Err(AuthError::Missing));
        assert_eq!(v.verify(Some(b"Basic abc"), 1000), Err(AuthError::Missing));
        assert_eq!(
            v.verify(Some(&bearer(&other_key)), 1000),
            Err(AuthError::Invalid("bad signature"))
        );
        assert_eq!(
            v.verify(Some(&bearer(&expired)), 1000),
            Err(AuthError::Expired)
        );
        assert!(matches!(
            v.verify(Some(&bearer(&none_alg)), 1000),
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(
            v.verify(Some(&bearer(&no_exp)), 1000),
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(
            v.verify(Some(&bearer(&bad_sub)), 1000),
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(
            v.verify(Some(b"Bearer a.b"), 1000),
            Err(AuthError::Invalid(_))
        ));
    }
}
