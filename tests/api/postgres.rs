//! The shop on PostgreSQL (`type = "postgres"` for each of its databases), beyond the API and
//! saga suites that run on it too: a database that goes away answers 503 with
//! `Retry-After`, commits nothing half, and the host recovers by itself when it is back.

use std::time::{Duration, Instant};

use sqlx::{ConnectOptions as _, Executor as _};

use crate::helpers::*;
use crate::postgres_server::postgres;

/// A superuser connection to the server's maintenance database, to take `name` away.
async fn admin() -> sqlx::PgConnection {
    sqlx::postgres::PgConnectOptions::new()
        .host("127.0.0.1")
        .port(postgres().port)
        .username("postgres")
        .database("postgres")
        .connect()
        .await
        .unwrap()
}

async fn set_reachable(name: &str, reachable: bool) {
    let mut admin = admin().await;
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            "ALTER DATABASE {name} WITH ALLOW_CONNECTIONS {reachable}"
        )))
        .await
        .unwrap();
    if !reachable {
        admin
            .execute(sqlx::AssertSqlSafe(format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
            )))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_database_answers_503_with_retry_after_and_the_host_recovers_by_itself() {
    let url = postgres().fresh_database().await;
    let name = url.rsplit('/').next().unwrap().to_owned();
    let app = spawn_on_postgres_at(&url, SHOP, &SHOP_DATABASES, None).await;
    let user = app.user().await;
    let placed = app.create_order(&user, 1).await;
    assert_eq!(placed.status, 201, "{}", placed.text);
    let id = placed.json["id"].as_str().unwrap().to_owned();

    set_reachable(&name, false).await;
    let read = app
        .get(&format!("/api/v1/orders/{id}"), Some(&user.token))
        .await;
    assert_eq!(read.status, 503, "{}", read.text);
    assert_eq!(read.error_code(), "DATABASE_UNAVAILABLE", "{}", read.text);
    assert_eq!(read.header("retry-after"), "1");
    assert!(
        !read.text.contains("unused"),
        "the password leaked: {}",
        read.text
    );
    let refused = app.create_order(&user, 2).await;
    assert_eq!(refused.status, 503, "{}", refused.text);

    set_reachable(&name, true).await;
    let started = Instant::now();
    loop {
        let read = app
            .get(&format!("/api/v1/orders/{id}"), Some(&user.token))
            .await;
        if read.status == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not back within 30 s: {} {}",
            read.status,
            read.text
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Nothing of the refused order was kept: the list holds the first one only.
    let list = app.get("/api/v1/orders", Some(&user.token)).await;
    let orders = list.json["orders"].as_array().unwrap();
    assert_eq!(orders.len(), 1, "{}", list.text);
    assert_eq!(orders[0]["id"], id.as_str());
}
