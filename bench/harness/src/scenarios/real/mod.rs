//! A real endpoint: the user service's profile read (bearer token checked, one SQLite read)
//! and its login (argon2id verification, a signed JWT), on berth, on the same service as a
//! native Rust server (axum, sqlx; the fastest thing one could run instead) and as a Node.js
//! Express app, each with its own SQLite file. First [`compat`] checks that the baselines
//! answer what berth answers, so the load compares runtimes, not two different services.

mod compat;

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use tokio::process::Command;

use super::{Contestant, alternate, load_columns, row, summaries_json, user};
use crate::Settings;
use crate::load::{Load, Summary};
use crate::report::{Better, Report, Table};
use crate::server::{Ready, Server, Setup, free_port};
use crate::tools::{Kit, step};

const READ_CONNECTIONS: u32 = 32;
/// Each login holds 19 MiB of argon2 state; more at once only queues on two cores.
const LOGIN_CONNECTIONS: u32 = 8;
const EMAIL: &str = "bench@example.com";
/// One key and issuer for all three, so a token one issues the others accept.
const JWT_SECRET: &str = "a-benchmark-secret-of-at-least-32-bytes!";
const JWT_ISSUER: &str = "berth-user";

pub async fn run(
    kit: &Kit,
    settings: &Settings,
    work: &tempfile::TempDir,
    report: &mut Report,
) -> anyhow::Result<()> {
    step("real endpoint: GET /api/v1/users/{id} and login, berth against native Rust and Node.js");
    let logs = work.path();
    let manifest = unlimited_shop(&kit.checkout.root, work.path())?;
    let setup = Setup {
        env: vec![("SPIN_VARIABLE_JWT_SECRET".into(), JWT_SECRET.into())],
        ..Setup::default()
    };
    let (berth, _) = crate::server::Berth::start_with(
        &kit.checkout,
        "berth-shop",
        &manifest,
        work.path().join("berth-shop-data"),
        &work.path().join("cache"),
        logs,
        &setup,
    )
    .await?;
    let mut servers = vec![("berth", berth.server)];
    let port = free_port()?;
    let mut command = Command::new(&kit.native_user_service);
    command
        .env("PORT", port.to_string())
        .env("DB_PATH", work.path().join("native-users.db"))
        .env("JWT_SECRET", JWT_SECRET)
        .env("JWT_ISSUER", JWT_ISSUER);
    let (native, _) = Server::start("native-rust", command, port, Ready::Answers, logs).await?;
    servers.push(("native rust", native));
    match &kit.node_service {
        Ok(dir) => {
            let port = free_port()?;
            let mut command = Command::new("node");
            command
                .current_dir(dir)
                .arg("server.js")
                .env("PORT", port.to_string())
                .env("DB_PATH", work.path().join("node-users.db"))
                .env("JWT_SECRET", JWT_SECRET)
                .env("JWT_ISSUER", JWT_ISSUER);
            let (node, _) =
                Server::start("node-express", command, port, Ready::Answers, logs).await?;
            servers.push(("node express", node));
        }
        Err(why) => report.skip(format!("the real endpoint on Node.js: {why}")),
    }

    let client = reqwest::Client::new();
    let differing = check_answers(&client, &servers, report).await?;

    let mut reads_to = Vec::new();
    let mut logins_to = Vec::new();
    for (_, server) in &servers {
        let (id, token) = user(&client, &server.url, EMAIL).await?;
        reads_to.push((
            format!("{}/api/v1/users/{id}", server.url),
            format!("Bearer {token}"),
        ));
        logins_to.push(format!("{}/api/v1/users/login", server.url));
    }
    let login_body = format!(r#"{{"email":"{EMAIL}","password":"correct horse battery"}}"#);
    let names: Vec<&str> = servers.iter().map(|(name, _)| *name).collect();
    let headers: Vec<[(&str, &str); 1]> = reads_to
        .iter()
        .map(|(_, auth)| [("Authorization", auth.as_str())])
        .collect();
    let reads = {
        let mut contestants: Vec<Contestant> = servers
            .iter_mut()
            .zip(&reads_to)
            .zip(&headers)
            .map(|(((name, server), (url, _)), headers)| Contestant {
                name,
                server,
                load: Load {
                    url,
                    connections: READ_CONNECTIONS,
                    duration: settings.duration,
                    headers,
                    body: None,
                },
            })
            .collect();
        alternate(kit, settings, work.path(), &mut contestants).await?
    };
    let logins = {
        let mut contestants: Vec<Contestant> = servers
            .iter_mut()
            .zip(&logins_to)
            .map(|((name, server), url)| Contestant {
                name,
                server,
                load: Load {
                    url,
                    connections: LOGIN_CONNECTIONS,
                    duration: settings.duration,
                    headers: &[],
                    body: Some(&login_body),
                },
            })
            .collect();
        alternate(kit, settings, work.path(), &mut contestants).await?
    };
    for (_, server) in servers {
        server.stop().await;
    }

    for (what, s) in [("profile reads", &reads), ("logins", &logins)] {
        let failed: Vec<String> = names
            .iter()
            .zip(s.iter())
            .map(|(name, s)| format!("{name} {}", s.failures))
            .collect();
        anyhow::ensure!(
            s.iter().all(|s| s.failures == 0),
            "{what} failed ({}); see the logs in {}",
            failed.join(", "),
            logs.display()
        );
    }
    goals(report, &reads, &logins, names.len() > 2);
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
            "differing_answers": differing,
            "get_user": summaries_json(&names, &reads),
            "login": summaries_json(&names, &logins),
        }),
    );
    Ok(())
}

/// Runs [`compat`]'s script on every server, compares each baseline's answers with berth's
/// (the first server's), prints the differences and reports their number as a goal of 0.
async fn check_answers(
    client: &reqwest::Client,
    servers: &[(&str, Server)],
    report: &mut Report,
) -> anyhow::Result<serde_json::Value> {
    let secret = JWT_SECRET.as_bytes();
    let mut scripts = Vec::new();
    for (name, server) in servers {
        let script = compat::script(client, &server.url, secret, JWT_ISSUER)
            .await
            .with_context(|| format!("the answer check on {name}"))?;
        scripts.push(script);
    }
    let ((berth_asked, berth_session), others) =
        scripts.split_first_mut().context("no servers to compare")?;
    let berth_url = &servers[0].1.url;
    let mut counts = serde_json::Map::new();
    for ((name, server), (asked, session)) in servers[1..].iter().zip(others.iter_mut()) {
        // Each side is handed the other's token; both should accept it.
        let mut berth_side = berth_asked.clone();
        berth_side
            .push(compat::foreign_token(client, berth_url, "the other issued", session).await?);
        asked.push(
            compat::foreign_token(client, &server.url, "the other issued", berth_session).await?,
        );
        let differences = compat::compare(&berth_side, asked);
        eprintln!(
            "    {name}: {} of {} answers differ from berth's",
            differences.len(),
            berth_side.len()
        );
        for difference in &differences {
            eprint!("{difference}");
        }
        let label = match *name {
            "native rust" => "native Rust",
            _ => "Node",
        };
        report.goal(
            &format!("answers differing from berth's: {label}"),
            differences.len() as f64,
            Better::Lower,
            0.0,
            "",
        );
        counts.insert((*name).to_owned(), differences.len().into());
    }
    Ok(counts.into())
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

/// `reads` and `logins` of berth, native Rust and, if `with_node`, Node.js, in that order.
fn goals(report: &mut Report, reads: &[Summary], logins: &[Summary], with_node: bool) {
    report.goal(
        "GET user: berth ÷ native Rust, req/s",
        reads[0].rps / reads[1].rps,
        Better::Higher,
        0.5,
        "×",
    );
    report.goal(
        "GET user: berth ÷ native Rust, p99",
        reads[0].p99_ms / reads[1].p99_ms,
        Better::Lower,
        2.0,
        "×",
    );
    report.figure(
        "login: berth ÷ native Rust, req/s",
        logins[0].rps / logins[1].rps,
        "×",
        "argon2id in wasm against native code",
    );
    if !with_node {
        return;
    }
    report.goal(
        "GET user: berth ÷ Node, req/s",
        reads[0].rps / reads[2].rps,
        Better::Higher,
        3.0,
        "×",
    );
    report.goal(
        "GET user: berth ÷ Node, p99",
        reads[0].p99_ms / reads[2].p99_ms,
        Better::Lower,
        1.0 / 3.0,
        "×",
    );
    // Logins are argon2id, the same work on every side: the contest is wasm's hashing
    // against Node's native addon, so berth is asked to keep up rather than to win.
    report.goal(
        "login: berth ÷ Node, req/s",
        logins[0].rps / logins[2].rps,
        Better::Higher,
        1.0,
        "×",
    );
    // Eight connections that each wait for their answer: latency is about 8 ÷ throughput,
    // so the p99 ratio follows the req/s one and cannot be held tighter than it.
    report.goal(
        "login: berth ÷ Node, p99",
        logins[0].p99_ms / logins[2].p99_ms,
        Better::Lower,
        1.0,
        "×",
    );
}
