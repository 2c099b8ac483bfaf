//! Configuration: the Spin manifest and runtime config, read, checked and resolved once at
//! load into an [`App`], so nothing on the request path parses or validates configuration.

pub mod berth;
pub mod manifest;
pub mod runtime_config;
mod template;
mod validate;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::capabilities::http_outbound::AllowedHosts;
use crate::triggers::http::cors::Cors;
use crate::triggers::http::rate_limit;
use crate::triggers::http::router::RoutePattern;
use berth::Auth;
use manifest::Manifest;

pub use manifest::{AppVariable, Build};
pub use runtime_config::RuntimeConfig;
pub use template::Template;
pub use validate::{is_variable_name, normalize};

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
    pub response_headers: ResponseHeaders,
    pub connections: ConnectionLimits,
    pub rate_limits: Vec<rate_limit::Policy>,
    pub cors: Option<Cors>,
}

/// Which of berth's own headers every response carries (`response_headers`). All of them
/// by default; a client that expects exactly the app's headers, as Spin sends them, turns
/// them off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHeaders {
    pub request_id: bool,
    pub traceparent: bool,
    pub version: bool,
}

impl ResponseHeaders {
    pub const NAMES: [&str; 3] = ["x-request-id", "traceparent", "x-berth-version"];

    /// From the names listed; an unknown name is an error naming the known ones.
    pub fn from_names(names: &[String]) -> Result<ResponseHeaders, String> {
        let mut chosen = ResponseHeaders {
            request_id: false,
            traceparent: false,
            version: false,
        };
        for name in names {
            match name.to_ascii_lowercase().as_str() {
                "x-request-id" => chosen.request_id = true,
                "traceparent" => chosen.traceparent = true,
                "x-berth-version" => chosen.version = true,
                _ => {
                    return Err(format!(
                        "`{name}` is not one of berth's headers; choose from {}",
                        Self::NAMES.join(", ")
                    ));
                }
            }
        }
        Ok(chosen)
    }
}

impl Default for ResponseHeaders {
    fn default() -> ResponseHeaders {
        ResponseHeaders {
            request_id: true,
            traceparent: true,
            version: true,
        }
    }
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

/// `allowed_outbound_hosts`: the entries written out, checked when the manifest is read, and
/// those that name variables (`"https://{{ api_host }}"`), which Spin resolves from the
/// application's variables when the app loads, and berth too.
#[derive(Debug, Clone, Default)]
pub struct OutboundHosts {
    pub fixed: AllowedHosts,
    pub templated: Vec<Template>,
}

impl OutboundHosts {
    pub fn is_empty(&self) -> bool {
        self.fixed.is_empty() && self.templated.is_empty()
    }

    /// The hosts with `render`'s variable values filled in. As in Spin, an entry that renders
    /// empty (or to a bare `http://` or `https://`) is left out: an optional endpoint whose
    /// variable is unset.
    pub fn resolve(&self, render: impl Fn(&Template) -> String) -> Result<AllowedHosts, String> {
        let mut hosts = self.fixed.clone();
        for template in &self.templated {
            let entry = render(template);
            if matches!(entry.trim(), "" | "http://" | "https://") {
                continue;
            }
            hosts
                .add(&entry)
                .map_err(|e| format!("`{template}` is `{entry}` with its variables: {e}"))?;
        }
        Ok(hosts)
    }
}

#[derive(Debug, Clone)]
pub struct ComponentConfig {
    pub id: String,
    pub source: PathBuf,
    pub allowed_outbound_hosts: OutboundHosts,
    pub sqlite_databases: Vec<String>,
    pub key_value_stores: Vec<String>,
    /// `[application.tool.berth] refuse_ungranted_imports`: an import the grants do not
    /// open stops the load, instead of having its calls denied.
    pub refuse_ungranted_imports: bool,
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
    /// The policies of its calls, by destination host (lower-case).
    pub calls: Vec<(String, crate::mesh::Policy)>,
}

/// A component's part in the events between components.
#[derive(Debug, Clone, Default)]
pub struct Messaging {
    /// Subject patterns it may publish to.
    pub publishes: Vec<String>,
    /// What is delivered to it, and where.
    pub subscriptions: Vec<Subscription>,
    pub consumer_group: String,
    pub max_delivery_attempts: u32,
}

/// Events of some types, delivered to one place in a component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Subject (event type) patterns, NATS wildcards.
    pub events: Vec<String>,
    /// The path its HTTP handler receives them on as CloudEvents (binary mode); `None` for
    /// the `wasmcloud:messaging/handler` export.
    pub route: Option<String>,
}

impl Messaging {
    /// Publishers and subscribers keep an outbox and an inbox in their first database.
    pub fn is_used(&self) -> bool {
        !self.publishes.is_empty() || !self.subscriptions.is_empty()
    }

    /// Every pattern its consumer group takes from the bus.
    pub fn patterns(&self) -> Vec<String> {
        self.subscriptions
            .iter()
            .flat_map(|s| s.events.iter().cloned())
            .collect()
    }

    /// The patterns delivered to its `wasmcloud:messaging/handler` export.
    pub fn handler_patterns(&self) -> Vec<String> {
        self.subscriptions
            .iter()
            .filter(|s| s.route.is_none())
            .flat_map(|s| s.events.iter().cloned())
            .collect()
    }

    /// The paths events are delivered to over HTTP, which the public listener never serves.
    pub fn event_routes(&self) -> impl Iterator<Item = &str> {
        self.subscriptions.iter().filter_map(|s| s.route.as_deref())
    }
}

/// The sandbox of one component, from `[component.<id>.tool.berth]`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub memory_bytes: usize,
    pub timeout: std::time::Duration,
    pub max_concurrency: u32,
    pub max_response_bytes: u64,
    /// Present when the component opted in to serving requests from kept instances.
    pub reuse: Option<Reuse>,
}

/// `instance_reuse` and its memory bound, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reuse {
    /// Requests one instance serves, 2 or more.
    pub requests: u32,
    /// An instance whose linear memory has grown past this is not kept.
    pub memory_bytes: usize,
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
        let app = validate::validate(manifest, manifest_path, dir, &mut problems);
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

#[cfg(test)]
mod tests {
    use super::validate::{is_component_id, is_label};
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
    fn response_headers_name_which_of_berths_headers_are_sent() {
        let app = |list: &str| {
            parse(&format!(
                "{HEADER}[application.tool.berth]\nresponse_headers = {list}\n"
            ))
        };
        let none = app("[]").unwrap().response_headers;
        assert!(!none.request_id && !none.traceparent && !none.version);
        let only_trace = app(r#"["traceparent"]"#).unwrap().response_headers;
        assert_eq!(
            only_trace,
            ResponseHeaders {
                request_id: false,
                traceparent: true,
                version: false
            }
        );
        let err = app(r#"["server"]"#).unwrap_err().to_string();
        assert!(
            err.contains("`server` is not one of berth's headers")
                && err.contains("x-berth-version"),
            "{err}"
        );
    }

    #[test]
    fn templated_outbound_hosts_are_filled_in_from_variables_at_load() {
        let app = parse(&format!(
            r#"{HEADER}
            [variables]
            api_host = {{ default = "api.example.com" }}
            optional = {{ default = "" }}
            [[trigger.http]]
            route = "/..."
            component = "c"
            [component.c]
            source = "c.wasm"
            allowed_outbound_hosts = ["https://fixed.example.com", "https://{{{{ api_host }}}}", "{{{{ optional }}}}", "https://{{{{ optional }}}}"]
            "#
        ))
        .unwrap();
        let hosts = &app.components["c"].allowed_outbound_hosts;
        assert_eq!(hosts.templated.len(), 3);
        let values = |name: &str| match name {
            "api_host" => "api.example.com",
            _ => "",
        };
        let resolved = hosts.resolve(|t| t.render(values)).unwrap();
        assert!(resolved.allows("https", "fixed.example.com", 443));
        assert!(resolved.allows("https", "api.example.com", 443));
        assert!(
            !resolved.allows("https", "other.example.com", 443),
            "an empty variable leaves its entry out, it does not widen the list"
        );

        let bad = hosts
            .resolve(|t| t.render(|_| "example.com/path"))
            .unwrap_err();
        assert!(
            bad.contains("{{ api_host }}") && bad.contains("without a path"),
            "{bad}"
        );

        let undeclared = problems(&format!(
            r#"{HEADER}
            [[trigger.http]]
            route = "/..."
            component = "c"
            [component.c]
            source = "c.wasm"
            allowed_outbound_hosts = ["https://{{{{ nowhere }}}}"]
            "#
        ));
        assert!(
            undeclared.contains("allowed_outbound_hosts")
                && undeclared.contains("not declared in [variables]"),
            "{undeclared}"
        );
    }

    #[test]
    fn instance_reuse_is_off_by_default_and_bounded_when_on() {
        let component = |settings: &str| {
            format!(
                "{HEADER}[component.c]\nsource = \"c.wasm\"\n[component.c.tool.berth]\n{settings}\n"
            )
        };
        let limits = |settings: &str| parse(&component(settings)).unwrap().components["c"].limits;
        assert_eq!(limits("").reuse, None);
        assert_eq!(limits("instance_reuse = 1").reuse, None);
        assert_eq!(
            limits("instance_reuse = 50\nmemory_limit_mb = 64").reuse,
            Some(Reuse {
                requests: 50,
                memory_bytes: 32 << 20
            }),
            "the memory bound defaults to half the limit"
        );
        assert_eq!(
            limits("instance_reuse = 2\ninstance_reuse_memory_mb = 8")
                .reuse
                .map(|r| r.memory_bytes),
            Some(8 << 20)
        );
        for (settings, expected) in [
            ("instance_reuse = 0", "instance_reuse = 0: use 1"),
            ("instance_reuse = 100001", "instance_reuse = 100001: use 1"),
            (
                "instance_reuse_memory_mb = 4",
                "needs instance_reuse of 2 or more",
            ),
            (
                "instance_reuse = 9\ninstance_reuse_memory_mb = 200",
                "instance_reuse_memory_mb = 200: use 1 to memory_limit_mb (128)",
            ),
            (
                "instance_reuse = 9\ninstance_reuse_memory_mb = 0",
                "instance_reuse_memory_mb = 0",
            ),
        ] {
            let err = problems(&component(settings));
            assert!(err.contains(expected), "`{settings}`: {err}");
        }
    }

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

    #[test]
    fn subscriptions_go_to_a_route_under_the_components_own_or_to_its_handler() {
        let order = |subscriptions: &str| {
            format!(
                r#"{HEADER}
                [[trigger.http]]
                route = "/orders/..."
                component = "order"
                [component.order]
                source = "o.wasm"
                sqlite_databases = ["orders"]
                [component.order.tool.berth]
                subscriptions = [{subscriptions}]
                "#
            )
        };
        let app = parse(&order(
            r#"{ events = ["payment.*"], route = "/orders/events" }, "audit.>""#,
        ))
        .unwrap();
        let messaging = &app.components["order"].messaging;
        assert_eq!(messaging.patterns(), ["payment.*", "audit.>"]);
        assert_eq!(messaging.handler_patterns(), ["audit.>"]);
        assert_eq!(
            messaging.event_routes().collect::<Vec<_>>(),
            ["/orders/events"]
        );

        for (route, why) in [
            ("/elsewhere/events", "not under any [[trigger.http]] route"),
            ("orders/events", "starting with `/`"),
            ("/orders/...", "one exact path"),
            ("/orders/%65vents", "one exact path"),
            ("/orders//events", "no empty"),
            ("/orders/../events", "no empty"),
            ("/", "the root"),
        ] {
            let error = problems(&order(&format!(
                r#"{{ events = ["payment.*"], route = "{route}" }}"#
            )));
            assert!(error.contains(why), "{route}: {error}");
        }
        let error = problems(&order(
            r#"{ event = ["payment.*"], path = "/orders/events" }"#,
        ));
        assert!(error.contains("a subject pattern"), "{error}");
    }
}
