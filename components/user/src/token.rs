//! Login tokens: HS256 JWTs signed with the `jwt_secret` variable, which the gateway holds
//! too and verifies before a protected route reaches any service.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::ApiError;
use hmac::{Hmac, Mac};
use sha2::Sha256;

fn variable(name: &str) -> Result<String, ApiError> {
    spin_sdk::variables::get(name)
        .map_err(|e| ApiError::internal(format!("variable `{name}`: {e:?}")))
}

pub fn issue(user_id: &str, email: &str) -> Result<String, ApiError> {
    let secret = variable("jwt_secret")?;
    let issuer = variable("jwt_issuer")?;
    let ttl: u64 = variable("token_ttl_seconds")?
        .parse()
        .map_err(|e| ApiError::internal(format!("token_ttl_seconds: {e}")))?;
    Ok(sign(
        secret.as_bytes(),
        &Claims {
            sub: user_id,
            email,
            iss: &issuer,
            iat: common::unix_now(),
            ttl,
        },
    ))
}

/// What a token says: who, since when, until when, and who issued it (the gateway checks
/// `iss` against the same variable).
struct Claims<'a> {
    sub: &'a str,
    email: &'a str,
    iss: &'a str,
    iat: u64,
    ttl: u64,
}

fn sign(secret: &[u8], c: &Claims<'_>) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = serde_json::json!({
        "sub": c.sub,
        "email": c.email,
        "iat": c.iat,
        "exp": c.iat + c.ttl,
        "iss": c.iss,
    });
    let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signed = format!("{header}.{claims}");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(signed.as_bytes());
    format!(
        "{signed}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_three_base64url_parts_with_the_claims() {
        let token = sign(
            b"k",
            &Claims {
                sub: "u-1",
                email: "a@b.co",
                iss: "shop",
                iat: 1000,
                ttl: 60,
            },
        );
        let parts: Vec<_> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["sub"], "u-1");
        assert_eq!(claims["exp"], 1060);
        assert_eq!(claims["iss"], "shop");
    }
}
