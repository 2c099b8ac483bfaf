//! The environment provider: `<PREFIX>_<NAME>`, then a dotenv file, as Spin reads them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use anyhow::Context as _;

use super::Provider;

pub struct EnvProvider {
    prefix: Option<String>,
    dotenv_path: Option<PathBuf>,
    /// Read on first use; a missing file is an empty one.
    dotenv: OnceLock<Result<HashMap<String, String>, String>>,
}

/// `SPIN_VARIABLE_JWT_SECRET` for `jwt_secret`.
pub fn variable_env_name(prefix: Option<&str>, name: &str) -> String {
    format!(
        "{}_{}",
        prefix.unwrap_or("SPIN_VARIABLE"),
        name.to_ascii_uppercase()
    )
}

impl EnvProvider {
    pub fn new(prefix: Option<String>, dotenv_path: Option<PathBuf>) -> EnvProvider {
        EnvProvider {
            prefix,
            dotenv_path,
            dotenv: OnceLock::new(),
        }
    }

    fn dotenv(&self) -> anyhow::Result<&HashMap<String, String>> {
        let loaded = self.dotenv.get_or_init(|| {
            let Some(path) = &self.dotenv_path else {
                return Ok(HashMap::new());
            };
            read_dotenv(path)
        });
        loaded.as_ref().map_err(|e| anyhow::anyhow!("{e}"))
    }
}

#[async_trait::async_trait]
impl Provider for EnvProvider {
    async fn get(&self, name: &str) -> anyhow::Result<Option<String>> {
        let key = variable_env_name(self.prefix.as_deref(), name);
        match std::env::var(&key) {
            Ok(value) => return Ok(Some(value)),
            Err(std::env::VarError::NotPresent) => {}
            Err(e) => return Err(e).with_context(|| format!("environment variable {key}")),
        }
        Ok(self.dotenv()?.get(&key).cloned())
    }
}

/// A dotenv file as `dotenvy` (and so Spin) reads it: `KEY=value` lines, `#` comments,
/// `export`, quotes and escapes. A missing file is an empty one; a line that is not an
/// assignment is an error naming the file, not a variable silently missing.
fn read_dotenv(path: &std::path::Path) -> Result<HashMap<String, String>, String> {
    let lines = match dotenvy::from_path_iter(path) {
        Ok(lines) => lines,
        Err(e) if e.not_found() => return Ok(HashMap::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    lines
        .map(|line| line.map_err(|e| format!("{} is not a dotenv file: {e}", path.display())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotenv_lines_parse_like_shells_write_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".env");
        std::fs::write(
            &path,
            "# comment\nSPIN_VARIABLE_A=1\nexport SPIN_VARIABLE_B=\"two words\"\n\nC='x'\n",
        )
        .unwrap();
        let vars = read_dotenv(&path).unwrap();
        assert_eq!(vars["SPIN_VARIABLE_A"], "1");
        assert_eq!(vars["SPIN_VARIABLE_B"], "two words");
        assert_eq!(vars["C"], "x");
        assert_eq!(vars.len(), 3);
        assert!(read_dotenv(&dir.path().join("absent")).unwrap().is_empty());
        std::fs::write(&path, "A=1\nnot a line\n").unwrap();
        let err = read_dotenv(&path).unwrap_err();
        assert!(err.contains(".env"), "{err}");
    }

    #[tokio::test]
    async fn dotenv_file_answers_what_the_environment_lacks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".env");
        std::fs::write(&path, "BERTH_TEST_DOTENV_ONLY=from-file\n").unwrap();
        let p = EnvProvider::new(Some("BERTH_TEST_DOTENV".into()), Some(path));
        assert_eq!(p.get("only").await.unwrap().as_deref(), Some("from-file"));
        assert_eq!(p.get("absent").await.unwrap(), None);
    }
}
