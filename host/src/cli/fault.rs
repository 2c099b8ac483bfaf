//! `berth fault add | list | clear`: delays and aborts injected into a running host through
//! its admin API, to see the app ride out a slow or failing dependency. See
//! `berth::mesh::fault` for where each applies.

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::AdminArgs;
use super::admin_client::call;

#[derive(Subcommand)]
pub(super) enum FaultCommand {
    /// Inject a fault: a delay, an abort, or both, each on a percentage of the calls.
    #[command(after_help = "Examples:
  berth fault add payment-provider --abort 503 --abort-percent 30 --delay-ms 1500 --delay-percent 20
  berth fault add payment --outbound payment-provider.spin.internal --delay-ms 60000
  berth fault add order --route /api/v1/orders/events --abort 503 --abort-percent 50

Without --outbound the fault applies to calls into the component: client requests,
chained calls from other components and event deliveries. With --outbound HOST it
applies to the component's calls to that host instead. Each try of a call meets it
inside the caller's call policy, so retries, timeouts and the breaker see it.
Faults live in the host's memory: a restart clears them.")]
    Add(AddArgs),
    /// List the faults in force, with how many calls each delayed and aborted.
    List(ListArgs),
    /// Clear one fault by its id, or every fault with --all.
    #[command(after_help = "Examples:
  berth fault clear f2
  berth fault clear --all")]
    Clear(ClearArgs),
}

#[derive(Args)]
pub(super) struct FaultArgs {
    #[command(subcommand)]
    command: FaultCommand,
}

#[derive(Args)]
pub(super) struct AddArgs {
    /// The component id, as in spin.toml.
    component: String,
    /// Only requests to this path, or under a prefix written `/api/v1/orders/...`.
    #[arg(long, value_name = "PATTERN")]
    route: Option<String>,
    /// The component's calls to this host (e.g. payment-provider.spin.internal), not the
    /// calls into it.
    #[arg(long, value_name = "HOST")]
    outbound: Option<String>,
    /// Delay matching calls this many milliseconds.
    #[arg(long, value_name = "N")]
    delay_ms: Option<u64>,
    /// Of the matching calls, the percentage delayed [default: 100].
    #[arg(long, value_name = "P", requires = "delay_ms")]
    delay_percent: Option<f64>,
    /// Answer matching calls with this status (400–599) instead of the destination.
    #[arg(long, value_name = "STATUS")]
    abort: Option<u16>,
    /// Of the matching calls, the percentage aborted [default: 100].
    #[arg(long, value_name = "P", requires = "abort")]
    abort_percent: Option<f64>,
    #[command(flatten)]
    admin: AdminArgs,
}

#[derive(Args)]
pub(super) struct ListArgs {
    #[command(flatten)]
    admin: AdminArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub(super) struct ClearArgs {
    /// The fault's id, as `berth fault list` shows it.
    #[arg(required_unless_present = "all", value_name = "ID")]
    id: Option<String>,
    /// Clear every fault.
    #[arg(long, conflicts_with = "id")]
    all: bool,
    #[command(flatten)]
    admin: AdminArgs,
}

pub(super) async fn run(args: FaultArgs) -> anyhow::Result<()> {
    match args.command {
        FaultCommand::Add(args) => add(args).await,
        FaultCommand::List(args) => list(args).await,
        FaultCommand::Clear(args) => clear(args).await,
    }
}

async fn add(args: AddArgs) -> anyhow::Result<()> {
    if args.delay_ms.is_none() && args.abort.is_none() {
        anyhow::bail!("give a delay (--delay-ms N), an abort (--abort STATUS), or both");
    }
    let spec = json!({
        "component": args.component,
        "route": args.route,
        "outbound": args.outbound,
        "delayMs": args.delay_ms,
        "delayPercent": args.delay_percent,
        "abortStatus": args.abort,
        "abortPercent": args.abort_percent,
    });
    let answer = call(
        &args.admin,
        reqwest::Method::POST,
        "/admin/v1/faults",
        spec.to_string().into(),
    )
    .await?;
    let fault = &answer["fault"];
    println!(
        "fault {} in force: {}\nclear it with: berth fault clear {}",
        text(fault, "id"),
        describe(fault),
        text(fault, "id")
    );
    Ok(())
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let answer = call(
        &args.admin,
        reqwest::Method::GET,
        "/admin/v1/faults",
        reqwest::Body::default(),
    )
    .await?;
    let faults = answer["faults"]
        .as_array()
        .with_context(|| format!("{} answered without a faults list", args.admin.admin))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(faults)?);
        return Ok(());
    }
    if faults.is_empty() {
        println!("no faults");
        return Ok(());
    }
    println!(
        "{:<5} {:<18} {:<32} {:>8} {:>8}  FAULT",
        "ID", "COMPONENT", "CALLS", "DELAYED", "ABORTED"
    );
    for f in faults {
        let calls = match (f["outbound"].as_str(), f["route"].as_str()) {
            (Some(host), Some(route)) => format!("out to {host}{route}"),
            (Some(host), None) => format!("out to {host}"),
            (None, Some(route)) => format!("into {route}"),
            (None, None) => "into it".to_owned(),
        };
        println!(
            "{:<5} {:<18} {:<32} {:>8} {:>8}  {}",
            text(f, "id"),
            text(f, "component"),
            calls,
            f["delayed"].as_u64().unwrap_or_default(),
            f["aborted"].as_u64().unwrap_or_default(),
            describe(f)
        );
    }
    Ok(())
}

async fn clear(args: ClearArgs) -> anyhow::Result<()> {
    let path = match (&args.id, args.all) {
        (_, true) => "/admin/v1/faults".to_owned(),
        (Some(id), false) => format!("/admin/v1/faults/{id}"),
        (None, false) => anyhow::bail!("give a fault id (berth fault list shows them), or --all"),
    };
    let answer = call(
        &args.admin,
        reqwest::Method::DELETE,
        &path,
        reqwest::Body::default(),
    )
    .await?;
    match args.id {
        Some(id) if !args.all => println!("fault {id} cleared"),
        _ => println!("{} fault(s) cleared", answer["cleared"]),
    }
    Ok(())
}

fn text(value: &Value, key: &str) -> String {
    value[key].as_str().unwrap_or_default().to_owned()
}

/// `delay 1500 ms on 20 %, abort 503 on 30 %`.
fn describe(fault: &Value) -> String {
    let percent = |v: &Value| match v.as_f64() {
        Some(p) if p.fract() == 0.0 => format!("{p:.0}"),
        Some(p) => p.to_string(),
        None => "?".into(),
    };
    let mut parts = Vec::new();
    if let Some(delay) = fault["delay"].as_object() {
        parts.push(format!(
            "delay {} ms on {} %",
            delay["ms"],
            percent(&delay["percent"])
        ));
    }
    if let Some(abort) = fault["abort"].as_object() {
        parts.push(format!(
            "abort {} on {} %",
            abort["status"],
            percent(&abort["percent"])
        ));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_reads_as_what_it_does() {
        let fault = json!({
            "id": "f1",
            "delay": {"ms": 1500, "percent": 20.0},
            "abort": {"status": 503, "percent": 2.5},
        });
        assert_eq!(
            describe(&fault),
            "delay 1500 ms on 20 %, abort 503 on 2.5 %"
        );
    }
}
