//! `--runtime-config FILE`: Spin's runtime-config format, which says where each label's data
//! lives and where variables come from. Each section's backends are defined by the capability
//! that serves them; this file only gathers them. Without a file everything is embedded under
//! the data dir.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ConfigError;
use crate::capabilities::{key_value, messaging, sql, variables};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    #[serde(default)]
    pub sqlite_database: BTreeMap<String, sql::Config>,
    #[serde(default)]
    pub key_value_store: BTreeMap<String, key_value::Config>,
    #[serde(default)]
    pub variables_provider: Vec<variables::ProviderConfig>,
    /// berth's addition: where events go (`embedded` unless set).
    #[serde(default)]
    pub messaging: messaging::Config,
    /// Where the file was read from; relative paths in it are relative to its folder.
    #[serde(skip)]
    pub path: PathBuf,
}

impl RuntimeConfig {
    pub fn load(path: &Path) -> Result<RuntimeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config: RuntimeConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        config.path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        Ok(config)
    }

    /// The folder relative paths in the file are resolved against.
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// Labels configured here that no component is granted are almost always typos.
    pub fn check_labels(&self, app: &super::App) -> Result<(), ConfigError> {
        let granted = |label: &str, pick: fn(&super::ComponentConfig) -> &Vec<String>| {
            app.components
                .values()
                .any(|c| pick(c).iter().any(|l| l == label))
        };
        let mut problems = Vec::new();
        for label in self.sqlite_database.keys() {
            if !granted(label, |c| &c.sqlite_databases) {
                problems.push(format!(
                    "[sqlite_database.{label}] is not granted to any component (no `sqlite_databases = [\"{label}\"]` in {})",
                    app.manifest_path.display()
                ));
            }
        }
        for label in self.key_value_store.keys() {
            if !granted(label, |c| &c.key_value_stores) {
                problems.push(format!(
                    "[key_value_store.{label}] is not granted to any component (no `key_value_stores = [\"{label}\"]` in {})",
                    app.manifest_path.display()
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid {
                path: self.path.clone(),
                problems,
            })
        }
    }
}
