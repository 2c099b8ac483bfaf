//! What OpenTelemetry export costs: two berth hosts on the shop, side by side, one with no
//! `OTEL_*` variable at all (export off) and one exporting its spans and its guests' log
//! lines over OTLP/HTTP (protobuf) to a live receiver inside the harness (export on, the
//! SDK's defaults otherwise). They take turns under two loads, in an order that rotates
//! every round: wrk on `GET /api/v1/users/{id}` (a bearer token checked, one SQLite read,
//! spans on every request) and the saga's order flows.
//!
//! The receiver answers `POST /v1/traces` and `/v1/logs` as a collector does (200, an empty
//! `application/x-protobuf` body, after reading the whole request) and counts requests and
//! bytes, so the report shows that export really happened; if the export-on host sent
//! nothing, the scenario fails.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use http_body_util::{BodyExt as _, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde_json::json;

use super::saga::{CLIENTS, Round, one_round, order};
use super::{Contestant, alternate, counter, metrics, summaries_json, user};
use crate::Settings;
use crate::load::{Load, Summary};
use crate::report::{Better, Report, Table, number};
use crate::server::{Berth, Setup};
use crate::tools::{Kit, step};

const CONNECTIONS: u32 = 32;
/// How long the export-on host may take to send its first batch after the runs: the span
/// processor sends every 5 s, or sooner when 512 spans are waiting.
const EXPORT_WAIT: Duration = Duration::from_secs(15);
/// Off first: the ratios are the second ÷ the first.
const EXPORTS: [Export; 2] = [Export::Off, Export::On];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Export {
    Off,
    On,
}

impl Export {
    fn name(self) -> &'static str {
        match self {
            Export::Off => "export off",
            Export::On => "export on",
        }
    }

    /// A short name for files and the JSON.
    fn slug(self) -> &'static str {
        match self {
            Export::Off => "off",
            Export::On => "on",
        }
    }
}

/// One berth running the shop, with a signed-in customer and its saga rounds so far.
struct Host {
    export: Export,
    berth: Berth,
    /// The customer's own profile: what wrk reads.
    profile: String,
    token: String,
    saga: Vec<Round>,
}

pub async fn run(
    kit: &Kit,
    settings: &Settings,
    work: &tempfile::TempDir,
    report: &mut Report,
) -> anyhow::Result<()> {
    step("otel: the shop with OTLP export off and on (to a live receiver), side by side");
    let receiver = Receiver::start().await?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    // One after the other: the first compiles into the shared cache, the second reads it.
    let mut hosts = Vec::new();
    for export in EXPORTS {
        let host = Host::start(kit, work, export, &receiver, &client)
            .await
            .with_context(|| format!("cannot start the shop with {}", export.name()))?;
        hosts.push(host);
    }

    // Requests per second: every host's runs with wrk, taking turns.
    let auths: Vec<String> = hosts
        .iter()
        .map(|h| format!("Bearer {}", h.token))
        .collect();
    let profiles: Vec<String> = hosts.iter().map(|h| h.profile.clone()).collect();
    let headers: Vec<[(&str, &str); 1]> = auths
        .iter()
        .map(|auth| [("Authorization", auth.as_str())])
        .collect();
    let names: Vec<&str> = hosts.iter().map(|h| h.export.name()).collect();
    let reads = {
        let mut contestants: Vec<Contestant<'_>> = hosts
            .iter_mut()
            .zip(profiles.iter().zip(&headers))
            .map(|(host, (url, headers))| Contestant {
                name: host.export.name(),
                server: &mut host.berth.server,
                load: Load {
                    url,
                    connections: CONNECTIONS,
                    duration: settings.duration,
                    headers,
                    body: None,
                },
            })
            .collect();
        alternate(kit, settings, work.path(), &mut contestants).await?
    };
    anyhow::ensure!(
        reads.iter().all(|s| s.failures == 0),
        "profile reads failed (export off {}, export on {}); see the logs in {}",
        reads[0].failures,
        reads[1].failures,
        work.path().display()
    );

    // Saga flows per second: the saga scenario's rounds, taking turns as it does.
    let order = order();
    for round in 0..settings.rounds as usize {
        for k in 0..hosts.len() {
            let i = (round + k) % hosts.len();
            let host = &mut hosts[i];
            let urls = std::slice::from_ref(&host.berth.server.url);
            let run = one_round(&client, urls, &host.token, &order, settings.duration).await?;
            host.berth.server.check_alive()?;
            eprintln!(
                "    {:<16} round {}: {} orders, {:.0} flows/s, {} not confirmed",
                host.export.name(),
                round + 1,
                run.placed,
                run.flows_per_second,
                run.unconfirmed
            );
            host.saga.push(run);
        }
    }
    for host in &hosts {
        let lost: usize = host.saga.iter().map(|r| r.unconfirmed + r.refused).sum();
        anyhow::ensure!(
            lost == 0,
            "{}: {lost} orders were refused or never confirmed; see {}",
            host.export.name(),
            host.log(work).display()
        );
    }

    // Export really happened: the receiver got something from the export-on host.
    let received = receiver.wait_for_bytes(EXPORT_WAIT).await;
    let exporter = &hosts[1];
    anyhow::ensure!(
        received.traces.bytes + received.logs.bytes > 0,
        "the OTLP receiver at {} got nothing from `{}` within {EXPORT_WAIT:?} of its last run \
         ({} other requests): export did not happen, so the comparison means nothing; see {}",
        receiver.url,
        exporter.export.name(),
        received.other,
        exporter.log(work).display()
    );
    let counters = HostCounters::read(&client, &exporter.berth.admin).await;

    let flows: Vec<f64> = hosts.iter().map(|h| median(&h.saga)).collect();
    let (off, on) = (&reads[0], &reads[1]);
    report.goal(
        "otel: export on ÷ off, requests/s",
        on.rps / off.rps,
        Better::Higher,
        0.9,
        "×",
    );
    report.goal(
        "otel: export on ÷ off, saga flows/s",
        flows[1] / flows[0],
        Better::Higher,
        0.9,
        "×",
    );
    report.figure(
        "otel: export on ÷ off, p99 of GET /api/v1/users/{id}",
        on.p99_ms / off.p99_ms,
        "×",
        "latency under the same load; the receiver runs inside the harness, on the same cores",
    );
    report
        .tables
        .push(rounds_table(settings, &hosts, &reads, &flows));
    report
        .tables
        .push(receiver_table(&received, counters.as_ref()));
    let mut saga = serde_json::Map::new();
    for (host, median) in hosts.iter().zip(&flows) {
        saga.insert(
            host.export.slug().to_owned(),
            json!({"median_flows_per_second": median, "runs": host.saga}),
        );
    }
    report.scenarios.insert(
        "otel".into(),
        json!({
            "get_user": summaries_json(&names, &reads),
            "saga": saga,
            "receiver": received,
            "exporter_counters": counters,
        }),
    );
    for host in hosts {
        host.berth.server.stop().await;
    }
    drop(receiver);
    Ok(())
}

impl Host {
    /// Starts the shop as `otel-<slug>`: none of the harness's own `OTEL_*` variables reach
    /// it, and with export on it gets the receiver as its endpoint and http/protobuf.
    async fn start(
        kit: &Kit,
        work: &tempfile::TempDir,
        export: Export,
        receiver: &Receiver,
        client: &reqwest::Client,
    ) -> anyhow::Result<Host> {
        let mut setup = Setup {
            env_remove: otel_variables(std::env::vars_os().map(|(name, _)| name)),
            ..Setup::default()
        };
        if export == Export::On {
            setup.env = vec![
                (
                    "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
                    receiver.url.clone(),
                ),
                (
                    "OTEL_EXPORTER_OTLP_PROTOCOL".to_owned(),
                    "http/protobuf".to_owned(),
                ),
            ];
        }
        let checkout = &kit.checkout;
        let name = format!("otel-{}", export.slug());
        let (berth, _) = Berth::start_with(
            checkout,
            &name,
            &checkout.root.join("spin.toml"),
            work.path().join(format!("{name}-data")),
            &work.path().join("cache"),
            work.path(),
            &setup,
        )
        .await?;
        let (id, token) = user(client, &berth.server.url, "otel@example.com").await?;
        Ok(Host {
            export,
            profile: format!("{}/api/v1/users/{id}", berth.server.url),
            berth,
            token,
            saga: Vec::new(),
        })
    }

    fn log(&self, work: &tempfile::TempDir) -> std::path::PathBuf {
        work.path().join(format!("{}.log", self.berth.server.name))
    }
}

/// The names among `names` that OpenTelemetry reads (`OTEL_*`).
fn otel_variables(names: impl Iterator<Item = std::ffi::OsString>) -> Vec<String> {
    names
        .filter_map(|name| name.into_string().ok())
        .filter(|name| name.starts_with("OTEL_"))
        .collect()
}

fn median(runs: &[Round]) -> f64 {
    let mut rates: Vec<f64> = runs.iter().map(|r| r.flows_per_second).collect();
    rates.sort_by(f64::total_cmp);
    rates.get(rates.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Every round of both loads, per host, and the medians.
fn rounds_table(settings: &Settings, hosts: &[Host], reads: &[Summary], flows: &[f64]) -> Table {
    let rounds = settings.rounds as usize;
    let mut columns = vec!["host".to_owned()];
    columns.extend((1..=rounds).map(|r| format!("round {r} req/s")));
    columns.extend(["median req/s", "p50 ms", "p99 ms", "failed"].map(str::to_owned));
    columns.extend((1..=rounds).map(|r| format!("round {r} flows/s")));
    columns.extend(["median flows/s", "orders"].map(str::to_owned));
    Table {
        title: format!(
            "otel: OTLP export off and on, GET /api/v1/users/{{id}} ({CONNECTIONS} connections, \
             medians of latency) and the saga ({CLIENTS} clients); hosts take turns"
        ),
        columns,
        rows: hosts
            .iter()
            .zip(reads.iter().zip(flows))
            .map(|(host, (read, flows))| {
                let mut row = vec![host.export.name().to_owned()];
                row.extend(read.runs.iter().map(|s| number(s.rps())));
                row.extend([
                    number(read.rps),
                    number(read.p50_ms),
                    number(read.p99_ms),
                    read.failures.to_string(),
                ]);
                row.extend(host.saga.iter().map(|r| number(r.flows_per_second)));
                row.push(number(*flows));
                row.push(
                    host.saga
                        .iter()
                        .map(|r| r.placed)
                        .sum::<usize>()
                        .to_string(),
                );
                row
            })
            .collect(),
    }
}

/// What the receiver got, beside what the exporting host counted.
fn receiver_table(received: &Received, counters: Option<&HostCounters>) -> Table {
    let count = |n: Option<u64>| n.map_or_else(|| "?".to_owned(), |n| n.to_string());
    let signal = |path: &str, tally: &Tally, mine: Option<&SignalCounters>| {
        vec![
            path.to_owned(),
            tally.requests.to_string(),
            tally.bytes.to_string(),
            count(mine.and_then(|c| c.exported)),
            count(mine.and_then(|c| c.dropped)),
            count(mine.and_then(|c| c.failed_batches)),
        ]
    };
    Table {
        title: "otel: what the live OTLP receiver got (only the export-on host knows it), and \
                the export-on host's own counts from /metrics"
            .to_owned(),
        columns: [
            "OTLP/HTTP path",
            "requests",
            "bytes",
            "exported",
            "dropped (queue full)",
            "failed batches",
        ]
        .map(str::to_owned)
        .to_vec(),
        rows: vec![
            signal(
                "POST /v1/traces (spans)",
                &received.traces,
                counters.map(|c| &c.spans),
            ),
            signal(
                "POST /v1/logs (log records)",
                &received.logs,
                counters.map(|c| &c.logs),
            ),
        ],
    }
}

/// Requests and their body bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
struct Tally {
    requests: u64,
    bytes: u64,
}

/// What the receiver has been sent so far.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
struct Received {
    traces: Tally,
    logs: Tally,
    /// Requests to anything else: answered 404.
    other: u64,
}

#[derive(Default)]
struct Counts {
    traces_requests: AtomicU64,
    traces_bytes: AtomicU64,
    logs_requests: AtomicU64,
    logs_bytes: AtomicU64,
    other: AtomicU64,
}

/// A live OTLP/HTTP receiver on 127.0.0.1, stopped (with its connections) when dropped.
struct Receiver {
    /// `http://127.0.0.1:<port>`: an `OTEL_EXPORTER_OTLP_ENDPOINT`.
    url: String,
    counts: Arc<Counts>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> anyhow::Result<Receiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("the OTLP receiver cannot listen on 127.0.0.1")?;
        let addr = listener.local_addr()?;
        let counts = Arc::new(Counts::default());
        let task = tokio::spawn(serve(listener, counts.clone()));
        Ok(Receiver {
            url: format!("http://{addr}"),
            counts,
            task,
        })
    }

    fn received(&self) -> Received {
        let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
        Received {
            traces: Tally {
                requests: load(&self.counts.traces_requests),
                bytes: load(&self.counts.traces_bytes),
            },
            logs: Tally {
                requests: load(&self.counts.logs_requests),
                bytes: load(&self.counts.logs_bytes),
            },
            other: load(&self.counts.other),
        }
    }

    /// What it has received, once that is anything, or after `patience`.
    async fn wait_for_bytes(&self, patience: Duration) -> Received {
        let deadline = Instant::now() + patience;
        loop {
            let received = self.received();
            if received.traces.bytes + received.logs.bytes > 0 || Instant::now() >= deadline {
                return received;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Accepts connections until aborted; aborting drops the set, and every connection with it.
async fn serve(listener: tokio::net::TcpListener, counts: Arc<Counts>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of descriptors, say: try again in a moment rather than spin.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let counts = counts.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            answer(request, counts.clone())
        });
        connections.spawn(
            hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service),
        );
        while connections.try_join_next().is_some() {}
    }
}

/// What a collector answers: 200 and an empty export response once the request is read, for
/// the two paths berth posts to; 404 for anything else.
async fn answer(
    request: Request<Incoming>,
    counts: Arc<Counts>,
) -> Result<Response<Empty<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let read = body.collect().await.map(|b| b.to_bytes().len() as u64);
    let tally = match (&parts.method, parts.uri.path()) {
        (&Method::POST, "/v1/traces") => Some((&counts.traces_requests, &counts.traces_bytes)),
        (&Method::POST, "/v1/logs") => Some((&counts.logs_requests, &counts.logs_bytes)),
        _ => None,
    };
    let mut response = Response::new(Empty::new());
    match (tally, read) {
        (Some((requests, bytes)), Ok(read)) => {
            requests.fetch_add(1, Ordering::Relaxed);
            bytes.fetch_add(read, Ordering::Relaxed);
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/x-protobuf"),
            );
        }
        (Some(_), Err(_)) => *response.status_mut() = StatusCode::BAD_REQUEST,
        (None, _) => {
            counts.other.fetch_add(1, Ordering::Relaxed);
            *response.status_mut() = StatusCode::NOT_FOUND;
        }
    }
    Ok(response)
}

/// One signal's export counters, as the host's `/metrics` gives them.
#[derive(Debug, Default, PartialEq, Eq, serde::Serialize)]
struct SignalCounters {
    exported: Option<u64>,
    dropped: Option<u64>,
    failed_batches: Option<u64>,
}

/// The export-on host's own account of its export.
#[derive(Debug, serde::Serialize)]
struct HostCounters {
    spans: SignalCounters,
    logs: SignalCounters,
}

impl HostCounters {
    /// From `<admin>/metrics`; `None` if it cannot be read (the table then shows `?`).
    async fn read(client: &reqwest::Client, admin: &str) -> Option<HostCounters> {
        let text = metrics(client, admin).await?;
        Some(HostCounters::parse(&text))
    }

    fn parse(text: &str) -> HostCounters {
        let signal = |signal: &str| {
            let labels = format!("signal=\"{signal}\"");
            SignalCounters {
                exported: counter(text, "berth_otel_exported", &labels),
                dropped: counter(text, "berth_otel_dropped", &labels),
                failed_batches: counter(text, "berth_otel_export_failures", &labels),
            }
        };
        HostCounters {
            spans: signal("spans"),
            logs: signal("logs"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_otel_variables_are_kept_from_the_environment() {
        let names = [
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "PATH",
            "OTEL_SERVICE_NAME",
            "XOTEL_A",
        ]
        .map(std::ffi::OsString::from);
        assert_eq!(
            otel_variables(names.into_iter()),
            ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SERVICE_NAME"]
        );
    }

    #[test]
    fn counters_are_read_per_signal() {
        let text = "# HELP berth_otel_exported Spans and log records an OTLP collector accepted.\n\
                    # TYPE berth_otel_exported counter\n\
                    berth_otel_exported_total{signal=\"spans\"} 1200\n\
                    berth_otel_exported_total{signal=\"logs\"} 7\n\
                    berth_otel_dropped_total{signal=\"spans\"} 3\n";
        let counters = HostCounters::parse(text);
        assert_eq!(counters.spans.exported, Some(1200));
        assert_eq!(counters.logs.exported, Some(7));
        assert_eq!(counters.spans.dropped, Some(3));
        assert_eq!(counters.logs.dropped, None);
        assert_eq!(counters.spans.failed_batches, None);
    }

    #[tokio::test]
    async fn the_receiver_answers_like_a_collector_and_counts() {
        let receiver = Receiver::start().await.unwrap();
        let client = reqwest::Client::new();
        let traces = client
            .post(format!("{}/v1/traces", receiver.url))
            .header("content-type", "application/x-protobuf")
            .body(vec![1u8; 300])
            .send()
            .await
            .unwrap();
        assert_eq!(traces.status(), 200);
        assert_eq!(traces.headers()["content-type"], "application/x-protobuf");
        assert!(traces.bytes().await.unwrap().is_empty());
        let logs = client
            .post(format!("{}/v1/logs", receiver.url))
            .body(vec![2u8; 20])
            .send()
            .await
            .unwrap();
        assert_eq!(logs.status(), 200);
        let other = client
            .get(format!("{}/v1/metrics", receiver.url))
            .send()
            .await
            .unwrap();
        assert_eq!(other.status(), 404);
        let received = receiver.wait_for_bytes(Duration::from_secs(1)).await;
        assert_eq!(
            received.traces,
            Tally {
                requests: 1,
                bytes: 300
            }
        );
        assert_eq!(
            received.logs,
            Tally {
                requests: 1,
                bytes: 20
            }
        );
        assert_eq!(received.other, 1);
    }

    #[test]
    fn the_median_is_the_middle_round() {
        let round = |flows_per_second| Round {
            placed: 1,
            refused: 0,
            unconfirmed: 0,
            elapsed_s: 1.0,
            flows_per_second,
        };
        assert_eq!(median(&[round(3.0), round(1.0), round(2.0)]), 2.0);
        assert!(median(&[]).is_nan());
    }
}
