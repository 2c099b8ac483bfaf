//! The CLI's side of the admin API: one authenticated request to a running host.

use std::path::PathBuf;

use anyhow::Context as _;
use serde_json::Value;

use super::AdminArgs;

/// `--token`, else `BERTH_ADMIN_TOKEN` (clap reads both), else the file `berth up` wrote.
fn token(args: &AdminArgs) -> anyhow::Result<String> {
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

/// Sends one request and returns the JSON answer; an error status becomes an error that
/// carries the host's message.
pub async fn call(
    args: &AdminArgs,
    method: reqwest::Method,
    path: &str,
    body: reqwest::Body,
) -> anyhow::Result<Value> {
    let token = token(args)?;
    let admin = &args.admin;
    let url = reqwest::Url::parse(&format!("{}{path}", admin.trim_end_matches('/')))
        .with_context(|| format!("`{admin}` is not an admin URL like http://127.0.0.1:3001"))?;
    let client = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .build()
        .context("cannot set up an HTTP client")?;
    let response = client
        .request(method, url)
        .bearer_auth(&token)
        .body(body)
        .send()
        .await
        .map_err(|e| {
            if e.is_connect() || e.is_timeout() {
                anyhow::anyhow!("no berth host answers at {admin}; is `berth up` running?")
            } else {
                anyhow::Error::new(e).context(format!("the request to {admin} failed"))
            }
        })?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .with_context(|| format!("the answer from {admin} broke off"))?;
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if status == reqwest::StatusCode::UNAUTHORIZED {
        anyhow::bail!(
            "the admin token was refused: pass --token, set BERTH_ADMIN_TOKEN, or run where <data-dir>/admin-token is readable"
        );
    }
    if !status.is_success() {
        let message = json["error"]["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        anyhow::bail!("{message}");
    }
    Ok(json)
}

/// How long to wait for the host to accept the connection; the answer itself may take a
/// while (a deploy compiles before it answers).
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
