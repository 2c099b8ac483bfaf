//! A fleet: hosts that share PostgreSQL (every database a schema of one) and NATS JetStream
//! serve one shop. A user registered on one host logs in on another; orders placed on
//! alternating hosts each end confirmed with one charge, each event handled once per fleet;
//! and a host killed with SIGKILL mid-burst loses and doubles nothing while the other keeps
//! serving. Deployments are the fleet's, and `berth status` shows every host and what it
//! serves.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::deploy::short;
use crate::helpers::*;
use crate::postgres_server::postgres;

/// How long a host may take to serve a version another host deployed: it fetches the wasm
/// and compiles it at the lowest CPU priority, which on a machine busy with other work (the
/// rest of the suite) takes seconds. Checks return as soon as it serves.
const FOLLOW_COMPILED: Duration = Duration::from_secs(30);

struct Fleet {
    /// The runtime config every host of the fleet starts with.
    runtime_config: PathBuf,
    url: String,
    _dir: tempfile::TempDir,
    _nats: NatsServer,
}

async fn fleet() -> Fleet {
    ensure_built();
    let nats = NatsServer::start().await;
    let url = postgres().fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let runtime_config = dir.path().join("runtime-config.toml");
    std::fs::write(&runtime_config, fleet_runtime_config(&url, &nats)).unwrap();
    Fleet {
        runtime_config,
        url,
        _dir: dir,
        _nats: nats,
    }
}

impl Fleet {
    /// A host in this process, with a data dir of its own.
    async fn host(&self) -> TestApp {
        spawn_with(
            SHOP,
            Some(self.runtime_config.clone()),
            tempfile::tempdir().unwrap(),
        )
        .await
    }

    /// A host as a process of its own, for SIGKILL.
    async fn process(&self, data_dir: &std::path::Path) -> (Process, String) {
        let (port, admin) = (free_port(), free_port());
        let mut command = berth_up(SHOP, data_dir, port, admin);
        command.arg("--runtime-config").arg(&self.runtime_config);
        let process = Process::new(command.spawn().expect("start berth up"));
        wait_until_ready(admin).await;
        (process, format!("http://127.0.0.1:{port}"))
    }
}

/// Every one of `ids` confirmed with exactly one succeeded payment, and charged once.
async fn each_confirmed_and_charged_once(
    fleet: &Fleet,
    app: &TestApp,
    user: &User,
    ids: &[String],
) {
    // A message the killed host held comes back when its lease lapses (the handler's
    // deadline plus 30 s), so a stall must outlast that before it counts as a loss.
    eventually_progressing(
        Duration::from_secs(75),
        Duration::from_secs(300),
        "every order confirmed",
        || async {
            let mut confirmed = 0;
            for id in ids {
                let order = app
                    .get(&format!("/api/v1/orders/{id}"), Some(&user.token))
                    .await;
                confirmed += usize::from(order.json["status"] == "confirmed");
            }
            if confirmed == ids.len() {
                Ok(())
            } else {
                Err(confirmed)
            }
        },
    )
    .await;
    for id in ids {
        let payments = app
            .get(&format!("/api/v1/payments?orderId={id}"), Some(&user.token))
            .await;
        let payments = payments.json["payments"].as_array().unwrap();
        assert_eq!(payments.len(), 1, "order {id}: {payments:?}");
        assert_eq!(payments[0]["status"], "succeeded");
    }
    let charged = provider_intents(&fleet.url).await;
    for id in ids {
        let times = charged.iter().filter(|c| c.order_id == *id).count();
        assert_eq!(times, 1, "order {id} was charged {times} times");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_placed_on_alternating_hosts_each_end_confirmed_with_one_charge() {
    let fleet = fleet().await;
    // Started together: each provisions and migrates the shared schemas, in turn.
    let (a, b) = tokio::join!(fleet.host(), fleet.host());
    let user = user_across(&a, &b).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let host = if i % 2 == 0 { &a } else { &b };
        let placed = host.create_order(&user, 1).await;
        assert_eq!(placed.status, 201, "{}", placed.text);
        ids.push(placed.json["id"].as_str().unwrap().to_owned());
    }
    // Seen from the other host than the one that took each order.
    each_confirmed_and_charged_once(&fleet, &b, &user, &ids).await;
    let listed = a.get("/api/v1/orders?limit=100", Some(&user.token)).await;
    assert_eq!(listed.json["orders"].as_array().unwrap().len(), ids.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_killed_mid_burst_loses_and_doubles_nothing_while_the_other_serves() {
    let fleet = fleet().await;
    let survivor = fleet.host().await;
    let doomed_data = tempfile::tempdir().unwrap();
    let (mut doomed, doomed_base) = fleet.process(doomed_data.path()).await;
    let user = user_across(&survivor, &survivor).await;

    // Eight clients alternate between the hosts; once the doomed one is gone, they carry
    // on with the survivor alone.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let burst: Vec<_> = (0..8)
        .map(|_| {
            let bases = [doomed_base.clone(), survivor.base.clone()];
            let (client, token) = (client.clone(), user.token.clone());
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                let mut doomed_gone = false;
                for i in 0..60 {
                    let base = if doomed_gone {
                        &bases[1]
                    } else {
                        &bases[i % 2]
                    };
                    let sent = client
                        .post(format!("{base}/api/v1/orders"))
                        .bearer_auth(&token)
                        .json(&order_body(1))
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status() == 201 => {
                            let order: Value = r.json().await.unwrap();
                            acknowledged.push(order["id"].as_str().unwrap().to_owned());
                        }
                        Ok(r) => panic!(
                            "an order failed: {} {}",
                            r.status(),
                            r.text().await.unwrap_or_default()
                        ),
                        // Only the doomed host goes away; a reply lost with it is unknown.
                        Err(_) if base == &bases[0] => doomed_gone = true,
                        Err(e) => panic!("the surviving host failed: {e}"),
                    }
                }
                acknowledged
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    doomed.kill();
    let mut acknowledged = Vec::new();
    for task in burst {
        acknowledged.extend(task.await.unwrap());
    }
    assert!(
        acknowledged.len() >= 8,
        "the burst was under way: {}",
        acknowledged.len()
    );

    // The survivor relays what the dead host committed and did not publish, and handles
    // what it published: every acknowledged order ends confirmed, charged once.
    each_confirmed_and_charged_once(&fleet, &survivor, &user, &acknowledged).await;
    // And an order that was committed but whose reply died with the host is not lost
    // either: everything in the database settles.
    let all: Vec<String> = all_orders(&survivor, &user)
        .await
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_owned())
        .collect();
    each_confirmed_and_charged_once(&fleet, &survivor, &user, &all).await;
}

/// A host of the sandbox app on `nats`, where deployments are the fleet's.
async fn sandbox_host(nats: &NatsServer) -> TestApp {
    named_sandbox_host(nats, None).await
}

async fn named_sandbox_host(nats: &NatsServer, id: Option<&str>) -> TestApp {
    let data = tempfile::tempdir().unwrap();
    let config = nats.runtime_config(data.path());
    spawn_as(SANDBOX, Some(config), data, id).await
}

/// What `host` says of the fleet (`GET /admin/v1/fleet`).
async fn fleet_status(host: &TestApp) -> Value {
    let reply = host.admin_get("/admin/v1/fleet").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json["fleet"].clone()
}

/// Each listed host's id, with what it reports of `bystander`.
fn bystander_per_host(fleet: &Value) -> Vec<(String, Value)> {
    fleet["hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| {
            let id = h["id"].as_str().unwrap_or_default().to_owned();
            (id, h["components"]["bystander"].clone())
        })
        .collect()
}

/// How many of `n` requests `host` answered with version `digest`.
async fn answered_by(host: &TestApp, digest: &str, n: usize) -> usize {
    let mut count = 0;
    for _ in 0..n {
        if host.serving().await == digest {
            count += 1;
        }
    }
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_on_one_host_serves_on_every_host_and_a_rollback_anywhere_returns_them_all() {
    let nats = NatsServer::start().await;
    let (a, b) = tokio::join!(sandbox_host(&nats), sandbox_host(&nats));
    assert_eq!(a.serving().await, b.serving().await);

    let deployed = a.deploy("bystander", misbehave_variant(41), "").await;
    assert_eq!(deployed.status, 201, "{}", deployed.text);
    let new = short(deployed.json["digest"].as_str().unwrap());
    eventually(
        FOLLOW_COMPILED,
        "the other host serves the deploy",
        || async { (answered_by(&b, &new, 5).await == 5).then_some(()) },
    )
    .await;

    // A 30 % canary splits the traffic of every host.
    let canary = a
        .deploy("bystander", misbehave_variant(42), "?canary=30")
        .await;
    assert_eq!(canary.status, 201, "{}", canary.text);
    let canary = short(canary.json["digest"].as_str().unwrap());
    eventually(FOLLOW_COMPILED, "the other host has the canary", || async {
        (answered_by(&b, &canary, 20).await > 0).then_some(())
    })
    .await;
    for (name, host) in [("a", &a), ("b", &b)] {
        let on_canary = answered_by(host, &canary, 200).await;
        assert!(
            (30..=100).contains(&on_canary),
            "host {name}: {on_canary} of 200 requests on the 30 % canary"
        );
    }

    // Rolled back on the other host: every host serves the stable version alone again.
    let rolled = b
        .admin_post("/admin/v1/components/bystander/rollback")
        .await;
    assert!(rolled.status < 300, "{} {}", rolled.status, rolled.text);
    eventually(
        Duration::from_secs(10),
        "the first host rolled back",
        || async { (answered_by(&a, &new, 50).await == 50).then_some(()) },
    )
    .await;

    // A host that starts afterwards serves what the fleet does, from its first request.
    let later = sandbox_host(&nats).await;
    assert_eq!(answered_by(&later, &new, 20).await, 20);
}

/// Every host lists itself and the others with what each serves; a version the fleet names
/// that no host can load leaves every host serving what it did and saying why, in `berth
/// status` too; a deploy from any host replaces it; a host that stops leaves the list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn berth_status_shows_each_host_what_it_serves_and_what_it_could_not_load() {
    let nats = NatsServer::start().await;
    let (a, b) = tokio::join!(
        named_sandbox_host(&nats, Some("host-a")),
        named_sandbox_host(&nats, Some("host-b"))
    );
    let before = a.serving().await;
    let fleet = eventually(Duration::from_secs(5), "both hosts report", || async {
        let fleet = fleet_status(&a).await;
        (bystander_per_host(&fleet).len() == 2).then_some(fleet)
    })
    .await;
    assert_eq!(fleet["name"], "sandbox");
    assert_eq!(fleet["host"], "host-a");
    let hosts = bystander_per_host(&fleet);
    assert_eq!(hosts[0].0, "host-a");
    assert_eq!(hosts[1].0, "host-b");
    for (id, bystander) in &hosts {
        let stable = bystander["serving"]["stable"].as_str().unwrap();
        assert_eq!(short(stable), before, "{id}");
        assert!(bystander["failed"].is_null(), "{id}: {bystander}");
    }

    // The bucket names a version whose wasm is nowhere, as a broken tool might write it.
    let missing = format!("sha256:{}", "0".repeat(64));
    let jetstream = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let bucket = jetstream
        .get_key_value("berth_sandbox_deployments")
        .await
        .unwrap();
    bucket
        .put(
            "bystander",
            serde_json::json!({ "stable": missing }).to_string().into(),
        )
        .await
        .unwrap();
    eventually(
        Duration::from_secs(10),
        "both hosts report what they could not load",
        || async {
            let fleet = fleet_status(&b).await;
            let failed = bystander_per_host(&fleet)
                .iter()
                .filter(|(_, c)| c["failed"]["wanted"]["stable"] == missing.as_str())
                .count();
            (failed == 2).then_some(())
        },
    )
    .await;
    assert_eq!(a.serving().await, before);
    assert_eq!(b.serving().await, before);
    let status = berth_command()
        .args(["status", "--admin", &b.admin, "--token", &b.admin_token])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{out}");
    assert!(out.contains("fleet `sandbox`: 2 hosts"), "{out}");
    assert!(out.contains("* host-b"), "{out}");
    let failed_lines = out.lines().filter(|l| l.ends_with(" failed")).count();
    assert_eq!(failed_lines, 2, "{out}");
    for host in ["host-a", "host-b"] {
        let said = format!(
            "{host}: `bystander` keeps its own versions, for it cannot serve the fleet's 000000000000 (since "
        );
        assert!(out.contains(&said), "{out}");
    }
    assert!(
        out.contains("cannot fetch the wasm of sha256:000000000000"),
        "{out}"
    );
    let status = berth_command()
        .args([
            "status",
            "--json",
            "--admin",
            &a.admin,
            "--token",
            &a.admin_token,
        ])
        .output()
        .unwrap();
    let json: Value = serde_json::from_slice(&status.stdout).unwrap_or_default();
    assert_eq!(json["fleet"]["host"], "host-a", "{json}");
    assert_eq!(bystander_per_host(&json["fleet"]).len(), 2, "{json}");

    // A deploy from a host that could not load the fleet's version replaces it everywhere.
    let deployed = b.deploy("bystander", misbehave_variant(43), "").await;
    assert_eq!(deployed.status, 201, "{}", deployed.text);
    let new = deployed.json["digest"].as_str().unwrap().to_owned();
    eventually(
        FOLLOW_COMPILED,
        "both hosts serve the deploy, in step",
        || async {
            let fleet = fleet_status(&a).await;
            let in_step = bystander_per_host(&fleet)
                .iter()
                .filter(|(_, c)| c["serving"]["stable"] == new.as_str() && c["failed"].is_null())
                .count();
            (in_step == 2 && fleet["deployments"]["bystander"]["stable"] == new.as_str())
                .then_some(())
        },
    )
    .await;
    assert_eq!(a.serving().await, short(&new));

    // A host that stops takes itself off the list.
    drop(b.stop().await);
    eventually(Duration::from_secs(5), "the stopped host left", || async {
        let fleet = fleet_status(&a).await;
        let ids: Vec<String> = bystander_per_host(&fleet)
            .into_iter()
            .map(|h| h.0)
            .collect();
        (ids == ["host-a"]).then_some(())
    })
    .await;
}
