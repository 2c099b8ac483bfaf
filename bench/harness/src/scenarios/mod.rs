//! The scenarios, one module each. Servers under comparison run at the same time and take
//! turns under load, in an order that rotates every round, so drift in the machine's speed
//! lands on all of them alike.

pub mod hello;
pub mod mesh;
pub mod otel;
pub mod real;
pub mod saga;
pub mod saga_fleet;
pub mod startup;
pub mod swap;

use std::path::Path;

use serde_json::{Value, json};

use crate::Settings;
use crate::load::{self, Load, Stats, Summary};
use crate::report::number;
use crate::server::Server;
use crate::tools::{Checkout, Kit};

/// `berth up` on `manifest` (relative to the repository) with a data dir of its own and
/// the sitting's shared compile cache; its log is `<work>/<name>.log`.
pub async fn berth(
    kit: &Kit,
    work: &tempfile::TempDir,
    name: &str,
    manifest: &str,
) -> anyhow::Result<crate::server::Berth> {
    berth_from(&kit.checkout, "cache", work, name, manifest).await
}

/// [`berth`] from `checkout`, with the compile cache `<work>/<cache>`: an earlier berth
/// keeps its own, since it may not read this one's.
pub async fn berth_from(
    checkout: &Checkout,
    cache: &str,
    work: &tempfile::TempDir,
    name: &str,
    manifest: &str,
) -> anyhow::Result<crate::server::Berth> {
    let (berth, _) = crate::server::Berth::start(
        checkout,
        name,
        &checkout.root.join(manifest),
        work.path().join(format!("{name}-data")),
        &work.path().join(cache),
        work.path(),
    )
    .await?;
    Ok(berth)
}

/// One contestant: a running server and the load it gets.
pub struct Contestant<'a> {
    pub name: &'a str,
    pub server: &'a mut Server,
    pub load: Load<'a>,
}

/// Runs every contestant `settings.rounds` times in rotating order, after an unrecorded
/// warm-up each, and summarises each one's runs.
pub async fn alternate(
    kit: &Kit,
    settings: &Settings,
    scratch: &Path,
    contestants: &mut [Contestant<'_>],
) -> anyhow::Result<Vec<Summary>> {
    if !settings.warmup.is_zero() {
        for c in contestants.iter() {
            let warmup = Load {
                duration: settings.warmup,
                ..c.load.clone()
            };
            load::wrk(&kit.wrk, scratch, &warmup).await?;
        }
    }
    let n = contestants.len();
    let mut runs: Vec<Vec<Stats>> = vec![Vec::new(); n];
    for round in 0..settings.rounds as usize {
        for k in 0..n {
            let i = (round + k) % n;
            let c = &mut contestants[i];
            let stats = load::wrk(&kit.wrk, scratch, &c.load).await?;
            c.server.check_alive()?;
            eprintln!(
                "    {:<16} round {} {:>9.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  failed {}",
                c.name,
                round + 1,
                stats.rps(),
                stats.p50_us as f64 / 1e3,
                stats.p99_us as f64 / 1e3,
                stats.failures()
            );
            runs[i].push(stats);
        }
    }
    Ok(runs.into_iter().map(Summary::of).collect())
}

/// The usual table row of a load summary.
pub fn row(name: &str, s: &Summary) -> Vec<String> {
    vec![
        name.to_owned(),
        number(s.rps),
        number(s.p50_ms),
        number(s.p99_ms),
        s.failures.to_string(),
    ]
}

pub fn load_columns() -> Vec<String> {
    ["server", "req/s", "p50 ms", "p99 ms", "failed"]
        .map(str::to_owned)
        .to_vec()
}

pub fn summaries_json(names: &[&str], summaries: &[Summary]) -> Value {
    let mut map = serde_json::Map::new();
    for (name, s) in names.iter().zip(summaries) {
        map.insert((*name).to_owned(), json!(s));
    }
    Value::Object(map)
}

/// Registers a user and logs in: its id and bearer token. Same API on berth and on the
/// Node.js baseline.
pub async fn user(
    client: &reqwest::Client,
    base: &str,
    email: &str,
) -> anyhow::Result<(String, String)> {
    use anyhow::Context as _;
    let password = "correct horse battery";
    let registered = client
        .post(format!("{base}/api/v1/users/register"))
        .json(&json!({"email": email, "password": password, "firstName": "Ada", "lastName": "Lovelace"}))
        .send()
        .await?;
    anyhow::ensure!(
        registered.status().as_u16() == 201,
        "registering at {base} answered {}: {}",
        registered.status(),
        registered.text().await.unwrap_or_default()
    );
    let login: Value = client
        .post(format!("{base}/api/v1/users/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await?
        .error_for_status()
        .with_context(|| format!("logging in at {base}"))?
        .json()
        .await?;
    let id = login["user"]["id"]
        .as_str()
        .context("the login names no user id")?;
    let token = login["token"].as_str().context("the login has no token")?;
    Ok((id.to_owned(), token.to_owned()))
}

/// `<admin>/metrics` as text; `None` if it cannot be read.
pub async fn metrics(client: &reqwest::Client, admin: &str) -> Option<String> {
    client
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .ok()?
        .error_for_status()
        .ok()?
        .text()
        .await
        .ok()
}

/// The value of counter `name` (OpenMetrics adds `_total`) on the line with exactly these
/// `labels`, written as the exposition writes them: `signal="spans"`,
/// `component="chain",destination="hello.spin.internal"`.
pub fn counter(text: &str, name: &str, labels: &str) -> Option<u64> {
    let labels = format!("{{{labels}}} ");
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let rest = rest.strip_prefix("_total").unwrap_or(rest);
        let value = rest.strip_prefix(&labels)?.split_whitespace().next()?;
        value.parse::<f64>().ok().map(|v| v as u64)
    })
}
