//! Start, deploy and memory: `berth up` to ready with a cold and a warm compile cache,
//! deploy-to-serving for a ~300 KB component (new and already compiled), resident memory
//! idle with the shop, and with many generated hello components loaded.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{Value, json};

use super::user;
use crate::Settings;
use crate::report::{Better, Report, Table, number};
use crate::server::Berth;
use crate::tools::{Kit, step, variant};

const MB: f64 = 1024.0 * 1024.0;

pub async fn run(
    kit: &Kit,
    settings: &Settings,
    work: &tempfile::TempDir,
    report: &mut Report,
) -> anyhow::Result<()> {
    step("start: berth up to ready, cold and warm compile cache");
    let shop = kit.checkout.root.join("spin.toml");
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    let mut idle_rss = 0;
    for round in 0..settings.rounds {
        let cache = work.path().join(format!("start-cache-{round}"));
        for (which, times) in [("cold", &mut cold), ("warm", &mut warm)] {
            let data = work.path().join(format!("start-data-{round}-{which}"));
            let (berth, took) = Berth::start(
                &kit.checkout,
                &format!("berth-start-{which}"),
                &shop,
                data,
                &cache,
                work.path(),
            )
            .await?;
            eprintln!(
                "    round {} {which}: ready in {} ms",
                round + 1,
                took.as_millis()
            );
            times.push(ms(took));
            if which == "warm" && round + 1 == settings.rounds {
                idle_rss = idle_memory(&berth).await?;
            }
            berth.server.stop().await;
        }
    }

    step("deploy: a ~300 KB component, new and already compiled");
    let deploy = deploy_times(kit, settings, work).await?;

    step(&format!(
        "memory: {} generated hello components",
        settings.many_components
    ));
    let (many_ready, many_rss) = many_components(kit, settings, work).await?;

    let (cold_ms, warm_ms) = (median(&cold), median(&warm));
    let (uncached_ms, cached_ms) = (median(&deploy.uncached), median(&deploy.cached));
    report.goal(
        "deploy-to-serving, new version (compiled)",
        uncached_ms,
        Better::Lower,
        1000.0,
        "ms",
    );
    report.goal(
        "deploy-to-serving, cached version",
        cached_ms,
        Better::Lower,
        50.0,
        "ms",
    );
    report.goal(
        "host RSS idle with the shop",
        idle_rss as f64 / MB,
        Better::Lower,
        40.0,
        "MB",
    );
    report.goal(
        &format!("host RSS with {} components", settings.many_components),
        many_rss as f64 / MB,
        Better::Lower,
        300.0,
        "MB",
    );
    let mut title = String::from("start and deploy, medians");
    let _ = write!(title, " (deployed component: {} KB)", deploy.size / 1024);
    report.tables.push(Table {
        title,
        columns: ["measure", "value"].map(str::to_owned).to_vec(),
        rows: vec![
            vec![
                "`berth up` shop to ready, cold cache".into(),
                format!("{} ms", number(cold_ms)),
            ],
            vec![
                "`berth up` shop to ready, warm cache".into(),
                format!("{} ms", number(warm_ms)),
            ],
            vec![
                "deploy-to-serving, new version".into(),
                format!("{} ms", number(uncached_ms)),
            ],
            vec![
                "deploy-to-serving, cached version".into(),
                format!("{} ms", number(cached_ms)),
            ],
            vec![
                "RSS idle with the shop".into(),
                format!("{} MB", number(idle_rss as f64 / MB)),
            ],
            vec![
                format!(
                    "`berth up` with {} components to ready, cold cache",
                    settings.many_components
                ),
                format!("{} ms", number(ms(many_ready))),
            ],
            vec![
                format!(
                    "RSS with {} components, each called once",
                    settings.many_components
                ),
                format!("{} MB", number(many_rss as f64 / MB)),
            ],
        ],
    });
    report.scenarios.insert(
        "startup".into(),
        json!({
            "up_cold_ms": cold, "up_warm_ms": warm,
            "deploy_uncached_ms": deploy.uncached, "deploy_cached_ms": deploy.cached,
            "deploy_wasm_bytes": deploy.size,
            "rss_idle_bytes": idle_rss,
            "many": {"components": settings.many_components, "ready_ms": ms(many_ready), "rss_bytes": many_rss},
        }),
    );
    Ok(())
}

/// Resident memory after the shop served a user's registration, login and profile read,
/// and then sat idle for two seconds.
async fn idle_memory(berth: &Berth) -> anyhow::Result<u64> {
    let client = reqwest::Client::new();
    let (id, token) = user(&client, &berth.server.url, "idle@example.com").await?;
    client
        .get(format!("{}/api/v1/users/{id}", berth.server.url))
        .bearer_auth(token)
        .send()
        .await?
        .error_for_status()?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    berth.server.rss_bytes()
}

struct DeployTimes {
    size: usize,
    uncached: Vec<f64>,
    cached: Vec<f64>,
}

/// Deploys versions of the misbehave test component (~320 KB) to the sandbox app's
/// `bystander`: two new ones per round, then the first again, whose compiled artifact is
/// cached. Each time is from sending the bytes to the first response from the new version.
async fn deploy_times(
    kit: &Kit,
    settings: &Settings,
    work: &tempfile::TempDir,
) -> anyhow::Result<DeployTimes> {
    let berth = super::berth(kit, work, "berth-deploy", "tests/apps/sandbox.toml").await?;
    let wasm = std::fs::read(&kit.misbehave_wasm)
        .with_context(|| format!("cannot read {}", kit.misbehave_wasm.display()))?;
    let token = berth.admin_token()?;
    let client = reqwest::Client::new();
    let mut times = DeployTimes {
        size: wasm.len(),
        uncached: Vec::new(),
        cached: Vec::new(),
    };
    for round in 0..settings.rounds {
        let a = variant(&wasm, &format!("deploy-{round}-a"));
        let b = variant(&wasm, &format!("deploy-{round}-b"));
        for (bytes, expect_cached) in [(&a, false), (&b, false), (&a, true)] {
            let (took, cached) = deploy_to_serving(&client, &berth, &token, bytes).await?;
            anyhow::ensure!(
                cached == expect_cached,
                "a deploy expected {} was {}",
                if expect_cached { "cached" } else { "compiled" },
                if cached { "cached" } else { "compiled" }
            );
            if cached {
                times.cached.push(took);
            } else {
                times.uncached.push(took);
            }
        }
    }
    berth.server.stop().await;
    Ok(times)
}

async fn deploy_to_serving(
    client: &reqwest::Client,
    berth: &Berth,
    token: &str,
    wasm: &[u8],
) -> anyhow::Result<(f64, bool)> {
    let started = Instant::now();
    let reply = client
        .post(format!(
            "{}/admin/v1/components/bystander/versions",
            berth.admin
        ))
        .bearer_auth(token)
        .body(wasm.to_vec())
        .send()
        .await?;
    let status = reply.status();
    let body: Value = reply.json().await.unwrap_or_default();
    anyhow::ensure!(
        status.as_u16() == 201,
        "the deploy answered {status}: {body}"
    );
    let digest = body["digest"]
        .as_str()
        .context("the deploy names no digest")?;
    let short = &digest.trim_start_matches("sha256:")[..12];
    loop {
        let served = client
            .get(format!("{}/bystander/ok", berth.server.url))
            .send()
            .await?;
        if served
            .headers()
            .get("x-berth-version")
            .is_some_and(|v| v == short)
        {
            return Ok((ms(started.elapsed()), body["cached"] == true));
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(10),
            "version {short} was not serving 10 s after its deploy"
        );
    }
}

/// Starts a generated app of distinct hello components (each its own digest, compiled
/// cold), calls each once, and reads the host's resident memory.
async fn many_components(
    kit: &Kit,
    settings: &Settings,
    work: &tempfile::TempDir,
) -> anyhow::Result<(Duration, u64)> {
    let dir = work.path().join("many");
    std::fs::create_dir_all(&dir)?;
    let hello = std::fs::read(&kit.hello_wasm)
        .with_context(|| format!("cannot read {}", kit.hello_wasm.display()))?;
    let n = settings.many_components;
    std::fs::write(dir.join("spin.toml"), many_manifest(n))?;
    for i in 0..n {
        std::fs::write(
            dir.join(format!("c{i}.wasm")),
            variant(&hello, &format!("many-{i}")),
        )?;
    }
    let (berth, took) = Berth::start(
        &kit.checkout,
        "berth-many",
        &dir.join("spin.toml"),
        dir.join("data"),
        &dir.join("cache"),
        work.path(),
    )
    .await?;
    let client = reqwest::Client::new();
    for i in 0..n {
        client
            .get(format!("{}/c{i}/", berth.server.url))
            .send()
            .await?
            .error_for_status()
            .with_context(|| format!("component c{i} did not answer"))?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss = berth.server.rss_bytes()?;
    berth.server.stop().await;
    Ok((took, rss))
}

fn many_manifest(n: u32) -> String {
    let mut toml = String::from("spin_manifest_version = 2\n\n[application]\nname = \"many\"\n");
    for i in 0..n {
        let _ = write!(
            toml,
            "\n[[trigger.http]]\nroute = \"/c{i}/...\"\ncomponent = \"c{i}\"\n\n[component.c{i}]\nsource = \"c{i}.wasm\"\n"
        );
    }
    toml
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}
