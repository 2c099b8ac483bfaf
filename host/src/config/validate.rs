//! Checking a manifest: every problem found, not just the first, each naming the table and
//! key to change. What passes becomes an [`App`] with berth's defaults filled in.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::berth::{self, Auth, ComponentSettings, RouteSubscription, SubscriptionSettings};
use super::manifest::{self, ComponentRef, HttpTrigger, Manifest, RouteSpec, Source};
use super::{
    App, ComponentConfig, ConnectionLimits, Limits, Messaging, OutboundHosts, ResponseHeaders,
    Reuse, Route, Subscription, Template,
};
use crate::capabilities::messaging::subject;
use crate::triggers::http::cors::Cors;
use crate::triggers::http::rate_limit;
use crate::triggers::http::router::RoutePattern;

pub(super) fn validate(
    m: Manifest,
    manifest_path: &Path,
    dir: PathBuf,
    problems: &mut Vec<String>,
) -> App {
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
    let response_headers = check.response_headers();
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
    for c in components.values() {
        for path in c.messaging.event_routes() {
            let own = routes.iter().filter(|r| r.component == c.id);
            let reached = own
                .clone()
                .any(|r| r.pattern.is_private() || r.pattern.matches(path).is_some());
            if !reached {
                check.problems.push(format!(
                    "[component.{}] tool.berth.subscriptions: route `{path}` is not under any [[trigger.http]] route of `{}`; a broker on Spin must reach it, so give it a path its trigger route covers",
                    c.id, c.id
                ));
            }
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
        response_headers,
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
    /// `instance_reuse` and `instance_reuse_memory_mb`: `None` for a fresh instance per
    /// request, the default.
    fn reuse(
        &mut self,
        at: &str,
        requests: Option<u32>,
        memory_mb: Option<u64>,
        memory_limit_mb: u64,
    ) -> Option<Reuse> {
        let requests = requests.unwrap_or(1);
        if requests == 0 || requests > berth::MAX_INSTANCE_REUSE {
            self.problems.push(format!(
                "{at} tool.berth.instance_reuse = {requests}: use 1 (a fresh instance per request) to {}",
                berth::MAX_INSTANCE_REUSE
            ));
            return None;
        }
        if requests == 1 {
            if let Some(mb) = memory_mb {
                self.problems.push(format!(
                    "{at} tool.berth.instance_reuse_memory_mb = {mb} needs instance_reuse of 2 or more: without reuse every request gets a fresh instance"
                ));
            }
            return None;
        }
        let memory_mb = memory_mb.unwrap_or((memory_limit_mb / 2).max(1));
        if memory_mb == 0 || memory_mb > memory_limit_mb {
            self.problems.push(format!(
                "{at} tool.berth.instance_reuse_memory_mb = {memory_mb}: use 1 to memory_limit_mb ({memory_limit_mb})"
            ));
            return None;
        }
        Some(Reuse {
            requests,
            memory_bytes: usize::try_from(memory_mb << 20).unwrap_or(usize::MAX),
        })
    }

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

    fn response_headers(&mut self) -> ResponseHeaders {
        let Some(names) = &self.m.application.tool.berth.response_headers else {
            return ResponseHeaders::default();
        };
        ResponseHeaders::from_names(names).unwrap_or_else(|e| {
            self.problems
                .push(format!("[application.tool.berth] response_headers: {e}"));
            ResponseHeaders::default()
        })
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
        let mut allowed_outbound_hosts = OutboundHosts::default();
        for entry in &c.allowed_outbound_hosts {
            let added = if entry.contains("{{") {
                Template::parse(entry).map(|t| {
                    self.known_variables(&t, &format!("{at} allowed_outbound_hosts"));
                    allowed_outbound_hosts.templated.push(t);
                })
            } else {
                allowed_outbound_hosts.fixed.add(entry)
            };
            if let Err(e) = added {
                self.problems
                    .push(format!("{at} allowed_outbound_hosts: {e}"));
            }
        }
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
            instance_reuse,
            instance_reuse_memory_mb,
            auth,
            public_routes,
            migrations,
            publishes,
            subscriptions,
            consumer_group,
            max_delivery_attempts,
            route_concurrency,
            calls,
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
        let reuse = self.reuse(
            &at,
            instance_reuse,
            instance_reuse_memory_mb,
            memory_limit_mb,
        );
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
        let calls = self.calls(&at, calls);
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
            refuse_ungranted_imports: self.m.application.tool.berth.refuse_ungranted_imports,
            environment: c.environment.clone().into_iter().collect(),
            variables,
            build,
            limits: Limits {
                memory_bytes: usize::try_from(memory_limit_mb * 1024 * 1024).unwrap_or(usize::MAX),
                timeout: std::time::Duration::from_millis(timeout_ms),
                max_concurrency,
                max_response_bytes: max_response_bytes.unwrap_or(berth::DEFAULT_MAX_RESPONSE_BYTES),
                reuse,
            },
            auth,
            public_routes,
            migrations,
            messaging,
            serves_http: false,
            route_concurrency,
            calls,
        }
    }

    /// `tool.berth.calls`: each destination a bare host, each policy sound.
    fn calls(
        &mut self,
        at: &str,
        calls: BTreeMap<String, crate::mesh::CallSettings>,
    ) -> Vec<(String, crate::mesh::Policy)> {
        let mut policies = Vec::new();
        for (host, settings) in calls {
            let at = format!("{at} tool.berth.calls.\"{host}\"");
            let bare = !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
            if !bare {
                self.problems.push(format!(
                    "{at}: name a host alone, like \"api.example.com\" or \"payment-provider.spin.internal\" (no scheme, port or path)"
                ));
                continue;
            }
            match settings.policy() {
                Ok(policy) => policies.push((host.to_ascii_lowercase(), policy)),
                Err(problems) => self
                    .problems
                    .extend(problems.into_iter().map(|p| format!("{at} {p}"))),
            }
        }
        policies
    }

    fn messaging(
        &mut self,
        at: &str,
        id: &str,
        publishes: Vec<String>,
        subscriptions: Vec<SubscriptionSettings>,
        consumer_group: Option<String>,
        max_delivery_attempts: Option<u32>,
    ) -> Messaging {
        for pattern in &publishes {
            if let Err(e) = subject::check(pattern, true) {
                self.problems
                    .push(format!("{at} tool.berth.publishes: {e}"));
            }
        }
        let subscriptions: Vec<Subscription> = subscriptions
            .into_iter()
            .map(|s| match s {
                SubscriptionSettings::Handler(pattern) => Subscription {
                    events: vec![pattern],
                    route: None,
                },
                SubscriptionSettings::Route(RouteSubscription { events, route }) => {
                    if events.is_empty() {
                        self.problems.push(format!(
                            "{at} tool.berth.subscriptions: the subscription to `{route}` names no events"
                        ));
                    }
                    if let Err(e) = event_route(&route) {
                        self.problems
                            .push(format!("{at} tool.berth.subscriptions: `{route}`: {e}"));
                    }
                    Subscription {
                        events,
                        route: Some(route),
                    }
                }
            })
            .collect();
        for pattern in subscriptions.iter().flat_map(|s| &s.events) {
            if let Err(e) = subject::check(pattern, true) {
                self.problems
                    .push(format!("{at} tool.berth.subscriptions: {e}"));
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
pub(super) fn is_component_id(s: &str) -> bool {
    is_id(s, '-', false)
}

/// Variable names are lower snake_case (`jwt_secret`).
pub fn is_variable_name(s: &str) -> bool {
    is_id(s, '_', true)
}

/// Database and store labels are kebab-case or snake_case.
pub(super) fn is_label(s: &str) -> bool {
    is_id(s, '-', false) || is_id(s, '_', false)
}

/// A path events are delivered to: one exact path, spelled as the gateway would leave it,
/// so that the public listener can refuse it whatever the spelling a client tries.
fn event_route(route: &str) -> Result<(), String> {
    let Some(rest) = route.strip_prefix('/') else {
        return Err("an event route is a path starting with `/`".into());
    };
    if rest.is_empty() {
        return Err("the root cannot be an event route; give it a path of its own".into());
    }
    if route.ends_with("/...") || route.contains(['*', '?', '#', '%', '{', '}']) {
        return Err("an event route is one exact path, without wildcards, `%`, `?` or `#`".into());
    }
    if rest
        .split('/')
        .any(|segment| matches!(segment, "" | "." | ".."))
    {
        return Err("an event route has no empty, `.` or `..` segments".into());
    }
    Ok(())
}
