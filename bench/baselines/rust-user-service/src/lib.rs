//! The shop's user service (`components/user`) with berth's gateway in front of it, written
//! as a native Rust service would be: axum, sqlx on SQLite with the service's migrations,
//! argon2id and `jsonwebtoken`. It answers what berth answers, request for request (the
//! harness's `real` scenario checks that before it measures), so the benchmark compares the
//! runtimes and not two services.
//!
//! | module | berth's counterpart |
//! |---|---|
//! | [`gateway`] | `host/src/triggers/http`: trace context, bearer tokens, the body limit |
//! | `users` | `components/user/src/lib.rs`, with `components/common` (validation and the
//! argon2id hashing, `common::password`) reused as is |
//! | `token` | `components/user/src/token.rs` |
//!
//! Not here: rate limits (the benchmark removes them from berth too) and `user.created`
//! (there is no event bus to publish to).

pub mod gateway;
mod token;
mod users;

use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

pub struct Config {
    pub jwt_secret: String,
    pub jwt_issuer: String,
    pub token_ttl_seconds: u64,
    pub db_path: PathBuf,
}

/// The user service's migrations, the ones berth applies to the component's database.
const MIGRATIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../migrations/user");

/// What every handler shares.
pub struct Service {
    db: sqlx::SqlitePool,
    tokens: token::Issuer,
    /// An argon2id hash holds 19 MiB and a core for ~50 ms: one at a time per core, as
    /// berth's `route_concurrency` keeps logins and registrations to two slots.
    hashing: tokio::sync::Semaphore,
}

/// The service behind its gateway, as one axum app.
pub async fn app(config: &Config) -> anyhow::Result<Router> {
    let db = open(&config.db_path).await?;
    let service = Arc::new(Service {
        db,
        tokens: token::Issuer::new(
            config.jwt_secret.as_bytes(),
            &config.jwt_issuer,
            config.token_ttl_seconds,
        )
        .context("cannot sign tokens with JWT_SECRET")?,
        hashing: tokio::sync::Semaphore::new(cores()),
    });
    let verifier = gateway::JwtVerifier::new(config.jwt_secret.as_bytes(), &config.jwt_issuer)
        .context("cannot verify tokens with JWT_SECRET")?;
    Ok(
        users::routes(service).layer(axum::middleware::from_fn_with_state(
            Arc::new(verifier),
            gateway::check,
        )),
    )
}

/// Serves `app` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .context("the server failed")
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from)
}

/// The database as berth opens a component's SQLite file (WAL, `synchronous = NORMAL`,
/// foreign keys, a 5 s busy timeout), migrated.
async fn open(path: &Path) -> anyhow::Result<sqlx::SqlitePool> {
    let options = SqliteConnectOptions::from_str("sqlite:")?
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(5));
    // Each sqlx SQLite connection is a thread of its own: a few per core keep the reads
    // going while others wait on the disk.
    let db = SqlitePoolOptions::new()
        .max_connections(2 * cores() as u32)
        .connect_with(options)
        .await
        .with_context(|| format!("cannot open {}", path.display()))?;
    sqlx::migrate::Migrator::new(Path::new(MIGRATIONS))
        .await
        .with_context(|| format!("cannot read the migrations in {MIGRATIONS}"))?
        .run(&db)
        .await
        .context("cannot migrate the database")?;
    Ok(db)
}
