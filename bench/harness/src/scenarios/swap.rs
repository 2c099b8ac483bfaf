//! Hot swap under load: hello answers steady load while new versions of it are deployed one
//! after another through the admin API; every request must succeed. The same load without
//! deploys, just before, is the baseline for the latency.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{Value, json};

use super::{load_columns, row};
use crate::Settings;
use crate::load::{self, Load, Summary};
use crate::report::{Better, Report, Table, number};
use crate::tools::{Kit, step, variant};

const CONNECTIONS: u32 = 32;

pub async fn run(
    kit: &Kit,
    settings: &Settings,
    work: &tempfile::TempDir,
    report: &mut Report,
) -> anyhow::Result<()> {
    step(&format!(
        "hot swap: {} deploys of hello while it serves",
        settings.swaps
    ));
    let berth = super::berth(kit, work, "berth-swap", "bench/hello.toml").await?;
    let token = berth.admin_token()?;
    let url = format!("{}/", berth.server.url);
    let hello = std::fs::read(&kit.hello_wasm)
        .with_context(|| format!("cannot read {}", kit.hello_wasm.display()))?;
    // Compiling each new version takes a core for a while: spacing the deploys keeps the
    // measurement about swapping, not about a compiler hogging half the machine.
    let pace = if settings.smoke {
        Duration::from_millis(300)
    } else {
        Duration::from_millis(600)
    };
    let swap_time = pace * settings.swaps + Duration::from_secs(2);
    let steady_load = Load {
        url: &url,
        connections: CONNECTIONS,
        duration: swap_time,
        headers: &[],
        body: None,
    };
    let steady = load::wrk(&kit.wrk, work.path(), &steady_load).await?;

    let deploys = {
        let client = reqwest::Client::new();
        let deploy_url = format!("{}/admin/v1/components/hello/versions", berth.admin);
        let swaps = settings.swaps;
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let mut outcomes = Vec::new();
            for i in 0..swaps {
                let started = Instant::now();
                let wasm = variant(&hello, &format!("swap-{i}"));
                let reply = client
                    .post(&deploy_url)
                    .bearer_auth(&token)
                    .body(wasm)
                    .send()
                    .await;
                let outcome = match reply {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let body: Value = r.json().await.unwrap_or_default();
                        json!({"status": status, "tookMs": body["tookMs"], "clientMs": started.elapsed().as_secs_f64() * 1e3})
                    }
                    Err(e) => json!({"status": 0, "error": e.to_string()}),
                };
                outcomes.push(outcome);
                tokio::time::sleep(pace.saturating_sub(started.elapsed())).await;
            }
            outcomes
        })
    };
    let swapping = load::wrk(&kit.wrk, work.path(), &steady_load).await?;
    let deploys = deploys.await.context("the deploying task panicked")?;
    let mut berth = berth.server;
    berth.check_alive()?;
    berth.stop().await;

    let refused: Vec<&Value> = deploys.iter().filter(|d| d["status"] != 201).collect();
    anyhow::ensure!(refused.is_empty(), "deploys failed: {refused:?}");
    let (steady, swapping) = (Summary::of(vec![steady]), Summary::of(vec![swapping]));
    report.goal(
        &format!("hot swap: failed requests across {} swaps", settings.swaps),
        swapping.failures as f64,
        Better::Lower,
        0.0,
        "failures",
    );
    report.goal(
        &format!(
            "hot swap: p99 while swapping ÷ steady, {} swaps",
            settings.swaps
        ),
        swapping.p99_ms / steady.p99_ms,
        Better::Lower,
        1.5,
        "×",
    );
    let mut took: Vec<f64> = deploys
        .iter()
        .filter_map(|d| d["clientMs"].as_f64())
        .collect();
    took.sort_by(f64::total_cmp);
    report.tables.push(Table {
        title: format!(
            "hot swap: {CONNECTIONS} connections on hello, {} deploys {} ms apart (median deploy {} ms); p99 while swapping ÷ steady: {}",
            settings.swaps,
            pace.as_millis(),
            number(took.get(took.len() / 2).copied().unwrap_or(0.0)),
            number(swapping.p99_ms / steady.p99_ms)
        ),
        columns: load_columns(),
        rows: vec![row("steady", &steady), row("swapping", &swapping)],
    });
    report.scenarios.insert(
        "swap".into(),
        json!({"steady": steady, "swapping": swapping, "deploys": deploys}),
    );
    Ok(())
}
