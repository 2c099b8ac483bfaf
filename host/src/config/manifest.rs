//! `spin.toml`, the Spin manifest v2, as typed data.
//!
//! Everything here is a key Spin itself accepts, so the same file runs on Spin. berth's own
//! settings live only under `[application.tool.berth]` and `[component.<id>.tool.berth]`,
//! the places Spin reserves for tools. Unknown keys are errors: a typo must not silently
//! turn a setting off.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::berth::{AppSettings, ComponentSettings};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub spin_manifest_version: u32,
    pub application: Application,
    #[serde(default)]
    pub variables: BTreeMap<String, AppVariable>,
    /// Trigger type → its entries. Only `http` is served; other types are refused by
    /// validation with a message rather than by serde with a list of expected keys.
    #[serde(default)]
    pub trigger: BTreeMap<String, Vec<toml::Value>>,
    #[serde(default)]
    pub component: BTreeMap<String, Component>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Application {
    pub name: String,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub authors: Vec<String>,
    /// Spin's deployment-target checks; berth does not act on them.
    #[serde(default)]
    pub targets: Vec<toml::Value>,
    /// Application-level trigger settings (`[application.trigger.http]`).
    #[serde(default)]
    pub trigger: BTreeMap<String, toml::Value>,
    #[serde(default)]
    pub tool: Tools<AppSettings>,
}

/// `[variables]`: the application's variables, resolved from providers at load.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppVariable {
    #[serde(default)]
    pub default: Option<String>,
    #[serde(default)]
    pub required: bool,
    /// Secret values are never logged.
    #[serde(default)]
    pub secret: bool,
    #[serde(default)]
    pub description: Option<String>,
}

/// One `[[trigger.http]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpTrigger {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub component: Option<ComponentRef>,
    pub route: RouteSpec,
    #[serde(default)]
    pub executor: Option<toml::Value>,
    /// Spin-only features, accepted by the parser so they can be refused with a reason.
    #[serde(default)]
    pub static_response: Option<toml::Value>,
    #[serde(default)]
    pub components: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ComponentRef {
    Id(String),
    /// Spin allows a component table inline in the trigger; berth asks for an id so every
    /// component has a name for routing, grants and deployments.
    Inline(toml::Table),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RouteSpec {
    Path(String),
    Private(PrivateRoute),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivateRoute {
    pub private: bool,
}

/// `[component.<id>]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    pub source: Source,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub files: Vec<toml::Value>,
    #[serde(default)]
    pub exclude_files: Vec<String>,
    #[serde(default)]
    pub allowed_outbound_hosts: Vec<String>,
    /// Spin manifest v1's name for `allowed_outbound_hosts`; refused with a pointer to it.
    #[serde(default)]
    pub allowed_http_hosts: Vec<String>,
    #[serde(default)]
    pub key_value_stores: Vec<String>,
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    #[serde(default)]
    pub sqlite_databases: Vec<String>,
    #[serde(default)]
    pub ai_models: Vec<String>,
    #[serde(default)]
    pub build: Option<Build>,
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    #[serde(default)]
    pub targets: Option<Vec<toml::Value>>,
    #[serde(default)]
    pub profile: BTreeMap<String, toml::Value>,
    #[serde(default)]
    pub dependencies_inherit_configuration: Option<bool>,
    #[serde(default)]
    pub dependencies: BTreeMap<String, toml::Value>,
    #[serde(default)]
    pub tool: Tools<ComponentSettings>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Source {
    Path(PathBuf),
    /// `{ url, digest }` or `{ registry, package, version }`.
    Remote(toml::Table),
}

/// `[component.<id>.build]`, run by `berth build` exactly as `spin build` would.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Build {
    pub command: Commands,
    #[serde(default)]
    pub workdir: Option<PathBuf>,
    /// Globs (relative to the workdir) whose changes call for a rebuild.
    #[serde(default)]
    pub watch: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Commands {
    One(String),
    Many(Vec<String>),
}

impl Commands {
    pub fn as_slice(&self) -> &[String] {
        match self {
            Commands::One(c) => std::slice::from_ref(c),
            Commands::Many(cs) => cs,
        }
    }
}

/// A `tool` table: berth reads its own entry strictly and leaves other tools' entries alone.
#[derive(Debug)]
pub struct Tools<T> {
    pub berth: T,
}

impl<T: Default> Default for Tools<T> {
    fn default() -> Self {
        Self {
            berth: T::default(),
        }
    }
}

impl<'de, T> Deserialize<'de> for Tools<T>
where
    T: Default + serde::de::DeserializeOwned,
{
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut tools = BTreeMap::<String, toml::Value>::deserialize(d)?;
        let berth = match tools.remove("berth") {
            Some(value) => T::deserialize(value)
                .map_err(|e| serde::de::Error::custom(format!("in tool.berth: {}", e.message())))?,
            None => T::default(),
        };
        Ok(Self { berth })
    }
}
