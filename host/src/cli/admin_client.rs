//! The CLI's side of the admin API: one authenticated request to a running host.

use std::path::PathBuf;

use anyhow::Context as _;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
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
    method: http::Method,
    path: &str,
    body: Vec<u8>,
) -> anyhow::Result<Value> {
    let token = token(args)?;
    let admin = &args.admin;
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
    let request = http::Request::builder()
        .method(method)
        .uri(uri)
        .header(http::header::HOST, authority.as_str())
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Full::new(bytes::Bytes::from(body)))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if status == http::StatusCode::UNAUTHORIZED {
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
