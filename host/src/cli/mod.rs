//! Command-line arguments, one struct per subcommand, each with an example in its help.

mod admin_client;
mod build;
mod check;
mod dead_letters;
mod deploy;
mod fault;
mod status;
mod up;
mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "Runs microservices as sandboxed WebAssembly components behind one gateway",
    after_help = "Examples:\n  berth up --build          build the components in spin.toml and serve them\n  berth check               validate spin.toml, its components and their grants\n  berth deploy order order.wasm --canary 10\n                            send 10 % of order's traffic to a new version\n  berth status              what a running host serves, and its dead letters\n\nRun `berth <command> --help` for each command's options."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the app: the public API and the admin API.
    #[command(
        after_help = "Examples:\n  berth up --build --listen 127.0.0.1:8080\n  berth up --watch          rebuild and hot-swap a component when its sources change\n  berth up --runtime-config fleet.toml --host-id web-1\n                            one host of a fleet sharing PostgreSQL and NATS\n\nData (SQLite files, key-value stores, compiled components, the admin token) goes to\n<data-dir>, `.berth` beside the manifest unless set. Stop with Ctrl-C or SIGTERM: open\nrequests finish first."
    )]
    Up(UpArgs),
    /// Build the components by running each `[component.<id>.build] command`.
    #[command(
        after_help = "Examples:\n  berth build               build every component\n  berth build order         build only `order`"
    )]
    Build(BuildArgs),
    /// Check the manifest, runtime config, variables and components without serving.
    #[command(
        after_help = "Examples:\n  berth check --manifest spin.toml\n  berth check --target spin     would each component also run on Spin and SpinKube?\n\nExits non-zero and lists every problem when something is wrong (with --target, also\nwhen a component would not run there)."
    )]
    Check(CheckArgs),
    /// Deploy a new version of one component to a running host, whole or as a canary.
    #[command(
        after_help = "Examples:\n  berth deploy order target/wasm32-wasip2/release/order.wasm\n  berth deploy order order-v2.wasm --canary 10\n\nThe host checks, compiles, links and migrates the new version before it serves;\na refused version leaves the current one serving and prints why."
    )]
    Deploy(DeployArgs),
    /// Give a component's canary all of its traffic.
    #[command(after_help = "Example:\n  berth promote order")]
    Promote(ComponentArgs),
    /// Drop a component's canary, or return it to its previous version.
    #[command(after_help = "Example:\n  berth rollback order")]
    Rollback(ComponentArgs),
    /// Show what a running host serves: components, versions, traffic, dead letters, and
    /// in a fleet every host with what it serves.
    #[command(after_help = "Examples:
  berth status
  berth status --json --admin http://10.0.0.5:3001 --token \"$TOKEN\"

In a fleet (`[messaging] type = \"nats\"`), each host is listed under its --host-id with
each component's versions, marked `in step` with what the fleet deployed, `catching up`,
or `failed` with the reason; any host's admin API shows them all.")]
    Status(StatusArgs),
    /// List the messages a consumer group gave up on, with the error of their last attempt.
    #[command(after_help = "Examples:
  berth dead-letters
  berth dead-letters --json --admin http://10.0.0.5:3001 --token \"$TOKEN\"

A message is a dead letter once its handler failed `max_delivery_attempts` times (or
refused it with a 4xx). Fix the cause, then `berth redrive` it.")]
    DeadLetters(dead_letters::DeadLettersArgs),
    /// Send a dead letter back to its consumer group, once the cause of its failure is fixed.
    #[command(after_help = "Examples:
  berth redrive payment 0190b3c1-7f2a-7c3e-9a1b-2c3d4e5f6a7b
  berth redrive --all --group payment

Only that group gets the message again (others that handled it do not), with its id and
trace, from a first attempt; its inbox makes sure it applies once. A message that fails
again becomes a dead letter again.")]
    Redrive(dead_letters::RedriveArgs),
    /// Inject, list and clear faults (delays and aborts) in a running host, to prove the
    /// app survives a slow or failing dependency.
    #[command(after_help = "Examples:
  berth fault add payment-provider --abort 503 --abort-percent 30
  berth fault list
  berth fault clear --all")]
    Fault(fault::FaultArgs),
}

#[derive(Args)]
struct ManifestArgs {
    /// The Spin manifest (v2) describing the app.
    #[arg(long, default_value = "spin.toml", value_name = "FILE")]
    manifest: PathBuf,
    /// Spin runtime config: where each database, store and variable comes from.
    #[arg(long, value_name = "FILE")]
    runtime_config: Option<PathBuf>,
    /// Where berth keeps state [default: .berth beside the manifest].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

impl ManifestArgs {
    fn options(&self) -> berth::host::Options {
        berth::host::Options {
            manifest: self.manifest.clone(),
            runtime_config: self.runtime_config.clone(),
            data_dir: self.data_dir.clone(),
            cache_dir: None,
            fresh_databases: Vec::new(),
        }
    }
}

#[derive(Args)]
struct UpArgs {
    #[command(flatten)]
    app: ManifestArgs,
    /// Address of the public API.
    #[arg(long, default_value = "127.0.0.1:3000", value_name = "ADDR")]
    listen: SocketAddr,
    /// Address of the admin API (health, readiness, deployments).
    #[arg(long, default_value = "127.0.0.1:3001", value_name = "ADDR")]
    admin_listen: SocketAddr,
    /// Build the components first, as `berth build` does.
    #[arg(long)]
    build: bool,
    /// Rebuild and redeploy a component when files matching its `build.watch` globs change.
    #[arg(long)]
    watch: bool,
    /// Start this database empty although the data dir held a file for it that is now
    /// missing or empty (berth refuses to start otherwise). Repeat for several labels.
    #[arg(long, value_name = "LABEL")]
    fresh_database: Vec<String>,
    /// The name this host goes by in a fleet (`berth status`) [default: <hostname>:<port of
    /// --listen>].
    #[arg(long, env = "BERTH_HOST_ID", value_name = "ID")]
    host_id: Option<String>,
}

#[derive(Args)]
struct BuildArgs {
    /// The Spin manifest (v2) describing the app.
    #[arg(long, default_value = "spin.toml", value_name = "FILE")]
    manifest: PathBuf,
    /// Build only these components [default: all].
    #[arg(value_name = "COMPONENT")]
    components: Vec<String>,
}

#[derive(Args)]
struct CheckArgs {
    #[command(flatten)]
    app: ManifestArgs,
    /// Also say whether each component would run on this platform, naming every import and
    /// export that stands in the way.
    #[arg(long, value_enum, value_name = "PLATFORM")]
    target: Option<Platform>,
}

/// Platforms `berth check --target` knows.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Platform {
    /// Spin 3.x and SpinKube: WASI 0.2, wasi:http and fermyon:spin@2.0.0, exporting only
    /// wasi:http/incoming-handler.
    Spin,
}

/// How the CLI reaches a running host.
#[derive(Args)]
struct AdminArgs {
    /// The running host's admin API.
    #[arg(long, default_value = "http://127.0.0.1:3001", value_name = "URL")]
    admin: String,
    /// Admin token [default: $BERTH_ADMIN_TOKEN, else <data-dir>/admin-token].
    #[arg(long, env = "BERTH_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Where `berth up` keeps its state, to read the admin token from [default: .berth].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Args)]
struct StatusArgs {
    #[command(flatten)]
    admin: AdminArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct DeployArgs {
    /// The component id, as in spin.toml.
    component: String,
    /// The new version: a wasm32-wasip2 component.
    file: PathBuf,
    /// Send only this percentage of the component's traffic to it (1–99); without it the
    /// new version takes all traffic.
    #[arg(long, value_name = "PCT", value_parser = canary_percent)]
    canary: Option<u32>,
    #[command(flatten)]
    admin: AdminArgs,
}

#[derive(Args)]
struct ComponentArgs {
    /// The component id, as in spin.toml.
    component: String,
    #[command(flatten)]
    admin: AdminArgs,
}

/// `--canary`: the same rule the host applies (`CANARY_PERCENT`).
fn canary_percent(value: &str) -> Result<u32, String> {
    let range = berth::control::deployments::CANARY_PERCENT;
    value
        .parse::<u32>()
        .ok()
        .filter(|p| range.contains(p))
        .ok_or_else(|| {
            format!(
                "give a whole percentage from {} to {}; leave out --canary to send all traffic to the new version",
                range.start(),
                range.end()
            )
        })
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Up(args) => up::run(args).await,
        Command::Build(args) => {
            let app = berth::config::App::load(&args.manifest)?;
            tokio::task::spawn_blocking(move || build::run(&app, &args.components)).await?
        }
        Command::Check(args) => check::run(args).await,
        Command::Status(args) => status::run(args).await,
        Command::DeadLetters(args) => dead_letters::show(args).await,
        Command::Redrive(args) => dead_letters::redrive(args).await,
        Command::Fault(args) => fault::run(args).await,
        Command::Deploy(args) => deploy::deploy(args).await,
        Command::Promote(args) => deploy::promote(args).await,
        Command::Rollback(args) => deploy::rollback(args).await,
    }
}
