//! What a call policy costs on the service-chaining path: the same two-component app
//! (`bench/chain.toml`: `chain` answers every request with what the private `hello`
//! answers it over `http://hello.spin.internal/`) on two berth hosts, side by side, one
//! with no call policy and one with [`POLICY`] on `hello.spin.internal` (a timeout,
//! retries with a per-try timeout, a circuit breaker). They take turns under wrk on
//! `GET /`, in an order that rotates every round.
//!
//! The policy's copy of the manifest is written to the scratch directory from the base
//! one. The host with the policy must count every chained call in `berth_mesh_calls` and
//! the other must count none, or the comparison means nothing and the scenario fails.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde_json::json;

use super::{Contestant, alternate, counter, metrics, summaries_json};
use crate::Settings;
use crate::load::{Load, Summary};
use crate::report::{Better, Report, Table, number};
use crate::server::Berth;
use crate::tools::{Kit, step};

const CONNECTIONS: u32 = 32;
/// The app, relative to the repository.
const MANIFEST: &str = "bench/chain.toml";
/// The component that makes the chained call, and where it calls.
const CALLER: &str = "chain";
const DESTINATION: &str = "hello.spin.internal";
/// `[component.chain.tool.berth.calls."hello.spin.internal"]` of the host with a policy:
/// every part of the layer a call goes through when nothing fails.
const POLICY: &str = "timeout_ms = 2000
retries = 2
per_try_timeout_ms = 1000
consecutive_failures = 5
";
/// Without first: the ratios are the second ÷ the first.
const HOSTS: [Policy; 2] = [Policy::Without, Policy::With];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Policy {
    Without,
    With,
}

impl Policy {
    fn name(self) -> &'static str {
        match self {
            Policy::Without => "no policy",
            Policy::With => "with policy",
        }
    }

    /// A short name for files and the JSON.
    fn slug(self) -> &'static str {
        match self {
            Policy::Without => "none",
            Policy::With => "policy",
        }
    }
}

/// What a host's `/metrics` says of the chained destination: `None` where there is no
/// such counter (no policy, no counters).
#[derive(Debug, Default, PartialEq, Eq, serde::Serialize)]
struct MeshCounters {
    calls: Option<u64>,
    retries: Option<u64>,
    timeouts: Option<u64>,
    short_circuited: Option<u64>,
}

impl MeshCounters {
    fn parse(text: &str) -> MeshCounters {
        let labels = format!("component=\"{CALLER}\",destination=\"{DESTINATION}\"");
        let read = |name: &str| counter(text, name, &labels);
        MeshCounters {
            calls: read("berth_mesh_calls"),
            retries: read("berth_mesh_retries"),
            timeouts: read("berth_mesh_timeouts"),
            short_circuited: read("berth_mesh_short_circuited"),
        }
    }
}

pub async fn run(
    kit: &Kit,
    settings: &Settings,
    work: &tempfile::TempDir,
    report: &mut Report,
) -> anyhow::Result<()> {
    step("mesh: a chained call with no call policy and with one, side by side");
    let root = &kit.checkout.root;
    let base = root.join(MANIFEST);
    let text = std::fs::read_to_string(&base)
        .with_context(|| format!("cannot read {}", base.display()))?;
    let dir = base.parent().unwrap_or(root);
    let with_policy = work.path().join("chain-policy.toml");
    std::fs::write(&with_policy, with_policy_manifest(&text, dir)?)
        .with_context(|| format!("cannot write {}", with_policy.display()))?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;

    // One after the other: the first compiles into the shared cache, the second reads it.
    let mut hosts: Vec<(Policy, Berth)> = Vec::new();
    for policy in HOSTS {
        let manifest: &Path = match policy {
            Policy::Without => &base,
            Policy::With => &with_policy,
        };
        let name = format!("mesh-{}", policy.slug());
        let (berth, _) = Berth::start(
            &kit.checkout,
            &name,
            manifest,
            work.path().join(format!("{name}-data")),
            &work.path().join("cache"),
            work.path(),
        )
        .await
        .with_context(|| format!("cannot start the chained app with {}", policy.name()))?;
        chains(&client, &berth.server.url)
            .await
            .with_context(|| format!("{}: see {}", policy.name(), log(work, &berth).display()))?;
        hosts.push((policy, berth));
    }

    let urls: Vec<String> = hosts
        .iter()
        .map(|(_, b)| format!("{}/", b.server.url))
        .collect();
    let names: Vec<&str> = hosts.iter().map(|(p, _)| p.name()).collect();
    let summaries = {
        let mut contestants: Vec<Contestant<'_>> = hosts
            .iter_mut()
            .zip(&urls)
            .map(|((policy, berth), url)| Contestant {
                name: policy.name(),
                server: &mut berth.server,
                load: Load {
                    url,
                    connections: CONNECTIONS,
                    duration: settings.duration,
                    headers: &[],
                    body: None,
                },
            })
            .collect();
        alternate(kit, settings, work.path(), &mut contestants).await?
    };
    anyhow::ensure!(
        summaries.iter().all(|s| s.failures == 0),
        "chained GETs failed (no policy {}, with policy {}); see the logs in {}",
        summaries[0].failures,
        summaries[1].failures,
        work.path().display()
    );

    // The policy really was in the path of every call on one host, and of none on the other.
    let mut counters = Vec::new();
    for (policy, berth) in &hosts {
        let text = metrics(&client, &berth.admin)
            .await
            .with_context(|| format!("cannot read {}/metrics ({})", berth.admin, policy.name()))?;
        counters.push(MeshCounters::parse(&text));
    }
    let measured: u64 = summaries[1].runs.iter().map(|s| s.requests).sum();
    anyhow::ensure!(
        counters[0].calls.is_none(),
        "`{}` counted calls under a policy ({:?}): it should have none; see {}",
        hosts[0].0.name(),
        counters[0].calls,
        log(work, &hosts[0].1).display()
    );
    anyhow::ensure!(
        counters[1].calls.is_some_and(|calls| calls >= measured),
        "`{}` counted {:?} calls to {DESTINATION} under its policy for {measured} requests: \
         the policy was not on the path, so the comparison means nothing; see {}",
        hosts[1].0.name(),
        counters[1].calls,
        log(work, &hosts[1].1).display()
    );

    let (without, with) = (&summaries[0], &summaries[1]);
    report.goal(
        "mesh: with ÷ without a call policy, chained req/s",
        with.rps / without.rps,
        Better::Higher,
        0.95,
        "×",
    );
    report.figure(
        "mesh: with ÷ without a call policy, p99 of a chained GET",
        with.p99_ms / without.p99_ms,
        "×",
        "latency under the same load; both hosts and wrk share the cores",
    );
    report
        .tables
        .push(rounds_table(settings, &names, &summaries, &counters));
    let mut mesh = serde_json::Map::new();
    for ((policy, _), c) in hosts.iter().zip(&counters) {
        mesh.insert(policy.slug().to_owned(), json!(c));
    }
    report.scenarios.insert(
        "mesh".into(),
        json!({
            "chained_get": summaries_json(&names, &summaries),
            "policy": toml::from_str::<toml::Table>(POLICY)?,
            "mesh_counters": mesh,
        }),
    );
    for (_, berth) in hosts {
        berth.server.stop().await;
    }
    Ok(())
}

/// `base` (a manifest in `dir`, an absolute path) with [`POLICY`] on the caller's calls to
/// the destination, to be written anywhere: each local `source` made absolute, and no
/// `build` (the base manifest's builds are what the harness runs).
fn with_policy_manifest(base: &str, dir: &Path) -> anyhow::Result<String> {
    let mut manifest: toml::Table = base.parse().context("the chained app's manifest")?;
    let components = manifest
        .get_mut("component")
        .and_then(toml::Value::as_table_mut)
        .context("the chained app's manifest has no [component.*]")?;
    for (_, component) in components.iter_mut() {
        let Some(component) = component.as_table_mut() else {
            continue;
        };
        component.remove("build");
        if let Some(toml::Value::String(source)) = component.get_mut("source") {
            let absolute = dir.join(source.as_str()).to_string_lossy().into_owned();
            *source = absolute;
        }
    }
    let caller = components
        .get_mut(CALLER)
        .and_then(toml::Value::as_table_mut)
        .with_context(|| format!("the chained app's manifest has no [component.{CALLER}]"))?;
    let tool = table(caller, "tool")?;
    let berth = table(tool, "berth")?;
    let calls = table(berth, "calls")?;
    calls.insert(
        DESTINATION.to_owned(),
        toml::Value::Table(POLICY.parse().context("the harness's call policy")?),
    );
    Ok(toml::to_string(&manifest)?)
}

/// `parent.<key>`, created empty if missing.
fn table<'t>(parent: &'t mut toml::Table, key: &str) -> anyhow::Result<&'t mut toml::Table> {
    parent
        .entry(key)
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .with_context(|| format!("`{key}` in the chained app's manifest is not a table"))
}

/// One chained GET answers 200 `hello`: the app works before it is measured.
async fn chains(client: &reqwest::Client, url: &str) -> anyhow::Result<()> {
    let response = client.get(format!("{url}/")).send().await?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    anyhow::ensure!(
        status == 200 && body == "hello",
        "a chained GET {url}/ answered {status}: {body}"
    );
    Ok(())
}

fn log(work: &tempfile::TempDir, berth: &Berth) -> PathBuf {
    work.path().join(format!("{}.log", berth.server.name))
}

/// Every round per host, the medians, and what the host's mesh counted.
fn rounds_table(
    settings: &Settings,
    names: &[&str],
    summaries: &[Summary],
    counters: &[MeshCounters],
) -> Table {
    let count = |n: Option<u64>| n.map_or_else(|| "-".to_owned(), |n| n.to_string());
    let mut columns = vec!["host".to_owned()];
    columns.extend((1..=settings.rounds).map(|r| format!("round {r} req/s")));
    columns.extend(
        [
            "median req/s",
            "p50 ms",
            "p99 ms",
            "failed",
            "mesh calls",
            "retries",
            "timeouts",
        ]
        .map(str::to_owned),
    );
    Table {
        title: format!(
            "mesh: GET / on `{CALLER}`, which calls http://{DESTINATION}/ ({CONNECTIONS} \
             connections, medians of latency); hosts take turns; the policy: {}",
            POLICY.trim().replace('\n', ", ")
        ),
        columns,
        rows: names
            .iter()
            .zip(summaries.iter().zip(counters))
            .map(|(name, (s, c))| {
                let mut row = vec![(*name).to_owned()];
                row.extend(s.runs.iter().map(|r| number(r.rps())));
                row.extend([
                    number(s.rps),
                    number(s.p50_ms),
                    number(s.p99_ms),
                    s.failures.to_string(),
                    count(c.calls),
                    count(c.retries),
                    count(c.timeouts),
                ]);
                row
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_copy_adds_the_policy_and_finds_its_wasm_from_anywhere() {
        let base = "spin_manifest_version = 2\n\
                    [application]\nname = \"bench-chain\"\n\
                    [[trigger.http]]\nroute = \"/...\"\ncomponent = \"chain\"\n\
                    [component.chain]\nsource = \"../target/chain.wasm\"\n\
                    allowed_outbound_hosts = [\"http://hello.spin.internal\"]\n\
                    [component.chain.build]\ncommand = \"cargo build\"\nworkdir = \"..\"\n\
                    [component.hello]\nsource = \"/abs/hello.wasm\"\n";
        let copy: toml::Table = with_policy_manifest(base, Path::new("/repo/bench"))
            .unwrap()
            .parse()
            .unwrap();
        let chain = &copy["component"]["chain"];
        assert_eq!(
            chain["source"].as_str(),
            Some("/repo/bench/../target/chain.wasm")
        );
        assert!(chain.get("build").is_none());
        assert_eq!(
            copy["component"]["hello"]["source"].as_str(),
            Some("/abs/hello.wasm")
        );
        let policy = &chain["tool"]["berth"]["calls"]["hello.spin.internal"];
        assert_eq!(policy["timeout_ms"].as_integer(), Some(2000));
        assert_eq!(policy["retries"].as_integer(), Some(2));
        assert_eq!(policy["per_try_timeout_ms"].as_integer(), Some(1000));
        assert_eq!(policy["consecutive_failures"].as_integer(), Some(5));
        assert_eq!(
            copy["trigger"]["http"][0]["component"].as_str(),
            Some("chain")
        );
        assert_eq!(
            chain["allowed_outbound_hosts"][0].as_str(),
            Some("http://hello.spin.internal")
        );
    }

    #[test]
    fn mesh_counters_are_read_for_the_chained_destination_only() {
        let text = "# TYPE berth_mesh_calls counter\n\
                    berth_mesh_calls_total{component=\"chain\",destination=\"hello.spin.internal\"} 41000\n\
                    berth_mesh_calls_total{component=\"other\",destination=\"hello.spin.internal\"} 7\n\
                    berth_mesh_retries_total{component=\"chain\",destination=\"hello.spin.internal\"} 0\n\
                    berth_mesh_timeouts_total{component=\"chain\",destination=\"api.example.com\"} 3\n";
        assert_eq!(
            MeshCounters::parse(text),
            MeshCounters {
                calls: Some(41000),
                retries: Some(0),
                timeouts: None,
                short_circuited: None,
            }
        );
        assert_eq!(MeshCounters::parse(""), MeshCounters::default());
    }
}
