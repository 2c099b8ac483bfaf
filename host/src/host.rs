//! The host: the app loaded once (config, backends, variables, every component compiled,
//! checked, pre-instantiated and migrated), then served on a public and an admin listener.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use wasmtime::component::Linker;

use crate::capabilities::messaging::{self, Bus, Messaging};
use crate::capabilities::{key_value, sql, variables};
use crate::config::{App, ComponentConfig, RuntimeConfig};
use crate::control::admin::Admin;
use crate::control::deployments::{Deployments, FleetConfig};
use crate::control::reload::Reloader;
use crate::engine::Engine;
use crate::registry::loader::{self, Backends};
use crate::registry::{Registry, Slot};
use crate::state::InvocationState;
use crate::triggers::events::delivery::Consumer;
use crate::triggers::events::relay::Relay;
use crate::triggers::http::auth::JwtVerifier;
use crate::triggers::http::{Gateway, server};

/// How long a stopping host lets open requests finish.
const DRAIN: Duration = Duration::from_secs(30);
/// How often rate limits forget the keys whose buckets have refilled.
const RATE_LIMIT_CLEANUP: Duration = Duration::from_secs(10);
/// Descriptors the host keeps for itself beyond its connections: database files and pools,
/// the bus, compiled artifacts, outbound calls.
const RESERVED_DESCRIPTORS: u64 = 512;

/// The connection caps, lowered where the open-file limit could not hold them, so that a
/// flood is refused by the cap and never by running out of descriptors.
fn within_descriptors(
    mut limits: crate::config::ConnectionLimits,
    open_files: u64,
) -> crate::config::ConnectionLimits {
    let admin = limits.admin_max_connections as u64;
    let room = open_files
        .saturating_sub(RESERVED_DESCRIPTORS + admin)
        .max(open_files / 4);
    if limits.max_connections as u64 > room {
        tracing::warn!(
            configured = limits.max_connections,
            open_file_limit = open_files,
            "max_connections is lowered to {room} to stay within the open-file limit; raise the limit (ulimit -n, LimitNOFILE=) to allow more"
        );
        limits.max_connections = room as usize;
    }
    limits
}

/// Where the app and its state are.
#[derive(Debug, Clone)]
pub struct Options {
    pub manifest: PathBuf,
    pub runtime_config: Option<PathBuf>,
    /// Defaults to `.berth` beside the manifest.
    pub data_dir: Option<PathBuf>,
    /// Compiled components; defaults to `$BERTH_CACHE_DIR`, else `<data-dir>/cache`.
    pub cache_dir: Option<PathBuf>,
    /// Database labels to start empty although the data dir held a file for them that is
    /// now missing or empty (`berth up --fresh-database`).
    pub fresh_databases: Vec<String>,
}

impl Options {
    pub fn data_dir(&self, app: &App) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| app.dir.join(".berth"))
    }

    fn cache_dir(&self, data_dir: &Path) -> PathBuf {
        self.cache_dir
            .clone()
            .or_else(|| std::env::var_os("BERTH_CACHE_DIR").map(PathBuf::from))
            .unwrap_or_else(|| data_dir.join("cache"))
    }
}

/// What `berth check` found for one component.
pub struct Checked {
    pub id: String,
    pub digest: String,
    pub imports: Vec<String>,
    /// Imports the manifest does not grant: it loads, and every call through them is denied.
    pub denied: Vec<String>,
    /// The component's bytes, for checks beyond berth's own.
    pub wasm: bytes::Bytes,
}

pub struct Host {
    pub app: Arc<App>,
    pub data_dir: PathBuf,
    pub admin_token: String,
    pub registry: Arc<Registry>,
    /// The message bus, when some component publishes or subscribes.
    pub bus: Option<Arc<dyn Bus>>,
    /// Whether that bus is NATS (`[messaging] type = "nats"`), for the start-up banner.
    pub nats_bus: bool,
    /// Every database, closed once the host has stopped serving, so its files are whole
    /// (write-ahead log checkpointed) when `serve` returns.
    databases: Vec<Arc<dyn sql::Database>>,
    gateway: Arc<Gateway>,
    admin: Arc<Admin>,
    /// Deployments: what `berth up --watch` deploys through.
    pub control: Arc<Deployments>,
    /// Applies an edited manifest's routes (`berth up --watch`).
    pub reloader: Arc<Reloader>,
    /// How this host names itself to the fleet; `<hostname>:<public port>` unless set.
    host_id: Option<String>,
}

fn load_config(options: &Options) -> anyhow::Result<(App, RuntimeConfig)> {
    let app = App::load(&options.manifest)?;
    let runtime = match &options.runtime_config {
        Some(path) => RuntimeConfig::load(path)?,
        None => RuntimeConfig {
            path: app.dir.join("runtime-config.toml"),
            ..RuntimeConfig::default()
        },
    };
    runtime.check_labels(&app)?;
    Ok((app, runtime))
}

/// Runs `work` for every component at once; fails listing every component it failed for.
async fn each_component<'a, T, Work, Fut>(
    app: &'a App,
    what: &str,
    work: Work,
) -> anyhow::Result<Vec<(String, T)>>
where
    Work: Fn(&'a ComponentConfig) -> Fut,
    Fut: Future<Output = Result<T, loader::LoadError>>,
{
    let work = &work;
    let runs = app
        .components
        .values()
        .map(|config| async move { (config, work(config).await) });
    let mut done = Vec::new();
    let mut failed = Vec::new();
    for (config, result) in futures::future::join_all(runs).await {
        match result {
            Ok(value) => done.push((config.id.clone(), value)),
            Err(e) => failed.push(format!(
                "component `{}`: {} {e}",
                config.id,
                config.source.display()
            )),
        }
    }
    if failed.is_empty() {
        Ok(done)
    } else {
        anyhow::bail!("{what}:\n  - {}", failed.join("\n  - "))
    }
}

/// Opens every database and key-value store the manifest grants.
async fn open_backends(
    app: &App,
    runtime: &RuntimeConfig,
    data_dir: &Path,
    fresh: &[String],
) -> anyhow::Result<(
    HashMap<String, Arc<dyn sql::Database>>,
    HashMap<String, Arc<dyn key_value::Store>>,
)> {
    let mut databases = HashMap::new();
    let mut stores = HashMap::new();
    for component in app.components.values() {
        for label in &component.sqlite_databases {
            let config = runtime.sqlite_database.get(label);
            let db = sql::build(
                label,
                config,
                runtime.dir(),
                data_dir,
                fresh.contains(label),
            )
            .await
            .with_context(|| format!("database `{label}` of component `{}`", component.id))?;
            databases.insert(label.clone(), db);
        }
        for label in &component.key_value_stores {
            let config = runtime.key_value_store.get(label);
            let store = key_value::build(label, config, runtime.dir(), data_dir)
                .await
                .with_context(|| {
                    format!("key-value store `{label}` of component `{}`", component.id)
                })?;
            stores.insert(label.clone(), store);
        }
    }
    Ok((databases, stores))
}

/// Resolves every app variable. `mint_jwt_secret` lets a missing JWT key be generated into
/// the data dir (`berth up`); without it (`berth check`) a missing JWT key is not an error.
async fn resolve_variables(
    app: &App,
    runtime: &RuntimeConfig,
    data_dir: &Path,
    mint_jwt_secret: bool,
) -> anyhow::Result<variables::Resolved> {
    let providers = variables::build(
        &runtime.variables_provider,
        runtime.dir(),
        app,
        data_dir,
        mint_jwt_secret,
    );
    let mut errors = match variables::resolve(app, &providers).await {
        Ok(resolved) => return Ok(resolved),
        Err(errors) => errors,
    };
    if !mint_jwt_secret {
        let minted: Vec<&str> = app.jwt_secret.iter().flat_map(|t| t.references()).collect();
        errors.retain(|e| {
            !matches!(e, variables::VariablesError::Missing { name, .. } if minted.contains(&name.as_str()))
        });
        if errors.is_empty() {
            return Ok(variables::Resolved::default());
        }
    }
    let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
    anyhow::bail!(
        "{} cannot be resolved:\n  - {}",
        app.manifest_path.display(),
        errors.join("\n  - ")
    )
}

fn jwt_verifier(app: &App, values: &variables::Resolved) -> anyhow::Result<Option<JwtVerifier>> {
    let (Some(secret), Some(issuer)) = (&app.jwt_secret, &app.jwt_issuer) else {
        return Ok(None);
    };
    let key = values.render(secret);
    anyhow::ensure!(
        key.len() >= 16,
        "[application.tool.berth] jwt_secret resolves to {} bytes; use at least 16 random bytes",
        key.len()
    );
    let issuer = values.render(issuer);
    anyhow::ensure!(
        !issuer.is_empty(),
        "[application.tool.berth] jwt_issuer resolves to nothing; give the `iss` your tokens carry"
    );
    let audience = app.jwt_audience.as_ref().map(|a| values.render(a));
    let verifier = JwtVerifier::new(key.as_bytes(), &issuer, audience.as_deref())
        .context("[application.tool.berth] jwt_secret cannot be used as an HS256 key")?;
    Ok(Some(verifier))
}

/// Loads every component; fails listing each component that did not load.
async fn load_components(
    app: &App,
    engine: &Engine,
    linker: &Linker<InvocationState>,
    backends: &Backends,
) -> anyhow::Result<Registry> {
    let versions = each_component(app, "components failed to load", |config| async move {
        let prepared =
            loader::prepare(engine, linker, config, loader::read_source(config)?).await?;
        tracing::info!(
            component = %config.id,
            digest = crate::registry::http::short(&prepared.digest),
            cached = prepared.from_cache,
            took_ms = prepared.compile_time.as_millis() as u64,
            "compiled"
        );
        loader::activate(prepared, config, backends).await
    })
    .await?;
    let slots = versions
        .into_iter()
        .map(|(id, version)| Slot::new(&id, version, &app.components[&id], &app.name));
    Ok(Registry::new(engine.clone(), slots, app.max_request_bytes))
}

impl Host {
    /// Loads everything; returns only when every component is ready to serve.
    pub async fn load(options: &Options) -> anyhow::Result<Host> {
        let (app, runtime) = load_config(options)?;
        for c in app.components.values() {
            if !c.serves_http && c.messaging.subscriptions.is_empty() {
                tracing::warn!(component = %c.id, "no route and no subscriptions lead to it, so nothing will run it");
            }
        }
        let data_dir = options.data_dir(&app);
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("cannot create the data dir {}", data_dir.display()))?;
        let engine = Engine::new(options.cache_dir(&data_dir))?;
        let linker = crate::linker::build(engine.wasmtime())?;
        for label in &options.fresh_databases {
            anyhow::ensure!(
                app.components
                    .values()
                    .any(|c| c.sqlite_databases.contains(label)),
                "--fresh-database {label}: no component of {} has a database labelled `{label}`",
                app.manifest_path.display()
            );
        }
        let (databases, stores) =
            open_backends(&app, &runtime, &data_dir, &options.fresh_databases).await?;
        let variables = resolve_variables(&app, &runtime, &data_dir, true).await?;
        let jwt = jwt_verifier(&app, &variables)?;
        let messaging = if app.components.values().any(|c| c.messaging.is_used()) {
            let bus = messaging::build(&runtime.messaging, &app.name, &data_dir)
                .await
                .context("cannot open the message bus ([messaging] in the runtime config)")?;
            Some(Messaging::new(bus))
        } else {
            None
        };
        let backends = Backends {
            databases,
            stores,
            variables,
            messaging: messaging.clone(),
        };
        let registry = Arc::new(load_components(&app, &engine, &linker, &backends).await?);
        let metrics = Arc::new(crate::telemetry::Metrics::default());
        let gateway = Arc::new(Gateway::new(&app, registry.clone(), jwt, metrics.clone()));
        let bus = messaging.as_ref().map(|m| m.bus.clone());
        let app = Arc::new(app);
        let admin_token = admin_token(&data_dir)?;
        let every_database = backends.databases.values().cloned().collect();
        let databases = app
            .components
            .values()
            .flat_map(|c| {
                c.sqlite_databases.iter().filter_map(|label| {
                    let db = backends.databases.get(label)?.clone();
                    Some((c.id.clone(), label.clone(), db))
                })
            })
            .collect();
        // On NATS, deployments are the fleet's: kept in JetStream, followed by every host.
        let fleet = match &runtime.messaging {
            messaging::Config::Nats { url, stream } => Some(FleetConfig {
                url: url.clone(),
                name: stream.clone().unwrap_or_else(|| app.name.clone()),
            }),
            _ => None,
        };
        let control = Arc::new(
            Deployments::new(
                app.clone(),
                registry.clone(),
                engine.clone(),
                linker,
                backends,
                &data_dir,
                metrics,
            )
            .with_fleet(fleet),
        );
        control.restore().await;
        control.catch_up().await;
        let serving_app = Arc::new(arc_swap::ArcSwap::new(app.clone()));
        let reloader = Arc::new(
            Reloader::new(serving_app.clone(), registry.clone(), gateway.clone())
                .with_context(|| format!("cannot read {}", app.manifest_path.display()))?,
        );
        let admin = Arc::new(Admin::new(
            &admin_token,
            databases,
            bus.clone(),
            serving_app,
            control.clone(),
            &data_dir,
        ));
        Ok(Host {
            app,
            data_dir,
            admin_token,
            registry,
            nats_bus: bus.is_some() && matches!(runtime.messaging, messaging::Config::Nats { .. }),
            bus,
            databases: every_database,
            gateway,
            admin,
            control,
            reloader,
            host_id: None,
        })
    }

    /// Names this host in the fleet (`berth status`) instead of `<hostname>:<public port>`.
    pub fn with_host_id(mut self, id: Option<String>) -> Host {
        self.host_id = id;
        self
    }

    /// Checks the manifest, runtime config, variables and every component (compiled,
    /// imports against grants, linked) without opening data or serving anything.
    pub async fn check(options: &Options) -> anyhow::Result<Vec<Checked>> {
        let (app, runtime) = load_config(options)?;
        let data_dir = options.data_dir(&app);
        resolve_variables(&app, &runtime, &data_dir, false).await?;
        let engine = Engine::new(options.cache_dir(&data_dir))?;
        let linker = crate::linker::build(engine.wasmtime())?;
        let checked = each_component(&app, "components failed the check", |config| {
            let (engine, linker) = (&engine, &linker);
            async move {
                let wasm = loader::read_source(config)?;
                let prepared = loader::prepare(engine, linker, config, wasm.clone()).await?;
                Ok(Checked {
                    id: config.id.clone(),
                    digest: prepared.digest,
                    imports: prepared.imports,
                    denied: prepared.denied,
                    wasm,
                })
            }
        })
        .await?;
        Ok(checked.into_iter().map(|(_, checked)| checked).collect())
    }

    /// Serves until `shutdown` resolves, then drains open requests.
    pub async fn serve(
        self,
        public: TcpListener,
        admin: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let limits = within_descriptors(self.app.connections, server::raise_descriptor_limit());
        let metrics = self.control.metrics.clone();
        // The servers stop on `shutdown`; relays and consumers only after the servers have
        // drained, so events committed by the last requests still leave before the process
        // does.
        let serving = CancellationToken::new();
        let background = CancellationToken::new();
        let tasks = TaskTracker::new();
        for work in self.messaging_tasks().await {
            tasks.spawn(work(background.clone()));
        }
        let control = self.control.clone();
        let following = background.clone();
        tasks.spawn(async move { control.follow_fleet(following).await });
        let host_id = match self.host_id.clone() {
            Some(id) => id,
            None => format!("{}:{}", hostname(), public.local_addr()?.port()),
        };
        let control = self.control.clone();
        // Listed until the servers have drained: a host leaves the fleet once it stops serving.
        let reporting = background.clone();
        tasks.spawn(async move { control.report_to_fleet(host_id, reporting).await });
        if !self.gateway.rate_limits.is_empty() {
            let limits = self.gateway.rate_limits.clone();
            let stop = background.clone();
            tasks.spawn(async move {
                let mut every = tokio::time::interval(RATE_LIMIT_CLEANUP);
                loop {
                    tokio::select! {
                        _ = every.tick() => limits.forget_idle(),
                        () = stop.cancelled() => return,
                    }
                }
            });
        }
        tasks.close();
        let signal = {
            let serving = serving.clone();
            let admin = self.admin.clone();
            async move {
                shutdown.await;
                serving.cancel();
                // A dashboard's live stream would hold the admin listener's drain.
                admin.close_streams();
            }
        };
        tokio::join!(
            signal,
            server::serve(
                public,
                self.gateway,
                server::Bounds::public(&limits),
                metrics.public_connections.clone(),
                serving.clone().cancelled_owned(),
                DRAIN
            ),
            server::serve(
                admin,
                self.admin,
                server::Bounds::admin(&limits),
                metrics.admin_connections.clone(),
                serving.clone().cancelled_owned(),
                DRAIN
            ),
        );
        background.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), tasks.wait()).await;
        for slot in self.registry.iter() {
            slot.drop_kept_instances();
        }
        for db in &self.databases {
            db.close().await;
        }
        Ok(())
    }

    /// The outbox relays and event consumers, each to run until the host stops. Consumer
    /// groups are registered here, before anything is served.
    async fn messaging_tasks(&self) -> Vec<Box<dyn FnOnce(Stop) -> BoxFuture + Send>> {
        let Some(bus) = &self.bus else {
            return Vec::new();
        };
        let mut tasks: Vec<Box<dyn FnOnce(Stop) -> BoxFuture + Send>> = Vec::new();
        for config in self.app.components.values() {
            let Some(slot) = self.registry.get(&config.id) else {
                continue;
            };
            let version = slot.stable();
            let Some(db) = version
                .primary_database
                .as_ref()
                .and_then(|label| version.databases.get(label))
            else {
                continue;
            };
            if let Some(wake) = &slot.relay {
                let relay = Relay {
                    component: slot.id.clone(),
                    db: db.clone(),
                    bus: bus.clone(),
                    wake: wake.clone(),
                };
                tasks.push(Box::new(move |stop| Box::pin(relay.run(stop))));
            }
            if !config.messaging.subscriptions.is_empty() {
                let consumer = Consumer::new(
                    slot.clone(),
                    self.registry.clone(),
                    bus.clone(),
                    &config.messaging,
                    &self.app.name,
                    db.clone(),
                );
                let first = match tokio::time::timeout(Duration::from_secs(5), consumer.subscribe())
                    .await
                {
                    Ok(Ok(subscription)) => Some(subscription),
                    Ok(Err(e)) => {
                        tracing::warn!(component = %config.id, "cannot subscribe yet, retrying in the background: {e}");
                        None
                    }
                    Err(_) => None,
                };
                tasks.push(Box::new(move |stop| Box::pin(consumer.run(first, stop))));
            }
        }
        tasks
    }
}

type Stop = CancellationToken;
type BoxFuture = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// This machine's name, as the fleet lists its hosts.
fn hostname() -> String {
    let mut name = [0u8; 256];
    // SAFETY: the buffer is writable for its whole length, which is what we pass.
    let ok = unsafe { libc::gethostname(name.as_mut_ptr().cast(), name.len()) } == 0;
    let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    match std::str::from_utf8(&name[..len]) {
        Ok(name) if ok && !name.is_empty() => name.to_owned(),
        _ => "localhost".to_owned(),
    }
}

/// The admin token: `BERTH_ADMIN_TOKEN`, else the one kept in the data dir, else a new one;
/// written to `<data-dir>/admin-token` (mode 0600) for the CLI to read.
fn admin_token(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("admin-token");
    let existing = std::fs::read_to_string(&path)
        .ok()
        .map(|t| t.trim().to_owned());
    let token = match std::env::var("BERTH_ADMIN_TOKEN") {
        Ok(t) if !t.trim().is_empty() => t.trim().to_owned(),
        _ => existing
            .clone()
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| hex::encode(rand::random::<[u8; 32]>())),
    };
    if existing.as_deref() != Some(token.as_str()) {
        crate::files::write_private(&path, token.as_bytes())
            .with_context(|| format!("cannot write the admin token to {}", path.display()))?;
    }
    Ok(token)
}
