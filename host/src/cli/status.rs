//! `berth status`: what a running host serves, read from its admin API.

use serde_json::Value;
use time::format_description::well_known::Rfc3339;

use super::StatusArgs;
use super::admin_client::call;

pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let get = |path| {
        call(
            &args.admin,
            reqwest::Method::GET,
            path,
            reqwest::Body::default(),
        )
    };
    let components = get("/admin/v1/components").await?;
    let dead = get("/admin/v1/dead-letters").await?;
    // A fleet that cannot be reached is part of the status, not a reason to show none.
    let fleet = get("/admin/v1/fleet")
        .await
        .map(|answer| answer["fleet"].clone());
    if args.json {
        let fleet = match &fleet {
            Ok(fleet) => fleet.clone(),
            Err(e) => serde_json::json!({ "error": format!("{e:#}") }),
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "components": components,
                "deadLetters": dead["deadLetters"],
                "fleet": fleet,
            }))?
        );
        return Ok(());
    }
    println!(
        "{:<18} {:<14} {:<9} {:<8} {:>8} {:>8}  {:<24} SUBSCRIPTIONS",
        "COMPONENT", "VERSION", "STATE", "TRAFFIC", "REQ/S", "5XX/S", "ROUTES"
    );
    for c in components.as_array().into_iter().flatten() {
        let str_list = |v: &Value| {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default()
        };
        for v in c["versions"].as_array().into_iter().flatten() {
            let digest = v["digest"].as_str().unwrap_or_default();
            println!(
                "{:<18} {:<14} {:<9} {:<8} {:>8.2} {:>8.2}  {:<24} {}",
                c["id"].as_str().unwrap_or_default(),
                berth::registry::http::short(digest),
                v["state"].as_str().unwrap_or_default(),
                format!("{}%", v["trafficPercent"]),
                v["requestsPerSecond"].as_f64().unwrap_or_default(),
                v["errorsPerSecond"].as_f64().unwrap_or_default(),
                str_list(&c["routes"]),
                str_list(&c["subscriptions"]),
            );
        }
    }
    for c in components.as_array().into_iter().flatten() {
        if c["source"] == "deployed" {
            println!(
                "note: `{}` serves a deployed version, not the file its manifest names",
                c["id"].as_str().unwrap_or_default()
            );
        }
    }
    print_calls(&components);
    let letters = dead["deadLetters"].as_array().cloned().unwrap_or_default();
    println!("\ndead letters: {}", letters.len());
    for l in &letters {
        println!(
            "  {}  {:<20} group {:<12} after {} attempts: {}",
            l["failedAt"].as_str().unwrap_or_default(),
            l["subject"].as_str().unwrap_or_default(),
            l["group"].as_str().unwrap_or_default(),
            l["attempts"],
            l["error"].as_str().unwrap_or_default(),
        );
    }
    match fleet {
        Ok(Value::Null) => {}
        Ok(fleet) => print_fleet(&fleet),
        Err(e) => println!("\nfleet: cannot be read: {e:#}"),
    }
    Ok(())
}

/// Each call policy's destination: its circuit and what it has seen.
fn print_calls(components: &Value) {
    let calls: Vec<(&str, &Value)> = components
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| {
            let id = c["id"].as_str().unwrap_or_default();
            c["calls"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |d| (id, d))
        })
        .collect();
    if calls.is_empty() {
        return;
    }
    println!(
        "
{:<18} {:<32} {:<10} {:>8} {:>8} {:>8} {:>8} {:>9}",
        "CALLS FROM",
        "DESTINATION",
        "CIRCUIT",
        "CALLS",
        "RETRIES",
        "REFUSED",
        "TIMEOUTS",
        "EJECTIONS"
    );
    for (component, d) in calls {
        println!(
            "{:<18} {:<32} {:<10} {:>8} {:>8} {:>8} {:>8} {:>9}",
            component,
            d["destination"].as_str().unwrap_or_default(),
            d["circuit"].as_str().unwrap_or_default(),
            d["calls"],
            d["retries"],
            d["shortCircuited"],
            d["timeouts"],
            d["ejections"],
        );
    }
}

/// Each host of the fleet, a line per component it serves, and what stops any from
/// serving what the fleet deployed.
fn print_fleet(fleet: &Value) {
    let hosts = fleet["hosts"].as_array().cloned().unwrap_or_default();
    println!(
        "\nfleet `{}`: {} host{} (* answered this status)",
        fleet["name"].as_str().unwrap_or_default(),
        hosts.len(),
        if hosts.len() == 1 { "" } else { "s" }
    );
    println!(
        "  {:<24} {:<8} {:>9}  {:<18} {:<14} {:<18} STATE",
        "HOST", "BERTH", "REPORTED", "COMPONENT", "STABLE", "CANARY"
    );
    let mut failures = Vec::new();
    for host in &hosts {
        let id = host["id"].as_str().unwrap_or_default();
        let marked = if fleet["host"].as_str() == Some(id) {
            format!("* {id}")
        } else {
            id.to_owned()
        };
        let age = host["reportedAt"]
            .as_str()
            .and_then(|at| time::OffsetDateTime::parse(at, &Rfc3339).ok())
            .map(|at| {
                format!(
                    "{}s ago",
                    (time::OffsetDateTime::now_utc() - at)
                        .whole_seconds()
                        .max(0)
                )
            })
            .unwrap_or_default();
        let mut first = true;
        for (component, served) in host["components"].as_object().into_iter().flatten() {
            let serving = &served["serving"];
            let state = if !served["failed"].is_null() {
                failures.push((id, component, &served["failed"]));
                "failed"
            } else if fleet["deployments"]
                .get(component)
                .is_none_or(|wanted| wanted == serving)
            {
                "in step"
            } else {
                "catching up"
            };
            // The host's columns once, on its first line.
            let (marked, version, age) = if std::mem::take(&mut first) {
                (
                    marked.as_str(),
                    host["berthVersion"].as_str().unwrap_or_default(),
                    age.as_str(),
                )
            } else {
                ("", "", "")
            };
            println!(
                "  {:<24} {:<8} {:>9}  {:<18} {:<14} {:<18} {state}",
                marked,
                version,
                age,
                component,
                short(&serving["stable"]),
                canary(&serving["canary"]),
            );
        }
    }
    for (host, component, failed) in failures {
        println!(
            "  {host}: `{component}` keeps its own versions, for it cannot serve the fleet's {} (since {}): {}",
            short(&failed["wanted"]["stable"]),
            failed["since"].as_str().unwrap_or_default(),
            failed["error"].as_str().unwrap_or_default(),
        );
    }
}

fn short(digest: &Value) -> &str {
    berth::registry::http::short(digest.as_str().unwrap_or_default())
}

/// `[digest, share]`, as an arrangement holds a canary.
fn canary(canary: &Value) -> String {
    match (canary[0].as_str(), canary[1].as_u64()) {
        (Some(digest), Some(share)) => format!("{} {share}%", berth::registry::http::short(digest)),
        _ => "-".to_owned(),
    }
}
