//! Configuration: the Spin manifest and runtime config, read, checked and resolved once at
//! load into an [`App`], so nothing on the request path parses or validates configuration.

pub mod berth;
pub mod manifest;
pub mod runtime_config;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::capabilities::http_inbound::cors::Cors;
use crate::capabilities::http_inbound::rate_limit;
use crate::capabilities::http_inbound::router::RoutePattern;
use crate::capabilities::http_outbound::AllowedHosts;
use crate::capabilities::messaging::subject;
use crate::capabilities::variables::Template;
use berth::{Auth, ComponentSettings};
use manifest::{ComponentRef, HttpTrigger, Manifest, RouteSpec, Source};

pub use manifest::{AppVariable, Build};
pub use runtime_config::RuntimeConfig;

/// A manifest or runtime config that cannot be used, with every problem found in it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "there is no {path}: run berth in the app's folder, or pass --manifest path/to/spin.toml"
    )]
    NoManifest { path: PathBuf },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path} has {} problem{}:\n  - {}", .problems.len(), if .problems.len() == 1 { "" } else { "s" }, .problems.join("\n  - "))]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
}

/// The application as berth runs it: the manifest, validated, with paths made absolute and
/// berth's defaults filled in.
#[derive(Debug, Clone)]
pub struct App {
    pub name: String,
    pub manifest_path: PathBuf,
    /// The folder holding the manifest; relative paths in it are relative to this.
    pub dir: PathBuf,
    pub variables: BTreeMap<String, AppVariable>,
    pub routes: Vec<Route>,
    pub components: BTreeMap<String, ComponentConfig>,
    pub jwt_secret: Option<Template>,
    /// The `iss` every bearer token must carry; required with `jwt_secret`.
    pub jwt_issuer: Option<Template>,
    /// The `aud` every bearer token must carry, when set.
    pub jwt_audience: Option<Template>,
    pub max_request_bytes: u64,
    pub connections: ConnectionLimits,
    pub rate_limits: Vec<rate_limit::Policy>,
    pub cors: Option<Cors>,
}

/// How every connection of both listeners is bounded (`[application.tool.berth.connections]`).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub admin_max_connections: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_header_bytes: usize,
    pub upload_timeout: Duration,
    pub max_upload_bytes: u64,
}

impl Default for ConnectionLimits {
    fn default() -> ConnectionLimits {
        ConnectionLimits {
            max_connections: berth::DEFAULT_MAX_CONNECTIONS,
            admin_max_connections: berth::DEFAULT_ADMIN_MAX_CONNECTIONS,
            header_timeout: Duration::from_millis(berth::DEFAULT_HEADER_TIMEOUT_MS),
            body_timeout: Duration::from_millis(berth::DEFAULT_BODY_TIMEOUT_MS),
            idle_timeout: Duration::from_millis(berth::DEFAULT_IDLE_TIMEOUT_MS),
            max_header_bytes: berth::DEFAULT_MAX_HEADER_BYTES,
            upload_timeout: Duration::from_millis(berth::DEFAULT_UPLOAD_TIMEOUT_MS),
            max_upload_bytes: berth::DEFAULT_MAX_UPLOAD_BYTES,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Route {
    pub pattern: RoutePattern,
    pub component: String,
}

#[derive(Debug, Clone)]
pub struct ComponentConfig {
    pub id: String,
    pub source: PathBuf,
    pub allowed_outbound_hosts: AllowedHosts,
    pub sqlite_databases: Vec<String>,
    pub key_value_stores: Vec<String>,
    pub environment: Vec<(String, String)>,
    pub variables: HashMap<String, Template>,
    pub build: Option<Build>,
    pub limits: Limits,
    pub auth: Auth,
    pub public_routes: Vec<RoutePattern>,
    /// Folder of SQL migrations, if it exists.
    pub migrations: Option<PathBuf>,
    pub messaging: Messaging,
    /// A route leads to it, so it must export `wasi:http/incoming-handler`.
    pub serves_http: bool,
    /// Shares of its concurrency reserved to some of its routes: (routes, slots).
    pub route_concurrency: Vec<(Vec<RoutePattern>, u32)>,
}

/// A component's part in the events between components.
#[derive(Debug, Clone, Default)]
pub struct Messaging {
    /// Subject patterns it may publish to.
    pub publishes: Vec<String>,
    /// Subject patterns delivered to its handler.
    pub subscriptions: Vec<String>,
    pub consumer_group: String,
    pub max_delivery_attempts: u32,
}

impl Messaging {
    /// Publishers and subscribers keep an outbox and an inbox in their first database.
    pub fn is_used(&self) -> bool {
        !self.publishes.is_empty() || !self.subscriptions.is_empty()
    }
}

/// The sandbox of one component, from `[component.<id>.tool.berth]`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub memory_bytes: usize,
    pub timeout: std::time::Duration,
    pub max_concurrency: u32,
    pub max_response_bytes: u64,
}

impl App {
    /// Reads and validates `spin.toml`. Every problem is reported, not just the first.
    pub fn load(manifest_path: &Path) -> Result<App, ConfigError> {
        let text = std::fs::read_to_string(manifest_path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ConfigError::NoManifest {
                    path: manifest_path.to_owned(),
                }
            } else {
                ConfigError::Read {
                    path: manifest_path.to_owned(),
                    source,
                }
            }
        })?;
        Self::parse(manifest_path, &text)
    }

    pub fn parse(manifest_path: &Path, text: &str) -> Result<App, ConfigError> {
        let manifest: Manifest = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: manifest_path.to_owned(),
            message: e.to_string(),
        })?;
        let dir = manifest_path
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                }
            })
            .unwrap_or(Path::new("."));
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
        let mut problems = Vec::new();
        let app = validate(manifest, manifest_path, dir, &mut problems);
        if problems.is_empty() {
            Ok(app)
        } else {
            Err(ConfigError::Invalid {
                path: manifest_path.to_owned(),
                problems,
            })
        }
    }
}

fn validate(m: Manifest, manifest_path: &Path, dir: PathBuf, problems: &mut Vec<String>) -> App {
    let mut check = Checker {
        m: &m,
        dir: &dir,
        problems,
    };
    check.application();
    let (jwt_secret, jwt_issuer, jwt_audience) = check.jwt();
    let connections = check.connections();
    let rate_limits = check.rate_limits();
    let cors = check.cors();
    check.label_owners();
    let mut components: BTreeMap<String, ComponentConfig> = m
        .component
        .iter()
        .map(|(id, c)| (id.clone(), check.component(id, c, jwt_secret.is_some())))
        .collect();
    let routes = check.routes();
    let mut groups: BTreeMap<&str, &ComponentConfig> = BTreeMap::new();
    for c in components
        .values()
        .filter(|c| !c.messaging.subscriptions.is_empty())
    {
        let group = c.messaging.consumer_group.as_str();
        match groups.get(group) {
            Some(other) if other.messaging.subscriptions != c.messaging.subscriptions => {
                check.problems.push(format!(
                    "[component.{}] and [component.{}] share consumer_group `{group}` with different subscriptions; a group has one set of subjects: give them the same subscriptions or different groups",
                    other.id, c.id
                ));
            }
            _ => {
                groups.insert(group, c);
            }
        }
    }
    for route in &routes {
        if let Some(c) = components.get_mut(&route.component) {
            c.serves_http = true;
        }
    }
    App {
        name: m.application.name,
        manifest_path: manifest_path.to_owned(),
        dir,
        variables: m.variables,
        routes,
        components,
        jwt_secret,
        jwt_issuer,
        jwt_audience,
        connections,
        rate_limits,
        cors,
        max_request_bytes: m
            .application
            .tool
            .berth
            .max_request_bytes
            .unwrap_or(berth::DEFAULT_MAX_REQUEST_BYTES),
    }
}

/// Checks one manifest, collecting every problem instead of stopping at the first.
struct Checker<'a> {
    m: &'a Manifest,
    dir: &'a Path,
    problems: &'a mut Vec<String>,
}

impl Checker<'_> {
    /// The manifest version, application settings and `[variables]`.
    fn application(&mut self) {
        if self.m.spin_manifest_version != 2 {
            self.problems.push(format!(
                "spin_manifest_version = {} is not supported: berth reads Spin manifest version 2",
                self.m.spin_manifest_version
            ));
        }
        for (kind, settings) in &self.m.application.trigger {
            let base_only = kind == "http"
                && settings.as_table().is_some_and(|t| {
                    t.iter()
                        .all(|(k, v)| k == "base" && v.as_str() == Some("/"))
                });
            if !base_only {
                self.problems.push(format!(
                "[application.trigger.{kind}] is not supported by berth (only `base = \"/\"` under http): remove it"
            ));
            }
        }
        for (name, var) in &self.m.variables {
            if !is_variable_name(name) {
                self.problems.push(format!(
                "variable `{name}`: names use lowercase letters, digits and underscores, starting with a letter"
            ));
            }
            match (&var.default, var.required) {
                (Some(_), true) => self.problems.push(format!(
                    "variable `{name}` has both `default` and `required = true`: keep one"
                )),
                (None, false) => self.problems.push(format!(
                    "variable `{name}` needs `default = \"…\"` or `required = true`"
                )),
                _ => {}
            }
        }
    }

    /// Every `{{ name }}` in `template` must be an application variable.
    fn known_variables(&mut self, template: &Template, context: &str) {
        for name in template.references() {
            if !self.m.variables.contains_key(name) {
                self.problems.push(format!(
                    "{context} refers to `{{{{ {name} }}}}`, which is not declared in [variables]"
                ));
            }
        }
    }

    /// `jwt_secret`, `jwt_issuer` and `jwt_audience`: templates of app variables.
    fn jwt(&mut self) -> (Option<Template>, Option<Template>, Option<Template>) {
        let m = self.m;
        let settings = &m.application.tool.berth;
        let mut template = |key: &str, value: &Option<String>| {
            let t = Template::parse(value.as_deref()?)
                .map_err(|e| {
                    self.problems
                        .push(format!("[application.tool.berth] {key}: {e}"))
                })
                .ok()?;
            self.known_variables(&t, &format!("[application.tool.berth] {key}"));
            Some(t)
        };
        let secret = template("jwt_secret", &settings.jwt_secret);
        let issuer = template("jwt_issuer", &settings.jwt_issuer);
        let audience = template("jwt_audience", &settings.jwt_audience);
        if settings.jwt_secret.is_some() && settings.jwt_issuer.is_none() {
            self.problems.push(
                "[application.tool.berth] jwt_secret needs jwt_issuer: the `iss` your token issuer writes (the shop's user service writes \"berth-user\"), so tokens minted by anything else with the same key are refused".to_owned(),
            );
        }
        if settings.jwt_secret.is_none()
            && (settings.jwt_issuer.is_some() || settings.jwt_audience.is_some())
        {
            self.problems.push(
                "[application.tool.berth] jwt_issuer and jwt_audience only mean something with jwt_secret".to_owned(),
            );
        }
        (secret, issuer, audience)
    }

    /// `[application.tool.berth.connections]`, with defaults and sane ranges.
    fn connections(&mut self) -> ConnectionLimits {
        let m = self.m;
        let s = &m.application.tool.berth.connections;
        let d = ConnectionLimits::default();
        let mut positive = |key: &str, value: Option<u64>, default: u64| {
            let value = value.unwrap_or(default);
            if value == 0 {
                self.problems.push(format!(
                    "[application.tool.berth.connections] {key} = 0: use 1 or more"
                ));
            }
            value
        };
        let ms = |d: Duration| d.as_millis() as u64;
        let limits = ConnectionLimits {
            max_connections: positive(
                "max_connections",
                s.max_connections.map(|n| n as u64),
                d.max_connections as u64,
            ) as usize,
            admin_max_connections: positive(
                "admin_max_connections",
                s.admin_max_connections.map(|n| n as u64),
                d.admin_max_connections as u64,
            ) as usize,
            header_timeout: Duration::from_millis(positive(
                "header_timeout_ms",
                s.header_timeout_ms,
                ms(d.header_timeout),
            )),
            body_timeout: Duration::from_millis(positive(
                "body_timeout_ms",
                s.body_timeout_ms,
                ms(d.body_timeout),
            )),
            idle_timeout: Duration::from_millis(positive(
                "idle_timeout_ms",
                s.idle_timeout_ms,
                ms(d.idle_timeout),
            )),
            max_header_bytes: s.max_header_bytes.unwrap_or(d.max_header_bytes),
            upload_timeout: Duration::from_millis(positive(
                "upload_timeout_ms",
                s.upload_timeout_ms,
                ms(d.upload_timeout),
            )),
            max_upload_bytes: positive("max_upload_bytes", s.max_upload_bytes, d.max_upload_bytes),
        };
        if limits.max_header_bytes < berth::MIN_MAX_HEADER_BYTES {
            self.problems.push(format!(
                "[application.tool.berth.connections] max_header_bytes = {}: use {} or more",
                limits.max_header_bytes,
                berth::MIN_MAX_HEADER_BYTES
            ));
        }
        limits
    }

    fn rate_limits(&mut self) -> Vec<rate_limit::Policy> {
        let m = self.m;
        let settings = &m.application.tool.berth.rate_limits;
        let mut policies = Vec::new();
        for (i, s) in settings.iter().enumerate() {
            match rate_limit::Policy::from_settings(s) {
                Ok(p) => policies.push(p),
                Err(problems) => self.problems.extend(
                    problems
                        .into_iter()
                        .map(|p| format!("[[application.tool.berth.rate_limits]] #{}: {p}", i + 1)),
                ),
            }
        }
        policies
    }

    fn cors(&mut self) -> Option<Cors> {
        let m = self.m;
        let settings = m.application.tool.berth.cors.as_ref()?;
        Cors::from_settings(settings)
            .map_err(|problems| {
                self.problems.extend(
                    problems
                        .into_iter()
                        .map(|p| format!("[application.tool.berth.cors] {p}")),
                )
            })
            .ok()
    }

    /// A database or store label belongs to one component (invariant 1).
    fn label_owners(&mut self) {
        let mut database_owner: HashMap<&str, &str> = HashMap::new();
        let mut store_owner: HashMap<&str, &str> = HashMap::new();
        for (id, c) in &self.m.component {
            let at = format!("[component.{id}]");
            for (labels, owners, what) in [
                (&c.sqlite_databases, &mut database_owner, "sqlite_databases"),
                (&c.key_value_stores, &mut store_owner, "key_value_stores"),
            ] {
                for label in labels {
                    if !is_label(label) {
                        self.problems.push(format!(
                            "{at} {what}: label `{label}` must use letters, digits, `-` and `_`"
                        ));
                    }
                    if let Some(other) = owners.insert(label, id) {
                        self.problems.push(format!(
                            "{what} label `{label}` is granted to both `{other}` and `{id}`: each component gets its own data, so give one of them another label"
                        ));
                    }
                }
            }
        }
    }

    fn component(
        &mut self,
        id: &str,
        c: &manifest::Component,
        jwt_secret: bool,
    ) -> ComponentConfig {
        if !is_component_id(id) {
            self.problems.push(format!(
            "component id `{id}`: ids use lowercase letters, digits and single dashes, starting with a letter"
        ));
        }
        let at = format!("[component.{id}]");
        let source = match &c.source {
            Source::Path(p) => normalize(&self.dir.join(p)),
            Source::Remote(_) => {
                self.problems.push(format!(
                "{at} source: berth loads components from local files; download the component and set `source = \"path/to/{id}.wasm\"`"
            ));
                PathBuf::new()
            }
        };
        if !c.files.is_empty() {
            self.problems.push(format!(
            "{at} files: berth gives components no file system; remove `files` and keep data in a database or key-value store"
        ));
        }
        if !c.allowed_http_hosts.is_empty() {
            self.problems.push(format!(
            "{at} allowed_http_hosts is the Spin manifest v1 key: use `allowed_outbound_hosts = [\"https://host\"]`"
        ));
        }
        if !c.ai_models.is_empty() {
            self.problems.push(format!(
                "{at} ai_models: berth does not serve LLM inference"
            ));
        }
        if !c.profile.is_empty() {
            self.problems.push(format!(
                "{at} profile: berth has no build profiles; remove `profile`"
            ));
        }
        if !c.dependencies.is_empty() {
            self.problems.push(format!(
                "{at} dependencies: berth does not compose components; compose them before loading"
            ));
        }
        let allowed_outbound_hosts =
            AllowedHosts::parse(&c.allowed_outbound_hosts).unwrap_or_else(|e| {
                self.problems
                    .push(format!("{at} allowed_outbound_hosts: {e}"));
                AllowedHosts::default()
            });
        let mut variables = HashMap::new();
        for (name, value) in &c.variables {
            if !is_variable_name(name) {
                self.problems.push(format!(
                    "{at} variables: `{name}` must use lowercase letters, digits and underscores"
                ));
            }
            match Template::parse(value) {
                Ok(t) => {
                    self.known_variables(&t, &format!("{at} variable `{name}`"));
                    variables.insert(name.clone(), t);
                }
                Err(e) => self.problems.push(format!("{at} variable `{name}`: {e}")),
            }
        }
        let ComponentSettings {
            memory_limit_mb,
            timeout_ms,
            max_concurrency,
            max_response_bytes,
            auth,
            public_routes,
            migrations,
            publishes,
            subscriptions,
            consumer_group,
            max_delivery_attempts,
            route_concurrency,
        } = c.tool.berth.clone();
        let memory_limit_mb = memory_limit_mb.unwrap_or(berth::DEFAULT_MEMORY_LIMIT_MB);
        if memory_limit_mb == 0 || memory_limit_mb > berth::MAX_MEMORY_LIMIT_MB {
            self.problems.push(format!(
                "{at} tool.berth.memory_limit_mb = {memory_limit_mb}: use 1 to {}",
                berth::MAX_MEMORY_LIMIT_MB
            ));
        }
        let timeout_ms = timeout_ms.unwrap_or(berth::DEFAULT_TIMEOUT_MS);
        if timeout_ms == 0 {
            self.problems
                .push(format!("{at} tool.berth.timeout_ms must be at least 1"));
        }
        let max_concurrency = max_concurrency.unwrap_or(berth::DEFAULT_MAX_CONCURRENCY);
        if max_concurrency == 0 {
            self.problems.push(format!(
                "{at} tool.berth.max_concurrency must be at least 1"
            ));
        }
        let public_routes = public_routes
            .iter()
            .filter_map(|r| {
                RoutePattern::parse(r)
                    .map_err(|e| {
                        self.problems
                            .push(format!("{at} tool.berth.public_routes: {e}"))
                    })
                    .ok()
            })
            .collect::<Vec<_>>();
        if auth == Auth::None && !public_routes.is_empty() {
            self.problems.push(format!(
                "{at} tool.berth.public_routes only means something with `auth = \"jwt\"`"
            ));
        }
        if auth == Auth::Jwt && !jwt_secret {
            self.problems.push(format!(
            "{at} tool.berth.auth = \"jwt\" needs the key to verify tokens with: set `jwt_secret = \"{{{{ jwt_secret }}}}\"` under [application.tool.berth]"
        ));
        }
        let migrations = match migrations {
            Some(dir_setting) => {
                let path = self.dir.join(dir_setting);
                if !path.is_dir() {
                    self.problems.push(format!(
                        "{at} tool.berth.migrations: {} is not a folder",
                        path.display()
                    ));
                }
                Some(path)
            }
            None => Some(self.dir.join("migrations").join(id)).filter(|p| p.is_dir()),
        };
        if migrations.is_some() && c.sqlite_databases.len() != 1 {
            self.problems.push(format!(
            "{at} has migrations but {} sqlite databases: migrations need exactly one `sqlite_databases` label to run against",
            c.sqlite_databases.len()
        ));
        }
        let messaging = self.messaging(
            &at,
            id,
            publishes,
            subscriptions,
            consumer_group,
            max_delivery_attempts,
        );
        if messaging.is_used() && c.sqlite_databases.is_empty() {
            self.problems.push(format!(
                "{at} publishes or subscribes to events, which needs a database for its outbox and inbox: add `sqlite_databases = [\"{id}\"]`"
            ));
        }
        let route_concurrency = route_concurrency
            .iter()
            .enumerate()
            .map(|(i, share)| {
                let at = format!("{at} tool.berth.route_concurrency #{}", i + 1);
                if share.max_concurrency == 0 || share.max_concurrency > max_concurrency {
                    self.problems.push(format!(
                        "{at}: max_concurrency = {} must be 1 to the component's max_concurrency ({max_concurrency})",
                        share.max_concurrency
                    ));
                }
                if share.routes.is_empty() {
                    self.problems.push(format!("{at}: name the routes it applies to"));
                }
                let routes: Vec<RoutePattern> = share
                    .routes
                    .iter()
                    .filter_map(|r| {
                        RoutePattern::parse(r)
                            .map_err(|e| self.problems.push(format!("{at}: {e}")))
                            .ok()
                    })
                    .collect();
                (routes, share.max_concurrency)
            })
            .collect();
        let build = c.build.clone();
        if let Some(b) = &build
            && b.command.as_slice().iter().all(|c| c.trim().is_empty())
        {
            self.problems.push(format!("{at} build.command is empty"));
        }
        ComponentConfig {
            id: id.to_owned(),
            source,
            allowed_outbound_hosts,
            sqlite_databases: c.sqlite_databases.clone(),
            key_value_stores: c.key_value_stores.clone(),
            environment: c.environment.clone().into_iter().collect(),
            variables,
            build,
            limits: Limits {
                memory_bytes: usize::try_from(memory_limit_mb * 1024 * 1024).unwrap_or(usize::MAX),
                timeout: std::time::Duration::from_millis(timeout_ms),
                max_concurrency,
                max_response_bytes: max_response_bytes.unwrap_or(berth::DEFAULT_MAX_RESPONSE_BYTES),
            },
            auth,
            public_routes,
            migrations,
            messaging,
            serves_http: false,
            route_concurrency,
        }
    }

    fn messaging(
        &mut self,
        at: &str,
        id: &str,
        publishes: Vec<String>,
        subscriptions: Vec<String>,
        consumer_group: Option<String>,
        max_delivery_attempts: Option<u32>,
    ) -> Messaging {
        for (key, patterns) in [("publishes", &publishes), ("subscriptions", &subscriptions)] {
            for pattern in patterns {
                if let Err(e) = subject::check(pattern, true) {
                    self.problems.push(format!("{at} tool.berth.{key}: {e}"));
                }
            }
        }
        if let Some(group) = &consumer_group
            && (group.is_empty()
                || !group
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        {
            self.problems.push(format!(
                "{at} tool.berth.consumer_group `{group}`: use letters, digits, `-` and `_`"
            ));
        }
        if consumer_group.is_some() && subscriptions.is_empty() {
            self.problems.push(format!(
                "{at} tool.berth.consumer_group only means something with `subscriptions`"
            ));
        }
        let max_delivery_attempts =
            max_delivery_attempts.unwrap_or(berth::DEFAULT_MAX_DELIVERY_ATTEMPTS);
        if max_delivery_attempts == 0 {
            self.problems.push(format!(
                "{at} tool.berth.max_delivery_attempts must be at least 1"
            ));
        }
        Messaging {
            publishes,
            subscriptions,
            consumer_group: consumer_group.unwrap_or_else(|| id.to_owned()),
            max_delivery_attempts,
        }
    }

    fn routes(&mut self) -> Vec<Route> {
        let mut routes: Vec<Route> = Vec::new();
        for (kind, entries) in &self.m.trigger {
            if kind != "http" {
                self.problems.push(format!(
                "[[trigger.{kind}]] is not supported by berth: it serves `[[trigger.http]]`; events are subscriptions under [component.<id>.tool.berth]"
            ));
                continue;
            }
            for (i, entry) in entries.iter().enumerate() {
                let at = format!("[[trigger.http]] #{}", i + 1);
                let trigger: HttpTrigger = match entry.clone().try_into() {
                    Ok(t) => t,
                    Err(e) => {
                        self.problems.push(format!("{at}: {}", toml_message(&e)));
                        continue;
                    }
                };
                if trigger.static_response.is_some() {
                    self.problems.push(format!(
                        "{at}: static_response is not supported by berth; serve it from a component"
                    ));
                    continue;
                }
                if !trigger.components.is_empty() {
                    self.problems.push(format!(
                        "{at}: `components` (middleware) is not supported by berth"
                    ));
                    continue;
                }
                let Some(component) = trigger.component else {
                    self.problems
                        .push(format!("{at} needs `component = \"<id>\"`"));
                    continue;
                };
                let component = match component {
                    ComponentRef::Id(id) => id,
                    ComponentRef::Inline(_) => {
                        self.problems.push(format!(
                            "{at}: declare the component as [component.<id>] and refer to it by id"
                        ));
                        continue;
                    }
                };
                if !self.m.component.contains_key(&component) {
                    self.problems.push(format!(
                    "{at} routes to component `{component}`, which has no [component.{component}]"
                ));
                }
                if let Some(executor) = &trigger.executor
                    && !matches!(
                        executor.get("type").and_then(|t| t.as_str()),
                        Some("spin" | "http")
                    )
                {
                    self.problems.push(format!(
                        "{at}: only the default `spin` executor is supported (wasi:http components)"
                    ));
                }
                let pattern = match &trigger.route {
                    RouteSpec::Path(p) => match RoutePattern::parse(p) {
                        Ok(p) => p,
                        Err(e) => {
                            self.problems.push(format!("{at}: {e}"));
                            continue;
                        }
                    },
                    RouteSpec::Private(p) if p.private => RoutePattern::private(),
                    RouteSpec::Private(_) => {
                        self.problems.push(format!(
                            "{at}: route = {{ private = false }} means nothing: give a path"
                        ));
                        continue;
                    }
                };
                if let Some(other) = routes
                    .iter()
                    .find(|r| !r.pattern.is_private() && r.pattern == pattern)
                {
                    self.problems.push(format!(
                        "{at}: route `{pattern}` of `{component}` is already routed to `{}`",
                        other.component
                    ));
                }
                routes.push(Route { pattern, component });
            }
        }

        routes
    }
}

/// Removes `.` and `..` without touching the file system, so paths print the way a user
/// would write them.
pub fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

fn toml_message(e: &toml::de::Error) -> String {
    e.message().to_owned()
}

/// Spin's id rule: words of ASCII letters and digits, each starting with a letter and
/// either all lowercase or all uppercase, joined by `sep`.
fn is_id(s: &str, sep: char, lowercase_only: bool) -> bool {
    !s.is_empty()
        && s.split(sep).all(|word| {
            let mut letters = word.chars().filter(|c| c.is_ascii_alphabetic());
            word.starts_with(|c: char| c.is_ascii_alphabetic())
                && word.chars().all(|c| c.is_ascii_alphanumeric())
                && (letters.clone().all(|c| c.is_ascii_lowercase())
                    || (!lowercase_only && letters.all(|c| c.is_ascii_uppercase())))
        })
}

/// Component ids are kebab-case (`order`, `payment-provider`).
fn is_component_id(s: &str) -> bool {
    is_id(s, '-', false)
}

/// Variable names are lower snake_case (`jwt_secret`).
pub fn is_variable_name(s: &str) -> bool {
    is_id(s, '_', true)
}

/// Database and store labels are kebab-case or snake_case.
fn is_label(s: &str) -> bool {
    is_id(s, '-', false) || is_id(s, '_', false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(manifest: &str) -> Result<App, ConfigError> {
        App::parse(Path::new("/app/spin.toml"), manifest)
    }

    fn problems(manifest: &str) -> String {
        match parse(manifest) {
            Ok(_) => panic!("accepted:\n{manifest}"),
            Err(e) => e.to_string(),
        }
    }

    const HEADER: &str = "spin_manifest_version = 2\n[application]\nname = \"t\"\n";

    #[test]
    fn a_full_manifest_parses_with_defaults_filled_in() {
        let app = parse(&format!(
            r#"{HEADER}
            [application.trigger.http]
            base = "/"
            [application.tool.berth]
            jwt_secret = "{{{{ key }}}}"
            jwt_issuer = "shop"
            [application.tool.berth.connections]
            max_connections = 500
            body_timeout_ms = 1500
            [[application.tool.berth.rate_limits]]
            routes = ["/api/login"]
            limit_by = "json:email"
            minute = 5
            [application.tool.berth.cors]
            allow_origins = ["https://shop.example"]
            [application.tool.other-tool]
            anything = 1
            [variables]
            key = {{ required = true, secret = true }}
            [[trigger.http]]
            route = "/api/..."
            component = "api"
            [[trigger.http]]
            route = {{ private = true }}
            component = "worker"
            executor = {{ type = "http" }}
            [component.api]
            source = "api.wasm"
            sqlite_databases = ["api_db"]
            environment = {{ MODE = "test" }}
            variables = {{ secret = "{{{{ key }}}}" }}
            allowed_outbound_hosts = ["https://example.com"]
            [component.api.build]
            command = ["make a", "make b"]
            workdir = "api"
            [component.api.tool.berth]
            auth = "jwt"
            public_routes = ["/api/health"]
            timeout_ms = 250
            [[component.api.tool.berth.route_concurrency]]
            routes = ["/api/login"]
            max_concurrency = 2
            [component.worker]
            source = "../worker/worker.wasm"
            "#
        ))
        .unwrap();
        assert_eq!(app.routes.len(), 2);
        assert!(app.routes[1].pattern.is_private());
        let api = &app.components["api"];
        assert_eq!(api.source, Path::new("/app/api.wasm"));
        assert_eq!(
            app.components["worker"].source,
            Path::new("/worker/worker.wasm")
        );
        assert_eq!(api.environment, [("MODE".to_owned(), "test".to_owned())]);
        assert_eq!(api.auth, Auth::Jwt);
        assert_eq!(api.limits.timeout, std::time::Duration::from_millis(250));
        assert_eq!(api.limits.memory_bytes, 128 << 20);
        assert_eq!(api.limits.max_concurrency, berth::DEFAULT_MAX_CONCURRENCY);
        assert_eq!(api.build.as_ref().unwrap().command.as_slice().len(), 2);
        assert_eq!(app.max_request_bytes, 1 << 20);
        assert!(app.jwt_secret.is_some() && app.jwt_issuer.is_some());
        assert_eq!(app.connections.max_connections, 500);
        assert_eq!(
            app.connections.body_timeout,
            std::time::Duration::from_millis(1500)
        );
        assert_eq!(
            app.connections.idle_timeout,
            ConnectionLimits::default().idle_timeout
        );
        assert_eq!(app.rate_limits.len(), 1);
        assert!(app.cors.is_some());
        assert_eq!(api.route_concurrency.len(), 1);
        assert_eq!(api.route_concurrency[0].1, 2);
    }

    #[test]
    fn gateway_settings_out_of_range_are_named() {
        let err = problems(&format!(
            r#"{HEADER}
            [application.tool.berth]
            jwt_secret = "static-secret-of-enough-bytes"
            [application.tool.berth.connections]
            idle_timeout_ms = 0
            max_header_bytes = 1024
            [[application.tool.berth.rate_limits]]
            limit_by = "cookie"
            second = 1
            [application.tool.berth.cors]
            allow_origins = ["*"]
            allow_credentials = true
            [component.a]
            source = "a.wasm"
            [component.a.tool.berth]
            max_concurrency = 4
            [[component.a.tool.berth.route_concurrency]]
            routes = ["/a"]
            max_concurrency = 5
            "#
        ));
        for expected in [
            "jwt_secret needs jwt_issuer",
            "idle_timeout_ms = 0",
            "max_header_bytes = 1024",
            "rate_limits]] #1: limit_by = \"cookie\"",
            "browsers refuse it",
            "route_concurrency #1: max_concurrency = 5",
        ] {
            assert!(err.contains(expected), "missing `{expected}` in:\n{err}");
        }
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = problems(&format!(
            "{HEADER}[component.a]\nsource = \"a.wasm\"\nsqlite_database = []\n"
        ));
        assert!(
            err.contains("/app/spin.toml") && err.contains("unknown field `sqlite_database`"),
            "{err}"
        );
        let err = problems(&format!(
            "{HEADER}[component.a]\nsource = \"a.wasm\"\n[component.a.tool.berth]\nmemory_mb = 1\n"
        ));
        assert!(
            err.contains("tool.berth") && err.contains("memory_mb"),
            "{err}"
        );
    }

    #[test]
    fn a_label_shared_by_two_components_is_refused_with_both_names() {
        let err = problems(&format!(
            "{HEADER}[component.a]\nsource = \"a.wasm\"\nsqlite_databases = [\"db\"]\n\
             [component.b]\nsource = \"b.wasm\"\nsqlite_databases = [\"db\"]\n"
        ));
        assert!(
            err.contains("sqlite_databases label `db` is granted to both `a` and `b`"),
            "{err}"
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = problems(&format!(
            r#"{HEADER}
            [variables]
            both = {{ default = "x", required = true }}
            neither = {{}}
            [[trigger.http]]
            route = "no-slash"
            component = "a"
            [[trigger.http]]
            route = "/x"
            component = "ghost"
            [component.a]
            source = "a.wasm"
            variables = {{ v = "{{{{ undeclared }}}}" }}
            [component.a.tool.berth]
            auth = "jwt"
            memory_limit_mb = 0
            "#
        ));
        for expected in [
            "has both `default` and `required = true`",
            "needs `default = \"…\"` or `required = true`",
            "must start with `/`",
            "component `ghost`, which has no [component.ghost]",
            "`{{ undeclared }}`, which is not declared in [variables]",
            "auth = \"jwt\" needs the key",
            "memory_limit_mb = 0",
        ] {
            assert!(err.contains(expected), "missing `{expected}` in:\n{err}");
        }
        assert!(err.contains("7 problems"), "{err}");
    }

    #[test]
    fn duplicate_routes_and_spin_only_features_are_refused() {
        let err = problems(&format!(
            "{HEADER}[[trigger.http]]\nroute = \"/a\"\ncomponent = \"c\"\n\
             [[trigger.http]]\nroute = \"/a/\"\ncomponent = \"c\"\n\
             [[trigger.redis]]\nchannel = \"x\"\ncomponent = \"c\"\n\
             [component.c]\nsource = {{ url = \"https://x/c.wasm\", digest = \"sha256:0\" }}\nfiles = [\"static/**\"]\n"
        ));
        for expected in [
            "already routed",
            "[[trigger.redis]] is not supported",
            "local files",
            "no file system",
        ] {
            assert!(err.contains(expected), "missing `{expected}` in:\n{err}");
        }
    }

    #[test]
    fn only_manifest_version_two_is_read() {
        let err = problems("spin_manifest_version = 1\n[application]\nname = \"t\"\n");
        assert!(err.contains("manifest version 2"), "{err}");
    }

    #[test]
    fn runtime_config_reads_spin_sections_and_refuses_unknown_ones() {
        let ok: RuntimeConfig = toml::from_str(
            r#"
            [sqlite_database.db]
            type = "spin"
            path = "data/db.sqlite"
            [key_value_store.cache]
            type = "memory"
            [[variables_provider]]
            type = "env"
            prefix = "SHOP"
            "#,
        )
        .unwrap();
        assert_eq!(ok.sqlite_database.len(), 1);
        assert_eq!(ok.variables_provider.len(), 1);
        for bad in [
            "[sqlite_database.db]\ntype = \"libsql\"\n",
            "[sqlite_database.db]\ntype = \"spin\"\npth = \"x\"\n",
            "[llm_compute]\ntype = \"spin\"\n",
        ] {
            assert!(toml::from_str::<RuntimeConfig>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths_are_normalized_for_display() {
        assert_eq!(normalize(Path::new("/a/b/../c/./d")), Path::new("/a/c/d"));
        assert_eq!(normalize(Path::new("../x")), Path::new("../x"));
    }

    #[test]
    fn ids_follow_spin_rules() {
        for ok in ["order", "payment-provider", "API-v2", "a1"] {
            assert!(is_component_id(ok), "{ok}");
        }
        for bad in ["", "Order", "api-2", "a--b", "a_b", "-a", "a-"] {
            assert!(!is_component_id(bad), "{bad}");
        }
        for ok in ["jwt_secret", "a1_b"] {
            assert!(is_variable_name(ok), "{ok}");
        }
        for bad in ["JWT", "a__b", "_a", "a-b", "1a"] {
            assert!(!is_variable_name(bad), "{bad}");
        }
        assert!(is_label("users") && is_label("user_db") && is_label("user-db"));
        assert!(!is_label("user db") && !is_label("user-db_x"));
    }
}
