//! Misbehaves on request so the tests can show that each failure stays inside its own
//! invocation: `…/<what>`, whatever route leads here.

use std::sync::atomic::{AtomicU64, Ordering};

/// Requests this instance has served `count`: 1 on a fresh instance every time, unless the
/// host reuses instances.
static COUNT: AtomicU64 = AtomicU64::new(0);

use spin_sdk::http::{Request, Response};
use spin_sdk::http_component;

#[http_component]
fn handle(request: Request) -> Response {
    let what = request
        .path()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let query = request.query().to_owned();
    match what.as_str() {
        "ok" => text(200, "ok"),
        "count" => text(200, (COUNT.fetch_add(1, Ordering::Relaxed) + 1).to_string()),
        "grow" => {
            let mb: usize = query
                .strip_prefix("mb=")
                .and_then(|n| n.parse().ok())
                .unwrap_or(1);
            std::hint::black_box(vec![1u8; mb << 20].leak());
            text(200, format!("holding {mb} MiB more"))
        }
        "trap" => panic!("asked to trap"),
        "loop" => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        "oom" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        "big" => {
            let mb: usize = query
                .strip_prefix("mb=")
                .and_then(|n| n.parse().ok())
                .unwrap_or(50);
            text(200, vec![b'x'; mb << 20])
        }
        "sleep" => {
            let ms: u64 = query
                .strip_prefix("ms=")
                .and_then(|n| n.parse().ok())
                .unwrap_or(100);
            std::thread::sleep(std::time::Duration::from_millis(ms));
            text(200, "slept")
        }
        "headers" => {
            let mut lines: Vec<String> = request
                .headers()
                .map(|(k, v)| format!("{k}: {}", String::from_utf8_lossy(v.as_bytes())))
                .collect();
            lines.sort();
            text(200, lines.join("\n"))
        }
        "env" => text(200, std::env::var("GREETING").unwrap_or_default()),
        "variable" => match spin_sdk::variables::get("message") {
            Ok(v) => text(200, v),
            Err(e) => text(500, format!("{e:?}")),
        },
        "other-database" => match spin_sdk::sqlite::Connection::open("users") {
            Ok(_) => text(200, "opened another component's database"),
            Err(e) => text(403, format!("{e:?}")),
        },
        "kv" => {
            let label = query.strip_prefix("store=").unwrap_or("cache");
            let store = match spin_sdk::key_value::Store::open(label) {
                Ok(store) => store,
                Err(e) => return text(403, format!("{e:?}")),
            };
            let count = store
                .get("count")
                .expect("readable")
                .map(|v| u64::from_le_bytes(v.try_into().unwrap_or_default()))
                .unwrap_or(0)
                + 1;
            store.set("count", &count.to_le_bytes()).expect("writable");
            text(200, count.to_string())
        }
        "outbound" => {
            let url = query
                .strip_prefix("url=")
                .unwrap_or("https://example.com/")
                .to_owned();
            let outbound = spin_sdk::http::Request::get(url).build();
            match spin_sdk::http::run(spin_sdk::http::send::<_, Response>(outbound)) {
                Ok(response) => text(*response.status(), response.into_body()),
                Err(e) => text(502, format!("{e}")),
            }
        }
        _ => text(404, "unknown misbehaviour"),
    }
}

fn text(status: u16, body: impl Into<Vec<u8>>) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(body.into())
        .build()
}
