//! `berth status`: what a running host serves, read from its admin API.

use std::path::PathBuf;

use anyhow::Context as _;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::StatusArgs;

/// Reads `path` from the admin API as JSON.
async fn get(admin: &str, token: &str, path: &str) -> anyhow::Result<Value> {
    let uri: http::Uri = format!("{}{path}", admin.trim_end_matches('/'))
        .parse()
        .with_context(|| format!("`{admin}` is not an admin URL like http://127.0.0.1:3001"))?;
    let authority = uri
        .authority()
        .context("the admin URL needs a host and port")?
        .clone();
    let stream = tokio::net::TcpStream::connect(authority.as_str())
        .await
        .with_context(|| format!("no berth host answers at {admin}; is `berth up` running?"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = http::Request::get(uri)
        .header(http::header::HOST, authority.as_str())
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Empty::<bytes::Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if status == http::StatusCode::UNAUTHORIZED {
        anyhow::bail!(
            "the admin token was refused: pass --token, set BERTH_ADMIN_TOKEN, or run where <data-dir>/admin-token is readable"
        );
    }
    anyhow::ensure!(
        status.is_success(),
        "{path} answered {status}: {}",
        String::from_utf8_lossy(&body)
    );
    Ok(json)
}

/// `--token`, else `BERTH_ADMIN_TOKEN` (clap reads both), else the file `berth up` wrote.
fn token(args: &StatusArgs) -> anyhow::Result<String> {
    if let Some(token) = &args.token {
        return Ok(token.clone());
    }
    let path = args
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(".berth"))
        .join("admin-token");
    std::fs::read_to_string(&path)
        .map(|t| t.trim().to_owned())
        .with_context(|| {
            format!(
                "no admin token: pass --token, set BERTH_ADMIN_TOKEN, or run beside {}",
                path.display()
            )
        })
}

pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let token = token(&args)?;
    let components = get(&args.admin, &token, "/admin/v1/components").await?;
    let dead = get(&args.admin, &token, "/admin/v1/dead-letters").await?;
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
        "{:<18} {:<14} {:<8} {:<24} subscriptions",
        "COMPONENT", "VERSION", "TRAFFIC", "ROUTES"
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
                "{:<18} {:<14} {:<8} {:<24} {}",
                c["id"].as_str().unwrap_or_default(),
                berth::capabilities::http_inbound::short_digest(digest),
                format!("{}%", v["trafficPercent"]),
                str_list(&c["routes"]),
                str_list(&c["subscriptions"]),
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
