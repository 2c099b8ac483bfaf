//! Login tokens as `components/user/src/token.rs` signs them: HS256 over the claims `email`,
//! `exp`, `iat`, `iss`, `sub`, so berth's gateway accepts this service's tokens and this
//! service's gateway accepts berth's.

use common::ApiError;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

pub struct Issuer {
    key: EncodingKey,
    issuer: String,
    ttl: u64,
}

/// In the component's order (serde_json sorts a `json!` object's keys).
#[derive(serde::Serialize)]
struct Claims<'a> {
    email: &'a str,
    exp: u64,
    iat: u64,
    iss: &'a str,
    sub: &'a str,
}

impl Issuer {
    pub fn new(
        secret: &[u8],
        issuer: &str,
        ttl: u64,
    ) -> Result<Issuer, jsonwebtoken::errors::Error> {
        Ok(Issuer {
            key: EncodingKey::from_secret(secret)?,
            issuer: issuer.to_owned(),
            ttl,
        })
    }

    pub fn issue(&self, user_id: &str, email: &str) -> Result<String, ApiError> {
        let iat = common::unix_now();
        let claims = Claims {
            email,
            exp: iat + self.ttl,
            iat,
            iss: &self.issuer,
            sub: user_id,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.key)
            .map_err(ApiError::internal)
    }
}
