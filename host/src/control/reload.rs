//! Reloading an edited `spin.toml` while serving (`berth up --watch`). Routes, `auth` and
//! `public_routes` change in one swap of the gateway's routing table. Anything else (a new
//! component, a grant, a limit, a subscription) needs backends, consumers or versions built
//! differently, so such an edit is refused with what changed, and applies at the next start.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::config::App;
use crate::registry::Registry;
use crate::triggers::http::Gateway;

pub struct Reloader {
    manifest: PathBuf,
    /// The manifest text the serving routes came from.
    text: Mutex<String>,
    pub app: Arc<ArcSwap<App>>,
    registry: Arc<Registry>,
    gateway: Arc<Gateway>,
}

/// The parts of a manifest that a reload may change.
const RELOADABLE: [&str; 2] = ["auth", "public_routes"];

/// The manifest without what a reload may change: everything left must be equal.
fn fixed_part(text: &str) -> Result<toml::Table, String> {
    let mut table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    table.remove("trigger");
    if let Some(toml::Value::Table(components)) = table.get_mut("component") {
        for (_, component) in components.iter_mut() {
            if let Some(berth) = component
                .get_mut("tool")
                .and_then(|t| t.get_mut("berth"))
                .and_then(toml::Value::as_table_mut)
            {
                for key in RELOADABLE {
                    berth.remove(key);
                }
            }
        }
    }
    Ok(table)
}

/// Which tables differ between two manifests, as `[component.order]`, `[variables]`….
fn differences(old: &toml::Table, new: &toml::Table) -> Vec<String> {
    let mut changed = Vec::new();
    let keys: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for key in keys {
        match (old.get(key), new.get(key)) {
            (Some(toml::Value::Table(a)), Some(toml::Value::Table(b))) if key == "component" => {
                let ids: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
                for id in ids {
                    if a.get(id) != b.get(id) {
                        changed.push(format!("[component.{id}]"));
                    }
                }
            }
            (a, b) if a != b => changed.push(format!("[{key}]")),
            _ => {}
        }
    }
    changed
}

impl Reloader {
    pub fn new(
        app: Arc<ArcSwap<App>>,
        registry: Arc<Registry>,
        gateway: Arc<Gateway>,
    ) -> std::io::Result<Reloader> {
        let manifest = app.load().manifest_path.clone();
        let text = std::fs::read_to_string(&manifest)?;
        Ok(Reloader {
            manifest,
            text: Mutex::new(text),
            app,
            registry,
            gateway,
        })
    }

    pub fn manifest(&self) -> &std::path::Path {
        &self.manifest
    }

    /// Applies the manifest as it is now on disk; says what changed, or why it was refused.
    pub fn reload(&self) -> Result<String, String> {
        let text = std::fs::read_to_string(&self.manifest)
            .map_err(|e| format!("cannot read {}: {e}", self.manifest.display()))?;
        let mut current = self
            .text
            .lock()
            .map_err(|_| "the reload lock is poisoned".to_owned())?;
        if *current == text {
            return Ok("nothing changed".into());
        }
        let app = App::parse(&self.manifest, &text).map_err(|e| e.to_string())?;
        let changed = differences(&fixed_part(&current)?, &fixed_part(&text)?);
        if !changed.is_empty() {
            return Err(format!(
                "{} changed beyond routes, auth and public_routes ({}); restart `berth up` to apply it",
                self.manifest.display(),
                changed.join(", ")
            ));
        }
        if let Some(route) = app.routes.iter().find(|r| {
            self.registry
                .get(&r.component)
                .is_none_or(|slot| slot.stable().http.is_none())
        }) {
            return Err(format!(
                "route `{}` leads to `{}`, which does not export wasi:http/incoming-handler; restart `berth up` once it does",
                route.pattern, route.component
            ));
        }
        let count = app
            .routes
            .iter()
            .filter(|r| !r.pattern.is_private())
            .count();
        self.gateway.set_routes(&app);
        self.app.store(Arc::new(app));
        *current = text;
        Ok(format!("routes reloaded: {count} routes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_routes_auth_and_public_routes_are_reloadable() {
        let base = "[[trigger.http]]\nroute = \"/a\"\ncomponent = \"a\"\n[component.a]\nsource = \"a.wasm\"\n[component.a.tool.berth]\nauth = \"none\"\n";
        let routes = base.replace("route = \"/a\"", "route = \"/b\"");
        let auth = base.replace(
            "auth = \"none\"",
            "auth = \"jwt\"\npublic_routes = [\"/b\"]",
        );
        let grant = base.replace(
            "source = \"a.wasm\"",
            "source = \"a.wasm\"\nsqlite_databases = [\"a\"]",
        );
        let fixed = |t: &str| fixed_part(t).unwrap();
        assert!(differences(&fixed(base), &fixed(&routes)).is_empty());
        assert!(differences(&fixed(base), &fixed(&auth)).is_empty());
        assert_eq!(differences(&fixed(base), &fixed(&grant)), ["[component.a]"]);
    }
}
