//! argon2id password hashes in PHC string form, with the argon2 crate's defaults
//! (19 MiB, 2 passes, 1 lane: OWASP's recommendation).

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use common::ApiError;

/// A hash of a password nobody has, checked when the email is unknown so that a login for
/// an unknown user takes as long as one for a known user.
const DECOY: &str = "$argon2id$v=19$m=19456,t=2,p=1$YmVydGgtZGVjb3ktc2FsdA$2iXTPeu5hLHNKnMrlq9rWzLCpGC/ExhAnqUeF1GCXwc";

pub fn hash(password: &str) -> Result<String, ApiError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| ApiError::internal(format!("no randomness: {e}")))?;
    let salt = SaltString::encode_b64(&salt).map_err(ApiError::internal)?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(ApiError::internal)
}

/// Whether `password` matches `stored`; without a stored hash, checks the decoy and fails.
pub fn verify(password: &str, stored: Option<&str>) -> bool {
    let candidate = stored.unwrap_or(DECOY);
    let matches = PasswordHash::new(candidate)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false);
    matches && stored.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_only_their_password() {
        let h = hash("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("correct horse", Some(&h)));
        assert!(!verify("wrong horse", Some(&h)));
        assert!(!verify("anything", None));
        assert!(PasswordHash::new(DECOY).is_ok());
    }
}
