//! The order saga on PostgreSQL and NATS JetStream, with one host and with two, side by side
//! with the embedded run (SQLite and the embedded bus), in one sitting: every configuration
//! runs at once and they take turns under the saga's load, in an order that rotates every
//! round. A fourth configuration, PostgreSQL with the embedded bus, separates what the
//! database costs from what the bus does.
//!
//! The harness starts its own PostgreSQL (one database per configuration) and a NATS server
//! per configuration that uses one (so no fleet consumes another's events), on 127.0.0.1,
//! and stops them at the end, or on an error, with everything else.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde_json::json;

use super::saga::{CLIENTS, Round, one_round, order};
use super::user;
use crate::Settings;
use crate::report::{Report, Table, number};
use crate::server::{Berth, Setup};
use crate::services::{Nats, Postgres};
use crate::tools::{Kit, step};

/// The shop's databases, each a schema of its configuration's PostgreSQL database.
const DATABASES: [&str; 4] = ["users", "orders", "payments", "provider"];

/// Where a configuration keeps its data and carries its events.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// SQLite files and the embedded bus: the `saga` scenario's host.
    Embedded,
    /// PostgreSQL, with the embedded bus.
    PostgresEmbeddedBus,
    /// PostgreSQL and NATS JetStream: a fleet of `hosts`.
    PostgresNats { hosts: usize },
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Embedded => "embedded",
            Kind::PostgresEmbeddedBus => "postgres + embedded bus, 1 host",
            Kind::PostgresNats { hosts: 1 } => "postgres, 1 host",
            Kind::PostgresNats { .. } => "postgres, 2 hosts",
        }
    }

    /// A short name for files and databases.
    fn slug(self) -> String {
        match self {
            Kind::Embedded => "embedded".into(),
            Kind::PostgresEmbeddedBus => "pg_embedded_bus".into(),
            Kind::PostgresNats { hosts } => format!("pg_nats_{hosts}"),
        }
    }

    fn hosts(self) -> usize {
        match self {
            Kind::PostgresNats { hosts } => hosts,
            _ => 1,
        }
    }

    fn database(self) -> &'static str {
        match self {
            Kind::Embedded => "SQLite",
            _ => "PostgreSQL",
        }
    }

    fn bus(self) -> &'static str {
        match self {
            Kind::PostgresNats { .. } => "NATS JetStream",
            _ => "embedded",
        }
    }
}

const KINDS: [Kind; 4] = [
    Kind::Embedded,
    Kind::PostgresEmbeddedBus,
    Kind::PostgresNats { hosts: 1 },
    Kind::PostgresNats { hosts: 2 },
];

/// One configuration: its hosts, running; a customer signed in on the first (its token is
/// good on every host of the fleet); its rounds so far.
struct Config {
    kind: Kind,
    hosts: Vec<Berth>,
    urls: Vec<String>,
    token: String,
    runs: Vec<Round>,
    nats: Option<Nats>,
}

pub async fn run(
    kit: &Kit,
    settings: &Settings,
    work: &tempfile::TempDir,
    report: &mut Report,
) -> anyhow::Result<()> {
    step("saga_fleet: the saga on PostgreSQL + NATS (1 and 2 hosts) beside the embedded run");
    if let Some(why) = crate::services::missing() {
        report.skip(format!("saga_fleet: {why}"));
        return Ok(());
    }
    let postgres = Postgres::start()
        .await
        .context("cannot start PostgreSQL for the saga fleet")?;
    let result = measure(kit, settings, work, report, &postgres).await;
    postgres.stop().await;
    result
}

async fn measure(
    kit: &Kit,
    settings: &Settings,
    work: &tempfile::TempDir,
    report: &mut Report,
    postgres: &Postgres,
) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    // One JWT key and one admin token for every PostgreSQL host, as a fleet has.
    let fleet_env = vec![
        ("SPIN_VARIABLE_JWT_SECRET".to_owned(), secret()?),
        ("BERTH_ADMIN_TOKEN".to_owned(), secret()?),
    ];
    let mut configs = Vec::new();
    for kind in KINDS {
        let config = Config::start(kind, kit, work, postgres, &fleet_env, &client)
            .await
            .with_context(|| format!("cannot start the saga's `{}`", kind.name()))?;
        configs.push(config);
    }
    let order = order();

    if !settings.warmup.is_zero() {
        for config in configs.iter_mut() {
            let warmup = one_round(
                &client,
                &config.urls,
                &config.token,
                &order,
                settings.warmup,
            )
            .await?;
            config.ensure_nothing_lost(std::slice::from_ref(&warmup), work, "warm-up")?;
        }
    }
    // Configurations take turns, in an order that rotates every round.
    for round in 0..settings.rounds as usize {
        for k in 0..configs.len() {
            let i = (round + k) % configs.len();
            let config = &mut configs[i];
            let run = one_round(
                &client,
                &config.urls,
                &config.token,
                &order,
                settings.duration,
            )
            .await?;
            for host in config.hosts.iter_mut() {
                host.server.check_alive()?;
            }
            eprintln!(
                "    {:<32} round {}: {} orders, {:.0} flows/s, {} not confirmed",
                config.kind.name(),
                round + 1,
                run.placed,
                run.flows_per_second,
                run.unconfirmed
            );
            config.runs.push(run);
        }
    }
    for config in &configs {
        config.ensure_nothing_lost(&config.runs, work, "measured rounds")?;
    }
    let medians: Vec<f64> = configs.iter().map(|c| median(&c.runs)).collect();
    let median_of = |kind: Kind| {
        KINDS
            .iter()
            .position(|k| *k == kind)
            .map(|i| medians[i])
            .unwrap_or(f64::NAN)
    };
    let embedded = median_of(Kind::Embedded);
    let pg_bus = median_of(Kind::PostgresEmbeddedBus);
    let one = median_of(Kind::PostgresNats { hosts: 1 });
    let two = median_of(Kind::PostgresNats { hosts: 2 });
    report.figure(
        "saga: postgres 1 host ÷ embedded, flows/s",
        one / embedded,
        "×",
        "PostgreSQL + NATS JetStream against SQLite + the embedded bus, one host each",
    );
    report.figure(
        "saga: postgres 2 hosts ÷ postgres 1 host, flows/s",
        two / one,
        "×",
        "both hosts share this machine's cores with PostgreSQL and NATS, so 2.0 is out of reach here",
    );
    report.figure(
        "saga: postgres + embedded bus ÷ embedded, flows/s",
        pg_bus / embedded,
        "×",
        "the database's share: PostgreSQL against SQLite, both on the embedded bus",
    );
    report.figure(
        "saga: postgres 1 host ÷ postgres + embedded bus, flows/s",
        one / pg_bus,
        "×",
        "the bus's share: NATS JetStream against the embedded bus, both on PostgreSQL",
    );

    let rounds = settings.rounds as usize;
    let mut columns: Vec<String> = ["configuration", "hosts", "database", "bus"]
        .map(str::to_owned)
        .to_vec();
    columns.extend((1..=rounds).map(|r| format!("round {r} flows/s")));
    columns.extend(["median flows/s", "orders"].map(str::to_owned));
    report.tables.push(Table {
        title: format!(
            "saga on SQLite and on PostgreSQL: {CLIENTS} clients (alternating across a fleet's hosts) placing orders, flows/s; \
             every host, PostgreSQL and NATS share this machine's {} cores, so 2 hosts cannot double 1",
            report.machine.cores
        ),
        columns,
        rows: configs
            .iter()
            .zip(&medians)
            .map(|(config, median)| {
                let mut row = vec![
                    config.kind.name().to_owned(),
                    config.kind.hosts().to_string(),
                    config.kind.database().to_owned(),
                    config.kind.bus().to_owned(),
                ];
                row.extend(config.runs.iter().map(|r| number(r.flows_per_second)));
                row.push(number(*median));
                row.push(config.runs.iter().map(|r| r.placed).sum::<usize>().to_string());
                row
            })
            .collect(),
    });
    let mut raw = serde_json::Map::new();
    for (config, median) in configs.iter().zip(&medians) {
        raw.insert(
            config.kind.slug(),
            json!({
                "configuration": config.kind.name(),
                "hosts": config.kind.hosts(),
                "database": config.kind.database(),
                "bus": config.kind.bus(),
                "median_flows_per_second": median,
                "runs": config.runs,
            }),
        );
    }
    report
        .scenarios
        .insert("saga_fleet".into(), serde_json::Value::Object(raw));
    for config in configs {
        for host in config.hosts {
            host.server.stop().await;
        }
        if let Some(nats) = config.nats {
            nats.stop().await;
        }
    }
    Ok(())
}

impl Config {
    async fn start(
        kind: Kind,
        kit: &Kit,
        work: &tempfile::TempDir,
        postgres: &Postgres,
        fleet_env: &[(String, String)],
        client: &reqwest::Client,
    ) -> anyhow::Result<Config> {
        let slug = kind.slug();
        let mut nats = None;
        let mut setup = Setup::default();
        if kind != Kind::Embedded {
            let url = postgres.create_database(&format!("saga_{slug}")).await?;
            let mut runtime = String::new();
            for label in DATABASES {
                runtime += &format!(
                    "[sqlite_database.{label}]\ntype = \"postgres\"\nurl_env = \"BERTH_DATABASE_URL\"\n"
                );
            }
            if let Kind::PostgresNats { .. } = kind {
                let server = Nats::start(&format!("fleet-{slug}-nats"), work.path()).await?;
                runtime += &format!("[messaging]\ntype = \"nats\"\nurl = \"{}\"\n", server.url);
                nats = Some(server);
            }
            let path = work.path().join(format!("fleet-{slug}.toml"));
            std::fs::write(&path, runtime)
                .with_context(|| format!("cannot write {}", path.display()))?;
            setup.runtime_config = Some(path);
            setup.env = fleet_env.to_vec();
            setup.env.push(("BERTH_DATABASE_URL".to_owned(), url));
        }
        // One after the other: the first compiles into the shared cache, the rest read it.
        let mut hosts = Vec::new();
        for h in 0..kind.hosts() {
            let name = format!("fleet-{slug}-{}", h + 1);
            hosts.push(start_host(kit, work, &name, &setup).await?);
        }
        let urls: Vec<String> = hosts.iter().map(|h| h.server.url.clone()).collect();
        let (_, token) = user(client, &urls[0], "saga-fleet@example.com").await?;
        Ok(Config {
            kind,
            hosts,
            urls,
            token,
            runs: Vec::new(),
            nats,
        })
    }

    fn ensure_nothing_lost(
        &self,
        runs: &[Round],
        work: &tempfile::TempDir,
        what: &str,
    ) -> anyhow::Result<()> {
        let lost: usize = runs.iter().map(|r| r.unconfirmed + r.refused).sum();
        let logs: Vec<String> = self
            .hosts
            .iter()
            .map(|h| log_of(work.path(), &h.server.name).display().to_string())
            .collect();
        anyhow::ensure!(
            lost == 0,
            "{} ({what}): {lost} orders were refused or never confirmed; see {}",
            self.kind.name(),
            logs.join(" and ")
        );
        Ok(())
    }
}

async fn start_host(
    kit: &Kit,
    work: &tempfile::TempDir,
    name: &str,
    setup: &Setup,
) -> anyhow::Result<Berth> {
    let checkout = &kit.checkout;
    let (berth, _) = Berth::start_with(
        checkout,
        name,
        &checkout.root.join("spin.toml"),
        work.path().join(format!("{name}-data")),
        &work.path().join("cache"),
        work.path(),
        setup,
    )
    .await?;
    Ok(berth)
}

fn log_of(work: &Path, server: &str) -> PathBuf {
    work.join(format!("{server}.log"))
}

fn median(runs: &[Round]) -> f64 {
    let mut rates: Vec<f64> = runs.iter().map(|r| r.flows_per_second).collect();
    rates.sort_by(f64::total_cmp);
    rates.get(rates.len() / 2).copied().unwrap_or(f64::NAN)
}

/// 32 random bytes from the kernel, as hex: a key or a token for the sitting.
fn secret() -> anyhow::Result<String> {
    use std::io::Read as _;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(flows_per_second: f64) -> Round {
        Round {
            placed: 1,
            refused: 0,
            unconfirmed: 0,
            elapsed_s: 1.0,
            flows_per_second,
        }
    }

    #[test]
    fn the_median_is_the_middle_round() {
        let runs = [round(300.0), round(100.0), round(200.0)];
        assert_eq!(median(&runs), 200.0);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn every_configuration_has_its_own_name_and_database() {
        let slugs: std::collections::HashSet<String> = KINDS.iter().map(|k| k.slug()).collect();
        let names: std::collections::HashSet<&str> = KINDS.iter().map(|k| k.name()).collect();
        assert_eq!(slugs.len(), KINDS.len());
        assert_eq!(names.len(), KINDS.len());
        assert_eq!(Kind::PostgresNats { hosts: 2 }.hosts(), 2);
        assert_eq!(Kind::PostgresEmbeddedBus.bus(), "embedded");
    }

    #[test]
    fn secrets_are_fresh_hex() {
        let (a, b) = (secret().unwrap(), secret().unwrap());
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
