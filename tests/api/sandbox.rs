//! Each misbehaviour fails its own request, within the component's limits, while requests to
//! a neighbouring component keep succeeding.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::helpers::*;

/// Runs `path` while a steady stream of bystander requests goes on; every bystander request
/// must succeed. Returns the misbehaving reply and how long it took.
async fn contained(app: &TestApp, path: &str) -> (Reply, Duration) {
    let started = Instant::now();
    let misbehaving = app.client.get(app.url(path)).send();
    let bystanders = async {
        let mut answered = 0;
        loop {
            let reply = app.get("/bystander/ok", None).await;
            assert_eq!(
                reply.status, 200,
                "a bystander failed during {path}: {}",
                reply.text
            );
            answered += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
            if answered >= 5 {
                break answered;
            }
        }
    };
    let (reply, answered) = tokio::join!(misbehaving, bystanders);
    assert!(answered >= 5);
    let reply = Reply::from(reply.expect("the misbehaving request gets an answer")).await;
    (reply, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_fails_only_its_own_request() {
    let app = spawn(SANDBOX).await;
    let (reply, _) = contained(&app, "/misbehave/trap").await;
    assert_eq!(reply.status, 500);
    assert_eq!(reply.error_code(), "COMPONENT_FAILED");
    assert!(
        reply.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`misbehave`")
    );
    assert_eq!(
        app.get("/misbehave/ok", None).await.status,
        200,
        "the component itself recovers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_infinite_loop_is_stopped_at_its_deadline() {
    let app = spawn(SANDBOX).await;
    let (reply, took) = contained(&app, "/misbehave/loop").await;
    assert_eq!(reply.status, 504, "{}", reply.text);
    assert_eq!(reply.error_code(), "COMPONENT_TIMEOUT");
    assert!(
        reply.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1000 ms")
    );
    // The deadline is 1 s; this bound only catches a deadline that never fires.
    assert!(took < Duration::from_secs(15), "took {took:?}");
    assert_eq!(app.get("/misbehave/ok", None).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_bomb_is_stopped_at_its_limit() {
    let app = spawn(SANDBOX).await;
    let (reply, _) = contained(&app, "/misbehave/oom").await;
    assert_eq!(reply.status, 500, "{}", reply.text);
    assert_eq!(reply.error_code(), "COMPONENT_OUT_OF_MEMORY");
    assert!(
        reply.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("32 MiB")
    );
    assert_eq!(app.get("/misbehave/ok", None).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifty_megabyte_response_is_refused_at_the_limit() {
    let app = spawn(SANDBOX).await;
    // The bystander has room for 50 MB of memory but the default 16 MiB response limit.
    // Responses are held until the invocation commits, so the client gets a clean error
    // rather than a body cut off midway.
    let started = Instant::now();
    let response = app.get("/bystander/big?mb=50", None);
    let neighbour = app.get("/misbehave/ok", None);
    let (response, neighbour) = tokio::join!(response, neighbour);
    assert_eq!(neighbour.status, 200);
    assert_eq!(response.status, 500);
    assert_eq!(response.error_code(), "RESPONSE_TOO_LARGE");
    assert!(
        response.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_response_bytes")
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(app.get("/bystander/ok", None).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_component_answers_busy_instead_of_queueing_forever() {
    let app = spawn(SANDBOX).await;
    // `single` runs one invocation at a time and queues for at most its 1 s timeout.
    let requests = (0..3).map(|_| app.get("/single/sleep?ms=700", None));
    let replies = futures::future::join_all(requests).await;
    let ok = replies.iter().filter(|r| r.status == 200).count();
    let busy: Vec<_> = replies.iter().filter(|r| r.status == 503).collect();
    assert!(
        ok >= 1,
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(
        !busy.is_empty(),
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert_eq!(ok + busy.len(), 3);
    for reply in busy {
        assert_eq!(reply.error_code(), "COMPONENT_BUSY");
        assert_eq!(reply.header("retry-after"), "1");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_cannot_open_a_database_it_was_not_granted() {
    let app = spawn(SANDBOX).await;
    let reply = app.get("/misbehave/other-database", None).await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.text, "Error::AccessDenied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_variables_and_key_value_reach_the_guest() {
    let app = spawn(SANDBOX).await;
    assert_eq!(
        app.get("/misbehave/env", None).await.text,
        "hello from the manifest"
    );
    assert_eq!(
        app.get("/misbehave/variable", None).await.text,
        "from the manifest"
    );
    assert_eq!(
        app.get("/bystander/env", None).await.text,
        "",
        "environment is per component"
    );
    assert_eq!(app.get("/misbehave/kv", None).await.text, "1");
    assert_eq!(app.get("/misbehave/kv", None).await.text, "2");
    let neighbours_store = app.get("/bystander/kv?store=cache", None).await;
    assert_eq!(
        (neighbours_store.status, neighbours_store.text.as_str()),
        (403, "Error::AccessDenied")
    );
    assert_eq!(
        app.get("/bystander/kv?store=bystander-cache", None)
            .await
            .text,
        "1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_http_goes_only_where_the_manifest_allows_and_carries_the_trace() {
    let app = spawn(SANDBOX).await;
    let denied = app
        .get("/misbehave/outbound?url=https://example.com/", None)
        .await;
    // Spin's answer to the guest; the log says what to allow (tests/api/spin_apps.rs).
    assert_eq!(denied.status, 502);
    assert!(denied.text.contains("HttpRequestDenied"), "{}", denied.text);

    // A local server the manifest allows (`http://127.0.0.1:*`) echoes the traceparent.
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = upstream.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (mut socket, _) = upstream.accept().await.unwrap();
        let mut request = vec![0; 8192];
        let n = socket.read(&mut request).await.unwrap();
        let request = String::from_utf8_lossy(&request[..n]).to_lowercase();
        let traceparent = request
            .lines()
            .find_map(|l| l.strip_prefix("traceparent: "))
            .unwrap_or("none")
            .trim()
            .to_owned();
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{traceparent}",
            traceparent.len()
        );
        socket.write_all(response.as_bytes()).await.unwrap();
    });
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let reply = Reply::from(
        app.client
            .get(app.url(&format!(
                "/misbehave/outbound?url=http://127.0.0.1:{port}/echo"
            )))
            .header("traceparent", format!("00-{trace_id}-b7ad6b7169203331-01"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    server.await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(
        reply.text.starts_with(&format!("00-{trace_id}-")),
        "{}",
        reply.text
    );
}

/// `allowed_outbound_hosts = ["http://{{ upstream }}"]`, as Spin accepts it: the variable is
/// filled in when the app loads, and only that host is allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbound_host_named_by_a_variable_is_allowed_as_filled_in() {
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = upstream.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("spin.toml"),
        format!(
            "spin_manifest_version = 2\n[application]\nname = \"templated\"\n\
             [variables]\nupstream = {{ required = true }}\n\
             [[trigger.http]]\nroute = \"/misbehave/...\"\ncomponent = \"misbehave\"\n\
             [component.misbehave]\nsource = \"{}\"\nsqlite_databases = [\"m\"]\n\
             key_value_stores = [\"k\"]\nallowed_outbound_hosts = [\"http://{{{{ upstream }}}}\"]\n",
            repo("target/wasm32-wasip2/release/misbehave.wasm").display()
        ),
    )
    .unwrap();
    let runtime_config = dir.path().join("runtime-config.toml");
    std::fs::write(
        &runtime_config,
        format!(
            "[[variables_provider]]\ntype = \"static\"\nvalues = {{ upstream = \"127.0.0.1:{port}\" }}\n"
        ),
    )
    .unwrap();
    let app = spawn_with(
        dir.path().join("spin.toml").to_str().unwrap(),
        Some(runtime_config),
        tempfile::tempdir().unwrap(),
    )
    .await;

    let server = tokio::spawn(async move {
        let (mut socket, _) = upstream.accept().await.unwrap();
        let mut request = vec![0; 8192];
        let _ = socket.read(&mut request).await.unwrap();
        socket
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\nconnection: close\r\n\r\nupfront")
            .await
            .unwrap();
    });
    let allowed = app
        .get(
            &format!("/misbehave/outbound?url=http://127.0.0.1:{port}/echo"),
            None,
        )
        .await;
    server.await.unwrap();
    assert_eq!(allowed.status, 200, "{}", allowed.text);
    assert_eq!(allowed.text, "upfront");

    // Another port on the same address is not what the variable names.
    let other = port.wrapping_add(1).max(1);
    let denied = app
        .get(
            &format!("/misbehave/outbound?url=http://127.0.0.1:{other}/"),
            None,
        )
        .await;
    assert_eq!(denied.status, 502, "{}", denied.text);
    assert!(denied.text.contains("HttpRequestDenied"), "{}", denied.text);
}
