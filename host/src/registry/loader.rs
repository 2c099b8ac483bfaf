//! Loading a component version: bytes → checked → compiled (or read from the artifact
//! cache) → linked and pre-instantiated → its migrations applied → a [`Version`] ready to be
//! published. Every step that can fail does so here, before any request sees the version.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use wasmtime::component::Linker;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use super::Version;
use super::grants::{Granted, ungranted};
use crate::bindings::SubscriberPre;
use crate::capabilities::messaging::{Messaging, outbox};
use crate::capabilities::sql::migrate::MigrationError;
use crate::capabilities::{key_value, sql, variables};
use crate::componentize;
use crate::config::ComponentConfig;
use crate::engine::Engine;
use crate::state::InvocationState;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "cannot read {path}: {source}; build it with `berth build` (or start with `berth up --build`)"
    )]
    Missing {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("it is neither a WebAssembly component nor a core module")]
    NotAComponent,
    #[error("it does not compile: {0:#}")]
    Compile(anyhow::Error),
    #[error("it {}", .0.join("; it "))]
    Ungranted(Vec<String>),
    #[error("it is a core module that cannot be made a component: {0}")]
    Componentize(componentize::Error),
    #[error("it cannot serve HTTP: {0}")]
    WrongWorld(String),
    #[error("it cannot receive events: {0}")]
    NotASubscriber(String),
    #[error("its outbox and inbox tables cannot be created: {0}")]
    Outbox(sql::SqlError),
    #[error("its allowed_outbound_hosts, with the variables filled in: {0}")]
    OutboundHosts(String),
    #[error("it cannot be linked: {0:#}")]
    Link(anyhow::Error),
    #[error("{0}")]
    Migration(#[from] MigrationError),
}

/// A compiled, checked, pre-instantiated component, not yet attached to any data.
pub struct Prepared {
    pub digest: String,
    /// Every interface the component imports, for `berth check` to show.
    pub imports: Vec<String>,
    /// Imports linked but not granted: every call through them is denied. Logged when the
    /// version loads and listed by `berth check`.
    pub denied: Vec<String>,
    pub http: Option<ProxyPre<InvocationState>>,
    pub handler: Option<SubscriberPre<InvocationState>>,
    pub from_cache: bool,
    pub compile_time: Duration,
}

/// Reads the file named by `source` in the manifest.
pub fn read_source(config: &ComponentConfig) -> Result<bytes::Bytes, LoadError> {
    std::fs::read(&config.source)
        .map(bytes::Bytes::from)
        .map_err(|source| LoadError::Missing {
            path: config.source.clone(),
            source,
        })
}

/// Everything that needs only the bytes and the manifest: what `berth check` runs.
pub async fn prepare(
    engine: &Engine,
    linker: &Linker<InvocationState>,
    config: &ComponentConfig,
    wasm: bytes::Bytes,
) -> Result<Prepared, LoadError> {
    use wasmtime::wasmparser::Parser;
    if !Parser::is_component(&wasm) && !Parser::is_core_wasm(&wasm) {
        return Err(LoadError::NotAComponent);
    }
    let compiled =
        engine
            .compile(wasm)
            .await
            .map_err(|e| match e.downcast::<componentize::Error>() {
                Ok(module) => LoadError::Componentize(module),
                Err(e) => LoadError::Compile(e),
            })?;
    let ty = compiled.component.component_type();
    let imports: Vec<String> = ty
        .imports(engine.wasmtime())
        .map(|(name, _)| name.to_owned())
        .collect();
    let mut found = ungranted(
        imports.iter().map(String::as_str),
        &Granted {
            allowed_outbound_hosts: !config.allowed_outbound_hosts.is_empty(),
            sqlite_databases: !config.sqlite_databases.is_empty(),
            key_value_stores: !config.key_value_stores.is_empty(),
            publishes: !config.messaging.publishes.is_empty(),
            id: &config.id,
        },
    );
    if config.refuse_ungranted_imports {
        found.refused.append(&mut found.denied);
    }
    if !found.refused.is_empty() {
        return Err(LoadError::Ungranted(found.refused));
    }
    let exports: Vec<String> = ty
        .exports(engine.wasmtime())
        .map(|(name, _)| name.to_owned())
        .collect();
    let exports_named = |prefix: &str| exports.iter().any(|e| e.starts_with(prefix));
    if config.serves_http && !exports_named("wasi:http/incoming-handler@0.2") {
        return Err(LoadError::WrongWorld(format!(
            "a route leads to it, but it exports [{}] and not wasi:http/incoming-handler@0.2.x; write it with spin-sdk's #[http_component]",
            exports.join(", ")
        )));
    }
    let handler_patterns = config.messaging.handler_patterns();
    let subscribes = !handler_patterns.is_empty();
    if subscribes && !exports_named("wasmcloud:messaging/handler@0.2") {
        return Err(LoadError::NotASubscriber(format!(
            "it has subscriptions [{}] for its wasmcloud:messaging handler but exports [{}] and not wasmcloud:messaging/handler@0.2.0; export it (wit-bindgen), or have them delivered to an HTTP route: {{ events = [...], route = \"/…\" }}",
            handler_patterns.join(", "),
            exports.join(", ")
        )));
    }
    let instance_pre = linker
        .instantiate_pre(&compiled.component)
        .map_err(|e| LoadError::Link(e.into()))?;
    let http = if config.serves_http {
        Some(
            ProxyPre::new(instance_pre.clone())
                .map_err(|e| LoadError::WrongWorld(format!("{e:#}")))?,
        )
    } else {
        None
    };
    let handler = if subscribes {
        Some(
            SubscriberPre::new(instance_pre)
                .map_err(|e| LoadError::NotASubscriber(format!("{e:#}")))?,
        )
    } else {
        None
    };
    Ok(Prepared {
        digest: compiled.digest,
        imports,
        denied: found.denied,
        http,
        handler,
        from_cache: compiled.from_cache,
        compile_time: compiled.took,
    })
}

/// The backends of `labels`, out of every backend of the app.
fn grant<T: ?Sized>(labels: &[String], all: &HashMap<String, Arc<T>>) -> HashMap<String, Arc<T>> {
    labels
        .iter()
        .filter_map(|label| Some((label.clone(), all.get(label)?.clone())))
        .collect()
}

/// The app-wide state a version attaches to: its databases, stores and variable values.
pub struct Backends {
    pub databases: HashMap<String, Arc<dyn sql::Database>>,
    pub stores: HashMap<String, Arc<dyn key_value::Store>>,
    pub variables: variables::Resolved,
    pub messaging: Option<Arc<Messaging>>,
}

/// Applies the version's migrations and binds it to its grants.
pub async fn activate(
    prepared: Prepared,
    config: &ComponentConfig,
    backends: &Backends,
) -> Result<Version, LoadError> {
    for import in &prepared.denied {
        tracing::warn!(component = %config.id, "it {import}; until then, every call through it is denied");
    }
    let databases = grant(&config.sqlite_databases, &backends.databases);
    if let (Some(dir), [label]) = (&config.migrations, &config.sqlite_databases[..])
        && let Some(db) = databases.get(label)
    {
        let applied = db.migrate(dir).await?;
        for file in &applied.0 {
            tracing::info!(component = %config.id, database = %label, "applied migration {file}");
        }
    }
    let primary_database = if config.messaging.is_used() {
        let label = config.sqlite_databases.first();
        if let Some(db) = label.and_then(|l| databases.get(l)) {
            outbox::create(db).await.map_err(LoadError::Outbox)?;
        }
        label.cloned()
    } else {
        None
    };
    let allowed_hosts = config
        .allowed_outbound_hosts
        .resolve(|template| backends.variables.render(template))
        .map_err(LoadError::OutboundHosts)?;
    let instances = config
        .limits
        .reuse
        .filter(|_| prepared.http.is_some())
        .map(|reuse| super::reuse::Pool::new(reuse, config.limits.max_concurrency));
    Ok(Version {
        instances,
        digest: prepared.digest,
        loaded_at: SystemTime::now(),
        http: prepared.http,
        handler: prepared.handler,
        databases: Arc::new(databases),
        primary_database,
        publishes: config.messaging.publishes.clone().into(),
        messaging: backends
            .messaging
            .clone()
            .filter(|_| config.messaging.is_used()),
        stores: Arc::new(grant(&config.key_value_stores, &backends.stores)),
        variables: variables::for_component(&config.variables, &backends.variables),
        environment: config.environment.clone().into(),
        allowed_hosts: Arc::new(allowed_hosts),
        limits: config.limits,
    })
}
