//! argon2id password hashes in PHC string form, with the argon2 crate's defaults
//! (19 MiB, 2 passes, 1 lane: OWASP's recommendation). The user component and the
//! benchmark's native baseline both hash here, so the two cannot drift apart.
//!
//! The argon2 crate reads and writes the PHC strings, and natively it computes the hash.
//! In a component built with `simd128` (this workspace's `.cargo/config.toml`), [`argon2id`]
//! computes it: the same function, two words at a time.

#[cfg(any(test, all(target_arch = "wasm32", target_feature = "simd128")))]
mod argon2id;

use argon2::Params;
use argon2::password_hash::{
    self, Ident, Output, ParamsString, PasswordHash, PasswordHasher, PasswordVerifier, Salt,
    SaltString,
};

use crate::ApiError;

/// A hash of a password nobody has, checked when the email is unknown so that a login for
/// an unknown user takes as long as one for a known user.
const DECOY: &str = "$argon2id$v=19$m=19456,t=2,p=1$YmVydGgtZGVjb3ktc2FsdA$2iXTPeu5hLHNKnMrlq9rWzLCpGC/ExhAnqUeF1GCXwc";

pub fn hash(password: &str) -> Result<String, ApiError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| ApiError::internal(format!("no randomness: {e}")))?;
    let salt = SaltString::encode_b64(&salt).map_err(ApiError::internal)?;
    Argon2id
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(ApiError::internal)
}

/// Whether `password` matches `stored`; without a stored hash, checks the decoy and fails.
pub fn verify(password: &str, stored: Option<&str>) -> bool {
    let candidate = stored.unwrap_or(DECOY);
    let matches = PasswordHash::new(candidate)
        .map(|parsed| {
            Argon2id
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false);
    matches && stored.is_some()
}

/// Argon2id version 1.3 and nothing else: every hash this service stores.
struct Argon2id;

impl PasswordHasher for Argon2id {
    type Params = Params;

    fn hash_password_customized<'a>(
        &self,
        password: &[u8],
        algorithm: Option<Ident<'a>>,
        version: Option<password_hash::Decimal>,
        params: Params,
        salt: impl Into<Salt<'a>>,
    ) -> password_hash::Result<PasswordHash<'a>> {
        if algorithm.is_some_and(|a| a != argon2::ARGON2ID_IDENT) {
            return Err(password_hash::Error::Algorithm);
        }
        if version.is_some_and(|v| v != u32::from(argon2::Version::V0x13)) {
            return Err(password_hash::Error::Version);
        }
        let salt = salt.into();
        let mut salt_bytes = [0u8; 64];
        let salt_bytes = salt.decode_b64(&mut salt_bytes)?;
        let length = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
        let output = Output::init_with(length, |out| compute(password, salt_bytes, &params, out))?;
        Ok(PasswordHash {
            algorithm: argon2::ARGON2ID_IDENT,
            version: Some(argon2::Version::V0x13.into()),
            params: ParamsString::try_from(&params)?,
            salt: Some(salt),
            hash: Some(output),
        })
    }
}

/// The raw hash: by [`argon2id`] in a SIMD build of a component, by the argon2 crate
/// elsewhere (which uses AVX2 where the CPU has it).
fn compute(
    password: &[u8],
    salt: &[u8],
    params: &Params,
    out: &mut [u8],
) -> password_hash::Result<()> {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        let malformed =
            password_hash::Error::ParamValueInvalid(password_hash::errors::InvalidValue::Malformed);
        if !params.keyid().is_empty() || !params.data().is_empty() {
            return Err(malformed);
        }
        argon2id::hash_into(
            password,
            salt,
            params.m_cost(),
            params.t_cost(),
            params.p_cost(),
            out,
        )
        .map_err(|_| malformed)
    }
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    {
        argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            params.clone(),
        )
        .hash_password_into(password, salt, out)
        .map_err(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_have_owasp_parameters_and_verify_only_their_password() {
        let h = hash("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify("correct horse", Some(&h)));
        assert!(!verify("wrong horse", Some(&h)));
        assert!(!verify("anything", None));
        assert!(PasswordHash::new(DECOY).is_ok());
    }

    #[test]
    fn hashes_read_as_the_argon2_crate_writes_them_and_the_other_way() {
        let theirs = argon2::Argon2::default()
            .hash_password(
                b"correct horse",
                &SaltString::encode_b64(b"sixteen byte slt").unwrap(),
            )
            .unwrap()
            .to_string();
        assert!(verify("correct horse", Some(&theirs)));
        let ours = hash("correct horse").unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(
            argon2::Argon2::default()
                .verify_password(b"correct horse", &parsed)
                .is_ok()
        );
    }

    #[test]
    fn other_algorithms_and_versions_never_verify() {
        let salt = SaltString::encode_b64(b"sixteen byte slt").unwrap();
        for (algorithm, version) in [
            (argon2::Algorithm::Argon2i, argon2::Version::V0x13),
            (argon2::Algorithm::Argon2d, argon2::Version::V0x13),
            (argon2::Algorithm::Argon2id, argon2::Version::V0x10),
        ] {
            let other = argon2::Argon2::new(algorithm, version, Params::default())
                .hash_password(b"correct horse", &salt)
                .unwrap()
                .to_string();
            assert!(!verify("correct horse", Some(&other)), "{other}");
        }
    }
}
