//! The shop on PostgreSQL (`type = "postgres"` for each of its databases), beyond the API and
//! saga suites that run on it too: a database that goes away answers 503 with
//! `Retry-After`, commits nothing half, and the host recovers by itself when it is back; and
//! a PostgreSQL server restarted under a fleet's burst of orders loses and doubles nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sqlx::{ConnectOptions as _, Executor as _};

use crate::helpers::*;
use crate::postgres_server::{PostgresServer, postgres};

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

/// What one order placed during the burst got back.
enum Sent {
    /// 201: the order's id.
    Acknowledged(String),
    /// Any other answer.
    Refused(Reply),
    /// No answer at all.
    Lost(String),
}

/// One order of the burst: which host took it, whether it was sent after the restart was
/// over, and what came back.
struct Placed {
    host: usize,
    after_restart: bool,
    sent: Sent,
}

/// The burst's clients, placing orders on alternating hosts until `stop`.
fn burst(
    bases: [String; 2],
    token: &str,
    clients: usize,
    stop: &Arc<AtomicBool>,
    restarted: &Arc<AtomicBool>,
    acknowledged: &Arc<[AtomicUsize; 2]>,
) -> Vec<tokio::task::JoinHandle<Vec<Placed>>> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    (0..clients)
        .map(|n| {
            let (client, token, bases) = (client.clone(), token.to_owned(), bases.clone());
            let (stop, restarted, acknowledged) =
                (stop.clone(), restarted.clone(), acknowledged.clone());
            tokio::spawn(async move {
                let mut placed = Vec::new();
                let mut i = n;
                while !stop.load(Ordering::Relaxed) {
                    let host = i % 2;
                    i += 1;
                    let after_restart = restarted.load(Ordering::Relaxed);
                    let sent = client
                        .post(format!("{}/api/v1/orders", bases[host]))
                        .bearer_auth(&token)
                        .json(&order_body(1))
                        .send()
                        .await;
                    let sent = match sent {
                        Ok(response) => {
                            let reply = Reply::from(response).await;
                            if reply.status == 201 {
                                acknowledged[host].fetch_add(1, Ordering::Relaxed);
                                Sent::Acknowledged(reply.json["id"].as_str().unwrap().to_owned())
                            } else {
                                // What a client told to retry would do.
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                Sent::Refused(reply)
                            }
                        }
                        Err(e) => Sent::Lost(e.to_string()),
                    };
                    placed.push(Placed {
                        host,
                        after_restart,
                        sent,
                    });
                }
                placed
            })
        })
        .collect()
}

/// Issue 14: PostgreSQL restarted (a fast shutdown, which terminates every session, then a
/// start) while two hosts of a fleet take a burst of orders. An order is refused only with
/// 503 and `Retry-After`; every order the database holds, acknowledged or not, ends terminal
/// with one charge when confirmed and no charge that survives otherwise, and no charge
/// without its payment row; and both hosts take orders again and report ready, by
/// themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_restart_mid_burst_loses_and_doubles_nothing_and_the_hosts_recover() {
    let started = Instant::now();
    let server = tokio::task::spawn_blocking(PostgresServer::start_owned)
        .await
        .unwrap();
    let nats = NatsServer::start().await;
    let url = server.fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("runtime-config.toml");
    std::fs::write(&config, fleet_runtime_config(&url, &nats)).unwrap();
    let host = || spawn_with(SHOP, Some(config.clone()), tempfile::tempdir().unwrap());
    let (a, b) = tokio::join!(host(), host());
    let user = user_across(&a, &b).await;

    // Eight clients alternate between the hosts, before, during and after the restart.
    let stop = Arc::new(AtomicBool::new(false));
    let restarted = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let clients = burst(
        [a.base.clone(), b.base.clone()],
        &user.token,
        8,
        &stop,
        &restarted,
        &acknowledged,
    );
    let total = |acknowledged: &[AtomicUsize; 2]| {
        acknowledged[0].load(Ordering::Relaxed) + acknowledged[1].load(Ordering::Relaxed)
    };
    eventually(
        Duration::from_secs(20),
        "orders acknowledged before the restart",
        || async { (total(&acknowledged) >= 16).then_some(()) },
    )
    .await;
    let restart_began = Instant::now();
    server.restart().await;
    let restart_took = restart_began.elapsed();
    restarted.store(true, Ordering::Relaxed);
    // Each host takes orders again without being restarted itself.
    let before = [
        acknowledged[0].load(Ordering::Relaxed),
        acknowledged[1].load(Ordering::Relaxed),
    ];
    eventually(
        Duration::from_secs(20),
        "each host acknowledges orders again after the restart",
        || async {
            (0..2)
                .all(|h| acknowledged[h].load(Ordering::Relaxed) >= before[h] + 8)
                .then_some(())
        },
    )
    .await;
    // And report ready again.
    for (n, host) in [&a, &b].into_iter().enumerate() {
        eventually(
            Duration::from_secs(10),
            &format!("host {n} ready"),
            || async { (host.readyz().await == 200).then_some(()) },
        )
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut placed = Vec::new();
    for client in clients {
        placed.extend(client.await.unwrap());
    }

    // Refused only as a database that is away is: 503 and Retry-After, never a 500; and
    // every request answered (the hosts never went away).
    let mut ids = Vec::new();
    let mut refused = std::collections::BTreeMap::<String, usize>::new();
    for Placed { host, sent, .. } in &placed {
        match sent {
            Sent::Acknowledged(id) => ids.push(id.clone()),
            Sent::Refused(reply) => {
                assert_eq!(reply.status, 503, "host {host}: {}", reply.text);
                assert!(
                    !reply.header("retry-after").is_empty(),
                    "host {host}: a 503 without Retry-After: {}",
                    reply.text
                );
                *refused.entry(reply.error_code().to_owned()).or_default() += 1;
            }
            Sent::Lost(e) => panic!("host {host} never answered: {e}"),
        }
    }
    for host in 0..2 {
        assert!(
            placed.iter().any(|p| p.host == host
                && p.after_restart
                && matches!(p.sent, Sent::Acknowledged(_))),
            "host {host} acknowledged nothing sent after the restart"
        );
    }

    // Every order the database holds, acknowledged or not (a commit whose answer the
    // restart cut), ends terminal; none acknowledged is missing.
    let orders = eventually(
        Duration::from_secs(30),
        "every order confirmed or cancelled",
        || async {
            let orders = all_orders(&b, &user).await;
            orders
                .iter()
                .all(|o| o["status"] == "confirmed" || o["status"] == "cancelled")
                .then_some(orders)
        },
    )
    .await;
    let held: std::collections::HashSet<&str> =
        orders.iter().map(|o| o["id"].as_str().unwrap()).collect();
    for id in &ids {
        assert!(
            held.contains(id.as_str()),
            "acknowledged order {id} is gone"
        );
    }

    // One charge per confirmed order, none that survives for a cancelled one, and none the
    // payment service has no row for.
    let intents = provider_intents(&url).await;
    let mut confirmed = 0;
    for order in &orders {
        let id = order["id"].as_str().unwrap();
        let payments = a.payments_of(&user, id).await;
        let charges: Vec<_> = intents
            .iter()
            .filter(|i| i.order_id == id && i.status == "succeeded")
            .collect();
        let kept: Vec<_> = charges.iter().filter(|i| i.refunded < i.amount).collect();
        for charge in &charges {
            assert!(
                payments
                    .iter()
                    .any(|p| p["providerRef"] == charge.id.as_str()),
                "order {id}: charge {} has no payment row: {payments:?}",
                charge.id
            );
        }
        if order["status"] == "confirmed" {
            confirmed += 1;
            assert_eq!(payments.len(), 1, "order {id}: {payments:?}");
            assert_eq!(payments[0]["status"], "succeeded", "order {id}");
            assert_eq!(order["paymentId"], payments[0]["id"], "order {id}");
            assert_eq!(charges.len(), 1, "order {id} was charged: {charges:?}");
            assert_eq!(kept.len(), 1, "order {id}: {charges:?}");
        } else {
            assert!(
                kept.is_empty(),
                "cancelled order {id} kept a charge: {kept:?}"
            );
            assert!(
                payments
                    .iter()
                    .all(|p| p["status"] == "failed" || p["status"] == "refunded"),
                "cancelled order {id}: {payments:?}"
            );
        }
    }
    for intent in &intents {
        assert!(
            held.contains(intent.order_id.as_str()),
            "a charge for an order the shop does not hold: {intent:?}"
        );
    }

    eprintln!(
        "{} orders acknowledged ({} after the restart), refused with 503: {refused:?}, {} held, \
         {confirmed} confirmed; the restart took {restart_took:?}, the test {:?}",
        ids.len(),
        placed
            .iter()
            .filter(|p| p.after_restart && matches!(p.sent, Sent::Acknowledged(_)))
            .count(),
        orders.len(),
        started.elapsed()
    );
    // The hosts let go of their connections before the server stops.
    tokio::join!(a.stop(), b.stop());
    drop(server);
}
