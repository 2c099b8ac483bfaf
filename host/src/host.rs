//! The host: the app loaded once (config, backends, variables, every component compiled,
//! checked, pre-instantiated and migrated), then served on a public and an admin listener.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::capabilities::http_inbound::auth::JwtVerifier;
use crate::capabilities::http_inbound::{Gateway, Target, server, short_digest};
use crate::capabilities::{key_value, sql, variables};
use crate::components::loader::{self, Backends};
use crate::components::{Registry, Slot};
use crate::config::{App, RuntimeConfig};
use crate::control::admin::Admin;
use crate::engine::Engine;

/// How long a stopping host lets open requests finish.
const DRAIN: Duration = Duration::from_secs(30);

/// Where the app and its state are.
#[derive(Debug, Clone)]
pub struct Options {
    pub manifest: PathBuf,
    pub runtime_config: Option<PathBuf>,
    /// Defaults to `.berth` beside the manifest.
    pub data_dir: Option<PathBuf>,
    /// Compiled components; defaults to `$BERTH_CACHE_DIR`, else `<data-dir>/cache`.
    pub cache_dir: Option<PathBuf>,
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
}

pub struct Host {
    pub app: Arc<App>,
    pub data_dir: PathBuf,
    pub admin_token: String,
    pub registry: Arc<Registry>,
    gateway: Arc<Gateway>,
    admin: Arc<Admin>,
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

/// Joins per-component failures into one error that lists them all.
fn all_or_report<T>(
    results: Vec<(String, Result<T, String>)>,
    what: &str,
) -> anyhow::Result<Vec<(String, T)>> {
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for (id, result) in results {
        match result {
            Ok(v) => ok.push((id, v)),
            Err(e) => failed.push(format!("component `{id}`: {e}")),
        }
    }
    if failed.is_empty() {
        Ok(ok)
    } else {
        anyhow::bail!("{what}:\n  - {}", failed.join("\n  - "))
    }
}

impl Host {
    /// Loads everything; returns only when every component is ready to serve.
    pub async fn load(options: &Options) -> anyhow::Result<Host> {
        let (app, runtime) = load_config(options)?;
        let data_dir = options.data_dir(&app);
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("cannot create the data dir {}", data_dir.display()))?;
        let engine = Engine::new(options.cache_dir(&data_dir))?;
        let linker = crate::linker::build(engine.wasmtime())?;

        let mut backends = Backends {
            databases: HashMap::new(),
            stores: HashMap::new(),
            variables: variables::Resolved::default(),
        };
        for component in app.components.values() {
            for label in &component.sqlite_databases {
                let db = sql::build(
                    label,
                    runtime.sqlite_database.get(label),
                    runtime.dir(),
                    &data_dir,
                )
                .await
                .with_context(|| format!("database `{label}` of component `{}`", component.id))?;
                backends.databases.insert(label.clone(), db);
            }
            for label in &component.key_value_stores {
                let store = key_value::build(
                    label,
                    runtime.key_value_store.get(label),
                    runtime.dir(),
                    &data_dir,
                )
                .await
                .with_context(|| {
                    format!("key-value store `{label}` of component `{}`", component.id)
                })?;
                backends.stores.insert(label.clone(), store);
            }
        }
        let providers = variables::build(
            &runtime.variables_provider,
            runtime.dir(),
            &app,
            &data_dir,
            true,
        );
        backends.variables = variables::resolve(&app, &providers)
            .await
            .map_err(|errors| {
                anyhow::anyhow!(
                    "{} cannot be resolved:\n  - {}",
                    app.manifest_path.display(),
                    errors
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("\n  - ")
                )
            })?;
        let jwt = match &app.jwt_secret {
            Some(template) => {
                let key = backends.variables.render(template);
                anyhow::ensure!(
                    key.len() >= 16,
                    "[application.tool.berth] jwt_secret resolves to {} bytes; use at least 16 random bytes",
                    key.len()
                );
                Some(JwtVerifier::new(key.as_bytes()))
            }
            None => None,
        };

        let loads = app.components.values().map(|config| {
            let (engine, linker, backends) = (&engine, &linker, &backends);
            async move {
                let result = async {
                    let wasm = loader::read_source(config)?;
                    let prepared = loader::prepare(engine, linker, config, wasm).await?;
                    tracing::info!(
                        component = %config.id,
                        digest = short_digest(&prepared.digest),
                        cached = prepared.from_cache,
                        took_ms = prepared.compile_time.as_millis() as u64,
                        "compiled"
                    );
                    loader::activate(prepared, config, backends).await
                }
                .await
                .map_err(|e| format!("{} {e}", config.source.display()));
                (config.id.clone(), result)
            }
        });
        let versions = all_or_report(
            futures::future::join_all(loads).await,
            "components failed to load",
        )?;
        let registry = Arc::new(Registry::new(
            versions
                .into_iter()
                .map(|(id, version)| Slot::new(&id, version)),
        ));

        let routes = app
            .routes
            .iter()
            .filter_map(|route| {
                let slot = registry.get(&route.component)?.clone();
                let config = &app.components[&route.component];
                Some((
                    route.pattern.clone(),
                    Target {
                        slot,
                        raw_route: route.pattern.to_string(),
                        auth: config.auth,
                        public_routes: config.public_routes.clone().into(),
                    },
                ))
            })
            .collect();
        let gateway = Arc::new(Gateway::new(
            routes,
            engine.clone(),
            jwt,
            app.max_request_bytes,
        ));
        let admin_token = admin_token(&data_dir)?;
        let admin = Arc::new(Admin::new(
            &admin_token,
            backends
                .databases
                .iter()
                .map(|(l, d)| (l.clone(), d.clone()))
                .collect(),
        ));
        Ok(Host {
            app: Arc::new(app),
            data_dir,
            admin_token,
            registry,
            gateway,
            admin,
        })
    }

    /// Checks the manifest, runtime config, variables and every component (compiled,
    /// imports against grants, linked) without opening data or serving anything.
    pub async fn check(options: &Options) -> anyhow::Result<Vec<Checked>> {
        let (app, runtime) = load_config(options)?;
        let data_dir = options.data_dir(&app);
        // `berth up` would mint the JWT key; a check must not write it, only allow for it.
        let providers = variables::build(
            &runtime.variables_provider,
            runtime.dir(),
            &app,
            &data_dir,
            false,
        );
        let minted: Vec<&str> = app.jwt_secret.iter().flat_map(|t| t.references()).collect();
        if let Err(errors) = variables::resolve(&app, &providers).await.map_err(|mut errors| {
            errors.retain(|e| !matches!(e, variables::VariablesError::Missing { name, .. } if minted.contains(&name.as_str())));
            errors
        }) && !errors.is_empty()
        {
            anyhow::bail!(
                "{} cannot be resolved:\n  - {}",
                app.manifest_path.display(),
                errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  - ")
            );
        }
        let engine = Engine::new(options.cache_dir(&data_dir))?;
        let linker = crate::linker::build(engine.wasmtime())?;
        let checks = app.components.values().map(|config| {
            let (engine, linker) = (&engine, &linker);
            async move {
                let result = async {
                    let wasm = loader::read_source(config)?;
                    let prepared = loader::prepare(engine, linker, config, wasm).await?;
                    Ok::<_, loader::LoadError>((prepared.digest, prepared.imports))
                }
                .await
                .map_err(|e| format!("{} {e}", config.source.display()));
                (config.id.clone(), result)
            }
        });
        let checked = all_or_report(
            futures::future::join_all(checks).await,
            "components failed the check",
        )?;
        Ok(checked
            .into_iter()
            .map(|(id, (digest, imports))| Checked {
                id,
                digest,
                imports,
            })
            .collect())
    }

    /// Serves until `shutdown` resolves, then drains open requests.
    pub async fn serve(
        self,
        public: TcpListener,
        admin: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let stopped_admin = stopped.clone();
        let signal = async move {
            shutdown.await;
            let _ = stop.send(true);
        };
        let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        tokio::join!(
            signal,
            server::serve(public, self.gateway, wait(stopped), DRAIN),
            server::serve(admin, self.admin, wait(stopped_admin), DRAIN),
        );
        Ok(())
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
