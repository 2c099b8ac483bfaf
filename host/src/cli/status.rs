//! `berth status`: what a running host serves, read from its admin API.

use serde_json::Value;

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
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "components": components, "deadLetters": dead["deadLetters"] })
            )?
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
    Ok(())
}
