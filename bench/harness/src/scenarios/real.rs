//! A real endpoint: the user service's profile read (bearer token checked, one SQLite read)
//! and its login (argon2id verification, a signed JWT), on berth and on the same service as
//! a Node.js Express app would be written, each with its own SQLite file.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use tokio::process::Command;

use super::{Contestant, alternate, load_columns, row, summaries_json, user};
use crate::Settings;
use crate::load::{Load, Summary};
use crate::report::{Better, Report, Table};
use crate::server::{Ready, Server, free_port};
use crate::tools::{Kit, step};

const READ_CONNECTIONS: u32 = 32;
/// Each login holds 19 MiB of argon2 state; more at once only queues on two cores.
const LOGIN_CONNECTIONS: u32 = 8;
const EMAIL: &str = "bench@example.com";

pub async fn run(
    kit: &Kit,
    settings: &Settings,
    work: &tempfile::TempDir,
    report: &mut Report,
) -> anyhow::Result<()> {
    step("real endpoint: GET /api/v1/users/{id} and login, berth against Node.js Express");
    let node_dir = match &kit.node_service {
        Ok(dir) => dir.clone(),
        Err(why) => {
            report.skip(format!("the real endpoint: {why}"));
            return Ok(());
        }
    };
    let logs = work.path();
    let manifest = unlimited_shop(&kit.checkout.root, work.path())?;
    let berth = super::berth(kit, work, "berth-shop", &manifest.to_string_lossy()).await?;
    let mut berth = berth.server;
    let port = free_port()?;
    let mut command = Command::new("node");
    command
        .current_dir(&node_dir)
        .arg("server.js")
        .env("PORT", port.to_string())
        .env("DB_PATH", work.path().join("node-users.db"))
        .env("JWT_SECRET", "a-benchmark-secret-of-at-least-32-bytes!");
    let (mut node, _) = Server::start("node-express", command, port, Ready::Answers, logs).await?;

    let client = reqwest::Client::new();
    let (berth_id, berth_token) = user(&client, &berth.url, EMAIL).await?;
    let (node_id, node_token) = user(&client, &node.url, EMAIL).await?;
    let login_body = format!(r#"{{"email":"{EMAIL}","password":"correct horse battery"}}"#);

    let berth_auth = format!("Bearer {berth_token}");
    let node_auth = format!("Bearer {node_token}");
    let berth_read = format!("{}/api/v1/users/{berth_id}", berth.url);
    let node_read = format!("{}/api/v1/users/{node_id}", node.url);
    let berth_headers = [("Authorization", berth_auth.as_str())];
    let node_headers = [("Authorization", node_auth.as_str())];
    let names = ["berth", "node express"];
    let reads = {
        let mut contestants = [
            Contestant {
                name: names[0],
                server: &mut berth,
                load: Load {
                    url: &berth_read,
                    connections: READ_CONNECTIONS,
                    duration: settings.duration,
                    headers: &berth_headers,
                    body: None,
                },
            },
            Contestant {
                name: names[1],
                server: &mut node,
                load: Load {
                    url: &node_read,
                    connections: READ_CONNECTIONS,
                    duration: settings.duration,
                    headers: &node_headers,
                    body: None,
                },
            },
        ];
        alternate(kit, settings, work.path(), &mut contestants).await?
    };
    let (berth_login, node_login) = (
        format!("{}/api/v1/users/login", berth.url),
        format!("{}/api/v1/users/login", node.url),
    );
    let logins = {
        let mut contestants = [
            Contestant {
                name: names[0],
                server: &mut berth,
                load: Load {
                    url: &berth_login,
                    connections: LOGIN_CONNECTIONS,
                    duration: settings.duration,
                    headers: &[],
                    body: Some(&login_body),
                },
            },
            Contestant {
                name: names[1],
                server: &mut node,
                load: Load {
                    url: &node_login,
                    connections: LOGIN_CONNECTIONS,
                    duration: settings.duration,
                    headers: &[],
                    body: Some(&login_body),
                },
            },
        ];
        alternate(kit, settings, work.path(), &mut contestants).await?
    };
    berth.stop().await;
    node.stop().await;

    for (what, s) in [("profile reads", &reads), ("logins", &logins)] {
        anyhow::ensure!(
            s.iter().all(|s| s.failures == 0),
            "{what} failed (berth {}, node {}); see the logs in {}",
            s[0].failures,
            s[1].failures,
            logs.display()
        );
    }
    goals(report, "GET user", &reads[0], &reads[1]);
    goals(report, "login", &logins[0], &logins[1]);
    report.tables.push(Table {
        title: format!(
            "real endpoint, GET /api/v1/users/{{id}}: {READ_CONNECTIONS} connections, medians"
        ),
        columns: load_columns(),
        rows: names.iter().zip(&reads).map(|(n, s)| row(n, s)).collect(),
    });
    report.tables.push(Table {
        title: format!(
            "real endpoint, POST /api/v1/users/login: {LOGIN_CONNECTIONS} connections, medians"
        ),
        columns: load_columns(),
        rows: names.iter().zip(&logins).map(|(n, s)| row(n, s)).collect(),
    });
    report.scenarios.insert(
        "real".into(),
        serde_json::json!({
            "get_user": summaries_json(&names, &reads),
            "login": summaries_json(&names, &logins),
        }),
    );
    Ok(())
}

/// The shop's manifest without its rate limits, written into `dir`: the login load sends one
/// account's logins as fast as it can from one address, which the shop's limits answer with
/// 429, and the benchmark measures the service, not the limiter. Paths in it are made
/// absolute so it works from anywhere; everything else is the shop's own setting.
fn unlimited_shop(root: &Path, dir: &Path) -> anyhow::Result<PathBuf> {
    let path = root.join("spin.toml");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut manifest: toml::Table = toml::from_str(&text)?;
    if let Some(berth) = manifest
        .get_mut("application")
        .and_then(|a| a.get_mut("tool"))
        .and_then(|t| t.get_mut("berth"))
        .and_then(toml::Value::as_table_mut)
    {
        berth.remove("rate_limits");
    }
    let components = manifest
        .get_mut("component")
        .and_then(toml::Value::as_table_mut)
        .context("spin.toml has no components")?;
    for (id, component) in components.iter_mut() {
        let Some(component) = component.as_table_mut() else {
            continue;
        };
        if let Some(source) = component.get("source").and_then(toml::Value::as_str) {
            let absolute = root.join(source).to_string_lossy().into_owned();
            component.insert("source".into(), absolute.into());
        }
        let migrations = root.join("migrations").join(id);
        if migrations.is_dir() {
            let tool = component
                .entry("tool")
                .or_insert_with(|| toml::Table::new().into());
            let berth = tool
                .as_table_mut()
                .context("tool is not a table")?
                .entry("berth")
                .or_insert_with(|| toml::Table::new().into());
            berth
                .as_table_mut()
                .context("tool.berth is not a table")?
                .insert(
                    "migrations".into(),
                    migrations.to_string_lossy().into_owned().into(),
                );
        }
    }
    let out = dir.join("shop-without-rate-limits.toml");
    std::fs::write(&out, toml::to_string(&manifest)?)?;
    Ok(out)
}

fn goals(report: &mut Report, what: &str, berth: &Summary, node: &Summary) {
    report.goal(
        &format!("{what}: berth ÷ Node, req/s"),
        berth.rps / node.rps,
        Better::Higher,
        3.0,
        "×",
    );
    report.goal(
        &format!("{what}: berth ÷ Node, p99"),
        berth.p99_ms / node.p99_ms,
        Better::Lower,
        1.0 / 3.0,
        "×",
    );
}
