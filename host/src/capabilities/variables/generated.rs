//! A random secret minted once per data dir for the gateway's JWT key, so `berth up` works
//! with no set-up and issued tokens stay valid across restarts.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;

use super::Provider;

pub struct GeneratedSecret {
    name: String,
    dir: PathBuf,
}

impl GeneratedSecret {
    pub fn new(name: &str, dir: PathBuf) -> GeneratedSecret {
        GeneratedSecret {
            name: name.to_owned(),
            dir,
        }
    }
}

#[async_trait::async_trait]
impl Provider for GeneratedSecret {
    async fn get(&self, name: &str) -> anyhow::Result<Option<String>> {
        if name != self.name {
            return Ok(None);
        }
        let path = self.dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(secret) if !secret.trim().is_empty() => return Ok(Some(secret.trim().to_owned())),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
        let secret = hex::encode(rand::random::<[u8; 32]>());
        crate::files::write_private(&path, secret.as_bytes())
            .with_context(|| format!("cannot keep the generated secret in {}", path.display()))?;
        tracing::info!(
            variable = name,
            path = %path.display(),
            "generated a random value for `{name}` and kept it in the data dir; set {} to use your own",
            super::env::variable_env_name(None, name)
        );
        let _ = std::io::stderr().flush();
        Ok(Some(secret))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_secret_is_generated_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let p = GeneratedSecret::new("jwt_secret", dir.path().join("secrets"));
        let first = p.get("jwt_secret").await.unwrap().unwrap();
        assert_eq!(first.len(), 64);
        let again = GeneratedSecret::new("jwt_secret", dir.path().join("secrets"));
        assert_eq!(again.get("jwt_secret").await.unwrap().unwrap(), first);
        assert_eq!(p.get("other").await.unwrap(), None);
    }
}
