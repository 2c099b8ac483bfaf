//! Every connection is bounded: slow headers, stalled bodies, silent connections, oversized
//! headers and floods of connections each meet their limit (tests/apps/limits.toml), and the
//! admin listener stays reachable throughout. All traffic stays on 127.0.0.1.

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

use crate::helpers::*;

async fn connect(base: &str) -> TcpStream {
    TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_line_that_never_ends_is_closed_after_the_header_timeout() {
    let app = spawn(LIMITS).await;
    let mut stream = connect(&app.base).await;
    stream.write_all(b"GET /work/ok HTT").await.unwrap();
    let started = Instant::now();
    let reply = read_raw(&mut stream, Duration::from_secs(10)).await;
    assert!(reply.closed, "still open after 10 s: {}", reply.text);
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "closed before the header timeout"
    );
    assert!(
        reply.text.is_empty(),
        "answered a request without a line: {}",
        reply.text
    );

    // With the request line in, the client is waiting for an answer: 408, then closed.
    let mut stream = connect(&app.base).await;
    stream
        .write_all(b"GET /work/ok HTTP/1.1\r\nhost: localhost\r\nx-unfinished")
        .await
        .unwrap();
    let reply = read_raw(&mut stream, Duration::from_secs(10)).await;
    assert_eq!(reply.status(), Some(408), "{}", reply.text);
    assert!(reply.text.contains("HEADER_TIMEOUT"), "{}", reply.text);
    assert!(reply.closed);
    let closed = r#"berth_connections_closed_total{listener="public",reason="header_timeout"}"#;
    assert_eq!(app.metric(closed).await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_sent_a_byte_at_a_time_do_not_hold_the_connection() {
    let app = spawn(LIMITS).await;
    let mut stream = connect(&app.base).await;
    stream
        .write_all(b"GET /work/ok HTTP/1.1\r\n")
        .await
        .unwrap();
    // A header line every 100 ms keeps bytes moving but never ends the head.
    let mut closed_after = None;
    for i in 0..100 {
        if stream
            .write_all(format!("x-slow-{i}: 1\r\n").as_bytes())
            .await
            .is_err()
        {
            closed_after = Some(i);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reply = read_raw(&mut stream, Duration::from_secs(5)).await;
    assert!(
        closed_after.is_some() || reply.closed,
        "a trickled head kept its connection for 10 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stalls_gets_408_and_frees_its_connection() {
    let app = spawn(LIMITS).await;
    let mut stream = connect(&app.base).await;
    stream
        .write_all(
            b"POST /work/ok HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 60000\r\n\r\n{\"only\":\"ten",
        )
        .await
        .unwrap();
    let reply = read_raw(&mut stream, Duration::from_secs(10)).await;
    assert_eq!(reply.status(), Some(408), "{}", reply.text);
    assert!(reply.text.contains("BODY_TIMEOUT"), "{}", reply.text);
    assert!(reply.closed, "the connection stayed open after its 408");
    assert_eq!(
        app.metric(r#"berth_connections_open{listener="public"}"#)
            .await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_idle_keep_alive_connections_are_closed() {
    let app = spawn(LIMITS).await;
    let mut silent = connect(&app.base).await;
    let reply = read_raw(&mut silent, Duration::from_secs(10)).await;
    assert!(reply.closed && reply.text.is_empty(), "{}", reply.text);

    let mut kept = connect(&app.base).await;
    kept.write_all(b"GET /work/ok HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let reply = read_raw(&mut kept, Duration::from_secs(10)).await;
    assert_eq!(reply.status(), Some(200), "{}", reply.text);
    assert!(reply.closed, "an idle keep-alive connection stayed open");
    assert!(
        app.metric(r#"berth_connections_closed_total{listener="public",reason="idle"}"#)
            .await
            >= 2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_over_the_limit_get_431_and_an_endless_head_holds_no_more() {
    let app = spawn(LIMITS).await;
    // Over the 8 KiB limit, but small enough to be read whole, so the answer is not lost to a
    // reset for unread bytes.
    let big = format!("x-big: {}", "a".repeat(12 * 1024));
    let reply = raw_request(
        &app.base,
        &http_request("GET", "/work/ok", &[&big], b""),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(reply.status(), Some(431), "{}", reply.text);

    // A head that goes on past the limit without ending: refused once the limit is reached,
    // not buffered to hyper's default 400 KB.
    let mut stream = connect(&app.base).await;
    stream
        .write_all(b"GET /work/ok HTTP/1.1\r\n")
        .await
        .unwrap();
    let line = format!("x-more: {}\r\n", "b".repeat(1000));
    let mut sent = 0;
    while sent < 400 * 1024 {
        if stream.write_all(line.as_bytes()).await.is_err() {
            break;
        }
        sent += line.len();
    }
    let reply = read_raw(&mut stream, Duration::from_secs(10)).await;
    assert!(reply.closed, "still reading an endless head");
    assert!(
        sent < 400 * 1024 || reply.status() == Some(431),
        "sent {sent} bytes of head: {}",
        reply.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_are_refused_and_the_admin_listener_stays_reachable() {
    let app = spawn(LIMITS).await;
    // max_connections = 40: hold them all, silent.
    let mut held = Vec::new();
    for _ in 0..40 {
        held.push(connect(&app.base).await);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refused = raw_request(
        &app.base,
        &http_request("GET", "/work/ok", &[], b""),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(refused.status(), Some(503), "{}", refused.text);
    assert!(
        refused.text.contains("TOO_MANY_CONNECTIONS"),
        "{}",
        refused.text
    );
    assert!(refused.text.contains("retry-after: 1"), "{}", refused.text);

    assert_eq!(
        app.readyz().await,
        200,
        "readyz while the public listener is full"
    );
    assert!(
        app.metric(r#"berth_connections_refused_total{listener="public"}"#)
            .await
            >= 1.0
    );

    // The held connections are idle: once the idle timeout closes them, their slots are free.
    drop(held);
    let reply = eventually(Duration::from_secs(10), "a slot frees up", || async {
        // Until then the answer is the refusal, sent before the request: an error here.
        let r = app.client.get(app.url("/work/ok")).send().await.ok()?;
        (r.status() == 200).then_some(r.text().await.ok()?)
    })
    .await;
    assert_eq!(reply, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_answers_while_the_public_one_is_flooded_with_work() {
    let app = spawn(LIMITS).await;
    let flood: Vec<_> = (0..16)
        .map(|_| {
            let client = app.client.clone();
            let url = app.url("/work/loop");
            tokio::spawn(async move {
                let until = Instant::now() + Duration::from_secs(3);
                while Instant::now() < until {
                    let _ = client.get(&url).send().await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..5 {
        assert_eq!(app.readyz().await, 200, "readyz under a flood");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for task in flood {
        task.await.unwrap();
    }
}

/// The `berth` binary under a low open-file limit, its public listener flooded with idle
/// connections past that limit: the cap refuses them, and the admin listener, databases and
/// public requests keep working once the flood goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_connections_meets_the_cap_before_the_descriptor_limit() {
    ensure_built();
    berth::triggers::http::server::raise_descriptor_limit();
    let data = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    let mut command = berth_up(SHOP, data.path(), port, admin);
    // SAFETY: setrlimit is async-signal-safe and touches only the child being started.
    unsafe {
        use std::os::unix::process::CommandExt as _;
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 1024,
                rlim_max: 1024,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let child = Process::new(command.spawn().expect("start berth up"));
    wait_until_ready(admin).await;
    let base = format!("http://127.0.0.1:{port}");
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..1200 {
        let Ok(stream) = TcpStream::connect(("127.0.0.1", port)).await else {
            break;
        };
        held.push(stream);
    }
    // Refusals of the flood itself linger half a second each, a few hundred at a time.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for _ in 0..5 {
        let reply = raw_request(
            &base,
            &http_request("GET", "/api/v1/users/login", &[], b""),
            Duration::from_secs(5),
        )
        .await;
        if reply.status() == Some(503) && reply.text.contains("TOO_MANY_CONNECTIONS") {
            refused += 1;
        }
    }
    assert_eq!(
        refused, 5,
        "connections past the cap were not refused with 503"
    );
    let ready = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{admin}/readyz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("readyz answers with the public listener full");
    assert_eq!(ready.status(), 200);
    drop(held);
    let client = reqwest::Client::new();
    eventually(Duration::from_secs(20), "the public API serves again", || {
        let client = client.clone();
        let base = base.clone();
        async move {
            let r = client
                .post(format!("{base}/api/v1/users/register"))
                .json(&serde_json::json!({"email": "after-flood@example.com", "password": "correct horse battery", "firstName": "A", "lastName": "B"}))
                .send()
                .await
                .ok()?;
            (r.status() == 201).then_some(())
        }
    })
    .await;
    let log = child.stop();
    assert!(
        log.contains("max_connections is lowered"),
        "the lowered cap is not logged:\n{log}"
    );
    assert!(
        !log.contains("cannot accept a connection"),
        "the host ran out of descriptors:\n{log}"
    );
}
