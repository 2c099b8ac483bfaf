//! `berth-bench`: builds what it needs, starts berth and its baselines side by side on
//! 127.0.0.1, loads them in alternation with wrk, and writes `latest.json`, `latest.md` and
//! `ratios.svg`. Results are ratios from one sitting; absolute numbers only orient.
//!
//! `--smoke` runs every scenario for about a second against debug builds, so CI keeps the
//! harness working without taking any timing seriously.

mod load;
mod report;
mod scenarios;
mod server;
mod services;
mod tools;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;

use report::Report;

#[derive(Parser)]
#[command(
    name = "berth-bench",
    about = "Benchmarks berth against wasmtime serve, native hyper and a Node.js service",
    after_help = "Examples:
  cargo run --release -p berth-bench                 # every scenario, results in bench/results
  cargo run --release -p berth-bench -- --only hello # one scenario
  cargo run -p berth-bench -- --smoke                # a second each, debug builds (CI)
  cargo run --release -p berth-bench -- --only saga --against ../before
                                                     # the saga against an earlier commit
  cargo run --release -p berth-bench -- --only saga_fleet --out bench/results/saga-postgres
                                                     # the saga on PostgreSQL + NATS, 1 and 2 hosts
  cargo run --release -p berth-bench -- --only otel --out bench/results/otel
                                                     # OTLP export on (to a live receiver) and off
  cargo run --release -p berth-bench -- --only mesh --out bench/results/mesh
                                                     # a chained call without and with a call policy"
)]
struct Args {
    /// Run every scenario for about a second on debug builds: checks the harness, measures
    /// nothing worth keeping. Writes to bench/results/smoke unless --out says otherwise.
    #[arg(long)]
    smoke: bool,
    /// Only these scenarios (comma-separated): hello, real, saga, saga_fleet, otel, mesh,
    /// swap, startup.
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    only: Vec<String>,
    /// Measured runs per server; servers take turns, in a rotating order.
    #[arg(long, value_name = "N")]
    rounds: Option<u32>,
    /// Seconds per measured load run.
    #[arg(long, value_name = "SECS")]
    duration: Option<u64>,
    /// Where to write latest.json, latest.md and ratios.svg.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// A checkout of an earlier berth (`git worktree add ../before <rev>`): the saga also
    /// runs on it, side by side, and the report gives this ÷ that.
    #[arg(long, value_name = "DIR")]
    against: Option<PathBuf>,
}

/// How hard and how long to measure; one value for the whole sitting.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Settings {
    pub smoke: bool,
    pub rounds: u32,
    #[serde(with = "secs")]
    pub duration: Duration,
    /// Unrecorded load before a server's first measured run.
    #[serde(with = "secs")]
    pub warmup: Duration,
    /// Swaps in the hot-swap scenario.
    pub swaps: u32,
    /// Components in the many-components memory measurement.
    pub many_components: u32,
}

mod secs {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

pub const SCENARIOS: [&str; 8] = [
    "hello",
    "real",
    "saga",
    "saga_fleet",
    "otel",
    "mesh",
    "swap",
    "startup",
];

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Err(e) = run(args).await {
        eprintln!("berth-bench: {e:#}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    for name in &args.only {
        anyhow::ensure!(
            SCENARIOS.contains(&name.as_str()),
            "unknown scenario `{name}`; choose from {}",
            SCENARIOS.join(", ")
        );
    }
    let settings = Settings {
        smoke: args.smoke,
        rounds: args.rounds.unwrap_or(if args.smoke { 1 } else { 3 }).max(1),
        duration: Duration::from_secs(args.duration.unwrap_or(if args.smoke { 1 } else { 10 })),
        warmup: if args.smoke {
            Duration::ZERO
        } else {
            Duration::from_secs(2)
        },
        swaps: if args.smoke { 2 } else { 100 },
        many_components: if args.smoke { 10 } else { 200 },
    };
    let root = tools::repo_root();
    let out = args.out.unwrap_or_else(|| {
        root.join(if args.smoke {
            "bench/results/smoke"
        } else {
            "bench/results"
        })
    });
    let selected = |name: &str| args.only.is_empty() || args.only.iter().any(|n| n == name);

    let kit = tools::prepare(&root, args.against.as_deref(), &settings, selected)
        .await
        .context("cannot prepare the benchmark")?;
    let mut report = Report::new(&settings);
    let work = tempfile::Builder::new()
        .prefix("berth-bench-")
        .tempdir()
        .context("cannot create a scratch directory")?;
    if selected("hello") {
        scenarios::hello::run(&kit, &settings, &work, &mut report).await?;
    }
    if selected("real") {
        scenarios::real::run(&kit, &settings, &work, &mut report).await?;
    }
    if selected("saga") {
        scenarios::saga::run(&kit, &settings, &work, &mut report).await?;
    }
    if selected("saga_fleet") {
        scenarios::saga_fleet::run(&kit, &settings, &work, &mut report).await?;
    }
    if selected("otel") {
        scenarios::otel::run(&kit, &settings, &work, &mut report).await?;
    }
    if selected("mesh") {
        scenarios::mesh::run(&kit, &settings, &work, &mut report).await?;
    }
    if selected("swap") {
        scenarios::swap::run(&kit, &settings, &work, &mut report).await?;
    }
    if selected("startup") {
        scenarios::startup::run(&kit, &settings, &work, &mut report).await?;
    }
    report.write(&out)?;
    println!("\n{}", report.markdown());
    println!("wrote {}", out.display());
    Ok(())
}
