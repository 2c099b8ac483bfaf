//! `fermyon:spin/variables@2.0.0`: application variables, resolved once when the app loads.
//!
//! | runtime config | provider |
//! |---|---|
//! | `[[variables_provider]] type = "env"`, `prefix`, `dotenv_path` | environment, then a dotenv file |
//! | `[[variables_provider]] type = "static"`, `values = { name = "…" }` | fixed values |
//! | (always, last) | `SPIN_VARIABLE_<NAME>`, then `<app dir>/.env` |
//!
//! Providers are asked in that order, then the manifest `default` applies. The variable that
//! holds the gateway's JWT key gets a random value kept in the data dir when nothing else
//! gives it one, so the app runs with no set-up and tokens survive restarts.

mod env;
mod generated;
mod wit;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

pub use crate::config::Template;
pub use wit::{Variables, VariablesView};

use crate::config::App;

#[async_trait::async_trait]
pub trait Provider: Send + Sync {
    /// The value of `name`, or `None` when this provider does not have it.
    async fn get(&self, name: &str) -> anyhow::Result<Option<String>>;
}

/// `[[variables_provider]]` in the runtime config.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ProviderConfig {
    Env {
        #[serde(default)]
        prefix: Option<String>,
        #[serde(default)]
        dotenv_path: Option<PathBuf>,
    },
    Static {
        values: BTreeMap<String, String>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum VariablesError {
    #[error(
        "variable `{name}` is required and no provider has it: set {env}=… in the environment or in .env"
    )]
    Missing { name: String, env: String },
    #[error("variable `{name}`: {message}")]
    Provider { name: String, message: String },
}

/// Builds the provider chain: the only place that names concrete providers. With
/// `mint_jwt_secret`, a JWT key nobody provides is generated and kept in the data dir.
pub fn build(
    configs: &[ProviderConfig],
    config_dir: &Path,
    app: &App,
    data_dir: &Path,
    mint_jwt_secret: bool,
) -> Vec<Arc<dyn Provider>> {
    let mut providers: Vec<Arc<dyn Provider>> = configs
        .iter()
        .map(|c| -> Arc<dyn Provider> {
            match c {
                ProviderConfig::Env {
                    prefix,
                    dotenv_path,
                } => Arc::new(env::EnvProvider::new(
                    prefix.clone(),
                    dotenv_path.as_ref().map(|p| config_dir.join(p)),
                )),
                ProviderConfig::Static { values } => Arc::new(StaticProvider(values.clone())),
            }
        })
        .collect();
    providers.push(Arc::new(env::EnvProvider::new(
        None,
        Some(app.dir.join(".env")),
    )));
    if let Some(secret) = &app.jwt_secret
        && let [name] = secret.references().collect::<Vec<_>>()[..]
        && mint_jwt_secret
    {
        providers.push(Arc::new(generated::GeneratedSecret::new(
            name,
            data_dir.join("secrets"),
        )));
    }
    providers
}

struct StaticProvider(BTreeMap<String, String>);

#[async_trait::async_trait]
impl Provider for StaticProvider {
    async fn get(&self, name: &str) -> anyhow::Result<Option<String>> {
        Ok(self.0.get(name).cloned())
    }
}

/// The value of every application variable.
#[derive(Clone, Default)]
pub struct Resolved(HashMap<String, String>);

impl std::fmt::Debug for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Values may be secrets.
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl Resolved {
    pub fn render(&self, template: &Template) -> String {
        template.render(|name| self.0.get(name).map(String::as_str).unwrap_or_default())
    }
}

/// Resolves every variable declared in `[variables]`, so a missing one stops the load with
/// its name instead of failing the first request that needs it.
pub async fn resolve(
    app: &App,
    providers: &[Arc<dyn Provider>],
) -> Result<Resolved, Vec<VariablesError>> {
    let mut values = HashMap::new();
    let mut errors = Vec::new();
    'vars: for (name, var) in &app.variables {
        for provider in providers {
            match provider.get(name).await {
                Ok(Some(value)) => {
                    values.insert(name.clone(), value);
                    continue 'vars;
                }
                Ok(None) => {}
                Err(e) => {
                    errors.push(VariablesError::Provider {
                        name: name.clone(),
                        message: format!("{e:#}"),
                    });
                    continue 'vars;
                }
            }
        }
        match &var.default {
            Some(default) => {
                values.insert(name.clone(), default.clone());
            }
            None => errors.push(VariablesError::Missing {
                name: name.clone(),
                env: env::variable_env_name(None, name),
            }),
        }
    }
    if errors.is_empty() {
        Ok(Resolved(values))
    } else {
        Err(errors)
    }
}

/// The values one component sees, from its `[component.<id>.variables]` templates.
pub fn for_component(
    templates: &HashMap<String, Template>,
    app_values: &Resolved,
) -> Arc<HashMap<String, String>> {
    Arc::new(
        templates
            .iter()
            .map(|(name, t)| (name.clone(), app_values.render(t)))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(manifest: &str) -> App {
        App::parse(Path::new("/nonexistent/spin.toml"), manifest).unwrap()
    }

    const MANIFEST: &str = r#"
        spin_manifest_version = 2
        [application]
        name = "t"
        [variables]
        greeting = { default = "hello" }
        token = { required = true, secret = true }
        [component.c]
        source = "c.wasm"
        variables = { message = "{{ greeting }}, {{ token }}!" }
    "#;

    #[tokio::test]
    async fn providers_win_over_defaults_in_order() {
        let app = app(MANIFEST);
        let providers: Vec<Arc<dyn Provider>> = vec![
            Arc::new(StaticProvider([("token".into(), "first".into())].into())),
            Arc::new(StaticProvider(
                [
                    ("token".into(), "second".into()),
                    ("greeting".into(), "hi".into()),
                ]
                .into(),
            )),
        ];
        let resolved = resolve(&app, &providers).await.unwrap();
        let values = for_component(&app.components["c"].variables, &resolved);
        assert_eq!(values["message"], "hi, first!");
    }

    #[tokio::test]
    async fn a_missing_required_variable_names_the_env_var_to_set() {
        let app = app(MANIFEST);
        let errors = resolve(&app, &[]).await.unwrap_err();
        let msg = errors[0].to_string();
        assert!(
            msg.contains("`token`") && msg.contains("SPIN_VARIABLE_TOKEN"),
            "{msg}"
        );
    }

    #[test]
    fn resolved_values_are_not_printed() {
        let r = Resolved([("token".to_string(), "s3cret".to_string())].into());
        assert!(!format!("{r:?}").contains("s3cret"));
    }
}
