//! The order saga on the embedded bus: orders are placed as fast as `CLIENTS` clients can
//! for the run's duration, then the harness waits until every one reads `confirmed`. Flows
//! per second are orders confirmed ÷ time from the first order to the last confirmation.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::user;
use crate::Settings;
use crate::report::{Better, Report, Table, number};
use crate::server::Berth;
use crate::tools::{Checkout, Kit, step};

pub(super) const CLIENTS: usize = 16;
/// How long the last orders may take to settle before the run counts them as lost.
const SETTLE: Duration = Duration::from_secs(60);

pub async fn run(
    kit: &Kit,
    settings: &Settings,
    work: &tempfile::TempDir,
    report: &mut Report,
) -> anyhow::Result<()> {
    step("saga: orders placed, paid and confirmed through the embedded bus");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let mut hosts = vec![Host::start(&kit.checkout, "berth", "cache", &client, work).await?];
    if let Some(before) = &kit.before {
        hosts.push(Host::start(before, "berth-against", "cache-against", &client, work).await?);
    }
    let order = order();

    // Hosts take turns, in an order that rotates every round, as in the other scenarios.
    for round in 0..settings.rounds as usize {
        for k in 0..hosts.len() {
            let i = (round + k) % hosts.len();
            let host = &mut hosts[i];
            let urls = std::slice::from_ref(&host.berth.server.url);
            let run = one_round(&client, urls, &host.token, &order, settings.duration).await?;
            eprintln!(
                "    {:<16} round {}: {} orders, {:.0} flows/s, {} not confirmed",
                host.name,
                round + 1,
                run.placed,
                run.flows_per_second,
                run.unconfirmed
            );
            host.runs.push(run);
        }
    }
    let mut medians = Vec::new();
    for host in hosts.iter_mut() {
        host.berth.server.check_alive()?;
        let lost: usize = host.runs.iter().map(|r| r.unconfirmed + r.refused).sum();
        anyhow::ensure!(
            lost == 0,
            "{}: {lost} orders were refused or never confirmed; see {}",
            host.name,
            work.path()
                .join(format!("{}.log", host.berth.server.name))
                .display()
        );
        let mut rates: Vec<f64> = host.runs.iter().map(|r| r.flows_per_second).collect();
        rates.sort_by(f64::total_cmp);
        medians.push(rates[rates.len() / 2]);
    }
    report.goal(
        "saga: complete order flows per second",
        medians[0],
        Better::Higher,
        1000.0,
        "flows/s",
    );
    if let [now, before] = medians[..] {
        // A change may cost the saga at most a tenth of its throughput.
        report.goal(
            "saga: berth ÷ the --against checkout, flows/s",
            now / before,
            Better::Higher,
            0.9,
            "×",
        );
    }
    report.tables.push(Table {
        title: format!("saga: {CLIENTS} clients placing orders, embedded bus"),
        columns: [
            "server",
            "round",
            "orders",
            "flows/s",
            "last confirmed after s",
        ]
        .map(str::to_owned)
        .to_vec(),
        rows: hosts
            .iter()
            .flat_map(|host| {
                host.runs.iter().enumerate().map(|(i, r)| {
                    vec![
                        host.name.to_owned(),
                        (i + 1).to_string(),
                        r.placed.to_string(),
                        number(r.flows_per_second),
                        number(r.elapsed_s),
                    ]
                })
            })
            .collect(),
    });
    let mut hosts = hosts.into_iter();
    if let Some(now) = hosts.next() {
        report.scenarios.insert("saga".into(), json!(now.runs));
        now.berth.server.stop().await;
    }
    if let Some(before) = hosts.next() {
        report
            .scenarios
            .insert("saga_against".into(), json!(before.runs));
        before.berth.server.stop().await;
    }
    Ok(())
}

/// One berth running the shop, with a signed-in customer and its rounds so far.
struct Host {
    name: &'static str,
    berth: Berth,
    token: String,
    runs: Vec<Round>,
}

impl Host {
    /// Starts the shop from `checkout` as `<name>-saga`, compiling into `<work>/<cache>`.
    async fn start(
        checkout: &Checkout,
        name: &'static str,
        cache: &str,
        client: &reqwest::Client,
        work: &tempfile::TempDir,
    ) -> anyhow::Result<Host> {
        let server = format!("{name}-saga");
        let berth = super::berth_from(checkout, cache, work, &server, "spin.toml").await?;
        let (_, token) = user(client, &berth.server.url, "saga@example.com").await?;
        Ok(Host {
            name,
            berth,
            token,
            runs: Vec::new(),
        })
    }
}

/// The order every client places, again and again.
pub(super) fn order() -> Value {
    json!({
        "items": [{"productId": "book-1", "quantity": 1, "unitPriceCents": 1999}],
        "currency": "USD",
        "paymentMethodId": "pm_card_visa",
        "shippingAddress": {"street": "1 Main St", "city": "Springfield", "state": "IL", "zipCode": "62701", "country": "US"}
    })
}

#[derive(serde::Serialize)]
pub(super) struct Round {
    pub placed: usize,
    pub refused: usize,
    pub unconfirmed: usize,
    pub elapsed_s: f64,
    pub flows_per_second: f64,
}

/// `CLIENTS` clients place orders for `duration`, client i at `bases[i % bases.len()]`
/// (hosts of one fleet, which accept each other's tokens), then every order is read back
/// until it is confirmed, from the hosts in turn.
pub(super) async fn one_round(
    client: &reqwest::Client,
    bases: &[String],
    token: &str,
    order: &Value,
    duration: Duration,
) -> anyhow::Result<Round> {
    let started = Instant::now();
    let ids = Arc::new(Mutex::new(Vec::new()));
    let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut clients = Vec::new();
    anyhow::ensure!(!bases.is_empty(), "a saga round needs a host");
    for i in 0..CLIENTS {
        let (client, ids, refused) = (client.clone(), ids.clone(), refused.clone());
        let (url, auth, order) = (
            format!("{}/api/v1/orders", bases[i % bases.len()]),
            format!("Bearer {token}"),
            order.clone(),
        );
        clients.push(tokio::spawn(async move {
            while started.elapsed() < duration {
                let placed = client
                    .post(&url)
                    .header("authorization", &auth)
                    .json(&order)
                    .send()
                    .await;
                let id = match placed {
                    Ok(r) if r.status().as_u16() == 201 => r
                        .json::<Value>()
                        .await
                        .ok()
                        .and_then(|v| v["id"].as_str().map(str::to_owned)),
                    _ => None,
                };
                match id {
                    Some(id) => ids.lock().await.push(id),
                    None => {
                        refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for c in clients {
        c.await.context("a client task panicked")?;
    }
    let mut pending = std::mem::take(&mut *ids.lock().await);
    let placed = pending.len();
    let mut last_confirmed = started.elapsed();
    let settle_by = Instant::now() + SETTLE;
    while !pending.is_empty() && Instant::now() < settle_by {
        let mut still = Vec::new();
        for chunk in pending.chunks(CLIENTS) {
            let checks: Vec<_> = chunk
                .iter()
                .enumerate()
                .map(|(j, id)| {
                    let base = &bases[j % bases.len()];
                    let request = client
                        .get(format!("{base}/api/v1/orders/{id}"))
                        .header("authorization", format!("Bearer {token}"));
                    tokio::spawn(async move {
                        let reply = request.send().await.ok()?.json::<Value>().await.ok()?;
                        reply["status"].as_str().map(str::to_owned)
                    })
                })
                .collect();
            for (id, check) in chunk.iter().zip(checks) {
                if check.await.ok().flatten().as_deref() != Some("confirmed") {
                    still.push(id.clone());
                }
            }
        }
        if still.len() < pending.len() {
            last_confirmed = started.elapsed();
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let elapsed_s = last_confirmed.as_secs_f64();
    let confirmed = placed - pending.len();
    Ok(Round {
        placed,
        refused: refused.load(std::sync::atomic::Ordering::Relaxed),
        unconfirmed: pending.len(),
        elapsed_s,
        flows_per_second: confirmed as f64 / elapsed_s.max(1e-9),
    })
}
