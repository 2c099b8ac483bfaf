//! `berth deploy`, `berth promote`, `berth rollback`: one call each to a running host.

use anyhow::Context as _;
use reqwest::Method;
use serde_json::Value;

use super::admin_client::call;
use super::{ComponentArgs, DeployArgs};

pub async fn deploy(args: DeployArgs) -> anyhow::Result<()> {
    let file = tokio::fs::File::open(&args.file)
        .await
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let size = file
        .metadata()
        .await
        .with_context(|| format!("cannot read {}", args.file.display()))?
        .len();
    let path = match args.canary {
        Some(pct) => format!(
            "/admin/v1/components/{}/versions?canary={pct}",
            args.component
        ),
        None => format!("/admin/v1/components/{}/versions", args.component),
    };
    eprintln!(
        "deploying {} ({} KiB) as `{}`…",
        args.file.display(),
        size / 1024,
        args.component
    );
    // Streamed from the file: a large component is never held in memory here.
    let deployed = call(&args.admin, Method::POST, &path, file.into()).await?;
    println!(
        "{} now serves {} {}(in {} ms{})",
        args.component,
        deployed["digest"].as_str().unwrap_or_default(),
        args.canary
            .map(|p| format!("to {p} % of its traffic "))
            .unwrap_or_default(),
        deployed["tookMs"],
        if deployed["cached"] == true {
            ", compiled artifact cached"
        } else {
            ""
        }
    );
    Ok(())
}

fn print_versions(component: &Value) {
    for v in component["versions"].as_array().into_iter().flatten() {
        println!(
            "  {:<9} {:<4}% {}",
            v["state"].as_str().unwrap_or_default(),
            v["trafficPercent"],
            v["digest"].as_str().unwrap_or_default()
        );
    }
}

pub async fn promote(args: ComponentArgs) -> anyhow::Result<()> {
    let path = format!("/admin/v1/components/{}/promote", args.component);
    let component = call(&args.admin, Method::POST, &path, reqwest::Body::default()).await?;
    println!("promoted the canary of {}", args.component);
    print_versions(&component);
    Ok(())
}

pub async fn rollback(args: ComponentArgs) -> anyhow::Result<()> {
    let path = format!("/admin/v1/components/{}/rollback", args.component);
    let component = call(&args.admin, Method::POST, &path, reqwest::Body::default()).await?;
    println!("rolled {} back", args.component);
    print_versions(&component);
    Ok(())
}
