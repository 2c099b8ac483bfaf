//! The host killed with SIGKILL in the middle of a burst of orders, then started again on
//! the same data: every order still ends in a terminal state and no order is charged twice.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

async fn up(data_dir: &std::path::Path, port: u16, admin: u16) -> Process {
    let mut command = berth_command();
    command.args(["up", "--manifest"]).arg(repo(SHOP));
    let runtime_config = data_dir.join("runtime-config.toml");
    if runtime_config.exists() {
        command.arg("--runtime-config").arg(runtime_config);
    }
    let child = command
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .env("BERTH_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start berth up");
    wait_until_ready(admin).await;
    Process::new(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_killed_mid_burst_loses_and_doubles_nothing_on_the_embedded_bus() {
    killed_mid_burst(tempfile::tempdir().unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_killed_mid_burst_loses_and_doubles_nothing_on_nats() {
    let nats = NatsServer::start().await;
    let data = tempfile::tempdir().unwrap();
    nats.runtime_config(data.path());
    killed_mid_burst(data).await;
}

async fn killed_mid_burst(data: tempfile::TempDir) {
    ensure_built();
    let (port, admin) = (free_port(), free_port());
    let mut host = up(data.path(), port, admin).await;
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let email = format!("crash-{}@example.com", uuid::Uuid::new_v4().simple());
    let body = serde_json::json!({"email": email, "password": "correct horse battery", "firstName": "A", "lastName": "B"});
    let r = client
        .post(format!("{base}/api/v1/users/register"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let login: Value = client
        .post(format!("{base}/api/v1/users/login"))
        .json(&serde_json::json!({"email": email, "password": "correct horse battery"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().unwrap().to_owned();

    // Eight clients place orders back to back; the host dies under them.
    let burst = orders_until_the_host_dies(&client, &base, &token, 8);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    host.kill();
    let mut acknowledged = Vec::new();
    for task in burst {
        acknowledged.extend(task.await.unwrap());
    }
    assert!(
        acknowledged.len() < 8 * 1000,
        "the host must die while clients are still placing orders"
    );
    assert!(
        acknowledged.len() >= 5,
        "the burst was under way: {}",
        acknowledged.len()
    );

    let _host = up(data.path(), port, admin).await;
    let get = |path: String| {
        let request = client.get(format!("{base}{path}")).bearer_auth(&token);
        async move { request.send().await.ok()?.json::<Value>().await.ok() }
    };
    let orders: Vec<Value> = eventually(Duration::from_secs(60), "every order settled", || async {
        let mut all = Vec::new();
        let mut page = get("/api/v1/orders?limit=100".into()).await?;
        loop {
            all.extend(page["orders"].as_array()?.iter().cloned());
            let Some(cursor) = page["nextCursor"].as_str() else {
                break;
            };
            page = get(format!("/api/v1/orders?limit=100&cursor={cursor}")).await?;
        }
        all.iter()
            .all(|o| o["status"] == "confirmed")
            .then_some(all)
    })
    .await;
    for id in &acknowledged {
        assert!(
            orders.iter().any(|o| o["id"] == id.as_str()),
            "acknowledged order {id} was lost"
        );
    }
    for order in &orders {
        let id = order["id"].as_str().unwrap();
        let payments = get(format!("/api/v1/payments?orderId={id}")).await.unwrap();
        let payments = payments["payments"].as_array().unwrap();
        assert_eq!(payments.len(), 1, "order {id}: {payments:?}");
        assert_eq!(payments[0]["status"], "succeeded");
        assert_eq!(order["paymentId"], payments[0]["id"]);
    }
    // The provider was asked to charge each order exactly once.
    let provider = sqlx::SqlitePool::connect_with(
        sqlx::sqlite::SqliteConnectOptions::new().filename(data.path().join("sqlite/provider.db")),
    )
    .await
    .unwrap();
    let charges: Vec<(String, i64)> = sqlx::query_as(
        "SELECT json_extract(metadata, '$.order_id'), count(*) FROM payment_intents GROUP BY 1",
    )
    .fetch_all(&provider)
    .await
    .unwrap();
    assert_eq!(charges.len(), orders.len(), "one charged intent per order");
    assert!(
        charges.iter().all(|(_, n)| *n == 1),
        "charged twice: {charges:?}"
    );
}
