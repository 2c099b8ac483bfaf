//! `rust-user-service`: the user service as a native axum server, the baseline berth's
//! `real` benchmark measures against.
//!
//! Environment (as the Node.js baseline's): `PORT` (required), `JWT_SECRET` (required, the
//! key berth's gateway verifies with), `DB_PATH` (required, a SQLite file, created if
//! missing), `JWT_ISSUER` (`berth-user`), `TOKEN_TTL_SECONDS` (3600).

use anyhow::Context as _;
use rust_user_service::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env = |name: &str| std::env::var(name).with_context(|| format!("set {name}"));
    let port: u16 = env("PORT")?.parse().context("PORT is not a port number")?;
    let config = Config {
        jwt_secret: env("JWT_SECRET")?,
        jwt_issuer: env("JWT_ISSUER").unwrap_or_else(|_| "berth-user".into()),
        token_ttl_seconds: env("TOKEN_TTL_SECONDS")
            .unwrap_or_else(|_| "3600".into())
            .parse()
            .context("TOKEN_TTL_SECONDS is not a number of seconds")?,
        db_path: env("DB_PATH")?.into(),
    };
    anyhow::ensure!(
        config.jwt_secret.len() >= 16,
        "JWT_SECRET is {} bytes; use at least 16 random bytes",
        config.jwt_secret.len()
    );
    let app = rust_user_service::app(&config).await?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{port}"))?;
    println!("listening on {port}");
    rust_user_service::serve(listener, app, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}
