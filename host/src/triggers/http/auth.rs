//! Bearer tokens: HS256 JWTs checked by the gateway before a protected route reaches its
//! component, which then gets the verified user id and nothing a client could forge.
//! Verification is `jsonwebtoken`'s, pinned to HS256, with `exp` and `iss` required (and
//! `aud` when the app names one).

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

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
    key: DecodingKey,
    validation: Validation,
}

#[derive(serde::Deserialize)]
struct Claims {
    sub: String,
}

impl JwtVerifier {
    /// Verifies tokens signed with `secret` by `issuer` (for `audience`, when given).
    pub fn new(
        secret: &[u8],
        issuer: &str,
        audience: Option<&str>,
    ) -> Result<JwtVerifier, jsonwebtoken::errors::Error> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_issuer(&[issuer]);
        let mut required = vec!["exp", "iss", "sub"];
        // Without an audience of our own, a token that names one is refused: it is meant for
        // someone who checks it.
        if let Some(audience) = audience {
            validation.set_audience(&[audience]);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        Ok(JwtVerifier {
            key: DecodingKey::from_secret(secret)?,
            validation,
        })
    }

    /// The user id (`sub`) of a valid token in an `Authorization` header value.
    pub fn verify(&self, authorization: Option<&[u8]>) -> Result<String, AuthError> {
        let value = authorization.ok_or(AuthError::Missing)?;
        let value = std::str::from_utf8(value).map_err(|_| AuthError::Invalid("not text"))?;
        let (scheme, token) = value.trim().split_once(' ').ok_or(AuthError::Missing)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::Missing);
        }
        let claims = jsonwebtoken::decode::<Claims>(token.trim(), &self.key, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::InvalidSignature => AuthError::Invalid("bad signature"),
                ErrorKind::InvalidAlgorithm => AuthError::Invalid("only HS256 tokens are accepted"),
                ErrorKind::InvalidIssuer => AuthError::Invalid("issued by someone else"),
                ErrorKind::InvalidAudience => AuthError::Invalid("meant for someone else"),
                ErrorKind::ImmatureSignature => AuthError::Invalid("not valid yet"),
                ErrorKind::MissingRequiredClaim(_) => {
                    AuthError::Invalid("a required claim is missing")
                }
                _ => AuthError::Invalid("not a well-formed JWT"),
            })?
            .claims;
        let header_safe = |s: &str| s.bytes().all(|b| b.is_ascii_graphic());
        if claims.sub.is_empty() || claims.sub.len() > 128 || !header_safe(&claims.sub) {
            return Err(AuthError::Invalid("bad subject"));
        }
        Ok(claims.sub)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use hmac::{Hmac, Mac};
    use sha2::Sha256;

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

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn claims(extra: &str) -> String {
        format!(
            r#"{{"sub":"u-1","iss":"shop","exp":{}{extra}}}"#,
            now() + 600
        )
    }

    #[test]
    fn a_valid_token_yields_its_subject() {
        let v = JwtVerifier::new(b"k", "shop", None).unwrap();
        let t = sign(b"k", HS256, &claims(""));
        assert_eq!(v.verify(Some(&bearer(&t))), Ok("u-1".into()));
    }

    #[test]
    fn forged_expired_and_malformed_tokens_are_refused() {
        let v = JwtVerifier::new(b"k", "shop", None).unwrap();
        let other_key = sign(b"other", HS256, &claims(""));
        let expired = sign(b"k", HS256, r#"{"sub":"u","iss":"shop","exp":100}"#);
        let none_alg = sign(b"k", r#"{"alg":"none"}"#, &claims(""));
        let hs512 = sign(b"k", r#"{"alg":"HS512"}"#, &claims(""));
        let no_exp = sign(b"k", HS256, r#"{"sub":"u","iss":"shop"}"#);
        let bad_sub = sign(
            b"k",
            HS256,
            &format!(r#"{{"sub":"a\nb","iss":"shop","exp":{}}}"#, now() + 600),
        );
        let future = sign(b"k", HS256, &claims(&format!(r#","nbf":{}"#, now() + 3600)));
        assert_eq!(v.verify(None), Err(AuthError::Missing));
        assert_eq!(v.verify(Some(b"Basic abc")), Err(AuthError::Missing));
        assert_eq!(
            v.verify(Some(&bearer(&other_key))),
            Err(AuthError::Invalid("bad signature"))
        );
        assert_eq!(v.verify(Some(&bearer(&expired))), Err(AuthError::Expired));
        for token in [&none_alg, &hs512, &no_exp, &bad_sub, &future] {
            assert!(
                matches!(v.verify(Some(&bearer(token))), Err(AuthError::Invalid(_))),
                "{token}"
            );
        }
        assert!(matches!(
            v.verify(Some(b"Bearer a.b")),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn the_issuer_and_audience_must_match() {
        let v = JwtVerifier::new(b"k", "shop", None).unwrap();
        let exp = now() + 600;
        let elsewhere = sign(
            b"k",
            HS256,
            &format!(r#"{{"sub":"u","iss":"other","exp":{exp}}}"#),
        );
        let no_issuer = sign(b"k", HS256, &format!(r#"{{"sub":"u","exp":{exp}}}"#));
        let with_audience = sign(b"k", HS256, &claims(r#","aud":"billing""#));
        for token in [&elsewhere, &no_issuer, &with_audience] {
            assert!(
                matches!(v.verify(Some(&bearer(token))), Err(AuthError::Invalid(_))),
                "{token}"
            );
        }
        let for_billing = JwtVerifier::new(b"k", "shop", Some("billing")).unwrap();
        assert_eq!(
            for_billing.verify(Some(&bearer(&with_audience))),
            Ok("u-1".into())
        );
        let without = sign(b"k", HS256, &claims(""));
        assert!(for_billing.verify(Some(&bearer(&without))).is_err());
    }
}
